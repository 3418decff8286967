/* kapi-sim kubelet: runs pods as a kubelet would, and logs every Idle -> other phase transition
 * of a pool pod (the claim log that proves DESIGN.md §4 invariant 1: no idle period is won
 * twice). There is no pool controller here: podclaimd's pool controller creates the pods of a
 * SandboxPool, turns them Idle and recycles them, as in a real cluster (issue 13).
 *
 *   pod created (not Running)    after warmup_ms: status.phase Running, Ready=True, each
 *                                container's status running with the spec's image
 *   a container's image changed  at once: Ready=False, that container waiting (restarting);
 *                                after restart_ms: running the new image, Ready=True again
 *   deletionTimestamp set        after stop_ms: the pod is deleted (grace 0) unless it still
 *                                has finalizers (graceful deletion, the kubelet's part)
 *
 * --no-kubelet: no pod is started or restarted (a cluster without nodes, as the differential
 * suite's real server); graceful deletions are still finished and claims logged.
 *
 * Ready stays False for every pod with --kubelet-never-ready, and for a pod annotated
 * kapi-sim.podclaim.io/never-ready=true (so one test can mix healthy and broken pools). The
 * podclaim.io labels are never touched here.
 *
 * The store hook runs under the store mutex and only records work (timers, log entries) under
 * the controller mutex; the controller thread does the writes later, taking the store mutex
 * with the controller mutex released. Lock order: store -> controller. Timer delays are fixed
 * per kind, so each kind's queue is a FIFO already sorted by deadline.
 */
#include "sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LABEL_POOL "podclaim.io/pool"
#define LABEL_PHASE "podclaim.io/phase"
#define ANN_CLAIM_ID "podclaim.io/claim-id"

/* T_TERM: graceful deletion (containers stopped -> delete with grace 0), stop_ms after the
 * deletionTimestamp was set. T_KSTART: start; T_KDOWN/T_KUP: restart for a new image. */
typedef enum { T_TERM, T_KSTART, T_KDOWN, T_KUP, T_COUNT } timer_kind;

typedef struct timer {
    struct timer *next;
    int64_t due_ns; /* CLOCK_MONOTONIC */
    char *ns, *name, *uid;
} timer;

typedef struct claim_rec {
    char *ns, *pod, *claim_id, *phase;
    uint64_t idle_rv, rv;
    int64_t unix_ms;
} claim_rec;

struct ks_controller {
    ks_store *s;
    ks_controller_opts o;
    pthread_t th;
    bool started;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; signalled when work is added or on stop */
    bool stop;
    timer *head[T_COUNT], *tail[T_COUNT];
    int64_t next_compact_ns; /* CLOCK_MONOTONIC; 0 = no periodic compaction */
    claim_rec *claims;
    size_t nclaims, capclaims;
    uint64_t dropped;
};

static const char *label(const json_t *obj, const char *k)
{
    return json_string_value(
            json_object_get(json_object_get(json_object_get(obj, "metadata"), "labels"), k));
}

/* Returns whether the controller thread must be signalled: only when the timer is the first
 * of its kind (each kind's queue is sorted by deadline, so otherwise the thread already wakes
 * by the queue's head, which is due earlier). A signal per claim, under the store mutex, was a
 * futex wake and a pointless round of the controller thread. */
static bool timer_push_locked(ks_controller *c, timer_kind k, int64_t due, const json_t *pod)
{
    timer *t = calloc(1, sizeof *t);
    if (!t)
        return false;
    t->due_ns = due;
    t->ns = strdup(ks_meta_str(pod, "namespace") ? ks_meta_str(pod, "namespace") : "");
    t->name = strdup(ks_meta_str(pod, "name") ? ks_meta_str(pod, "name") : "");
    t->uid = strdup(ks_meta_str(pod, "uid") ? ks_meta_str(pod, "uid") : "");
    bool first = !c->head[k];
    if (c->tail[k])
        c->tail[k]->next = t;
    else
        c->head[k] = t;
    c->tail[k] = t;
    return first;
}

