/* kapi-sim end to end: the real binary on an ephemeral port, driven by kubectl v1.32 and curl.
 * Every test starts its own server in .init and stops it in .fini, pass or fail; the child also
 * gets SIGTERM if the test process dies (PR_SET_PDEATHSIG). */
#include "ksim_test.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ksim K;

static int count_running(const char *pool)
{
    char path[200];
    snprintf(path, sizeof path,
             "/api/v1/namespaces/default/pods?labelSelector=podclaim.io/pool%%3D%s", pool);
    json_t *l = ksim_get_json(&K, path);
    size_t i;
    json_t *p;
    int n = 0;
    json_array_foreach(json_object_get(l, "items"), i, p)
    {
        const char *ph = json_string_value(json_object_get(json_object_get(p, "status"), "phase"));
        n += ph && strcmp(ph, "Running") == 0;
    }
    json_decref(l);
    return n;
}

/* kapi-sim plays the kubelet only (issue 13): the test plays the pool controller and makes the
 * three Idle pods of pool web itself; the kubelet runs them. */
static void start_plain(void)
{
    cr_assert_eq(ksim_start(&K, "--pool default/web=3 --warmup-ms 10"), 0,
                 "kapi-sim did not start");
    for (int i = 0; i < 3; i++) {
        char body[400], *resp = NULL;
        snprintf(body, sizeof body,
                 "{\"metadata\":{\"name\":\"web-%d\",\"labels\":{\"podclaim.io/pool\":\"web\","
                 "\"podclaim.io/phase\":\"Idle\"}},\"spec\":{\"containers\":[{\"name\":"
                 "\"sandbox\",\"image\":\"registry.local/podclaim/sandbox:latest\"}]}}",
                 i);
        int code = ksim_http(&K, "POST", "/api/v1/namespaces/default/pods", "application/json",
                             body, &resp);
        cr_assert_eq(code, 201, "seed pod %d: %d %s", i, code, resp);
        free(resp);
    }
    cr_assert(KSIM_WAIT_UNTIL(count_running("web") == 3, 10000), "the kubelet ran the pods");
}

static char tls_dir[64];

/* HTTPS with a self-signed certificate for 127.0.0.1 (kubectl sends bearer tokens only over
 * TLS); plain HTTP when openssl is not installed, and then kubectl is not tried. */
static void start_token(void)
{
    snprintf(tls_dir, sizeof tls_dir, "/tmp/ksim-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(tls_dir));
    int rc =
            ksim_sh(NULL,
                    "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem "
                    "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null "
                    "2>&1",
                    tls_dir, tls_dir);
    char args[300];
    if (rc == 0)
        snprintf(args, sizeof args, "--token s3cret --tls-cert %s/cert.pem --tls-key %s/key.pem",
                 tls_dir, tls_dir);
    else
        snprintf(args, sizeof args, "--token s3cret");
    cr_assert_eq(ksim_start(&K, args), 0, "kapi-sim did not start");
}

static void stop_token(void)
{
    ksim_stop(&K);
    ksim_sh(NULL, "rm -rf %s", tls_dir);
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

TestSuite(e2e, .init = start_plain, .fini = stop, .timeout = 40);

static void need_kubectl(void)
{
    if (!ksim_kubectl_available())
        cr_skip_test("kubectl is not installed");
}

static void create_pod(const char *name)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\",\"labels\":{"
             "\"app\":\"t\"}},\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"img:1\","
             "\"args\":[\"x\"]},{\"name\":\"side\",\"image\":\"side:1\"}]}}",
             name);
    char *resp = NULL;
    int code = ksim_http(&K, "POST", "/api/v1/namespaces/default/pods", "application/json", body,
                         &resp);
    cr_assert_eq(code, 201, "create %s: %d %s", name, code, resp);
    free(resp);
}

static char *kubectl(int *rc, const char *fmt, const char *arg)
{
    char sub[2048], *out = NULL;
    snprintf(sub, sizeof sub, fmt, arg);
    *rc = ksim_sh(&out, "%s %s 2>&1", K.kubectl, sub);
    return out;
}

