/* The SandboxPool controller's pod work: create from the template, Starting -> Idle, recycle
 * released pods (InPlace reset or Replace), delete surplus, Failed and orphaned pods.
 *
 * Flow: reconcile(pool) -> [classify the pool's cached pods -> decide -> guarded writes].
 *
 * Kubernetes behaviour relied on:
 * - metadata.resourceVersion in a patch is a precondition (409 if the pod moved): a write
 *   decided on a stale cache fails instead of undoing someone's claim. The same holds for
 *   DELETE with preconditions {uid, resourceVersion}.
 * - A strategic merge patch merges spec.containers by name: only the named containers' images
 *   change, and a label or annotation set to null is removed.
 * - A pod's spec is immutable but for container images: an InPlace recycle can reset images
 *   only; a template change beyond images means Replace for that pod.
 * - generateName makes the server pick a unique name; the create answer carries it, which is
 *   how the pass knows which creations the watch has not shown yet (expectations, as
 *   client-go's ReplicaSet controller keeps them).
 */
#include "poolctl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPECT_NS (30LL * 1000000000LL) /* a create/delete not seen by then is forgotten */
#define SMP "application/strategic-merge-patch+json"

#define LOG(lvl, ...) pc__cl_log(&c->log, lvl, "poolctl", __VA_ARGS__)

/* ---- pod predicates ------------------------------------------------------------------------ */

void pc__poolctl_image_norm(const char *img, char *buf, size_t len)
{
    const char *s = img ? img : "";
    if (strncmp(s, "docker.io/", 10) == 0)
        s += 10;
    if (strncmp(s, "library/", 8) == 0)
        s += 8;
    const char *slash = strrchr(s, '/');
    const char *last = slash ? slash + 1 : s;
    bool tagged = strchr(last, ':') || strchr(s, '@');
    snprintf(buf, len, "%s%s", s, tagged ? "" : ":latest");
}

static bool same_image(const char *a, const char *b)
{
    char na[512], nb[512];
    pc__poolctl_image_norm(a, na, sizeof(na));
    pc__poolctl_image_norm(b, nb, sizeof(nb));
    return strcmp(na, nb) == 0;
}

/* The container called name in list cs of n, or NULL (the last of duplicates, as a map). */
static const pc_kube_container *find_named(const pc_kube_container *cs, size_t n, const char *name)
{
    for (size_t i = n; i-- > 0;)
        if (strcmp(cs[i].name, name) == 0)
            return &cs[i];
    return NULL;
}

bool pc__poolctl_pod_ready(const pc_kube_pod *pod)
{
    if (strcmp(pod->status_phase, "Running") != 0 || !pod->ready_condition || pod->deleting)
        return false;
    if (!pod->has_container_statuses)
        return true; /* a kubelet that reports no container status: Ready is all we have */
    for (size_t i = 0; i < pod->n_containers; i++) {
        const pc_kube_container *ct = &pod->containers[i];
        const pc_kube_container *s = find_named(pod->statuses, pod->n_statuses, ct->name);
        if (!s || !s->ready || !same_image(s->image, ct->image))
            return false;
    }
    return true;
}

/* Images of the template's containers all equal in the pod's spec? */
static bool images_match(const pc_kube_pod *pod, const json_t *tspec)
{
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(tspec, "containers"), i, tc)
    {
        const char *name = json_string_value(json_object_get(tc, "name"));
        const char *timg = json_string_value(json_object_get(tc, "image"));
        const pc_kube_container *pc =
                name ? find_named(pod->containers, pod->n_containers, name) : NULL;
        if (pc && strcmp(pc->image, timg ? timg : "") != 0)
            return false;
    }
    return true;
}

static bool is_ours(const char *k)
{
    return strcmp(k, PC_CL_LABEL_POOL) == 0 || strcmp(k, PC_CL_LABEL_PHASE) == 0 ||
           strcmp(k, PC_CL_LABEL_TEMPLATE_HASH) == 0;
}

/* Labels and annotations as the template wants them (ours aside)? Annotation values are
 * compared by hash (the summary keeps no values; see kubepod.h). */
