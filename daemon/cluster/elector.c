/* Leader election on a Lease (see elector.h for the protocol and its guarantees).
 *
 * Flow: [elector thread: try acquire/renew every retry period] -> GET/POST/PUT Lease;
 *       lead_until_ns (atomic) -> pc_elector_is_leader on any thread.
 *
 * State machine, changed only in set_leading (logs old -> new):
 *   follower --acquired--> leader --renew failed past the deadline, or another holder seen-->
 *   follower;   leader --stop--> (on_stop, release) stopped
 *
 * Shared fields: lead_until_ns and stop are atomics; `leader` (the observed holder) is under
 * `mu`. Everything else belongs to the elector thread (or to the controlling thread before
 * start / after join).
 */
#include "elector.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG(lvl, ...) pc__cl_log(&e->log, lvl, "elector", __VA_ARGS__)

struct pc_elector {
    /* fixed after new */
    pc_kube_client *client;
    char ns[64], name[254], identity[254];
    char path[700], coll[400];
    int64_t lease_ns, renew_ns, retry_ns;
    int lease_s;
    void (*on_start)(void *arg);
    void (*on_stop)(void *arg);
    void (*on_new_leader)(void *arg, const char *identity);
    void *arg;
    pc_cluster_log log;
    pc_kube_conn *conn;

    /* CLOCK_MONOTONIC ns until which this replica leads; 0 = not leading. Written by the
     * elector thread only; read by is_leader on any thread. */
    _Atomic int64_t lead_until_ns;
    _Atomic bool stop;
    _Atomic bool release;
    bool started;
    pthread_t thread;

    pthread_mutex_t mu;
    char leader[254]; /* under mu */

    /* elector thread only */
    bool leading;
    bool releasing;          /* the idle hook ignores `stop` while the release is written */
    int64_t req_deadline_ns; /* CLOCK_MONOTONIC: the idle hook abandons a request after it */
    char observed_rv[64];
    int64_t observed_at_ns; /* when observed_rv was first seen (monotonic) */
    uint64_t rng;

    _Atomic uint64_t n_attempts, n_acquired, n_renewals, n_lost, n_conflicts, n_errors,
            n_release_wakeups;
};

#define INC(f) atomic_fetch_add_explicit(&e->f, 1, memory_order_relaxed)

static bool on_wake(void *arg)
{
    pc_elector *e = arg;
    if (!e->releasing && atomic_load_explicit(&e->stop, memory_order_acquire))
        return true;
    return e->req_deadline_ns && pc__cl_mono_ns() > e->req_deadline_ns;
}

static void set_observed_leader(pc_elector *e, const char *holder)
{
    pthread_mutex_lock(&e->mu);
    bool changed = strcmp(e->leader, holder) != 0;
    if (changed)
        snprintf(e->leader, sizeof(e->leader), "%s", holder);
    pthread_mutex_unlock(&e->mu);
    if (changed) {
        LOG(PC_KUBE_LOG_INFO, "lease=%s/%s leader=\"%s\"", e->ns, e->name, holder);
        if (e->on_new_leader)
            e->on_new_leader(e->arg, holder);
    }
}

static void set_leading(pc_elector *e, bool leading, int64_t until, const char *why)
{
    if (leading) {
        /* release: on_start's effects may rely on is_leader being true already */
        atomic_store_explicit(&e->lead_until_ns, until, memory_order_release);
    }
    if (e->leading == leading)
        return;
    LOG(PC_KUBE_LOG_INFO, "lease=%s/%s identity=%s state=%s->%s why=\"%s\"", e->ns, e->name,
        e->identity, e->leading ? "leader" : "follower", leading ? "leader" : "follower", why);
    e->leading = leading;
    if (leading) {
        INC(n_acquired);
        if (e->on_start)
            e->on_start(e->arg);
    } else {
        /* is_leader turns false before on_stop runs: nothing new starts meanwhile */
        atomic_store_explicit(&e->lead_until_ns, 0, memory_order_release);
        INC(n_lost);
        if (e->on_stop)
            e->on_stop(e->arg);
    }
}

