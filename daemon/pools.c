/* podclaimd pool manager: which pools this daemon serves, made from the file's `pools:` and
 * from SandboxPool objects, published to every other thread without a lock.
 *
 * Flow: config pools (main, at start) + SandboxPool changes (poolctl's watch thread ->
 *       pcd_pools_object -> queue) -> [manager thread: decide, make a pool (informer +
 *       pc_pool + timed backend), publish the table, retire the old generation] -> readers
 *       (HTTP, metrics, controller callbacks) load the table with one acquire.
 *
 * How the two sources combine (docs/daemon.md, "Pools"):
 * - a pool in the file and no SandboxPool: served with the file's settings (someone else
 *   makes its pods, or nobody: the file alone does not create pods);
 * - a SandboxPool and no file entry: served with the scheduler knobs at their defaults;
 * - both: the file's knobs (inboxCapacity, maxInflight, ...), and team, user, env, tags and
 *   the webhook URL from the object where it sets them (what `kubectl get` shows wins), else
 *   from the file;
 * - the SandboxPool's replicas and template are the pool controller's business, not the
 *   scheduler's: a change of them (kubectl scale) leaves the scheduler alone. A change of team,
 *   user, env or tags makes a new scheduler (new metric labels, env membership): claims
 *   waiting in the old one get 503 + Retry-After. A webhook URL change is applied in place.
 *
 * Threads: the manager thread is the only writer of the tables (and main before it starts /
 * after it stopped); writers also hold mgr->mu for the event queue. Readers: any thread.
 */
#include "log.h"
#include "podclaimd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pool_event {
    struct pool_event *next;
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    json_t *obj; /* the SandboxPool, or NULL: gone */
} pool_event;

typedef struct pcd_mgr {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pool_event *head, *tail; /* guarded by mu */
    bool stop;               /* guarded by mu */
    _Atomic int64_t pending; /* events queued or being applied */
    pcd_pool *all;           /* every pool ever made, live or retired (manager) */
    pcd_table *retired;      /* replaced tables, freed at exit */
    pc_env *retired_envs[1024];
    size_t n_retired_envs;
} pcd_mgr;

/* ---- lookups (any thread) ------------------------------------------------------------------ */

pcd_table *pcd_pools_now(pcd *d)
{
    /* acquire: pairs with the manager's release store; the pools it lists are fully built */
    return atomic_load_explicit(&d->pools, memory_order_acquire);
}

pcd_table *pcd_envs_now(pcd *d)
{
    return atomic_load_explicit(&d->envs, memory_order_acquire);
}

pcd_pool *pcd_find_pool(pcd *d, const char *ns, const char *name)
{
    pcd_table *t = pcd_pools_now(d);
    for (size_t i = 0; t && i < t->n; i++) {
        pcd_pool *p = t->item[i];
        if (strcmp(p->cfg.namespace_, ns) == 0 && strcmp(p->cfg.name, name) == 0)
            return p;
    }
    return NULL;
}

pcd_env *pcd_find_env(pcd *d, const char *name)
{
    pcd_table *t = pcd_envs_now(d);
    for (size_t i = 0; t && i < t->n; i++) {
        pcd_env *e = t->item[i];
        if (strcmp(e->cfg.name, name) == 0)
            return e;
    }
    return NULL;
}

bool pcd_pools_settled(pcd *d)
{
    return !d->mgr || atomic_load_explicit(&d->mgr->pending, memory_order_relaxed) == 0;
}

/* ---- publishing (manager) ------------------------------------------------------------------ */

static pcd_table *table_new(size_t n)
{
    pcd_table *t = calloc(1, sizeof(*t) + (n ? n : 1) * sizeof(void *));
    if (t)
        t->n = n;
    return t;
}

static void publish(pcd *d, _Atomic(pcd_table *) *slot, pcd_table *t)
{
    /* release: the items (and everything they point to) were written before */
    pcd_table *old = atomic_exchange_explicit(slot, t, memory_order_acq_rel);
    if (old) {
        old->retired_next = d->mgr->retired;
        d->mgr->retired = old;
    }
}

/* ---- one pool ------------------------------------------------------------------------------ */