static bool meta_match(const pc_kube_pod *pod, const json_t *tmeta)
{
    const json_t *tl = json_object_get(tmeta, "labels"),
                 *ta = json_object_get(tmeta, "annotations");
    for (size_t i = 0; i < pod->n_labels; i++) {
        const pc_kv *l = &pod->labels[i];
        const char *tv = json_string_value(json_object_get(tl, l->key));
        if (!is_ours(l->key) && (!tv || strcmp(tv, l->value) != 0))
            return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)tl, k, v)
    {
        const char *pv = pc_kube_pod_label(pod, k);
        if (!is_ours(k) && (!pv || !json_is_string(v) || strcmp(pv, json_string_value(v)) != 0))
            return false;
    }
    for (size_t i = 0; i < pod->n_annotations; i++) {
        const pc_kube_annotation *a = &pod->annotations[i];
        json_t *tv = json_object_get(ta, a->key);
        if (!json_is_string(tv) || pc_kube_value_hash(json_string_value(tv)) != a->value_hash)
            return false;
    }
    json_object_foreach((json_t *)ta, k, v)
    {
        const pc_kube_annotation *a = pc_kube_pod_annotation(pod, k);
        if (!a || !json_is_string(v) || pc_kube_value_hash(json_string_value(v)) != a->value_hash)
            return false;
    }
    return true;
}

/* The pod as the object an Event is about. */
static json_t *pod_ref(const pc_kube_pod *pod)
{
    return json_pack("{s:s,s:s,s:{s:s,s:s,s:s}}", "apiVersion", "v1", "kind", "Pod", "metadata",
                     "name", pod->name, "namespace", pod->namespace_, "uid", pod->uid);
}

/* ---- writes -------------------------------------------------------------------------------- */

static void pod_path(const pc_kube_pod *pod, char *buf, size_t len)
{
    snprintf(buf, len, "/api/v1/namespaces/%s/pods/%s", pod->namespace_, pod->name);
}

/* Has the watch shown `pod` at a newer version than the pass's snapshot? The pass works on a
 * snapshot taken at its start, and one pass over a big pool takes a while (its writes are
 * sequential): a write from an outdated version would only earn a 409. The newer version has
 * requeued the pool, so the next pass decides again. */
static bool moved_on(pc_poolctl *c, const pc_kube_pod *pod)
{
    pc_watch_pod *cur = pc_watch_get_pod(c->pods, pod->namespace_, pod->name);
    const char *rv = pod->resource_version;
    bool moved = !cur || !rv[0] || strcmp(cur->pod->resource_version, rv) != 0;
    pc_watch_pod_unref(cur);
    if (moved)
        PC__PC_INC(c, stale_skips);
    return moved;
}

/* The server answered a write to `pod` 429: its writes wait `retry_after` (the client's
 * bounds, pc_kube_retry_wait_ns; the pass leaves it as if stale), the pool comes back when
 * that is over. */
static void throttled(pc_poolctl *c, pc__pool_state *st, const pc_kube_pod *pod, const char *what,
                      int64_t retry_after)
{
    PC__PC_INC(c, throttled);
    json_object_set_new(st->throttled, pod->uid, json_integer(pc__cl_mono_ns() + retry_after));
    pc__poolctl_requeue_after(c, st->key, retry_after);
    LOG(PC_KUBE_LOG_INFO, "pool=%s pod=%s action=%s msg=\"429: its writes wait %lld ms\"", st->key,
        pod->name, what, (long long)(retry_after / 1000000));
}

