/* Kubernetes client pieces that need no server: kubeconfig, Status decoding, the CAS patch
 * body, pod parsing and the pod cache. */
#include <podclaim/kube.h>

#include "podcache.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static void mk_tmp(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pc-kube-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* A kubeconfig as kubectl writes it: two clusters, two users, two contexts. */
static const char *kubeconfig_text = "apiVersion: v1\n"
                                     "kind: Config\n"
                                     "preferences: {}\n"
                                     "current-context: dev\n"
                                     "clusters:\n"
                                     "- cluster:\n"
                                     "    certificate-authority-data: "
                                     "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
                                     "    server: https://127.0.0.1:6443\n"
                                     "  name: devcluster\n"
                                     "- name: plain\n"
                                     "  cluster:\n"
                                     "    server: http://127.0.0.1:8080/\n"
                                     "    insecure-skip-tls-verify: true\n"
                                     "contexts:\n"
                                     "- context:\n"
                                     "    cluster: devcluster\n"
                                     "    user: alice\n"
                                     "    namespace: sandboxes\n"
                                     "  name: dev\n"
                                     "- name: ci\n"
                                     "  context:\n"
                                     "    cluster: plain\n"
                                     "    user: bot\n"
                                     "- name: broken\n"
                                     "  context:\n"
                                     "    cluster: nowhere\n"
                                     "    user: bot\n"
                                     "- name: execuser\n"
                                     "  context:\n"
                                     "    cluster: plain\n"
                                     "    user: gke\n"
                                     "users:\n"
                                     "- name: alice\n"
                                     "  user:\n"
                                     "    token: s3cr3t-alice-token\n"
                                     "- name: bot\n"
                                     "  user:\n"
                                     "    tokenFile: bot.token\n"
                                     "- name: gke\n"
                                     "  user:\n"
                                     "    exec:\n"
                                     "      command: gke-gcloud-auth-plugin\n";

Test(kubeconfig, parses_the_current_context)
{
    mk_tmp();
    write_file("config", kubeconfig_text);
    write_file("bot.token", "bot-token\n");
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, 0, "expected 0, got %d: %s", rc, err);
    cr_assert_str_eq(pc_kube_client_server(c), "https://127.0.0.1:6443");
    cr_assert_str_eq(pc_kube_client_namespace(c), "sandboxes");
    pc_kube_client_free(c);
    rm_tmp();
}

Test(kubeconfig, parses_a_named_context_with_a_relative_token_file)
{
    mk_tmp();
    write_file("config", kubeconfig_text);
    write_file("bot.token", "bot-token\n");
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, "ci", NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, 0, "expected 0, got %d: %s", rc, err);
    cr_assert_str_eq(pc_kube_client_server(c), "http://127.0.0.1:8080", "trailing slash kept: %s",
                     pc_kube_client_server(c));
    cr_assert_str_eq(pc_kube_client_namespace(c), "default");
    pc_kube_client_free(c);
    rm_tmp();
}

Test(kubeconfig, names_a_missing_context_cluster_or_token_file)
{
    mk_tmp();
    write_file("config", kubeconfig_text);
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, "prod", NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -ENOENT, "got %d", rc);
    cr_assert(strstr(err, "context \"prod\" not found"), "message: %s", err);
    rc = pc_kube_client_new_kubeconfig(path, "broken", NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -ENOENT, "got %d", rc);
    cr_assert(strstr(err, "cluster \"nowhere\" not found"), "message: %s", err);
    rc = pc_kube_client_new_kubeconfig(path, "ci", NULL, &c, err, sizeof(err)); /* no bot.token */
    cr_assert_eq(rc, -EINVAL, "got %d", rc);
    cr_assert(strstr(err, "bot.token"), "message: %s", err);
    rc = pc_kube_client_new_kubeconfig(path, "execuser", NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "got %d", rc);
    cr_assert(strstr(err, "exec"), "message: %s", err);
    cr_assert_null(c);
    rm_tmp();
}

