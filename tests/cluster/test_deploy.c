/* deploy/: every manifest is accepted by kubectl against kapi-sim; the CRDs are structural,
 * with the scale subresource and printer columns pointing at real fields; RBAC grants exactly
 * what the cluster modules do (and nothing cluster-wide); kubectl scale resizes a pool and
 * kubectl apply of a SandboxClaim gets it a pod. */
#include "../kube/e2e_common.h"
#include "claimctl.h"
#include "common.h"
#include "kevents.h"
#include "poolctl.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static ksim sim;
static char kubeconfig[128];

static void fini(void)
{
    ksim_stop(&sim);
}

TestSuite(deploy, .fini = fini, .timeout = 120);

static void start_sim(void)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms", "30", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    snprintf(kubeconfig, sizeof(kubeconfig), "%s/kubeconfig", sim.dir);
    FILE *f = fopen(kubeconfig, "w");
    cr_assert(f);
    fprintf(f,
            "apiVersion: v1\nkind: Config\nclusters: [{name: s, cluster: {server: \"%s\"}}]\n"
            "users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: s, user: "
            "u}}]\ncurrent-context: c\n",
            sim.url);
    fclose(f);
}

/* Run kubectl with args (a shell fragment); returns its exit status, stdout in *out. */
static int kubectl(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kubectl(char **out, const char *fmt, ...)
{
    char args[2048], cmd[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "%s --kubeconfig %s %s 2>%s/kubectl.err", KUBECTL_PATH, kubeconfig,
             args, sim.dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (st) {
        char errp[160];
        snprintf(errp, sizeof(errp), "%s/kubectl.err", sim.dir);
        FILE *e = fopen(errp, "r");
        char line[512];
        while (e && fgets(line, sizeof(line), e))
            fprintf(stderr, "kubectl: %s", line);
        if (e)
            fclose(e);
    }
    if (out)
        *out = buf;
    else
        free(buf);
    return st;
}

static json_t *kubectl_json(const char *fmt, const char *arg)
{
    char *out;
    char args[1024];
    snprintf(args, sizeof(args), fmt, arg);
    cr_assert_eq(kubectl(&out, "%s", args), 0, "kubectl %s failed", args);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert(j, "kubectl %s: not JSON: %s", args, je.text);
    free(out);
    return j;
}

/* The objects of deploy/ as kustomize renders them (client side). */
static json_t *rendered(void)
{
    json_t *l = kubectl_json("apply -k %s --dry-run=client -o json", PC_DEPLOY_DIR);
    json_t *items = json_incref(json_object_get(l, "items"));
    json_decref(l);
    return items;
}

static json_t *find_kind(json_t *items, const char *kind, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o)
    {
        const char *n = json_string_value(json_object_get(json_object_get(o, "metadata"), "name"));
        if (strcmp(json_string_value(json_object_get(o, "kind")) ?: "", kind) == 0 &&
            (!name || (n && strcmp(n, name) == 0)))
            return o;
    }
    return NULL;
}

Test(deploy, every_object_is_accepted_by_the_server)
{
    start_sim();
    json_t *want = rendered();
    const char *kinds[] = {"CustomResourceDefinition",
                           "Namespace",
                           "ServiceAccount",
                           "Role",
                           "RoleBinding",
                           "ConfigMap",
                           "Deployment",
                           "Service"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(*kinds); k++)
        cr_assert(find_kind(want, kinds[k], NULL), "deploy/ has no %s", kinds[k]);
    cr_assert_eq(json_array_size(want), 9, "deploy/ renders %zu objects", json_array_size(want));
    /* A server-side dry run first. A dry run writes nothing, so the namespace must exist
     * before the namespaced objects can be checked (kube-apiserver answers NotFound
     * otherwise, and kapi-sim does the same): create it for real. Then the real apply, then a
     * second apply that changes nothing. */
    cr_assert_eq(kubectl(NULL, "apply -f %s/namespace.yaml", PC_DEPLOY_DIR), 0);
    cr_assert_eq(kubectl(NULL, "apply -k %s --dry-run=server", PC_DEPLOY_DIR), 0);
    char *none;
    cr_assert_neq(kubectl(&none, "get deployment podclaimd -n podclaim"), 0,
                  "the dry run wrote the Deployment:\n%s", none);
    free(none);
    json_t *got = kubectl_json("apply -k %s -o json", PC_DEPLOY_DIR);
    json_t *items = json_object_get(got, "items");
    cr_assert_eq(json_array_size(items), json_array_size(want));
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o)
    {
        json_t *md = json_object_get(o, "metadata");
        cr_assert(json_string_value(json_object_get(md, "uid")), "%s %s has no uid",
                  json_string_value(json_object_get(o, "kind")),
                  json_string_value(json_object_get(md, "name")));
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (strcmp(kind, "Namespace") && strcmp(kind, "CustomResourceDefinition"))
            cr_assert_str_eq(json_string_value(json_object_get(md, "namespace")), "podclaim",
                             "%s not in namespace podclaim", kind);
    }
    char *out;
    cr_assert_eq(kubectl(&out, "apply -k %s", PC_DEPLOY_DIR), 0);
    cr_assert_null(strstr(out, "configured"), "a second apply changed something:\n%s", out);
    free(out);
    json_t *dep = kubectl_json("get deployment podclaimd -n %s -o json", "podclaim");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(dep, "spec"), "replicas")), 2);
    json_decref(dep);
    json_decref(got);
    json_decref(want);
}