/* PATCH pod with `patch` (stolen) guarded by its cached resourceVersion. Returns the status. */
static long patch_pod(pc_poolctl *c, pc__pool_state *st, const pc_kube_pod *pod, json_t *patch,
                      const char *what)
{
    char path[600], err[512];
    const char *rv = pod->resource_version;
    const char *uid = pod->uid;
    json_t *md = json_object_get(patch, "metadata");
    if (!md) {
        md = json_object();
        json_object_set_new(patch, "metadata", md);
    }
    json_object_set_new(md, "resourceVersion", json_string(rv ? rv : ""));
    if (moved_on(c, pod)) {
        json_decref(patch);
        return 409;
    }
    pod_path(pod, path, sizeof(path));
    long status = 0;
    /* No 429 retry here: the kube client's would sleep the Retry-After on this thread, the one
     * that recycles every pod of every pool, so one pod's 429 held back all the others (1%
     * 429s with Retry-After 1 s cost the fault soak nine tenths of its claims/s;
     * docs/RELIABILITY.md, "Throughput under faults"). This pod's writes wait instead (the
     * pass leaves it as if stale), and the pool comes back when the wait is over. */
    int64_t retry_after = 0;
    int rc = pc__cl_request_once(c->conn, "PATCH", path, SMP, patch, &status, NULL, err,
                                 sizeof(err), &retry_after);
    json_decref(patch);
    if (rc == 0 && status == 429) {
        throttled(c, st, pod, what, retry_after);
        return status;
    }
    if (rc == 0 && status == 200) {
        json_object_set_new(st->acted, uid, json_string(rv ? rv : ""));
        LOG(PC_KUBE_LOG_DEBUG, "pool=%s pod=%s action=%s rv=%s", st->key, pod->name, what, rv);
        return status;
    }
    if (rc == 0 && status == 409) {
        /* the pod moved since the cache saw it: the watch brings the new version (and requeues
         * the pool). Not remembered as acted on: an injected 409 changes nothing. */
        PC__PC_INC(c, conflicts);
        return status;
    }
    LOG(PC_KUBE_LOG_WARN, "pool=%s pod=%s action=%s msg=\"%s\"", st->key, pod->name, what, err);
    return rc ? rc : status;
}

static bool delete_pod(pc_poolctl *c, pc__pool_state *st, const pc_kube_pod *pod, const char *why)
{
    char path[600], err[512];
    if (moved_on(c, pod))
        return false;
    pod_path(pod, path, sizeof(path));
    json_t *opts =
            json_pack("{s:s,s:s,s:{s:s,s:s}}", "kind", "DeleteOptions", "apiVersion", "v1",
                      "preconditions", "uid", pod->uid, "resourceVersion", pod->resource_version);
    long status = 0;
    /* a pool's pod: no 429 retry in place, as for a PATCH (patch_pod). st is NULL for the
     * pods of a deleted pool, which has no state to put one aside in: the client's retry. */
    int64_t retry_after = 0;
    int rc = st ? pc__cl_request_once(c->conn, "DELETE", path, NULL, opts, &status, NULL, err,
                                      sizeof(err), &retry_after)
                : pc__cl_request(c->conn, "DELETE", path, NULL, opts, &status, NULL, err,
                                 sizeof(err));
    json_decref(opts);
    if (rc == 0 && status == 429 && st) {
        throttled(c, st, pod, "delete", retry_after);
        return false;
    }
    if (rc == 0 && (status == 200 || status == 202)) {
        PC__PC_INC(c, deletes);
        if (st)
            json_object_set_new(st->deleting, pod->uid, json_integer(pc__cl_mono_ns() + EXPECT_NS));
        LOG(PC_KUBE_LOG_INFO, "pool=%s/%s pod=%s action=delete why=%s", pod->namespace_,
            pc_kube_pod_label(pod, PC_CL_LABEL_POOL) ?: "", pod->name, why);
        return true;
    }
    if (rc == 0 && status == 409)
        PC__PC_INC(c, conflicts);
    else if (!(rc == 0 && status == 404))
        LOG(PC_KUBE_LOG_WARN, "pod=%s action=delete msg=\"%s\"", path, err);
    return false;
}

