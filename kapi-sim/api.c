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
#include <time.h>

const ks_res ks_resources[KS_RES_COUNT] = {
#define XX(id, g, v, p, k, nsd, st, cr, sn, uu)                                                    \
    {KS_RES_##id, g, v, p, k, k "List", g[0] ? g "/" v : v, nsd, st, cr, sn, uu},
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

void ks_err_details(ks_err *e, const char *group, const char *kind, const char *name)
{
    e->d_set = true;
    e->d_group = group;
    e->d_kind = kind;
    snprintf(e->d_name, sizeof e->d_name, "%s", name ? name : "");
}

void ks_err_cause(ks_err *e, const char *type, const char *field, const char *fmt, ...)
{
    if (e->ncauses >= KS_MAX_CAUSES)
        return;
    ks_cause *c = &e->causes[e->ncauses++];
    c->type = type;
    snprintf(c->field, sizeof c->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    size_t n = (p[0] & 0xe0) == 0xc0   ? 2
               : (p[0] & 0xf0) == 0xe0 ? 3
               : (p[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
    if (!n || (n == 2 && p[0] < 0xc2) || (n == 4 && p[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if (n == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0)))
        return 0; /* overlong, or a UTF-16 surrogate */
    if (n == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90)))
        return 0;
    return n;
}

char *ks_utf8_repair(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *w = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t l = utf8_seq(p);
        if (l) {
            memcpy(w, p, l);
            w += l;
            p += l;
        } else {
            memcpy(w, "\xef\xbf\xbd", 3); /* U+FFFD, one per bad byte like Go */
            w += 3;
            p++;
        }
    }
    *w = '\0';
    return out;
}

static json_t *str_json(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j)
        return j;
    char *r = ks_utf8_repair(s); /* jansson refuses invalid UTF-8 */
    j = json_string(r ? r : "");
    free(r);
    return j;
}

json_t *ks_status_json(const ks_err *e, const ks_res *res, const char *name)
{
    json_t *st = json_pack("{s:s,s:s,s:{},s:s,s:o}", "kind", "Status", "apiVersion", "v1",
                           "metadata", "status", e->code < 400 ? "Success" : "Failure", "message",
                           str_json(e->message));
    if (!st)
        return NULL;
    /* Go omits empty fields: a Success carries no code or reason, an InternalError no reason */
    if (e->reason && *e->reason)
        json_object_set_new(st, "reason", json_string(e->reason));
    if (e->code >= 400)
        json_object_set_new(st, "code", json_integer(e->code));
    if (e->code < 400)
        json_object_del(st, "message");
    /* Which details kube-apiserver sends depends on the error's constructor: none for
     * NewBadRequest (400), the object for NotFound/AlreadyExists/Conflict (kind = resource),
     * the Kind for Invalid; {} for MethodNotAllowed, UnsupportedMediaType (d_set, empty). */
    if (e->no_details || (!e->d_set && (e->code == 400 || e->code == 500)))
        return st;
    json_t *d = json_object();
    const char *group = res ? res->group : NULL;
    const char *kind = res ? (e->code == 422 ? res->kind : res->plural) : NULL;
    if (e->d_set) {
        group = e->d_group;
        kind = e->d_kind;
        name = e->d_name;
    }
    if (name && *name)
        json_object_set_new(d, "name", str_json(name));
    if (group && *group)
        json_object_set_new(d, "group", json_string(group));
    if (kind && *kind)
        json_object_set_new(d, "kind", json_string(kind));
    if (e->ncauses) {
        json_t *cs = json_array();
        for (int i = 0; i < e->ncauses; i++) {
            json_t *c = json_pack("{s:s,s:o}", "reason", e->causes[i].type, "message",
                                  str_json(e->causes[i].message));
            if (e->causes[i].field[0])
                json_object_set_new(c, "field", str_json(e->causes[i].field));
            json_array_append_new(cs, c);
        }
        json_object_set_new(d, "causes", cs);
    } else if (e->code == 422 && e->field) {
        const char *m = strstr(e->message, "is invalid: ");
        m = m ? m + 12 : e->message;
        const char *f = e->field;
        size_t fl = strlen(f);
        if (fl && strncmp(m, f, fl) == 0 && m[fl] == ':')
            m += fl + 2;
        json_object_set_new(d, "causes",
                            json_pack("[{s:s,s:o,s:s}]", "reason", "FieldValueInvalid", "message",
                                      str_json(m), "field", f));
    }
    if (e->retry_after_s > 0)
        json_object_set_new(d, "retryAfterSeconds", json_integer(e->retry_after_s));
    if (json_object_size(d) || res || name || e->d_set)
        json_object_set_new(st, "details", d);
    else
        json_decref(d);
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

/* metadata.generation: pods, CRDs and custom resources have one; leases, namespaces not. */
static bool has_generation(const ks_res *res)
{
    return res->id == KS_RES_POD || res->id == KS_RES_CRD || res->custom;
}

json_t *ks_api_create(ks_store *s, const ks_res *res, const char *ns, json_t *body, ks_err *err,
                      char **text, bool dry)
{
    if (!json_is_object(body)) {
        ks_err_set(err, 400, "BadRequest", "the body of a create must be a JSON object");
        return NULL;
    }
    json_t *obj = json_deep_copy(body);
    json_t *ret = NULL;
    if (text)
        *text = NULL;
    if (!ks_check_meta_types(obj, err)) /* before meta_of, which would replace a bad metadata */
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
        /* kube-apiserver answers this with a bare InternalError (no reason) */
        ks_err_set(err, 500, NULL, "resourceVersion should not be set on objects to be created");
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
    /* A deletion in progress or finalizers' owners are the server's business, not a create's. */
    json_object_del(md, "deletionTimestamp");
    json_object_del(md, "deletionGracePeriodSeconds");
    ks_apply_defaults(res, obj);
    ks_drop_empty_meta(md);
    if (!ks_validate(res, obj, NULL, err))
        goto out;
    char ts[40], uid[48];
    ks_rfc3339_now(ts, sizeof ts);
    json_object_set_new(md, "creationTimestamp", json_string(ts));
    if (has_generation(res))
        json_object_set_new(md, "generation", json_integer(1));
    if (res->id == KS_RES_POD) /* PrepareForCreate: status is the server's */
        json_object_set_new(obj, "status",
                            json_pack("{s:s,s:s}", "phase", "Pending", "qosClass",
                                      ks_pod_qos_class(json_object_get(obj, "spec"))));
    if (res->id == KS_RES_NAMESPACE)
        json_object_set_new(obj, "status", json_pack("{s:s}", "phase", "Active"));
    if (res->custom)
        json_object_del(obj, "status"); /* status is only written through /status */

    pthread_mutex_lock(&s->mu);
    if (res->namespaced && !ns_exists_locked(s, ns)) {
        ks_err_set(err, 404, "NotFound", "namespaces \"%.200s\" not found", ns);
        ks_err_details(err, "", "namespaces", ns);
    } else if (ks_store_get_locked(s, res, ns, name)) {
        char r[128];
        ks_err_set(err, 409, "AlreadyExists", "%s \"%.200s\" already exists",
                   res_ref(res, r, sizeof r), name);
        ks_err_details(err, res->group, res->plural, name);
    } else if (dry) {
        /* dryRun: the object as it would be stored, without a resourceVersion */
        ks_new_uid_locked(s, uid, sizeof uid);
        json_object_set_new(md, "uid", json_string(uid));
        ret = obj;
        obj = NULL;
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
    const char *keep[] = {"name",
                          "namespace",
                          "uid",
                          "creationTimestamp",
                          "generation",
                          "deletionTimestamp",
                          "deletionGracePeriodSeconds"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        json_t *v = json_object_get(omd, keep[i]);
        if (v)
            json_object_set(md, keep[i], v);
        else
            json_object_del(md, keep[i]);
    }
    ks_drop_empty_meta(md);
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
    if (!internal && ks_needs_defaults(res, cand)) {
        /* every decoded object is defaulted, updates too; spec may be shared with the stored
         * version, so it is copied first (only when a default is missing) */
        json_object_set_new(cand, "spec", json_deep_copy(json_object_get(cand, "spec")));
        ks_apply_defaults(res, cand);
    }
    if (res->id == KS_RES_POD) {
        if (!pod_spec_update_allowed(json_object_get(old, "spec"), json_object_get(cand, "spec"))) {
            ks_err_set(err, 422, "Invalid",
                       "Pod \"%.200s\" is invalid: spec: Forbidden: pod updates may not change "
                       "fields other than `spec.containers[*].image`,`spec.initContainers[*].image`"
                       ",`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                       "existing tolerations),`spec.terminationGracePeriodSeconds`",
                       name);
            ks_err_cause(err, "FieldValueForbidden", "spec",
                         "Forbidden: pod updates may not change fields other than "
                         "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                         "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                         "existing tolerations),`spec.terminationGracePeriodSeconds`");
            ks_err_details(err, res->group, res->kind, name);
            return false;
        }
    }
    if (!json_equal(json_object_get(old, "spec"), json_object_get(cand, "spec"))) {
        json_int_t g = json_integer_value(json_object_get(omd, "generation"));
        json_object_set_new(md, "generation", json_integer(g + 1));
    }
    if (json_object_get(omd, "deletionTimestamp")) {
        /* A terminating object may lose finalizers but gain none (ValidateObjectMetaUpdate). */
        json_t *of = json_object_get(omd, "finalizers"), *nf = json_object_get(md, "finalizers");
        size_t i;
        json_t *f;
        json_array_foreach(nf, i, f)
        {
            bool had = false;
            size_t j;
            json_t *g;
            json_array_foreach(of, j, g) had = had || json_equal(f, g);
            if (!had) {
                ks_err_set(err, 422, "Invalid",
                           "%s \"%.200s\" is invalid: metadata.finalizers: "
                           "Forbidden: no new finalizers can be added if the object is being "
                           "deleted",
                           res->kind, name);
                for (int twice = 0; twice < 2; twice++) /* the real server reports it twice */
                    ks_err_cause(err, "FieldValueForbidden", "metadata.finalizers",
                                 "Forbidden: no new finalizers can be added if the object is being "
                                 "deleted, found new finalizers %s",
                                 json_string_value(f));
                return false;
            }
        }
    }
    return internal || ks_validate(res, cand, old, err);
}

/* After an update: an object being deleted whose last finalizer is gone is removed (the
 * registry's shouldDeleteDuringUpdate), unless a graceful pod deletion is still running. */
static bool delete_after_update(const json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    return json_object_get(md, "deletionTimestamp") &&
           json_array_size(json_object_get(md, "finalizers")) == 0 &&
           json_integer_value(json_object_get(md, "deletionGracePeriodSeconds")) == 0;
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
    if (!ks_check_meta_types(cand, err)) {
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
        ks_err_cause(err, "FieldValueInvalid", "metadata.resourceVersion",
                     "Invalid value: 0x0: must be specified for an update");
        /* unlike field validation, this one names the resource, not the Kind */
        ks_err_details(err, res->group, res->plural, name);
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
                              ks_err *err, char **text, bool dry)
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
        ks_prev_text prev = {0};
        if (cur) {
            json_incref(cur);
            if (!dry)
                ks_store_prev_text_locked(s, cur, &prev);
        }
        pthread_mutex_unlock(&s->mu);
        if (!cur) {
            err_not_found(err, res, name);
            return NULL;
        }
        bool noop = false;
        json_t *cand = prepare(res, name, sub, rv_required, fn, arg, cur, err, &noop);
        if (!cand) {
            ks_prev_text_fini(&prev);
            if (noop)
                return cur;
            json_decref(cur);
            return NULL;
        }
        if (dry) { /* the answer as it would be, at the current version */
            json_decref(cur);
            return cand;
        }
        if (delete_after_update(cand)) {
            ks_prev_text_fini(&prev);
            pthread_mutex_lock(&s->mu);
            bool same = ks_store_get_locked(s, res, ns, name) == cur;
            json_t *gone =
                    same ? json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, NULL))
                         : NULL;
            pthread_mutex_unlock(&s->mu);
            json_decref(cur);
            if (!same) {
                json_decref(cand);
                continue;
            }
            /* the answer is the object as updated, at the version it had (as the real server
             * answers: the deletion's revision is only seen on the watch) */
            json_decref(gone);
            return cand;
        }
        ks_prepared pr;
        ks_store_prepare(&pr, cand, &prev);
        ks_prev_text_fini(&prev); /* before cur goes: prev.mem[].val point into it */
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
    return write_existing(s, res, ns, name, "*", false, fn, arg, err, NULL, false);
}

static json_t *mut_replace(const json_t *cur, const void *arg, ks_err *err)
{
    (void)cur;
    (void)err;
    return json_deep_copy((const json_t *)arg);
}

json_t *ks_api_update(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const char *sub, const json_t *body, ks_err *err, char **text, bool dry)
{
    if (!json_is_object(body)) {
        ks_err_set(err, 400, "BadRequest", "the body of an update must be a JSON object");
        return NULL;
    }
    /* Kubernetes quirk: most REST strategies allow an update without resourceVersion (an
     * unconditional write: pods, namespaces); leases, CRDs and custom resources refuse it. */
    return write_existing(s, res, ns, name, sub, !res->uncond_update, mut_replace, body, err, text,
                          dry);
}

typedef struct patch_arg {
    ks_patch_type t;
    const json_t *patch;
} patch_arg;

static json_t *mut_patch(const json_t *cur, const void *arg, ks_err *err)
{
    const patch_arg *pa = arg;
    json_t *r = ks_patch_apply(pa->t, cur, pa->patch, err);
    if (!r && err->code == 422 && !err->ncauses)
        ks_err_details(err, NULL, NULL, NULL); /* a failed JSON-patch test: details {} */
    return r;
}

json_t *ks_api_patch(ks_store *s, const ks_res *res, const char *ns, const char *name,
                     const char *sub, ks_patch_type t, const json_t *patch, ks_err *err,
                     char **text, bool dry)
{
    if (t == KS_PATCH_STRATEGIC && res->custom) {
        /* kube-apiserver has no Go struct tags for custom resources to merge by. */
        ks_err_set(err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json-patch+json, application/merge-patch+json, "
                   "application/apply-patch+yaml");
        err->no_details = true; /* no details at all, unlike the other 415s */
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
    return write_existing(s, res, ns, name, sub, false, mut_patch, &pa, err, text, dry);
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

static bool has_str(const json_t *arr, const char *v)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), v) == 0)
            return true;
    }
    return false;
}

