/* cluster-helper: a stand-in for podclaimd built from the phase-1 cluster modules, so tests can
 * run two or three replicas as separate processes (kill -9 one, SIGTERM another) before the
 * daemon integrates them. Test-only code, and a sketch of the phase-2 wiring (docs/cluster.md).
 *
 *   cluster-helper --server URL --identity ID
 *       [--lease NS/NAME | --per-pool-leases] [--lease-ms N] [--renew-ms N] [--retry-ms N]
 *       [--no-release] [--namespace NS --pool NAME... [--controllers]]
 *
 * --lease: one Lease for everything; --per-pool-leases: one Lease per pool, named
 * podclaimd-pool-<pool>, so replicas share the pools. --pool: serve that pool (scheduler +
 * informer + kube backend). --controllers: run the SandboxPool and SandboxClaim controllers,
 * writing (and serving claims of a pool) only while leading for it.
 *
 * Prints one line per event, stamped with CLOCK_MONOTONIC ms (the same clock in every
 * process): "ready", "start <lease> <ms>" / "stop <lease> <ms>" (leading),
 * "leader <lease> <identity>", then at exit "stats acquired=N release_wakeups=N" (the single
 * Lease's elector) and "exit". SIGTERM/SIGINT: stop (release the leases unless --no-release),
 * exit 0.
 */
#include "claimctl.h"
#include "elector.h"
#include "kevents.h"
#include "poolctl.h"

#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_POOLS 8

typedef struct served {
    char name[64];
    pc_kube_backend *backend;
    pc_informer *informer;
    pc_pool *pool;
    pc_elector *elector; /* per-pool lease, or NULL */
} served;

typedef struct helper {
    char ns[64];
    served pools[MAX_POOLS];
    int npools;
    pc_elector *elector; /* the one lease, or NULL */
    pc_poolctl *poolctl;
    pc_claimctl *claimctl;
} helper;

