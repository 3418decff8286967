/* kapi-sim API verbs: create, get, list, update, patch and delete on the resources of
 * ks_resources, with the checks kube-apiserver makes (names, namespaces, resourceVersion
 * preconditions, immutable pod spec) and metav1.Status errors.
 *
 * Each verb takes the store mutex once. The expensive parts that do not need it (parsing the
 * request, serialising the answer) happen in http.c outside the lock; the answer is a new
 * reference to the immutable stored object.
 */
#include "sim.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const ks_res ks_resources[KS_RES_COUNT] = {
#define XX(id, g, v, p, k, nsd, st, cr, sn)                                                        \
    {KS_RES_##id, g, v, p, k, k "List", g[0] ? g "/" v : v, nsd, st, cr, sn},
        KS_RESOURCES(XX)
#undef XX
};

const char *const ks_verb_names[KS_VERB_COUNT] = {"get",    "list",  "watch",  "create",
                                                  "update", "patch", "delete", "other"};

const ks_res *ks_res_find(const char *group, const char *version, const char *plural)
{
    for (int i = 0; i < KS_RES_COUNT; i++) {
        const ks_res *r = &ks_resources[i];
        if (strcmp(r->group, group) == 0 && strcmp(r->version, version) == 0 &&
            strcmp(r->plural, plural) == 0)
            return r;
    }
    return NULL;
}

void ks_err_set(ks_err *e, int code, const char *reason, const char *fmt, ...)
{
    e->code = code;
    e->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

json_t *ks_status_json(const ks_err *e, const ks_res *res, const char *name)
{
    json_t *st = json_pack("{s:s,s:s,s:{},s:s,s:s,s:s,s:i}", "kind", "Status", "apiVersion", "v1",
                           "metadata", "status", e->code < 400 ? "Success" : "Failure", "message",
                           e->message, "reason", e->reason ? e->reason : "", "code", e->code);
    if (res || name) {
        json_t *d = json_object();
        if (name)
            json_object_set_new(d, "name", json_string(name));
        if (res) {
            json_object_set_new(d, "group", json_string(res->group));
            json_object_set_new(d, "kind", json_string(res->plural));
        }
        if (e->code == 422 && res) {
            /* kubectl prints `The Pod "x" is invalid: <field>: <cause>` from these. */
            json_object_set_new(d, "kind", json_string(res->kind));
            const char *m = strstr(e->message, "is invalid: ");
            m = m ? m + 12 : e->message;
            const char *f = e->field ? e->field : "";
            size_t fl = strlen(f);
            if (fl && strncmp(m, f, fl) == 0 && m[fl] == ':')
                m += fl + 2;
            json_object_set_new(d, "causes",
                                json_pack("[{s:s,s:s,s:s}]", "reason", "FieldValueInvalid",
                                          "message", m, "field", f));
        }
        json_object_set_new(st, "details", d);
    }
    return st;
}

static const char *res_ref(const ks_res *res, char *buf, size_t n)
{
    if (res->group[0])
        snprintf(buf, n, "%s.%s", res->plural, res->group);
    else
        snprintf(buf, n, "%s", res->plural);
    return buf;
}

static void err_not_found(ks_err *err, const ks_res *res, const char *name)
{
    char r[128];
    ks_err_set(err, 404, "NotFound", "%s \"%s\" not found", res_ref(res, r, sizeof r), name);
}

static void err_conflict(ks_err *err, const ks_res *res, const char *name)
{
    char r[128];
    ks_err_set(err, 409, "Conflict",
               "Operation cannot be fulfilled on %s \"%s\": the object has been modified; please "
               "apply your changes to the latest version and try again",
               res_ref(res, r, sizeof r), name);
}

static bool ns_exists_locked(ks_store *s, const char *ns)
{
    return ks_store_get_locked(s, &ks_resources[KS_RES_NAMESPACE], NULL, ns) != NULL;
}

static json_t *meta_of(json_t *obj)
{
    json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md)) {
        md = json_object();
        json_object_set_new(obj, "metadata", md);
    }
    return md;
}

