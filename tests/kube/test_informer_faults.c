/* The informer against a scripted fake API server (fakeapi.h): the failures a review of the
 * informer against client-go's reflector found. Each test scripts the server's answers in
 * request order and checks what the informer told its pool (through the observer) and which
 * requests it sent. */
#include <podclaim/informer.h>
#include <podclaim/kube.h>

#include "../core/common.h"
#include "fakeapi.h"
#include "podcache.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings the scripts are built from (freed by the fini) ---- */

static char *owned[64];
static size_t n_owned;

static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    cr_assert_geq(vasprintf(&s, f, ap), 0);
    va_end(ap);
    cr_assert_lt(n_owned, 64u);
    return owned[n_owned++] = s;
}

/* A pod of pool p in namespace g; extra: more label members, e.g. ",\"k\":\"v\"". */
static const char *pod(const char *name, const char *uid, const char *rv, const char *phase,
                       const char *extra)
{
    return fmt("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"g\","
               "\"uid\":\"%s\",\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/pool\":\"p\","
               "\"podclaim.io/phase\":\"%s\"%s}},\"spec\":{\"containers\":[{\"name\":\"c\"}]},"
               "\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\","
               "\"status\":\"True\"}]}}",
               name, uid, rv, phase, extra);
}

static const char *list_of(const char *rv, const char *items)
{
    return fmt("{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"%s\"},\"items\":[%s]}",
               rv, items);
}

static const char *event(const char *type, const char *obj)
{
    return fmt("{\"type\":\"%s\",\"object\":%s}\n", type, obj);
}

static const char *error_event(int code, const char *reason)
{
    return fmt("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
               "\"status\":\"Failure\",\"message\":\"scripted %d\",\"reason\":\"%s\","
               "\"code\":%d}}\n",
               code, reason, code);
}

/* ---- what the informer told the pool ---- */

typedef struct evlog {
    pthread_mutex_t mu;
    char lines[64][128];
    size_t n;
} evlog;

static evlog ev = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void observe(void *arg, pc_informer_change ch, const pc_pod_ref *pod, int64_t recv)
{
    (void)arg;
    (void)recv;
    pthread_mutex_lock(&ev.mu);
    if (ev.n < 64)
        snprintf(ev.lines[ev.n++], 128, "%s %s@%s", pc_informer_change_name(ch), pod->name,
                 pod->resource_version);
    pthread_mutex_unlock(&ev.mu);
}

/* The observed changes joined by ", ", for exact comparisons. */
static const char *events(void)
{
    static char all[4096];
    size_t o = 0;
    pthread_mutex_lock(&ev.mu);
    all[0] = '\0';
    for (size_t i = 0; i < ev.n && o < sizeof(all); i++)
        o += (size_t)snprintf(all + o, sizeof(all) - o, "%s%s", i ? ", " : "", ev.lines[i]);
    pthread_mutex_unlock(&ev.mu);
    return all;
}

/* ---- fixture ---- */

static fakeapi fk;
static pc_kube_client *client;
static pc_informer *inf;

static void start(const fake_resp *script, size_t n, const pc_informer_config *extra)
{
    cr_assert_eq(fakeapi_start(&fk, script, n), 0);
    char err[256];
    pc_kube_options o = {.server = fk.url, .log_level = PC_KUBE_LOG_INFO, .log_level_set = true};
    cr_assert_eq(pc_kube_client_new(&o, &client, err, sizeof(err)), 0, "%s", err);
    pc_informer_config ic = extra ? *extra : (pc_informer_config){0};
    ic.client = client;
    ic.namespace_ = "g";
    ic.pool = "p";
    if (!ic.backoff_initial_ns)
        ic.backoff_initial_ns = 5000000LL;
    if (!ic.backoff_max_ns)
        ic.backoff_max_ns = 20000000LL;
    ic.observer = observe;
    cr_assert_eq(pc_informer_new(&ic, &inf), 0);
    cr_assert_eq(pc_informer_start(inf), 0);
}

static void teardown(void)
{
    pc_informer_free(inf);
    inf = NULL;
    fakeapi_stop(&fk);
    pc_kube_client_free(client);
    client = NULL;
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    n_owned = 0;
    ev.n = 0;
}

