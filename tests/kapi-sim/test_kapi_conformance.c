/* kapi-sim against kube-apiserver's behaviour where a review (issue 14) found it differed: query
 * booleans, requests that crashed it, 405s, numbers in the query, validation with field causes,
 * graceful deletion and finalizers, dryRun, LIST resourceVersion semantics, hostile input.
 * Each test runs the real binary on an ephemeral port (KSIM_BIN picks another build). The
 * differential suite (realk8s/) checks the same behaviours against the real server. */
#include "ksim_test.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static ksim K;

static void start(void)
{
    cr_assert_eq(ksim_start(&K, "--stop-ms 50"), 0, "kapi-sim did not start");
}

static void start_short_timeout(void)
{
    cr_assert_eq(ksim_start(&K, "--conn-timeout-s 1"), 0, "kapi-sim did not start");
}

static void stop(void)
{
    /* kapi-sim exits 0 on SIGTERM: anything else is a sanitizer report in it (the tests run
     * under ASan and TSan with halt_on_error) or a crash */
    bool running = K.pid > 0;
    int rc = ksim_stop(&K);
    if (running && rc != 0) {
        /* Criterion ignores assertions in a .fini: crash the test instead */
        fprintf(stderr, "kapi-sim exited with status %d (a sanitizer report in its log?)\n", rc);
        abort();
    }
}

TestSuite(conformance, .init = start, .fini = stop, .timeout = 40);

#define POD(name, extra)                                                                           \
    "{\"metadata\":{\"name\":\"" name "\"" extra "},\"spec\":{\"containers\":[{\"name\":\"c\","    \
    "\"image\":\"img:1\"}]}}"
#define PODS "/api/v1/namespaces/default/pods"

static int call(const char *method, const char *path, const char *ctype, const char *body,
                json_t **out)
{
    char *resp = NULL;
    int code = ksim_http(&K, method, path, ctype, body, &resp);
    if (out)
        *out = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return code;
}

static const char *str_at(const json_t *j, const char *a, const char *b)
{
    const json_t *v = json_object_get(j, a);
    return json_string_value(b ? json_object_get(v, b) : v);
}

/* The first details.causes entry's field, or "". */
static const char *cause_field(const json_t *st)
{
    const json_t *c = json_array_get(json_object_get(json_object_get(st, "details"), "causes"), 0);
    const char *f = json_string_value(json_object_get(c, "field"));
    return f ? f : "";
}

Test(conformance, watch_true_in_any_case_and_a_bare_watch_are_watches_but_false_and_0_list)
{
    cr_assert_eq(call("POST", PODS, "application/json", POD("w", ""), NULL), 201);
    const char *watches[] = {"?watch=True&timeoutSeconds=1", "?watch&timeoutSeconds=1",
                             "?watch=yes&timeoutSeconds=1"};
    for (size_t i = 0; i < 3; i++) {
        char *out = NULL, path[200];
        snprintf(path, sizeof path, PODS "%s", watches[i]);
        cr_expect_eq(ksim_http(&K, "GET", path, NULL, NULL, &out), 200);
        cr_expect(out && strstr(out, "{\"type\":\"ADDED\""), "%s: %s", watches[i], out);
        free(out);
    }
    const char *lists[] = {"?watch=false", "?watch=FALSE", "?watch=0", ""};
    for (size_t i = 0; i < 4; i++) {
        json_t *l = NULL;
        char path[200];
        snprintf(path, sizeof path, PODS "%s", lists[i]);
        cr_expect_eq(call("GET", path, NULL, NULL, &l), 200);
        cr_expect_str_eq(str_at(l, "kind", NULL) ? str_at(l, "kind", NULL) : "", "PodList", "%s",
                         lists[i]);
        json_decref(l);
    }
}

Test(conformance, writes_on_the_api_roots_are_answered_and_the_server_lives)
{
    const char *m[] = {"POST", "PUT", "DELETE", "PATCH"};
    const char *p[] = {"/api", "/apis", "/api/", "/apis/podclaim.io"};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++) {
            int code = call(m[i], p[j], "application/json", "{}", NULL);
            cr_expect(code >= 400 && code < 500, "%s %s: %d", m[i], p[j], code);
        }
    cr_expect_eq(call("GET", "/version", NULL, NULL, NULL), 200, "the server died");
}

Test(conformance, delete_on_the_namespace_collection_is_405_and_deletes_nothing)
{
    json_t *st = NULL;
    cr_expect_eq(call("DELETE", "/api/v1/namespaces", NULL, NULL, &st), 405);
    cr_expect_str_eq(str_at(st, "reason", NULL) ? str_at(st, "reason", NULL) : "",
                     "MethodNotAllowed");
    json_decref(st);
    cr_expect_eq(call("GET", "/api/v1/namespaces/default", NULL, NULL, NULL), 200);
    cr_expect_eq(call("GET", "/api/v1/namespaces/kube-system", NULL, NULL, NULL), 200);
}