static json_t *lease_spec(const char *holder, int duration_s, const char *acquire,
                          const char *renew, json_int_t transitions)
{
    return json_pack("{s:s,s:i,s:s,s:s,s:I}", "holderIdentity", holder, "leaseDurationSeconds",
                     duration_s, "acquireTime", acquire, "renewTime", renew, "leaseTransitions",
                     transitions);
}

/* One try. Returns 1 (we hold the lease now), 0 (someone else holds it), -1 (failed: error or
 * conflict; try again). *held_by_other tells the leader that another holder is current. */
static int try_acquire_or_renew(pc_elector *e, bool *held_by_other)
{
    char now_s[40], err[512];
    long st;
    json_t *cur = NULL;
    *held_by_other = false;
    INC(n_attempts);
    int rc = pc__cl_request(e->conn, "GET", e->path, NULL, NULL, &st, &cur, err, sizeof(err));
    pc__cl_rfc3339(pc__cl_real_ns(), true, now_s, sizeof(now_s));
    if (rc == 0 && st == 404) {
        json_t *lease =
                json_pack("{s:s,s:s,s:{s:s,s:s},s:o}", "apiVersion", "coordination.k8s.io/v1",
                          "kind", "Lease", "metadata", "name", e->name, "namespace", e->ns, "spec",
                          lease_spec(e->identity, e->lease_s, now_s, now_s, 0));
        json_t *made = NULL;
        rc = pc__cl_request(e->conn, "POST", e->coll, NULL, lease, &st, &made, err, sizeof(err));
        json_decref(lease);
        if (rc == 0 && st == 201 && made) {
            snprintf(e->observed_rv, sizeof(e->observed_rv), "%s",
                     pc__cl_jstr(made, "metadata.resourceVersion") ?: "");
            e->observed_at_ns = pc__cl_mono_ns();
            json_decref(made);
            set_observed_leader(e, e->identity);
            return 1;
        }
        json_decref(made);
        if (rc == 0 && st == 409)
            INC(n_conflicts);
        else
            INC(n_errors);
        LOG(PC_KUBE_LOG_DEBUG, "lease=%s/%s msg=\"create failed: %s\"", e->ns, e->name, err);
        return -1;
    }
    if (rc || st != 200 || !cur) {
        INC(n_errors);
        LOG(PC_KUBE_LOG_WARN, "lease=%s/%s msg=\"get failed: %s\"", e->ns, e->name, err);
        json_decref(cur);
        return -1;
    }
    const char *rv = pc__cl_jstr(cur, "metadata.resourceVersion");
    if (!rv) {
        INC(n_errors);
        json_decref(cur);
        return -1;
    }
    int64_t now = pc__cl_mono_ns();
    if (strcmp(rv, e->observed_rv) != 0) {
        snprintf(e->observed_rv, sizeof(e->observed_rv), "%s", rv);
        e->observed_at_ns = now;
    }
    json_t *spec = json_object_get(cur, "spec");
    const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
    holder = holder ? holder : "";
    json_int_t dur = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
    json_int_t trans = json_integer_value(json_object_get(spec, "leaseTransitions"));
    const char *acq = json_string_value(json_object_get(spec, "acquireTime"));
    set_observed_leader(e, holder);
    bool mine = strcmp(holder, e->identity) == 0;
    if (holder[0] && !mine && now < e->observed_at_ns + (int64_t)dur * 1000000000LL) {
        *held_by_other = true;
        json_decref(cur);
        return 0;
    }
    json_t *next = json_deep_copy(cur);
    json_object_set_new(next, "spec",
                        lease_spec(e->identity, e->lease_s, mine && acq ? acq : now_s, now_s,
                                   mine ? trans : trans + 1));
    json_t *upd = NULL;
    rc = pc__cl_request(e->conn, "PUT", e->path, NULL, next, &st, &upd, err, sizeof(err));
    json_decref(next);
    json_decref(cur);
    if (rc == 0 && st == 200 && upd) {
        snprintf(e->observed_rv, sizeof(e->observed_rv), "%s",
                 pc__cl_jstr(upd, "metadata.resourceVersion") ?: "");
        e->observed_at_ns = pc__cl_mono_ns();
        json_decref(upd);
        set_observed_leader(e, e->identity);
        return 1;
    }
    json_decref(upd);
    if (rc == 0 && st == 409)
        INC(n_conflicts); /* someone wrote it between our GET and PUT: observe again */
    else
        INC(n_errors);
    LOG(PC_KUBE_LOG_DEBUG, "lease=%s/%s msg=\"update failed: %s\"", e->ns, e->name, err);
    return -1;
}

