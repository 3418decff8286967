/* kapi-sim: the /scale subresource of SandboxPools (autoscaling/v1 Scale), as kube-apiserver
 * serves it for a CRD whose scale subresource has specReplicasPath .spec.replicas,
 * statusReplicasPath .status.replicas and labelSelectorPath .status.selector (deploy/crds).
 * kapi-sim does not interpret CRDs, so those paths are fixed here for sandboxpools only.
 *
 * Flow: http.c (GET/PATCH/PUT .../sandboxpools/NAME/scale) -> [Scale view of the pool; a
 *       change of spec.replicas written to the pool] -> store.
 *
 * What kubectl scale and an HPA rely on: discovery lists "sandboxpools/scale" with group
 * autoscaling, version v1, kind Scale (discovery.c); a merge patch {"spec":{"replicas":N}}
 * (kubectl scale without preconditions) or a PUT of the Scale whose metadata.resourceVersion
 * is a precondition (409 when the pool moved); the answer is the Scale after the write.
 */
#include "sim.h"

#include <string.h>

static json_t *scale_of(const json_t *pool)
{
    const json_t *md = json_object_get(pool, "metadata");
    json_t *sel = json_object_get(json_object_get(pool, "status"), "selector");
    json_t *sc = json_pack(
            "{s:s,s:s,s:{s:O,s:O,s:O,s:O,s:O},s:{s:I},s:{s:I}}", "kind", "Scale", "apiVersion",
            "autoscaling/v1", "metadata", "name", json_object_get(md, "name"), "namespace",
            json_object_get(md, "namespace"), "uid", json_object_get(md, "uid"), "resourceVersion",
            json_object_get(md, "resourceVersion"), "creationTimestamp",
            json_object_get(md, "creationTimestamp"), "spec", "replicas",
            json_integer_value(json_object_get(json_object_get(pool, "spec"), "replicas")),
            "status", "replicas",
            json_integer_value(json_object_get(json_object_get(pool, "status"), "replicas")));
    if (json_is_string(sel))
        json_object_set(json_object_get(sc, "status"), "selector", sel);
    return sc;
}

typedef struct scale_arg {
    json_int_t replicas;
    const char *rv; /* precondition; NULL = none */
} scale_arg;

static json_t *mut_replicas(const json_t *cur, const void *arg, ks_err *err)
{
    const scale_arg *a = arg;
    const char *rv = ks_meta_str(cur, "resourceVersion");
    if (a->rv && a->rv[0] && (!rv || strcmp(rv, a->rv) != 0)) {
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on sandboxpools.podclaim.io \"%.200s\": the "
                   "object has been modified; please apply your changes to the latest version and "
                   "try again",
                   ks_meta_str(cur, "name") ? ks_meta_str(cur, "name") : "");
        return NULL;
    }
    json_t *spec = json_object_get(cur, "spec");
    if (json_integer_value(json_object_get(spec, "replicas")) == a->replicas &&
        json_is_integer(json_object_get(spec, "replicas")))
        return NULL; /* nothing to do */
    json_t *pool = json_copy((json_t *)cur);
    spec = json_is_object(spec) ? json_copy(spec) : json_object();
    json_object_set_new(spec, "replicas", json_integer(a->replicas));
    json_object_set_new(pool, "spec", spec);
    return pool;
}

json_t *ks_scale(ks_store *s, const ks_res *res, const char *ns, const char *name, int patch_type,
                 const json_t *body, ks_err *err)
{
    json_t *cur = ks_api_get(s, res, ns, name, err);
    if (!cur || !body) {
        json_t *sc = cur ? scale_of(cur) : NULL;
        json_decref(cur);
        return sc;
    }
    json_t *sc = scale_of(cur);
    json_decref(cur);
    json_t *want = patch_type >= 0 ? ks_patch_apply((ks_patch_type)patch_type, sc, body, err)
                                   : json_incref((json_t *)body);
    json_decref(sc);
    if (!want)
        return NULL;
    json_t *r = json_object_get(json_object_get(want, "spec"), "replicas");
    if (!json_is_integer(r) || json_integer_value(r) < 0) {
        ks_err_set(err, 422, "Invalid",
                   "Scale.autoscaling \"%.200s\" is invalid: spec.replicas: Invalid value: must "
                   "be greater than or equal to 0",
                   name);
        err->field = "spec.replicas";
        json_decref(want);
        return NULL;
    }
    scale_arg a = {.replicas = json_integer_value(r),
                   .rv = json_string_value(
                           json_object_get(json_object_get(want, "metadata"), "resourceVersion"))};
    json_t *pool = ks_api_write_internal(s, res, ns, name, mut_replicas, &a, err);
    json_decref(want);
    if (!pool)
        return NULL;
    json_t *out = scale_of(pool);
    json_decref(pool);
    return out;
}
