/* kapi-sim validation and defaulting: what kube-apiserver checks on the objects podclaim,
 * kubectl and the official clients write, with its 422 Invalid answers (one details.causes
 * entry per problem, the field path and the CauseType), and the defaults it fills in on create.
 *
 *   api.c create/update -> ks_check_meta_types (400, decoder) -> ks_apply_defaults (create)
 *                       -> ks_validate (422) -> commit
 *
 * Covered: object names (DNS-1123 subdomain; namespaces a DNS-1123 label), generateName, label
 * keys and values, annotation keys and their total size, the pod spec basics (containers with a
 * name and an image, unique names), SandboxPool spec.replicas against the CRD schema. Not
 * covered (the real server checks far more of a pod): resources, probes, volumes, security.
 */
#include "sim.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANNOTATIONS_MAX_BYTES (256 * 1024) /* TotalAnnotationSizeLimitB */

static const char DNS1123_SUB_MSG[] =
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        "regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
static const char DNS1123_LABEL_MSG[] =
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
static const char QNAME_MSG[] =
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
        "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
        "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
static const char LABEL_VALUE_MSG[] =
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
        "'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/* ---- ObjectMeta types (decoder, 400) --------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
    return json_is_number(v)   ? "number"
           : json_is_object(v) ? "object"
           : json_is_array(v)  ? "array"
           : json_is_string(v) ? "string"
                               : "value";
}

bool ks_check_meta_types(const json_t *obj, ks_err *err)
{
    const json_t *md = json_object_get(obj, "metadata");
    if (md && !json_is_object(md) && !json_is_null(md)) {
        ks_err_set(err, 400, "BadRequest", "metadata: expected an object");
        return false;
    }
    static const char *const strs[] = {"name", "namespace",    "resourceVersion",
                                       "uid",  "generateName", "creationTimestamp"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const json_t *v = json_object_get(md, strs[i]);
        if (v && !json_is_string(v) && !json_is_null(v)) {
            ks_err_set(err, 400, "BadRequest", "metadata.%s: expected a string, got a JSON %s",
                       strs[i], json_type_name(v));
            return false;
        }
    }
    static const char *const maps[] = {"labels", "annotations"};
    for (size_t i = 0; i < 2; i++) {
        const json_t *m = json_object_get(md, maps[i]);
        if (!m || json_is_null(m))
            continue;
        if (!json_is_object(m)) {
            ks_err_set(err, 400, "BadRequest", "metadata.%s: expected an object of strings",
                       maps[i]);
            return false;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)m, k, v)
        {
            if (!json_is_string(v) && !json_is_null(v)) {
                ks_err_set(err, 400, "BadRequest", "metadata.%s[%.100s]: expected a string",
                           maps[i], k);
                return false;
            }
        }
    }
    const json_t *fin = json_object_get(md, "finalizers");
    if (fin && !json_is_null(fin)) {
        size_t i;
        json_t *v;
        bool ok = json_is_array(fin);
        json_array_foreach(fin, i, v) ok = ok && json_is_string(v);
        if (!ok) {
            ks_err_set(err, 400, "BadRequest", "metadata.finalizers: expected an array of strings");
            return false;
        }
    }
    return true;
}