/* DeleteOptions checks (ValidateDeleteOptions): 422 on meta.k8s.io DeleteOptions. */
static bool check_delete_opts(const json_t *opts, const char **policy, ks_err *err)
{
    const json_t *pp = json_object_get(opts, "propagationPolicy");
    const json_t *od = json_object_get(opts, "orphanDependents");
    *policy = json_string_value(pp);
    const char *why = NULL, *field = "propagationPolicy", *type = "FieldValueNotSupported";
    if (pp && !json_is_null(pp) &&
        (!*policy || (strcmp(*policy, "Orphan") && strcmp(*policy, "Background") &&
                      strcmp(*policy, "Foreground")))) {
        why = "Unsupported value: supported values: \"Foreground\", \"Background\", "
              "\"Orphan\", \"nil\"";
    } else if (pp && !json_is_null(pp) && od && !json_is_null(od)) {
        why = "Invalid value: orphanDependents and deletionPropagation cannot be both set";
        type = "FieldValueInvalid";
    } else if (json_is_true(od)) {
        *policy = "Orphan";
    }
    const json_t *g = json_object_get(opts, "gracePeriodSeconds");
    if (!why && g && !json_is_null(g) && !json_is_integer(g)) {
        ks_err_set(err, 400, "BadRequest", "gracePeriodSeconds: expected an integer");
        return false;
    }
    if (!why)
        return true;
    ks_err_set(err, 422, "Invalid", "DeleteOptions.meta.k8s.io \"\" is invalid: %s: %s", field,
               why);
    ks_err_details(err, "meta.k8s.io", "DeleteOptions", NULL);
    ks_err_cause(err, type, field, "%s", why);
    return false;
}

