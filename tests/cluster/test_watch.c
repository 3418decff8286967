/* The generic list+watch of daemon/cluster against kapi-sim: a paged initial LIST, watches cut
 * every few events (resume from the last version: nothing missed, nothing applied twice), and
 * a 410 after compaction (relist: what was deleted meanwhile is reported DELETED). Objects are
 * SandboxClaims, which nothing else in kapi-sim touches; and the same for pods in pod mode
 * (summaries, indexed by pool label) on a kapi-sim without kubelet. */
#include "../kube/ksim.h"
#include "common.h"
#include "watch.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define COLL "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims"

static ksim sim;
static pc_kube_client *kc;
static pc_watch *w;

typedef struct seen {
    pthread_mutex_t mu;
    json_t *last; /* name -> last resourceVersion reported */
    int changes[PC_WATCH_CHANGE_COUNT];
    int replays; /* a version reported twice for one object */
    int syncs;
} seen;
static seen S;

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner). */
static void setup(void)
{
    memset(&sim, 0, sizeof(sim));
    kc = NULL;
    w = NULL;
    memset(&S, 0, sizeof(S));
    pthread_mutex_init(&S.mu, NULL);
    S.last = json_object();
}

static void fini(void)
{
    pc_watch_free(w);
    w = NULL;
    pc_kube_client_free(kc);
    kc = NULL;
    ksim_stop(&sim);
    json_decref(S.last);
    pthread_mutex_destroy(&S.mu);
}

static void on_change(void *arg, pc_watch_change ch, const json_t *obj, const json_t *old)
{
    (void)arg, (void)old;
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    const char *rv =
            json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
    pthread_mutex_lock(&S.mu);
    const char *prev = json_string_value(json_object_get(S.last, name));
    if (ch != PC_WATCH_DELETED && prev && rv && strcmp(prev, rv) == 0)
        S.replays++;
    json_object_set_new(S.last, name, json_string(rv ? rv : ""));
    S.changes[ch]++;
    pthread_mutex_unlock(&S.mu);
}

static void on_sync(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&S.mu);
    S.syncs++;
    pthread_mutex_unlock(&S.mu);
}

static int count(pc_watch_change ch)
{
    pthread_mutex_lock(&S.mu);
    int n = S.changes[ch];
    pthread_mutex_unlock(&S.mu);
    return n;
}

static void create(const char *name)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxClaim\",\"metadata\":{"
             "\"name\":\"%s\"},\"spec\":{\"pool\":\"p\",\"priority\":0}}",
             name);
    json_t *o = ksim_json(&sim, "POST", COLL, body);
    cr_assert(o);
    json_decref(o);
}

static void bump(const char *name, int prio)
{
    char path[256], body[64];
    snprintf(path, sizeof(path), COLL "/%s", name);
    snprintf(body, sizeof(body), "{\"spec\":{\"priority\":%d}}", prio);
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    cr_assert_eq(pc_kube_conn_request(c, "PATCH", path, "application/merge-patch+json", body,
                                      strlen(body), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
}

/* The cache equals the server: same names, same resourceVersions. */
static bool cache_matches_server(void)
{
    json_t *l = ksim_json(&sim, "GET", COLL, NULL);
    json_t *items = json_object_get(l, "items");
    json_t *cached = pc_watch_list(w);
    bool ok = json_array_size(items) == json_array_size(cached);
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o)
    {
        json_t *md = json_object_get(o, "metadata");
        json_t *c = pc_watch_get(w, "default", json_string_value(json_object_get(md, "name")));
        ok = ok && c &&
             json_equal(json_object_get(json_object_get(c, "metadata"), "resourceVersion"),
                        json_object_get(md, "resourceVersion"));
        json_decref(c);
    }
    json_decref(cached);
    json_decref(l);
    return ok;
}

static void start(const char *const *args)
{
    const char *def[] = {"--kubelet-only", NULL};
    cr_assert_eq(ksim_start(&sim, args ? args : def, false, NULL, NULL), 0);
    char err[256];
    pc_kube_options o = {.server = sim.url};
    cr_assert_eq(pc_kube_client_new(&o, &kc, err, sizeof(err)), 0);
}

static void start_watch(void)
{
    pc_watch_config wc = {.client = kc,
                          .path = COLL,
                          .page_size = 3,
                          .backoff_initial_ns = 5000000LL,
                          .backoff_max_ns = 50000000LL,
                          .on_change = on_change,
                          .on_sync = on_sync};
    cr_assert_eq(pc_watch_new(&wc, &w), 0);
    cr_assert_eq(pc_watch_start(w), 0);
}

Test(watch, paged_list_then_cut_watches_miss_nothing_and_repeat_nothing, .init = setup,
     .fini = fini, .timeout = 60)
{
    start(NULL);
    for (int i = 0; i < 10; i++) {
        char n[16];
        snprintf(n, sizeof(n), "c%d", i);
        create(n);
    }
    /* every watch is cut after 3 events (the setting applies to watches started later) */
    cr_assert_eq(ksim_put_faults(&sim, "{\"watchDropEvents\":3}"), 0);
    start_watch();
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w), 5000));
    cr_assert_eq(count(PC_WATCH_ADDED), 10, "a 4-page LIST gave %d objects", count(PC_WATCH_ADDED));
    cr_assert(cache_matches_server());
    pc_watch_stats st0;
    pc_watch_stats_read(w, &st0);
    for (int round = 1; round <= 5; round++)
        for (int i = 0; i < 10; i++) {
            char n[16];
            snprintf(n, sizeof(n), "c%d", i);
            bump(n, round % 6);
        }
    cr_assert(PC_TEST_WAIT(count(PC_WATCH_MODIFIED) == 50 && cache_matches_server(), 20000),
              "modified %d of 50", count(PC_WATCH_MODIFIED));
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    cr_assert_gt(st.watches, st0.watches + 3, "the watches were not cut (%llu)",
                 (unsigned long long)st.watches);
    cr_assert_eq(st.relists, 0, "a cut watch relisted instead of resuming");
    cr_assert_eq(S.replays, 0, "a version was reported twice");
}