Test(e2e, help_documents_every_flag_and_sigterm_exits_cleanly)
{
    char *out = NULL;
    int rc = ksim_sh(&out, "%s --help", KAPI_SIM_BIN);
    cr_expect_eq(rc, 0);
    const char *flags[] = {"--listen",
                           "--port-file",
                           "--token",
                           "--tls-cert",
                           "--pool",
                           "--objects",
                           "--warmup-ms",
                           "--hold-ms",
                           "--latency",
                           "--conflict-rate",
                           "--throttle-rate",
                           "--error-rate",
                           "--watch-drop-events",
                           "--watch-delay-ms",
                           "--conn-timeout-s",
                           "--no-pool-controller"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_expect(strstr(out, flags[i]), "--help lacks %s", flags[i]);
    free(out);
    cr_expect_eq(ksim_stop(&K), 0, "exit status after SIGTERM");
}

Test(e2e, kubectl_get_pods_json_lists_the_warm_pool)
{
    need_kubectl();
    cr_assert(KSIM_WAIT_UNTIL(ksim_count_phase(&K, "default", "web", "Idle") == 3, 10000));
    int rc;
    char *out = kubectl(&rc, "get pods -o json%s", "");
    cr_assert_eq(rc, 0, "kubectl: %s", out);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", out);
    json_t *items = json_object_get(j, "items");
    cr_expect_eq(json_array_size(items), 3);
    size_t i;
    json_t *p;
    json_array_foreach(items, i, p)
    {
        json_t *labels = json_object_get(json_object_get(p, "metadata"), "labels");
        cr_expect_str_eq(json_string_value(json_object_get(labels, "podclaim.io/pool")), "web");
        cr_expect_str_eq(json_string_value(json_object_get(labels, "podclaim.io/phase")), "Idle");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(p, "status"), "phase")),
                         "Running");
    }
    json_decref(j);
    free(out);
    out = kubectl(&rc, "get pods%s", "");
    cr_expect(rc == 0 && strstr(out, "READY") && strstr(out, "STATUS") && strstr(out, "1/1") &&
                      strstr(out, "Running"),
              "server-side table: %s", out);
    free(out);
}

static int count_in_file(const char *path, const char *needle)
{
    char *out = NULL;
    ksim_sh(&out, "cat %s 2>/dev/null", path);
    int n = 0;
    for (const char *p = out; p && (p = strstr(p, needle)); p++)
        n++;
    free(out);
    return n;
}

Test(e2e, kubectl_get_pods_watch_sees_added_and_modified)
{
    need_kubectl();
    create_pod("first");
    char file[200], *pid = NULL;
    snprintf(file, sizeof file, "%s/watch.out", K.dir);
    ksim_sh(&pid, "(timeout 20 %s get pods -w -o name > %s 2>&1 & echo $!)", K.kubectl, file);
    int wpid = atoi(pid);
    free(pid);
    /* The watch has started once it printed the initial list. */
    cr_assert(KSIM_WAIT_UNTIL(count_in_file(file, "pod/first") >= 1, 10000), "initial list");
    create_pod("second");
    cr_expect(KSIM_WAIT_UNTIL(count_in_file(file, "pod/second") >= 1, 10000), "ADDED seen");
    char *resp = NULL;
    int code = ksim_http(&K, "PATCH", "/api/v1/namespaces/default/pods/second",
                         "application/merge-patch+json",
                         "{\"metadata\":{\"labels\":{\"v\":\"2\"}}}", &resp);
    cr_expect_eq(code, 200, "%s", resp);
    free(resp);
    cr_expect(KSIM_WAIT_UNTIL(count_in_file(file, "pod/second") >= 2, 10000), "MODIFIED seen");
    if (wpid > 0)
        kill(wpid, SIGTERM);
}