/* The ConfigMap's file is podclaimd's real configuration: `podclaimd --check-config` accepts
 * it, and the Deployment mounts it where its --config points. */
Test(deploy, the_configmap_is_a_config_podclaimd_accepts)
{
    start_sim();
    json_t *want = rendered();
    json_t *cm = find_kind(want, "ConfigMap", "podclaimd");
    cr_assert(cm, "deploy/ has no ConfigMap podclaimd");
    const char *text =
            json_string_value(json_object_get(json_object_get(cm, "data"), "podclaimd.yaml"));
    cr_assert(text, "ConfigMap podclaimd has no podclaimd.yaml");
    char path[160], cmd[600];
    snprintf(path, sizeof(path), "%s/podclaimd.yaml", sim.dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s --check-config %s 2>&1", PODCLAIMD_PATH, path);
    FILE *p = popen(cmd, "r");
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "podclaimd --check-config: %s", out);
    cr_assert(strstr(out, ": ok ("), "%s", out);
    /* the file sets what a cluster needs (not left to defaults by mistake) */
    cr_assert(strstr(text, "inCluster: true") && strstr(text, "enabled: true"), "%s", text);
    json_t *dep = find_kind(want, "Deployment", "podclaimd");
    json_t *ct = json_array_get(
            json_object_get(
                    json_object_get(json_object_get(json_object_get(dep, "spec"), "template"),
                                    "spec"),
                    "containers"),
            0);
    char *args = json_dumps(json_object_get(ct, "args"), JSON_COMPACT);
    char *mounts = json_dumps(json_object_get(ct, "volumeMounts"), JSON_COMPACT);
    cr_assert(strstr(args, "\"--config\",\"/etc/podclaimd/podclaimd.yaml\""), "args %s", args);
    cr_assert(strstr(mounts, "\"/etc/podclaimd\""), "mounts %s", mounts);
    free(args);
    free(mounts);
    json_decref(want);
}

/* ---- structural schema check (the rules of apiextensions' structural schemas) ------------- */

