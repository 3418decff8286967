/* podclaimd in a cluster: leader election, the SandboxPool and SandboxClaim controllers and
 * claim-outcome webhooks (daemon/cluster/, docs/cluster.md), wired into the daemon.
 *
 * Flow: elector thread(s) --on_start/on_stop--> controllers resync / step down (waker ends the
 *       claims waiting here) ; poolctl --on_pool--> pool manager (pools.c) ; poolctl
 *       --snapshot--> the live pool's pc_pool_snapshot ; claimctl --lookup--> the live pool
 *       --pc_pool_enqueue ; claim outcomes (HTTP callbacks, claimctl) --> webhook thread.
 *
 * Who may write: with leaderElection.enabled, only the holder of the pool's Lease (the one
 * daemon Lease, or the pool's own with perPool) dispatches claims, writes pods and statuses;
 * without, this process always leads. pcd_may_write is lock-free (the elector's own deadline
 * check), so the CAS gate (pools.c) and the HTTP handler ask it on every claim.
 *
 * Leases are never freed while the daemon runs (a pool's pointer to its Lease stays valid);
 * a per-pool Lease whose pool is gone is stopped and released, and re-used if it comes back.
 */
#include "log.h"
#include "podclaimd.h"

#include "claimctl.h"
#include "elector.h"
#include "kevents.h"
#include "poolctl.h"
#include "webhook.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pcd_lease {
    pcd *d;
    pc_elector *e;
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char label[PC_NAMESPACE_MAX + PC_NAME_MAX + 2]; /* "ns/name" of the Lease */
    _Atomic bool running;
    _Atomic uint64_t transitions; /* became leader */
    struct pcd_lease *next;
};

typedef struct pcd_cluster {
    char identity[256];
    char lease_ns[PC_NAMESPACE_MAX];
    pc_kevents *events;
    pc_poolctl *poolctl;
    pc_claimctl *claimctl;
    pc_webhook *webhook;
    pcd_lease *main;      /* the one Lease (leaderElection.enabled, not perPool) */
    pthread_mutex_t mu;   /* guards the leases list (manager thread + metrics) */
    pcd_lease *leases;    /* every Lease made (main included) */
    _Atomic bool started; /* electors may start (set once, by pcd_cluster_start) */
} pcd_cluster;

static void logfn(void *arg, int level, const char *line)
{
    pcd_log_line(arg, level, line);
}

static pc_cluster_log cl_log(pcd *d)
{
    return (pc_cluster_log){.fn = logfn, .level = d->cfg.log_level_num, .level_set = true};
}

/* ---- leases -------------------------------------------------------------------------------- */

static void on_start(void *arg)
{
    pcd_lease *l = arg;
    pcd *d = l->d;
    atomic_fetch_add_explicit(&l->transitions, 1, memory_order_relaxed);
    pcd_logf(PCD_INFO, "lease=%s identity=%s msg=\"leading\"", l->label, d->cl->identity);
    /* look at everything again: what the old leader left half done */
    if (d->cl->poolctl)
        pc_poolctl_resync(d->cl->poolctl);
    if (d->cl->claimctl)
        pc_claimctl_resync(d->cl->claimctl);
}

static void on_stop(void *arg)
{
    pcd_lease *l = arg;
    pcd *d = l->d;
    pcd_logf(PCD_INFO, "lease=%s identity=%s msg=\"stopped leading\"", l->label, d->cl->identity);
    pcd_waker_stepdown(d);
    if (d->cl->claimctl)
        pc_claimctl_step_down(d->cl->claimctl);
}

static void on_new_leader(void *arg, const char *id)
{
    pcd_lease *l = arg;
    pcd_logf(PCD_INFO, "lease=%s leader=%s msg=\"leader observed\"", l->label, id[0] ? id : "-");
}