void ks_new_uid_locked(ks_store *s, char *buf, size_t n)
{
    uint64_t seq = ++s->uid_seq;
    uint32_t r = (uint32_t)(ks_now_ns() ^ (int64_t)(seq * 2654435761u));
    snprintf(buf, n, "%08x-%04x-4%03x-8%03x-%012" PRIx64, r, (unsigned)(seq >> 32) & 0xffff,
             (unsigned)(seq >> 16) & 0xfff, (unsigned)seq & 0xfff,
             (uint64_t)(seq * 0x9e3779b97f4a7c15ull & 0xffffffffffffull));
}

static void random_suffix(char *out, size_t n)
{
    static const char al[] = "bcdfghjklmnpqrstvwxz2456789";
    uint64_t x = (uint64_t)ks_now_ns() * 6364136223846793005ull + (uint64_t)(uintptr_t)out;
    for (size_t i = 0; i + 1 < n; i++) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        out[i] = al[x % (sizeof al - 1)];
    }
    out[n - 1] = '\0';
}

/* ObjectMeta field types, as the real server's decoder enforces them (400 BadRequest): a
 * resourceVersion sent as a number must not silently turn a CAS into an unconditional write. */
static bool check_meta_types(const json_t *obj, ks_err *err)
{
    const json_t *md = json_object_get(obj, "metadata");
    if (md && !json_is_object(md)) {
        ks_err_set(err, 400, "BadRequest", "metadata: expected an object");
        return false;
    }
    static const char *const strs[] = {"name", "namespace",    "resourceVersion",
                                       "uid",  "generateName", "creationTimestamp"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const json_t *v = json_object_get(md, strs[i]);
        if (v && !json_is_string(v) && !json_is_null(v)) {
            ks_err_set(err, 400, "BadRequest", "metadata.%s: expected a string, got a JSON %s",
                       strs[i],
                       json_is_number(v)   ? "number"
                       : json_is_object(v) ? "object"
                       : json_is_array(v)  ? "array"
                                           : "value");
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
            if (!json_is_string(v)) {
                ks_err_set(err, 400, "BadRequest", "metadata.%s[%.100s]: expected a string",
                           maps[i], k);
                return false;
            }
        }
    }
    return true;
}

/* Check kind/apiVersion of a request body against the resource; fill them in when absent. */
static bool check_kind(json_t *obj, const ks_res *res, ks_err *err)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *av = json_string_value(json_object_get(obj, "apiVersion"));
    if (kind && *kind && strcmp(kind, res->kind) != 0) {
        ks_err_set(err, 400, "BadRequest", "the kind in the body (%.100s) does not match %s", kind,
                   res->kind);
        return false;
    }
    if (av && *av && strcmp(av, res->api_version) != 0) {
        ks_err_set(err, 400, "BadRequest",
                   "the API version in the data (%.100s) does not match the expected API version "
                   "(%s)",
                   av, res->api_version);
        return false;
    }
    json_object_set_new(obj, "kind", json_string(res->kind));
    json_object_set_new(obj, "apiVersion", json_string(res->api_version));
    return true;
}

