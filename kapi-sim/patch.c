/* kapi-sim patch semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of
 * Kubernetes strategic merge patch that pods, leases and our objects need.
 *
 * All functions work on copies: the stored object is immutable and shared with watchers, so a
 * patch never touches it; the store swaps in the result only if every check passes.
 */
#include "sim.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int ks_patch_type_parse(const char *ct)
{
    if (!ct)
        return -1;
    size_t n = strcspn(ct, ";");
    while (n && ct[n - 1] == ' ')
        n--;
#define IS(s) (n == strlen(s) && strncasecmp(ct, s, n) == 0)
    if (IS("application/merge-patch+json"))
        return KS_PATCH_MERGE;
    if (IS("application/json-patch+json"))
        return KS_PATCH_JSON;
    if (IS("application/strategic-merge-patch+json"))
        return KS_PATCH_STRATEGIC;
    if (IS("application/apply-patch+yaml"))
        return KS_PATCH_APPLY;
#undef IS
    return -1;
}

/* ---- merge patch ---------------------------------------------------------------------------- */

static json_t *merge(const json_t *doc, const json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *out = json_is_object(doc) ? json_copy((json_t *)doc) : json_object();
    const char *k;
    json_t *pv;
    json_object_foreach((json_t *)patch, k, pv)
    {
        if (json_is_null(pv)) {
            json_object_del(out, k);
            continue;
        }
        json_object_set_new(out, k, merge(json_object_get(out, k), pv));
    }
    return out;
}

json_t *ks_merge_patch(const json_t *doc, const json_t *patch)
{
    return merge(doc, patch);
}

/* ---- strategic merge patch ---------------------------------------------------------------- */

/* Lists merged by a key rather than replaced: patchMergeKey in the Go types (k8s.io/api v0.34
 * core/v1 and apps/v1, apimachinery's ObjectMeta), by path from the object's root. The same
 * field name elsewhere is an ordinary list the patch replaces (a Service's spec.ports merge by
 * port, a container's ports by containerPort; readinessGates, tolerations, containerStatuses
 * are replaced whole). A path steps through map keys only; a list element adds no step. */
typedef struct merge_list {
    const char *path, *key;
} merge_list;

/* Relative to a PodSpec: a pod's spec, a Deployment's spec.template.spec. */
static const merge_list pod_spec_lists[] = {
        {"containers", "name"},
        {"containers/ports", "containerPort"},
        {"containers/env", "name"},
        {"containers/volumeMounts", "mountPath"},
        {"containers/volumeDevices", "devicePath"},
        {"initContainers", "name"},
        {"initContainers/ports", "containerPort"},
        {"initContainers/env", "name"},
        {"initContainers/volumeMounts", "mountPath"},
        {"initContainers/volumeDevices", "devicePath"},
        {"ephemeralContainers", "name"},
        {"ephemeralContainers/ports", "containerPort"},
        {"ephemeralContainers/env", "name"},
        {"ephemeralContainers/volumeMounts", "mountPath"},
        {"ephemeralContainers/volumeDevices", "devicePath"},
        {"volumes", "name"},
        {"imagePullSecrets", "name"},
        {"hostAliases", "ip"},
        {"topologySpreadConstraints", "topologyKey"},
        {"schedulingGates", "name"},
        {"resourceClaims", "name"},
};

/* Relative to the object's root, by kind; ObjectMeta's lists hold for every kind. */
static const merge_list pod_lists[] = {
        {"status/conditions", "type"},
        {"status/hostIPs", "ip"},
        {"status/podIPs", "ip"},
        {"status/resourceClaimStatuses", "name"},
};
static const merge_list status_condition_lists[] = {{"status/conditions", "type"}};
static const merge_list service_lists[] = {{"spec/ports", "port"}, {"status/conditions", "type"}};

static const char *lookup(const merge_list *l, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(path, l[i].path) == 0)
            return l[i].key;
    return NULL;
}

#define LOOKUP(tbl, path) lookup(tbl, sizeof(tbl) / sizeof((tbl)[0]), path)