/* Write the Lease with no holder, so a follower can take it at its next try (client-go's
 * ReleaseOnCancel). Released while it still names us, at the version just read (a write by
 * anyone in between makes the PUT a 409). Not only at the version we last wrote, as client-go
 * does: a stop cancels a renewal in flight, and when the server applied it we never read the
 * new version; only the holder writes its own identity, so that version is ours too, and
 * refusing it made the follower wait out the whole lease (test_elector). */
static void release_lease(pc_elector *e)
{
    char now_s[40], err[512];
    long st;
    json_t *cur = NULL;
    e->releasing = true;
    e->req_deadline_ns = pc__cl_mono_ns() + e->renew_ns;
    int rc = pc__cl_request(e->conn, "GET", e->path, NULL, NULL, &st, &cur, err, sizeof(err));
    if (rc == 0 && st == 200 && cur &&
        strcmp(pc__cl_jstr(cur, "spec.holderIdentity") ?: "", e->identity) == 0) {
        pc__cl_rfc3339(pc__cl_real_ns(), true, now_s, sizeof(now_s));
        json_t *next = json_deep_copy(cur);
        json_object_set_new(
                next, "spec",
                lease_spec("", 1, now_s, now_s,
                           json_integer_value(pc__cl_jget(cur, "spec.leaseTransitions"))));
        rc = pc__cl_request(e->conn, "PUT", e->path, NULL, next, &st, NULL, err, sizeof(err));
        json_decref(next);
        LOG(rc == 0 && st == 200 ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_WARN,
            "lease=%s/%s identity=%s msg=\"released\" status=%ld%s%s", e->ns, e->name, e->identity,
            st, rc || st != 200 ? " error=" : "", rc || st != 200 ? err : "");
    }
    json_decref(cur);
    e->releasing = false;
    e->req_deadline_ns = 0;
}

/* A watch event on the Lease: 1 when it was released (no holder) or deleted, 2 on an ERROR
 * event, else 0 (go on watching). */
static int on_lease_event(void *arg, const char *line, size_t len)
{
    (void)arg;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    int rc = 0;
    if (!type || strcmp(type, "ERROR") == 0) {
        rc = 2;
    } else if (strcmp(type, "DELETED") == 0) {
        rc = 1;
    } else if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0) {
        const char *h = pc__cl_jstr(json_object_get(ev, "object"), "spec.holderIdentity");
        rc = !h || !h[0];
    }
    json_decref(ev);
    return rc;
}

/* A follower's wait between tries: a watch on the Lease (from the version last seen), ended
 * early when the leader releases it, so a graceful handover does not wait for the next retry
 * period (up to 2.2 x 2 s at client-go's defaults). If the watch cannot run (or ends early),
 * the rest of the time is slept. Returns 1 (released), 0 (time is up), -ECANCELED (stop). */
static int follower_wait(pc_elector *e, int64_t ns)
{
    int64_t end = pc__cl_mono_ns() + ns;
    char rv[200];
    if (e->observed_rv[0] && pc__cl_urlenc(e->observed_rv, rv, sizeof(rv)) == 0) {
        char path[1200];
        snprintf(path, sizeof(path),
                 "%s?fieldSelector=metadata.name%%3D%s&watch=true&resourceVersion=%s"
                 "&timeoutSeconds=%lld",
                 e->coll, e->name, rv, (long long)(ns / 1000000000LL + 1));
        pc_kube_response r;
        int line_rc = 0;
        int rc = pc_kube_conn_stream(e->conn, path, 1u << 20, ns, on_lease_event, e, &line_rc, &r);
        pc_kube_response_fini(&r);
        if (rc == -ECANCELED)
            return rc;
        if (rc == 0 && line_rc == 1) {
            INC(n_release_wakeups);
            return 1;
        }
    }
    int64_t left = end - pc__cl_mono_ns();
    if (left > 0 && pc_kube_conn_sleep(e->conn, left) == -ECANCELED)
        return -ECANCELED;
    return 0;
}