static void timer_free(timer *t)
{
    free(t->ns);
    free(t->name);
    free(t->uid);
    free(t);
}

static void log_claim_locked(ks_controller *c, const ks_event *e, const char *phase)
{
    if (c->nclaims == c->o.claims_max) {
        c->dropped++;
        return;
    }
    if (c->nclaims == c->capclaims) {
        size_t nc = c->capclaims ? c->capclaims * 2 : 1024;
        claim_rec *n = realloc(c->claims, nc * sizeof *n);
        if (!n) {
            c->dropped++;
            return;
        }
        c->claims = n;
        c->capclaims = nc;
    }
    claim_rec *r = &c->claims[c->nclaims++];
    const char *cid = json_string_value(json_object_get(
            json_object_get(json_object_get(e->obj, "metadata"), "annotations"), ANN_CLAIM_ID));
    r->ns = strdup(ks_meta_str(e->obj, "namespace") ? ks_meta_str(e->obj, "namespace") : "");
    r->pod = strdup(ks_meta_str(e->obj, "name"));
    r->claim_id = cid ? strdup(cid) : NULL;
    r->phase = strdup(phase ? phase : "");
    r->idle_rv = strtoull(ks_meta_str(e->old, "resourceVersion"), NULL, 10);
    r->rv = e->rev;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->unix_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Store hook: under the store mutex. Records work; never writes to the store. */
static void kubelet_on_event(ks_controller *c, const ks_event *e);

static void on_event(void *arg, const ks_event *e)
{
    ks_controller *c = arg;
    if (e->res != KS_RES_POD)
        return;
    if (e->type == KS_EV_MODIFIED && ks_meta_str(e->obj, "deletionTimestamp") &&
        !ks_meta_str(e->old, "deletionTimestamp") &&
        json_integer_value(json_object_get(json_object_get(e->obj, "metadata"),
                                           "deletionGracePeriodSeconds")) > 0) {
        pthread_mutex_lock(&c->mu);
        if (timer_push_locked(c, T_TERM, ks_now_ns() + c->o.stop_ms * 1000000, e->obj))
            pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    kubelet_on_event(c, e);
}

ks_controller *ks_controller_new(ks_store *s, const ks_controller_opts *o)
{
    ks_controller *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->o = *o;
    if (!c->o.claims_max)
        c->o.claims_max = 1000000;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&s->mu);
    s->hook = on_event;
    s->hook_arg = c;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* One timer: an internal write, outside the store mutex like any client's PATCH. */
static void kubelet_fire(ks_controller *c, timer_kind k, const timer *t);

static void fire(ks_controller *c, timer_kind k, const timer *t)
{
    ks_store *s = c->s;
    if (k == T_TERM) {
        pthread_mutex_lock(&s->mu);
        const json_t *cur = ks_store_get_locked(s, &ks_resources[KS_RES_POD], t->ns, t->name);
        const char *uid = cur ? ks_meta_str(cur, "uid") : NULL;
        if (uid && strcmp(uid, t->uid) == 0 && ks_meta_str(cur, "deletionTimestamp") &&
            json_array_size(json_object_get(json_object_get(cur, "metadata"), "finalizers")) == 0)
            ks_store_commit_locked(s, &ks_resources[KS_RES_POD], t->ns, t->name, NULL);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    kubelet_fire(c, k, t);
}

static void *run(void *arg)
{
    ks_controller *c = arg;
    pthread_setname_np(pthread_self(), "ks-controller");
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t now = ks_now_ns();
        timer *due[T_COUNT] = {0};
        int64_t wake = 0;
        for (int k = 0; k < T_COUNT; k++) {
            timer **tailp = &due[k];
            while (c->head[k] && c->head[k]->due_ns <= now) {
                timer *t = c->head[k];
                c->head[k] = t->next;
                if (!c->head[k])
                    c->tail[k] = NULL;
                t->next = NULL;
                *tailp = t;
                tailp = &t->next;
            }
            if (c->head[k] && (!wake || c->head[k]->due_ns < wake))
                wake = c->head[k]->due_ns;
        }
        bool compact = false;
        if (c->next_compact_ns && c->next_compact_ns <= now) {
            compact = true;
            c->next_compact_ns = now + c->o.compact_every_ms * 1000000;
        }
        if (c->next_compact_ns && (!wake || c->next_compact_ns < wake))
            wake = c->next_compact_ns;
        bool any_due = false;
        for (int k = 0; k < T_COUNT; k++)
            any_due |= due[k] != NULL;
        if (!any_due && !compact) {
            if (wake) {
                struct timespec ts = {.tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000};
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            } else {
                pthread_cond_wait(&c->cv, &c->mu);
            }
            continue;
        }
        pthread_mutex_unlock(&c->mu);
        if (compact)
            ks_store_compact(c->s, 0); /* injected fault: resumes from before now get 410 */
        for (int k = 0; k < T_COUNT; k++) {
            while (due[k]) {
                timer *t = due[k];
                due[k] = t->next;
                fire(c, (timer_kind)k, t);
                timer_free(t);
            }
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int ks_controller_start(ks_controller *c)
{
    if (c->o.compact_every_ms > 0)
        c->next_compact_ns = ks_now_ns() + c->o.compact_every_ms * 1000000;
    if (pthread_create(&c->th, NULL, run, c) != 0)
        return -1;
    c->started = true;
    return 0;
}

void ks_controller_free(ks_controller *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->started)
        pthread_join(c->th, NULL);
    pthread_mutex_lock(&c->s->mu);
    c->s->hook = NULL;
    pthread_mutex_unlock(&c->s->mu);
    for (int k = 0; k < T_COUNT; k++) {
        while (c->head[k]) {
            timer *t = c->head[k];
            c->head[k] = t->next;
            timer_free(t);
        }
    }
    for (size_t i = 0; i < c->nclaims; i++) {
        free(c->claims[i].ns);
        free(c->claims[i].pod);
        free(c->claims[i].claim_id);
        free(c->claims[i].phase);
    }
    free(c->claims);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

json_t *ks_controller_claims_json(ks_controller *c, size_t since)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&c->mu);
    for (size_t i = since; i < c->nclaims; i++) {
        const claim_rec *r = &c->claims[i];
        char irv[24], rv[24];
        snprintf(irv, sizeof irv, "%" PRIu64, r->idle_rv);
        snprintf(rv, sizeof rv, "%" PRIu64, r->rv);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s,s:s,s:s?,s:s,s:I}", "index",
                                             (json_int_t)i, "namespace", r->ns, "pod", r->pod,
                                             "idleResourceVersion", irv, "resourceVersion", rv,
                                             "claimId", r->claim_id, "phase", r->phase, "unixMs",
                                             (json_int_t)r->unix_ms));
    }
    size_t n = c->nclaims;
    uint64_t dropped = c->dropped;
    pthread_mutex_unlock(&c->mu);
    return json_pack("{s:o,s:I,s:I}", "claims", arr, "count", (json_int_t)n, "dropped",
                     (json_int_t)dropped);
}