Test(kubeconfig, reports_bad_yaml_with_its_line_and_never_the_token)
{
    mk_tmp();
    write_file("config", "current-context: x\nusers:\n- name: a\n  user:\n    token: "
                         "topsecret\n  bad: [unclosed\n");
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "got %d: %s", rc, err);
    cr_assert(strstr(err, "YAML error at line"), "message: %s", err);
    cr_assert_null(strstr(err, "topsecret"), "token leaked: %s", err);
    rc = pc_kube_client_new_kubeconfig("/nonexistent/kubeconfig", NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -ENOENT, "got %d", rc);
    cr_assert(strstr(err, "/nonexistent/kubeconfig"), "message: %s", err);
    rm_tmp();
}

Test(kubeconfig, reads_in_cluster_settings)
{
    mk_tmp();
    write_file("token", "sa-token\n");
    write_file("ca.crt", "-----BEGIN CERTIFICATE-----\n");
    write_file("namespace", "team-a\n");
    setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    pc_kube_client *c = NULL;
    char err[256] = "";
    int rc = pc_kube_client_new_in_cluster(tmpdir, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, 0, "got %d: %s", rc, err);
    cr_assert_str_eq(pc_kube_client_server(c), "https://10.0.0.1:443");
    cr_assert_str_eq(pc_kube_client_namespace(c), "team-a");
    pc_kube_client_free(c);
    unsetenv("KUBERNETES_SERVICE_HOST");
    rc = pc_kube_client_new_in_cluster(tmpdir, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -ENOENT, "got %d", rc);
    rm_tmp();
}

Test(client, refuses_a_server_without_a_scheme)
{
    pc_kube_options o = {.server = "127.0.0.1:6443"};
    pc_kube_client *c = NULL;
    char err[256];
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "scheme"), "message: %s", err);
}

/* ---- Status decoding ---- */

Test(status, decodes_a_conflict_status)
{
    const char *b = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":"
                    "\"Failure\",\"message\":\"Operation cannot be fulfilled on pods \\\"p1\\\": "
                    "the object has been modified\",\"reason\":\"Conflict\",\"code\":409}";
    char m[256];
    long code = pc_kube_status_describe(409, b, strlen(b), m, sizeof(m));
    cr_assert_eq(code, 409);
    cr_assert_str_eq(m, "409 Conflict: Operation cannot be fulfilled on pods \"p1\": the object "
                        "has been modified (reason=Conflict)");
}

Test(status, describes_a_body_that_is_not_a_status)
{
    char m[256];
    const char *b = "<html>bad\ngateway</html>";
    long code = pc_kube_status_describe(502, b, strlen(b), m, sizeof(m));
    cr_assert_eq(code, 502);
    cr_assert_str_eq(m, "HTTP 502 Bad Gateway: <html>bad gateway</html>");
    pc_kube_status_describe(500, NULL, 0, m, sizeof(m));
    cr_assert_str_eq(m, "HTTP 500 Internal Server Error: (empty body)");
}

Test(status, survives_malformed_json_and_truncates)
{
    char m[16];
    const char *b = "{\"kind\":\"Status\",\"message\":";
    pc_kube_status_describe(500, b, strlen(b), m, sizeof(m));
    cr_assert_eq(strlen(m), 15u, "truncated to the buffer: %s", m);
    const char *g = "{\"kind\":\"Status\",\"code\":\"notanumber\",\"message\":7}";
    char m2[128];
    cr_assert_eq(pc_kube_status_describe(422, g, strlen(g), m2, sizeof(m2)), 422);
    cr_assert(strstr(m2, "422"), "message: %s", m2);
}

/* ---- patch body ---- */

static json_t *body_of(const pc_cas_request *r)
{
    char buf[4096], err[128];
    int n = pc_kube_patch_body(r, buf, sizeof(buf), err, sizeof(err));
    cr_assert_gt(n, 0, "patch body: %d %s", n, err);
    json_error_t je;
    json_t *j = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(j, "body is not JSON: %s: %s", je.text, buf);
    return j;
}

