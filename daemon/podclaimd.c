/* podclaimd: serves claims on pre-warmed pods over HTTP (docs/daemon.md).
 *
 * Flow: config -> kube client -> one CAS backend -> per pool: informer + pool -> envs ->
 *       waker + releasers -> HTTP; then main waits for SIGTERM/SIGINT (blocked in every
 *       thread, taken with sigwait) and drains in the reverse order.
 *
 * Shutdown: readyz false and new claims 503 at once; waiting claims may still win a pod for
 * shutdown.grace, then every pool shuts down (the rest get SHUTDOWN -> 503); once every claim
 * and release request has its answer on the wire, HTTP stops, informers stop (their watches
 * close), the backend and pools are freed; exit 0. A second signal, or shutdown.timeout
 * passing, exits at once with status 1.
 */
#include "podclaimd.h"
#include "log.h"
#include "lost.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char *read_token_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return strdup(buf);
}

static int make_client(pcd *d)
{
    pcd_config *c = &d->cfg;
    char err[512];
    pc_kube_options tuning = {.log_level = c->log_level_num,
                              .log_level_set = true,
                              .log = pcd_log_line,
                              .request_timeout_ns = c->kube_timeout_ns};
    int rc;
    if (c->server[0]) {
        pc_kube_options o = tuning;
        o.server = c->server;
        o.token = c->kube_token[0] ? c->kube_token : NULL;
        o.token_file = c->kube_token_file[0] ? c->kube_token_file : NULL;
        o.ca_file = c->ca_file[0] ? c->ca_file : NULL;
        o.insecure_skip_tls_verify = c->insecure;
        rc = pc_kube_client_new(&o, &d->client, err, sizeof(err));
    } else if (c->in_cluster) {
        rc = pc_kube_client_new_in_cluster(NULL, &tuning, &d->client, err, sizeof(err));
    } else {
        rc = pc_kube_client_new_kubeconfig(c->kubeconfig[0] ? c->kubeconfig : NULL,
                                           c->context[0] ? c->context : NULL, &tuning, &d->client,
                                           err, sizeof(err));
    }
    if (rc == 0)
        rc = pc_kube_client_check(d->client, err, sizeof(err));
    if (rc != 0) {
        /* err never carries a credential (kube.h) */
        pcd_logf(PCD_ERROR, "component=kube msg=\"API server access: %s\"", err);
        return rc;
    }
    return 0;
}

static int64_t wait_until(pcd *d, int64_t deadline_ns, _Atomic int64_t *counter)
{
    (void)d;
    /* polling a counter every 5 ms: main has nothing else to do, and the counter is moved by
     * many threads (MHD, waker) that should not have to signal anyone */
    while (atomic_load(counter) > 0 && pc_now_ns() < deadline_ns) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(counter);
}

typedef struct watchdog {
    sigset_t set;
    int64_t deadline_ns;
} watchdog;

/* After the first signal: a second one, or the shutdown timeout, ends the process at once. */
static void *watchdog_main(void *arg)
{
    watchdog *w = arg;
    int sig;
    for (;;) {
        int64_t left = w->deadline_ns - pc_now_ns();
        if (left <= 0) {
            sig = -1;
            break;
        }
        struct timespec ts = {left / 1000000000, left % 1000000000};
        siginfo_t si;
        sig = sigtimedwait(&w->set, &si, &ts);
        if (sig > 0 || errno != EINTR)
            break; /* EINTR: another signal (or a sanitizer's) interrupted the wait */
    }
    if (sig > 0)
        pcd_logf(PCD_WARN, "signal=%d msg=\"second signal: exiting at once\"", sig);
    else
        pcd_logf(PCD_ERROR, "msg=\"shutdown.timeout passed: exiting at once\"");
    _exit(1);
    return NULL;
}

static void teardown(pcd *d)
{
    pcd_pools_stop(d);   /* no pool change from here on */
    pcd_cluster_stop(d); /* controllers stopped (the pools are shut down: claims left Pending) */
    pcd_pools_free(d);   /* informers stopped, pools drained and freed (they used the backend) */
    if (d->kb)
        pc_kube_backend_free(d->kb);
    pcd_cluster_free(d);
    pc_kube_client_free(d->client);
    pcd_registry_free(d->registry);
    pcd_lost_free(d->lost); /* after the informers, which take from it */
    free(d->token);
    pcd_config_fini(&d->cfg);
}

