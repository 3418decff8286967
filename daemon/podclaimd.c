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

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void on_informer_change(void *arg, pc_informer_change change, const pc_pod_ref *pod,
                               int64_t received_at_ns)
{
    pcd_pool *p = arg;
    if (change != PC_INFORMER_OFFER)
        return;
    pcd_hist_observe(&p->idle_to_claimable, pc_now_ns() - received_at_ns);
    pcd_registry_pod_idle(p->d->registry, pod->namespace_, pod->name, pod->resource_version);
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
    cas_timing *t = malloc(sizeof(*t));
    if (!t)
        return -ENOMEM;
    *t = (cas_timing){.p = p, .start_ns = pc_now_ns(), .done = done, .token = token};
    int err = p->inner->cas_start(p->inner, req, timed_done, t);
    if (err)
        free(t); /* the backend will never call timed_done */
    return err;
}

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

static void copy_list(char ***dst, size_t *dn, json_t *containers)
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

/* The container names images may name: from the config, else from one pod of the pool, else
 * from the SandboxPool's template; unknown stays NULL (the API server then judges). */
static void learn_containers(pcd *d, pcd_pool *p)
{
    if (p->cfg->n_containers) {
        p->containers = p->cfg->containers;
        p->n_containers = p->cfg->n_containers;
        return;
    }
    pc_kube_conn *conn;
    if (pc_kube_conn_new(d->client, &conn) != 0)
        return;
    char path[512];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s&limit=1",
             p->cfg->namespace_, p->cfg->name);
    pc_kube_response r;
    char **learned = NULL;
    size_t n = 0;
    if (pc_kube_conn_request(conn, "GET", path, NULL, NULL, 0, &r) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
        json_t *items = json_object_get(j, "items");
        copy_list(&learned, &n,
                  json_object_get(json_object_get(json_array_get(items, 0), "spec"), "containers"));
        json_decref(j);
    }
    pc_kube_response_fini(&r);
    if (!n) {
        snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/%s/sandboxpools/%s",
                 p->cfg->namespace_, p->cfg->name);
        if (pc_kube_conn_request(conn, "GET", path, NULL, NULL, 0, &r) == 0 && r.status == 200) {
            json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
            json_t *spec = json_object_get(json_object_get(json_object_get(j, "spec"), "template"),
                                           "spec");
            copy_list(&learned, &n, json_object_get(spec, "containers"));
            json_decref(j);
        }
        pc_kube_response_fini(&r);
    }
    pc_kube_conn_free(conn);
    if (n) {
        p->containers = learned;
        p->n_containers = n;
    } else {
        free(learned);
    }
    pcd_logf(n ? PCD_DEBUG : PCD_WARN, "pool=%s containers=%zu msg=\"%s\"", p->key, n,
             n ? "container names learned"
               : "no pod or template to learn container names from; "
                 "the API server will judge image names");
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