static pcd_lease *lease_make(pcd *d, const char *name)
{
    pcd_cluster *cl = d->cl;
    pcd_lease *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->d = d;
    snprintf(l->ns, sizeof(l->ns), "%s", cl->lease_ns);
    snprintf(l->name, sizeof(l->name), "%s", name);
    snprintf(l->label, sizeof(l->label), "%s/%s", l->ns, l->name);
    char err[512];
    pc_elector_config ec = {.client = d->client,
                            .namespace_ = l->ns,
                            .name = l->name,
                            .identity = cl->identity,
                            .lease_duration_ns = d->cfg.le_lease_ns,
                            .renew_deadline_ns = d->cfg.le_renew_ns,
                            .retry_period_ns = d->cfg.le_retry_ns,
                            .on_start = on_start,
                            .on_stop = on_stop,
                            .on_new_leader = on_new_leader,
                            .arg = l,
                            .log = cl_log(d)};
    if (pc_elector_new(&ec, &l->e, err, sizeof(err)) != 0) {
        pcd_logf(PCD_ERROR, "lease=%s msg=\"%s\"", l->label, err);
        free(l);
        return NULL;
    }
    pthread_mutex_lock(&cl->mu);
    l->next = cl->leases;
    cl->leases = l;
    pthread_mutex_unlock(&cl->mu);
    return l;
}

static void lease_start(pcd_lease *l)
{
    if (l && !l->running && pc_elector_start(l->e) == 0)
        l->running = true;
}

pcd_lease *pcd_cluster_lease_for(pcd *d, const char *ns, const char *name)
{
    pcd_cluster *cl = d->cl;
    if (!cl || !d->cfg.le_enabled)
        return NULL;
    if (!d->cfg.le_per_pool)
        return cl->main;
    char lname[PC_NAME_MAX];
    snprintf(lname, sizeof(lname), "%s-%s-%s", d->cfg.le_lease_name, ns, name);
    /* a name with '_' or '.' (allowed in pool names) is no DNS label; Lease names are DNS
     * subdomains, so '.' is fine; '_' becomes '-' */
    for (char *p = lname; *p; p++)
        if (*p == '_')
            *p = '-';
        else if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    pthread_mutex_lock(&cl->mu);
    pcd_lease *l = cl->leases;
    while (l && strcmp(l->name, lname) != 0)
        l = l->next;
    pthread_mutex_unlock(&cl->mu);
    if (!l)
        l = lease_make(d, lname);
    /* under mu: pcd_cluster_start starts the leases made before it under mu too, so an
     * elector is started by one thread at a time */
    pthread_mutex_lock(&cl->mu);
    if (l && cl->started)
        lease_start(l);
    pthread_mutex_unlock(&cl->mu);
    return l;
}

void pcd_cluster_lease_drop(pcd *d, pcd_lease *l)
{
    if (!l || l == d->cl->main || !l->running)
        return;
    pc_elector_stop(l->e, true); /* on_stop, then the Lease released */
    l->running = false;
}

bool pcd_may_write(const pcd_pool *p)
{
    return !p->lease || pc_elector_is_leader(p->lease->e);
}

const char *pcd_leader_of(pcd *d, const pcd_pool *p, char *buf, size_t len)
{
    pcd_lease *l = p ? p->lease : d->cl->main;
    if (!l) {
        snprintf(buf, len, "%s", d->cfg.le_enabled ? "" : d->cl->identity);
        return buf;
    }
    return pc_elector_leader(l->e, buf, len);
}

void pcd_cluster_role(pcd *d, char *buf, size_t len)
{
    pcd_cluster *cl = d->cl;
    if (!d->cfg.le_enabled) {
        snprintf(buf, len, "leader (no leader election)");
        return;
    }
    if (cl->main) {
        char who[256];
        if (pc_elector_is_leader(cl->main->e))
            snprintf(buf, len, "leader %s", cl->identity);
        else
            snprintf(buf, len, "follower; leader: %s",
                     pc_elector_leader(cl->main->e, who, sizeof(who))[0] ? who : "(none)");
        return;
    }
    size_t n = 0, led = 0;
    pcd_table *t = pcd_pools_now(d);
    for (size_t i = 0; i < t->n; i++, n++)
        led += pcd_may_write(t->item[i]);
    snprintf(buf, len, "%s of %zu/%zu pools", led ? "leader" : "follower", led, n);
}

/* ---- controller callbacks ------------------------------------------------------------------ */

static bool may_write_cb(void *arg, const char *ns, const char *pool)
{
    pcd *d = arg;
    if (!d->cfg.le_enabled)
        return true;
    if (d->cl->main)
        return pc_elector_is_leader(d->cl->main->e);
    pcd_pool *p = pcd_find_pool(d, ns, pool);
    return p && pcd_may_write(p);
}

static bool snapshot_cb(void *arg, const char *ns, const char *pool, pc_snapshot *out)
{
    pcd_pool *p = pcd_find_pool(arg, ns, pool);
    if (!p)
        return false;
    *out = pc_pool_snapshot(p->pool);
    return true;
}