static void on_informer_change(void *arg, pc_informer_change change, const pc_pod_ref *pod,
                               int64_t received_at_ns)
{
    pcd_pool *p = arg;
    if (change != PC_INFORMER_OFFER)
        return;
    pcd_hist_observe(&p->idle_to_claimable, pc_now_ns() - received_at_ns);
    pcd_registry_pod_idle(p->d->registry, pod->namespace_, pod->name, pod->resource_version);
}

static void on_informer_claimed(void *arg, const pc_pod_ref *pod, const char *claim_id)
{
    pcd_pool *p = arg;
    pcd_pod_claimed(p->d, p, pod, claim_id);
}

/* The CAS round trip per pool: the pool sees the backend only through pc_backend, so podclaimd
 * slips a timing layer in between (public interface, no library change). One small allocation
 * per CAS carries the start time and the pool's completion to the backend's thread. */
typedef struct cas_timing {
    pcd_pool *p;
    int64_t start_ns;
    pc_cas_done_fn done;
    void *token;
} cas_timing;

static void timed_done(void *arg, pc_cas_outcome outcome, const char *new_rv, const char *message,
                       int64_t retry_after_ns)
{
    cas_timing *t = arg;
    pcd_hist_observe(&t->p->cas_round_trip, pc_now_ns() - t->start_ns);
    pc_cas_done_fn done = t->done;
    void *token = t->token;
    free(t);
    done(token, outcome, new_rv, message, retry_after_ns);
}

static int timed_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                           void *token)
{
    pcd_pool *p = b->impl;
    /* The leadership gate: no claim PATCH leaves a replica past its renew deadline, even when
     * its elector thread is stuck (pcd_may_write reads the deadline itself). The scheduler
     * treats a CAS that could not start as retryable; the waker then ends the claim (503). The
     * resourceVersion precondition stays the fence: this gate only keeps a deposed leader
     * from competing. */
    if (!pcd_may_write(p)) {
        atomic_fetch_add_explicit(&p->not_leader, 1, memory_order_relaxed);
        return -EPERM;
    }
    cas_timing *t = malloc(sizeof(*t));
    if (!t)
        return -ENOMEM;
    *t = (cas_timing){.p = p, .start_ns = pc_now_ns(), .done = done, .token = token};
    pc_backend *inner = p->backend.inner;
    int err = inner->cas_start(inner, req, timed_done, t);
    if (err)
        free(t); /* the backend will never call timed_done */
    return err;
}

static void copy_names(char ***dst, size_t *dn, const json_t *containers)
{
    size_t i, n = json_array_size(containers);
    json_t *c;
    if (!n)
        return;
    *dst = calloc(n, sizeof(char *));
    json_array_foreach(containers, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        if (name && *dst)
            (*dst)[(*dn)++] = strdup(name);
    }
}

/* The container names images may name: from the config, else the SandboxPool's template, else
 * one pod of the pool; unknown stays NULL (the API server then judges). Manager thread
 * (blocking requests). */
static void learn_containers(pcd *d, pcd_pool *p, const json_t *obj)
{
    if (p->cfg.n_containers) {
        p->containers = p->cfg.containers;
        p->n_containers = p->cfg.n_containers;
        return;
    }
    char **learned = NULL;
    size_t n = 0;
    json_t *tspec =
            json_object_get(json_object_get(json_object_get(obj, "spec"), "template"), "spec");
    copy_names(&learned, &n, json_object_get(tspec, "containers"));
    pc_kube_conn *conn = NULL;
    if (!n && pc_kube_conn_new(d->client, &conn) == 0) {
        char path[512];
        snprintf(path, sizeof(path),
                 "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s&limit=1",
                 p->cfg.namespace_, p->cfg.name);
        pc_kube_response r;
        if (pc_kube_conn_request(conn, "GET", path, NULL, NULL, 0, &r) == 0 && r.status == 200) {
            json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
            json_t *items = json_object_get(j, "items");
            copy_names(&learned, &n,
                       json_object_get(json_object_get(json_array_get(items, 0), "spec"),
                                       "containers"));
            json_decref(j);
        }
        pc_kube_response_fini(&r);
        if (!n) {
            snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/%s/sandboxpools/%s",
                     p->cfg.namespace_, p->cfg.name);
            if (pc_kube_conn_request(conn, "GET", path, NULL, NULL, 0, &r) == 0 &&
                r.status == 200) {
                json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
                json_t *spec = json_object_get(
                        json_object_get(json_object_get(j, "spec"), "template"), "spec");
                copy_names(&learned, &n, json_object_get(spec, "containers"));
                json_decref(j);
            }
            pc_kube_response_fini(&r);
        }
        pc_kube_conn_free(conn);
    }
    if (n) {
        p->containers = learned;
        p->n_containers = n;
    } else {
        free(learned);
    }
    pcd_logf(n ? PCD_DEBUG : PCD_WARN, "pool=%s containers=%zu msg=\"%s\"", p->key, n,
             n ? "container names learned"
               : "no template or pod to learn container names from; "
                 "the API server will judge image names");
}