/* The merge key of the list at `path` in an object of `kind` (NULL: not a merge list). */
static const char *merge_key_for(const char *kind, const char *path)
{
    if (strcmp(path, "metadata/ownerReferences") == 0)
        return "uid";
    if (!kind)
        return NULL;
    if (strcmp(kind, "Pod") == 0) {
        if (strncmp(path, "spec/", 5) == 0)
            return LOOKUP(pod_spec_lists, path + 5);
        return LOOKUP(pod_lists, path);
    }
    if (strcmp(kind, "Deployment") == 0) {
        if (strncmp(path, "spec/template/spec/", 19) == 0)
            return LOOKUP(pod_spec_lists, path + 19);
        return LOOKUP(status_condition_lists, path);
    }
    if (strcmp(kind, "Service") == 0)
        return LOOKUP(service_lists, path);
    if (strcmp(kind, "Namespace") == 0)
        return LOOKUP(status_condition_lists, path);
    return NULL;
}

/* Where the merge is in the object: its kind and the path of map keys down to here. */
typedef struct smp_at {
    const char *kind;
    char path[256]; /* deeper paths hold no merge list: they are never looked up */
    size_t len;
} smp_at;

/* Step into key k; false (path unchanged) when it does not fit, which only means "no list". */
static bool at_push(smp_at *at, const char *k, size_t *saved)
{
    size_t kl = strlen(k), need = at->len + (at->len ? 1 : 0) + kl;
    *saved = at->len;
    if (need >= sizeof(at->path))
        return false;
    if (at->len)
        at->path[at->len++] = '/';
    memcpy(at->path + at->len, k, kl + 1);
    at->len += kl;
    return true;
}

static void at_pop(smp_at *at, size_t saved)
{
    at->len = saved;
    at->path[saved] = '\0';
}

static json_t *smp_map(const json_t *doc, const json_t *patch, smp_at *at, ks_err *err);

static long find_by_key(const json_t *arr, const char *key, const json_t *kv)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (json_equal(json_object_get(e, key), (json_t *)kv))
            return (long)i;
    }
    return -1;
}

/* {"$patch": d} alone: a directive element or map. */
static bool is_directive(const json_t *v, const char *d)
{
    const char *p = json_string_value(json_object_get(v, "$patch"));
    return json_is_object(v) && p && strcmp(p, d) == 0;
}

/* A primitive list with patchStrategy merge (metadata.finalizers): the patch's values first,
 * then the stored ones it does not name, as the apiserver's merge of scalar lists orders them. */
static json_t *smp_union(const json_t *doc, const json_t *patch)
{
    json_t *out = json_deep_copy(patch);
    size_t i, j;
    json_t *v, *w;
    json_array_foreach(doc, i, v)
    {
        bool seen = false;
        json_array_foreach(patch, j, w) seen = seen || json_equal(v, w);
        if (!seen)
            json_array_append(out, v);
    }
    return out;
}

static json_t *smp_list(const json_t *doc, const json_t *patch, const char *key, smp_at *where,
                        ks_err *err)
{
    size_t i;
    json_t *pe;
    /* an element {"$patch":"replace"} makes the rest of the patch list the whole new list */
    json_array_foreach(patch, i, pe)
    {
        if (is_directive(pe, "replace")) {
            json_t *out = json_array();
            size_t j;
            json_t *e;
            json_array_foreach(patch, j, e)
            {
                if (!is_directive(e, "replace"))
                    json_array_append_new(out, json_deep_copy(e));
            }
            return out;
        }
    }
    json_t *out = json_is_array(doc) ? json_copy((json_t *)doc) : json_array();
    json_array_foreach(patch, i, pe)
    {
        const json_t *kv = json_object_get(pe, key);
        if (!json_is_object(pe) || !kv) {
            json_decref(out);
            ks_err_set(err, 400, "BadRequest",
                       "strategic merge patch: list element %zu lacks merge key \"%s\"", i, key);
            return NULL;
        }
        long at = find_by_key(out, key, kv);
        const char *directive = json_string_value(json_object_get(pe, "$patch"));
        if (directive && strcmp(directive, "delete") == 0) {
            if (at >= 0)
                json_array_remove(out, (size_t)at);
            continue;
        }
        json_t *merged = smp_map(at >= 0 ? json_array_get(out, (size_t)at) : NULL, pe, where, err);
        if (!merged) {
            json_decref(out);
            return NULL;
        }
        if (at >= 0)
            json_array_set_new(out, (size_t)at, merged);
        else
            json_array_append_new(out, merged);
    }
    return out;
}

