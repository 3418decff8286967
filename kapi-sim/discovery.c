/* kapi-sim discovery documents: /version, /api, /api/v1, /apis, /apis/{g}, /apis/{g}/{v}.
 *
 * Only the legacy (unaggregated) format is served: kubectl v1.32 asks for aggregated discovery
 * (application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList) first and falls back to
 * these documents when the answer's Content-Type is plain application/json.
 */
#include "sim.h"

#include <string.h>

json_t *ks_discovery_version(void)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "major", "1", "minor", "32",
                     "gitVersion", "v1.32.0-kapi-sim", "gitCommit", "kapi-sim", "gitTreeState",
                     "clean", "buildDate", "2026-01-01T00:00:00Z", "goVersion", "go1.23 (kapi-sim)",
                     "compiler", "gc", "platform", "linux/amd64");
}

static json_t *verbs(void)
{
    return json_pack("[s,s,s,s,s,s,s,s]", "create", "delete", "deletecollection", "get", "list",
                     "patch", "update", "watch");
}

json_t *ks_discovery_resources(const char *group, const char *version)
{
    json_t *list = json_array();
    bool any = false;
    for (int i = 0; i < KS_RES_COUNT; i++) {
        const ks_res *r = &ks_resources[i];
        if (strcmp(r->group, group) != 0 || strcmp(r->version, version) != 0)
            continue;
        any = true;
        char singular[64];
        size_t pl = strlen(r->plural);
        snprintf(singular, sizeof singular, "%.*s", (int)(pl - 1), r->plural);
        json_t *e = json_pack("{s:s,s:s,s:b,s:s,s:o}", "name", r->plural, "singularName", singular,
                              "namespaced", r->namespaced, "kind", r->kind, "verbs", verbs());
        if (r->short_name[0])
            json_object_set_new(e, "shortNames", json_pack("[s]", r->short_name));
        if (r->custom)
            json_object_set_new(e, "categories", json_pack("[s]", "all"));
        json_array_append_new(list, e);
        if (r->has_status)
            json_array_append_new(list, json_pack("{s:s+,s:s,s:b,s:s,s:[s,s,s]}", "name", r->plural,
                                                  "/status", "singularName", "", "namespaced",
                                                  r->namespaced, "kind", r->kind, "verbs", "get",
                                                  "patch", "update"));
        if (r->id == KS_RES_SANDBOXPOOL) /* the scale subresource (resource.c) */
            json_array_append_new(list,
                                  json_pack("{s:s+,s:s,s:b,s:s,s:s,s:s,s:[s,s,s]}", "name",
                                            r->plural, "/scale", "singularName", "", "namespaced",
                                            r->namespaced, "group", "autoscaling", "version", "v1",
                                            "kind", "Scale", "verbs", "get", "patch", "update"));
    }
    if (!any) {
        json_decref(list);
        return NULL;
    }
    char gv[128];
    snprintf(gv, sizeof gv, "%s%s%s", group, group[0] ? "/" : "", version);
    return json_pack("{s:s,s:s,s:s,s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", gv, "resources", list);
}

static json_t *group_json(const char *group)
{
    const char *version = NULL;
    for (int i = 0; i < KS_RES_COUNT; i++)
        if (strcmp(ks_resources[i].group, group) == 0)
            version = ks_resources[i].version;
    if (!version || !group[0])
        return NULL;
    char gv[128];
    snprintf(gv, sizeof gv, "%s/%s", group, version);
    return json_pack("{s:s,s:s,s:s,s:[{s:s,s:s}],s:{s:s,s:s}}", "kind", "APIGroup", "apiVersion",
                     "v1", "name", group, "versions", "groupVersion", gv, "version", version,
                     "preferredVersion", "groupVersion", gv, "version", version);
}

json_t *ks_discovery_group(const char *group)
{
    return group_json(group);
}