static void *elector_main(void *arg)
{
    pc_elector *e = arg;
    pthread_setname_np(pthread_self(), "pc-elector");
    while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
        int64_t began = pc__cl_mono_ns();
        bool other = false;
        /* a leader's request must end by its deadline; a follower's within a renew deadline */
        e->req_deadline_ns = e->leading
                                     ? atomic_load_explicit(&e->lead_until_ns, memory_order_relaxed)
                                     : began + e->renew_ns;
        int rc = try_acquire_or_renew(e, &other);
        e->req_deadline_ns = 0;
        if (atomic_load_explicit(&e->stop, memory_order_acquire))
            break;
        if (rc == 1) {
            if (e->leading)
                INC(n_renewals);
            /* lead until the renew deadline, counted from before the request was sent: every
             * follower observed the renewed record after that instant */
            set_leading(e, true, began + e->renew_ns, "acquired");
        } else if (e->leading &&
                   (other || pc__cl_mono_ns() >= atomic_load_explicit(&e->lead_until_ns,
                                                                      memory_order_relaxed))) {
            set_leading(e, false, 0, other ? "another holder renewed" : "renew deadline passed");
        }
        int64_t wait = e->retry_ns;
        if (!e->leading) /* jittered like client-go's JitterUntil(retryPeriod, 1.2) */
            wait += (int64_t)(pc__cl_rand(&e->rng) % (uint64_t)(e->retry_ns * 12 / 10 + 1));
        int64_t next = began + wait;
        int64_t until = atomic_load_explicit(&e->lead_until_ns, memory_order_relaxed);
        if (e->leading && until < next)
            next = until; /* wake at the deadline to step down in time */
        int64_t left = next - pc__cl_mono_ns();
        int w = 0;
        if (left > 0)
            w = e->leading ? pc_kube_conn_sleep(e->conn, left) : follower_wait(e, left);
        if (w == -ECANCELED && atomic_load_explicit(&e->stop, memory_order_acquire))
            break;
        if (e->leading &&
            pc__cl_mono_ns() >= atomic_load_explicit(&e->lead_until_ns, memory_order_relaxed))
            set_leading(e, false, 0, "renew deadline passed");
    }
    if (e->leading) {
        set_leading(e, false, 0, "stopping");
        if (atomic_load_explicit(&e->release, memory_order_acquire))
            release_lease(e);
    }
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