static json_t *smp_map(const json_t *doc, const json_t *patch, smp_at *at, ks_err *err)
{
    const char *directive = json_string_value(json_object_get(patch, "$patch"));
    if (directive && strcmp(directive, "replace") == 0) {
        json_t *r = json_deep_copy(patch);
        json_object_del(r, "$patch");
        return r;
    }
    json_t *out = json_is_object(doc) ? json_copy((json_t *)doc) : json_object();
    const char *k;
    json_t *pv;
    json_object_foreach((json_t *)patch, k, pv)
    {
        if (k[0] == '$') {
            /* $setElementOrder/x and $retainKeys only fix ordering or prune for apply;
             * $deleteFromPrimitiveList/x removes values from a list of scalars. */
            const char *pfx = "$deleteFromPrimitiveList/";
            if (strncmp(k, pfx, strlen(pfx)) == 0 && json_is_array(pv) &&
                json_is_array(json_object_get(out, k + strlen(pfx)))) {
                json_t *lst = json_copy(json_object_get(out, k + strlen(pfx))); /* shared */
                json_object_set_new(out, k + strlen(pfx), lst);
                size_t i;
                json_t *v;
                json_array_foreach(pv, i, v)
                {
                    for (size_t j = 0; json_is_array(lst) && j < json_array_size(lst);) {
                        if (json_equal(json_array_get(lst, j), v))
                            json_array_remove(lst, j);
                        else
                            j++;
                    }
                }
            }
            continue;
        }
        if (json_is_null(pv) ||
            is_directive(pv, "delete")) { /* {"$patch":"delete"}: drop the map */
            json_object_del(out, k);
            continue;
        }
        json_t *cur = json_object_get(out, k);
        json_t *nv;
        size_t saved;
        bool placed = at_push(at, k, &saved);
        const char *mk = placed ? merge_key_for(at->kind, at->path) : NULL;
        if (json_is_object(pv))
            nv = smp_map(cur, pv, at, err);
        else if (json_is_array(pv) && mk)
            nv = smp_list(cur, pv, mk, at, err);
        else if (json_is_array(pv) && placed && strcmp(at->path, "metadata/finalizers") == 0 &&
                 json_is_array(cur))
            nv = smp_union(cur, pv);
        else
            nv = json_deep_copy(pv);
        at_pop(at, saved);
        if (!nv) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, k, nv);
    }
    return out;
}

json_t *ks_strategic_patch(const json_t *doc, const json_t *patch, ks_err *err)
{
    if (!json_is_object(patch)) {
        ks_err_set(err, 400, "BadRequest", "strategic merge patch must be a JSON object");
        return NULL;
    }
    /* The stored object says what it is; a patch may not change its kind. */
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    smp_at at = {.kind = kind, .path = "", .len = 0};
    return smp_map(doc, patch, &at, err);
}

/* ---- JSON patch ----------------------------------------------------------------------------- */

/* Copy on write: the patched document shares every subtree the operations do not change with
 * the stored object (a deep copy of a whole pod per PATCH was 7% of kapi-sim's CPU in the fault
 * soak, whose release is a JSON patch on one label). Containers this patch owns (copied, or the
 * root copy) are listed here; a write below any other container first copies it (shallowly)
 * into its owned parent. Shared containers are never modified. */
typedef struct cow {
    json_t **own;
    size_t n, cap;
} cow;

static bool cow_owns(const cow *c, const json_t *v)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->own[i] == v)
            return true;
    return false;
}

static bool cow_add(cow *c, json_t *v)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        json_t **n = realloc(c->own, nc * sizeof *n);
        if (!n)
            return false;
        c->own = n;
        c->cap = nc;
    }
    c->own[c->n++] = v;
    return true;
}

/* next, the child of owned container cur at key tok / index idx, made owned (a shallow copy
 * put in its place unless already owned). NULL on OOM. */
static json_t *cow_child(cow *c, json_t *cur, const char *tok, size_t idx, json_t *next)
{
    if ((!json_is_object(next) && !json_is_array(next)) || cow_owns(c, next))
        return next;
    json_t *cp = json_copy(next);
    if (!cp || !cow_add(c, cp)) {
        json_decref(cp);
        return NULL;
    }
    if (json_is_object(cur) ? json_object_set_new(cur, tok, cp) : json_array_set_new(cur, idx, cp))
        return NULL;
    return cp;
}

