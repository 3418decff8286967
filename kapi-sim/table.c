/* kapi-sim server-side printing: metav1 Table answers for clients that ask for them
 * (Accept: application/json;as=Table;v=v1;g=meta.k8s.io), which is how `kubectl get` prints
 * READY/STATUS/AGE columns. Pods get kubectl's usual columns, other resources NAME and AGE.
 * Rows carry the object as PartialObjectMetadata, kube-apiserver's default includeObject.
 */
#include "sim.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

bool ks_accepts_table(const char *accept)
{
    return accept && strstr(accept, "as=Table") && strstr(accept, "g=meta.k8s.io");
}

static json_t *column(const char *name, const char *type, const char *format, int priority)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:i}", "name", name, "type", type, "format", format,
                     "description", "", "priority", priority);
}

static json_t *columns(const ks_res *res)
{
    if (res->id == KS_RES_POD)
        return json_pack("[o,o,o,o,o,o,o]", column("Name", "string", "name", 0),
                         column("Ready", "string", "", 0), column("Status", "string", "", 0),
                         column("Restarts", "string", "", 0), column("Age", "string", "", 0),
                         column("IP", "string", "", 1), column("Node", "string", "", 1));
    return json_pack("[o,o]", column("Name", "string", "name", 0), column("Age", "string", "", 0));
}

/* kubectl's short duration: 45s, 3m12s, 5h, 2d. */
static void age(const json_t *obj, char *buf, size_t n)
{
    const char *ts = ks_meta_str(obj, "creationTimestamp");
    struct tm tm = {0};
    if (!ts || !strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
        snprintf(buf, n, "<unknown>");
        return;
    }
    long s = (long)difftime(time(NULL), timegm(&tm));
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(buf, n, "%lds", s);
    else if (s < 600)
        snprintf(buf, n, "%ldm%lds", s / 60, s % 60);
    else if (s < 3 * 3600)
        snprintf(buf, n, "%ldm", s / 60);
    else if (s < 2 * 86400)
        snprintf(buf, n, "%ldh", s / 3600);
    else
        snprintf(buf, n, "%ldd", s / 86400);
}

static json_t *row(const ks_res *res, const json_t *obj)
{
    char a[32];
    age(obj, a, sizeof a);
    const char *name = ks_meta_str(obj, "name");
    json_t *cells;
    if (res->id == KS_RES_POD) {
        const json_t *st = json_object_get(obj, "status");
        size_t nc = json_array_size(json_object_get(json_object_get(obj, "spec"), "containers"));
        bool ready = false;
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(st, "conditions"), i, c)
        {
            const char *t = json_string_value(json_object_get(c, "type"));
            const char *v = json_string_value(json_object_get(c, "status"));
            if (t && v && strcmp(t, "Ready") == 0)
                ready = strcmp(v, "True") == 0;
        }
        char rd[32];
        snprintf(rd, sizeof rd, "%zu/%zu", ready ? nc : 0, nc);
        const char *phase = json_string_value(json_object_get(st, "phase"));
        const char *ip = json_string_value(json_object_get(st, "podIP"));
        const char *node =
                json_string_value(json_object_get(json_object_get(obj, "spec"), "nodeName"));
        cells = json_pack("[s,s,s,i,s,s,s]", name ? name : "", rd, phase ? phase : "Unknown", 0, a,
                          ip ? ip : "<none>", node ? node : "<none>");
    } else {
        cells = json_pack("[s,s]", name ? name : "", a);
    }
    json_t *md = json_object_get(obj, "metadata");
    return json_pack("{s:o,s:{s:s,s:s,s:O}}", "cells", cells, "object", "kind",
                     "PartialObjectMetadata", "apiVersion", "meta.k8s.io/v1", "metadata",
                     md ? md : json_object());
}

json_t *ks_table(const ks_res *res, const json_t *obj_or_list)
{
    json_t *rows = json_array();
    json_t *md = json_object();
    json_t *items = json_object_get(obj_or_list, "items");
    if (json_is_array(items)) {
        size_t i;
        json_t *o;
        json_array_foreach(items, i, o) json_array_append_new(rows, row(res, o));
        json_object_update(md, json_object_get(obj_or_list, "metadata"));
    } else {
        json_array_append_new(rows, row(res, obj_or_list));
        const char *rv = ks_meta_str(obj_or_list, "resourceVersion");
        if (rv)
            json_object_set_new(md, "resourceVersion", json_string(rv));
    }
    return json_pack("{s:s,s:s,s:o,s:o,s:o}", "kind", "Table", "apiVersion", "meta.k8s.io/v1",
                     "metadata", md, "columnDefinitions", columns(res), "rows", rows);
}