Test(conformance, numbers_in_the_query_that_are_not_numbers_are_400)
{
    const char *bad[] = {PODS "?limit=abc",
                         PODS "?limit=1x",
                         PODS "?limit=99999999999999999999",
                         PODS "?watch=1&timeoutSeconds=soon",
                         PODS "?watch=1&timeoutSeconds=-1",
                         "/sim/claims?since=x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *st = NULL;
        cr_expect_eq(call("GET", bad[i], NULL, NULL, &st), 400, "%s", bad[i]);
        json_decref(st);
    }
}

Test(conformance, a_status_naming_invalid_utf8_still_has_a_json_body)
{
    json_t *st = NULL;
    cr_expect_eq(call("GET", PODS "/%FF%FEx", NULL, NULL, &st), 404);
    cr_assert_not_null(st, "no JSON body");
    cr_expect_str_eq(str_at(st, "reason", NULL), "NotFound");
    cr_expect(strstr(str_at(st, "message", NULL), "\xef\xbf\xbd"), "%s",
              str_at(st, "message", NULL));
    json_decref(st);
}

Test(conformance, invalid_names_labels_and_pods_are_422_with_the_field_in_the_causes)
{
    struct {
        const char *body, *field;
    } cases[] = {
            {POD("Bad_Name", ""), "metadata.name"},
            {POD("ok", ",\"labels\":{\"k\":\"" /* 64 bytes */
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}"),
             "metadata.labels"},
            {POD("ok", ",\"labels\":{\"bad key\":\"v\"}"), "metadata.labels"},
            {POD("ok", ",\"annotations\":{\"/x\":\"v\"}"), "metadata.annotations"},
            {"{\"metadata\":{\"name\":\"nocontainers\"},\"spec\":{}}", "spec.containers"},
            {"{\"metadata\":{\"name\":\"noimage\"},\"spec\":{\"containers\":[{\"name\":\"c\"}]}}",
             "spec.containers[0].image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *st = NULL;
        cr_expect_eq(call("POST", PODS, "application/json", cases[i].body, &st), 422, "%s",
                     cases[i].body);
        cr_expect_str_eq(cause_field(st), cases[i].field, "%s", cases[i].body);
        cr_expect_str_eq(str_at(st, "details", "kind") ? str_at(st, "details", "kind") : "", "Pod");
        json_decref(st);
    }
    json_t *st = NULL;
    cr_expect_eq(call("POST", "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools",
                      "application/json",
                      "{\"metadata\":{\"name\":\"big\"},\"spec\":{\"replicas\":100000}}", &st),
                 422);
    cr_expect_str_eq(cause_field(st), "spec.replicas");
    json_decref(st);
}

static bool gone(const char *path)
{
    return call("GET", path, NULL, NULL, NULL) == 404;
}

Test(conformance, deleting_a_pod_on_a_node_is_graceful_then_the_kubelet_removes_it)
{
    const char *pod = "{\"metadata\":{\"name\":\"g\"},\"spec\":{\"nodeName\":\"n1\",\"containers\":"
                      "[{\"name\":\"c\",\"image\":\"img:1\"}]}}";
    cr_assert_eq(call("POST", PODS, "application/json", pod, NULL), 201);
    json_t *d = NULL;
    cr_expect_eq(call("DELETE", PODS "/g", NULL, NULL, &d), 200);
    cr_expect_not_null(str_at(d, "metadata", "deletionTimestamp"), "no deletionTimestamp");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(d, "metadata"),
                                                    "deletionGracePeriodSeconds")),
                 30);
    json_decref(d);
    cr_expect(KSIM_WAIT_UNTIL(gone(PODS "/g"), 10000), "the kubelet never finished the deletion");
    /* a pod no node runs goes at once */
    cr_assert_eq(call("POST", PODS, "application/json", POD("u", ""), NULL), 201);
    cr_expect_eq(call("DELETE", PODS "/u", NULL, NULL, NULL), 200);
    cr_expect(gone(PODS "/u"));
}

Test(conformance, finalizers_keep_a_deleted_object_until_the_last_one_is_removed)
{
    cr_assert_eq(
            call("POST", PODS, "application/json", POD("f", ",\"finalizers\":[\"x.io/y\"]"), NULL),
            201);
    json_t *d = NULL;
    cr_expect_eq(call("DELETE", PODS "/f", NULL, NULL, &d), 200);
    cr_expect_not_null(str_at(d, "metadata", "deletionTimestamp"));
    json_decref(d);
    cr_expect_eq(call("GET", PODS "/f", NULL, NULL, NULL), 200, "deleted despite a finalizer");
    json_t *st = NULL;
    cr_expect_eq(call("PATCH", PODS "/f", "application/merge-patch+json",
                      "{\"metadata\":{\"finalizers\":[\"x.io/y\",\"x.io/z\"]}}", &st),
                 422, "a finalizer added while deleting");
    json_decref(st);
    cr_expect_eq(call("PATCH", PODS "/f", "application/merge-patch+json",
                      "{\"metadata\":{\"finalizers\":null}}", NULL),
                 200);
    cr_expect(gone(PODS "/f"), "still there without finalizers");
    /* propagationPolicy=Foreground needs the garbage collector: it leaves its finalizer */
    cr_assert_eq(call("POST", PODS, "application/json", POD("fg", ""), NULL), 201);
    cr_expect_eq(call("DELETE", PODS "/fg?propagationPolicy=Foreground", NULL, NULL, &d), 200);
    cr_expect_str_eq(json_string_value(json_array_get(
                             json_object_get(json_object_get(d, "metadata"), "finalizers"), 0)),
                     "foregroundDeletion");
    json_decref(d);
    cr_expect_eq(call("DELETE", PODS "/x?propagationPolicy=Sideways", NULL, NULL, NULL), 422);
}