/* ---- the kubelet (see the top of the file) ---------------------------------------------- */

#define ANN_NEVER_READY "kapi-sim.podclaim.io/never-ready"

static const char *ct_image(const json_t *cts, const char *name)
{
    size_t i;
    json_t *ct;
    json_array_foreach(cts, i, ct)
    {
        const char *n = json_string_value(json_object_get(ct, "name"));
        if (n && strcmp(n, name) == 0)
            return json_string_value(json_object_get(ct, "image"));
    }
    return NULL;
}

static bool images_changed(const json_t *old, const json_t *obj)
{
    const json_t *oc = json_object_get(json_object_get(old, "spec"), "containers");
    const json_t *nc = json_object_get(json_object_get(obj, "spec"), "containers");
    size_t i;
    json_t *ct;
    json_array_foreach(nc, i, ct)
    {
        const char *n = json_string_value(json_object_get(ct, "name"));
        const char *img = json_string_value(json_object_get(ct, "image"));
        const char *was = n ? ct_image(oc, n) : NULL;
        if (img && was && strcmp(img, was) != 0)
            return true;
    }
    return false;
}

static void kubelet_on_event(ks_controller *c, const ks_event *e)
{
    if (e->res != KS_RES_POD || e->type == KS_EV_DELETED)
        return;
    const char *phase = label(e->obj, LABEL_PHASE);
    const char *ophase = e->old ? label(e->old, LABEL_PHASE) : NULL;
    bool claimed = e->type == KS_EV_MODIFIED && label(e->obj, LABEL_POOL) && ophase &&
                   strcmp(ophase, "Idle") == 0 && (!phase || strcmp(phase, "Idle") != 0);
    const char *sp = json_string_value(json_object_get(json_object_get(e->obj, "status"), "phase"));
    bool start = !c->o.no_kubelet && e->type == KS_EV_ADDED && (!sp || strcmp(sp, "Running") != 0);
    bool restart = !c->o.no_kubelet && e->type == KS_EV_MODIFIED && images_changed(e->old, e->obj);
    if (!claimed && !start && !restart)
        return;
    int64_t now = ks_now_ns();
    pthread_mutex_lock(&c->mu);
    if (claimed)
        log_claim_locked(c, e, phase);
    bool wake = false;
    if (start)
        wake |= timer_push_locked(c, T_KSTART, now + c->o.warmup_ms * 1000000, e->obj);
    if (restart)
        wake |= timer_push_locked(c, T_KDOWN, now, e->obj);
    if (wake)
        pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

typedef struct kubelet_arg {
    timer_kind k;
    const timer *t;
    bool never_ready; /* the --kubelet-never-ready flag */
} kubelet_arg;

static bool str_is(const json_t *v, const char *s)
{
    const char *x = json_string_value(v);
    return x && strcmp(x, s) == 0;
}

static void set_condition(json_t *conds, const char *type, bool ok, const char *ts)
{
    size_t i, n_conds = json_array_size(conds);
    for (i = 0; i < n_conds; i++)
        if (str_is(json_object_get(json_array_get(conds, i), "type"), type))
            break;
    const char *want = ok ? "True" : "False";
    if (i < n_conds && str_is(json_object_get(json_array_get(conds, i), "status"), want))
        return; /* no transition: lastTransitionTime stays */
    json_t *n = json_pack("{s:s,s:s,s:s}", "type", type, "status", want, "lastTransitionTime", ts);
    if (i < n_conds)
        json_array_set_new(conds, i, n);
    else
        json_array_append_new(conds, n);
}

/* The pod's next status for timer kind k (a new object sharing what it does not change). */
static json_t *mut_kubelet(const json_t *cur, const void *arg, ks_err *err)
{
    (void)err;
    const kubelet_arg *ka = arg;
    const char *uid = ks_meta_str(cur, "uid");
    if (!uid || strcmp(uid, ka->t->uid) != 0)
        return NULL; /* deleted and re-created meanwhile */
    if (json_object_get(json_object_get(cur, "metadata"), "deletionTimestamp"))
        return NULL;
    json_t *st0 = json_object_get(cur, "status");
    const char *sp = json_string_value(json_object_get(st0, "phase"));
    bool running = sp && strcmp(sp, "Running") == 0;
    if (ka->k != T_KSTART && !running)
        return NULL; /* not started yet: the start timer brings it up with the current images */
    if (ka->k == T_KSTART && running)
        return NULL;
    const char *nr = json_string_value(json_object_get(
            json_object_get(json_object_get(cur, "metadata"), "annotations"), ANN_NEVER_READY));
    bool never = ka->never_ready || (nr && strcmp(nr, "true") == 0);
    char ts[40];
    ks_rfc3339_now(ts, sizeof ts);
    json_t *pod = json_copy((json_t *)cur);
    /* copied only as deep as written: status and its conditions list (whose changed entries are
     * replaced, not modified); containerStatuses is rebuilt; the rest is shared */
    json_t *st = json_is_object(st0) ? json_copy(st0) : json_object();
    json_object_set_new(pod, "status", st);
    const json_t *spec_cts = json_object_get(json_object_get(cur, "spec"), "containers");
    json_t *old_cs = json_object_get(st, "containerStatuses");
    json_t *cs = json_array();
    bool all_ready = true;
    size_t i;
    json_t *ct;
    json_array_foreach(spec_cts, i, ct)
    {
        const char *name = json_string_value(json_object_get(ct, "name"));
        const char *img = json_string_value(json_object_get(ct, "image"));
        json_t *prev = NULL;
        size_t j;
        json_t *o;
        json_array_foreach(old_cs, j, o)
        {
            if (name && str_is(json_object_get(o, "name"), name)) {
                prev = o;
                break;
            }
        }
        const char *run_img = prev ? json_string_value(json_object_get(prev, "image")) : NULL;
        json_int_t restarts = prev ? json_integer_value(json_object_get(prev, "restartCount")) : 0;
        bool stale = !run_img || !img || strcmp(run_img, img) != 0;
        bool down = ka->k == T_KDOWN && stale;
        if (ka->k == T_KDOWN && !stale) {
            json_array_append(cs, prev);
            all_ready &= json_is_true(json_object_get(prev, "ready"));
            continue;
        }
        bool ready = !down && !never;
        all_ready &= ready;
        json_t *state = down ? json_pack("{s:{s:s}}", "waiting", "reason", "ContainerCreating")
                             : json_pack("{s:{s:s}}", "running", "startedAt", ts);
        json_array_append_new(cs,
                              json_pack("{s:s,s:s,s:s,s:b,s:b,s:I,s:o}", "name", name ? name : "",
                                        "image", down && run_img ? run_img : (img ? img : ""),
                                        "imageID", "", "ready", ready, "started", !down,
                                        "restartCount", restarts + (down ? 1 : 0), "state", state));
    }
    json_object_set_new(st, "containerStatuses", cs);
    json_object_set_new(st, "phase", json_string("Running"));
    if (!json_object_get(st, "startTime")) {
        json_object_set_new(st, "startTime", json_string(ts));
        json_object_set_new(st, "podIP", json_string("10.244.0.1"));
        json_object_set_new(st, "hostIP", json_string("127.0.0.1"));
    }
    json_t *conds = json_object_get(st, "conditions");
    conds = json_is_array(conds) ? json_copy(conds) : json_array();
    json_object_set_new(st, "conditions", conds);
    set_condition(conds, "PodScheduled", true, ts);
    set_condition(conds, "Initialized", true, ts);
    set_condition(conds, "ContainersReady", all_ready, ts);
    set_condition(conds, "Ready", all_ready, ts);
    return pod;
}

static void kubelet_fire(ks_controller *c, timer_kind k, const timer *t)
{
    kubelet_arg ka = {.k = k, .t = t, .never_ready = c->o.never_ready};
    ks_err err = {0};
    json_t *pod = ks_api_write_internal(c->s, &ks_resources[KS_RES_POD], t->ns, t->name,
                                        mut_kubelet, &ka, &err);
    if (pod && k == T_KDOWN) { /* from the controller thread itself: it sees the queue */
        pthread_mutex_lock(&c->mu);
        timer_push_locked(c, T_KUP, ks_now_ns() + c->o.restart_ms * 1000000, pod);
        pthread_mutex_unlock(&c->mu);
    }
    json_decref(pod);
}