static helper H;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const char *what, const char *lease, const char *extra)
{
    pthread_mutex_lock(&out_mu);
    if (extra)
        printf("%s %s %s %lld\n", what, lease, extra, mono_ms());
    else
        printf("%s %s %lld\n", what, lease, mono_ms());
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void on_start(void *arg)
{
    say("start", arg, NULL);
    /* new leader: look at everything again (what the old one left half done) */
    if (H.poolctl)
        pc_poolctl_resync(H.poolctl);
    if (H.claimctl)
        pc_claimctl_resync(H.claimctl);
}

static void on_stop(void *arg)
{
    say("stop", arg, NULL);
}

static void on_new_leader(void *arg, const char *id)
{
    say("leader", arg, id[0] ? id : "-");
}

static served *find(const char *ns, const char *pool)
{
    if (strcmp(ns, H.ns) != 0)
        return NULL;
    for (int i = 0; i < H.npools; i++)
        if (strcmp(H.pools[i].name, pool) == 0)
            return &H.pools[i];
    return NULL;
}

static bool may_write(void *arg, const char *ns, const char *pool)
{
    (void)arg;
    if (H.elector)
        return pc_elector_is_leader(H.elector);
    served *s = find(ns, pool);
    return s && s->elector && pc_elector_is_leader(s->elector);
}

static bool snapshot(void *arg, const char *ns, const char *pool, pc_snapshot *out)
{
    (void)arg;
    served *s = find(ns, pool);
    if (!s)
        return false;
    *out = pc_pool_snapshot(s->pool);
    return true;
}

static pc_pool *lookup(void *arg, const char *ns, const char *pool)
{
    (void)arg;
    served *s = find(ns, pool);
    return s ? s->pool : NULL;
}

static pc_elector *elector(pc_kube_client *kc, const char *ns, const char *name, const char *id,
                           long lease_ms, long renew_ms, long retry_ms, char *label)
{
    char err[512];
    pc_elector *el;
    pc_elector_config ec = {.client = kc,
                            .namespace_ = ns,
                            .name = name,
                            .identity = id,
                            .lease_duration_ns = lease_ms * 1000000,
                            .renew_deadline_ns = renew_ms * 1000000,
                            .retry_period_ns = retry_ms * 1000000,
                            .on_start = on_start,
                            .on_stop = on_stop,
                            .on_new_leader = on_new_leader,
                            .arg = label};
    if (pc_elector_new(&ec, &el, err, sizeof(err))) {
        fprintf(stderr, "cluster-helper: %s\n", err);
        exit(1);
    }
    return el;
}

static void serve_pool(pc_kube_client *kc, served *s)
{
    char err[512];
    pc_kube_backend_options bo = {.max_inflight = 64};
    pc_informer_config ic = {.client = kc, .namespace_ = H.ns, .pool = s->name};
    pc_pool_config pc = {.namespace_ = H.ns,
                         .name = s->name,
                         .reservation_ttl_ns = 300000000LL,
                         .resync_period_ns = 200000000LL};
    if (pc_kube_backend_new(kc, &bo, &s->backend, err, sizeof(err)) ||
        pc_informer_new(&ic, &s->informer)) {
        fprintf(stderr, "cluster-helper: pool %s: %s\n", s->name, err);
        exit(1);
    }
    pc.resync = pc_informer_resync_hook;
    pc.resync_arg = s->informer;
    if (pc_pool_new(&pc, pc_kube_backend_iface(s->backend), &s->pool)) {
        fprintf(stderr, "cluster-helper: pool %s: bad config\n", s->name);
        exit(1);
    }
    pc_informer_set_pool(s->informer, s->pool);
    if (pc_pool_start(s->pool) || pc_informer_start(s->informer)) {
        fprintf(stderr, "cluster-helper: pool %s: cannot start\n", s->name);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
            {"server", 1, 0, 's'},     {"identity", 1, 0, 'i'},        {"lease", 1, 0, 'l'},
            {"lease-ms", 1, 0, 'D'},   {"renew-ms", 1, 0, 'R'},        {"retry-ms", 1, 0, 'P'},
            {"no-release", 0, 0, 'n'}, {"per-pool-leases", 0, 0, 'L'}, {"namespace", 1, 0, 'N'},
            {"pool", 1, 0, 'p'},       {"controllers", 0, 0, 'c'},     {0, 0, 0, 0}};
    const char *server = NULL, *identity = NULL, *lease = NULL;
    long lease_ms = 0, renew_ms = 0, retry_ms = 0;
    bool release = true, per_pool = false, controllers = false;
    snprintf(H.ns, sizeof(H.ns), "default");
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 's':
            server = optarg;
            break;
        case 'i':
            identity = optarg;
            break;
        case 'l':
            lease = optarg;
            break;
        case 'D':
            lease_ms = atol(optarg);
            break;
        case 'R':
            renew_ms = atol(optarg);
            break;
        case 'P':
            retry_ms = atol(optarg);
            break;
        case 'n':
            release = false;
            break;
        case 'L':
            per_pool = true;
            break;
        case 'N':
            snprintf(H.ns, sizeof(H.ns), "%s", optarg);
            break;
        case 'p':
            if (H.npools == MAX_POOLS)
                return 2;
            snprintf(H.pools[H.npools++].name, sizeof(H.pools[0].name), "%s", optarg);
            break;
        case 'c':
            controllers = true;
            break;
        default:
            return 2;
        }
    }
    if (!server || !identity) {
        fprintf(stderr, "cluster-helper: --server and --identity are required\n");
        return 2;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    pc_kube_options ko = {.server = server};
    pc_kube_client *kc;
    if (pc_kube_client_new(&ko, &kc, err, sizeof(err))) {
        fprintf(stderr, "cluster-helper: %s\n", err);
        return 1;
    }
    static char labels[MAX_POOLS + 1][256];
    if (lease) {
        char ns[64], name[254];
        const char *slash = strchr(lease, '/');
        if (!slash) {
            fprintf(stderr, "cluster-helper: --lease NS/NAME\n");
            return 2;
        }
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - lease), lease);
        snprintf(name, sizeof(name), "%s", slash + 1);
        snprintf(labels[MAX_POOLS], sizeof(labels[0]), "%s", lease);
        H.elector =
                elector(kc, ns, name, identity, lease_ms, renew_ms, retry_ms, labels[MAX_POOLS]);
    }
    for (int i = 0; i < H.npools; i++) {
        serve_pool(kc, &H.pools[i]);
        if (per_pool) {
            char name[128];
            snprintf(name, sizeof(name), "podclaimd-pool-%s", H.pools[i].name);
            snprintf(labels[i], sizeof(labels[i]), "%s/%s", H.ns, name);
            H.pools[i].elector =
                    elector(kc, H.ns, name, identity, lease_ms, renew_ms, retry_ms, labels[i]);
        }
    }
    pc_kevents *kev = NULL;
    if (controllers) {
        pc_kevents_config ec = {.instance = identity};
        pc_poolctl_config pc = {
                .client = kc, .namespace_ = H.ns, .may_write = may_write, .snapshot = snapshot};
        pc_claimctl_config cc = {
                .client = kc, .namespace_ = H.ns, .lookup = lookup, .may_write = may_write};
        if (pc_kevents_new(&ec, &kev) || (pc.events = kev, false) ||
            pc_poolctl_new(&pc, &H.poolctl, err, sizeof(err)) ||
            pc_claimctl_new(&cc, &H.claimctl, err, sizeof(err)) || pc_poolctl_start(H.poolctl) ||
            pc_claimctl_start(H.claimctl)) {
            fprintf(stderr, "cluster-helper: controllers: %s\n", err);
            return 1;
        }
    }
    /* electors last: on_start may resync the controllers */
    if (H.elector)
        pc_elector_start(H.elector);
    for (int i = 0; i < H.npools; i++)
        if (H.pools[i].elector)
            pc_elector_start(H.pools[i].elector);
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);

    /* shutdown, in the order the daemon will use: stop leading (and release), drain the
     * pools (waiting claims end SHUTDOWN and stay Pending), stop the controllers */
    if (H.elector) {
        pc_elector_stop(H.elector, release);
        pc_elector_stats es;
        pc_elector_stats_read(H.elector, &es);
        printf("stats acquired=%llu release_wakeups=%llu\n", (unsigned long long)es.acquired,
               (unsigned long long)es.release_wakeups);
    }
    for (int i = 0; i < H.npools; i++)
        if (H.pools[i].elector)
            pc_elector_stop(H.pools[i].elector, release);
    for (int i = 0; i < H.npools; i++) {
        pc_informer_stop(H.pools[i].informer);
        pc_pool_shutdown(H.pools[i].pool);
    }
    pc_claimctl_free(H.claimctl);
    pc_poolctl_free(H.poolctl);
    pc_kevents_free(kev);
    for (int i = 0; i < H.npools; i++) {
        pc_kube_backend_free(H.pools[i].backend);
        pc_pool_free(H.pools[i].pool);
        pc_informer_free(H.pools[i].informer);
        pc_elector_free(H.pools[i].elector);
    }
    pc_elector_free(H.elector);
    pc_kube_client_free(kc);
    printf("exit\n");
    fflush(stdout);
    return 0;
}