static void pool_free(pcd_pool *p)
{
    if (p->informer)
        pc_informer_stop(p->informer);
    pc_pool_free(p->pool); /* shuts down first if needed; before the informer (resync hook) */
    pc_informer_free(p->informer);
    if (p->containers != p->cfg.containers) {
        for (size_t k = 0; k < p->n_containers; k++)
            free(p->containers[k]);
        free(p->containers);
    }
    pcd_pool_cfg_fini(&p->cfg);
    pthread_mutex_destroy(&p->wh_mu);
    free(p);
}

/* Make and start one pool from cfg (copied). obj: its SandboxPool, or NULL. Returns the pool
 * (not yet published) or NULL (logged). */
static pcd_pool *pool_make(pcd *d, const pcd_pool_cfg *cfg, const json_t *obj, bool from_file)
{
    pcd_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->wh_mu, NULL);
    pcd_pool_cfg_copy(&p->cfg, cfg);
    p->d = d;
    p->from_file = from_file;
    atomic_store_explicit(&p->from_object, obj != NULL, memory_order_relaxed);
    snprintf(p->webhook, sizeof(p->webhook), "%s", cfg->webhook_url ? cfg->webhook_url : "");
    pcd_pool_cfg *pc = &p->cfg;
    snprintf(p->key, sizeof(p->key), "%s/%s", pc->namespace_, pc->name);
    /* label values here are DNS labels / label values (checked): no escaping */
    snprintf(p->labels, sizeof(p->labels),
             "pool=\"%s\",namespace=\"%s\",team=\"%s\",user=\"%s\",env=\"%s\"", pc->name,
             pc->namespace_, pc->team, pc->user, pc->env);
    p->lease = pcd_cluster_lease_for(d, pc->namespace_, pc->name);
    pc_informer_config ic = {.client = d->client,
                             .namespace_ = pc->namespace_,
                             .pool = pc->name,
                             .observer = on_informer_change,
                             .on_claimed = on_informer_claimed,
                             .observer_arg = p};
    int err = pc_informer_new(&ic, &p->informer);
    if (err) {
        pcd_logf(PCD_ERROR, "pool=%s msg=\"informer: %s\"", p->key, pc_strerror(err));
        pool_free(p);
        return NULL;
    }
    pc_pool_config cfgp = {.namespace_ = pc->namespace_,
                           .name = pc->name,
                           .team = pc->team,
                           .user = pc->user,
                           .env = pc->env,
                           .tags = (const char *const *)pc->tags,
                           .n_tags = pc->n_tags,
                           .inbox_capacity = (uint32_t)pc->inbox_capacity,
                           .max_inflight = (uint32_t)pc->max_inflight,
                           .cas_workers = (uint32_t)pc->cas_workers,
                           .promote_after_ns = pc->promote_after_ns,
                           .retry_limit = (uint32_t)pc->retry_limit,
                           .retry_backoff_ns = pc->retry_backoff_ns,
                           .reservation_ttl_ns = pc->reservation_ttl_ns,
                           .conflict_hold_ns = pc->conflict_hold_ns,
                           .resync_period_ns = pc->resync_period_ns ? pc->resync_period_ns : -1,
                           .resync = pc_informer_resync_hook,
                           .resync_arg = p->informer};
    /* The loop hooks go through to the shared Kubernetes backend: the first pool started on
     * it runs its curl loop on its scheduler thread, so that pool's CASes are sent, answered
     * and taken in on one thread; the other pools' CASes are driven by that thread too (their
     * results reach their own schedulers through the pool's results inbox, as from the
     * backend's own thread). When that pool stops, the backend's thread takes the loop back. */
    p->backend.iface = (pc_backend){.cas_start = timed_cas_start, .impl = p};
    pc_backend_wrap(&p->backend, pc_kube_backend_iface(d->kb));
    if ((err = pc_pool_new(&cfgp, &p->backend.iface, &p->pool)) != 0 ||
        (err = pc_pool_start(p->pool)) != 0) {
        pcd_logf(PCD_ERROR, "pool=%s msg=\"pool: %s\"", p->key, pc_strerror(err));
        pool_free(p);
        return NULL;
    }
    pc_informer_set_pool(p->informer, p->pool);
    learn_containers(d, p, obj);
    if ((err = pc_informer_start(p->informer)) != 0) {
        pcd_logf(PCD_ERROR, "pool=%s msg=\"informer start: %s\"", p->key, pc_strerror(err));
        pool_free(p);
        return NULL;
    }
    p->all_next = d->mgr->all;
    d->mgr->all = p;
    pcd_logf(PCD_INFO, "pool=%s team=%s user=%s env=%s tags=%zu source=%s%s%s msg=\"serving\"",
             p->key, pc->team, pc->user, pc->env, pc->n_tags, from_file ? "file" : "",
             from_file && obj ? "+" : "", obj ? "SandboxPool" : "");
    return p;
}