static void check_structural(const json_t *s, const char *path, bool root_meta)
{
    const char *type = json_string_value(json_object_get(s, "type"));
    bool preserve = json_is_true(json_object_get(s, "x-kubernetes-preserve-unknown-fields"));
    bool ios = json_is_true(json_object_get(s, "x-kubernetes-int-or-string"));
    cr_assert(type || preserve || ios, "%s: no type", path);
    json_t *props = json_object_get(s, "properties");
    if (props)
        cr_assert(type && strcmp(type, "object") == 0, "%s: properties on a non-object", path);
    if (json_object_get(s, "items"))
        cr_assert(type && strcmp(type, "array") == 0, "%s: items on a non-array", path);
    if (type && strcmp(type, "array") == 0)
        cr_assert(json_object_get(s, "items"), "%s: array without items", path);
    cr_assert(!(props && json_object_get(s, "additionalProperties")),
              "%s: properties and additionalProperties together", path);
    if (root_meta)
        cr_assert_null(props, "%s: metadata may only say type: object", path);
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        char sub[512];
        snprintf(sub, sizeof(sub), "%s.%s", path, k);
        check_structural(v, sub, strcmp(path, "") == 0 && strcmp(k, "metadata") == 0);
    }
    if (json_is_object(json_object_get(s, "items")))
        check_structural(json_object_get(s, "items"), path, false);
    if (json_is_object(json_object_get(s, "additionalProperties")))
        check_structural(json_object_get(s, "additionalProperties"), path, false);
}

/* The schema node at a JSONPath like .status.conditions[?(@.type=="Ready")].status */
static const json_t *schema_at(const json_t *schema, const char *jsonpath)
{
    const json_t *s = schema;
    char seg[128];
    const char *p = jsonpath;
    while (s && *p) {
        if (*p == '.')
            p++;
        size_t n = strcspn(p, ".[");
        snprintf(seg, sizeof(seg), "%.*s", (int)n, p);
        p += n;
        s = json_object_get(json_object_get(s, "properties"), seg);
        if (*p == '[') { /* a filter or an index: step into the items */
            p = strchr(p, ']');
            p = p ? p + 1 : "";
            s = json_object_get(s, "items");
        }
    }
    return s;
}

static const json_t *crd_version(const json_t *crd)
{
    return json_array_get(json_object_get(json_object_get(crd, "spec"), "versions"), 0);
}

Test(deploy, crds_are_structural_with_scale_and_printer_columns)
{
    start_sim();
    json_t *items = rendered();
    const char *names[] = {"sandboxpools.podclaim.io", "sandboxclaims.podclaim.io"};
    for (int i = 0; i < 2; i++) {
        const json_t *crd = find_kind(items, "CustomResourceDefinition", names[i]);
        cr_assert(crd, "no CRD %s", names[i]);
        const json_t *v = crd_version(crd);
        const json_t *schema = json_object_get(json_object_get(v, "schema"), "openAPIV3Schema");
        check_structural(schema, "", false);
        cr_assert(json_object_get(json_object_get(v, "subresources"), "status"),
                  "%s: no status subresource", names[i]);
        size_t j;
        json_t *col;
        json_array_foreach(json_object_get(v, "additionalPrinterColumns"), j, col)
        {
            const char *jp = json_string_value(json_object_get(col, "jsonPath"));
            if (strncmp(jp, ".metadata.", 10) == 0)
                continue;
            cr_assert(schema_at(schema, jp), "%s: printer column %s: %s is not in the schema",
                      names[i], json_string_value(json_object_get(col, "name")), jp);
        }
    }
    const json_t *pv = crd_version(find_kind(items, "CustomResourceDefinition", names[0]));
    const json_t *schema = json_object_get(json_object_get(pv, "schema"), "openAPIV3Schema");
    const json_t *scale = json_object_get(json_object_get(pv, "subresources"), "scale");
    cr_assert(scale, "SandboxPool has no scale subresource");
    const char *paths[][2] = {{"specReplicasPath", "integer"},
                              {"statusReplicasPath", "integer"},
                              {"labelSelectorPath", "string"}};
    for (int i = 0; i < 3; i++) {
        const char *jp = json_string_value(json_object_get(scale, paths[i][0]));
        cr_assert(jp, "scale.%s missing", paths[i][0]);
        const json_t *s = schema_at(schema, jp);
        cr_assert(s, "scale.%s: %s not in the schema", paths[i][0], jp);
        cr_assert_str_eq(json_string_value(json_object_get(s, "type")), paths[i][1]);
    }
    const char *cols[] = {"Idle", "Pending", "Ready"};
    for (int i = 0; i < 3; i++) {
        bool found = false;
        size_t j;
        json_t *col;
        json_array_foreach(json_object_get(pv, "additionalPrinterColumns"), j, col) found |=
                strcmp(json_string_value(json_object_get(col, "name")), cols[i]) == 0;
        cr_assert(found, "no printer column %s", cols[i]);
    }
    json_decref(items);
}

