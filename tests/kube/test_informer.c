/* End to end: the informer against kapi-sim — initial sync of 10,000 pods, resume after
 * dropped watch connections without a missed or duplicated transition, 410 -> relist, and a
 * claim whose PATCH timed out after the server applied it, recognised by its claim id, and
 * on_claimed for pods newly held (also first seen held in the LIST). */
#include "e2e_common.h"

#include "../core/common.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static ksim sim;
static stack st;

/* What the informer told the pool, recorded on the informer thread. */
typedef struct seen {
    pthread_mutex_t mu;
    json_t *offers;    /* "pod@rv" -> count */
    json_t *withdrawn; /* pod -> count */
    size_t n_offers;
    size_t dup_offers;
} seen;

static seen sn = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void observe(void *arg, pc_informer_change ch, const pc_pod_ref *pod, int64_t recv)
{
    (void)arg;
    (void)recv;
    char key[400];
    pthread_mutex_lock(&sn.mu);
    if (ch == PC_INFORMER_OFFER) {
        snprintf(key, sizeof(key), "%s@%s", pod->name, pod->resource_version);
        json_t *c = json_object_get(sn.offers, key);
        if (c)
            sn.dup_offers++;
        json_object_set_new(sn.offers, key, json_integer(c ? json_integer_value(c) + 1 : 1));
        sn.n_offers++;
    } else {
        json_t *c = json_object_get(sn.withdrawn, pod->name);
        json_object_set_new(sn.withdrawn, pod->name,
                            json_integer(c ? json_integer_value(c) + 1 : 1));
    }
    pthread_mutex_unlock(&sn.mu);
}

static void setup(void)
{
    sn.offers = json_object();
    sn.withdrawn = json_object();
    sn.n_offers = sn.dup_offers = 0;
}

static void teardown(void)
{
    stack_stop(&st);
    ksim_stop(&sim);
    json_decref(sn.offers);
    json_decref(sn.withdrawn);
}

static pc_informer_stats stats(pc_informer *inf)
{
    pc_informer_stats s;
    pc_informer_stats_read(inf, &s);
    return s;
}

/* An informer alone (observer, no pool). */
static pc_informer *informer_only(const char *ns, const char *pool, uint32_t page)
{
    char err[256];
    pc_kube_options o = {.server = sim.url, .log_level = PC_KUBE_LOG_INFO, .log_level_set = true};
    cr_assert_eq(pc_kube_client_new(&o, &st.client, err, sizeof(err)), 0, "%s", err);
    pc_informer_config ic = {.client = st.client,
                             .namespace_ = ns,
                             .pool = pool,
                             .page_size = page,
                             .backoff_initial_ns = 10000000LL,
                             .backoff_max_ns = 100000000LL,
                             .observer = observe};
    cr_assert_eq(pc_informer_new(&ic, &st.informer), 0);
    return st.informer;
}

Test(informer, syncs_10000_pods_and_offers_each_idle_pod_once, .init = setup, .fini = teardown,
     .timeout = 60)
{
    if (ksim_real()) /* 40,000 writes through a real apiserver on 2 shared cores: minutes */
        cr_skip_test("10000 pods: kapi-sim only");
    const char *args[] = {"--pool", "big/p=10000", "--warmup-ms", "0", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    /* let the simulated controller create and warm all pods before the LIST */
    cr_assert(PC_TEST_WAIT_UNTIL(({
                                     json_t *s = ksim_json(&sim, "GET", "/sim/stats", NULL);
                                     json_int_t n = json_integer_value(json_object_get(
                                             json_object_get(s, "objects"), "pods"));
                                     json_decref(s);
                                     n >= 10000;
                                 }),
                                 30000),
              "kapi-sim did not create 10000 pods");
    pc_informer *inf = informer_only("big", "p", 500);
    cr_assert_eq(pc_informer_start(inf), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_informer_has_synced(inf) && stats(inf).idle == 10000, 30000),
              "synced=%d pods=%llu idle=%llu", pc_informer_has_synced(inf),
              (unsigned long long)stats(inf).pods, (unsigned long long)stats(inf).idle);
    pc_informer_stats s = stats(inf);
    cr_assert_eq(s.pods, 10000u);
    cr_assert_geq(s.list_pages, 20u, "paged: %llu pages", (unsigned long long)s.list_pages);
    pthread_mutex_lock(&sn.mu);
    cr_assert_eq(json_object_size(sn.offers), 10000u, "distinct offers %zu",
                 json_object_size(sn.offers));
    cr_assert_eq(sn.dup_offers, 0u, "%zu duplicate offers", sn.dup_offers);
    pthread_mutex_unlock(&sn.mu);
    cr_log_info("sync of 10000 pods: %.1f ms, %llu pages, %.1f MB",
                (s.synced_at_ns - s.started_at_ns) / 1e6, (unsigned long long)s.list_pages,
                s.list_bytes / 1e6);
}