int pc_elector_new(const pc_elector_config *cfg, pc_elector **out, char *err, size_t errlen)
{
    if (!cfg || !cfg->client || !cfg->namespace_ || !cfg->name || !cfg->identity ||
        !cfg->namespace_[0] || !cfg->name[0] || !cfg->identity[0]) {
        snprintf(err, errlen, "elector: client, namespace, name and identity are required");
        return -EINVAL;
    }
    if (strlen(cfg->namespace_) >= 64 || strlen(cfg->name) >= 254 || strlen(cfg->identity) >= 254 ||
        strspn(cfg->namespace_, "abcdefghijklmnopqrstuvwxyz0123456789-") !=
                strlen(cfg->namespace_) ||
        strspn(cfg->name, "abcdefghijklmnopqrstuvwxyz0123456789-.") != strlen(cfg->name)) {
        snprintf(err, errlen, "elector: lease %s/%s: not a valid namespace/name", cfg->namespace_,
                 cfg->name);
        return -EINVAL;
    }
    int64_t lease = cfg->lease_duration_ns > 0 ? cfg->lease_duration_ns : 15000000000LL;
    int64_t renew = cfg->renew_deadline_ns > 0 ? cfg->renew_deadline_ns : 10000000000LL;
    int64_t retry = cfg->retry_period_ns > 0 ? cfg->retry_period_ns : 2000000000LL;
    if (lease <= renew || renew <= retry * 12 / 10) {
        snprintf(err, errlen,
                 "elector: want lease duration (%lld ms) > renew deadline (%lld ms) > 1.2 x "
                 "retry period (%lld ms)",
                 (long long)(lease / 1000000), (long long)(renew / 1000000),
                 (long long)(retry / 1000000));
        return -EINVAL;
    }
    pc_elector *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->client = cfg->client;
    snprintf(e->ns, sizeof(e->ns), "%s", cfg->namespace_);
    snprintf(e->name, sizeof(e->name), "%s", cfg->name);
    snprintf(e->identity, sizeof(e->identity), "%s", cfg->identity);
    snprintf(e->coll, sizeof(e->coll), "/apis/coordination.k8s.io/v1/namespaces/%s/leases", e->ns);
    snprintf(e->path, sizeof(e->path), "%s/%s", e->coll, e->name);
    e->lease_ns = lease;
    e->renew_ns = renew;
    e->retry_ns = retry;
    e->lease_s = (int)((lease + 999999999) / 1000000000);
    e->on_start = cfg->on_start;
    e->on_stop = cfg->on_stop;
    e->on_new_leader = cfg->on_new_leader;
    e->arg = cfg->arg;
    e->log = cfg->log;
    e->rng = (uint64_t)pc__cl_mono_ns() ^ (uint64_t)(uintptr_t)e ^ 0x9e3779b97f4a7c15ULL;
    pthread_mutex_init(&e->mu, NULL);
    if (pc_kube_conn_new(e->client, &e->conn)) {
        pthread_mutex_destroy(&e->mu);
        free(e);
        return -ENOMEM;
    }
    pc_kube_conn_set_idle(e->conn, on_wake, e);
    *out = e;
    return 0;
}

int pc_elector_start(pc_elector *e)
{
    if (e->started)
        return -EALREADY;
    atomic_store_explicit(&e->stop, false, memory_order_relaxed);
    int rc = pthread_create(&e->thread, NULL, elector_main, e);
    if (rc)
        return -rc;
    e->started = true;
    return 0;
}

void pc_elector_stop(pc_elector *e, bool release)
{
    if (!e || !e->started)
        return;
    atomic_store_explicit(&e->release, release, memory_order_relaxed);
    /* release: pairs with the acquire loads of stop on the elector thread; the release flag
     * written above is visible to it from then on */
    atomic_store_explicit(&e->stop, true, memory_order_release);
    pc_kube_conn_wakeup(e->conn);
    pthread_join(e->thread, NULL);
    e->started = false;
}

void pc_elector_free(pc_elector *e)
{
    if (!e)
        return;
    pc_elector_stop(e, true);
    pc_kube_conn_free(e->conn);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

bool pc_elector_is_leader(const pc_elector *e)
{
    /* acquire: pairs with the release store in set_leading */
    int64_t until = atomic_load_explicit(&((pc_elector *)e)->lead_until_ns, memory_order_acquire);
    return until != 0 && pc__cl_mono_ns() < until;
}

const char *pc_elector_leader(pc_elector *e, char *buf, size_t len)
{
    pthread_mutex_lock(&e->mu);
    snprintf(buf, len, "%s", e->leader);
    pthread_mutex_unlock(&e->mu);
    return buf;
}

void pc_elector_stats_read(pc_elector *e, pc_elector_stats *o)
{
    o->attempts = atomic_load_explicit(&e->n_attempts, memory_order_relaxed);
    o->acquired = atomic_load_explicit(&e->n_acquired, memory_order_relaxed);
    o->renewals = atomic_load_explicit(&e->n_renewals, memory_order_relaxed);
    o->lost = atomic_load_explicit(&e->n_lost, memory_order_relaxed);
    o->conflicts = atomic_load_explicit(&e->n_conflicts, memory_order_relaxed);
    o->errors = atomic_load_explicit(&e->n_errors, memory_order_relaxed);
    o->release_wakeups = atomic_load_explicit(&e->n_release_wakeups, memory_order_relaxed);
}
