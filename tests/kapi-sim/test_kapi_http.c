/* kapi-sim HTTP layer in process: garbage request bodies never crash the server, never answer
 * 5xx and never change the store (fuzz-style, deterministic seed), plus routing edge cases. */
#include "ksim_test.h"
#include "sim.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <string.h>

static ks_store st;
static ks_faults fl;
static ks_controller *ctl;
static ks_server *srv;
static CURL *curl;
static char base[64];

static void setup(void)
{
    cr_assert_eq(ks_store_init(&st, 1024), 0);
    ks_faults_init(&fl);
    ks_controller_opts co = {.warmup_ms = 10, .stop_ms = 10};
    ctl = ks_controller_new(&st, &co);
    ks_ensure_namespace(&st, "default");
    ks_server_opts so = {.listen = "127.0.0.1:0", .bookmark_ms = 1000};
    char err[256];
    srv = ks_server_start(&so, &st, &fl, ctl, err, sizeof err);
    cr_assert_not_null(srv, "%s", err);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", ks_server_port(srv));
    curl = curl_easy_init();
}

static void teardown(void)
{
    curl_easy_cleanup(curl);
    ks_server_stop(srv);
    ks_controller_free(ctl);
    ks_store_fini(&st);
    ks_faults_fini(&fl);
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 60);

typedef struct buf {
    char *p;
    size_t n;
} buf;

static size_t on_data(char *d, size_t sz, size_t nm, void *arg)
{
    buf *b = arg;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    memcpy(np + b->n, d, sz * nm);
    b->p = np;
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

static long request(const char *method, const char *path, const char *ctype, const char *body,
                    size_t len, char **resp)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    buf b = {0};
    struct curl_slist *h = NULL;
    if (ctype) {
        char ct[128];
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)len);
    } else {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, -1L);
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L); /* no body: not a POST */
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    long code = -1;
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    if (resp)
        *resp = b.p;
    else
        free(b.p);
    return code;
}

/* Everything a client can see of the store, as one string. */
static char *snapshot(uint64_t *rev)
{
    pthread_mutex_lock(&st.mu);
    json_t *all = json_object();
    for (int r = 0; r < KS_RES_COUNT; r++)
        json_object_set(all, ks_resources[r].plural, st.objs[r]);
    char *s = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    *rev = st.rev;
    pthread_mutex_unlock(&st.mu);
    json_decref(all);
    return s;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* A garbage body: random bytes, broken JSON, wrong shapes, hostile patches. */
static char *garbage(size_t *len)
{
    static const char *const seeds[] = {
            "{",
            "}",
            "[",
            "{\"metadata\":",
            "{\"metadata\":{\"name\":1}}",
            "null",
            "42",
            "\"str\"",
            "[1,2,3]",
            "{\"spec\":{\"nodeName\":\"x\"}}",
            "{\"metadata\":{\"resourceVersion\":\"1\"}}",
            "[{\"op\":\"remove\",\"path\":\"/nope\"}]",
            "[{\"op\":\"replace\",\"path\":\"\"}]",
            "[{\"op\":\"add\",\"path\":\"/spec/containers/99\",\"value\":{}}]",
            "[{\"op\":\"test\",\"path\":\"/kind\",\"value\":\"Nope\"}]",
            "[{\"op\":7}]",
            "{\"spec\":{\"containers\":[{\"image\":\"no-name\"}]}}",
            "{\"spec\":{\"containers\":[{\"name\":\"c\",\"$patch\":\"delete\"}]}}",
            "{\"kind\":\"Lease\"}",
            "{\"apiVersion\":\"v9\"}",
            "\xff\xfe\x00garbage",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1e999999}",
            "{\"a\":1,\"a\":2}"};
    size_t n = sizeof seeds / sizeof seeds[0];
    uint32_t kind = rnd() % 4;
    char *b;
    if (kind == 0) { /* random bytes */
        *len = 1 + rnd() % 200;
        b = malloc(*len + 1);
        for (size_t i = 0; i < *len; i++)
            b[i] = (char)(rnd() & 0xff);
    } else if (kind == 1) { /* deep nesting */
        size_t d = 100 + rnd() % 5000;
        *len = 2 * d;
        b = malloc(*len + 1);
        for (size_t i = 0; i < d; i++) {
            b[i] = '[';
            b[2 * d - 1 - i] = ']';
        }
    } else { /* a seed, maybe truncated or with a flipped byte */
        const char *s = seeds[rnd() % n];
        *len = strlen(s);
        b = malloc(*len + 1);
        memcpy(b, s, *len);
        if (kind == 3 && *len > 1) {
            if (rnd() % 2)
                *len = rnd() % *len;
            else
                b[rnd() % *len] ^= (char)(1 << (rnd() % 8));
        }
    }
    b[*len] = '\0';
    return b;
}