json_t *ks_api_create(ks_store *s, const ks_res *res, const char *ns, json_t *body, ks_err *err,
                      char **text)
{
    if (!json_is_object(body)) {
        ks_err_set(err, 400, "BadRequest", "the body of a create must be a JSON object");
        return NULL;
    }
    json_t *obj = json_deep_copy(body);
    json_t *ret = NULL;
    if (text)
        *text = NULL;
    if (!check_meta_types(obj, err)) /* before meta_of, which would replace a bad metadata */
        goto out;
    json_t *md = meta_of(obj);
    if (!check_kind(obj, res, err))
        goto out;
    if (!res->namespaced) {
        ns = NULL;
        json_object_del(md, "namespace");
    } else {
        const char *bns = json_string_value(json_object_get(md, "namespace"));
        if (bns && *bns && ns && strcmp(bns, ns) != 0) {
            ks_err_set(err, 400, "BadRequest",
                       "the namespace of the provided object (%.100s) does not match the namespace "
                       "sent on the request (%.100s)",
                       bns, ns);
            goto out;
        }
        if (!ns)
            ns = bns;
        if (!ns || !*ns) {
            ks_err_set(err, 400, "BadRequest", "a namespace is required to create %s", res->plural);
            goto out;
        }
        json_object_set_new(md, "namespace", json_string(ns));
    }
    if (json_object_get(md, "resourceVersion") &&
        json_string_length(json_object_get(md, "resourceVersion")) > 0) {
        ks_err_set(err, 400, "BadRequest",
                   "resourceVersion should not be set on objects to be created");
        goto out;
    }
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *gen = json_string_value(json_object_get(md, "generateName"));
    char namebuf[300];
    if ((!name || !*name) && gen && *gen) {
        char sfx[6];
        random_suffix(sfx, sizeof sfx);
        snprintf(namebuf, sizeof namebuf, "%.250s%s", gen, sfx);
        json_object_set_new(md, "name", json_string(namebuf));
        name = json_string_value(json_object_get(md, "name"));
    }
    if (!name || !*name) {
        ks_err_set(err, 422, "Invalid",
                   "%s.%s \"\" is invalid: metadata.name: Required value: name or generateName is "
                   "required",
                   res->kind, res->group[0] ? res->group : "core");
        err->field = "metadata.name";
        goto out;
    }
    if (strlen(name) > 253 || strchr(name, '/')) {
        ks_err_set(err, 422, "Invalid", "%s \"%.100s\" is invalid: metadata.name: Invalid value",
                   res->kind, name);
        goto out;
    }
    char ts[40], uid[48];
    ks_rfc3339_now(ts, sizeof ts);
    json_object_set_new(md, "creationTimestamp", json_string(ts));
    if (json_object_get(obj, "spec"))
        json_object_set_new(md, "generation", json_integer(1));
    if (res->id == KS_RES_POD && !json_is_object(json_object_get(obj, "status")))
        json_object_set_new(obj, "status", json_pack("{s:s}", "phase", "Pending"));
    if (res->id == KS_RES_NAMESPACE)
        json_object_set_new(obj, "status", json_pack("{s:s}", "phase", "Active"));
    if (res->custom)
        json_object_del(obj, "status"); /* status is only written through /status */

    pthread_mutex_lock(&s->mu);
    if (res->namespaced && !ns_exists_locked(s, ns)) {
        ks_err_set(err, 404, "NotFound", "namespaces \"%.200s\" not found", ns);
    } else if (ks_store_get_locked(s, res, ns, name)) {
        char r[128];
        ks_err_set(err, 409, "AlreadyExists", "%s \"%.200s\" already exists",
                   res_ref(res, r, sizeof r), name);
    } else {
        ks_new_uid_locked(s, uid, sizeof uid);
        json_object_set_new(md, "uid", json_string(uid));
        ret = json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, obj));
        obj = NULL;
        if (text)
            *text = ks_store_last_text_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
out:
    json_decref(obj);
    return ret;
}

json_t *ks_api_get(ks_store *s, const ks_res *res, const char *ns, const char *name, ks_err *err)
{
    pthread_mutex_lock(&s->mu);
    json_t *o = (json_t *)ks_store_get_locked(s, res, ns, name);
    if (o)
        json_incref(o);
    pthread_mutex_unlock(&s->mu);
    if (!o)
        err_not_found(err, res, name);
    return o;
}

/* Pod spec fields other than these may not change after creation (k8s ValidatePodUpdate).
 * Compared in place: copying both specs per PATCH was a measurable share of its cost. */
static bool in_list(const char *k, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(k, *list) == 0)
            return true;
    return false;
}

static bool obj_equal_except(const json_t *a, const json_t *b, const char *const *ignore)
{
    if (!a && !b) /* json_equal(NULL, NULL) is false */
        return true;
    if (!json_is_object(a) || !json_is_object(b))
        return json_equal((json_t *)a, (json_t *)b);
    const char *k;
    json_t *v;
    size_t na = 0, nb = 0;
    json_object_foreach((json_t *)a, k, v)
    {
        if (in_list(k, ignore))
            continue;
        na++;
        if (!json_equal(v, json_object_get(b, k)))
            return false;
    }
    json_object_foreach((json_t *)b, k, v) nb += !in_list(k, ignore);
    return na == nb;
}