/* ---- envs ---------------------------------------------------------------------------------- */

static pcd_env *env_add(pcd *d, const char *name, pc_env_strategy strategy)
{
    pcd_env *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->cfg.name = strdup(name);
    e->cfg.strategy_name = strdup(pc_env_strategy_name(strategy));
    e->cfg.strategy = strategy;
    pcd_table *old = pcd_envs_now(d);
    size_t n = old ? old->n : 0;
    pcd_table *t = table_new(n + 1);
    if (!t) {
        free(e->cfg.name);
        free(e->cfg.strategy_name);
        free(e);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        t->item[i] = old->item[i];
    t->item[n] = e;
    publish(d, &d->envs, t);
    return e;
}

/* Rebuild each env's member list from the live pools (a pc_env is fixed once ranked from, so a
 * new one replaces it; the old one is kept until exit, see pcd_table). */
static void envs_rebuild(pcd *d)
{
    pcd_table *pools = pcd_pools_now(d);
    for (size_t i = 0; i < pools->n; i++) {
        pcd_pool *p = pools->item[i];
        if (p->cfg.env[0] && !pcd_find_env(d, p->cfg.env))
            env_add(d, p->cfg.env, PC_ENV_MOST_IDLE);
    }
    pcd_table *envs = pcd_envs_now(d);
    for (size_t k = 0; envs && k < envs->n; k++) {
        pcd_env *e = envs->item[k];
        pc_env *ne;
        if (pc_env_new(e->cfg.name, e->cfg.strategy, &ne) != 0)
            continue;
        for (size_t i = 0; i < pools->n; i++) {
            pcd_pool *p = pools->item[i];
            if (strcmp(p->cfg.env, e->cfg.name) == 0 &&
                pc_env_add_pool(ne, p->pool, (const char *const *)p->cfg.tags, p->cfg.n_tags))
                pcd_logf(PCD_WARN, "env=%s pool=%s msg=\"not added (at most %d pools)\"",
                         e->cfg.name, p->key, PC_ENV_MAX_POOLS);
        }
        pc_env *old = atomic_exchange_explicit(&e->env, ne, memory_order_acq_rel);
        if (old) {
            if (d->mgr->n_retired_envs < sizeof(d->mgr->retired_envs) / sizeof(pc_env *))
                d->mgr->retired_envs[d->mgr->n_retired_envs++] = old;
            /* beyond the bound the old env is leaked rather than freed under a reader */
        }
    }
}

/* ---- applying a change --------------------------------------------------------------------- */

static const pcd_pool_cfg *file_pool(pcd *d, const char *ns, const char *name)
{
    for (size_t i = 0; i < d->cfg.n_pools; i++)
        if (strcmp(d->cfg.pools[i].namespace_, ns) == 0 && strcmp(d->cfg.pools[i].name, name) == 0)
            return &d->cfg.pools[i];
    return NULL;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
}

/* The settings of ns/name: the file's (or defaults), with what the object sets. */
static int want_cfg(pcd *d, const char *ns, const char *name, const pcd_pool_cfg *file,
                    const json_t *obj, pcd_pool_cfg *out)
{
    int rc = file ? pcd_pool_cfg_copy(out, file) : pcd_pool_cfg_defaults(out);
    if (rc)
        return rc;
    set_str(&out->namespace_, ns);
    set_str(&out->name, name);
    if (!obj)
        return 0;
    const json_t *spec = json_object_get(obj, "spec");
    static const char *const fields[] = {"team", "user", "env"};
    char **dst[] = {&out->team, &out->user, &out->env};
    for (int i = 0; i < 3; i++) {
        const char *v = json_string_value(json_object_get(spec, fields[i]));
        if (!v || !v[0])
            continue;
        if (!pcd_label_value(v)) {
            pcd_logf(PCD_WARN,
                     "pool=%s/%s field=spec.%s value=\"%.63s\" msg=\"not a label "
                     "value: ignored\"",
                     ns, name, fields[i], v);
            continue;
        }
        set_str(dst[i], v);
    }
    const json_t *tags = json_object_get(spec, "tags");
    if (json_is_array(tags)) {
        for (size_t i = 0; i < out->n_tags; i++)
            free(out->tags[i]);
        free(out->tags);
        out->tags = calloc(json_array_size(tags) + 1, sizeof(char *));
        out->n_tags = 0;
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t)
        {
            if (json_is_string(t) && json_string_length(t) && out->tags)
                out->tags[out->n_tags++] = strdup(json_string_value(t));
        }
    }
    const char *url = json_string_value(json_object_get(json_object_get(spec, "webhook"), "url"));
    if (url && url[0]) {
        if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0)
            set_str(&out->webhook_url, url);
        else
            pcd_logf(PCD_WARN,
                     "pool=%s/%s field=spec.webhook.url msg=\"not an http(s) URL: "
                     "ignored\"",
                     ns, name);
    }
    (void)d;
    return 0;
}