/* The final idle set on the server: pod@rv of every idle pod. */
static json_t *server_idle(const char *ns, const char *pool)
{
    char path[256];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", ns, pool);
    json_t *l = ksim_json(&sim, "GET", path, NULL);
    json_t *set = json_object();
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(l, "items"), i, p)
    {
        json_t *md = json_object_get(p, "metadata");
        const char *ph = json_string_value(
                json_object_get(json_object_get(md, "labels"), "podclaim.io/phase"));
        if (ph && strcmp(ph, "Idle") == 0) {
            char key[400];
            snprintf(key, sizeof(key), "%s@%s", json_string_value(json_object_get(md, "name")),
                     json_string_value(json_object_get(md, "resourceVersion")));
            json_object_set_new(set, key, json_true());
        }
    }
    json_decref(l);
    return set;
}

static bool all_offered(json_t *set)
{
    const char *k;
    json_t *v;
    bool ok = true;
    pthread_mutex_lock(&sn.mu);
    json_object_foreach(set, k, v)
    {
        if (!json_object_get(sn.offers, k))
            ok = false;
    }
    pthread_mutex_unlock(&sn.mu);
    return ok;
}

static void wait_claims(run *r, int64_t ms)
{
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load_explicit(&r->done, memory_order_acquire) >= r->n, ms),
              "%zu of %zu claims done", atomic_load(&r->done), r->n);
}

/* An offer that is no idle period failed the test (seen once in ~30 runs on the real server,
 * never on kapi-sim, cause not found yet): print what the test knows of that pod, so the
 * failure explains itself. Called with sn.mu held. */
static void explain_offer(const char *offer, json_t *truth, json_t *log)
{
    char pod[256];
    snprintf(pod, sizeof(pod), "%s", offer);
    char *at = strchr(pod, '@');
    if (at)
        at[1] = '\0'; /* "name@": the prefix of its keys */
    size_t n = strlen(pod);
    const char *k;
    json_t *v;
    json_object_foreach(sn.offers, k, v) if (strncmp(k, pod, n) == 0)
            cr_log_error("offered %s (%lld times)", k, (long long)json_integer_value(v));
    json_object_foreach(truth, k, v) if (strncmp(k, pod, n) == 0) cr_log_error("idle period %s", k);
    if (at)
        *at = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        const char *p = json_string_value(json_object_get(e, "pod"));
        if (p && strcmp(p, pod) == 0) {
            char *s = json_dumps(e, JSON_COMPACT);
            cr_log_error("claim log: %s", s ? s : "?");
            free(s);
        }
    }
}