Test(http, garbage_bodies_never_crash_answer_4xx_and_leave_the_store_unchanged)
{
    const char *pod = "{\"metadata\":{\"name\":\"victim\",\"labels\":{\"a\":\"b\"}},\"spec\":{"
                      "\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}";
    cr_assert_eq(request("POST", "/api/v1/namespaces/default/pods", "application/json", pod,
                         strlen(pod), NULL),
                 201);
    uint64_t rev0, rev1;
    char *before = snapshot(&rev0);
    static const char *const ctypes[] = {"application/json", "application/merge-patch+json",
                                         "application/json-patch+json",
                                         "application/strategic-merge-patch+json", NULL};
    static const struct {
        const char *method, *path;
    } targets[] = {
            {"PATCH", "/api/v1/namespaces/default/pods/victim"},
            {"PUT", "/api/v1/namespaces/default/pods/victim"},
            {"PATCH", "/api/v1/namespaces/default/pods/victim/status"},
            {"POST", "/api/v1/namespaces/default/pods"},
            {"POST", "/api/v1/namespaces"},
            {"PUT", "/sim/faults"},
    };
    int n5xx = 0, nok = 0;
    for (int i = 0; i < 400; i++) {
        size_t len;
        char *g = garbage(&len);
        int t = (int)(rnd() % (sizeof targets / sizeof targets[0]));
        const char *ct = ctypes[rnd() % 5];
        char *resp = NULL;
        long code = request(targets[t].method, targets[t].path, ct, g, len, &resp);
        cr_assert_neq(code, -1, "no answer (server died?) for %s %s body %.60s", targets[t].method,
                      targets[t].path, g);
        n5xx += code >= 500;
        char *now = snapshot(&rev1);
        if (code < 300) {
            /* A mutated seed can be a valid request (e.g. a merge patch adding a field): it
             * may change the store, and becomes the new baseline. */
            nok++;
            free(before);
            before = now;
            rev0 = rev1;
        } else {
            cr_expect_str_eq(now, before, "%s %s %.80s -> %ld changed the store", targets[t].method,
                             targets[t].path, g, code);
            cr_expect_eq(rev1, rev0);
            free(now);
            if (code != 404 && code != 405) {
                json_t *stj = resp ? json_loads(resp, 0, NULL) : NULL;
                cr_expect_str_eq(json_string_value(json_object_get(stj, "kind")), "Status",
                                 "error answers are Status objects: %ld %s", code, resp);
                json_decref(stj);
            }
        }
        free(resp);
        free(g);
    }
    /* Reset whatever a valid /sim/faults body might have turned on. */
    request("PUT", "/sim/faults", "application/json", "{\"reset\":true}", 14, NULL);
    char *after = snapshot(&rev1);
    cr_expect_eq(n5xx, 0, "%d answers were 5xx", n5xx);
    cr_expect_lt(nok, 40, "%d of 400 garbage bodies were accepted", nok);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
}

Test(http, unknown_paths_are_404_status_and_collection_put_is_405)
{
    char *resp = NULL;
    cr_expect_eq(request("GET", "/api/v1/widgets", NULL, NULL, 0, &resp), 404);
    cr_expect(resp && strstr(resp, "\"kind\":\"Status\""), "%s", resp);
    free(resp);
    cr_expect_eq(request("GET", "/apis/nope.io/v1", NULL, NULL, 0, NULL), 404);
    cr_expect_eq(
            request("PUT", "/api/v1/namespaces/default/pods", "application/json", "{}", 2, NULL),
            405);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/missing", NULL, NULL, 0, NULL),
                 404);
}

Test(http, discovery_lists_our_resources)
{
    char *resp = NULL;
    cr_expect_eq(request("GET", "/apis/podclaim.io/v1alpha1", NULL, NULL, 0, &resp), 200);
    cr_expect(strstr(resp, "\"sandboxpools\"") && strstr(resp, "\"sandboxpools/status\"") &&
                      strstr(resp, "\"sandboxclaims\""),
              "%s", resp);
    free(resp);
    cr_expect_eq(request("GET", "/apis", NULL, NULL, 0, &resp), 200);
    cr_expect(strstr(resp, "coordination.k8s.io") && strstr(resp, "apiextensions.k8s.io"), "%s",
              resp);
    free(resp);
}