Test(patch, carries_precondition_phase_ids_labels_and_images)
{
    pc_kv images[] = {{"main", "registry/x:1"}, {"side\"car", "img\\2"}};
    pc_kv labels[] = {{"team", "a"}};
    pc_kv ann[] = {{"note", "line1\nline2"}};
    pc_claim_opts o = {images, 2, labels, 1, ann, 1, NULL};
    pc_cas_request r = {.pod = {"ns", "p1", NULL, "42"},
                        .opts = &o,
                        .target_phase = "Running",
                        .claim_id = "pool-7",
                        .claimed_at_unix_ns = 1700000000123456789LL};
    json_t *j = body_of(&r);
    json_t *md = json_object_get(j, "metadata");
    cr_assert_str_eq(json_string_value(json_object_get(md, "resourceVersion")), "42");
    json_t *l = json_object_get(md, "labels");
    cr_assert_str_eq(json_string_value(json_object_get(l, "podclaim.io/phase")), "Running");
    cr_assert_str_eq(json_string_value(json_object_get(l, "team")), "a");
    json_t *a = json_object_get(md, "annotations");
    cr_assert_str_eq(json_string_value(json_object_get(a, "podclaim.io/claim-id")), "pool-7");
    cr_assert_str_eq(json_string_value(json_object_get(a, "podclaim.io/claimed-at")),
                     "2023-11-14T22:13:20.123456Z");
    cr_assert_str_eq(json_string_value(json_object_get(a, "note")), "line1\nline2");
    json_t *c = json_object_get(json_object_get(j, "spec"), "containers");
    cr_assert_eq(json_array_size(c), 2u);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(c, 1), "name")), "side\"car");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(c, 1), "image")), "img\\2");
    json_decref(j);
}

Test(patch, omits_spec_without_images)
{
    pc_claim_opts o = {0};
    pc_cas_request r = {
            .pod = {"ns", "p1", NULL, "7"}, .opts = &o, .target_phase = "Busy", .claim_id = "c"};
    json_t *j = body_of(&r);
    cr_assert_null(json_object_get(j, "spec"));
    cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(j, "metadata"), "labels"),
                             "podclaim.io/phase")),
                     "Busy");
    json_decref(j);
}

Test(patch, refuses_reserved_keys_and_small_buffers)
{
    pc_kv labels[] = {{"podclaim.io/pool", "other"}};
    pc_claim_opts o = {.labels = labels, .n_labels = 1};
    pc_cas_request r = {.pod = {"ns", "p1", NULL, "7"}, .opts = &o, .claim_id = "c"};
    char buf[4096], err[128];
    cr_assert_eq(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "podclaim.io/pool"), "message: %s", err);
    pc_kv ann[] = {{"podclaim.io/claim-id", "forged"}};
    pc_claim_opts o2 = {.annotations = ann, .n_annotations = 1};
    r.opts = &o2;
    cr_assert_eq(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    pc_claim_opts o3 = {0};
    r.opts = &o3;
    cr_assert_eq(pc_kube_patch_body(&r, buf, 40, err, sizeof(err)), -EMSGSIZE);
    r.pod.resource_version = "";
    cr_assert_eq(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
}

/* ---- pod parsing and cache ---- */

static const char *pod_json(const char *name, const char *rv, const char *phase, bool ready,
                            bool deleting, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"ns\",\"uid\":\"u-%s\","
             "\"resourceVersion\":\"%s\",%s\"labels\":{\"podclaim.io/pool\":\"p\","
             "\"podclaim.io/phase\":\"%s\"}},\"spec\":{\"containers\":[{\"name\":\"main\"},"
             "{\"name\":\"side\"}]},\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":"
             "\"PodScheduled\",\"status\":\"True\"},{\"type\":\"Ready\",\"status\":\"%s\"}]}}",
             name, name, rv, deleting ? "\"deletionTimestamp\":\"2024-01-01T00:00:00Z\"," : "",
             phase, ready ? "True" : "False");
    return buf;
}

static int scan(const char *text, size_t len, pc__pod *p, char *err, size_t errlen)
{
    pc__js js;
    memset(p, 0, sizeof(*p));
    pc__js_init(&js, text, len);
    int rc = pc__pod_scan(&js, p, err, errlen);
    if (rc == 0 && pc__js_end(&js))
        rc = -EBADMSG;
    return rc;
}

static void parse(const char *text, pc__pod *p)
{
    char err[128];
    int rc = scan(text, strlen(text), p, err, sizeof(err));
    cr_assert_eq(rc, 0, "%d %s", rc, err);
}

