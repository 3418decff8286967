/* The SandboxPool controller (see poolctl.h for what it does and why).
 *
 * Flow: pods watch + pools watch (their threads) --pool keys--> queue (mu/cv) --> controller
 *       thread: reconcile(pool) = classify pods (poolctl_pods.c) -> guarded writes -> status.
 *
 * Threads and ownership:
 * - watch threads: only enqueue keys (mu) and call on_pool;
 * - controller thread: owns every pool_state, the conn, and all writes;
 * - any thread: resync (mu), get_pool/synced (the watch caches' own locks).
 * Lock order: mu -> a watch's cache lock (pc_watch_list under mu); never the reverse.
 */
#include "poolctl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACE 3
#define PACE_MAX_NS 1000000000LL

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- queue --------------------------------------------------------------------------------- */

static void enqueue_locked(pc_poolctl *c, const char *key)
{
    json_object_set_new(c->queue, key, json_true());
    pthread_cond_signal(&c->cv);
}

static void enqueue(pc_poolctl *c, const char *ns, const char *name)
{
    char key[PC__PC_KEY_MAX];
    snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", name);
    pthread_mutex_lock(&c->mu);
    enqueue_locked(c, key);
    pthread_mutex_unlock(&c->mu);
}

void pc__poolctl_requeue_after(pc_poolctl *c, const char *key, int64_t delay_ns)
{
    int64_t due = pc__cl_mono_ns() + delay_ns;
    pthread_mutex_lock(&c->mu);
    json_t *cur = json_object_get(c->delayed, key);
    if (!cur || json_integer_value(cur) > due)
        json_object_set_new(c->delayed, key, json_integer(due));
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static bool owned_by_a_pool(const pc_kube_pod *pod)
{
    for (size_t i = 0; i < pod->n_owners; i++)
        if (strcmp(pod->owners[i].key, "SandboxPool") == 0)
            return true;
    return false;
}

/* Does a change of `pod` in pool ns/pool give the controller anything to do? Yes for a pool
 * that has a SandboxPool (or before the pools are known). Without one, only for a pod a
 * SandboxPool owned (an orphan to delete): the pods of a pool served from the file alone are
 * someone else's, and reconciling their pool on each of their events was a scan of every pod
 * of it per claim (a third of podclaimd's CPU with a 50,000-pod file pool under load). */
static bool wants(pc_poolctl *c, const char *ns, const char *pool, const pc_kube_pod *pod)
{
    if (!pc_watch_synced(c->pools) || owned_by_a_pool(pod))
        return true;
    json_t *obj = pc_watch_get(c->pools, ns, pool);
    json_decref(obj);
    return obj != NULL;
}

static void on_pod(void *arg, pc_watch_change ch, const pc_kube_pod *obj, const pc_kube_pod *old)
{
    pc_poolctl *c = arg;
    (void)ch;
    const char *pool = pc_kube_pod_label(obj, PC_CL_LABEL_POOL);
    const char *opool = old ? pc_kube_pod_label(old, PC_CL_LABEL_POOL) : NULL;
    const char *ns = obj->namespace_;
    if (pool && wants(c, ns, pool, obj))
        enqueue(c, ns, pool);
    if (opool && (!pool || strcmp(pool, opool) != 0) && wants(c, ns, opool, old))
        enqueue(c, ns, opool);
}

static void on_pool_change(void *arg, pc_watch_change ch, const json_t *obj, const json_t *old)
{
    pc_poolctl *c = arg;
    const char *ns = pc__cl_jstr(obj, "metadata.namespace");
    const char *name = pc__cl_jstr(obj, "metadata.name");
    if (!name)
        return;
    bool spec_changed = ch != PC_WATCH_MODIFIED ||
                        !json_equal(json_object_get(obj, "spec"), json_object_get(old, "spec"));
    if (!spec_changed)
        return; /* our own status writes: nothing to reconcile */
    if (c->on_pool)
        c->on_pool(c->arg, ns ? ns : "", name, ch == PC_WATCH_DELETED ? NULL : obj);
    enqueue(c, ns, name);
}

static void on_sync(void *arg)
{
    pc_poolctl_resync(arg);
}

/* ---- pool state ---------------------------------------------------------------------------- */

static pc__pool_state *state_find(pc_poolctl *c, const char *key)
{
    for (pc__pool_state *s = c->states; s; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s;
    return NULL;
}

static pc__pool_state *state_get(pc_poolctl *c, const char *key)
{
    pc__pool_state *s = state_find(c, key);
    if (s)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->key, sizeof(s->key), "%s", key);
    const char *slash = strchr(key, '/');
    snprintf(s->ns, sizeof(s->ns), "%.*s", (int)(slash - key), key);
    snprintf(s->name, sizeof(s->name), "%s", slash + 1);
    s->pending_creates = json_object();
    s->acted = json_object();
    s->since = json_object();
    s->deleting = json_object();
    s->throttled = json_object();
    s->next = c->states;
    c->states = s;
    return s;
}

static void state_free(pc__pool_state *s)
{
    json_decref(s->pending_creates);
    json_decref(s->acted);
    json_decref(s->since);
    json_decref(s->deleting);
    json_decref(s->throttled);
    free(s);
}

static void state_drop(pc_poolctl *c, const char *key)
{
    for (pc__pool_state **pp = &c->states; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            pc__pool_state *s = *pp;
            *pp = s->next;
            state_free(s);
            return;
        }
    }
}