Test(informer, resumes_dropped_watches_without_missing_or_repeating_a_transition, .init = setup,
     .fini = teardown, .timeout = 200)
{
    /* Every watch connection is cut after 7 events; pods cycle Idle -> claimed -> Idle. */
    const char *args[] = {"--pool",    "drop/p=30", "--warmup-ms",         "10", "--hold-ms", "20",
                          "--stop-ms", "10",        "--watch-drop-events", "7",  NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    pc_pool_config pc = {.resync_period_ns = -1, /* resync re-offers would blur the count */
                         .reservation_ttl_ns = 2000000000LL};
    cr_assert_eq(stack_start(&st, &sim, "drop", "p", &pc, observe, NULL), 0);
    run r;
    /* the real server on two shared cores can take minutes: a generous bound there */
    int64_t deadline_ms = ksim_real() ? 150000 : 30000;
    cr_assert_eq(run_claims(&r, st.pool, 300, "drop", deadline_ms), 0);
    wait_claims(&r, deadline_ms + 10000);
    for (size_t i = 0; i < r.n; i++)
        cr_assert_eq(r.claims[i].r.status, PC_CLAIM_OK, "claim %zu: %s", i, r.claims[i].r.error);
    /* settle: every pod back to Idle on the server and offered at that version */
    json_t *fin = NULL;
    bool settled = PC_TEST_WAIT_UNTIL(({
                                          json_decref(fin);
                                          fin = server_idle("drop", "p");
                                          json_object_size(fin) == 30 && all_offered(fin);
                                      }),
                                      10000);
    cr_assert(settled, "final idle set (%zu pods) not all offered", json_object_size(fin));
    pc_informer_stop(st.informer);
    check_claim_log(&sim, &r, "drop");

    /* Every offer is one real idle period: a claimed one (claim log) or a final one. (On the
     * real server too: its harness kubelet writes nothing that is already reported, so an
     * idle period is one version of the pod there as here.) */
    json_t *log = ksim_json(&sim, "GET", "/sim/claims", NULL);
    json_t *truth = json_deep_copy(fin);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        char key[400];
        snprintf(key, sizeof(key), "%s@%s", json_string_value(json_object_get(e, "pod")),
                 json_string_value(json_object_get(e, "idleResourceVersion")));
        json_object_set_new(truth, key, json_true());
    }
    /* kapi-sim keeps a long history: every cut watch resumes, nothing is offered twice. The
     * real kube-apiserver resumes from its watch cache, whose window is a few hundred events
     * on a fresh server: a watch cut while the pods churn can come back 410 Expired, and the
     * relist that follows must re-offer every idle pod (it cannot know which offers the pool
     * still holds). A reservation that outlives its 2 s TTL on the slower server runs the
     * resync hook, which re-offers every idle pod too. There, an idle period may be offered
     * once more per relist or resync, never more. */
    pc_informer_stats s = stats(st.informer);
    json_int_t max_offers = ksim_real() ? 1 + (json_int_t)(s.relists + s.resyncs) : 1;
    pthread_mutex_lock(&sn.mu);
    const char *k;
    json_t *v;
    json_object_foreach(truth, k, v)
    {
        cr_assert_not_null(json_object_get(sn.offers, k), "idle period %s never offered", k);
    }
    json_object_foreach(sn.offers, k, v)
    {
        if (!json_object_get(truth, k))
            explain_offer(k, truth, log);
        cr_assert_not_null(json_object_get(truth, k), "offer %s is no idle period", k);
        cr_assert_leq(json_integer_value(v), max_offers,
                      "offer %s made %lld times (%llu relists, %llu resyncs)", k,
                      (long long)json_integer_value(v), (unsigned long long)s.relists,
                      (unsigned long long)s.resyncs);
    }
    pthread_mutex_unlock(&sn.mu);
    cr_assert_gt(s.reconnects + s.watches, 10u, "the watch was hardly cut: %llu watches",
                 (unsigned long long)s.watches);
    if (!ksim_real())
        cr_assert_eq(s.relists, 0u, "resumed without relisting");
    cr_log_info("idle periods=%zu relists=%llu resyncs=%llu watches=%llu reconnects=%llu "
                "events=%llu dups=%llu",
                json_object_size(truth), (unsigned long long)s.relists,
                (unsigned long long)s.resyncs, (unsigned long long)s.watches,
                (unsigned long long)s.reconnects, (unsigned long long)s.watch_events,
                (unsigned long long)s.duplicates);
    json_decref(truth);
    json_decref(log);
    json_decref(fin);
    free(r.claims);
}