Test(watch, relist_after_410_reports_what_was_deleted_meanwhile, .init = setup, .fini = fini,
     .timeout = 60)
{
    start(NULL);
    for (int i = 0; i < 6; i++) {
        char n[16];
        snprintf(n, sizeof(n), "c%d", i);
        create(n);
    }
    start_watch();
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w) && count(PC_WATCH_ADDED) == 6, 5000));
    pc_watch_stop(w); /* away for a while */
    json_decref(ksim_json(&sim, "DELETE", COLL "/c1", NULL));
    json_decref(ksim_json(&sim, "DELETE", COLL "/c2", NULL));
    bump("c3", 5);
    create("c9");
    json_decref(ksim_json(&sim, "POST", "/sim/compact", "{}"));
    cr_assert_eq(pc_watch_start(w), 0); /* resumes from a compacted version: 410, relist */
    cr_assert(PC_TEST_WAIT(count(PC_WATCH_DELETED) == 2 && count(PC_WATCH_ADDED) == 7 &&
                                   count(PC_WATCH_MODIFIED) == 1,
                           10000),
              "added %d deleted %d modified %d", count(PC_WATCH_ADDED), count(PC_WATCH_DELETED),
              count(PC_WATCH_MODIFIED));
    cr_assert(cache_matches_server());
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    cr_assert_eq(st.relists, 1);
    cr_assert_null(pc_watch_get(w, "default", "c1"));
}

/* kapi-sim killed (-9) and a fresh one on the same port: no objects but what args make, its
 * resourceVersions from 1 again (the soak's --restart-every, an etcd restored without
 * --bump-revision). */
static void restart_sim(void)
{
    int port = sim.port;
    kill(sim.pid, SIGKILL);
    waitpid(sim.pid, NULL, 0);
    sim.pid = 0;
    ksim_stop(&sim);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *args[] = {"--kubelet-only", "--listen", listen, NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    cr_assert_eq(sim.port, port);
}

/* The watch resumes at a version the fresh server has not reached: kapi-sim, like
 * kube-apiserver, accepts that WATCH and says nothing. The check before resuming after a cut
 * (a LIST at that version: 504 "Too large resource version") makes it relist, and the cache
 * converges to the new server's objects: the old ones reported DELETED. */
Test(watch, a_restarted_server_with_fresh_versions_is_relisted, .init = setup, .fini = fini,
     .timeout = 60)
{
    start(NULL);
    for (int i = 0; i < 4; i++) {
        char n[16];
        snprintf(n, sizeof(n), "c%d", i);
        create(n);
    }
    for (int round = 1; round <= 5; round++) /* the old server's versions well ahead */
        for (int i = 0; i < 4; i++) {
            char n[16];
            snprintf(n, sizeof(n), "c%d", i);
            bump(n, round);
        }
    start_watch();
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w) && cache_matches_server(), 5000));
    restart_sim();
    create("d0");
    create("d1");
    cr_assert(PC_TEST_WAIT(cache_matches_server(), 20000),
              "the cache kept the old server's objects: %d added, %d deleted",
              count(PC_WATCH_ADDED), count(PC_WATCH_DELETED));
    cr_assert_eq(count(PC_WATCH_DELETED), 4);
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    cr_assert_geq(st.relists, 1);
}