/* ---- reconcile ----------------------------------------------------------------------------- */

static void reconcile(pc_poolctl *c, const char *key)
{
    const char *slash = strchr(key, '/');
    if (!slash)
        return;
    char ns[PC_NAMESPACE_MAX], name[PC_NAME_MAX];
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
    snprintf(name, sizeof(name), "%s", slash + 1);
    atomic_fetch_add_explicit(&c->n.reconciles, 1, memory_order_relaxed);
    bool may = !c->may_write || c->may_write(c->arg, ns, name);
    json_t *pool = pc_watch_get(c->pools, ns, name);
    if (!pool) {
        if (may && pc_watch_synced(c->pools) && pc_watch_synced(c->pods))
            pc__poolctl_delete_orphans(c, ns, name);
        state_drop(c, key);
        return;
    }
    pc__pool_state *st = may ? state_get(c, key) : NULL;
    if (st) {
        pc_watch_pod **pods;
        long n = pc_watch_list_pods(c->pods, ns, name, &pods);
        if (n >= 0) {
            pc__poolctl_sync_pods(c, st, pool, pods, (size_t)n);
            pc__poolctl_sync_status(c, st, pool);
        } else {
            pc__poolctl_requeue_after(c, key, 100000000LL); /* out of memory: later */
        }
        pc_watch_pods_free(pods, n);
    }
    json_decref(pool);
}