Test(informer, relists_after_410_and_withdraws_pods_deleted_meanwhile, .init = setup,
     .fini = teardown, .timeout = 60)
{
    const char *args[] = {"--pool", "gone/p=20", "--warmup-ms", "10", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    pc_informer *inf = informer_only("gone", "p", 7);
    cr_assert_eq(pc_informer_start(inf), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_informer_has_synced(inf) && stats(inf).idle == 20, 10000),
              "idle=%llu", (unsigned long long)stats(inf).idle);
    pc_informer_stop(inf);

    /* While the informer is away: delete 5 pods (the controller replaces them), then
     * compact the history so that its resume point is gone. */
    json_t *l = ksim_json(&sim, "GET", "/api/v1/namespaces/gone/pods", NULL);
    cr_assert_not_null(l);
    char deleted[5][128];
    for (int i = 0; i < 5; i++) {
        json_t *p = json_array_get(json_object_get(l, "items"), (size_t)i);
        snprintf(deleted[i], sizeof(deleted[i]), "%s",
                 json_string_value(json_object_get(json_object_get(p, "metadata"), "name")));
        char path[256];
        snprintf(path, sizeof(path), "/api/v1/namespaces/gone/pods/%s", deleted[i]);
        /* grace 0: gone at once (a pod on a node is otherwise deleted gracefully) */
        json_decref(ksim_json(&sim, "DELETE", path, "{\"gracePeriodSeconds\":0}"));
    }
    json_decref(l);
    json_decref(ksim_json(&sim, "POST", "/sim/compact", "{}"));

    cr_assert_eq(pc_informer_start(inf), 0);
    /* lists counts completed LISTs: the first sync and the relist */
    cr_assert(PC_TEST_WAIT_UNTIL(stats(inf).lists >= 2 && stats(inf).idle == 20, 10000),
              "relists=%llu idle=%llu pods=%llu", (unsigned long long)stats(inf).relists,
              (unsigned long long)stats(inf).idle, (unsigned long long)stats(inf).pods);
    cr_assert_geq(stats(inf).relists, 1u, "no relist counted");
    cr_assert_eq(stats(inf).pods, 20u, "cache holds %llu pods",
                 (unsigned long long)stats(inf).pods);
    pthread_mutex_lock(&sn.mu);
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(json_object_get(sn.withdrawn, deleted[i]), "pod %s not withdrawn",
                           deleted[i]);
    pthread_mutex_unlock(&sn.mu);
    /* and the cache is the server's picture: every idle pod offered at its current version */
    json_t *fin = server_idle("gone", "p");
    cr_assert_eq(json_object_size(fin), 20u);
    cr_assert(all_offered(fin));
    json_decref(fin);
}

/* kapi-sim killed (-9) and a fresh one on the same port with the same pool: the same pod
 * names, new uids, and resourceVersions from 1 again, below the informer's resume point.
 * kapi-sim, like kube-apiserver, accepts a WATCH from a version it has not reached and sends
 * nothing; the informer must notice (its check before resuming after a cut: a LIST at that
 * version, 504 "Too large resource version") and relist, so that its cache is the new
 * server's and every idle pod is offered at its new version. */
Test(informer, relists_a_restarted_server_whose_versions_started_again, .init = setup,
     .fini = teardown, .timeout = 60)
{
    if (ksim_real())
        cr_skip_test("restarts kapi-sim");
    const char *args[] = {"--pool", "rs/p=10", "--warmup-ms", "10", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    pc_informer *inf = informer_only("rs", "p", 4);
    cr_assert_eq(pc_informer_start(inf), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_informer_has_synced(inf) && stats(inf).idle == 10, 10000),
              "idle=%llu", (unsigned long long)stats(inf).idle);
    /* the old server's versions well past what the fresh one will reach */
    for (int i = 0; i < 60; i++) {
        char body[160];
        snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"ns%d\"}}", i);
        json_decref(ksim_json(&sim, "POST", "/api/v1/namespaces", body));
    }
    int port = sim.port;
    kill(sim.pid, SIGKILL);
    waitpid(sim.pid, NULL, 0);
    sim.pid = 0;
    ksim_stop(&sim);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    /* a smaller pool this time: the cache must lose the 4 pods the new server does not have
     * (the names it has are the old ones, at the same versions: the fixture makes them the
     * same way) */
    const char *again[] = {"--pool", "rs/p=6", "--warmup-ms", "10", "--listen", listen, NULL};
    cr_assert_eq(ksim_start(&sim, again, false, NULL, NULL), 0);
    cr_assert_eq(sim.port, port);
    cr_assert(PC_TEST_WAIT_UNTIL(stats(inf).pods == 6 && stats(inf).idle == 6, 20000),
              "the cache kept the old server's pods (relists=%llu pods=%llu idle=%llu)",
              (unsigned long long)stats(inf).relists, (unsigned long long)stats(inf).pods,
              (unsigned long long)stats(inf).idle);
    cr_assert_geq(stats(inf).relists, 1u);
    json_t *fin = server_idle("rs", "p");
    cr_assert_eq(json_object_size(fin), 6u);
    cr_assert(all_offered(fin));
    json_decref(fin);
    pthread_mutex_lock(&sn.mu);
    /* every old incarnation: 4 gone, 6 replaced by pods of the same names with new uids */
    cr_assert_eq(json_object_size(sn.withdrawn), 10u, "%zu pods withdrawn",
                 json_object_size(sn.withdrawn));
    pthread_mutex_unlock(&sn.mu);
}

/* ---- a PATCH that timed out but was applied ---------------------------------------------- */