json_t *ks_discovery_groups(void)
{
    json_t *groups = json_array();
    for (int i = 0; i < KS_RES_COUNT; i++) {
        const char *g = ks_resources[i].group;
        bool seen = !g[0];
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(ks_resources[j].group, g) == 0;
        if (!seen) {
            json_t *gj = group_json(g);
            json_object_del(gj, "kind");
            json_object_del(gj, "apiVersion");
            json_array_append_new(groups, gj);
        }
    }
    return json_pack("{s:s,s:s,s:o}", "kind", "APIGroupList", "apiVersion", "v1", "groups", groups);
}

json_t *ks_discovery_core(const char *server_addr)
{
    return json_pack("{s:s,s:[s],s:[{s:s,s:s}]}", "kind", "APIVersions", "versions", "v1",
                     "serverAddressByClientCIDRs", "clientCIDR", "0.0.0.0/0", "serverAddress",
                     server_addr);
}

/* OpenAPI v3, only as much as kubectl v1.32 reads: `kubectl apply` asks the document of the
 * object's group/version whether PATCH takes the fieldValidation query parameter; when it does,
 * kubectl leaves validation to the server (we accept every field) and never downloads the
 * protobuf OpenAPI v2 document, which kapi-sim does not serve. */
json_t *ks_openapi_root(void)
{
    json_t *paths = json_object();
    for (int i = 0; i < KS_RES_COUNT; i++) {
        const ks_res *r = &ks_resources[i];
        char key[128], url[160];
        if (r->group[0])
            snprintf(key, sizeof key, "apis/%s/%s", r->group, r->version);
        else
            snprintf(key, sizeof key, "api/%s", r->version);
        snprintf(url, sizeof url, "/openapi/v3/%s?hash=kapisim1", key);
        json_object_set_new(paths, key, json_pack("{s:s}", "serverRelativeURL", url));
    }
    return json_pack("{s:o}", "paths", paths);
}

json_t *ks_openapi_gv(const char *group, const char *version)
{
    json_t *paths = json_object(), *schemas = json_object();
    bool any = false;
    for (int i = 0; i < KS_RES_COUNT; i++) {
        const ks_res *r = &ks_resources[i];
        if (strcmp(r->group, group) != 0 || strcmp(r->version, version) != 0)
            continue;
        any = true;
        char path[256];
        if (r->group[0])
            snprintf(path, sizeof path, "/apis/%s/%s/%s%s/{name}", r->group, version,
                     r->namespaced ? "namespaces/{namespace}/" : "", r->plural);
        else
            snprintf(path, sizeof path, "/api/%s/%s%s/{name}", version,
                     r->namespaced ? "namespaces/{namespace}/" : "", r->plural);
        json_t *gvk =
                json_pack("{s:s,s:s,s:s}", "group", r->group, "version", version, "kind", r->kind);
        json_t *op = json_pack("{s:[{s:s,s:s,s:{s:s}},{s:s,s:s,s:{s:s}},{s:s,s:s,s:{s:s}}],"
                               "s:{},s:O}",
                               "parameters", "name", "fieldValidation", "in", "query", "schema",
                               "type", "string", "name", "fieldManager", "in", "query", "schema",
                               "type", "string", "name", "dryRun", "in", "query", "schema", "type",
                               "string", "responses", "x-kubernetes-group-version-kind", gvk);
        json_object_set_new(paths, path, json_pack("{s:o}", "patch", op));
        char sname[160];
        snprintf(sname, sizeof sname, "%s.%s.%s", r->group[0] ? r->group : "io.k8s.api.core",
                 version, r->kind);
        json_object_set_new(schemas, sname,
                            json_pack("{s:s,s:b,s:[o]}", "type", "object",
                                      "x-kubernetes-preserve-unknown-fields", 1,
                                      "x-kubernetes-group-version-kind", gvk));
    }
    if (!any) {
        json_decref(paths);
        json_decref(schemas);
        return NULL;
    }
    return json_pack("{s:s,s:{s:s,s:s},s:o,s:{s:o}}", "openapi", "3.0.0", "info", "title",
                     "Kubernetes (kapi-sim)", "version", "v1.32.0", "paths", paths, "components",
                     "schemas", schemas);
}