static bool allowed(const json_t *role, const char *group, const char *resource, const char *verb)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(role, "rules"), i, r)
    {
        bool g = false, res = false, v = false;
        size_t j;
        json_t *x;
        json_array_foreach(json_object_get(r, "apiGroups"), j, x) g |=
                strcmp(json_string_value(x), group) == 0;
        json_array_foreach(json_object_get(r, "resources"), j, x) res |=
                strcmp(json_string_value(x), resource) == 0;
        json_array_foreach(json_object_get(r, "verbs"), j, x) v |=
                strcmp(json_string_value(x), verb) == 0;
        if (g && res && v)
            return true;
    }
    return false;
}

Test(deploy, rbac_grants_what_the_controllers_use_and_nothing_wide)
{
    start_sim();
    json_t *items = rendered();
    cr_assert_null(find_kind(items, "ClusterRole", NULL), "a ClusterRole: not least privilege");
    cr_assert_null(find_kind(items, "ClusterRoleBinding", NULL));
    const json_t *role = find_kind(items, "Role", "podclaimd");
    cr_assert(role);
    char *text = json_dumps(role, 0);
    cr_assert_null(strstr(text, "\"*\""), "a wildcard in the Role");
    free(text);
    /* every request daemon/cluster makes */
    const char *need[][3] = {
            {"", "pods", "list"},
            {"", "pods", "watch"},
            {"", "pods", "get"},
            {"", "pods", "create"},
            {"", "pods", "patch"},
            {"", "pods", "delete"},
            {"podclaim.io", "sandboxpools", "list"},
            {"podclaim.io", "sandboxpools", "watch"},
            {"podclaim.io", "sandboxpools/status", "patch"},
            {"podclaim.io", "sandboxclaims", "list"},
            {"podclaim.io", "sandboxclaims", "watch"},
            {"podclaim.io", "sandboxclaims", "patch"}, /* the finalizer */
            {"podclaim.io", "sandboxclaims/status", "patch"},
            {"coordination.k8s.io", "leases", "get"},
            {"coordination.k8s.io", "leases", "create"},
            {"coordination.k8s.io", "leases", "update"},
            {"coordination.k8s.io", "leases", "watch"},
            {"events.k8s.io", "events", "create"},
    };
    for (size_t i = 0; i < sizeof(need) / sizeof(*need); i++)
        cr_assert(allowed(role, need[i][0], need[i][1], need[i][2]), "Role lacks %s %s/%s",
                  need[i][2], need[i][0], need[i][1]);
    /* and nothing it does not need */
    cr_assert(!allowed(role, "", "pods", "update"));
    cr_assert(!allowed(role, "podclaim.io", "sandboxpools", "update"));
    cr_assert(!allowed(role, "podclaim.io", "sandboxpools", "patch"));
    cr_assert(!allowed(role, "podclaim.io", "sandboxclaims", "delete"));
    cr_assert(!allowed(role, "", "secrets", "get"));
    const json_t *rb = find_kind(items, "RoleBinding", "podclaimd");
    cr_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(rb, "subjects"), 0), "name")),
                     "podclaimd");
    json_decref(items);
}