Test(conformance, dry_run_answers_like_a_write_but_writes_nothing)
{
    json_t *o = NULL;
    cr_expect_eq(call("POST", PODS "?dryRun=All", "application/json", POD("dry", ""), &o), 201);
    cr_expect_str_eq(str_at(o, "metadata", "name"), "dry");
    json_decref(o);
    cr_expect(gone(PODS "/dry"), "dry-run create wrote");
    cr_assert_eq(call("POST", PODS, "application/json", POD("real", ""), NULL), 201);
    cr_expect_eq(call("PATCH", PODS "/real?dryRun=All", "application/merge-patch+json",
                      "{\"metadata\":{\"labels\":{\"x\":\"1\"}}}", &o),
                 200);
    cr_expect_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(o, "metadata"), "labels"), "x")),
                     "1");
    json_decref(o);
    json_t *g = NULL;
    cr_expect_eq(call("GET", PODS "/real", NULL, NULL, &g), 200);
    cr_expect_null(json_object_get(json_object_get(g, "metadata"), "labels"),
                   "dry-run patch wrote");
    json_decref(g);
    cr_expect_eq(call("DELETE", PODS "/real?dryRun=All", NULL, NULL, NULL), 200);
    cr_expect_eq(call("GET", PODS "/real", NULL, NULL, NULL), 200, "dry-run delete deleted");
    cr_expect_eq(call("POST", PODS "?dryRun=Some", "application/json", POD("d2", ""), NULL), 422);
}

Test(conformance, list_at_an_exact_resource_version_shows_the_state_then)
{
    json_t *a = NULL;
    cr_assert_eq(call("POST", PODS, "application/json", POD("a", ""), &a), 201);
    char rv[32], path[200];
    snprintf(rv, sizeof rv, "%s", str_at(a, "metadata", "resourceVersion"));
    json_decref(a);
    cr_assert_eq(call("POST", PODS, "application/json", POD("b", ""), NULL), 201);
    snprintf(path, sizeof path, PODS "?resourceVersion=%s&resourceVersionMatch=Exact", rv);
    json_t *l = NULL;
    cr_expect_eq(call("GET", path, NULL, NULL, &l), 200);
    cr_expect_eq(json_array_size(json_object_get(l, "items")), 1, "the list at %s", rv);
    cr_expect_str_eq(str_at(l, "metadata", "resourceVersion"), rv);
    json_decref(l);
    cr_expect_eq(call("GET", PODS "?resourceVersionMatch=Exact", NULL, NULL, &l), 422);
    cr_expect_str_eq(cause_field(l), "resourceVersionMatch");
    json_decref(l);
    cr_expect_eq(call("GET", PODS "?resourceVersion=abc", NULL, NULL, NULL), 400);
}

Test(conformance, a_body_nested_2000_deep_is_stored_and_served_without_a_crash)
{
    size_t depth = 2000, n = 0;
    char *b = malloc(depth * 8 + 200);
    n += (size_t)sprintf(b, "{\"metadata\":{\"name\":\"deep\"},\"spec\":{\"pool\":\"p\",\"x\":");
    for (size_t i = 0; i < depth; i++)
        n += (size_t)sprintf(b + n, "{\"a\":");
    n += (size_t)sprintf(b + n, "1");
    for (size_t i = 0; i < depth; i++)
        b[n++] = '}';
    sprintf(b + n, "}}");
    const char *claims = "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims";
    int code = call("POST", claims, "application/json", b, NULL);
    cr_expect(code == 201 || code == 400, "create: %d", code);
    cr_expect_eq(call("PATCH", "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/deep",
                      "application/merge-patch+json", b, NULL),
                 code == 201 ? 200 : 404);
    free(b);
    cr_expect_eq(call("GET", "/version", NULL, NULL, NULL), 200, "the server died");
}

Test(conformance, a_client_that_sends_nothing_is_disconnected_after_the_timeout,
     .init = start_short_timeout)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)K.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *partial = "GET /version HTTP/1.1\r\nHost: x\r\n"; /* never finished */
    cr_assert_eq(write(fd, partial, strlen(partial)), (ssize_t)strlen(partial));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    int64_t t0 = ksim_now_ms();
    ssize_t r = read(fd, buf, sizeof buf);
    cr_expect(r <= 0 && ksim_now_ms() - t0 < 9000, "connection still open (read %zd)", r);
    close(fd);
}