static void *controller_main(void *arg)
{
    pc_poolctl *c = arg;
    pthread_setname_np(pthread_self(), "pc-poolctl");
    int64_t next_tick = pc__cl_mono_ns() + c->status_interval_ns;
    pthread_mutex_lock(&c->mu);
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        int64_t now = pc__cl_mono_ns();
        int64_t wake = next_tick;
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(c->delayed, tmp, k, v)
        {
            int64_t due = json_integer_value(v);
            if (due <= now) {
                json_object_set_new(c->queue, k, json_true());
                json_object_del(c->delayed, k);
            } else if (due < wake) {
                wake = due;
            }
        }
        if (now >= next_tick) {
            /* the scheduler figures change without any API event: look at every pool */
            c->all = true;
            next_tick = now + c->status_interval_ns;
        }
        if (c->all) {
            c->all = false;
            json_t *pools = pc_watch_list(c->pools);
            size_t i;
            json_array_foreach(pools, i, v)
            {
                char key[PC__PC_KEY_MAX];
                snprintf(key, sizeof(key), "%s/%s", pc__cl_jstr(v, "metadata.namespace") ?: "",
                         pc__cl_jstr(v, "metadata.name") ?: "");
                json_object_set_new(c->queue, key, json_true());
            }
            json_decref(pools);
            /* and pools we hold state for that are gone (their orphans) */
            for (pc__pool_state *s = c->states; s; s = s->next)
                json_object_set_new(c->queue, s->key, json_true());
        }
        void *it = json_object_iter(c->queue);
        if (!it) {
            struct timespec ts = {.tv_sec = wake / 1000000000LL, .tv_nsec = wake % 1000000000LL};
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            continue;
        }
        char key[PC__PC_KEY_MAX];
        snprintf(key, sizeof(key), "%s", json_object_iter_key(it));
        json_object_del(c->queue, key);
        pc__pool_state *st = state_find(c, key);
        if (st && st->next_pass_ns > now) {
            /* paced: one pass later covers every change until then */
            json_t *cur = json_object_get(c->delayed, key);
            if (!cur || json_integer_value(cur) > st->next_pass_ns)
                json_object_set_new(c->delayed, key, json_integer(st->next_pass_ns));
            continue;
        }
        pthread_mutex_unlock(&c->mu);
        int64_t began = thread_cpu_ns();
        reconcile(c, key);
        int64_t spent = thread_cpu_ns() - began;
        /* Pacing: a pass looks at every pod of the pool, and under load pod events come
         * faster than passes end, so back-to-back passes would keep a core busy. The next pass
         * of this pool waits PACE times the CPU time this one took (capped): the controller
         * takes at most 1/(PACE+1) of a core per pool, and each pass covers more events. CPU
         * time, not wall time: a pass waits on its writes' round trips and may be preempted on
         * a busy machine, and neither should hold the next pass back. */
        if ((st = state_find(c, key)) != NULL) {
            int64_t wait = PACE * spent;
            st->next_pass_ns = pc__cl_mono_ns() + (wait < PACE_MAX_NS ? wait : PACE_MAX_NS);
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static bool on_wake(void *arg)
{
    pc_poolctl *c = arg;
    return atomic_load_explicit(&c->stop, memory_order_relaxed);
}

/* ---- public -------------------------------------------------------------------------------- */

int pc_poolctl_new(const pc_poolctl_config *cfg, pc_poolctl **out, char *err, size_t errlen)
{
    if (!cfg || !cfg->client || !cfg->events) {
        snprintf(err, errlen, "poolctl: client and events are required");
        return -EINVAL;
    }
    const char *ns = cfg->namespace_ && cfg->namespace_[0] ? cfg->namespace_ : NULL;
    if (ns && (strlen(ns) >= PC_NAMESPACE_MAX ||
               strspn(ns, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(ns))) {
        snprintf(err, errlen, "poolctl: namespace \"%s\" is not a DNS label", ns);
        return -EINVAL;
    }
    pc_poolctl *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->client = cfg->client;
    c->events = cfg->events;
    c->may_write = cfg->may_write;
    c->snapshot = cfg->snapshot;
    c->on_pool = cfg->on_pool;
    c->arg = cfg->arg;
    c->log = cfg->log;
    c->ready_timeout_ns = cfg->ready_timeout_ns > 0 ? cfg->ready_timeout_ns : 300000000000LL;
    c->status_interval_ns = cfg->status_interval_ns > 0 ? cfg->status_interval_ns : 1000000000LL;
    c->empty_grace_ns = cfg->empty_grace_ns > 0 ? cfg->empty_grace_ns : 10000000000LL;
    c->max_creates = cfg->max_creates ? cfg->max_creates : 50;
    c->queue = json_object();
    c->delayed = json_object();
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);

    char pods_path[256], pools_path[256];
    if (ns) {
        snprintf(pods_path, sizeof(pods_path), "/api/v1/namespaces/%s/pods", ns);
        snprintf(pools_path, sizeof(pools_path), "/apis/%s/%s/namespaces/%s/sandboxpools",
                 PC_CL_GROUP, PC_CL_VERSION, ns);
    } else {
        snprintf(pods_path, sizeof(pods_path), "/api/v1/pods");
        snprintf(pools_path, sizeof(pools_path), "/apis/%s/%s/sandboxpools", PC_CL_GROUP,
                 PC_CL_VERSION);
    }
    pc_watch_config pw = {.client = c->client,
                          .path = pods_path,
                          .label_selector = PC_CL_LABEL_POOL,
                          .index_label = PC_CL_LABEL_POOL,
                          .name = "pool-pods",
                          .watch_timeout_s = cfg->watch_timeout_s,
                          .pods = true,
                          .on_pod = on_pod,
                          .on_sync = on_sync,
                          .arg = c,
                          .log = cfg->log};
    pc_watch_config sw = {.client = c->client,
                          .path = pools_path,
                          .name = "sandboxpools",
                          .watch_timeout_s = cfg->watch_timeout_s,
                          .on_change = on_pool_change,
                          .on_sync = on_sync,
                          .arg = c,
                          .log = cfg->log};
    if (!c->queue || !c->delayed || pc_watch_new(&pw, &c->pods) || pc_watch_new(&sw, &c->pools) ||
        pc_kube_conn_new(c->client, &c->conn)) {
        pc_poolctl_free(c);
        snprintf(err, errlen, "poolctl: out of memory");
        return -ENOMEM;
    }
    pc_kube_conn_set_idle(c->conn, on_wake, c);
    *out = c;
    return 0;
}

int pc_poolctl_start(pc_poolctl *c)
{
    if (c->started)
        return -EALREADY;
    atomic_store_explicit(&c->stop, false, memory_order_relaxed);
    int rc = pthread_create(&c->thread, NULL, controller_main, c);
    if (rc)
        return -rc;
    c->started = true;
    if ((rc = pc_watch_start(c->pools)) || (rc = pc_watch_start(c->pods))) {
        pc_poolctl_stop(c);
        return rc;
    }
    return 0;
}

void pc_poolctl_stop(pc_poolctl *c)
{
    if (!c)
        return;
    pc_watch_stop(c->pods);
    pc_watch_stop(c->pools);
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

void pc_poolctl_free(pc_poolctl *c)
{
    if (!c)
        return;
    pc_poolctl_stop(c);
    pc_watch_free(c->pods);
    pc_watch_free(c->pools);
    pc_kube_conn_free(c->conn);
    while (c->states) {
        pc__pool_state *s = c->states;
        c->states = s->next;
        state_free(s);
    }
    json_decref(c->queue);
    json_decref(c->delayed);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool pc_poolctl_synced(const pc_poolctl *c)
{
    return pc_watch_synced(c->pods) && pc_watch_synced(c->pools);
}

void pc_poolctl_resync(pc_poolctl *c)
{
    pthread_mutex_lock(&c->mu);
    c->all = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

json_t *pc_poolctl_get_pool(pc_poolctl *c, const char *ns, const char *name)
{
    return pc_watch_get(c->pools, ns, name);
}

void pc_poolctl_stats_read(pc_poolctl *c, pc_poolctl_stats *o)
{
#define LD(f) o->f = atomic_load_explicit(&c->n.f, memory_order_relaxed)
    LD(reconciles);
    LD(creates);
    LD(create_errors);
    LD(idles);
    LD(resets);
    LD(deletes);
    LD(conflicts);
    LD(status_writes);
    LD(status_errors);
    LD(events);
    LD(stale_skips);
    LD(throttled);
#undef LD
}

void pc_poolctl_template_hash(const json_t *template_, char *buf, size_t len)
{
    char *s = template_ ? json_dumps(template_, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    free(s);
    snprintf(buf, len, "%010llx", (unsigned long long)(h & 0xffffffffffULL));
}