static bool same_identity(const pcd_pool_cfg *a, const pcd_pool_cfg *b)
{
    if (strcmp(a->team, b->team) || strcmp(a->user, b->user) || strcmp(a->env, b->env) ||
        a->n_tags != b->n_tags)
        return false;
    for (size_t i = 0; i < a->n_tags; i++)
        if (strcmp(a->tags[i], b->tags[i]))
            return false;
    return true;
}

/* Retire p: out of the table (the caller published one without it), then shut down. Its
 * waiting claims get SHUTDOWN (503 + Retry-After); its memory stays until exit. */
static void retire(pcd *d, pcd_pool *p, bool drop_lease)
{
    atomic_store_explicit(&p->gone, true, memory_order_relaxed);
    pc_informer_stop(p->informer);
    pc_pool_shutdown(p->pool);
    if (drop_lease)
        pcd_cluster_lease_drop(d, p->lease);
    pcd_logf(PCD_INFO, "pool=%s msg=\"retired\"", p->key);
}

/* Publish the live table with `live` replaced by `made` (either may be NULL). */
static void publish_pools(pcd *d, pcd_pool *live, pcd_pool *made)
{
    pcd_table *old = pcd_pools_now(d);
    size_t n = old ? old->n : 0;
    pcd_table *t = table_new(n + 1);
    if (!t)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (old->item[i] != live)
            t->item[k++] = old->item[i];
    if (made)
        t->item[k++] = made;
    t->n = k;
    publish(d, &d->pools, t);
}

static void apply(pcd *d, const char *ns, const char *name, const json_t *obj)
{
    const pcd_pool_cfg *file = file_pool(d, ns, name);
    pcd_pool *live = pcd_find_pool(d, ns, name);
    if (!obj && !file) {
        if (live) {
            publish_pools(d, live, NULL);
            envs_rebuild(d);
            retire(d, live, true);
        }
        return;
    }
    pcd_pool_cfg want;
    if (want_cfg(d, ns, name, file, obj, &want) != 0)
        return;
    if (live && same_identity(&live->cfg, &want)) {
        atomic_store_explicit(&live->from_object, obj != NULL, memory_order_relaxed);
        pthread_mutex_lock(&live->wh_mu);
        snprintf(live->webhook, sizeof(live->webhook), "%s", want.webhook_url);
        pthread_mutex_unlock(&live->wh_mu);
        pcd_pool_cfg_fini(&want);
        return;
    }
    pcd_pool *made = pool_make(d, &want, obj, file != NULL);
    pcd_pool_cfg_fini(&want);
    if (!made)
        return;
    publish_pools(d, live, made);
    envs_rebuild(d);
    if (live)
        retire(d, live, false); /* the same pool under new labels keeps its Lease */
}