static pc_pool *lookup(void *arg, const char *ns, const char *pool)
{
    stack *s = arg;
    return strcmp(ns, "podclaim") == 0 && strcmp(pool, "python") == 0 ? s->pool : NULL;
}

static size_t idle(void)
{
    json_t *l = ksim_json(&sim, "GET",
                          "/api/v1/namespaces/podclaim/pods?labelSelector="
                          "podclaim.io%2Fpool%3Dpython%2Cpodclaim.io%2Fphase%3DIdle",
                          NULL);
    size_t n = json_array_size(json_object_get(l, "items"));
    json_decref(l);
    return n;
}

/* The operator's path: apply deploy/ and the example pool, kubectl scale it, kubectl apply
 * the example claim, kubectl get shows the pod. */
Test(deploy, kubectl_scale_resizes_and_an_applied_claim_gets_a_pod)
{
    start_sim();
    cr_assert_eq(kubectl(NULL, "apply -k %s", PC_DEPLOY_DIR), 0);
    char err[256];
    pc_kube_client *kc;
    pc_kube_options o = {.server = sim.url};
    cr_assert_eq(pc_kube_client_new(&o, &kc, err, sizeof(err)), 0);
    pc_kevents *kev;
    pc_kevents_config ec = {.instance = "t"};
    cr_assert_eq(pc_kevents_new(&ec, &kev), 0);
    pc_poolctl *pctl;
    pc_poolctl_config pc = {.client = kc, .namespace_ = "podclaim", .events = kev};
    cr_assert_eq(pc_poolctl_new(&pc, &pctl, err, sizeof(err)), 0);
    cr_assert_eq(pc_poolctl_start(pctl), 0);
    cr_assert_eq(kubectl(NULL, "apply -f %s/examples/sandboxpool.yaml", PC_DEPLOY_DIR), 0);
    cr_assert(PC_TEST_WAIT(idle() == 8, 20000), "idle %zu of 8", idle());
    cr_assert_eq(kubectl(NULL, "scale -n podclaim sandboxpool python --replicas=3"), 0);
    cr_assert(PC_TEST_WAIT(idle() == 3, 20000), "idle %zu after scale to 3", idle());
    cr_assert_eq(kubectl(NULL, "scale -n podclaim sbp python --replicas=5"), 0);
    cr_assert(PC_TEST_WAIT(idle() == 5, 20000), "idle %zu after scale to 5", idle());

    stack s;
    cr_assert_eq(stack_start(&s, &sim, "podclaim", "python", NULL, NULL, NULL), 0);
    pc_claimctl *cctl;
    pc_claimctl_config cc = {.client = kc, .namespace_ = "podclaim", .lookup = lookup, .arg = &s};
    cr_assert_eq(pc_claimctl_new(&cc, &cctl, err, sizeof(err)), 0);
    cr_assert_eq(pc_claimctl_start(cctl), 0);
    cr_assert_eq(kubectl(NULL, "apply -f %s/examples/sandboxclaim.yaml", PC_DEPLOY_DIR), 0);
    char *pod = NULL;
    cr_assert(PC_TEST_WAIT(({
                               free(pod);
                               pod = NULL;
                               kubectl(&pod, "get -n podclaim sandboxclaim my-sandbox -o "
                                             "jsonpath={.status.pod}") == 0 &&
                                       pod[0];
                           }),
                           20000),
              "kubectl get sandboxclaims shows no pod");
    char *owner;
    cr_assert_eq(
            kubectl(&owner, "get -n podclaim pod %s -o jsonpath={.metadata.labels.owner}", pod), 0);
    cr_assert_str_eq(owner, "alice");
    free(owner);
    free(pod);
    pc_pool_shutdown(s.pool);
    pc_claimctl_free(cctl);
    stack_stop(&s);
    pc_poolctl_free(pctl);
    pc_kevents_free(kev);
    pc_kube_client_free(kc);
}