int main(int argc, char **argv)
{
    static pcd D;
    pcd *d = &D;
    const char *port_file = NULL;
    /* --port-file is a run-time flag, not a configuration key */
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    int nargs = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
            port_file = argv[++i];
        else
            args[nargs++] = argv[i];
    }
    int rc = pcd_config_load(nargs, args, environ, &d->cfg, stderr);
    free(args);
    if (rc == PCD_EXIT_OK)
        return 0;
    if (rc == PCD_EXIT_BAD)
        return 2;
    pcd_log_setup(d->cfg.log_level_num, d->cfg.log_json);
    d->started_ns = pc_now_ns();
    d->token = d->cfg.token_file[0] ? read_token_file(d->cfg.token_file) : strdup(d->cfg.token);
    if (!d->token) {
        fprintf(stderr, "podclaimd: config: tokenFile: \"%s\": cannot read: %s\n",
                d->cfg.token_file, strerror(errno));
        return 2;
    }
    /* every waiting claim is a socket: lift the soft descriptor limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    if (pcd_registry_new(d->cfg.max_tracked, &d->registry) != 0 ||
        pcd_lost_new(PCD_LOST_TTL_NS, PCD_LOST_MAX, &d->lost) != 0 || make_client(d) != 0)
        goto fail;
    pc_kube_backend_options bo = {.max_inflight = (uint32_t)d->cfg.kube_max_inflight,
                                  .max_connections = (uint32_t)d->cfg.kube_max_connections,
                                  .timeout_ns = d->cfg.kube_timeout_ns,
                                  /* the library's 0 is its default; the file's 0 is none */
                                  .deadline_grace_ns = d->cfg.kube_deadline_grace_ns > 0
                                                               ? d->cfg.kube_deadline_grace_ns
                                                               : -1};
    if (pc_kube_backend_new(d->client, &bo, &d->kb, err, sizeof(err)) != 0) {
        pcd_logf(PCD_ERROR, "component=kube msg=\"CAS backend: %s\"", err);
        goto fail;
    }
    /* order (docs/cluster.md): leases and controllers made, the file's pools, the manager,
     * waker, releasers, HTTP, then the controllers and electors start (on_start resyncs) */
    if (pcd_cluster_new(d) != 0 || pcd_pools_init(d) != 0 || pcd_pools_start(d) != 0 ||
        pcd_waker_start(d) != 0 || pcd_releasers_start(d, 2) != 0 || pcd_http_start(d) != 0 ||
        pcd_cluster_start(d) != 0)
        goto fail;
    pcd_logf(PCD_INFO, "listen=%s port=%d server=%s pools=%zu envs=%zu auth=%s msg=\"serving\"",
             d->cfg.listen, d->port, pc_kube_client_server(d->client), pcd_pools_now(d)->n,
             pcd_envs_now(d)->n, d->token[0] ? "bearer" : "none");
    printf("podclaimd listening on http://127.0.0.1:%d\n", d->port);
    fflush(stdout);
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d", port_file, (int)getpid());
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d\n", d->port);
            fclose(f);
            rename(tmp, port_file);
        }
    }

    int sig = 0;
    sigwait(&set, &sig);
    int64_t t0 = pc_now_ns();
    pcd_logf(PCD_INFO, "signal=%d msg=\"draining\"", sig);
    static watchdog w;
    w.set = set;
    w.deadline_ns = t0 + d->cfg.shutdown_timeout_ns;
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog_main, &w);

    atomic_store(&d->draining, true); /* readyz false, new claims 503 */
    /* With leader election: stop leading and release the Lease now, so a follower takes over
     * at once (not a lease duration later); the claims waiting here end with 503 naming no
     * leader yet, and their clients retry on the new one. Without: waiting claims may still
     * win a pod for the grace period. */
    pcd_pools_stop(d); /* no pool change from here on: nor a per-pool Lease stopped by it, so
                        * each elector is stopped by this thread alone */
    pcd_cluster_step_down(d);
    int64_t left = wait_until(d, t0 + d->cfg.shutdown_grace_ns, &d->waiting);
    if (left)
        pcd_logf(PCD_INFO, "waiting=%lld msg=\"grace over: shutting the pools down\"",
                 (long long)left);
    pcd_pools_shutdown(d); /* every claim still waiting: SHUTDOWN -> 503 */
    /* every claim/release request answered and written (MHD completed it) */
    left = wait_until(d, w.deadline_ns, &d->open_reqs);
    pcd_releasers_stop(d); /* releases of pods won for clients that hung up finish first */
    pcd_waker_stop(d);
    pcd_http_stop(d);
    teardown(d);
    /* sigtimedwait is a cancellation point: the watchdog ends there */
    pthread_cancel(wd);
    pthread_join(wd, NULL);
    pcd_logf(PCD_INFO, "seconds=%.3f msg=\"stopped\"", (double)(pc_now_ns() - t0) / 1e9);
    return left ? 1 : 0;

fail:
    pcd_logf(PCD_ERROR, "msg=\"start-up failed\"");
    return 1;
}