static bool containers_equal_but_image(const json_t *a, const json_t *b)
{
    static const char *const img[] = {"image", NULL};
    if (!a && !b)
        return true;
    if (!json_is_array(a) || !json_is_array(b))
        return json_equal((json_t *)a, (json_t *)b);
    if (json_array_size(a) != json_array_size(b))
        return false;
    for (size_t i = 0; i < json_array_size(a); i++)
        if (!obj_equal_except(json_array_get(a, i), json_array_get(b, i), img))
            return false;
    return true;
}

static bool pod_spec_update_allowed(const json_t *old, const json_t *new)
{
    static const char *const mutable_or_lists[] = {
            "activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "containers",
            "initContainers",        NULL};
    if (old == new)
        return true;
    return obj_equal_except(old, new, mutable_or_lists) &&
           containers_equal_but_image(json_object_get(old, "containers"),
                                      json_object_get(new, "containers")) &&
           containers_equal_but_image(json_object_get(old, "initContainers"),
                                      json_object_get(new, "initContainers"));
}

/* Turn a candidate new state of an existing object into the one to store, or fail.
 * cand is owned by the caller; old is the stored object. */
static bool finish_update(ks_store *s, const ks_res *res, const char *name, const json_t *old,
                          json_t *cand, const char *sub, ks_err *err)
{
    (void)s;
    /* The candidate may share subtrees with the stored object (patch.c copies only what it
     * changes); metadata is written below and at commit, so it gets its own copy here. */
    json_t *md = json_copy(meta_of(cand));
    json_object_set_new(cand, "metadata", md);
    json_t *omd = json_object_get(old, "metadata");
    const char *cname = json_string_value(json_object_get(md, "name"));
    if (cname && strcmp(cname, name) != 0) {
        ks_err_set(err, 400, "BadRequest",
                   "the name of the object (%.200s) does not match the name on the URL (%.200s)",
                   cname, name);
        return false;
    }
    const char *cns = json_string_value(json_object_get(md, "namespace"));
    const char *ons = json_string_value(json_object_get(omd, "namespace"));
    if (res->namespaced && cns && ons && strcmp(cns, ons) != 0) {
        ks_err_set(err, 400, "BadRequest",
                   "the namespace of the provided object (%.100s) does not match the namespace "
                   "sent on the request (%.100s)",
                   cns, ons);
        return false;
    }
    if (!check_kind(cand, res, err))
        return false;
    /* Fields the server owns are carried over from the stored object. */
    const char *keep[] = {"name", "namespace", "uid", "creationTimestamp", "generation"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        json_t *v = json_object_get(omd, keep[i]);
        if (v)
            json_object_set(md, keep[i], v);
        else
            json_object_del(md, keep[i]);
    }
    bool internal = sub && strcmp(sub, "*") == 0; /* the pool controller: all fields */
    if (sub && strcmp(sub, "status") == 0) {
        /* /status writes change status only (metadata and spec stay as stored). */
        json_t *st = json_object_get(cand, "status");
        json_t *n = json_deep_copy(old);
        if (st)
            json_object_set(n, "status", st);
        else
            json_object_del(n, "status");
        json_object_clear(cand);
        json_object_update(cand, n);
        json_decref(n);
        return true;
    }
    if (res->has_status && !internal) { /* the main resource ignores status changes */
        json_t *st = json_object_get(old, "status");
        if (st)
            json_object_set(cand, "status", st);
        else
            json_object_del(cand, "status");
    }
    if (res->id == KS_RES_POD) {
        if (!pod_spec_update_allowed(json_object_get(old, "spec"), json_object_get(cand, "spec"))) {
            ks_err_set(err, 422, "Invalid",
                       "Pod \"%.200s\" is invalid: spec: Forbidden: pod updates may not change "
                       "fields other than `spec.containers[*].image`,`spec.initContainers[*].image`"
                       ",`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                       "existing tolerations),`spec.terminationGracePeriodSeconds`",
                       name);
            err->field = "spec";
            return false;
        }
    }
    if (!json_equal(json_object_get(old, "spec"), json_object_get(cand, "spec"))) {
        json_int_t g = json_integer_value(json_object_get(omd, "generation"));
        json_object_set_new(md, "generation", json_integer(g + 1));
    }
    return true;
}