Test(e2e, kubectl_patch_in_merge_json_and_strategic_types)
{
    need_kubectl();
    create_pod("p");
    int rc;
    char *out = kubectl(
            &rc, "patch pod p --type merge -p '{\"metadata\":{\"labels\":{\"m\":\"1\"}}}'%s", "");
    cr_expect_eq(rc, 0, "merge: %s", out);
    free(out);
    out = kubectl(
            &rc,
            "patch pod p --type json -p '[{\"op\":\"test\",\"path\":\"/metadata/labels/m\","
            "\"value\":\"1\"},{\"op\":\"add\",\"path\":\"/metadata/labels/j\",\"value\":\"2\"}]'%s",
            "");
    cr_expect_eq(rc, 0, "json: %s", out);
    free(out);
    out = kubectl(&rc,
                  "patch pod p --type strategic -p '{\"spec\":{\"containers\":[{\"name\":\"main\","
                  "\"image\":\"img:2\"}]}}'%s",
                  "");
    cr_expect_eq(rc, 0, "strategic: %s", out);
    free(out);
    out = kubectl(&rc, "get pod p -o json%s", "");
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    json_t *labels = json_object_get(json_object_get(j, "metadata"), "labels");
    cr_expect_str_eq(json_string_value(json_object_get(labels, "m")), "1");
    cr_expect_str_eq(json_string_value(json_object_get(labels, "j")), "2");
    json_t *cs = json_object_get(json_object_get(j, "spec"), "containers");
    cr_expect_eq(json_array_size(cs), 2, "strategic merge keeps the other container");
    json_t *main_c = json_array_get(cs, 0);
    cr_expect_str_eq(json_string_value(json_object_get(main_c, "image")), "img:2");
    cr_expect_not_null(json_object_get(main_c, "args"), "strategic merge keeps other fields");
    json_decref(j);
    free(out);
    /* A failing JSON-patch test changes nothing and kubectl reports it. */
    out = kubectl(&rc,
                  "patch pod p --type json -p '[{\"op\":\"test\",\"path\":\"/metadata/labels/m\","
                  "\"value\":\"nope\"}]'%s",
                  "");
    cr_expect_neq(rc, 0, "a failed test op must fail: %s", out);
    free(out);
    out = kubectl(&rc, "patch pod p -p '{\"spec\":{\"nodeName\":\"elsewhere\"}}'%s", "");
    cr_expect_neq(rc, 0);
    cr_expect(strstr(out, "is invalid") && strstr(out, "Forbidden"), "immutable spec: %s", out);
    free(out);
}

Test(e2e, kubectl_apply_of_a_sandboxpool_stores_it_and_kapi_sim_makes_no_pods)
{
    need_kubectl();
    char file[200];
    snprintf(file, sizeof file, "%s/pool.yaml", K.dir);
    FILE *fp = fopen(file, "w");
    fputs("apiVersion: podclaim.io/v1alpha1\nkind: SandboxPool\nmetadata:\n  name: applied\n"
          "  namespace: default\nspec:\n  team: t\n  replicas: 2\n",
          fp);
    fclose(fp);
    char crd[200];
    snprintf(crd, sizeof crd, "%s/crd.yaml", K.dir);
    fp = fopen(crd, "w");
    fputs("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n"
          "  name: sandboxpools.podclaim.io\nspec:\n  group: podclaim.io\n  names:\n"
          "    kind: SandboxPool\n    plural: sandboxpools\n  scope: Namespaced\n  versions:\n"
          "  - name: v1alpha1\n    served: true\n    storage: true\n    subresources:\n"
          "      status: {}\n",
          fp);
    fclose(fp);
    int rc;
    char *out = kubectl(&rc, "apply -f %s", crd);
    cr_expect_eq(rc, 0, "apply of the CRD: %s", out);
    free(out);
    out = kubectl(&rc, "apply -f %s", file);
    cr_assert_eq(rc, 0, "apply: %s", out);
    cr_expect(strstr(out, "created"), "%s", out);
    free(out);
    out = kubectl(&rc, "get sandboxpool applied -o jsonpath={.spec.replicas}%s", "");
    cr_expect(rc == 0 && strcmp(out, "2") == 0, "stored: %s", out);
    free(out);
    out = kubectl(&rc, "apply -f %s", file);
    cr_expect_eq(rc, 0, "second apply: %s", out);
    free(out);
    /* no pool controller in kapi-sim: podclaimd makes the pods (docs/cluster.md) */
    cr_expect_eq(ksim_count_phase(&K, "default", "applied", "Starting"), 0);
    cr_expect_eq(ksim_count_phase(&K, "default", "applied", "Idle"), 0);
    out = kubectl(&rc, "delete sandboxpool applied%s", "");
    cr_expect_eq(rc, 0, "delete: %s", out);
    free(out);
}

Test(e2e, kubectl_delete_pod_removes_it)
{
    need_kubectl();
    create_pod("doomed");
    int rc;
    char *out = kubectl(&rc, "delete pod doomed --wait=true%s", "");
    cr_expect_eq(rc, 0, "%s", out);
    free(out);
    cr_expect_eq(ksim_http(&K, "GET", "/api/v1/namespaces/default/pods/doomed", NULL, NULL, NULL),
                 404);
}

/* The kubelet's status write (10 ms after creation) changes the resourceVersion: read it after
 * that, or the first PATCH meets a 409 of its own (a flake under ASan and load). */
static bool running(const char *path)
{
    json_t *p = ksim_get_json(&K, path);
    const char *ph = json_string_value(json_object_get(json_object_get(p, "status"), "phase"));
    bool r = ph && strcmp(ph, "Running") == 0;
    json_decref(p);
    return r;
}