/* The grace period a pod deletion gets (the pod strategy's CheckGracefulDelete): the option,
 * else spec.terminationGracePeriodSeconds; 0 for a pod no kubelet runs (not bound to a node)
 * or one that has finished. Other resources: 0 (immediate). */
static int64_t grace_period(const ks_res *res, const json_t *cur, const json_t *opts)
{
    if (res->id != KS_RES_POD)
        return 0;
    const json_t *g = json_object_get(opts, "gracePeriodSeconds");
    const json_t *spec = json_object_get(cur, "spec");
    int64_t grace =
            json_is_integer(g) ? json_integer_value(g)
            : json_is_integer(json_object_get(spec, "terminationGracePeriodSeconds"))
                    ? json_integer_value(json_object_get(spec, "terminationGracePeriodSeconds"))
                    : 30;
    const char *node = json_string_value(json_object_get(spec, "nodeName"));
    const char *phase = json_string_value(json_object_get(json_object_get(cur, "status"), "phase"));
    if (!node || !*node || (phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"))))
        return 0;
    return grace < 0 ? 1 : grace; /* as CheckGracefulDelete: a negative period is 1 */
}

static void bump_generation(json_t *md)
{
    json_t *g = json_object_get(md, "generation");
    if (json_is_integer(g))
        json_object_set_new(md, "generation", json_integer(json_integer_value(g) + 1));
}

static void rfc3339_in(char *buf, size_t n, int64_t secs)
{
    time_t t = time(NULL) + (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *ks_api_delete(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const json_t *opts, ks_err *err, bool *gone_out)
{
    bool gone_dummy;
    bool *gone = gone_out ? gone_out : &gone_dummy;
    *gone = false;
    const char *policy = NULL;
    if (!check_delete_opts(opts, &policy, err))
        return NULL;
    json_t *pre = json_object_get(opts, "preconditions");
    const char *want_rv = json_string_value(json_object_get(pre, "resourceVersion"));
    const char *want_uid = json_string_value(json_object_get(pre, "uid"));
    bool dry = has_str(json_object_get(opts, "dryRun"), "All");
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
        ks_err_details(err, res->group, res->kind, name);
    } else if (want_uid &&
               strcmp(want_uid, ks_meta_str(cur, "uid") ? ks_meta_str(cur, "uid") : "")) {
        char r[128];
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s \"%.200s\": Precondition failed: UID in "
                   "precondition: %.60s, UID in object meta: %s",
                   res_ref(res, r, sizeof r), name, want_uid,
                   ks_meta_str(cur, "uid") ? ks_meta_str(cur, "uid") : "");
        ks_err_details(err, res->group, res->kind, name);
    } else {
        const json_t *omd = json_object_get(cur, "metadata");
        json_t *fin = json_object_get(omd, "finalizers");
        bool terminating = json_object_get(omd, "deletionTimestamp") != NULL;
        int64_t grace = grace_period(res, cur, opts);
        /* Foreground and Orphan need the garbage collector to finish them: the object keeps a
         * finalizer until it does (no GC runs here or on the test cluster). */
        const char *gc_fin = !policy                             ? NULL
                             : strcmp(policy, "Foreground") == 0 ? "foregroundDeletion"
                             : strcmp(policy, "Orphan") == 0     ? "orphan"
                                                                 : NULL;
        bool keep = json_array_size(fin) > 0 || gc_fin;
        json_int_t old_grace =
                json_integer_value(json_object_get(omd, "deletionGracePeriodSeconds"));
        if ((keep || grace > 0) && !(terminating && !keep && grace == 0)) {
            if (terminating && (keep || grace >= old_grace)) {
                ret = json_incref((json_t *)cur); /* already in progress: nothing changes */
            } else {
                json_t *o = json_copy((json_t *)cur);
                json_t *md = json_copy(json_object_get(o, "metadata"));
                json_object_set_new(o, "metadata", md);
                if (gc_fin && !has_str(fin, gc_fin)) {
                    json_t *nf = json_is_array(fin) ? json_copy(fin) : json_array();
                    json_array_append_new(nf, json_string(gc_fin));
                    json_object_set_new(md, "finalizers", nf);
                }
                char ts[40];
                rfc3339_in(ts, sizeof ts, keep ? 0 : grace);
                json_object_set_new(md, "deletionTimestamp", json_string(ts));
                json_object_set_new(md, "deletionGracePeriodSeconds",
                                    json_integer(keep ? 0 : grace));
                bump_generation(md);
                if (dry)
                    ret = o;
                else
                    ret = json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, o));
            }
        } else {
            *gone = true;
            json_t *final = NULL;
            if (res->id == KS_RES_POD) {
                /* a pod always takes the graceful path, here with grace 0: its last state
                 * (answer and DELETED event) carries the deletionTimestamp */
                final = json_copy((json_t *)cur);
                json_t *md = json_copy(json_object_get(final, "metadata"));
                json_object_set_new(final, "metadata", md);
                char ts[40];
                rfc3339_in(ts, sizeof ts, 0);
                if (!json_object_get(md, "deletionTimestamp")) {
                    json_object_set_new(md, "deletionTimestamp", json_string(ts));
                    bump_generation(md);
                }
                json_object_set_new(md, "deletionGracePeriodSeconds", json_integer(0));
            }
            if (dry) {
                ret = final ? final : json_incref((json_t *)cur);
            } else if (final) {
                /* two events, as on the real server: MODIFIED with the deletionTimestamp, then
                 * DELETED of that state (skipped when the first would change nothing) */
                if (!json_equal(final, (json_t *)cur))
                    ks_store_commit_locked(s, res, ns, name, final);
                else
                    json_decref(final);
                ret = json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, NULL));
            } else {
                /* kapi-sim plays the namespace controller: contents go at once (a real cluster
                 * keeps the namespace Terminating until its controller has emptied it). */
                if (res->id == KS_RES_NAMESPACE)
                    delete_namespace_contents_locked(s, name);
                ret = json_incref((json_t *)ks_store_commit_locked(s, res, ns, name, NULL));
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

/* ---- /scale ------------------------------------------------------------------------------- */

json_t *ks_scale_of(const json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    json_t *smd = json_object();
    static const char *const keep[] = {"name", "namespace", "uid", "resourceVersion",
                                       "creationTimestamp"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (json_object_get(md, keep[i]))
            json_object_set(smd, keep[i], json_object_get(md, keep[i]));
    json_t *st = json_object_get(obj, "status");
    json_t *sst =
            json_pack("{s:I}", "replicas", json_integer_value(json_object_get(st, "replicas")));
    if (json_is_string(json_object_get(st, "selector")))
        json_object_set(sst, "selector", json_object_get(st, "selector"));
    json_t *spec = json_object();
    json_t *r = json_object_get(json_object_get(obj, "spec"), "replicas");
    if (json_is_integer(r) && json_integer_value(r) != 0)
        json_object_set(spec, "replicas", r);
    return json_pack("{s:s,s:s,s:o,s:o,s:o}", "kind", "Scale", "apiVersion", "autoscaling/v1",
                     "metadata", smd, "spec", spec, "status", sst);
}

typedef struct scale_arg {
    int patch_type; /* < 0: body is a Scale (PUT) */
    const json_t *body;
} scale_arg;

static json_t *mut_scale(const json_t *cur, const void *arg, ks_err *err)
{
    const scale_arg *sa = arg;
    json_t *sc = ks_scale_of(cur);
    json_t *nsc = sa->patch_type < 0
                          ? json_deep_copy(sa->body)
                          : ks_patch_apply((ks_patch_type)sa->patch_type, sc, sa->body, err);
    json_decref(sc);
    if (!nsc)
        return NULL;
    const char *want = ks_meta_str(nsc, "resourceVersion");
    if (want && *want && strcmp(want, ks_meta_str(cur, "resourceVersion")) != 0) {
        json_decref(nsc);
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s.%s \"%.200s\": the "
                   "object has been modified; please apply your changes to the latest version "
                   "and try again",
                   "sandboxpools", "podclaim.io", ks_meta_str(cur, "name"));
        return NULL;
    }
    json_t *r = json_object_get(json_object_get(nsc, "spec"), "replicas");
    json_t *o = json_copy((json_t *)cur);
    json_t *spec = json_object_get(o, "spec");
    spec = json_is_object(spec) ? json_copy(spec) : json_object();
    json_object_set_new(o, "spec", spec);
    json_object_set_new(spec, "replicas", r ? json_incref(r) : json_integer(0));
    json_decref(nsc);
    json_t *md = json_copy(json_object_get(o, "metadata"));
    json_object_set_new(o, "metadata", md);
    json_object_del(md, "resourceVersion"); /* checked above; the write is unconditional now */
    if (!ks_validate(&ks_resources[KS_RES_SANDBOXPOOL], o, cur, err)) {
        json_decref(o);
        return NULL;
    }
    if (!json_equal(json_object_get(cur, "spec"), spec))
        json_object_set_new(md, "generation",
                            json_integer(json_integer_value(json_object_get(
                                                 json_object_get(cur, "metadata"), "generation")) +
                                         1));
    return o;
}

json_t *ks_api_scale(ks_store *s, const ks_res *res, const char *ns, const char *name,
                     int patch_type, const json_t *body, ks_err *err, bool dry)
{
    if (!json_is_object(body) && patch_type != KS_PATCH_JSON) {
        ks_err_set(err, 400, "BadRequest", "the body must be a JSON object");
        return NULL;
    }
    scale_arg sa = {patch_type, body};
    json_t *o = write_existing(s, res, ns, name, "*", false, mut_scale, &sa, err, NULL, dry);
    if (!o)
        return NULL;
    json_t *sc = ks_scale_of(o);
    json_decref(o);
    return sc;
}

void ks_ensure_namespace(ks_store *s, const char *ns)
{
    json_t *o = json_pack("{s:{s:s}}", "metadata", "name", ns);
    ks_err err = {0};
    json_t *r = ks_api_create(s, &ks_resources[KS_RES_NAMESPACE], NULL, o, &err, NULL, false);
    json_decref(r);
    json_decref(o);
}
