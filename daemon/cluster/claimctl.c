/* The SandboxClaim controller (see claimctl.h for the contract and the exactly-once argument).
 *
 * Flow: claims watch (its thread) --keys, deleted claims--> queue (mu) --> controller thread:
 *       serve (enqueue into a pc_pool) / write status / release; pool callbacks (pool
 *       threads) --finished records--> queue (mu) --> controller thread.
 *
 * Threads and ownership:
 * - a record (rec) per claim uid being served. The controller thread owns the table of
 *   records and every field but `r`, which the pool's callback writes once before pushing the
 *   record on `done` under mu (the mutex orders that write before the controller's read);
 * - the pool callback takes mu for a list push only: it never blocks on the network.
 * Record states: ENQUEUED (in a pool) -> DONE (result in, status not yet written) -> WRITTEN
 * (status written; kept until the cache shows it, so a stale cached Pending cannot serve the
 * uid again) -> freed.
 */
#include "claimctl.h"

#include "util.h"
#include "watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG(lvl, ...) pc__cl_log(&c->log, lvl, "claimctl", __VA_ARGS__)
#define NBUCKET 4096
#define SMP "application/strategic-merge-patch+json"
#define MERGE "application/merge-patch+json"
#define KEY_MAX (PC_NAMESPACE_MAX + PC_NAME_MAX + 2)
/* held by a claim from before it is first served until what it won is released */
#define FINALIZER "podclaim.io/release"

enum { R_ENQUEUED, R_DONE, R_WRITTEN };

typedef struct rec {
    pc_claim c; /* first: the callback casts the claim back to its record */
    struct rec *hnext;
    struct rec *qnext; /* on c->done */
    pc_claimctl *ctl;
    int state;
    bool deleted; /* the SandboxClaim was deleted while this record lived */
    char uid[PC_UID_MAX];
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char pool[PC_NAME_MAX];
    char id[PC_CLAIM_ID_MAX];
    pc_claim_result r; /* written by the pool callback */
    json_t *spec;      /* owns the strings opts points at */
    pc_kv *kv;         /* images, labels, annotations */
    int64_t written_at_ns;
} rec;

struct pc_claimctl {
    pc_kube_client *client;
    pc_pool *(*lookup)(void *arg, const char *ns, const char *pool);
    bool (*may_write)(void *arg, const char *ns, const char *pool);
    void (*on_outcome)(void *arg, const pc_claimctl_outcome *o);
    void *arg;
    int64_t unknown_pool_retry_ns;
    pc_cluster_log log;
    pc_watch *claims;
    pc_kube_conn *conn; /* controller thread */
    char coll[300];     /* ".../sandboxclaims" path prefix pattern, "%s" = namespace */

    pthread_t thread;
    bool started;
    _Atomic bool stop;
    pthread_mutex_t mu; /* guards queue, delayed, deleted, done, all */
    pthread_cond_t cv;
    json_t *queue;   /* "ns/name" FIFO set */
    json_t *delayed; /* "ns/name" -> CLOCK_MONOTONIC ns */
    json_t *deleted; /* array of deleted claim objects */
    rec *done;       /* finished records (LIFO; order does not matter) */
    bool all;
    bool step_down; /* cancel enqueued claims of pools this replica no longer leads */

    rec *table[NBUCKET]; /* by uid; controller thread only */

    _Atomic uint64_t n_enqueued, n_bound, n_failed, n_recovered, n_cancelled, n_released,
            n_status_writes, n_conflicts, n_errors;
};

#define INC(f) atomic_fetch_add_explicit(&c->f, 1, memory_order_relaxed)

/* ---- records ------------------------------------------------------------------------------- */

static unsigned bucket(const char *uid)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)uid; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NBUCKET;
}

static rec *rec_find(pc_claimctl *c, const char *uid)
{
    for (rec *r = c->table[bucket(uid)]; r; r = r->hnext)
        if (strcmp(r->uid, uid) == 0)
            return r;
    return NULL;
}

static void rec_free(pc_claimctl *c, rec *r)
{
    for (rec **pp = &c->table[bucket(r->uid)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == r) {
            *pp = r->hnext;
            break;
        }
    }
    json_decref(r->spec);
    free(r->kv);
    free(r);
}