static int start_pools(pcd *d)
{
    d->n_pools = d->cfg.n_pools;
    d->pools = calloc(d->n_pools, sizeof(*d->pools));
    if (!d->pools)
        return -ENOMEM;
    for (size_t i = 0; i < d->n_pools; i++) {
        pcd_pool *p = &d->pools[i];
        pcd_pool_cfg *pc = &d->cfg.pools[i];
        p->d = d;
        p->cfg = pc;
        snprintf(p->key, sizeof(p->key), "%s/%s", pc->namespace_, pc->name);
        /* label values here are DNS labels / label values (config.c checked): no escaping */
        snprintf(p->labels, sizeof(p->labels),
                 "pool=\"%s\",namespace=\"%s\",team=\"%s\",user=\"%s\",env=\"%s\"", pc->name,
                 pc->namespace_, pc->team, pc->user, pc->env);
        pc_informer_config ic = {.client = d->client,
                                 .namespace_ = pc->namespace_,
                                 .pool = pc->name,
                                 .observer = on_informer_change,
                                 .observer_arg = p};
        int err = pc_informer_new(&ic, &p->informer);
        if (err) {
            pcd_logf(PCD_ERROR, "pool=%s msg=\"informer: %s\"", p->key, pc_strerror(err));
            return err;
        }
        pc_pool_config cfg = {.namespace_ = pc->namespace_,
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
                              .resync_period_ns = pc->resync_period_ns ? pc->resync_period_ns : -1,
                              .resync = pc_informer_resync_hook,
                              .resync_arg = p->informer};
        p->inner = pc_kube_backend_iface(d->kb);
        p->backend = (pc_backend){.cas_start = timed_cas_start, .impl = p};
        if ((err = pc_pool_new(&cfg, &p->backend, &p->pool)) != 0 ||
            (err = pc_pool_start(p->pool)) != 0) {
            pcd_logf(PCD_ERROR, "pool=%s msg=\"pool: %s\"", p->key, pc_strerror(err));
            return err;
        }
        pc_informer_set_pool(p->informer, p->pool);
        learn_containers(d, p);
        if ((err = pc_informer_start(p->informer)) != 0) {
            pcd_logf(PCD_ERROR, "pool=%s msg=\"informer start: %s\"", p->key, pc_strerror(err));
            return err;
        }
    }
    d->n_envs = d->cfg.n_envs;
    d->envs = calloc(d->n_envs ? d->n_envs : 1, sizeof(*d->envs));
    for (size_t i = 0; i < d->n_envs; i++) {
        pcd_env *e = &d->envs[i];
        e->cfg = &d->cfg.envs[i];
        int err = pc_env_new(e->cfg->name, e->cfg->strategy, &e->env);
        for (size_t k = 0; err == 0 && k < d->n_pools; k++)
            if (strcmp(d->pools[k].cfg->env, e->cfg->name) == 0)
                err = pc_env_add_pool(e->env, d->pools[k].pool,
                                      (const char *const *)d->pools[k].cfg->tags,
                                      d->pools[k].cfg->n_tags);
        if (err) {
            pcd_logf(PCD_ERROR, "env=%s msg=\"%s\"", e->cfg->name, pc_strerror(err));
            return err;
        }
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
    for (size_t i = 0; i < d->n_pools; i++)
        if (d->pools[i].informer)
            pc_informer_stop(d->pools[i].informer);
    for (size_t i = 0; i < d->n_pools; i++)
        if (d->pools[i].pool)
            pc_pool_shutdown(d->pools[i].pool);
    if (d->kb)
        pc_kube_backend_free(d->kb); /* after the pools drained their CAS calls */
    for (size_t i = 0; i < d->n_envs; i++)
        pc_env_free(d->envs[i].env);
    for (size_t i = 0; i < d->n_pools; i++) {
        pc_pool_free(d->pools[i].pool);
        pc_informer_free(d->pools[i].informer);
        if (d->pools[i].containers != d->pools[i].cfg->containers) {
            for (size_t k = 0; k < d->pools[i].n_containers; k++)
                free(d->pools[i].containers[k]);
            free(d->pools[i].containers);
        }
    }
    pc_kube_client_free(d->client);
    pcd_registry_free(d->registry);
    free(d->pools);
    free(d->envs);
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
    if (pcd_registry_new(d->cfg.max_tracked, &d->registry) != 0 || make_client(d) != 0)
        goto fail;
    pc_kube_backend_options bo = {.max_inflight = (uint32_t)d->cfg.kube_max_inflight,
                                  .max_connections = (uint32_t)d->cfg.kube_max_connections,
                                  .timeout_ns = d->cfg.kube_timeout_ns};
    if (pc_kube_backend_new(d->client, &bo, &d->kb, err, sizeof(err)) != 0) {
        pcd_logf(PCD_ERROR, "component=kube msg=\"CAS backend: %s\"", err);
        goto fail;
    }
    if (start_pools(d) != 0 || pcd_waker_start(d) != 0 || pcd_releasers_start(d, 2) != 0 ||
        pcd_http_start(d) != 0)
        goto fail;
    pcd_logf(PCD_INFO, "listen=%s port=%d server=%s pools=%zu envs=%zu auth=%s msg=\"serving\"",
             d->cfg.listen, d->port, pc_kube_client_server(d->client), d->n_pools, d->n_envs,
             d->token[0] ? "bearer" : "none");
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
    int64_t left = wait_until(d, t0 + d->cfg.shutdown_grace_ns, &d->waiting);
    if (left)
        pcd_logf(PCD_INFO, "waiting=%lld msg=\"grace over: shutting the pools down\"",
                 (long long)left);
    for (size_t i = 0; i < d->n_pools; i++)
        pc_pool_shutdown(d->pools[i].pool); /* every claim still waiting: SHUTDOWN -> 503 */
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