static void create_idle_pod(const char *name)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"labels\":{\"podclaim.io/pool\":\"slow\",\"podclaim.io/phase\":\"Idle\"}},"
             "\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"img:1\"}]}}",
             name);
    json_t *p = ksim_json(&sim, "POST", "/api/v1/namespaces/default/pods", body);
    cr_assert_not_null(p, "create pod %s", name);
    json_decref(p);
}

static json_int_t patches_answered(void)
{
    json_t *s = ksim_json(&sim, "GET", "/sim/stats", NULL);
    json_int_t n = 0;
    const char *code;
    json_t *v;
    json_object_foreach(json_object_get(json_object_get(s, "requests"), "patch"), code, v)
    {
        n += json_integer_value(v);
    }
    json_decref(s);
    return n;
}

static pc_claim_result slow_res;
static _Atomic int slow_calls;

static void on_slow_claim(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    (void)arg;
    slow_res = *r;
    atomic_fetch_add_explicit(&slow_calls, 1, memory_order_release);
}

Test(informer, a_timed_out_patch_the_server_applied_ends_the_claim_ok_on_that_pod, .init = setup,
     .fini = teardown, .timeout = 60)
{
    /* kapi-sim sleeps before it applies a PATCH and applies it even when the client has gone:
     * with 1.5 s of PATCH latency and a 100 ms CAS timeout every answer is lost, every PATCH
     * that names the pod's current version is applied. The real server's front aborts a
     * request whose client went away, so there is nothing to recognise there. */
    if (ksim_real())
        cr_skip_test("PATCH applied after the client gave up: kapi-sim only");
    atomic_store(&slow_calls, 0);
    const char *args[] = {"--kubelet-only", "--warmup-ms", "0", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    create_idle_pod("slow-a");
    create_idle_pod("slow-b");

    char err[256];
    memset(&st, 0, sizeof(st));
    pc_kube_options o = {.server = sim.url, .request_timeout_ns = 5000000000LL};
    cr_assert_eq(pc_kube_client_new(&o, &st.client, err, sizeof(err)), 0, "%s", err);
    pc_kube_backend_options bo = {.max_inflight = 64, .timeout_ns = 100000000LL};
    cr_assert_eq(pc_kube_backend_new(st.client, &bo, &st.backend, err, sizeof(err)), 0, "%s", err);
    pc_informer_config ic = {
            .client = st.client, .namespace_ = "default", .pool = "slow", .observer = observe};
    cr_assert_eq(pc_informer_new(&ic, &st.informer), 0);
    /* Retries are many and quick: without recognition the claim would go on to the next pod
     * (and the server would apply that PATCH too) rather than end. */
    pc_pool_config pc = {.namespace_ = "default",
                         .name = "slow",
                         .retry_limit = 1000,
                         .retry_backoff_ns = 20000000LL,
                         .reservation_ttl_ns = 60000000000LL,
                         .resync_period_ns = -1};
    cr_assert_eq(pc_pool_new(&pc, pc_kube_backend_iface(st.backend), &st.pool), 0);
    pc_informer_set_pool(st.informer, st.pool);
    cr_assert_eq(pc_pool_start(st.pool), 0);
    cr_assert_eq(pc_informer_start(st.informer), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(st.pool).idle_ready == 2, 10000), "idle %llu",
              (unsigned long long)pc_pool_snapshot(st.pool).idle_ready);

    cr_assert_eq(ksim_put_faults(&sim, "{\"latency\":{\"patch\":{\"fixedMs\":1500}}}"), 0);
    pc_claim c;
    pc_claim_init(&c, 0, on_slow_claim, NULL); /* a generated id */
    c.deadline_ns = pc_now_ns() + 30000000000LL;
    cr_assert_eq(pc_pool_enqueue(st.pool, &c), 0);
    cr_assert(
            PC_TEST_WAIT_UNTIL(atomic_load_explicit(&slow_calls, memory_order_acquire) == 1, 35000),
            "no result");
    cr_assert_eq(slow_res.status, PC_CLAIM_OK, "%s: %s", pc_claim_status_name(slow_res.status),
                 slow_res.error);
    cr_assert_geq(slow_res.attempts, 1u);
    static char m[32768];
    pc_pool_metrics_render(st.pool, m, sizeof(m));
    const char *rec = strstr(m, "\npodclaim_claims_recognized_total{");
    cr_assert(rec && strncmp(strchr(rec, '}'), "} 1\n", 4) == 0,
              "ended by recognition, not by a CAS answer:\n%s", m);

    /* Let every PATCH the server still sleeps on finish, then read the claim log: the claim
     * took one pod, the one its result names, at the version it names. */
    cr_assert_eq(ksim_put_faults(&sim, "{\"reset\":true}"), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(patches_answered() >= (json_int_t)slow_res.attempts, 10000),
              "%lld of %u PATCHes answered", (long long)patches_answered(), slow_res.attempts);
    json_t *log = ksim_json(&sim, "GET", "/sim/claims", NULL);
    cr_assert_not_null(log);
    size_t i, ours = 0;
    json_t *e;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        const char *id = json_string_value(json_object_get(e, "claimId"));
        if (!id || strcmp(id, slow_res.claim_id) != 0)
            continue;
        ours++;
        cr_assert_str_eq(json_string_value(json_object_get(e, "pod")), slow_res.pod_name);
        cr_assert_str_eq(json_string_value(json_object_get(e, "resourceVersion")),
                         slow_res.resource_version);
    }
    cr_assert_eq(ours, 1u, "claim %s took %zu pods", slow_res.claim_id, ours);
    json_decref(log);
    cr_assert_eq(atomic_load(&slow_calls), 1);
}