Test(http, injected_conflicts_and_errors_follow_the_configured_rates)
{
    const char *pod = "{\"metadata\":{\"name\":\"x\"},\"spec\":{\"containers\":[{\"name\":\"c\","
                      "\"image\":\"i\"}]}}";
    cr_assert_eq(request("POST", "/api/v1/namespaces/default/pods", "application/json", pod,
                         strlen(pod), NULL),
                 201);
    const char *f = "{\"conflictRate\":1}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    char *resp = NULL;
    const char *p = "{\"metadata\":{\"labels\":{\"k\":\"v\"}}}";
    cr_expect_eq(request("PATCH", "/api/v1/namespaces/default/pods/x",
                         "application/merge-patch+json", p, strlen(p), &resp),
                 409);
    cr_expect(strstr(resp, "\"reason\":\"Conflict\""), "%s", resp);
    free(resp);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/x", NULL, NULL, 0, NULL), 200,
                 "conflicts are for writes only");
    f = "{\"conflictRate\":0,\"errorRate\":1,\"errorCode\":503}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/x", NULL, NULL, 0, NULL), 503);
    /* limited to one verb: PATCHes fail, reads pass */
    f = "{\"errorVerb\":\"patch\"}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/x", NULL, NULL, 0, NULL), 200);
    cr_expect_eq(request("PATCH", "/api/v1/namespaces/default/pods/x",
                         "application/merge-patch+json", p, strlen(p), NULL),
                 503);
    f = "{\"errorVerb\":\"bogus\"}";
    cr_expect_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 400);
    f = "{\"errorRate\":2}";
    cr_expect_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 400);
    f = "{\"reset\":true,\"latency\":{\"get\":{\"fixedMs\":30}}}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    int64_t t0 = ksim_now_ms();
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/x", NULL, NULL, 0, NULL), 200);
    cr_expect_geq(ksim_now_ms() - t0, 30, "injected latency");
}

/* Streams a watch with libcurl; records the bytes and when the first byte came. */
typedef struct stream {
    buf b;
    int64_t first_ms;
} stream;

static size_t on_stream(char *d, size_t sz, size_t nm, void *arg)
{
    stream *s = arg;
    if (!s->first_ms)
        s->first_ms = ksim_now_ms();
    return on_data(d, sz, nm, &s->b);
}

static CURLcode watch(const char *query, stream *s)
{
    char url[512];
    snprintf(url, sizeof url, "%s/api/v1/namespaces/default/pods?watch=1&%s", base, query);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return rc;
}

static void create(const char *name)
{
    char pod[256];
    snprintf(pod, sizeof pod,
             "{\"metadata\":{\"name\":\"%s\"},\"spec\":{\"containers\":[{\"name\":\"c\","
             "\"image\":\"i\"}]}}",
             name);
    cr_assert_eq(request("POST", "/api/v1/namespaces/default/pods", "application/json", pod,
                         strlen(pod), NULL),
                 201);
}

static int lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

Test(http, watch_drop_after_n_events_cuts_the_connection_mid_stream)
{
    uint64_t rev;
    free(snapshot(&rev));
    create("a");
    create("b");
    create("c");
    const char *f = "{\"watchDropEvents\":2}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    char q[64];
    snprintf(q, sizeof q, "resourceVersion=%llu", (unsigned long long)rev);
    stream s = {0};
    CURLcode rc = watch(q, &s);
    cr_expect_neq(rc, CURLE_OK, "a dropped stream has no terminating chunk");
    cr_expect_eq(lines(s.b.p), 2, "exactly 2 events before the drop: %s", s.b.p);
    free(s.b.p);
}

Test(http, watch_delay_holds_each_event_back)
{
    uint64_t rev;
    free(snapshot(&rev));
    const char *f = "{\"watchDelayMs\":200}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    int64_t t0 = ksim_now_ms();
    create("late");
    char q[64];
    snprintf(q, sizeof q, "resourceVersion=%llu&timeoutSeconds=2", (unsigned long long)rev);
    stream s = {0};
    cr_expect_eq(watch(q, &s), CURLE_OK);
    cr_expect(s.b.p && strstr(s.b.p, "\"name\":\"late\""), "%s", s.b.p);
    cr_expect_geq(s.first_ms - t0, 190, "first event after %lld ms", (long long)(s.first_ms - t0));
    free(s.b.p);
}

typedef struct watch_job {
    char q[128];
    stream s;
    CURLcode rc;
} watch_job;

static void *watch_thread(void *arg)
{
    watch_job *j = arg;
    j->rc = watch(j->q, &j->s);
    return NULL;
}

/* A client from an earlier kapi-sim lifetime resumes at a version this store has not reached:
 * like kube-apiserver's watch cache, the watch is silent (no bookmark either, though asked
 * for) until the store passes that version, then sends only what is newer. */