/* Common tail of update and patch: precondition, checks, commit. Takes the lock. */
typedef ks_mutate_fn mutate_fn;

/* Build the new state from cur: patch or replacement, precondition, server-side checks.
 * Returns the candidate (owned), NULL with err set, or NULL with *noop set when the write
 * changes nothing. Needs no lock: cur is immutable. */
static json_t *prepare(const ks_res *res, const char *name, const char *sub, bool rv_required,
                       mutate_fn fn, const void *arg, const json_t *cur, ks_err *err, bool *noop)
{
    json_t *cand = fn(cur, arg, err);
    if (!cand)
        return NULL;
    if (!json_is_object(cand)) {
        ks_err_set(err, 422, "Invalid", "the result of the %s is not an object",
                   rv_required ? "update" : "patch");
        json_decref(cand);
        return NULL;
    }
    if (!check_meta_types(cand, err)) {
        json_decref(cand);
        return NULL;
    }
    /* metadata.resourceVersion in the new state is a precondition (optimistic concurrency):
     * kube-apiserver answers 409 Conflict when it differs from the stored version. */
    const char *want = ks_meta_str(cand, "resourceVersion");
    const char *have = ks_meta_str(cur, "resourceVersion");
    if (want && *want && strcmp(want, have) != 0) {
        err_conflict(err, res, name);
    } else if ((!want || !*want) && rv_required) {
        ks_err_set(err, 422, "Invalid",
                   "%s \"%.200s\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must "
                   "be specified for an update",
                   res->kind, name);
        err->field = "metadata.resourceVersion";
    } else if (finish_update(NULL, res, name, cur, cand, sub, err)) {
        /* Compare with the stored version's resourceVersion so an unchanged object is seen. */
        json_object_set(meta_of(cand), "resourceVersion",
                        json_object_get(json_object_get(cur, "metadata"), "resourceVersion"));
        if (!json_equal((json_t *)cur, cand))
            return cand;
        *noop = true; /* a no-op write keeps the version and makes no event, as in Kubernetes */
    }
    json_decref(cand);
    return NULL;
}

/* Update or patch an existing object. The work (patch, checks, serialisation) happens outside
 * the store mutex on the immutable current version; the commit then only checks, under the
 * mutex, that the object is still that version (pointer identity: we hold a reference, so the
 * address cannot be reused) and swaps it in. A writer that lost a race redoes its work against
 * the newer version, where its resourceVersion precondition, if any, now fails with 409: the
 * same outcome as if the writes had been serialised. Holding the mutex for the whole write
 * made connection threads queue behind each other and left a core idle. */
static json_t *write_existing(ks_store *s, const ks_res *res, const char *ns, const char *name,
                              const char *sub, bool rv_required, mutate_fn fn, const void *arg,
                              ks_err *err, char **text)
{
    if (text)
        *text = NULL;
    if (sub && strcmp(sub, "*") != 0 && (strcmp(sub, "status") != 0 || !res->has_status)) {
        ks_err_set(err, 404, "NotFound", "the server could not find the requested resource");
        return NULL;
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        pthread_mutex_lock(&s->mu);
        json_t *cur = (json_t *)ks_store_get_locked(s, res, ns, name);
        if (cur)
            json_incref(cur);
        pthread_mutex_unlock(&s->mu);
        if (!cur) {
            err_not_found(err, res, name);
            return NULL;
        }
        bool noop = false;
        json_t *cand = prepare(res, name, sub, rv_required, fn, arg, cur, err, &noop);
        if (!cand) {
            if (noop)
                return cur;
            json_decref(cur);
            return NULL;
        }
        ks_prepared pr;
        ks_store_prepare(&pr, cand);
        ks_event old;
        pthread_mutex_lock(&s->mu);
        bool same = ks_store_get_locked(s, res, ns, name) == cur;
        uint64_t rev = 0;
        if (same)
            rev = ks_store_commit_prepared_locked(s, res, ns, name, &pr, &old);
        pthread_mutex_unlock(&s->mu);
        json_decref(cur);
        if (!same) {
            ks_prepared_fini(&pr);
            continue;
        }
        ks_event_release(&old);
        if (text)
            *text = ks_prepared_text(&pr, rev);
        return ks_prepared_take(&pr);
    }
    ks_err_set(err, 409, "Conflict", "too many concurrent writers on %s \"%.200s\"", res->plural,
               name);
    return NULL;
}