Test(podcache, classifies_idle_per_the_design)
{
    char b[1024];
    pc__pod p;
    parse(pod_json("a", "1", "Idle", true, false, b, sizeof(b)), &p);
    cr_assert(pc__pod_is_idle(&p));
    cr_assert_eq(p.n_containers, 2u);
    cr_assert_str_eq(p.containers[1], "side");
    cr_assert_str_eq(pc__pod_label(&p, "podclaim.io/pool"), "p");
    cr_assert_str_eq(p.uid, "u-a");
    pc__pod_clear(&p);
    parse(pod_json("a", "1", "Idle", false, false, b, sizeof(b)), &p);
    cr_assert_not(pc__pod_is_idle(&p), "not ready");
    pc__pod_clear(&p);
    parse(pod_json("a", "1", "Idle", true, true, b, sizeof(b)), &p);
    cr_assert_not(pc__pod_is_idle(&p), "being deleted");
    pc__pod_clear(&p);
    parse(pod_json("a", "1", "Running", true, false, b, sizeof(b)), &p);
    cr_assert_not(pc__pod_is_idle(&p), "claimed");
    pc__pod_clear(&p);
}

Test(podcache, refuses_pods_without_identity)
{
    const char *bad[] = {
            "{}", "{\"metadata\":{\"name\":\"x\"}}",
            "{\"metadata\":{\"name\":\"x\",\"namespace\":\"n\",\"resourceVersion\":7}}", "[1,2]",
            "{\"metadata\":{\"name\":\"\",\"namespace\":\"n\",\"resourceVersion\":\"1\"}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pc__pod p;
        char err[128];
        cr_assert_eq(scan(bad[i], strlen(bad[i]), &p, err, sizeof(err)), -EINVAL, "accepted %s",
                     bad[i]);
        pc__pod_clear(&p);
    }
}

Test(podcache, inserts_finds_grows_and_removes_while_iterating)
{
    pc__podcache c;
    cr_assert_eq(pc__podcache_init(&c), 0);
    for (int i = 0; i < 5000; i++) {
        pc__pod *p = calloc(1, sizeof(*p));
        snprintf(p->namespace_, sizeof(p->namespace_), "ns");
        snprintf(p->name, sizeof(p->name), "pod-%d", i);
        cr_assert_eq(pc__podcache_insert(&c, p), 0);
    }
    cr_assert_eq(c.count, 5000u);
    cr_assert_not_null(pc__podcache_get(&c, "ns", "pod-4999"));
    cr_assert_null(pc__podcache_get(&c, "other", "pod-1"));
    pc__podcache_iter it;
    size_t seen = 0;
    for (pc__pod *p = pc__podcache_first(&c, &it); p; p = pc__podcache_next(&c, &it)) {
        seen++;
        if (atoi(p->name + 4) % 2 == 0) {
            pc__podcache_remove(&c, p);
            free(p);
        }
    }
    cr_assert_eq(seen, 5000u, "iterated %zu", seen);
    cr_assert_eq(c.count, 2500u);
    cr_assert_null(pc__podcache_get(&c, "ns", "pod-10"));
    cr_assert_not_null(pc__podcache_get(&c, "ns", "pod-11"));
    pc__podcache_fini(&c);
}

/* ---- the pull scanner ---- */

Test(jscan, rejects_a_pod_cut_at_every_byte_and_never_reads_past_it)
{
    char b[1024];
    const char *full = pod_json("a", "1", "Idle", true, false, b, sizeof(b));
    size_t n = strlen(full);
    for (size_t cut = 0; cut < n; cut++) {
        /* a heap copy of exactly `cut` bytes: ASan catches any read past the end */
        char *t = malloc(cut ? cut : 1);
        memcpy(t, full, cut);
        pc__pod p;
        char err[128];
        int rc = scan(t, cut, &p, err, sizeof(err));
        cr_assert_eq(rc, -EBADMSG, "cut at %zu accepted (rc %d)", cut, rc);
        pc__pod_clear(&p);
        free(t);
    }
}