Test(http, a_watch_from_a_future_version_is_silent_until_the_store_passes_it)
{
    uint64_t rev;
    free(snapshot(&rev));
    watch_job j = {0};
    snprintf(j.q, sizeof j.q, "resourceVersion=%llu&allowWatchBookmarks=true&timeoutSeconds=3",
             (unsigned long long)rev + 2);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, watch_thread, &j), 0);
    /* the watch is registered once it shows in the server's counters */
    KSIM_WAIT_UNTIL(atomic_load(&fl.watches_open) == 1, 5000);
    /* Not a synchronisation: time for a bookmark (every 1 s here) to be sent, if it were. */
    int64_t quiet_until = ksim_now_ms() + 1500;
    while (ksim_now_ms() < quiet_until)
        ksim_pause();
    create("f1"); /* rev + 1 */
    create("f2"); /* rev + 2: the watch's version */
    create("f3"); /* rev + 3: newer, sent */
    pthread_join(t, NULL);
    cr_expect_eq(j.rc, CURLE_OK);
    const char *b = j.s.b.p ? j.s.b.p : "";
    cr_expect(strncmp(b, "{\"type\":\"ADDED\"", 15) == 0 && strstr(b, "\"name\":\"f3\""),
              "first line the event past the version, no bookmark before it: %s", b);
    cr_expect(!strstr(b, "\"name\":\"f1\"") && !strstr(b, "\"name\":\"f2\""),
              "nothing at or before the version: %s", b);
    free(j.s.b.p);
}

Test(http, watch_timeout_seconds_ends_the_stream_cleanly)
{
    stream s = {0};
    int64_t t0 = ksim_now_ms();
    cr_expect_eq(watch("timeoutSeconds=1", &s), CURLE_OK);
    int64_t took = ksim_now_ms() - t0;
    cr_expect(took >= 900 && took < 5000, "ended after %lld ms", (long long)took);
    free(s.b.p);
}

Test(http, delete_collection_deletes_what_the_selector_matches)
{
    const char *a = "{\"metadata\":{\"name\":\"a\",\"labels\":{\"k\":\"1\"}},\"spec\":{"
                    "\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}";
    const char *b = "{\"metadata\":{\"name\":\"b\",\"labels\":{\"k\":\"2\"}},\"spec\":{"
                    "\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}";
    cr_assert_eq(request("POST", "/api/v1/namespaces/default/pods", "application/json", a,
                         strlen(a), NULL),
                 201);
    cr_assert_eq(request("POST", "/api/v1/namespaces/default/pods", "application/json", b,
                         strlen(b), NULL),
                 201);
    char *resp = NULL;
    cr_expect_eq(request("DELETE", "/api/v1/namespaces/default/pods?labelSelector=k%3D1", NULL,
                         NULL, 0, &resp),
                 200);
    json_t *l = json_loads(resp, 0, NULL);
    cr_expect_eq(json_array_size(json_object_get(l, "items")), 1, "%s", resp);
    json_decref(l);
    free(resp);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/a", NULL, NULL, 0, NULL), 404);
    cr_expect_eq(request("GET", "/api/v1/namespaces/default/pods/b", NULL, NULL, 0, NULL), 200);
}

Test(http, lease_update_is_guarded_by_its_resource_version)
{
    const char *l = "{\"metadata\":{\"name\":\"leader\"},\"spec\":{\"holderIdentity\":\"a\","
                    "\"leaseDurationSeconds\":10}}";
    char *resp = NULL;
    cr_assert_eq(request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                         "application/json", l, strlen(l), &resp),
                 201);
    json_t *lease = json_loads(resp, 0, NULL);
    free(resp);
    json_object_set_new(json_object_get(lease, "spec"), "holderIdentity", json_string("b"));
    char *body = json_dumps(lease, JSON_COMPACT);
    cr_expect_eq(request("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
                         "application/json", body, strlen(body), NULL),
                 200, "first update with the current version wins");
    cr_expect_eq(request("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
                         "application/json", body, strlen(body), NULL),
                 409, "the same stale version loses");
    free(body);
    json_decref(lease);
}

Test(http, compact_now_in_faults_expires_older_versions)
{
    uint64_t rev;
    free(snapshot(&rev));
    create("x1");
    const char *f = "{\"compactNow\":true}";
    cr_assert_eq(request("PUT", "/sim/faults", "application/json", f, strlen(f), NULL), 200);
    char q[64];
    snprintf(q, sizeof q, "resourceVersion=%llu", (unsigned long long)rev);
    stream s = {0};
    cr_expect_eq(watch(q, &s), CURLE_OK);
    cr_expect(s.b.p && strstr(s.b.p, "\"code\":410"), "%s", s.b.p);
    free(s.b.p);
}