/* Resolve a JSON pointer to its parent container and last token (unescaped into tok). With c
 * (a write), every container on the way is owned (copied as needed); doc must be owned. */
static json_t *ptr_parent_cow(json_t *doc, const char *ptr, char *tok, size_t toklen, cow *c,
                              ks_err *err)
{
    if (ptr[0] != '/') {
        ks_err_set(err, 422, "Invalid", "json patch: path \"%.200s\" must start with '/'", ptr);
        return NULL;
    }
    json_t *cur = doc;
    const char *p = ptr + 1;
    for (;;) {
        size_t o = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0')
                    c = '~';
                else if (*p == '1')
                    c = '/';
                else {
                    ks_err_set(err, 422, "Invalid", "json patch: bad escape in path \"%.200s\"",
                               ptr);
                    return NULL;
                }
                p++;
            }
            if (o + 1 >= toklen) {
                ks_err_set(err, 422, "Invalid", "json patch: path \"%.200s\" too long", ptr);
                return NULL;
            }
            tok[o++] = c;
        }
        tok[o] = '\0';
        if (!*p)
            return cur;
        p++; /* '/' */
        json_t *next = NULL;
        unsigned long idx = 0;
        if (json_is_object(cur)) {
            next = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            idx = strtoul(tok, &end, 10);
            if (*tok && !*end)
                next = json_array_get(cur, idx);
        }
        if (!next) {
            ks_err_set(err, 422, "Invalid",
                       "json patch: path \"%.200s\": segment \"%.100s\" not found", ptr, tok);
            return NULL;
        }
        if (c && !(next = cow_child(c, cur, tok, idx, next))) {
            ks_err_set(err, 500, "InternalError", "out of memory");
            return NULL;
        }
        cur = next;
    }
}

static json_t *ptr_parent(json_t *doc, const char *ptr, char *tok, size_t toklen, ks_err *err)
{
    return ptr_parent_cow(doc, ptr, tok, toklen, NULL, err);
}

static bool arr_index(json_t *arr, const char *tok, bool allow_end, size_t *idx)
{
    if (allow_end && strcmp(tok, "-") == 0) {
        *idx = json_array_size(arr);
        return true;
    }
    char *end;
    if (!*tok || (tok[0] == '0' && tok[1]) || tok[0] == '-')
        return false;
    unsigned long v = strtoul(tok, &end, 10);
    if (*end)
        return false;
    size_t lim = json_array_size(arr) + (allow_end ? 1 : 0);
    if (v >= lim)
        return false;
    *idx = v;
    return true;
}

static json_t *ptr_get(json_t *doc, const char *path, ks_err *err)
{
    char tok[512];
    if (path[0] == '\0')
        return doc;
    json_t *par = ptr_parent(doc, path, tok, sizeof tok, err);
    if (!par)
        return NULL;
    json_t *v = NULL;
    size_t idx;
    if (json_is_object(par))
        v = json_object_get(par, tok);
    else if (json_is_array(par) && arr_index(par, tok, false, &idx))
        v = json_array_get(par, idx);
    if (!v)
        ks_err_set(err, 422, "Invalid", "json patch: path \"%.200s\" not found", path);
    return v;
}

static int op_add(json_t *doc, cow *c, const char *path, json_t *val /* stolen */, ks_err *err)
{
    char tok[512];
    json_t *par = ptr_parent_cow(doc, path, tok, sizeof tok, c, err);
    size_t idx;
    if (!par)
        goto fail;
    if (json_is_object(par))
        return json_object_set_new(par, tok, val) ? -1 : 0;
    if (json_is_array(par) && arr_index(par, tok, true, &idx))
        return json_array_insert_new(par, idx, val) ? -1 : 0;
    ks_err_set(err, 422, "Invalid", "json patch: cannot add at \"%.200s\"", path);
fail:
    json_decref(val);
    return -1;
}