Test(jscan, rejects_malformed_json_and_deep_nesting)
{
    const char *bad[] = {"{\"a\":}",
                         "{\"a\" 1}",
                         "{\"a\":1,}",
                         "[1,]",
                         "[,1]",
                         "{,}",
                         "{\"a\":tru}",
                         "{\"a\":01}",
                         "{\"a\":\"\\x\"}",
                         "{\"a\":\"\\ud800\"}",
                         "{\"a\":1}x",
                         "{\"a\":\"ctl\x01\"}",
                         "{\"a\":-}",
                         "{\"a\":1.}",
                         "{\"a\":[1 2]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pc__js js;
        pc__js_init(&js, bad[i], strlen(bad[i]));
        int rc = pc__js_skip(&js);
        if (rc == 0)
            rc = pc__js_end(&js);
        cr_assert_eq(rc, -EBADMSG, "accepted %s", bad[i]);
        cr_assert_not_null(js.why);
    }
    char deep[300];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 100);
    pc__js js;
    pc__js_init(&js, deep, 300);
    cr_assert_eq(pc__js_skip(&js), -EBADMSG);
    cr_assert_str_eq(js.why, "nesting too deep");
}

Test(jscan, decodes_escapes_and_finds_the_metadata_resource_version)
{
    const char *t = "{\"kind\":\"Pod\",\"spec\":{\"resourceVersion\":\"no\"},\"metadata\":{"
                    "\"annotations\":{\"resourceVersion\":\"nope\"},\"name\":\"a\\\"b\\u00e9\\ud83d"
                    "\\ude00\",\"resourceVersion\":\"4711\"}, \"status\" : { } }";
    char rv[32];
    cr_assert_eq(pc__js_metadata_rv(t, strlen(t), rv, sizeof(rv)), 4);
    cr_assert_str_eq(rv, "4711");
    pc__js js;
    char key[32], name[32];
    pc__js_init(&js, t, strlen(t));
    cr_assert_eq(pc__js_obj_begin(&js), 0);
    int rc;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (strcmp(key, "metadata")) {
            cr_assert_eq(pc__js_skip(&js), 0);
            continue;
        }
        pc__js_obj_begin(&js);
        while (pc__js_obj_key(&js, key, sizeof(key)) == 1) {
            if (!strcmp(key, "name"))
                cr_assert_eq(pc__js_str(&js, name, sizeof(name)), 9);
            else
                cr_assert_eq(pc__js_skip(&js), 0);
        }
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(pc__js_end(&js), 0);
    cr_assert_str_eq(name, "a\"b\xc3\xa9\xf0\x9f\x98\x80");
    cr_assert_eq(pc__js_metadata_rv("{\"metadata\":{}}", 15, rv, sizeof(rv)), -ENOENT);
    cr_assert_eq(pc__js_metadata_rv("{\"metadata\":{\"resourceVersion\":\"12345\"}}", 40, rv, 4),
                 -EMSGSIZE);
    cr_assert_eq(pc__js_metadata_rv("{\"metadata\":{\"resourceVersion\":\"1\"", 34, rv, 32),
                 -EBADMSG);
}

Test(jscan, refuses_a_nul_inside_a_key_or_a_value)
{
    /* \u0000 is valid JSON, but a C string ends there: "podclaim.io/phase\u0000x" must not
     * read as the phase label, nor "Idle\u0000junk" as Idle. */
    const char *key =
            "{\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\",\"resourceVersion\":\"1\","
            "\"labels\":{\"podclaim.io/phase\":\"Starting\","
            "\"podclaim.io/phase\\u0000x\":\"Idle\"}},\"status\":{\"phase\":\"Running\","
            "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}";
    const char *val =
            "{\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\",\"resourceVersion\":\"1\","
            "\"labels\":{\"podclaim.io/phase\":\"Idle\\u0000junk\"}},\"status\":{"
            "\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":"
            "\"True\"}]}}";
    const char *name = "{\"metadata\":{\"name\":\"a\\u0000b\",\"namespace\":\"ns\","
                       "\"resourceVersion\":\"1\"}}";
    const char *cases[] = {key, val, name};
    for (size_t i = 0; i < 3; i++) {
        pc__pod p;
        char err[128] = "";
        int rc = scan(cases[i], strlen(cases[i]), &p, err, sizeof(err));
        cr_assert_eq(rc, -EINVAL, "case %zu accepted (rc %d, phase \"%s\")", i, rc, p.phase);
        pc__pod_clear(&p);
    }
    char out[16] = "x";
    pc__js js;
    pc__js_init(&js, "\"a\\u0000b\"", 10);
    cr_assert_eq(pc__js_str(&js, out, sizeof(out)), -EINVAL);
    cr_assert_str_eq(out, "");
    cr_assert_eq(pc__js_end(&js), 0, "the value is consumed");
    pc__js_init(&js, "{\"a\\u0000b\":1}", 14);
    cr_assert_eq(pc__js_skip(&js), 0, "still well-formed JSON");
}