Test(e2e, curl_patch_with_a_stale_resource_version_is_409_conflict)
{
    create_pod("cas");
    cr_assert(KSIM_WAIT_UNTIL(running("/api/v1/namespaces/default/pods/cas"), 10000),
              "the kubelet never started the pod");
    json_t *p = ksim_get_json(&K, "/api/v1/namespaces/default/pods/cas");
    char patch[256];
    snprintf(patch, sizeof patch,
             "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"a\":\"b\"}}}",
             json_string_value(json_object_get(json_object_get(p, "metadata"), "resourceVersion")));
    json_decref(p);
    char *resp = NULL;
    cr_expect_eq(ksim_http(&K, "PATCH", "/api/v1/namespaces/default/pods/cas",
                           "application/strategic-merge-patch+json", patch, NULL),
                 200);
    int code = ksim_http(&K, "PATCH", "/api/v1/namespaces/default/pods/cas",
                         "application/strategic-merge-patch+json", patch, &resp);
    cr_expect_eq(code, 409);
    json_t *st = json_loads(resp, 0, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(st, "kind")), "Status");
    cr_expect_str_eq(json_string_value(json_object_get(st, "reason")), "Conflict");
    cr_expect_eq(json_integer_value(json_object_get(st, "code")), 409);
    json_decref(st);
    free(resp);
}

Test(e2e, curl_watch_from_a_compacted_version_gets_410_expired)
{
    create_pod("w1");
    json_t *p = ksim_get_json(&K, "/api/v1/namespaces/default/pods/w1");
    char rv[32];
    snprintf(rv, sizeof rv, "%s",
             json_string_value(json_object_get(json_object_get(p, "metadata"), "resourceVersion")));
    json_decref(p);
    create_pod("w2");
    cr_expect_eq(ksim_http(&K, "POST", "/sim/compact", NULL, NULL, NULL), 200);
    char *out = NULL;
    ksim_sh(&out, "curl -sN --max-time 10 '%s/api/v1/pods?watch=1&resourceVersion=%s'", K.url, rv);
    cr_expect(strstr(out, "\"type\":\"ERROR\"") && strstr(out, "\"code\":410") &&
                      strstr(out, "Expired"),
              "got: %s", out);
    free(out);
}

Test(e2e, curl_watch_streams_one_event_per_line_with_bookmarks_and_timeout)
{
    json_t *l = ksim_get_json(&K, "/api/v1/namespaces/default/pods");
    char rv[32];
    snprintf(rv, sizeof rv, "%s",
             json_string_value(json_object_get(json_object_get(l, "metadata"), "resourceVersion")));
    json_decref(l);
    create_pod("s1");
    char *out = NULL;
    int64_t t0 = ksim_now_ms();
    ksim_sh(&out,
            "curl -sN --max-time 15 "
            "'%s/api/v1/namespaces/default/pods?watch=true&resourceVersion=%s"
            "&allowWatchBookmarks=true&timeoutSeconds=2'",
            K.url, rv);
    int64_t took = ksim_now_ms() - t0;
    cr_expect(took >= 1500 && took < 10000, "timeoutSeconds=2 ended after %lld ms",
              (long long)took);
    int lines = 0;
    bool added = false, bookmark = false;
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_t *e = json_loads(line, 0, NULL);
        cr_expect_not_null(e, "each line is one JSON event: %s", line);
        const char *t = json_string_value(json_object_get(e, "type"));
        added |= t && strcmp(t, "ADDED") == 0;
        bookmark |= t && strcmp(t, "BOOKMARK") == 0;
        json_decref(e);
        lines++;
    }
    cr_expect(added && bookmark, "lines=%d added=%d bookmark=%d", lines, added, bookmark);
    free(out);
}

Test(e2e, curl_malformed_json_is_400_saying_where)
{
    char *resp = NULL;
    int code = ksim_http(&K, "POST", "/api/v1/namespaces/default/pods", "application/json",
                         "{\"metadata\": {\"name\": \"x\",, }", &resp);
    cr_expect_eq(code, 400);
    json_t *st = json_loads(resp, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));
    cr_expect(msg && strstr(msg, "line 1") && strstr(msg, "column"), "message: %s", resp);
    cr_expect_str_eq(json_string_value(json_object_get(st, "reason")), "BadRequest");
    json_decref(st);
    free(resp);
}