static json_t *op_remove(json_t *doc, cow *c, const char *path,
                         ks_err *err) /* returns removed value */
{
    char tok[512];
    json_t *par = ptr_parent_cow(doc, path, tok, sizeof tok, c, err);
    size_t idx;
    if (!par)
        return NULL;
    if (json_is_object(par)) {
        json_t *v = json_object_get(par, tok);
        if (v) {
            json_incref(v);
            json_object_del(par, tok);
            return v;
        }
    } else if (json_is_array(par) && arr_index(par, tok, false, &idx)) {
        json_t *v = json_incref(json_array_get(par, idx));
        json_array_remove(par, idx);
        return v;
    }
    ks_err_set(err, 422, "Invalid", "json patch: path \"%.200s\" not found for remove", path);
    return NULL;
}

json_t *ks_json_patch(const json_t *doc0, const json_t *patch, ks_err *err)
{
    if (!json_is_array(patch)) {
        ks_err_set(err, 400, "BadRequest", "json patch must be a JSON array of operations");
        return NULL;
    }
    json_t *doc = json_is_object(doc0) || json_is_array(doc0) ? json_copy((json_t *)doc0)
                                                              : json_deep_copy(doc0);
    cow c = {0};
    if (!doc || !cow_add(&c, doc)) {
        json_decref(doc);
        ks_err_set(err, 500, "InternalError", "out of memory");
        return NULL;
    }
    size_t i;
    json_t *op;
    json_array_foreach(patch, i, op)
    {
        const char *name = json_string_value(json_object_get(op, "op"));
        const char *path = json_string_value(json_object_get(op, "path"));
        json_t *val = json_object_get(op, "value");
        const char *from = json_string_value(json_object_get(op, "from"));
        if (!name || !path) {
            ks_err_set(err, 400, "BadRequest", "json patch operation %zu lacks \"op\" or \"path\"",
                       i);
            goto fail;
        }
        if (path[0] == '\0' && strcmp(name, "test") != 0) {
            ks_err_set(err, 422, "Invalid", "json patch operation %zu: cannot %s the whole object",
                       i, name);
            goto fail;
        }
        if (strcmp(name, "add") == 0 || strcmp(name, "replace") == 0) {
            if (!val) {
                ks_err_set(err, 400, "BadRequest", "json patch operation %zu lacks \"value\"", i);
                goto fail;
            }
            if (strcmp(name, "replace") == 0) {
                json_t *old = op_remove(doc, &c, path, err);
                if (!old)
                    goto fail;
                json_decref(old);
            }
            if (op_add(doc, &c, path, json_deep_copy(val), err))
                goto fail;
        } else if (strcmp(name, "remove") == 0) {
            json_t *old = op_remove(doc, &c, path, err);
            if (!old)
                goto fail;
            json_decref(old);
        } else if (strcmp(name, "test") == 0) {
            json_t *cur = ptr_get(doc, path, err);
            if (!cur)
                goto fail;
            if (!val || !json_equal(cur, val)) {
                ks_err_set(err, 422, "Invalid",
                           "json patch operation %zu: test failed at path \"%.200s\"", i, path);
                goto fail;
            }
        } else if (strcmp(name, "move") == 0 || strcmp(name, "copy") == 0) {
            if (!from) {
                ks_err_set(err, 400, "BadRequest", "json patch operation %zu lacks \"from\"", i);
                goto fail;
            }
            json_t *v;
            if (strcmp(name, "move") == 0) {
                v = op_remove(doc, &c, from, err);
            } else {
                json_t *src = ptr_get(doc, from, err);
                v = src ? json_deep_copy(src) : NULL;
            }
            if (!v || op_add(doc, &c, path, v, err))
                goto fail;
        } else {
            ks_err_set(err, 400, "BadRequest", "json patch operation %zu: unknown op \"%.50s\"", i,
                       name);
            goto fail;
        }
    }
    free(c.own);
    return doc;
fail:
    free(c.own);
    json_decref(doc);
    return NULL;
}

json_t *ks_patch_apply(ks_patch_type t, const json_t *doc, const json_t *patch, ks_err *err)
{
    switch (t) {
    case KS_PATCH_MERGE:
        if (!json_is_object(patch)) {
            ks_err_set(err, 400, "BadRequest", "merge patch must be a JSON object");
            return NULL;
        }
        return ks_merge_patch(doc, patch);
    case KS_PATCH_JSON:
        return ks_json_patch(doc, patch, err);
    case KS_PATCH_STRATEGIC:
        return ks_strategic_patch(doc, patch, err);
    default:
        ks_err_set(err, 415, "UnsupportedMediaType", "patch type not supported");
        return NULL;
    }
}