Test(kubeconfig, refuses_insecure_skip_tls_verify_with_ca_data)
{
    mk_tmp();
    write_file("config",
               "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
               "clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n"
               "    insecure-skip-tls-verify: true\n"
               "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
               "    tls-server-name: api.example\n"
               "contexts:\n- name: c\n  context:\n    cluster: k\n");
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "got %d: %s", rc, err);
    cr_assert(strstr(err, "insecure-skip-tls-verify together with a certificate authority"),
              "message: %s", err);
    cr_assert_null(c);
    rm_tmp();
}

Test(kubeconfig, reads_tls_server_name_and_keeps_the_configured_server)
{
    mk_tmp();
    write_file("config", "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                         "clusters:\n- name: k\n  cluster:\n    server: https://10.1.2.3:6443\n"
                         "    tls-server-name: api.example\n"
                         "    proxy-url: http://proxy.example:3128\n"
                         "contexts:\n- name: c\n  context:\n    cluster: k\n");
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, 0, "got %d: %s", rc, err);
    cr_assert_str_eq(pc_kube_client_server(c), "https://10.1.2.3:6443");
    pc_kube_client_free(c);
    write_file("config", "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                         "clusters:\n- name: k\n  cluster:\n    server: https://10.1.2.3:6443\n"
                         "    tls-server-name: \"api.example/evil\"\n"
                         "contexts:\n- name: c\n  context:\n    cluster: k\n");
    rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "got %d", rc);
    cr_assert(strstr(err, "tls-server-name"), "message: %s", err);
    rm_tmp();
}

/* Found by fuzz_pod (fuzz/regressions/pod/labels-twice-heap-overflow): a second "labels"
 * object restarted the array's capacity at 0 and wrote past it. */
Test(podcache, survives_labels_and_containers_given_twice)
{
    char big[2048];
    size_t o = (size_t)snprintf(big, sizeof(big),
                                "{\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\","
                                "\"resourceVersion\":\"1\",\"labels\":{");
    for (int i = 0; i < 12; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%s\"k%d\":\"v\"", i ? "," : "", i);
    o += (size_t)snprintf(big + o, sizeof(big) - o, "},\"labels\":{");
    for (int i = 0; i < 12; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%s\"j%d\":\"v\"", i ? "," : "", i);
    snprintf(big + o, sizeof(big) - o,
             "}},\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":\"b\"},{\"name\":\"c\"},"
             "{\"name\":\"d\"},{\"name\":\"e\"}],\"containers\":[{\"name\":\"f\"},{\"name\":\"g\"},"
             "{\"name\":\"h\"},{\"name\":\"i\"},{\"name\":\"j\"}]}}");
    pc__pod p;
    char err[128];
    int rc = scan(big, strlen(big), &p, err, sizeof(err));
    cr_assert_eq(rc, 0, "%d %s", rc, err);
    cr_assert_eq(p.n_labels, 24u);
    cr_assert_eq(p.n_containers, 10u);
    pc__pod_clear(&p);
}

Test(podcache, refuses_a_phase_label_given_twice)
{
    const char *t =
            "{\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\",\"resourceVersion\":\"1\","
            "\"labels\":{\"podclaim.io/phase\":\"Running\",\"podclaim.io/phase\":\"Idle\"}}}";
    pc__pod p;
    char err[128] = "";
    cr_assert_eq(scan(t, strlen(t), &p, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "twice"), "message: %s", err);
    pc__pod_clear(&p);
}