json_t *ks_api_write_internal(ks_store *s, const ks_res *res, const char *ns, const char *name,
                              ks_mutate_fn fn, const void *arg, ks_err *err)
{
    return write_existing(s, res, ns, name, "*", false, fn, arg, err, NULL);
}

static json_t *mut_replace(const json_t *cur, const void *arg, ks_err *err)
{
    (void)cur;
    (void)err;
    return json_deep_copy((const json_t *)arg);
}

json_t *ks_api_update(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const char *sub, const json_t *body, ks_err *err, char **text)
{
    if (!json_is_object(body)) {
        ks_err_set(err, 400, "BadRequest", "the body of an update must be a JSON object");
        return NULL;
    }
    return write_existing(s, res, ns, name, sub, true, mut_replace, body, err, text);
}

typedef struct patch_arg {
    ks_patch_type t;
    const json_t *patch;
} patch_arg;

static json_t *mut_patch(const json_t *cur, const void *arg, ks_err *err)
{
    const patch_arg *pa = arg;
    return ks_patch_apply(pa->t, cur, pa->patch, err);
}

json_t *ks_api_patch(ks_store *s, const ks_res *res, const char *ns, const char *name,
                     const char *sub, ks_patch_type t, const json_t *patch, ks_err *err,
                     char **text)
{
    if (t == KS_PATCH_STRATEGIC && res->custom) {
        /* kube-apiserver has no Go struct tags for custom resources to merge by. */
        ks_err_set(err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json-patch+json, application/merge-patch+json, "
                   "application/apply-patch+yaml");
        return NULL;
    }
    if (t == KS_PATCH_APPLY || t < 0 || t >= KS_PATCH_COUNT) {
        ks_err_set(err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json-patch+json, application/merge-patch+json, "
                   "application/strategic-merge-patch+json");
        return NULL;
    }
    patch_arg pa = {t, patch};
    return write_existing(s, res, ns, name, sub, false, mut_patch, &pa, err, text);
}

static void delete_namespace_contents_locked(ks_store *s, const char *ns)
{
    char pfx[300];
    size_t pl = (size_t)snprintf(pfx, sizeof pfx, "%s/", ns);
    for (int r = 0; r < KS_RES_COUNT; r++) {
        const ks_res *res = &ks_resources[r];
        if (!res->namespaced)
            continue;
        json_t *names = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(s->objs[r], k, v)
        {
            if (strncmp(k, pfx, pl) == 0)
                json_array_append_new(names, json_string(k + pl));
        }
        size_t i;
        json_array_foreach(names, i, v)
                ks_store_commit_locked(s, res, ns, json_string_value(v), NULL);
        json_decref(names);
    }
}

json_t *ks_api_delete(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const json_t *opts, ks_err *err)
{
    json_t *pre = json_object_get(opts, "preconditions");
    const char *want_rv = json_string_value(json_object_get(pre, "resourceVersion"));
    const char *want_uid = json_string_value(json_object_get(pre, "uid"));
    json_t *ret = NULL;
    pthread_mutex_lock(&s->mu);
    const json_t *cur = ks_store_get_locked(s, res, ns, name);
    if (!cur) {
        err_not_found(err, res, name);
    } else if (want_rv && strcmp(want_rv, ks_meta_str(cur, "resourceVersion")) != 0) {
        char r[128];
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s \"%.200s\": Precondition failed: "
                   "ResourceVersion in precondition: %.40s, ResourceVersion in object meta: %s",
                   res_ref(res, r, sizeof r), name, want_rv, ks_meta_str(cur, "resourceVersion"));
    } else if (want_uid &&
               strcmp(want_uid, ks_meta_str(cur, "uid") ? ks_meta_str(cur, "uid") : "")) {
        char r[128];
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s \"%.200s\": Precondition failed: UID in "
                   "precondition: %.60s",
                   res_ref(res, r, sizeof r), name, want_uid);
    } else {
        if (res->id == KS_RES_NAMESPACE)
            delete_namespace_contents_locked(s, name);
        ret = json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, NULL));
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