Test(e2e, curl_unknown_patch_type_is_415_and_huge_body_is_413)
{
    create_pod("big");
    cr_expect_eq(
            ksim_http(&K, "PATCH", "/api/v1/namespaces/default/pods/big", "text/plain", "{}", NULL),
            415);
    char *code = NULL;
    ksim_sh(&code,
            "head -c 4000000 /dev/zero | tr '\\0' ' ' | curl -s -o /dev/null -w '%%{http_code}' -X "
            "PATCH -H 'Content-Type: application/merge-patch+json' --data-binary @- "
            "'%s/api/v1/namespaces/default/pods/big'",
            K.url);
    cr_expect_str_eq(code, "413");
    free(code);
}

Test(e2e, injected_throttling_is_429_with_retry_after_and_counted)
{
    cr_assert_eq(ksim_http(&K, "PUT", "/sim/faults", "application/json",
                           "{\"throttleRate\":1,\"retryAfterSeconds\":7}", NULL),
                 200);
    char *out = NULL;
    ksim_sh(&out, "curl -si '%s/api/v1/namespaces/default/pods'", K.url);
    cr_expect(strstr(out, " 429") && strstr(out, "Retry-After: 7"), "got: %s", out);
    free(out);
    cr_assert_eq(ksim_http(&K, "PUT", "/sim/faults", "application/json", "{\"reset\":true}", NULL),
                 200);
    cr_expect_eq(ksim_http(&K, "GET", "/api/v1/namespaces/default/pods", NULL, NULL, NULL), 200);
    json_t *st = ksim_get_json(&K, "/sim/stats");
    json_t *list = json_object_get(json_object_get(st, "requests"), "list");
    cr_expect_eq(json_integer_value(json_object_get(list, "429")), 1);
    cr_expect_geq(json_integer_value(json_object_get(list, "200")), 1);
    json_decref(st);
}

Test(e2e, sim_claims_records_each_idle_period_won_once)
{
    cr_assert(KSIM_WAIT_UNTIL(ksim_count_phase(&K, "default", "web", "Idle") == 3, 10000));
    json_t *l = ksim_get_json(
            &K, "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%2Fphase%3DIdle");
    json_t *pod = json_array_get(json_object_get(l, "items"), 0);
    const char *name = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
    const char *rv =
            json_string_value(json_object_get(json_object_get(pod, "metadata"), "resourceVersion"));
    char path[256], patch[512];
    snprintf(path, sizeof path, "/api/v1/namespaces/default/pods/%s", name);
    int won = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(patch, sizeof patch,
                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
                 "\"Running\"},\"annotations\":{\"podclaim.io/claim-id\":\"claim-%d\"}}}",
                 rv, i);
        won += ksim_http(&K, "PATCH", path, "application/strategic-merge-patch+json", patch,
                         NULL) == 200;
    }
    cr_expect_eq(won, 1);
    json_t *c = ksim_get_json(&K, "/sim/claims");
    cr_expect_eq(json_integer_value(json_object_get(c, "count")), 1);
    json_t *e = json_array_get(json_object_get(c, "claims"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(e, "pod")), name);
    cr_expect_str_eq(json_string_value(json_object_get(e, "idleResourceVersion")), rv);
    cr_expect_str_eq(json_string_value(json_object_get(e, "claimId")), "claim-0");
    cr_expect_str_eq(json_string_value(json_object_get(e, "phase")), "Running");
    json_decref(c);
    json_decref(l);
}

TestSuite(e2e_auth, .init = start_token, .fini = stop_token, .timeout = 40);

Test(e2e_auth, wrong_or_missing_token_is_401_and_the_right_one_works)
{
    char *out = NULL;
    char ca[300] = "";
    if (K.ca[0])
        snprintf(ca, sizeof ca, "--cacert %s", K.ca);
    ksim_sh(&out, "curl -s %s -w ' %%{http_code}' -H 'Authorization: Bearer nope' '%s/api/v1/pods'",
            ca, K.url);
    cr_expect(strstr(out, "\"reason\":\"Unauthorized\"") && strstr(out, " 401"), "%s", out);
    free(out);
    ksim_sh(&out, "curl -s %s -o /dev/null -w '%%{http_code}' '%s/api/v1/pods'", ca, K.url);
    cr_expect_str_eq(out, "401");
    free(out);
    ksim_sh(&out,
            "curl -s %s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer s3cret' "
            "'%s/api/v1/pods'",
            ca, K.url);
    cr_expect_str_eq(out, "200");
    free(out);
    if (ksim_kubectl_available() && K.ca[0]) {
        int rc = ksim_sh(&out, "%s get pods -o json 2>&1", K.kubectl);
        cr_expect_eq(rc, 0, "kubectl with the token: %s", out);
        free(out);
    }
}