/* ---- name rules -------------------------------------------------------------------------- */

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_dns1123_label(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !is_alnum_lower(s[0]) || !is_alnum_lower(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum_lower(s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool is_dns1123_subdomain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    const char *p = s;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        /* each dot-separated part is a label, without the 63-byte limit */
        if (l == 0 || !is_alnum_lower(p[0]) || !is_alnum_lower(p[l - 1]))
            return false;
        for (size_t i = 0; i < l; i++)
            if (!is_alnum_lower(p[i]) && p[i] != '-')
                return false;
        if (!dot)
            return true;
        p = dot + 1;
    }
}

static bool is_qname_part(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

/* A label or annotation key: [prefix/]name (IsQualifiedName). Returns NULL or why not. */
static const char *qualified_name_error(const char *k, char *buf, size_t n)
{
    const char *slash = strchr(k, '/');
    const char *name = slash ? slash + 1 : k;
    if (slash) {
        if (strchr(name, '/'))
            return "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyName',  or "
                   "'my.name',  or '123-abc', regex used for validation is "
                   "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain "
                   "prefix and '/' (e.g. 'example.com/MyName')";
        char pfx[300];
        size_t pl = (size_t)(slash - k);
        if (pl == 0) {
            return "prefix part must be non-empty";
        }
        snprintf(pfx, sizeof pfx, "%.*s", (int)(pl < 299 ? pl : 299), k);
        if (pl > 253 || !is_dns1123_subdomain(pfx)) {
            snprintf(buf, n, "prefix part %s", DNS1123_SUB_MSG);
            return buf;
        }
    }
    size_t nl = strlen(name);
    if (nl == 0)
        return "name part must be non-empty";
    if (nl > 63)
        return "name part must be no more than 63 bytes";
    if (!is_qname_part(name, nl))
        return QNAME_MSG;
    return NULL;
}

static bool is_label_value(const char *v)
{
    size_t n = strlen(v);
    return n == 0 || is_qname_part(v, n);
}

/* ---- validation -------------------------------------------------------------------------- */

typedef struct vctx {
    ks_err *err;
    const ks_res *res;
    const char *name;
} vctx;

/* Go's %q of a string, shortened: enough to name the value in a message. */
static void quote(char *out, size_t n, const char *s)
{
    snprintf(out, n, "\"%.120s\"", s ? s : "");
}

static void bad(vctx *v, const char *type, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void bad(vctx *v, const char *type, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ks_err_cause(v->err, type, field, "%s", msg);
}

static void check_name(vctx *v, const json_t *md, bool create)
{
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *gen = json_string_value(json_object_get(md, "generateName"));
    char q[140];
    if (!name || !*name) {
        if (create)
            bad(v, "FieldValueRequired", "metadata.name",
                "Required value: name or generateName is required");
        return;
    }
    bool ok = v->res->id == KS_RES_NAMESPACE ? is_dns1123_label(name, strlen(name))
                                             : is_dns1123_subdomain(name);
    if (!ok) {
        quote(q, sizeof q, name);
        bad(v, "FieldValueInvalid", "metadata.name", "Invalid value: %s: %s", q,
            v->res->id == KS_RES_NAMESPACE ? DNS1123_LABEL_MSG : DNS1123_SUB_MSG);
    }
    (void)gen;
}

static void check_labels(vctx *v, const json_t *labels)
{
    const char *k;
    json_t *val;
    char q[140], why[400];
    json_object_foreach((json_t *)labels, k, val)
    {
        const char *e = qualified_name_error(k, why, sizeof why);
        if (e) {
            quote(q, sizeof q, k);
            bad(v, "FieldValueInvalid", "metadata.labels", "Invalid value: %s: %s", q, e);
        }
        const char *s = json_string_value(val);
        if (s && strlen(s) > 63) {
            quote(q, sizeof q, s);
            bad(v, "FieldValueInvalid", "metadata.labels",
                "Invalid value: %s: must be no more than 63 bytes", q);
        } else if (s && !is_label_value(s)) {
            quote(q, sizeof q, s);
            bad(v, "FieldValueInvalid", "metadata.labels", "Invalid value: %s: %s", q,
                LABEL_VALUE_MSG);
        }
    }
}

static void check_annotations(vctx *v, const json_t *ann)
{
    const char *k;
    json_t *val;
    char q[140], why[400];
    size_t total = 0;
    json_object_foreach((json_t *)ann, k, val)
    {
        const char *e = qualified_name_error(k, why, sizeof why);
        if (e) {
            quote(q, sizeof q, k);
            bad(v, "FieldValueInvalid", "metadata.annotations", "Invalid value: %s: %s", q, e);
        }
        total += strlen(k) + json_string_length(val);
    }
    if (total > ANNOTATIONS_MAX_BYTES)
        bad(v, "FieldValueTooLong", "metadata.annotations",
            "Too long: may not be more than %d bytes", ANNOTATIONS_MAX_BYTES);
}

static void check_containers(vctx *v, const json_t *spec, const char *list, bool required)
{
    const json_t *cs = json_object_get(spec, list);
    char f[160], q[140];
    if (!json_is_array(cs) || json_array_size(cs) == 0) {
        if (required) {
            snprintf(f, sizeof f, "spec.%s", list);
            bad(v, "FieldValueRequired", f, "Required value");
        }
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(cs, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        snprintf(f, sizeof f, "spec.%s[%zu].name", list, i);
        if (!name || !*name) {
            bad(v, "FieldValueRequired", f, "Required value");
        } else if (!is_dns1123_label(name, strlen(name))) {
            quote(q, sizeof q, name);
            bad(v, "FieldValueInvalid", f, "Invalid value: %s: %s", q, DNS1123_LABEL_MSG);
        } else {
            for (size_t j = 0; j < i; j++) {
                const char *o = json_string_value(json_object_get(json_array_get(cs, j), "name"));
                if (o && strcmp(o, name) == 0) {
                    quote(q, sizeof q, name);
                    bad(v, "FieldValueDuplicate", f, "Duplicate value: %s", q);
                    break;
                }
            }
        }
        const char *img = json_string_value(json_object_get(c, "image"));
        if (!img || !*img) {
            snprintf(f, sizeof f, "spec.%s[%zu].image", list, i);
            bad(v, "FieldValueRequired", f, "Required value");
        }
    }
}

static void check_pool(vctx *v, const json_t *obj)
{
    const json_t *r = json_object_get(json_object_get(obj, "spec"), "replicas");
    if (!r || json_is_null(r))
        return;
    char val[64];
    if (!json_is_integer(r)) {
        snprintf(val, sizeof val, "\"%s\"", json_type_name(r));
        bad(v, "FieldValueTypeInvalid", "spec.replicas",
            "Invalid value: %s: spec.replicas in body must be of type integer: %s", val, val);
        return;
    }
    json_int_t n = json_integer_value(r);
    /* kube-apiserver reports a negative count twice: the schema check, and the scale
     * subresource's check of specReplicasPath (field ".spec.replicas") */
    for (int i = 0; i < (n < 0 ? 2 : 1); i++) {
        const char *f = i ? ".spec.replicas" : "spec.replicas";
        if (n < 0)
            bad(v, "FieldValueInvalid", f,
                "Invalid value: %lld: spec.replicas in body should be greater than or equal to 0",
                (long long)n);
        else if (n > KS_POOL_MAX_REPLICAS)
            bad(v, "FieldValueInvalid", f,
                "Invalid value: %lld: spec.replicas in body should be less than or equal to %d",
                (long long)n, KS_POOL_MAX_REPLICAS);
    }
}

bool ks_validate(const ks_res *res, const json_t *obj, const json_t *old, ks_err *err)
{
    const json_t *md = json_object_get(obj, "metadata");
    vctx v = {.err = err, .res = res, .name = json_string_value(json_object_get(md, "name"))};
    int before = err->ncauses;
    check_name(&v, md, old == NULL);
    if (json_is_object(json_object_get(md, "labels")))
        check_labels(&v, json_object_get(md, "labels"));
    if (json_is_object(json_object_get(md, "annotations")))
        check_annotations(&v, json_object_get(md, "annotations"));
    if (res->id == KS_RES_POD && !old) {
        const json_t *spec = json_object_get(obj, "spec");
        check_containers(&v, spec, "containers", true);
        check_containers(&v, spec, "initContainers", false);
    }
    if (res->id == KS_RES_SANDBOXPOOL)
        check_pool(&v, obj);
    if (err->ncauses == before)
        return true;
    /* "<Kind>[.group] "<name>" is invalid: <field>: <msg>" or "...: [a, b]" for several. */
    char head[300];
    snprintf(head, sizeof head, "%s%s%s \"%.200s\" is invalid: ", res->kind,
             res->group[0] ? "." : "", res->group, v.name ? v.name : "");
    char body[1700] = "";
    size_t bl = 0;
    int n = err->ncauses - before;
    for (int i = before; i < err->ncauses && bl < sizeof body; i++) {
        const ks_cause *c = &err->causes[i];
        bl += (size_t)snprintf(body + bl, sizeof body - bl, "%s%s%s%s", i > before ? ", " : "",
                               c->field, c->field[0] ? ": " : "", c->message);
    }
    ks_err_set(err, 422, "Invalid", "%s%s%s%s", head, n > 1 ? "[" : "", body, n > 1 ? "]" : "");
    ks_err_details(err, res->group, res->kind, v.name ? v.name : "");
    return false;
}

void ks_drop_empty_meta(json_t *md)
{
    /* Go's omitempty: an empty map or list is not stored or sent */
    static const char *const f[] = {"labels", "annotations", "finalizers", "ownerReferences"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        json_t *v = json_object_get(md, f[i]);
        if (v && (json_is_null(v) || (json_is_object(v) && !json_object_size(v)) ||
                  (json_is_array(v) && !json_array_size(v))))
            json_object_del(md, f[i]);
    }
}

/* ---- defaults ---------------------------------------------------------------------------- */

static void set_default(json_t *o, const char *k, json_t *v /* stolen */)
{
    if (!json_object_get(o, k))
        json_object_set_new(o, k, v);
    else
        json_decref(v);
}

static void default_containers(json_t *spec, const char *list)
{
    json_t *cs = json_object_get(spec, list);
    size_t i;
    json_t *c;
    json_array_foreach(cs, i, c)
    {
        if (!json_is_object(c))
            continue;
        set_default(c, "terminationMessagePath", json_string("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json_string("File"));
        set_default(c, "resources", json_object());
        const char *img = json_string_value(json_object_get(c, "image"));
        /* PullAlways for :latest or no tag, IfNotPresent otherwise (SetDefaults_Container) */
        if (img && !json_object_get(c, "imagePullPolicy")) {
            const char *slash = strrchr(img, '/');
            const char *tag = strchr(slash ? slash : img, ':');
            bool latest = !strchr(img, '@') && (!tag || strcmp(tag, ":latest") == 0);
            json_object_set_new(c, "imagePullPolicy",
                                json_string(latest ? "Always" : "IfNotPresent"));
        }
    }
}

static const char *const pod_defaults[] = {"restartPolicy",    "terminationGracePeriodSeconds",
                                           "dnsPolicy",        "securityContext",
                                           "schedulerName",    "enableServiceLinks",
                                           "preemptionPolicy", "priority"};
static const char *const container_defaults[] = {
        "terminationMessagePath", "terminationMessagePolicy", "resources", "imagePullPolicy"};

bool ks_needs_defaults(const ks_res *res, const json_t *obj)
{
    if (res->id != KS_RES_POD)
        return false;
    const json_t *spec = json_object_get(obj, "spec");
    if (!json_is_object(spec))
        return false;
    for (size_t i = 0; i < sizeof pod_defaults / sizeof pod_defaults[0]; i++)
        if (!json_object_get(spec, pod_defaults[i]))
            return true;
    static const char *const lists[] = {"containers", "initContainers"};
    for (size_t l = 0; l < 2; l++) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(spec, lists[l]), i, c)
        {
            for (size_t k = 0; k < sizeof container_defaults / sizeof container_defaults[0]; k++)
                if (json_is_object(c) && !json_object_get(c, container_defaults[k]) &&
                    (k != 3 || json_object_get(c, "image")))
                    return true;
        }
    }
    return false;
}

/* The QoS class (GetPodQOS): no requests or limits anywhere -> BestEffort; cpu and memory
 * limits on every container, requests equal to them -> Guaranteed; else Burstable. */
const char *ks_pod_qos_class(const json_t *spec)
{
    bool any = false, guaranteed = true;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(spec, "containers"), i, c)
    {
        const json_t *r = json_object_get(c, "resources");
        const json_t *req = json_object_get(r, "requests"), *lim = json_object_get(r, "limits");
        if (json_object_size(req) || json_object_size(lim))
            any = true;
        static const char *const res[] = {"cpu", "memory"};
        for (int k = 0; k < 2; k++) {
            const json_t *l = json_object_get(lim, res[k]), *q = json_object_get(req, res[k]);
            if (!l || (q && !json_equal((json_t *)l, (json_t *)q)))
                guaranteed = false;
        }
    }
    return !any ? "BestEffort" : guaranteed ? "Guaranteed" : "Burstable";
}

void ks_apply_defaults(const ks_res *res, json_t *obj)
{
    if (res->id == KS_RES_NAMESPACE) {
        json_t *md = json_object_get(obj, "metadata");
        json_t *l = json_object_get(md, "labels");
        if (!json_is_object(l)) {
            l = json_object();
            json_object_set_new(md, "labels", l);
        }
        /* the NamespaceDefaultLabelName admission: kubernetes.io/metadata.name = name */
        json_object_set(l, "kubernetes.io/metadata.name", json_object_get(md, "name"));
        json_t *spec = json_object_get(obj, "spec");
        if (!json_is_object(spec)) {
            spec = json_object();
            json_object_set_new(obj, "spec", spec);
        }
        set_default(spec, "finalizers", json_pack("[s]", "kubernetes"));
        return;
    }
    if (res->id != KS_RES_POD)
        return;
    json_t *spec = json_object_get(obj, "spec");
    if (!json_is_object(spec))
        return;
    set_default(spec, "restartPolicy", json_string("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json_integer(30));
    set_default(spec, "dnsPolicy", json_string("ClusterFirst"));
    set_default(spec, "securityContext", json_object());
    set_default(spec, "schedulerName", json_string("default-scheduler"));
    set_default(spec, "enableServiceLinks", json_true());
    set_default(spec, "preemptionPolicy", json_string("PreemptLowerPriority"));
    set_default(spec, "priority", json_integer(0));
    default_containers(spec, "containers");
    default_containers(spec, "initContainers");
}