/* on_claimed: each pod newly held by a claim id, whether the informer saw it change or first
 * saw it held in its LIST (a claim won through another process: the owner registers it so a
 * release can end it); not a release (Stopping) nor a recycle. */
static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static char held_log[1024];

static void on_held(void *arg, const pc_pod_ref *pod, const char *claim_id)
{
    (void)arg;
    pthread_mutex_lock(&held_mu);
    size_t n = strlen(held_log);
    snprintf(held_log + n, sizeof(held_log) - n, "%s=%s ", pod->name, claim_id);
    pthread_mutex_unlock(&held_mu);
}

static bool held_log_is(const char *want)
{
    pthread_mutex_lock(&held_mu);
    bool eq = strcmp(held_log, want) == 0;
    pthread_mutex_unlock(&held_mu);
    return eq;
}

static void set_claim(const char *pod, const char *phase, const char *id)
{
    char path[256], body[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", pod);
    snprintf(body, sizeof(body),
             "{\"metadata\":{\"labels\":{\"podclaim.io/phase\":\"%s\"},"
             "\"annotations\":{\"podclaim.io/claim-id\":%s%s%s}}}",
             phase, id ? "\"" : "", id ? id : "null", id ? "\"" : "");
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    int rc = pc_kube_conn_request(c, "PATCH", path, "application/merge-patch+json", body,
                                  strlen(body), &r);
    cr_assert(rc == 0 && r.status == 200, "PATCH %s: %d %ld", pod, rc, r.status);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
}

Test(informer, on_claimed_names_pods_newly_held_also_those_first_seen_held_in_the_list,
     .init = setup, .fini = teardown, .timeout = 60)
{
    /* the real server's front plays the kubelet itself */
    const char *args[] = {"--kubelet-only", "--warmup-ms", "0", NULL};
    cr_assert_eq(ksim_start(&sim, ksim_real() ? NULL : args, false, NULL, NULL), 0);
    held_log[0] = '\0';
    create_idle_pod("held-a");
    create_idle_pod("held-b");
    set_claim("held-a", "Running", "won-elsewhere"); /* before the informer's LIST */

    char err[256];
    memset(&st, 0, sizeof(st));
    pc_kube_options o = {.server = sim.url};
    cr_assert_eq(pc_kube_client_new(&o, &st.client, err, sizeof(err)), 0, "%s", err);
    pc_informer_config ic = {.client = st.client,
                             .namespace_ = "default",
                             .pool = "slow",
                             .observer = observe,
                             .on_claimed = on_held};
    cr_assert_eq(pc_informer_new(&ic, &st.informer), 0);
    cr_assert_eq(pc_informer_start(st.informer), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(held_log_is("held-a=won-elsewhere "), 10000), "%s", held_log);

    set_claim("held-b", "Running", "won-here");
    cr_assert(PC_TEST_WAIT_UNTIL(held_log_is("held-a=won-elsewhere held-b=won-here "), 10000), "%s",
              held_log);
    /* released (Stopping, same id), recycled (Idle, no id), then claimed again */
    set_claim("held-b", "Stopping", "won-here");
    set_claim("held-b", "Idle", NULL);
    set_claim("held-b", "Running", "second");
    cr_assert(PC_TEST_WAIT_UNTIL(held_log_is("held-a=won-elsewhere held-b=won-here held-b=second "),
                                 10000),
              "%s", held_log);
}