TestSuite(e2e_objects, .timeout = 40);

Test(e2e_objects, objects_file_in_yaml_seeds_namespaces_pods_status_and_pools)
{
    char dir[64] = "/tmp/ksim-obj-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char file[128], args[256];
    snprintf(file, sizeof file, "%s/objects.yaml", dir);
    FILE *fp = fopen(file, "w");
    fputs("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: seeded\n---\n"
          "apiVersion: v1\nkind: Pod\nmetadata:\n  name: given\n  namespace: seeded\n"
          "  labels:\n    app: 'x'\n    n: \"1\"\nspec:\n  containers:\n  - name: main\n"
          "    image: img:1\nstatus:\n  phase: Running\n---\n"
          "apiVersion: podclaim.io/v1alpha1\nkind: SandboxPool\nmetadata:\n  name: sp\n"
          "  namespace: seeded\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels:\n"
          "        team: blue\n    spec:\n      containers:\n      - name: sandbox\n"
          "        image: custom:2\n",
          fp);
    fclose(fp);
    snprintf(args, sizeof args, "--objects %s --warmup-ms 5", file);
    int rc = ksim_start(&K, args);
    if (rc != 0)
        ksim_sh(NULL, "rm -rf %s", dir);
    cr_assert_eq(rc, 0, "kapi-sim did not start with %s", file);
    json_t *p = ksim_get_json(&K, "/api/v1/namespaces/seeded/pods/given");
    cr_expect_not_null(p);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(p, "status"), "phase")),
                     "Running");
    cr_expect_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(p, "metadata"), "labels"), "n")),
                     "1", "a quoted YAML scalar stays a string");
    json_decref(p);
    json_t *sp = ksim_get_json(&K, "/apis/podclaim.io/v1alpha1/namespaces/seeded/sandboxpools/sp");
    json_t *c0 = json_array_get(
            json_object_get(
                    json_object_get(json_object_get(json_object_get(sp, "spec"), "template"),
                                    "spec"),
                    "containers"),
            0);
    cr_expect_str_eq(json_string_value(json_object_get(c0, "image")), "custom:2",
                     "the pool is stored with its template");
    json_decref(sp);
    /* and no pods for it: podclaimd's pool controller makes them (issue 13) */
    cr_expect_eq(ksim_count_phase(&K, "seeded", "sp", "Idle"), 0);
    ksim_stop(&K);
    ksim_sh(NULL, "rm -rf %s", dir);
}

Test(e2e_objects, a_bad_objects_file_fails_start_up_with_a_message)
{
    char *out = NULL;
    int rc = ksim_sh(
            &out,
            "printf 'kind: Pod\\napiVersion: v1\\nmetadata: [1,\\n' > /tmp/ksim-bad-%d.yaml; "
            "%s --objects /tmp/ksim-bad-%d.yaml 2>&1; rc=$?; rm -f /tmp/ksim-bad-%d.yaml; exit $rc",
            (int)getpid(), KAPI_SIM_BIN, (int)getpid(), (int)getpid());
    cr_expect_eq(rc, 1, "exit status");
    cr_expect(out && strstr(out, "--objects") && strstr(out, "line"), "message: %s", out);
    free(out);
}

static int64_t compacted(void)
{
    json_t *st = ksim_get_json(&K, "/sim/stats");
    int64_t c = json_integer_value(json_object_get(json_object_get(st, "history"), "compacted"));
    json_decref(st);
    return c;
}

Test(e2e_objects, compact_every_ms_expires_old_versions_periodically)
{
    cr_assert_eq(ksim_start(&K, "--compact-every-ms 50"), 0);
    create_pod("before");
    json_t *p = ksim_get_json(&K, "/api/v1/namespaces/default/pods/before");
    int64_t rv = atoll(
            json_string_value(json_object_get(json_object_get(p, "metadata"), "resourceVersion")));
    json_decref(p);
    cr_assert(KSIM_WAIT_UNTIL(compacted() >= rv, 5000), "periodic compaction");
    char *out = NULL;
    ksim_sh(&out, "curl -sN --max-time 10 '%s/api/v1/pods?watch=1&resourceVersion=%lld'", K.url,
            (long long)(rv - 1));
    cr_expect(strstr(out, "\"code\":410"), "%s", out);
    free(out);
    ksim_stop(&K);
}