/* A server that keeps refusing the watch with an API error (here every request 500 for a
 * while): after 3 in a row the watch relists instead of resuming at the same version forever,
 * as the informer does. */
Test(watch, repeated_api_errors_on_the_watch_relist, .init = setup, .fini = fini, .timeout = 60)
{
    start(NULL);
    create("c0");
    pc_watch_config wc = {.client = kc,
                          .path = COLL,
                          .watch_timeout_s = 1, /* a new WATCH every second */
                          .backoff_initial_ns = 5000000LL,
                          .backoff_max_ns = 50000000LL,
                          .on_change = on_change,
                          .on_sync = on_sync};
    cr_assert_eq(pc_watch_new(&wc, &w), 0);
    cr_assert_eq(pc_watch_start(w), 0);
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w), 5000));
    pc_watch_stats st0, st;
    pc_watch_stats_read(w, &st0);
    cr_assert_eq(ksim_put_faults(&sim, "{\"errorRate\":1}"), 0);
    cr_assert(PC_TEST_WAIT((pc_watch_stats_read(w, &st), st.errors >= st0.errors + 4), 10000));
    cr_assert_eq(ksim_put_faults(&sim, "{\"errorRate\":0}"), 0);
    create("c1");
    cr_assert(PC_TEST_WAIT(cache_matches_server(), 10000));
    pc_watch_stats_read(w, &st);
    cr_assert_geq(st.relists, 1, "resumed at the refused version forever");
}

/* ---- pod mode -------------------------------------------------------------------------------- */

#define PODS "/api/v1/namespaces/default/pods"

static void on_pod(void *arg, pc_watch_change ch, const pc_kube_pod *obj, const pc_kube_pod *old)
{
    (void)arg, (void)old;
    pthread_mutex_lock(&S.mu);
    const char *prev = json_string_value(json_object_get(S.last, obj->name));
    if (ch != PC_WATCH_DELETED && prev && strcmp(prev, obj->resource_version) == 0)
        S.replays++;
    json_object_set_new(S.last, obj->name, json_string(obj->resource_version));
    S.changes[ch]++;
    pthread_mutex_unlock(&S.mu);
}

static void create_pod(const char *name, const char *pool)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"labels\":{\"podclaim.io/pool\":\"%s\"},\"annotations\":{\"note\":\"n\"}},"
             "\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"img:1\"}]}}",
             name, pool);
    json_t *o = ksim_json(&sim, "POST", PODS, body);
    cr_assert(o);
    json_decref(o);
}