/* POST a pod made from the pool's template. Returns true when created. */
static bool create_pod(pc_poolctl *c, pc__pool_state *st, const json_t *pool, const json_t *tmpl,
                       const char *hash)
{
    const json_t *tmeta = json_object_get(tmpl, "metadata");
    json_t *labels = json_is_object(json_object_get(tmeta, "labels"))
                             ? json_deep_copy(json_object_get(tmeta, "labels"))
                             : json_object();
    json_object_set_new(labels, PC_CL_LABEL_POOL, json_string(st->name));
    json_object_set_new(labels, PC_CL_LABEL_PHASE, json_string("Starting"));
    json_object_set_new(labels, PC_CL_LABEL_TEMPLATE_HASH, json_string(hash));
    json_t *ann = json_is_object(json_object_get(tmeta, "annotations"))
                          ? json_deep_copy(json_object_get(tmeta, "annotations"))
                          : json_object();
    char gen[PC_NAME_MAX];
    snprintf(gen, sizeof(gen), "%.57s-", st->name);
    json_t *pod = json_pack(
            "{s:s,s:s,s:{s:s,s:s,s:o,s:o,s:[{s:s,s:s,s:s,s:s,s:b,s:b}]},s:O}", "apiVersion", "v1",
            "kind", "Pod", "metadata", "generateName", gen, "namespace", st->ns, "labels", labels,
            "annotations", ann, "ownerReferences", "apiVersion", PC_CL_API_VERSION, "kind",
            "SandboxPool", "name", st->name, "uid", pc__cl_jstr(pool, "metadata.uid") ?: "",
            "controller", 1, "blockOwnerDeletion", 1, "spec", json_object_get(tmpl, "spec"));
    char path[300], err[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", st->ns);
    long status = 0;
    json_t *made = NULL;
    /* No 429 retry in place, as for a PATCH (patch_pod): sleeping the Retry-After here stopped
     * the recycling of every pool meanwhile (the soak's 1% of 429s meet a dozen creates while
     * a pool of 1,000 pods starts). This pool's creates wait instead; other work goes on. */
    int64_t retry_after = 0;
    int rc = pc__cl_request_once(c->conn, "POST", path, NULL, pod, &status, &made, err, sizeof(err),
                                 &retry_after);
    json_decref(pod);
    if (rc == 0 && status == 429) {
        json_decref(made);
        PC__PC_INC(c, throttled);
        st->create_after_ns = pc__cl_mono_ns() + retry_after;
        pc__poolctl_requeue_after(c, st->key, retry_after);
        LOG(PC_KUBE_LOG_INFO, "pool=%s action=create msg=\"429: its creates wait %lld ms\"",
            st->key, (long long)(retry_after / 1000000));
        return false;
    }
    if (rc == 0 && status == 201 && made) {
        PC__PC_INC(c, creates);
        json_object_set_new(st->pending_creates, pc__cl_jstr(made, "metadata.name") ?: "",
                            json_integer(pc__cl_mono_ns() + EXPECT_NS));
        json_decref(made);
        st->create_failures = 0;
        st->create_after_ns = 0;
        st->rejected[0] = '\0';
        return true;
    }
    json_decref(made);
    PC__PC_INC(c, create_errors);
    /* back off: 200 ms doubling to 30 s */
    int64_t d = 200000000LL << (st->create_failures < 8 ? st->create_failures : 8);
    if (d > 30000000000LL)
        d = 30000000000LL;
    st->create_failures++;
    st->create_after_ns = pc__cl_mono_ns() + d;
    pc__poolctl_requeue_after(c, st->key, d);
    if (rc == 0 && (status == 400 || status == 422 || status == 403)) {
        /* the server refuses what the template asks for: only the operator can fix it */
        snprintf(st->rejected, sizeof(st->rejected), "%.299s", err);
        if (pc_kevents_emit(c->events, c->conn, pool, NULL, "Warning", "FailedCreate", "Create",
                            "pod from the template rejected: %s", err) == 0)
            PC__PC_INC(c, events);
    }
    LOG(PC_KUBE_LOG_WARN, "pool=%s action=create msg=\"%s\" retry_ms=%lld", st->key, err,
        (long long)(d / 1000000));
    return false;
}

/* The InPlace reset of a released pod: template labels and annotations (the claim's removed),
 * template images; phase Idle at once when no image changes and the pod is Ready. */
static json_t *reset_patch(const pc_kube_pod *pod, const json_t *tmpl, const char *hash,
                           bool to_idle)
{
    const json_t *tmeta = json_object_get(tmpl, "metadata");
    const json_t *tl = json_object_get(tmeta, "labels"),
                 *ta = json_object_get(tmeta, "annotations");
    json_t *labels = json_object(), *ann = json_object();
    const char *k;
    json_t *v;
    for (size_t i = 0; i < pod->n_labels; i++) {
        const char *lk = pod->labels[i].key;
        if (!is_ours(lk) && !json_object_get(tl, lk))
            json_object_set_new(labels, lk, json_null());
    }
    json_object_foreach((json_t *)tl, k, v)
    {
        if (!is_ours(k))
            json_object_set(labels, k, v);
    }
    json_object_set_new(labels, PC_CL_LABEL_TEMPLATE_HASH, json_string(hash));
    json_object_set_new(labels, PC_CL_LABEL_PHASE, json_string(to_idle ? "Idle" : "Stopping"));
    for (size_t i = 0; i < pod->n_annotations; i++) {
        const char *ak = pod->annotations[i].key;
        if (!json_object_get(ta, ak))
            json_object_set_new(ann, ak, json_null());
    }
    json_object_foreach((json_t *)ta, k, v) json_object_set(ann, k, v);
    json_t *cts = json_array();
    size_t i;
    json_array_foreach(pc__cl_jget(tmpl, "spec.containers"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *timg = json_string_value(json_object_get(v, "image"));
        const pc_kube_container *pc =
                name ? find_named(pod->containers, pod->n_containers, name) : NULL;
        if (pc && strcmp(pc->image, timg ? timg : "") != 0)
            json_array_append_new(cts, json_pack("{s:s,s:O}", "name", name, "image",
                                                 json_object_get(v, "image")));
    }
    json_t *p = json_pack("{s:{s:o,s:o}}", "metadata", "labels", labels, "annotations", ann);
    if (json_array_size(cts))
        json_object_set_new(p, "spec", json_pack("{s:o}", "containers", cts));
    else
        json_decref(cts);
    return p;
}

static json_t *phase_patch(const char *phase)
{
    return json_pack("{s:{s:{s:s}}}", "metadata", "labels", PC_CL_LABEL_PHASE, phase);
}

/* ---- the pass ------------------------------------------------------------------------------ */

typedef struct cand {
    const pc_kube_pod *pod;
    int rank; /* deletion order: lower goes first */
    int64_t created_ns;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank - y->rank;
    return x->created_ns > y->created_ns ? -1 : x->created_ns < y->created_ns; /* youngest first */
}

void pc__poolctl_sync_pods(pc_poolctl *c, pc__pool_state *st, const json_t *pool,
                           pc_watch_pod *const *pods, size_t npods)
{
    int64_t now = pc__cl_mono_ns();
    const json_t *spec = json_object_get(pool, "spec");
    json_int_t want = json_integer_value(json_object_get(spec, "replicas"));
    want = want < 0 ? 0 : want > 100000 ? 100000 : want;
    json_t *ms = json_object_get(spec, "maxSurge");
    json_int_t surge = json_is_integer(ms) ? json_integer_value(ms) : 1;
    surge = surge < 0 ? 0 : surge;
    const char *recycle = json_string_value(json_object_get(spec, "recycle"));
    bool replace = recycle && strcmp(recycle, "Replace") == 0;
    const json_t *tmpl = json_object_get(spec, "template");
    const json_t *tspec = json_object_get(tmpl, "spec");
    st->invalid_template = !json_is_array(json_object_get(tspec, "containers")) ||
                           json_array_size(json_object_get(tspec, "containers")) == 0;
    char hash[16];
    pc_poolctl_template_hash(tmpl, hash, sizeof(hash));

    /* the expectations: a create is met once its pod is cached */
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(st->pending_creates, tmp, k, v)
    {
        pc_watch_pod *made = pc_watch_get_pod(c->pods, st->ns, k);
        if (json_integer_value(v) <= now || made)
            json_object_del(st->pending_creates, k);
        pc_watch_pod_unref(made);
    }
    /* uids present: built only when some uid-keyed memory needs pruning */
    json_t *uids = json_object();
    size_t i;
    if (json_object_size(st->deleting) || json_object_size(st->acted) ||
        json_object_size(st->since) || json_object_size(st->throttled))
        for (i = 0; i < npods; i++)
            json_object_set_new(uids, pods[i]->pod->uid, json_true());
    /* a delete we sent: forgotten once the pod is gone from the cache (or the deadline) */
    json_object_foreach_safe(st->deleting, tmp, k, v)
    {
        if (!json_object_get(uids, k) || json_integer_value(v) <= now)
            json_object_del(st->deleting, k);
    }
    json_object_foreach_safe(st->acted, tmp, k, v)
    {
        if (!json_object_get(uids, k))
            json_object_del(st->acted, k);
    }
    json_object_foreach_safe(st->since, tmp, k, v)
    {
        if (!json_object_get(uids, k))
            json_object_del(st->since, k);
    }
    json_object_foreach_safe(st->throttled, tmp, k, v)
    {
        if (!json_object_get(uids, k) || json_integer_value(v) <= now)
            json_object_del(st->throttled, k);
    }
    json_decref(uids);

    cand *cands = calloc(npods ? npods : 1, sizeof(*cands));
    size_t ncand = 0;
    uint32_t idle = 0, starting = 0, recycling = 0, not_ready = 0, claimed = 0, outdated = 0;
    int64_t next_check = 0; /* when a not-yet-ready pod crosses ready_timeout */
    for (i = 0; i < npods; i++) {
        const pc_kube_pod *pod = pods[i]->pod;
        const char *uid = pod->uid;
        const char *rv = pod->resource_version;
        if (pod->deleting || json_object_get(st->deleting, uid))
            continue;
        const char *phase = pc_kube_pod_label(pod, PC_CL_LABEL_PHASE) ?: "";
        bool starting_p = strcmp(phase, "Starting") == 0, idle_p = strcmp(phase, "Idle") == 0,
             stopping_p = strcmp(phase, "Stopping") == 0;
        if (!starting_p && !idle_p && !stopping_p) {
            claimed++; /* a caller's sandbox: not ours to count or touch */
            continue;
        }
        const char *acted = json_string_value(json_object_get(st->acted, uid));
        /* we wrote and the watch has not shown it; or its last write was answered 429 and
         * its Retry-After is not over (its entry goes once it is: pruned above) */
        bool stale = (acted && strcmp(acted, rv) == 0) || json_object_get(st->throttled, uid);
        const char *sp = pod->status_phase;
        if (strcmp(sp, "Failed") == 0 || strcmp(sp, "Succeeded") == 0) {
            if (!stale)
                delete_pod(c, st, pod, "failed");
            continue;
        }
        const char *ph = pc_kube_pod_label(pod, PC_CL_LABEL_TEMPLATE_HASH);
        bool old = !ph || strcmp(ph, hash) != 0;
        bool ready = pc__poolctl_pod_ready(pod);
        int64_t created = pc__cl_parse_time(pod->creation_timestamp);
        if (stopping_p && (replace || old || st->invalid_template)) {
            if (!stale)
                delete_pod(c, st, pod, replace ? "recycle Replace" : "template changed");
            continue;
        }
        /* waiting to be Ready: Starting, or being recycled (reset and restarting) */
        bool conformant = starting_p || (images_match(pod, tspec) &&
                                         meta_match(pod, json_object_get(tmpl, "metadata")));
        bool waiting = (starting_p || stopping_p) && !(ready && conformant);
        if (waiting) {
            json_t *s = json_object_get(st->since, uid);
            if (!s) {
                json_object_set_new(st->since, uid, json_integer(now));
                s = json_object_get(st->since, uid);
            }
            int64_t due = (int64_t)json_integer_value(s) + c->ready_timeout_ns;
            if (now >= due && !ready) {
                not_ready++;
                json_t *ref = pod_ref(pod);
                if (pc_kevents_emit(c->events, c->conn, pool, ref, "Warning", "PodNotReady",
                                    "Start", "pod %s not Ready %lld ms after %s", pod->name,
                                    (long long)(c->ready_timeout_ns / 1000000LL),
                                    starting_p ? "it started" : "its recycle") == 0)
                    PC__PC_INC(c, events);
                json_decref(ref);
            } else if (!next_check || due < next_check) {
                next_check = due;
            }
        } else {
            json_object_del(st->since, uid);
        }
        cand *cd = &cands[ncand++];
        cd->pod = pod;
        cd->created_ns = created;
        if (idle_p) {
            idle++;
            outdated += old;
            cd->rank = old ? 1 : 4;
        } else if (starting_p) {
            starting++;
            outdated += old;
            cd->rank = old ? 0 : 2;
            if (ready && !stale && !st->invalid_template &&
                patch_pod(c, st, pod, phase_patch("Idle"), "idle") == 200)
                PC__PC_INC(c, idles);
        } else {
            recycling++;
            cd->rank = 3;
            if (stale)
                continue;
            bool imgs = images_match(pod, tspec);
            bool meta = meta_match(pod, json_object_get(tmpl, "metadata")) && ph &&
                        strcmp(ph, hash) == 0;
            if (imgs && meta && ready) {
                if (patch_pod(c, st, pod, phase_patch("Idle"), "idle") == 200)
                    PC__PC_INC(c, idles);
            } else if (!imgs || !meta) {
                /* one write when nothing must restart; else reset now, Idle once Ready */
                bool to_idle = imgs && ready;
                if (patch_pod(c, st, pod, reset_patch(pod, tmpl, hash, to_idle),
                              to_idle ? "reset+idle" : "reset") == 200) {
                    PC__PC_INC(c, resets);
                    if (to_idle)
                        PC__PC_INC(c, idles);
                }
            }
        }
    }
    uint32_t expected = (uint32_t)json_object_size(st->pending_creates);
    json_int_t warm = (json_int_t)(idle + starting + recycling + expected);
    json_int_t fresh = warm - outdated;
    json_int_t max_warm = want + (outdated ? surge : 0);
    json_int_t create = want - fresh;
    if (create > max_warm - warm)
        create = max_warm - warm;
    json_int_t excess = warm - want;
    if (excess > 0) {
        /* old template first, then Starting (youngest first), then Stopping, then Idle */
        qsort(cands, ncand, sizeof(*cands), cand_cmp);
        for (size_t j = 0; j < ncand && excess > 0; j++) {
            /* a rollout keeps its surge: only old-template pods go while new ones start */
            if (outdated && cands[j].rank > 1)
                break;
            if (delete_pod(c, st, cands[j].pod, "surplus"))
                excess--;
        }
    }
    if (create > 0 && !st->invalid_template) {
        if (now < st->create_after_ns) {
            pc__poolctl_requeue_after(c, st->key, st->create_after_ns - now);
        } else {
            json_int_t n = create > c->max_creates ? c->max_creates : create;
            for (json_int_t j = 0; j < n; j++)
                if (!create_pod(c, st, pool, tmpl, hash))
                    break;
            if (create > n)
                pc__poolctl_requeue_after(c, st->key, 0);
        }
    }
    if (next_check)
        pc__poolctl_requeue_after(c, st->key, next_check - now + 1000000);
    st->warm = (uint32_t)warm;
    st->idle = idle;
    st->starting = starting;
    st->recycling = recycling;
    st->not_ready = not_ready;
    st->claimed = claimed;
    st->outdated = outdated;
    free(cands);
}

void pc__poolctl_delete_orphans(pc_poolctl *c, const char *ns, const char *name)
{
    pc_watch_pod **pods;
    long n = pc_watch_list_pods(c->pods, ns, name, &pods);
    for (long i = 0; i < n; i++) {
        const pc_kube_pod *pod = pods[i]->pod;
        for (size_t j = 0; j < pod->n_owners; j++) {
            if (strcmp(pod->owners[j].key, "SandboxPool") == 0 &&
                strcmp(pod->owners[j].value, name) == 0 && !pod->deleting) {
                delete_pod(c, NULL, pod, "pool deleted");
                break;
            }
        }
    }
    pc_watch_pods_free(pods, n);
}
