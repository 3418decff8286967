/* The client and the CAS backend against a scripted fake server (fakeapi.h): big answers,
 * proxies from the environment, credentials in the server URL, URL bounds. */
#include <podclaim/kube.h>

#include "../core/common.h"
#include "fakeapi.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fakeapi fk, proxy;
static pc_kube_client *client;
static pc_kube_backend *backend;
static char *big;

static void teardown(void)
{
    pc_kube_backend_free(backend);
    backend = NULL;
    pc_kube_client_free(client);
    client = NULL;
    fakeapi_stop(&fk);
    fakeapi_stop(&proxy);
    free(big);
    big = NULL;
    unsetenv("http_proxy");
    unsetenv("ALL_PROXY");
}

/* A pod answer of about `size` bytes: resourceVersion first, as kube-apiserver writes it,
 * then one huge annotation. */
static const char *big_pod(size_t size)
{
    big = malloc(size + 256);
    int n = snprintf(big, 256,
                     "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"namespace\":\"g\","
                     "\"uid\":\"u\",\"resourceVersion\":\"77\",\"annotations\":{\"big\":\"");
    memset(big + n, 'x', size);
    snprintf(big + n + size, 64, "\"}}}");
    return big;
}

typedef struct outcome {
    _Atomic int calls;
    pc_cas_outcome oc;
    char rv[PC_RV_MAX];
    char msg[512];
} outcome;

static void on_done(void *token, pc_cas_outcome oc, const char *new_rv, const char *message,
                    int64_t retry_after_ns)
{
    (void)retry_after_ns;
    outcome *o = token;
    o->oc = oc;
    snprintf(o->rv, sizeof(o->rv), "%s", new_rv ? new_rv : "");
    snprintf(o->msg, sizeof(o->msg), "%s", message ? message : "");
    /* release: the test thread reads the fields above after seeing calls */
    atomic_fetch_add_explicit(&o->calls, 1, memory_order_release);
}

static outcome *cas_once(const fake_resp *answer)
{
    static outcome o;
    memset(&o, 0, sizeof(o));
    cr_assert_eq(fakeapi_start(&fk, answer, 1), 0);
    char err[256];
    pc_kube_options ko = {.server = fk.url};
    cr_assert_eq(pc_kube_client_new(&ko, &client, err, sizeof(err)), 0, "%s", err);
    pc_kube_backend_options bo = {.max_inflight = 4};
    cr_assert_eq(pc_kube_backend_new(client, &bo, &backend, err, sizeof(err)), 0, "%s", err);
    pc_claim_opts none = {0};
    pc_cas_request req = {.pod = {"g", "a", NULL, "76"},
                          .opts = &none,
                          .target_phase = "Running",
                          .claim_id = "c-1"};
    pc_backend *b = pc_kube_backend_iface(backend);
    cr_assert_eq(b->cas_start(b, &req, on_done, &o), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load_explicit(&o.calls, memory_order_acquire) == 1, 10000),
              "no completion");
    return &o;
}

Test(kube_cas_big, a_2xx_over_the_response_limit_is_a_win, .fini = teardown, .timeout = 30)
{
    /* The PATCH applied: reporting it RETRYABLE would orphan the pod (claimed on the server,
     * the claim moving on to another pod). Read what we need, drop the rest. */
    fake_resp a = {.body = big_pod((size_t)3 << 19)}; /* 1.5 MiB, the limit is 1 MiB */
    outcome *o = cas_once(&a);
    cr_assert_eq(o->oc, PC_CAS_WON, "got %s: %s", pc_cas_outcome_name(o->oc), o->msg);
    cr_assert_str_eq(o->rv, "77");
}

Test(kube_cas_big, a_409_over_the_response_limit_is_still_a_conflict, .fini = teardown,
     .timeout = 30)
{
    fake_resp a = {.status = 409, .body = big_pod((size_t)3 << 19)};
    outcome *o = cas_once(&a);
    cr_assert_eq(o->oc, PC_CAS_CONFLICT, "got %s: %s", pc_cas_outcome_name(o->oc), o->msg);
    cr_assert(strstr(o->msg, "409"), "message: %s", o->msg);
}

Test(kube_cas_big, gives_back_a_response_buffer_after_a_spike, .fini = teardown, .timeout = 30)
{
    /* Every slot's buffer may grow to max_body (1 MiB x 1,024 slots by default); kept at its
     * high-water mark, one burst of big answers would pin that memory for good. */
    fake_resp a = {.body = big_pod((size_t)600 << 10)};
    outcome *o = cas_once(&a);
    cr_assert_eq(o->oc, PC_CAS_WON, "got %s: %s", pc_cas_outcome_name(o->oc), o->msg);
    pc_kube_backend_stats s;
    pc_kube_backend_stats_read(backend, &s);
    cr_assert_leq(s.buffer_bytes, (uint64_t)64 << 10, "%llu bytes kept",
                  (unsigned long long)s.buffer_bytes);
}