/* A SandboxClaim's claim id, the same for every replica and restart: "sbc-<uid>". */
static void claim_id_of(const char *uid, char *id, size_t len)
{
    snprintf(id, len, "sbc-%.59s", uid);
}

static rec *rec_new(pc_claimctl *c, const json_t *obj)
{
    rec *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ctl = c;
    snprintf(r->uid, sizeof(r->uid), "%s", pc__cl_jstr(obj, "metadata.uid") ?: "");
    snprintf(r->ns, sizeof(r->ns), "%s", pc__cl_jstr(obj, "metadata.namespace") ?: "");
    snprintf(r->name, sizeof(r->name), "%s", pc__cl_jstr(obj, "metadata.name") ?: "");
    snprintf(r->pool, sizeof(r->pool), "%s", pc__cl_jstr(obj, "spec.pool") ?: "");
    claim_id_of(r->uid, r->id, sizeof(r->id));
    unsigned b = bucket(r->uid);
    r->hnext = c->table[b];
    c->table[b] = r;
    return r;
}

/* ---- queue --------------------------------------------------------------------------------- */

static void enqueue_key(pc_claimctl *c, const char *ns, const char *name)
{
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    pthread_mutex_lock(&c->mu);
    json_object_set_new(c->queue, key, json_true());
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void requeue_after(pc_claimctl *c, const char *ns, const char *name, int64_t ns_delay)
{
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    int64_t due = pc__cl_mono_ns() + ns_delay;
    pthread_mutex_lock(&c->mu);
    json_t *cur = json_object_get(c->delayed, key);
    if (!cur || json_integer_value(cur) > due)
        json_object_set_new(c->delayed, key, json_integer(due));
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_claim(void *arg, pc_watch_change ch, const json_t *obj, const json_t *old)
{
    pc_claimctl *c = arg;
    (void)old;
    if (ch == PC_WATCH_DELETED) {
        pthread_mutex_lock(&c->mu);
        json_array_append(c->deleted, (json_t *)obj);
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    enqueue_key(c, pc__cl_jstr(obj, "metadata.namespace") ?: "",
                pc__cl_jstr(obj, "metadata.name") ?: "");
}

static void on_sync(void *arg)
{
    pc_claimctl_resync(arg);
}

/* Pool callback: a pool thread. Store the result, hand the record to the controller. */
static void on_result(pc_claim *cl, const pc_claim_result *res, void *arg)
{
    pc_claimctl *c = arg;
    rec *r = (rec *)cl;
    r->r = *res;
    pthread_mutex_lock(&c->mu);
    r->qnext = c->done;
    c->done = r;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* ---- writes -------------------------------------------------------------------------------- */

/* PATCH the claim's status (merge), guarded by the cached version. Returns the HTTP status or a
 * negative errno. */
static long write_status(pc_claimctl *c, const json_t *obj, json_t *status /* stolen */)
{
    char path[700], err[512];
    snprintf(path, sizeof(path), "/apis/%s/%s/namespaces/%s/sandboxclaims/%s/status", PC_CL_GROUP,
             PC_CL_VERSION, pc__cl_jstr(obj, "metadata.namespace") ?: "",
             pc__cl_jstr(obj, "metadata.name") ?: "");
    json_t *patch = json_pack("{s:{s:s},s:o}", "metadata", "resourceVersion",
                              pc__cl_jstr(obj, "metadata.resourceVersion") ?: "", "status", status);
    long st = 0;
    int rc = pc__cl_request(c->conn, "PATCH", path, MERGE, patch, &st, NULL, err, sizeof(err));
    json_decref(patch);
    if (rc == 0 && st == 200) {
        INC(n_status_writes);
        return st;
    }
    if (rc == 0 && st == 409)
        INC(n_conflicts);
    else if (!(rc == 0 && st == 404)) {
        INC(n_errors);
        LOG(PC_KUBE_LOG_WARN, "claim=%s/%s action=status msg=\"%s\"",
            pc__cl_jstr(obj, "metadata.namespace"), pc__cl_jstr(obj, "metadata.name"), err);
    }
    return rc ? rc : st;
}

static bool has_finalizer(const json_t *obj)
{
    size_t i;
    json_t *f;
    json_array_foreach(pc__cl_jget(obj, "metadata.finalizers"), i, f)
    {
        if (json_is_string(f) && strcmp(json_string_value(f), FINALIZER) == 0)
            return true;
    }
    return false;
}

/* Add (present) or remove our finalizer. A merge patch replaces the list whole, so it is
 * guarded by the cached version: another controller's finalizer added meanwhile makes it a
 * 409 (the watch then brings the new list) instead of being dropped. Returns the HTTP status,
 * or the negative error. */
static long set_finalizer(pc_claimctl *c, const json_t *obj, bool present)
{
    char path[700], err[512];
    const char *ns = pc__cl_jstr(obj, "metadata.namespace") ?: "",
               *name = pc__cl_jstr(obj, "metadata.name") ?: "";
    snprintf(path, sizeof(path), "/apis/%s/%s/namespaces/%s/sandboxclaims/%s", PC_CL_GROUP,
             PC_CL_VERSION, ns, name);
    json_t *list = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(pc__cl_jget(obj, "metadata.finalizers"), i, f)
    {
        if (!json_is_string(f) || strcmp(json_string_value(f), FINALIZER) != 0)
            json_array_append(list, f);
    }
    if (present)
        json_array_append_new(list, json_string(FINALIZER));
    json_t *patch =
            json_pack("{s:{s:s,s:o}}", "metadata", "resourceVersion",
                      pc__cl_jstr(obj, "metadata.resourceVersion") ?: "", "finalizers", list);
    long st = 0;
    int rc = pc__cl_request(c->conn, "PATCH", path, MERGE, patch, &st, NULL, err, sizeof(err));
    json_decref(patch);
    if (rc == 0 && st == 409)
        INC(n_conflicts);
    else if (rc || (st != 200 && st != 404)) {
        INC(n_errors);
        LOG(PC_KUBE_LOG_WARN, "claim=%s/%s action=%s msg=\"%s\"", ns, name,
            present ? "add-finalizer" : "remove-finalizer", err);
    }
    return rc ? rc : st;
}

/* Release a bound pod: phase -> Stopping, guarded by its version, only while it still carries
 * this claim's id. Returns true when released (or nothing left to release). */
static bool release_pod(pc_claimctl *c, const char *ns, const char *pod, const char *claim_id)
{
    char path[600], err[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, pod);
    for (int attempt = 0; attempt < 5; attempt++) {
        long st = 0;
        json_t *p = NULL;
        int rc = pc__cl_request(c->conn, "GET", path, NULL, NULL, &st, &p, err, sizeof(err));
        if (rc == 0 && st == 404)
            return true;
        if (rc || st != 200 || !p) {
            json_decref(p);
            break;
        }
        const char *id = pc__cl_annotation(p, PC_CL_ANN_CLAIM_ID);
        const char *phase = pc__cl_label(p, PC_CL_LABEL_PHASE);
        if (!id || strcmp(id, claim_id) != 0 || !phase || strcmp(phase, "Idle") == 0 ||
            strcmp(phase, "Stopping") == 0 || strcmp(phase, "Starting") == 0) {
            json_decref(p); /* not ours any more, or already on its way back */
            return true;
        }
        json_t *patch = json_pack("{s:{s:s,s:{s:s}}}", "metadata", "resourceVersion",
                                  pc__cl_jstr(p, "metadata.resourceVersion") ?: "", "labels",
                                  PC_CL_LABEL_PHASE, "Stopping");
        json_decref(p);
        rc = pc__cl_request(c->conn, "PATCH", path, SMP, patch, &st, NULL, err, sizeof(err));
        json_decref(patch);
        if (rc == 0 && st == 200) {
            INC(n_released);
            LOG(PC_KUBE_LOG_INFO, "pod=%s/%s claim=%s action=release", ns, pod, claim_id);
            return true;
        }
        if (!(rc == 0 && st == 409))
            break;
        INC(n_conflicts); /* moved meanwhile: look again */
    }
    INC(n_errors);
    LOG(PC_KUBE_LOG_WARN, "pod=%s/%s claim=%s action=release msg=\"%s\"", ns, pod, claim_id, err);
    return false;
}

static void outcome(pc_claimctl *c, const rec *r)
{
    if (!c->on_outcome)
        return;
    pc_claimctl_outcome o = {.namespace_ = r->ns,
                             .claim = r->name,
                             .claim_id = r->id,
                             .pool = r->pool,
                             .pod = r->r.pod_name,
                             .status = r->r.status,
                             .error = r->r.error,
                             .latency_ns = r->r.latency_ns};
    c->on_outcome(c->arg, &o);
}

static const char *reason_of(pc_claim_status s)
{
    switch (s) {
    case PC_CLAIM_DEADLINE:
        return "Timeout";
    case PC_CLAIM_CANCELLED:
        return "Cancelled";
    case PC_CLAIM_REJECTED:
        return "Rejected";
    default:
        return "Error";
    }
}

static json_t *failed_status(const char *claim_id, const char *reason, const char *message)
{
    return json_pack("{s:s,s:s,s:s,s:s}", "phase", "Failed", "claimId", claim_id, "reason", reason,
                     "message", message);
}

/* A record whose result is in: write Bound/Failed, or release what a deleted claim won. */
static void finish(pc_claimctl *c, rec *r)
{
    if (r->r.status == PC_CLAIM_SHUTDOWN ||
        (!r->deleted && c->may_write && !c->may_write(c->arg, r->ns, r->pool))) {
        /* the pool is going away, or this replica stopped leading: the claim stays Pending for
         * the next leader or restart (a pod it won meanwhile carries its uid label, so the
         * next leader binds that pod rather than claiming another) */
        rec_free(c, r);
        return;
    }
    json_t *obj = pc_watch_get(c->claims, r->ns, r->name);
    bool gone = r->deleted || !obj || strcmp(pc__cl_jstr(obj, "metadata.uid") ?: "", r->uid) != 0;
    if (gone) {
        if (r->r.status == PC_CLAIM_OK)
            release_pod(c, r->r.pod_namespace, r->r.pod_name, r->id);
        else if (r->r.status == PC_CLAIM_CANCELLED)
            INC(n_cancelled);
        json_decref(obj);
        /* a terminating claim still holds our finalizer: process_key removes it */
        enqueue_key(c, r->ns, r->name);
        rec_free(c, r);
        return;
    }
    json_t *status;
    if (r->r.status == PC_CLAIM_OK) {
        char when[40];
        pc__cl_rfc3339(pc__cl_real_ns(), false, when, sizeof(when));
        status = json_pack("{s:s,s:s,s:s,s:s,s:s,s:n,s:n}", "phase", "Bound", "claimId", r->id,
                           "pod", r->r.pod_name, "podNamespace", r->r.pod_namespace, "boundTime",
                           when, "reason", "message");
    } else {
        status = failed_status(r->id, reason_of(r->r.status), r->r.error);
    }
    long st = write_status(c, obj, status);
    json_decref(obj);
    if (st == 200) {
        if (r->r.status == PC_CLAIM_OK)
            INC(n_bound);
        else
            INC(n_failed);
        r->state = R_WRITTEN;
        r->written_at_ns = pc__cl_mono_ns();
        outcome(c, r);
        return;
    }
    if (st == 404) { /* deleted meanwhile: the DELETED event may still come; release now */
        r->deleted = true;
        finish(c, r);
        return;
    }
    /* 409 (the claim moved: the watch brings the new version) or an error: again soon */
    requeue_after(c, r->ns, r->name, st == 409 ? 50000000LL : 1000000000LL);
}

/* ---- serving ------------------------------------------------------------------------------- */

static void fill_kv(const json_t *map, pc_kv *kv, size_t *n)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v)
    {
        if (json_is_string(v)) {
            kv[*n].key = k;
            kv[*n].value = json_string_value(v);
            (*n)++;
        }
    }
}

/* A pod that already carries this claim's uid: won before (by a replica that died before it
 * wrote Bound). Returns a new reference or NULL. */
static json_t *find_won_pod(pc_claimctl *c, const char *ns, const char *uid, int *err)
{
    char sel[128], enc[256], path[600];
    snprintf(sel, sizeof(sel), "%s=%s", PC_CL_LABEL_CLAIM_UID, uid);
    pc__cl_urlenc(sel, enc, sizeof(enc));
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s", ns, enc);
    long st;
    json_t *l = NULL;
    char msg[512];
    int rc = pc__cl_request(c->conn, "GET", path, NULL, NULL, &st, &l, msg, sizeof(msg));
    *err = rc || st != 200 || !l;
    json_t *pod = NULL;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(l, "items"), i, p)
    {
        if (!pc__cl_jget(p, "metadata.deletionTimestamp"))
            pod = json_incref(p);
    }
    if (*err)
        LOG(PC_KUBE_LOG_WARN, "claim-uid=%s msg=\"pod lookup failed: %s\"", uid, msg);
    json_decref(l);
    return pod;
}

static void serve(pc_claimctl *c, const json_t *obj, const char *ns, const char *name)
{
    const char *uid = pc__cl_jstr(obj, "metadata.uid") ?: "";
    const json_t *spec = json_object_get(obj, "spec");
    const char *pool_name = json_string_value(json_object_get(spec, "pool"));
    const char *phase = pc__cl_jstr(obj, "status.phase");
    char id[PC_CLAIM_ID_MAX];
    claim_id_of(uid, id, sizeof(id));
    if (!pool_name || !pool_name[0]) {
        write_status(c, obj, failed_status(id, "InvalidSpec", "spec.pool is required"));
        return;
    }
    if (c->may_write && !c->may_write(c->arg, ns, pool_name))
        return; /* the leader serves it */
    if (!has_finalizer(obj)) {
        /* first the finalizer, so a deletion while no replica runs still releases what this
         * claim wins; the watch brings the new version, which is served */
        long st = set_finalizer(c, obj, true);
        if (st != 200 && st != 404)
            requeue_after(c, ns, name, st == 409 ? 50000000LL : 1000000000LL);
        return;
    }
    /* the timeout counts from the claim's creation, so a restart does not extend it */
    int64_t deadline = 0;
    json_int_t tmo = json_integer_value(json_object_get(spec, "timeoutSeconds"));
    if (tmo > 0) {
        int64_t created = pc__cl_parse_time(pc__cl_jstr(obj, "metadata.creationTimestamp"));
        int64_t left =
                created < 0 ? tmo * 1000000000LL : created + tmo * 1000000000LL - pc__cl_real_ns();
        if (left <= 0) {
            if (write_status(c, obj,
                             failed_status(id, "Timeout",
                                           "timed out before a pod was "
                                           "won")) == 200)
                INC(n_failed);
            return;
        }
        deadline = pc__cl_mono_ns() + left;
    }
    pc_pool *pool = c->lookup ? c->lookup(c->arg, ns, pool_name) : NULL;
    if (!pool) {
        requeue_after(c, ns, name, c->unknown_pool_retry_ns);
        return;
    }
    int err = 0;
    json_t *won = find_won_pod(c, ns, uid, &err);
    if (err) {
        requeue_after(c, ns, name, 1000000000LL);
        return;
    }
    rec *r = rec_new(c, obj);
    if (!r) {
        json_decref(won);
        requeue_after(c, ns, name, 1000000000LL);
        return;
    }
    if (won) {
        /* bind, do not claim again */
        INC(n_recovered);
        r->state = R_DONE;
        r->r.status = PC_CLAIM_OK;
        snprintf(r->r.pod_namespace, sizeof(r->r.pod_namespace), "%s", ns);
        snprintf(r->r.pod_name, sizeof(r->r.pod_name), "%s", pc__cl_jstr(won, "metadata.name"));
        snprintf(r->r.claim_id, sizeof(r->r.claim_id), "%s", r->id);
        json_decref(won);
        LOG(PC_KUBE_LOG_INFO, "claim=%s/%s pod=%s msg=\"already won: binding\"", ns, name,
            r->r.pod_name);
        finish(c, r);
        return;
    }
    r->spec = json_incref((json_t *)spec);
    const json_t *images = json_object_get(spec, "images"),
                 *labels = json_object_get(spec, "labels"),
                 *anns = json_object_get(spec, "annotations");
    r->kv = calloc(json_object_size(images) + json_object_size(labels) + json_object_size(anns) + 1,
                   sizeof(pc_kv));
    if (!r->kv) {
        rec_free(c, r);
        requeue_after(c, ns, name, 1000000000LL);
        return;
    }
    size_t n = 0;
    pc_claim_opts o = {0};
    fill_kv(images, r->kv, &n);
    o.images = r->kv;
    o.n_images = n;
    size_t l0 = n;
    fill_kv(labels, r->kv, &n);
    r->kv[n].key = PC_CL_LABEL_CLAIM_UID; /* how a restart finds what this claim won */
    r->kv[n].value = r->uid;
    n++;
    o.labels = r->kv + l0;
    o.n_labels = n - l0;
    size_t a0 = n;
    fill_kv(anns, r->kv, &n);
    o.annotations = r->kv + a0;
    o.n_annotations = n - a0;
    o.target_phase = json_string_value(json_object_get(spec, "targetPhase"));
    json_t *pr = json_object_get(spec, "priority");
    json_int_t prio = json_is_integer(pr) ? json_integer_value(pr) : 2;
    pc_claim_init(&r->c, (int)(prio < 0 ? 0 : prio > 5 ? 5 : prio), on_result, c);
    r->c.opts = o;
    r->c.id = r->id;
    r->c.deadline_ns = deadline;
    r->state = R_ENQUEUED;
    int rc = pc_pool_enqueue(pool, &r->c);
    if (rc) {
        rec_free(c, r);
        requeue_after(c, ns, name, rc == -EAGAIN ? 100000000LL : 1000000000LL);
        return;
    }
    INC(n_enqueued);
    if (!phase || strcmp(phase, "Pending") != 0) {
        /* say it is seen; a 409 only means the object moved, the record already exists */
        write_status(c, obj, json_pack("{s:s,s:s}", "phase", "Pending", "claimId", r->id));
    }
}

/* A terminating claim that holds our finalizer: cancel it if it waits here (its callback comes
 * back through finish(), which releases a pod won meanwhile and requeues the key), else
 * release the pod that carries its uid, if any (a Bound claim's, or one won by a replica that
 * died before writing Bound), then remove the finalizer so the server deletes the claim. */
static void finalize(pc_claimctl *c, const json_t *obj, const char *ns, const char *name)
{
    const char *uid = pc__cl_jstr(obj, "metadata.uid") ?: "";
    if (c->may_write && !c->may_write(c->arg, ns, pc__cl_jstr(obj, "spec.pool") ?: ""))
        return; /* the pool's leader does it */
    rec *r = rec_find(c, uid);
    if (r) {
        r->deleted = true;
        if (r->state == R_ENQUEUED) {
            pc_claim_cancel(&r->c);
            return;
        }
        if (r->state == R_DONE) {
            finish(c, r); /* frees r and requeues the key */
            return;
        }
        rec_free(c, r);
    }
    char id[PC_CLAIM_ID_MAX];
    claim_id_of(uid, id, sizeof(id));
    int err = 0;
    json_t *won = find_won_pod(c, ns, uid, &err);
    bool released =
            !err && (!won || release_pod(c, ns, pc__cl_jstr(won, "metadata.name") ?: "", id));
    json_decref(won);
    if (!released) {
        requeue_after(c, ns, name, 1000000000LL);
        return;
    }
    long st = set_finalizer(c, obj, false);
    if (st == 200)
        LOG(PC_KUBE_LOG_INFO, "claim=%s/%s msg=\"finalized: released, finalizer removed\"", ns,
            name);
    else if (st != 404)
        requeue_after(c, ns, name, st == 409 ? 50000000LL : 1000000000LL);
}

static void process_key(pc_claimctl *c, const char *key)
{
    const char *slash = strchr(key, '/');
    if (!slash)
        return;
    char ns[PC_NAMESPACE_MAX], name[PC_NAME_MAX];
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
    snprintf(name, sizeof(name), "%s", slash + 1);
    json_t *obj = pc_watch_get(c->claims, ns, name);
    if (!obj)
        return; /* deleted: handled from the DELETED event */
    const char *uid = pc__cl_jstr(obj, "metadata.uid") ?: "";
    const char *phase = pc__cl_jstr(obj, "status.phase");
    bool final = phase && (strcmp(phase, "Bound") == 0 || strcmp(phase, "Failed") == 0);
    if (pc__cl_jget(obj, "metadata.deletionTimestamp")) {
        if (has_finalizer(obj))
            finalize(c, obj, ns, name);
        json_decref(obj);
        return;
    }
    rec *r = rec_find(c, uid);
    if (r) {
        if (r->state == R_DONE)
            finish(c, r);
        else if (r->state == R_WRITTEN &&
                 (final || pc__cl_mono_ns() - r->written_at_ns > 300000000000LL))
            rec_free(c, r);
    } else if (!final) {
        serve(c, obj, ns, name);
    }
    json_decref(obj);
}

static void process_deleted(pc_claimctl *c, const json_t *obj)
{
    const char *uid = pc__cl_jstr(obj, "metadata.uid") ?: "";
    rec *r = rec_find(c, uid);
    if (r) {
        r->deleted = true;
        if (r->state == R_ENQUEUED) {
            pc_claim_cancel(&r->c); /* its callback follows; finish() releases a won pod */
        } else if (r->state == R_DONE) {
            finish(c, r);
        } else {
            if (r->r.status == PC_CLAIM_OK)
                release_pod(c, r->r.pod_namespace, r->r.pod_name, r->id);
            rec_free(c, r);
        }
        return;
    }
    const char *phase = pc__cl_jstr(obj, "status.phase");
    const char *pod = pc__cl_jstr(obj, "status.pod");
    const char *pool = pc__cl_jstr(obj, "spec.pool") ?: "";
    const char *ns = pc__cl_jstr(obj, "metadata.namespace") ?: "";
    if (phase && strcmp(phase, "Bound") == 0 && pod &&
        (!c->may_write || c->may_write(c->arg, ns, pool))) {
        char id[PC_CLAIM_ID_MAX];
        snprintf(id, sizeof(id), "%s", pc__cl_jstr(obj, "status.claimId") ?: "");
        release_pod(c, pc__cl_jstr(obj, "status.podNamespace") ?: ns, pod, id);
    }
}

static void *controller_main(void *arg)
{
    pc_claimctl *c = arg;
    pthread_setname_np(pthread_self(), "pc-claimctl");
    pthread_mutex_lock(&c->mu);
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        int64_t now = pc__cl_mono_ns(), wake = 0;
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(c->delayed, tmp, k, v)
        {
            int64_t due = json_integer_value(v);
            if (due <= now) {
                json_object_set_new(c->queue, k, json_true());
                json_object_del(c->delayed, k);
            } else if (!wake || due < wake) {
                wake = due;
            }
        }
        if (c->all) {
            c->all = false;
            json_t *all = pc_watch_list(c->claims);
            size_t i;
            json_array_foreach(all, i, v)
            {
                char key[KEY_MAX];
                snprintf(key, sizeof(key), "%s/%s", pc__cl_jstr(v, "metadata.namespace") ?: "",
                         pc__cl_jstr(v, "metadata.name") ?: "");
                json_object_set_new(c->queue, key, json_true());
            }
            json_decref(all);
        }
        if (c->step_down) {
            c->step_down = false;
            /* under mu: callbacks only push on done; records are the controller thread's, and
             * this is it. pc_claim_cancel does not block. */
            for (int b = 0; b < NBUCKET; b++)
                for (rec *r = c->table[b]; r; r = r->hnext)
                    if (r->state == R_ENQUEUED && c->may_write &&
                        !c->may_write(c->arg, r->ns, r->pool))
                        pc_claim_cancel(&r->c);
        }
        rec *done = c->done;
        c->done = NULL;
        json_t *deleted = NULL;
        if (json_array_size(c->deleted)) {
            deleted = c->deleted;
            c->deleted = json_array();
        }
        void *it = json_object_iter(c->queue);
        if (!done && !deleted && !it) {
            if (wake) {
                struct timespec ts = {.tv_sec = wake / 1000000000LL,
                                      .tv_nsec = wake % 1000000000LL};
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            } else {
                pthread_cond_wait(&c->cv, &c->mu);
            }
            continue;
        }
        char key[KEY_MAX] = "";
        if (it) {
            snprintf(key, sizeof(key), "%s", json_object_iter_key(it));
            json_object_del(c->queue, key);
        }
        pthread_mutex_unlock(&c->mu);
        while (done) {
            rec *r = done;
            done = r->qnext;
            r->state = R_DONE;
            finish(c, r);
        }
        size_t i;
        json_array_foreach(deleted, i, v) process_deleted(c, v);
        json_decref(deleted);
        if (key[0])
            process_key(c, key);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static bool on_wake(void *arg)
{
    pc_claimctl *c = arg;
    return atomic_load_explicit(&c->stop, memory_order_relaxed);
}

/* ---- public -------------------------------------------------------------------------------- */

int pc_claimctl_new(const pc_claimctl_config *cfg, pc_claimctl **out, char *err, size_t errlen)
{
    if (!cfg || !cfg->client || !cfg->lookup) {
        snprintf(err, errlen, "claimctl: client and lookup are required");
        return -EINVAL;
    }
    const char *ns = cfg->namespace_ && cfg->namespace_[0] ? cfg->namespace_ : NULL;
    if (ns && (strlen(ns) >= PC_NAMESPACE_MAX ||
               strspn(ns, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(ns))) {
        snprintf(err, errlen, "claimctl: namespace \"%s\" is not a DNS label", ns);
        return -EINVAL;
    }
    pc_claimctl *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->client = cfg->client;
    c->lookup = cfg->lookup;
    c->may_write = cfg->may_write;
    c->on_outcome = cfg->on_outcome;
    c->arg = cfg->arg;
    c->log = cfg->log;
    c->unknown_pool_retry_ns =
            cfg->unknown_pool_retry_ns > 0 ? cfg->unknown_pool_retry_ns : 1000000000LL;
    c->queue = json_object();
    c->delayed = json_object();
    c->deleted = json_array();
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    char path[256];
    if (ns)
        snprintf(path, sizeof(path), "/apis/%s/%s/namespaces/%s/sandboxclaims", PC_CL_GROUP,
                 PC_CL_VERSION, ns);
    else
        snprintf(path, sizeof(path), "/apis/%s/%s/sandboxclaims", PC_CL_GROUP, PC_CL_VERSION);
    pc_watch_config wc = {.client = c->client,
                          .path = path,
                          .name = "sandboxclaims",
                          .watch_timeout_s = cfg->watch_timeout_s,
                          .on_change = on_claim,
                          .on_sync = on_sync,
                          .arg = c,
                          .log = cfg->log};
    if (!c->queue || !c->delayed || !c->deleted || pc_watch_new(&wc, &c->claims) ||
        pc_kube_conn_new(c->client, &c->conn)) {
        pc_claimctl_free(c);
        snprintf(err, errlen, "claimctl: out of memory");
        return -ENOMEM;
    }
    pc_kube_conn_set_idle(c->conn, on_wake, c);
    *out = c;
    return 0;
}

int pc_claimctl_start(pc_claimctl *c)
{
    if (c->started)
        return -EALREADY;
    atomic_store_explicit(&c->stop, false, memory_order_relaxed);
    int rc = pthread_create(&c->thread, NULL, controller_main, c);
    if (rc)
        return -rc;
    c->started = true;
    if ((rc = pc_watch_start(c->claims))) {
        pc_claimctl_stop(c);
        return rc;
    }
    return 0;
}

void pc_claimctl_stop(pc_claimctl *c)
{
    if (!c)
        return;
    pc_watch_stop(c->claims);
    if (!c->started)
        return;
    pthread_mutex_lock(&c->mu);
    atomic_store_explicit(&c->stop, true, memory_order_relaxed);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pc_kube_conn_wakeup(c->conn);
    pthread_join(c->thread, NULL);
    c->started = false;
}

void pc_claimctl_free(pc_claimctl *c)
{
    if (!c)
        return;
    pc_claimctl_stop(c);
    pc_watch_free(c->claims);
    pc_kube_conn_free(c->conn);
    for (int b = 0; b < NBUCKET; b++)
        while (c->table[b])
            rec_free(c, c->table[b]);
    json_decref(c->queue);
    json_decref(c->delayed);
    json_decref(c->deleted);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool pc_claimctl_synced(const pc_claimctl *c)
{
    return pc_watch_synced(c->claims);
}

void pc_claimctl_resync(pc_claimctl *c)
{
    pthread_mutex_lock(&c->mu);
    c->all = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void pc_claimctl_step_down(pc_claimctl *c)
{
    pthread_mutex_lock(&c->mu);
    c->step_down = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void pc_claimctl_stats_read(pc_claimctl *c, pc_claimctl_stats *o)
{
#define LD(f) o->f = atomic_load_explicit(&c->n_##f, memory_order_relaxed)
    LD(enqueued);
    LD(bound);
    LD(failed);
    LD(recovered);
    LD(cancelled);
    LD(released);
    LD(status_writes);
    LD(conflicts);
    LD(errors);
#undef LD
}