static void label_pod(const char *name, const char *key, const char *value)
{
    char path[256], body[256];
    snprintf(path, sizeof(path), PODS "/%s", name);
    snprintf(body, sizeof(body), "{\"metadata\":{\"labels\":{\"%s\":\"%s\"}}}", key, value);
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    cr_assert_eq(pc_kube_conn_request(c, "PATCH", path, "application/merge-patch+json", body,
                                      strlen(body), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
}

static long pool_size(const char *pool)
{
    pc_watch_pod **pods;
    long n = pc_watch_list_pods(w, "default", pool, &pods);
    for (long i = 0; i < n; i++) /* every member carries the label it is indexed by */
        cr_assert_str_eq(pc_kube_pod_label(pods[i]->pod, "podclaim.io/pool"), pool);
    pc_watch_pods_free(pods, n);
    return n;
}

/* The pod cache equals the server: same pods, same resourceVersions and labels. */
static bool pods_match_server(void)
{
    json_t *l = ksim_json(&sim, "GET", PODS, NULL);
    json_t *items = json_object_get(l, "items");
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    bool ok = json_array_size(items) == st.objects;
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o)
    {
        json_t *md = json_object_get(o, "metadata");
        pc_watch_pod *c =
                pc_watch_get_pod(w, "default", json_string_value(json_object_get(md, "name")));
        const char *phase = json_string_value(
                json_object_get(json_object_get(md, "labels"), "podclaim.io/phase"));
        ok = ok && c &&
             strcmp(c->pod->resource_version,
                    json_string_value(json_object_get(md, "resourceVersion"))) == 0 &&
             (!phase || strcmp(pc_kube_pod_label(c->pod, "podclaim.io/phase"), phase) == 0);
        pc_watch_pod_unref(c);
    }
    json_decref(l);
    return ok;
}

static void start_pod_watch(void)
{
    pc_watch_config wc = {.client = kc,
                          .path = PODS,
                          .label_selector = "podclaim.io/pool",
                          .index_label = "podclaim.io/pool",
                          .page_size = 3,
                          .backoff_initial_ns = 5000000LL,
                          .backoff_max_ns = 50000000LL,
                          .pods = true,
                          .on_pod = on_pod,
                          .on_sync = on_sync};
    cr_assert_eq(pc_watch_new(&wc, &w), 0);
    cr_assert_eq(pc_watch_start(w), 0);
}

Test(watch, pod_mode_paged_list_then_cut_watches_miss_nothing_and_repeat_nothing, .init = setup,
     .fini = fini, .timeout = 60)
{
    const char *args[] = {"--no-kubelet", NULL};
    start(args);
    for (int i = 0; i < 10; i++) {
        char n[16];
        snprintf(n, sizeof(n), "p%d", i);
        create_pod(n, "a");
    }
    cr_assert_eq(ksim_put_faults(&sim, "{\"watchDropEvents\":3}"), 0);
    start_pod_watch();
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w), 5000));
    cr_assert_eq(count(PC_WATCH_ADDED), 10, "a 4-page LIST gave %d pods", count(PC_WATCH_ADDED));
    cr_assert(pods_match_server());
    cr_assert_eq(pool_size("a"), 10);
    pc_watch_pod *p = pc_watch_get_pod(w, "default", "p3");
    cr_assert(p);
    cr_assert_eq(p->pod->n_containers, 1);
    cr_assert_str_eq(p->pod->containers[0].image, "img:1");
    cr_assert(pc_kube_pod_annotation(p->pod, "note"));
    pc_watch_pod_unref(p);
    pc_watch_stats st0;
    pc_watch_stats_read(w, &st0);
    const char *phases[] = {"Idle", "Running", "Stopping", "Starting", "Idle"};
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < 10; i++) {
            char n[16];
            snprintf(n, sizeof(n), "p%d", i);
            label_pod(n, "podclaim.io/phase", phases[round]);
        }
    cr_assert(PC_TEST_WAIT(count(PC_WATCH_MODIFIED) == 50 && pods_match_server(), 20000),
              "modified %d of 50", count(PC_WATCH_MODIFIED));
    /* five pods move to another pool: the index follows the label */
    for (int i = 0; i < 5; i++) {
        char n[16];
        snprintf(n, sizeof(n), "p%d", i);
        label_pod(n, "podclaim.io/pool", "b");
    }
    cr_assert(PC_TEST_WAIT(count(PC_WATCH_MODIFIED) == 55, 20000));
    cr_assert_eq(pool_size("a"), 5);
    cr_assert_eq(pool_size("b"), 5);
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    cr_assert_gt(st.watches, st0.watches + 3, "the watches were not cut (%llu)",
                 (unsigned long long)st.watches);
    cr_assert_eq(st.relists, 0, "a cut watch relisted instead of resuming");
    cr_assert_eq(S.replays, 0, "a version was reported twice");
}

Test(watch, pod_mode_relist_after_410_reports_what_was_deleted_meanwhile, .init = setup,
     .fini = fini, .timeout = 60)
{
    const char *args[] = {"--no-kubelet", NULL};
    start(args);
    for (int i = 0; i < 6; i++) {
        char n[16];
        snprintf(n, sizeof(n), "p%d", i);
        create_pod(n, "a");
    }
    start_pod_watch();
    cr_assert(PC_TEST_WAIT(pc_watch_synced(w) && count(PC_WATCH_ADDED) == 6, 5000));
    pc_watch_stop(w); /* away for a while */
    json_decref(ksim_json(&sim, "DELETE", PODS "/p1?gracePeriodSeconds=0", NULL));
    json_decref(ksim_json(&sim, "DELETE", PODS "/p2?gracePeriodSeconds=0", NULL));
    label_pod("p3", "podclaim.io/phase", "Idle");
    create_pod("p9", "a");
    json_decref(ksim_json(&sim, "POST", "/sim/compact", "{}"));
    cr_assert_eq(pc_watch_start(w), 0); /* resumes from a compacted version: 410, relist */
    cr_assert(PC_TEST_WAIT(count(PC_WATCH_DELETED) == 2 && count(PC_WATCH_ADDED) == 7 &&
                                   count(PC_WATCH_MODIFIED) == 1,
                           10000),
              "added %d deleted %d modified %d", count(PC_WATCH_ADDED), count(PC_WATCH_DELETED),
              count(PC_WATCH_MODIFIED));
    cr_assert(pods_match_server());
    pc_watch_stats st;
    pc_watch_stats_read(w, &st);
    cr_assert_eq(st.relists, 1);
    cr_assert_null(pc_watch_get_pod(w, "default", "p1"));
    cr_assert_eq(pool_size("a"), 5);
}