static void on_pool_cb(void *arg, const char *ns, const char *name, const json_t *pool)
{
    pcd_pools_object(arg, ns, name, pool);
}

static pc_pool *lookup_cb(void *arg, const char *ns, const char *pool)
{
    pcd_pool *p = pcd_find_pool(arg, ns, pool);
    return p ? p->pool : NULL;
}

static void on_outcome_cb(void *arg, const pc_claimctl_outcome *o)
{
    pcd *d = arg;
    pcd_pool *p = pcd_find_pool(d, o->namespace_, o->pool);
    if (!p || !d->cl->webhook)
        return;
    char url[512];
    pthread_mutex_lock(&p->wh_mu);
    snprintf(url, sizeof(url), "%s", p->webhook);
    pthread_mutex_unlock(&p->wh_mu);
    if (!url[0])
        return;
    pc_webhook_event ev = {.url = url,
                           .claim_id = o->claim_id,
                           .namespace_ = o->namespace_,
                           .pool = o->pool,
                           .pod = o->pod,
                           .result = pc_claim_status_name(o->status),
                           .error = o->error,
                           .latency_ns = o->latency_ns};
    pc_webhook_post(d->cl->webhook, &ev);
}

void pcd_webhook_outcome(pcd_pool *p, const pc_claim_result *r, const char *claim_id)
{
    pcd *d = p->d;
    if (!d->cl || !d->cl->webhook)
        return;
    char url[512];
    pthread_mutex_lock(&p->wh_mu);
    snprintf(url, sizeof(url), "%s", p->webhook);
    pthread_mutex_unlock(&p->wh_mu);
    if (!url[0])
        return;
    pc_webhook_event ev = {.url = url,
                           .claim_id = r->claim_id[0] ? r->claim_id : claim_id,
                           .namespace_ = p->cfg.namespace_,
                           .pool = p->cfg.name,
                           .pod = r->pod_name,
                           .result = pc_claim_status_name(r->status),
                           .error = r->error,
                           .latency_ns = r->latency_ns};
    pc_webhook_post(d->cl->webhook, &ev); /* a malloc and a list push: fine on a pool thread */
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

int pcd_cluster_new(pcd *d)
{
    pcd_cluster *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return -ENOMEM;
    pthread_mutex_init(&cl->mu, NULL);
    d->cl = cl;
    const pcd_config *c = &d->cfg;
    const char *env_id = getenv("POD_NAME"), *env_ns = getenv("POD_NAMESPACE");
    if (c->le_identity[0]) {
        snprintf(cl->identity, sizeof(cl->identity), "%s", c->le_identity);
    } else if (env_id && env_id[0]) {
        snprintf(cl->identity, sizeof(cl->identity), "%s", env_id);
    } else {
        char host[200] = "podclaimd";
        gethostname(host, sizeof(host) - 1);
        snprintf(cl->identity, sizeof(cl->identity), "%s-%d", host, (int)getpid());
    }
    snprintf(cl->lease_ns, sizeof(cl->lease_ns), "%s",
             c->le_lease_namespace[0] ? c->le_lease_namespace
             : env_ns && env_ns[0]    ? env_ns
                                      : "default");
    char err[512];
    pc_webhook_config wc = {.queue_capacity = (uint32_t)c->wh_queue,
                            .max_attempts = (uint32_t)c->wh_attempts,
                            .timeout_ns = c->wh_timeout_ns,
                            .log = cl_log(d)};
    if (pc_webhook_new(&wc, &cl->webhook) != 0)
        return -ENOMEM;
    if (c->le_enabled && !c->le_per_pool && !(cl->main = lease_make(d, c->le_lease_name)))
        return -EINVAL;
    pc_kevents_config kc = {.instance = cl->identity, .log = cl_log(d)};
    if (pc_kevents_new(&kc, &cl->events) != 0)
        return -ENOMEM;
    if (c->ctl_pools) {
        pc_poolctl_config pc = {.client = d->client,
                                .namespace_ = c->ctl_namespace,
                                .events = cl->events,
                                .may_write = may_write_cb,
                                .snapshot = snapshot_cb,
                                .on_pool = on_pool_cb,
                                .arg = d,
                                .ready_timeout_ns = c->ctl_ready_timeout_ns,
                                .status_interval_ns = c->ctl_status_interval_ns,
                                .empty_grace_ns = c->ctl_empty_grace_ns,
                                .log = cl_log(d)};
        if (pc_poolctl_new(&pc, &cl->poolctl, err, sizeof(err)) != 0) {
            pcd_logf(PCD_ERROR, "component=poolctl msg=\"%s\"", err);
            return -EINVAL;
        }
    }
    if (c->ctl_claims) {
        pc_claimctl_config cc = {.client = d->client,
                                 .namespace_ = c->ctl_namespace,
                                 .lookup = lookup_cb,
                                 .may_write = may_write_cb,
                                 .on_outcome = on_outcome_cb,
                                 .arg = d,
                                 .log = cl_log(d)};
        if (pc_claimctl_new(&cc, &cl->claimctl, err, sizeof(err)) != 0) {
            pcd_logf(PCD_ERROR, "component=claimctl msg=\"%s\"", err);
            return -EINVAL;
        }
    }
    return 0;
}

int pcd_cluster_start(pcd *d)
{
    pcd_cluster *cl = d->cl;
    int err;
    if ((err = pc_webhook_start(cl->webhook)) != 0)
        return err;
    if (cl->poolctl && (err = pc_poolctl_start(cl->poolctl)) != 0)
        return err;
    if (cl->claimctl && (err = pc_claimctl_start(cl->claimctl)) != 0)
        return err;
    /* electors last: on_start resyncs the controllers */
    pthread_mutex_lock(&cl->mu);
    cl->started = true;
    for (pcd_lease *l = cl->leases; l; l = l->next)
        lease_start(l);
    pthread_mutex_unlock(&cl->mu);
    pcd_logf(PCD_INFO,
             "identity=%s leader_election=%s lease=%s/%s pool_controller=%d "
             "claim_controller=%d msg=\"cluster components started\"",
             cl->identity,
             !d->cfg.le_enabled   ? "off"
             : d->cfg.le_per_pool ? "per-pool"
                                  : "on",
             cl->lease_ns, d->cfg.le_lease_name, cl->poolctl != NULL, cl->claimctl != NULL);
    return 0;
}

bool pcd_cluster_synced(pcd *d)
{
    pcd_cluster *cl = d->cl;
    return (!cl->poolctl || pc_poolctl_synced(cl->poolctl)) &&
           (!cl->claimctl || pc_claimctl_synced(cl->claimctl));
}

void pcd_cluster_step_down(pcd *d)
{
    pcd_cluster *cl = d->cl;
    if (!cl)
        return;
    pthread_mutex_lock(&cl->mu);
    pcd_lease *l = cl->leases;
    pthread_mutex_unlock(&cl->mu);
    for (; l; l = l->next) {
        if (l->running) /* on_stop runs (claims waiting here end), then the Lease is free */
            pc_elector_stop(l->e, true);
        l->running = false;
    }
}

void pcd_cluster_stop(pcd *d)
{
    pcd_cluster *cl = d->cl;
    if (!cl)
        return;
    pcd_cluster_step_down(d);
    if (cl->poolctl)
        pc_poolctl_stop(cl->poolctl);
    if (cl->claimctl)
        pc_claimctl_stop(cl->claimctl);
}

void pcd_cluster_free(pcd *d)
{
    pcd_cluster *cl = d->cl;
    if (!cl)
        return;
    pc_claimctl_free(cl->claimctl);
    pc_poolctl_free(cl->poolctl);
    /* outcomes still queued get a second to go out */
    if (cl->webhook)
        pc_webhook_stop(cl->webhook, 1000000000LL);
    pc_webhook_free(cl->webhook);
    while (cl->leases) {
        pcd_lease *l = cl->leases;
        cl->leases = l->next;
        pc_elector_free(l->e);
        free(l);
    }
    pc_kevents_free(cl->events);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
    d->cl = NULL;
}

/* ---- metrics ------------------------------------------------------------------------------- */

typedef struct mbuf {
    char **p;
    size_t *len, *cap;
} mbuf;

static void mb_printf(mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mb_printf(mbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pcd_buf_vprintf(b->p, b->len, b->cap, fmt, ap);
    va_end(ap);
}

static void counter_family(mbuf *b, const char *name, const char *help, const char *label,
                           const pcd_counter *c, size_t n)
{
    pcd_counter_family(b->p, b->len, b->cap, name, help, label, c, n);
}

void pcd_cluster_metrics(pcd *d, char **buf, size_t *len, size_t *cap)
{
    pcd_cluster *cl = d->cl;
    mbuf b = {buf, len, cap};
    mb_printf(&b, "# HELP podclaimd_leader 1 while this replica holds the Lease (no leader "
                  "election: always 1).\n# TYPE podclaimd_leader gauge\n");
    if (!d->cfg.le_enabled)
        mb_printf(&b, "podclaimd_leader{lease=\"\"} 1\n");
    pthread_mutex_lock(&cl->mu);
    for (pcd_lease *l = cl->leases; l; l = l->next)
        mb_printf(&b, "podclaimd_leader{lease=\"%s\"} %d\n", l->label,
                  pc_elector_is_leader(l->e) ? 1 : 0);
    mb_printf(&b, "# HELP podclaimd_leader_acquired_total Times this replica became leader.\n"
                  "# TYPE podclaimd_leader_acquired_total counter\n");
    for (pcd_lease *l = cl->leases; l; l = l->next) {
        pc_elector_stats es;
        pc_elector_stats_read(l->e, &es);
        mb_printf(&b, "podclaimd_leader_acquired_total{lease=\"%s\"} %llu\n", l->label,
                  (unsigned long long)es.acquired);
    }
    pthread_mutex_unlock(&cl->mu);
    mb_printf(&b, "# HELP podclaimd_not_leader_cas_total Claim PATCHes a deposed leader did not "
                  "send (the leadership gate).\n# TYPE podclaimd_not_leader_cas_total counter\n");
    pcd_table *t = pcd_pools_now(d);
    for (size_t i = 0; i < t->n; i++) {
        pcd_pool *p = t->item[i];
        mb_printf(&b, "podclaimd_not_leader_cas_total{%s} %llu\n", p->labels,
                  (unsigned long long)atomic_load_explicit(&p->not_leader, memory_order_relaxed));
    }
    if (cl->poolctl) {
        pc_poolctl_stats s;
        pc_poolctl_stats_read(cl->poolctl, &s);
        const pcd_counter a[] = {{"reconcile", s.reconciles},
                                 {"create", s.creates},
                                 {"create_error", s.create_errors},
                                 {"idle", s.idles},
                                 {"reset", s.resets},
                                 {"delete", s.deletes},
                                 {"conflict", s.conflicts},
                                 {"status_write", s.status_writes},
                                 {"status_error", s.status_errors},
                                 {"event", s.events},
                                 {"stale_skip", s.stale_skips},
                                 {"throttled", s.throttled}};
        counter_family(&b, "podclaimd_pool_controller_total",
                       "SandboxPool controller actions (writes that won, and their failures).",
                       "action", a, sizeof(a) / sizeof(a[0]));
        mb_printf(&b,
                  "# HELP podclaimd_pool_status_writes_total SandboxPool /status writes "
                  "(at most one per pool per controllers.statusInterval).\n# TYPE "
                  "podclaimd_pool_status_writes_total counter\n"
                  "podclaimd_pool_status_writes_total %llu\n",
                  (unsigned long long)s.status_writes);
    }
    if (cl->claimctl) {
        pc_claimctl_stats s;
        pc_claimctl_stats_read(cl->claimctl, &s);
        const pcd_counter a[] = {{"enqueued", s.enqueued},
                                 {"bound", s.bound},
                                 {"failed", s.failed},
                                 {"recovered", s.recovered},
                                 {"cancelled", s.cancelled},
                                 {"released", s.released},
                                 {"status_write", s.status_writes},
                                 {"conflict", s.conflicts},
                                 {"error", s.errors}};
        counter_family(&b, "podclaimd_claim_controller_total", "SandboxClaim controller outcomes.",
                       "result", a, sizeof(a) / sizeof(a[0]));
    }
    pc_webhook_stats w;
    pc_webhook_stats_read(cl->webhook, &w);
    const pcd_counter a[] = {{"posted", w.posted},       {"dropped", w.dropped},
                             {"delivered", w.delivered}, {"retry", w.retries},
                             {"failed", w.failed},       {"abandoned", w.abandoned}};
    counter_family(&b, "podclaimd_webhook_total",
                   "Claim-outcome webhooks: posted (queued), dropped (queue full: overflow), "
                   "delivered, retries, failed (gave up).",
                   "result", a, sizeof(a) / sizeof(a[0]));
    mb_printf(&b,
              "# HELP podclaimd_webhook_queued Outcomes waiting or in flight.\n# TYPE "
              "podclaimd_webhook_queued gauge\npodclaimd_webhook_queued %llu\n",
              (unsigned long long)w.queued);
}