Test(kube_cas_big, keeps_a_small_response_buffer, .fini = teardown, .timeout = 30)
{
    fake_resp a = {.body = big_pod(2000)};
    outcome *o = cas_once(&a);
    cr_assert_eq(o->oc, PC_CAS_WON, "got %s: %s", pc_cas_outcome_name(o->oc), o->msg);
    pc_kube_backend_stats s;
    pc_kube_backend_stats_read(backend, &s);
    cr_assert_gt(s.buffer_bytes, 0u, "a small buffer is kept for reuse");
}

static const fake_resp ok = {.body = "{\"kind\":\"APIVersions\",\"versions\":[\"v1\"]}"};

static long get_api(const char *proxy_url)
{
    char err[256];
    pc_kube_options ko = {.server = fk.url, .proxy_url = proxy_url};
    cr_assert_eq(pc_kube_client_new(&ko, &client, err, sizeof(err)), 0, "%s", err);
    pc_kube_conn *k;
    cr_assert_eq(pc_kube_conn_new(client, &k), 0);
    pc_kube_response r;
    int rc = pc_kube_conn_request(k, "GET", "/api", NULL, NULL, 0, &r);
    cr_assert_eq(rc, 0, "rc %d: %s", rc, r.error);
    long st = r.status;
    pc_kube_response_fini(&r);
    pc_kube_conn_free(k);
    return st;
}

Test(kube_client, ignores_proxy_variables_of_the_environment, .fini = teardown, .timeout = 30)
{
    /* http_proxy meant for other tools would get the bearer token, in clear text for an
     * http:// server. */
    cr_assert_eq(fakeapi_start(&fk, &ok, 1), 0);
    cr_assert_eq(fakeapi_start(&proxy, &ok, 1), 0);
    setenv("http_proxy", proxy.url, 1);
    setenv("ALL_PROXY", proxy.url, 1);
    cr_assert_eq(get_api(NULL), 200);
    cr_assert_eq(fakeapi_requests(&fk), 1u);
    cr_assert_eq(fakeapi_requests(&proxy), 0u, "the request went through the proxy");
}

Test(kube_client, uses_a_configured_proxy, .fini = teardown, .timeout = 30)
{
    cr_assert_eq(fakeapi_start(&fk, &ok, 1), 0);
    cr_assert_eq(fakeapi_start(&proxy, &ok, 1), 0);
    cr_assert_eq(get_api(proxy.url), 200);
    cr_assert_eq(fakeapi_requests(&proxy), 1u);
    char p[512];
    fakeapi_path(&proxy, 0, p, sizeof(p));
    char want[128];
    snprintf(want, sizeof(want), "%s/api", fk.url);
    cr_assert_str_eq(p, want, "a proxy request names the whole URL");
}

Test(kube_client, never_echoes_credentials_of_the_server_url, .timeout = 30)
{
    char err[512] = "";
    pc_kube_options o = {.server = "http://alice:s3cr3t-pw@127.0.0.1:9/"};
    pc_kube_client *c;
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(pc_kube_client_server(c), "http://***@127.0.0.1:9");
    int rc = pc_kube_client_check(c, err, sizeof(err));
    cr_assert_neq(rc, 0);
    cr_assert(strstr(err, "127.0.0.1:9"), "message names the server: %s", err);
    cr_assert_null(strstr(err, "s3cr3t"), "password in the message: %s", err);
    cr_assert_null(strstr(err, "alice"), "user in the message: %s", err);
    pc_kube_client_free(c);
    o.server = "ftp://bob:hunter2@example.com";
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), -EINVAL);
    cr_assert_null(strstr(err, "hunter2"), "password in the message: %s", err);
}

Test(kube_client, refuses_a_server_url_that_would_cut_the_patch_url, .timeout = 30)
{
    /* The PATCH URL is built into a fixed buffer per slot: a longer server would cut it and
     * PATCH something else. */
    char server[700];
    int n = snprintf(server, sizeof(server), "https://");
    memset(server + n, 'a', 600);
    snprintf(server + n + 600, 16, ".example:6443");
    pc_kube_options o = {.server = server};
    pc_kube_client *c = NULL;
    char err[256];
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), -EINVAL, "accepted");
    cr_assert(strstr(err, "longer than 512"), "message: %s", err);
    cr_assert_null(c);
}