/* Found by fuzz_informer (fuzz/regressions/informer/name-not-utf8): any bytes passed as a
 * pod name, which then went to the pool (and a URL) as they were. */
Test(podcache, refuses_names_kubernetes_would_not_allow)
{
    const char *bad[][2] = {{"p-\xcc"
                             "8",
                             "ns"},
                            {"Upper", "ns"},
                            {"a/b", "ns"},
                            {"-a", "ns"},
                            {"a", "n.s"},
                            {"a", "NS"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char t[256];
        snprintf(t, sizeof(t),
                 "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\",\"resourceVersion\":\"1\"}}",
                 bad[i][0], bad[i][1]);
        pc__pod p;
        char err[128] = "";
        cr_assert_eq(scan(t, strlen(t), &p, err, sizeof(err)), -EINVAL, "accepted %s/%s", bad[i][1],
                     bad[i][0]);
        cr_assert(strstr(err, "DNS"), "message: %s", err);
        pc__pod_clear(&p);
    }
    pc__pod p;
    char err[128];
    parse("{\"metadata\":{\"name\":\"a-1.b\",\"namespace\":\"n-1\",\"resourceVersion\":\"1\"}}",
          &p);
    pc__pod_clear(&p);
    (void)err;
}

/* Found by fuzz_patch (fuzz/regressions/patch/annotation-not-utf8): invalid UTF-8 went into
 * the body as it was; the API server would have stored U+FFFD instead. */
Test(patch, refuses_strings_that_are_not_utf8)
{
    pc_kv ann[] = {{"note", "line1\n\x95line2"}};
    pc_claim_opts o = {.annotations = ann, .n_annotations = 1};
    pc_cas_request r = {.pod = {"ns", "p1", NULL, "7"}, .opts = &o, .claim_id = "c"};
    char buf[4096], err[128] = "";
    cr_assert_eq(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "UTF-8"), "message: %s", err);
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xff"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pc_kv l[] = {{"k", bad[i]}};
        pc_claim_opts ol = {.labels = l, .n_labels = 1};
        r.opts = &ol;
        cr_assert_eq(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), -EINVAL,
                     "accepted case %zu", i);
    }
    pc_kv good[] = {{"k", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}};
    pc_claim_opts og = {.annotations = good, .n_annotations = 1};
    r.opts = &og;
    cr_assert_gt(pc_kube_patch_body(&r, buf, sizeof(buf), err, sizeof(err)), 0, "%s", err);
}

Test(kubeconfig, refuses_a_file_over_4_mib)
{
    mk_tmp();
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "%s/config", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("current-context: x\n# ", f);
    for (int i = 0; i < (5 << 20) / 64; i++)
        fputs("padding padding padding padding padding padding padding padding\n# ", f);
    fclose(f);
    pc_kube_client *c = NULL;
    int rc = pc_kube_client_new_kubeconfig(path, NULL, NULL, &c, err, sizeof(err));
    cr_assert_eq(rc, -EMSGSIZE, "got %d: %s", rc, err);
    cr_assert(strstr(err, "larger than"), "message: %s", err);
    rm_tmp();
}

Test(status, too_large_is_a_504_status_with_the_resource_version_too_large_cause)
{
    const char *yes = "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Too large "
                      "resource version: 9, current: 5\",\"reason\":\"Timeout\",\"details\":{"
                      "\"causes\":[{\"reason\":\"ResourceVersionTooLarge\",\"message\":\"Too "
                      "large resource version\"}],\"retryAfterSeconds\":1},\"code\":504}";
    cr_assert(pc_kube_status_too_large(yes, strlen(yes)));
    const char *other_cause = "{\"code\":504,\"details\":{\"causes\":[{\"reason\":\"Other\"}]}}";
    cr_assert_not(pc_kube_status_too_large(other_cause, strlen(other_cause)));
    const char *other_code =
            "{\"code\":500,\"details\":{\"causes\":[{\"reason\":\"ResourceVersionTooLarge\"}]}}";
    cr_assert_not(pc_kube_status_too_large(other_code, strlen(other_code)));
    cr_assert_not(pc_kube_status_too_large("{\"code\":504", 11), "malformed");
    cr_assert_not(pc_kube_status_too_large(NULL, 0));
}