static void *manager_main(void *arg)
{
    pcd *d = arg;
    pcd_mgr *m = d->mgr;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->head && !m->stop)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->stop)
            break;
        pool_event *ev = m->head;
        m->head = ev->next;
        if (!m->head)
            m->tail = NULL;
        pthread_mutex_unlock(&m->mu);
        apply(d, ev->ns, ev->name, ev->obj);
        json_decref(ev->obj);
        free(ev);
        atomic_fetch_sub_explicit(&m->pending, 1, memory_order_relaxed);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

int pcd_pools_init(pcd *d)
{
    pcd_mgr *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    d->mgr = m;
    atomic_store(&d->pools, table_new(0));
    atomic_store(&d->envs, table_new(0));
    for (size_t i = 0; i < d->cfg.n_envs; i++)
        if (!env_add(d, d->cfg.envs[i].name, d->cfg.envs[i].strategy))
            return -ENOMEM;
    for (size_t i = 0; i < d->cfg.n_pools; i++) {
        const pcd_pool_cfg *pc = &d->cfg.pools[i];
        pcd_pool *made = pool_make(d, pc, NULL, true);
        if (!made)
            return -EIO;
        publish_pools(d, NULL, made);
    }
    envs_rebuild(d);
    return 0;
}

int pcd_pools_start(pcd *d)
{
    int err = pthread_create(&d->mgr->thread, NULL, manager_main, d);
    if (err)
        return -err;
    pthread_setname_np(d->mgr->thread, "pcd-pools");
    d->mgr->started = true;
    return 0;
}

void pcd_pools_object(pcd *d, const char *ns, const char *name, const json_t *obj)
{
    pool_event *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return;
    snprintf(ev->ns, sizeof(ev->ns), "%s", ns);
    snprintf(ev->name, sizeof(ev->name), "%s", name);
    ev->obj = obj ? json_incref((json_t *)obj) : NULL; /* cached objects are immutable */
    pcd_mgr *m = d->mgr;
    atomic_fetch_add_explicit(&m->pending, 1, memory_order_relaxed);
    pthread_mutex_lock(&m->mu);
    if (m->tail)
        m->tail->next = ev;
    else
        m->head = ev;
    m->tail = ev;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void pcd_pools_stop(pcd *d)
{
    pcd_mgr *m = d->mgr;
    if (!m || !m->started)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    m->started = false;
    while (m->head) {
        pool_event *ev = m->head;
        m->head = ev->next;
        json_decref(ev->obj);
        free(ev);
    }
    m->tail = NULL;
}

void pcd_pools_shutdown(pcd *d)
{
    pcd_table *t = pcd_pools_now(d);
    for (size_t i = 0; t && i < t->n; i++)
        pc_pool_shutdown(((pcd_pool *)t->item[i])->pool);
}

void pcd_pools_free(pcd *d)
{
    pcd_mgr *m = d->mgr;
    if (!m)
        return;
    for (pcd_pool *p = m->all; p; p = p->all_next)
        pc_informer_stop(p->informer);
    for (pcd_pool *p = m->all; p; p = p->all_next)
        pc_pool_shutdown(p->pool);
    pcd_table *envs = pcd_envs_now(d);
    for (size_t i = 0; envs && i < envs->n; i++) {
        pcd_env *e = envs->item[i];
        pc_env_free(atomic_load(&e->env));
        free(e->cfg.name);
        free(e->cfg.strategy_name);
        free(e);
    }
    for (size_t i = 0; i < m->n_retired_envs; i++)
        pc_env_free(m->retired_envs[i]);
    while (m->all) {
        pcd_pool *p = m->all;
        m->all = p->all_next;
        pool_free(p);
    }
    free(atomic_load(&d->pools));
    free(atomic_load(&d->envs));
    while (m->retired) {
        pcd_table *t = m->retired;
        m->retired = t->retired_next;
        free(t);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    d->mgr = NULL;
}