/* ---- list ----------------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_encode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
}

static bool b64_decode(const char *in, char *out, size_t cap)
{
    size_t o = 0, bits = 0;
    uint32_t acc = 0;
    for (; *in; in++) {
        const char *p = strchr(b64, *in);
        if (!p || !*in)
            return false;
        acc = (acc << 6) | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return false;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *ks_api_list(ks_store *s, const ks_res *res, const char *ns, const ks_lsel *ls,
                    const ks_fsel *fs, long limit, const char *cont, ks_err *err)
{
    char start[600] = "";
    uint64_t list_rev = 0;
    if (cont && *cont) {
        char dec[700];
        char *sep;
        if (!b64_decode(cont, dec, sizeof dec) || !(sep = strchr(dec, '|')) ||
            sscanf(dec, "%" SCNu64, &list_rev) != 1) {
            ks_err_set(err, 400, "BadRequest", "continue key is not valid: %.100s", cont);
            return NULL;
        }
        snprintf(start, sizeof start, "%s", sep + 1);
    }
    char pfx[300] = "";
    size_t pl = 0;
    if (res->namespaced && ns)
        pl = (size_t)snprintf(pfx, sizeof pfx, "%s/", ns);

    json_t *items = json_array();
    pthread_mutex_lock(&s->mu);
    if (list_rev && list_rev < s->compacted) {
        pthread_mutex_unlock(&s->mu);
        json_decref(items);
        ks_err_set(err, 410, "Expired",
                   "The provided continue parameter is too old to display a consistent list "
                   "result. You can start a new list without the continue parameter.");
        return NULL;
    }
    size_t n = json_object_size(s->objs[res->id]), k = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    const char *key;
    json_t *v;
    json_object_foreach(s->objs[res->id], key, v)
    {
        if (pl && strncmp(key, pfx, pl) != 0)
            continue;
        if (start[0] && strcmp(key, start) <= 0)
            continue;
        keys[k++] = key;
    }
    qsort(keys, k, sizeof *keys, cmp_str);
    if (!list_rev)
        list_rev = s->rev;
    size_t taken = 0, i;
    const char *last = NULL;
    for (i = 0; i < k; i++) {
        json_t *o = json_object_get(s->objs[res->id], keys[i]);
        if (!ks_lsel_match(ls, json_object_get(json_object_get(o, "metadata"), "labels")) ||
            !ks_fsel_match(fs, o))
            continue;
        if (limit > 0 && taken == (size_t)limit)
            break;
        json_array_append(items, o);
        taken++;
        last = keys[i];
    }
    char token[1000] = "";
    if (limit > 0 && i < k && last) {
        char raw[700];
        int rl = snprintf(raw, sizeof raw, "%" PRIu64 "|%s", list_rev, last);
        b64_encode(raw, (size_t)rl < sizeof raw ? (size_t)rl : sizeof raw - 1, token);
    }
    pthread_mutex_unlock(&s->mu);
    free(keys);

    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, list_rev);
    json_t *md = json_pack("{s:s}", "resourceVersion", rv);
    if (token[0])
        json_object_set_new(md, "continue", json_string(token));
    return json_pack("{s:s,s:s,s:o,s:o}", "kind", res->list_kind, "apiVersion", res->api_version,
                     "metadata", md, "items", items);
}

void ks_ensure_namespace(ks_store *s, const char *ns)
{
    json_t *o = json_pack("{s:{s:s}}", "metadata", "name", ns);
    ks_err err = {0};
    json_t *r = ks_api_create(s, &ks_resources[KS_RES_NAMESPACE], NULL, o, &err, NULL);
    json_decref(r);
    json_decref(o);
}