static pc_informer_stats stats(void)
{
    pc_informer_stats s;
    pc_informer_stats_read(inf, &s);
    return s;
}

static bool has_event(const char *line)
{
    return strstr(events(), line) != NULL;
}

#define WAIT(cond, ms)                                                                             \
    cr_assert(PC_TEST_WAIT_UNTIL((cond), (ms)), "waited for %s: %s", #cond, events())

/* ---- tests ---- */

Test(informer_faults, skips_and_counts_an_unusable_pod_in_a_watch, .fini = teardown, .timeout = 30)
{
    /* A label value over 255 bytes: well-formed JSON, but no pod we can hold. It must not
     * stop the watch (which would replay it forever): skipped, counted, and the cached
     * version of that pod withdrawn (its old resourceVersion is stale). */
    char big[400];
    memset(big, 'v', 300);
    big[300] = '\0';
    const char *extra = fmt(",\"big\":\"%s\"", big);
    fake_resp script[] = {
            {.body = list_of("5", pod("a", "ua", "5", "Idle", ""))},
            {.body = fmt("%s%s", event("MODIFIED", pod("a", "ua", "6", "Idle", extra)),
                         event("ADDED", pod("c", "uc", "7", "Idle", ""))),
             .hold = true},
    };
    start(script, 2, NULL);
    WAIT(has_event("offer c@7"), 5000);
    cr_assert_str_eq(events(), "offer a@5, withdraw a@5, offer c@7");
    pc_informer_stats s = stats();
    cr_assert_eq(s.skipped, 1u, "skipped %llu", (unsigned long long)s.skipped);
    cr_assert_eq(s.pods, 1u);
    cr_assert_eq(fakeapi_requests(&fk), 2u, "the watch was restarted: %zu requests",
                 fakeapi_requests(&fk));
}

Test(informer_faults, skips_an_unusable_pod_in_a_list_and_watches_on, .fini = teardown,
     .timeout = 30)
{
    const char *extra = fmt(",\"podclaim.io/phase\\u0000x\":\"Idle\"");
    fake_resp script[] = {
            {.body = list_of("5", fmt("%s,%s", pod("a", "ua", "4", "Idle", ""),
                                      pod("b", "ub", "5", "Starting", extra)))},
            {.body = "", .hold = true},
    };
    start(script, 2, NULL);
    WAIT(fakeapi_requests(&fk) == 2 && pc_informer_has_synced(inf), 5000);
    cr_assert_str_eq(events(), "offer a@4");
    cr_assert_eq(stats().skipped, 1u);
    cr_assert_eq(stats().pods, 1u);
}

Test(informer_faults, relists_after_repeated_watch_errors, .fini = teardown, .timeout = 30)
{
    /* client-go's reflector relists after a watch fails with an API error; resuming at the
     * same resourceVersion forever would never recover from a server that keeps refusing
     * it. Three in a row here: ERROR event, HTTP 500, ERROR event. */
    fake_resp script[] = {
            {.body = list_of("10", pod("a", "ua", "9", "Idle", ""))},
            {.body = error_event(500, "InternalError")},
            {.status = 500,
             .body = "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"boom\","
                     "\"code\":500}"},
            {.body = error_event(500, "InternalError")},
            {.body = list_of("12", pod("a", "ua", "12", "Idle", ""))},
            {.body = "", .hold = true},
    };
    start(script, 6, NULL);
    WAIT(fakeapi_requests(&fk) >= 6, 5000);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(fakeapi_is_watch(&fk, i), i != 0 && i != 4, "request %zu", i);
    WAIT(has_event("offer a@12"), 5000);
    cr_assert_str_eq(events(), "offer a@9, offer a@12");
    cr_assert_eq(stats().relists, 1u);
}

Test(informer_faults, resumes_after_a_single_watch_error, .fini = teardown, .timeout = 30)
{
    /* One failure is no reason to relist: an event in between resets the count. */
    fake_resp script[] = {
            {.body = list_of("10", pod("a", "ua", "9", "Idle", ""))},
            {.body = error_event(500, "InternalError")},
            {.body = fmt("%s%s", event("MODIFIED", pod("a", "ua", "11", "Running", "")),
                         error_event(500, "InternalError"))},
            {.body = error_event(500, "InternalError")},
            {.body = "", .hold = true},
    };
    start(script, 5, NULL);
    WAIT(fakeapi_requests(&fk) >= 5, 5000);
    for (size_t i = 1; i < 5; i++)
        cr_assert(fakeapi_is_watch(&fk, i), "request %zu is no watch", i);
    cr_assert_eq(stats().relists, 0u);
}

Test(informer_faults, takes_a_list_as_authoritative_after_versions_went_back, .fini = teardown,
     .timeout = 30)
{
    /* An etcd restore or a server swap: resourceVersions go backwards. The LIST after the
     * 410 is the truth, even at versions older than the cache holds; keeping a@20 would be
     * a phantom state, and every claim on it a 409. */
    fake_resp script[] = {
            {.body = list_of("20", pod("a", "ua", "20", "Idle", ""))},
            {.body = error_event(410, "Expired")},
            {.body = list_of("6", fmt("%s,%s", pod("a", "ua", "5", "Idle", ""),
                                      pod("b", "ub", "6", "Idle", "")))},
            {.body = event("MODIFIED", pod("a", "ua", "7", "Running", "")), .hold = true},
    };
    start(script, 4, NULL);
    WAIT(has_event("withdraw a@7"), 5000);
    const char *e = events();
    cr_assert(!strcmp(e, "offer a@20, offer a@5, offer b@6, withdraw a@7") ||
                      !strcmp(e, "offer a@20, offer b@6, offer a@5, withdraw a@7"),
              "events: %s", e);
}

Test(informer_faults, restarts_a_silent_watch, .fini = teardown, .timeout = 30)
{
    /* A half-open watch: headers, then nothing, and the connection never closes. Bookmarks
     * (asked for) arrive at least every minute on a live watch, so silence longer than the
     * watchdog means the peer is gone: after asking whether the server still has the version
     * (a LIST of one pod at it: yes), resume from it, no relist. */
    fake_resp script[] = {
            {.body = list_of("10", pod("a", "ua", "9", "Idle", ""))},
            {.body = "", .hold = true},
            {.body = list_of("10", "")},
            {.body = "", .hold = true},
    };
    pc_informer_config c = {.watch_idle_timeout_ns = 300000000LL};
    start(script, 4, &c);
    WAIT(fakeapi_requests(&fk) >= 4, 10000);
    char p[512];
    fakeapi_path(&fk, 2, p, sizeof(p));
    cr_assert(!strstr(p, "watch=true") &&
                      strstr(p, "limit=1&resourceVersion=10&resourceVersionMatch=NotOlderThan"),
              "request 3: %s", p);
    /* The watchdog counts from the watch's start on the client (no body byte came since),
     * a little before the server stamps the request: on a slow machine (TSan in CI) the
     * server's gap came out under the 300 ms. An early restart would come within a few ms. */
    cr_assert_geq(fakeapi_at_ms(&fk, 2) - fakeapi_at_ms(&fk, 1), 200, "restarted too early");
    fakeapi_path(&fk, 3, p, sizeof(p));
    cr_assert(strstr(p, "watch=true") && strstr(p, "resourceVersion=10&"), "request 4: %s", p);
    cr_assert(strstr(p, "allowWatchBookmarks=true"), "request 4: %s", p);
    pc_informer_stats s = stats();
    cr_assert_eq(s.relists, 0u);
    cr_assert_geq(s.stalls, 1u);
    cr_assert_str_eq(events(), "offer a@9");
}

/* kube-apiserver's "the version you ask for is ahead of me" (watch cache, after 3 s): a
 * Timeout whose cause says ResourceVersionTooLarge. Measured on v1.34 (realk8s/diff). */
#define TOO_LARGE                                                                                  \
    "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","           \
    "\"message\":\"Timeout: Too large resource version: 10, current: 3\",\"reason\":\"Timeout\","  \
    "\"details\":{\"causes\":[{\"reason\":\"ResourceVersionTooLarge\",\"message\":\"Too large "    \
    "resource version\"}],\"retryAfterSeconds\":1},\"code\":504}"

static void expect_fresh_list(size_t i)
{
    char p[512];
    fakeapi_path(&fk, i, p, sizeof(p));
    cr_assert(!strstr(p, "watch=true") && !strstr(p, "resourceVersion="),
              "request %zu is no fresh LIST: %s", i + 1, p);
}

Test(informer_faults, relists_when_the_server_says_the_version_is_too_large, .fini = teardown,
     .timeout = 30)
{
    /* The server went back to lower versions (a restart with an empty store, an etcd
     * restore): resuming at 10 again would wait for a version it may never reach. As an
     * ERROR event on the watch, as the answer to the watch, and as the answer to the check
     * after a cut watch: relist each time. */
    fake_resp script[] = {
            {.body = list_of("10", pod("a", "ua", "9", "Idle", ""))},
            {.body = fmt("{\"type\":\"ERROR\",\"object\":%s}\n", TOO_LARGE)},
            {.body = list_of("3", pod("b", "ub", "2", "Idle", ""))},
            {.status = 504, .body = TOO_LARGE},
            {.body = list_of("4", pod("c", "uc", "4", "Idle", ""))},
            {.body = ""}, /* a watch that ends at once, without a word: a cut */
            {.status = 504, .body = TOO_LARGE},
            {.body = list_of("5", pod("d", "ud", "5", "Idle", ""))},
            {.body = "", .hold = true},
    };
    start(script, 9, NULL);
    WAIT(has_event("withdraw c@4"), 10000); /* the last relist's sweep */
    expect_fresh_list(2);
    expect_fresh_list(4);
    char p[512];
    fakeapi_path(&fk, 6, p, sizeof(p));
    cr_assert(strstr(p, "limit=1&resourceVersion=4&resourceVersionMatch=NotOlderThan"),
              "request 7 is no check of version 4: %s", p);
    expect_fresh_list(7);
    /* each relist offers what it shows, then sweeps what it did not */
    cr_assert_str_eq(events(), "offer a@9, offer b@2, withdraw a@9, offer c@4, withdraw b@2, "
                               "offer d@5, withdraw c@4");
    cr_assert_eq(stats().relists, 3u);
}

Test(informer_faults, checks_deleted_against_uid_and_withdraws_a_replaced_pod, .fini = teardown,
     .timeout = 30)
{
    /* a is recreated under the same name (new uid) while not idle: the old incarnation may
     * hold a reservation, so it is withdrawn whatever its state. A DELETED of the old uid
     * that arrives afterwards must not remove the new pod. */
    fake_resp script[] = {
            {.body = list_of("5", pod("a", "u1", "5", "Starting", ""))},
            {.body = fmt("%s%s%s", event("ADDED", pod("a", "u2", "7", "Starting", "")),
                         event("DELETED", pod("a", "u1", "8", "Starting", "")),
                         event("MODIFIED", pod("a", "u2", "9", "Idle", ""))),
             .hold = true},
    };
    start(script, 2, NULL);
    WAIT(has_event("offer a@9"), 5000);
    cr_assert_str_eq(events(), "withdraw a@5, offer a@9");
    cr_assert_eq(stats().pods, 1u);
    cr_assert_eq(stats().idle, 1u);
}

Test(informer_faults, ignores_a_replayed_deletion_older_than_the_cache, .fini = teardown,
     .timeout = 30)
{
    fake_resp script[] = {
            {.body = list_of("9", pod("a", "u1", "9", "Idle", ""))},
            {.body = event("DELETED", pod("a", "u1", "8", "Idle", "")), .hold = true},
    };
    start(script, 2, NULL);
    WAIT(fakeapi_requests(&fk) == 2 && stats().duplicates >= 1, 5000);
    cr_assert_str_eq(events(), "offer a@9");
    cr_assert_eq(stats().pods, 1u);
}

Test(informer_faults, honours_retry_after_of_a_429_on_the_watch, .fini = teardown, .timeout = 30)
{
    /* API priority and fairness says when to come back; the informer's own backoff here is
     * 5-20 ms, so coming back sooner than 1 s ignored the server. */
    fake_resp script[] = {
            {.body = list_of("10", pod("a", "ua", "9", "Idle", ""))},
            {.status = 429,
             .headers = "Retry-After: 1\r\n",
             .body = "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"slow down\","
                     "\"reason\":\"TooManyRequests\",\"code\":429}"},
            {.body = "", .hold = true},
    };
    start(script, 3, NULL);
    WAIT(fakeapi_requests(&fk) >= 3, 10000);
    int64_t gap = fakeapi_at_ms(&fk, 2) - fakeapi_at_ms(&fk, 1);
    cr_assert_geq(gap, 950, "came back after %lld ms", (long long)gap);
    char p[512];
    fakeapi_path(&fk, 2, p, sizeof(p));
    cr_assert(strstr(p, "watch=true") && strstr(p, "resourceVersion=10&"), "request 3: %s", p);
    cr_assert_eq(stats().relists, 0u);
}

Test(informer_faults, drops_a_pod_whose_new_incarnation_is_unusable, .fini = teardown,
     .timeout = 30)
{
    /* a recreated under a new uid, and the new one is unusable: the old one is gone all the
     * same, so its offer must not stay in the pool */
    char big[400];
    memset(big, 'v', 300);
    big[300] = '\0';
    fake_resp script[] = {
            {.body = list_of("5", pod("a", "u1", "5", "Idle", ""))},
            {.body = event("ADDED", pod("a", "u2", "6", "Idle", fmt(",\"big\":\"%s\"", big))),
             .hold = true},
    };
    start(script, 2, NULL);
    WAIT(has_event("withdraw a@5"), 5000);
    cr_assert_str_eq(events(), "offer a@5, withdraw a@5");
    WAIT(stats().pods == 0, 5000);
    cr_assert_eq(stats().skipped, 1u);
}

/* ---- the claim id annotation: decoder, and the informer telling the pool whose claim a pod
 * took (pc_pool_observe_claimed) ---- */

/* A pod whose metadata carries `annotations` (a JSON object's members). */
static const char *pod_ann(const char *name, const char *rv, const char *phase, const char *ann)
{
    return fmt("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"g\","
               "\"uid\":\"u%s\",\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/pool\":"
               "\"p\",\"podclaim.io/phase\":\"%s\"},\"annotations\":{%s}},\"spec\":{"
               "\"containers\":[{\"name\":\"c\"}]},\"status\":{\"phase\":\"Running\","
               "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}",
               name, name, rv, phase, ann);
}

static int scan_pod(const char *text, pc__pod *p, char *err, size_t errlen)
{
    pc__js js;
    memset(p, 0, sizeof(*p));
    pc__js_init(&js, text, strlen(text));
    int rc = pc__pod_scan(&js, p, err, errlen);
    return rc == 0 && pc__js_end(&js) ? -EBADMSG : rc;
}

Test(podcache_claim_id, reads_the_claim_id_annotation_and_skips_the_others, .fini = teardown)
{
    pc__pod p;
    char err[160] = "";
    const char *t =
            pod_ann("a", "5", "Running",
                    "\"kubectl.kubernetes.io/last-applied-configuration\":\"{\\\"x\\\":[1]}\","
                    "\"podclaim.io/claim-id\":\"pool-1f2e3d4c-17\",\"podclaim.io/"
                    "claimed-at\":\"2026-12-01T09:00:00Z\"");
    cr_assert_eq(scan_pod(t, &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(p.claim_id);
    cr_assert_str_eq(p.claim_id, "pool-1f2e3d4c-17");
    pc__pod_clear(&p);
    cr_assert_null(p.claim_id, "cleared");

    t = pod_ann("a", "5", "Idle", "\"other\":\"v\"");
    cr_assert_eq(scan_pod(t, &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_null(p.claim_id, "no annotation, no claim id");
    pc__pod_clear(&p);
}

Test(podcache_claim_id, ignores_ids_that_cannot_be_ours_and_refuses_two, .fini = teardown)
{
    pc__pod p;
    char err[160] = "";
    char big[PC_CLAIM_ID_MAX + 8];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *cases[] = {fmt("\"podclaim.io/claim-id\":\"%s\"", big),
                           "\"podclaim.io/claim-id\":\"\"",
                           "\"podclaim.io/claim-id\":\"a\\u0000b\"", "\"podclaim.io/claim-id\":17"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(scan_pod(pod_ann("a", "5", "Running", cases[i]), &p, err, sizeof(err)), 0,
                     "case %zu: %s", i, err);
        cr_assert_null(p.claim_id, "case %zu: no claim id", i);
        pc__pod_clear(&p);
    }
    const char *twice =
            pod_ann("a", "5", "Running",
                    "\"podclaim.io/claim-id\":\"p-1\",\"podclaim.io/claim-id\":\"p-2\"");
    cr_assert_eq(scan_pod(twice, &p, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "twice"), "message: %s", err);
    pc__pod_clear(&p);
    /* still a validating decoder: a broken annotations object is malformed JSON */
    const char *broken = pod_ann("a", "5", "Running", "\"podclaim.io/claim-id\":\"p-1\",\"k\":}");
    cr_assert_eq(scan_pod(broken, &p, err, sizeof(err)), -EBADMSG);
    pc__pod_clear(&p);
}

/* A backend that holds every CAS until the test answers it. */
typedef struct held {
    pthread_mutex_t mu;
    int n;
    char pod[8][PC_NAME_MAX];
    pc_cas_done_fn done[8];
    void *token[8];
} held;

static held H = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int held_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                          void *token)
{
    (void)b;
    pthread_mutex_lock(&H.mu);
    int i = H.n < 8 ? H.n++ : -1;
    if (i >= 0) {
        snprintf(H.pod[i], sizeof(H.pod[i]), "%s", req->pod.name);
        H.done[i] = done;
        H.token[i] = token;
    }
    pthread_mutex_unlock(&H.mu);
    return i >= 0 ? 0 : -EAGAIN;
}

static int held_n(void)
{
    pthread_mutex_lock(&H.mu);
    int n = H.n;
    pthread_mutex_unlock(&H.mu);
    return n;
}

static pc_claim_result res;
static _Atomic int res_calls;

static void on_claim(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    (void)arg;
    res = *r;
    atomic_fetch_add_explicit(&res_calls, 1, memory_order_release);
}

Test(informer_faults, tells_the_pool_whose_claim_a_pod_took, .fini = teardown, .timeout = 30)
{
    /* A claim's PATCH on pod a timed out (RETRYABLE) and it backs off; then the watch shows a
     * claimed with the claim's id: the server had applied it. The informer says so and the
     * claim ends OK on a at the version of that event. */
    pc_backend be = {.cas_start = held_cas_start};
    pc_pool *pool;
    pc_pool_config pc = {.namespace_ = "g",
                         .name = "p",
                         .retry_backoff_ns = 3600 * 1000000000LL,
                         .resync_period_ns = -1};
    cr_assert_eq(pc_pool_new(&pc, &be, &pool), 0);
    cr_assert_eq(pc_pool_start(pool), 0);
    pc_claim c;
    pc_claim_init(&c, 0, on_claim, NULL);
    c.id = "p-claim-1";
    cr_assert_eq(pc_pool_enqueue(pool, &c), 0);
    pc_pod_ref a = {.namespace_ = "g", .name = "a", .uid = "ua", .resource_version = "5"};
    cr_assert_eq(pc_pool_offer_idle(pool, &a), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(held_n() == 1, 5000));
    H.done[0](H.token[0], PC_CAS_RETRYABLE, NULL, "timeout", 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(pool).inflight_cas == 0, 5000));

    fake_resp script[] = {
            {.body = list_of("5", pod_ann("a", "5", "Idle", ""))},
            {.body = fmt("%s%s",
                         event("MODIFIED", pod_ann("a", "6", "Running",
                                                   "\"podclaim.io/claim-id\":\"p-claim-1\"")),
                         /* a later change of the claimed pod: no news */
                         event("MODIFIED", pod_ann("a", "7", "Running",
                                                   "\"podclaim.io/claim-id\":\"p-claim-1\""))),
             .hold = true},
    };
    pc_informer_config ic = {.target = pool};
    start(script, 2, &ic);
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load_explicit(&res_calls, memory_order_acquire) == 1, 5000),
              "no result: %s", events());
    cr_assert_eq(res.status, PC_CLAIM_OK, "%s: %s", pc_claim_status_name(res.status), res.error);
    cr_assert_str_eq(res.pod_name, "a");
    cr_assert_str_eq(res.resource_version, "6");
    WAIT(has_event("withdraw a@7") || stats().watch_events >= 2, 5000);
    cr_assert_str_eq(events(), "offer a@5, withdraw a@6", "reported once");
    cr_assert_eq(held_n(), 1, "no second CAS");
    pc_informer_stop(inf);
    pc_pool_free(pool);
    cr_assert_eq(atomic_load(&res_calls), 1);
}
