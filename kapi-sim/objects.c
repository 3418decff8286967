/* kapi-sim initial objects: --objects FILE in YAML (one or more documents) or JSON, loaded into
 * the store before the server starts. YAML goes through libyaml's document API and becomes
 * jansson values; plain scalars get YAML 1.1 core typing (int, float, bool, null), quoted
 * scalars stay strings.
 */
#include "sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static json_t *scalar(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(v, len);
    if (len == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0)
        return json_null();
    if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0)
        return json_true();
    if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0)
        return json_false();
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (!*end && !errno && (v[0] != '0' || len == 1))
        return json_integer(i);
    double d = strtod(v, &end);
    if (!*end && !errno && (v[0] >= '0' && v[0] <= '9'))
        return json_real(d);
    return json_stringn(v, len);
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *n, int depth)
{
    if (!n || depth > 100)
        return NULL;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return scalar(n);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            json_t *v = convert(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            json_t *v = convert(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (!k || k->type != YAML_SCALAR_NODE || !v) {
                json_decref(v);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, (const char *)k->data.scalar.value, v);
        }
        return o;
    }
    default:
        return NULL;
    }
}

static void add_flat(json_t *arr, json_t *obj /* stolen */)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    size_t kl = kind ? strlen(kind) : 0;
    if (kl >= 4 && strcmp(kind + kl - 4, "List") == 0 &&
        json_is_array(json_object_get(obj, "items"))) {
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(obj, "items"), i, it) json_array_append(arr, it);
        json_decref(obj);
    } else if (json_is_object(obj)) {
        json_array_append_new(arr, obj);
    } else {
        json_decref(obj); /* empty documents */
    }
}

json_t *ks_objects_parse(const char *text, size_t len, ks_err *err)
{
    json_t *arr = json_array();
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
        i++;
    if (i < len && (text[i] == '{' || text[i] == '[')) {
        json_error_t je;
        json_t *j = json_loadb(text, len, 0, &je);
        if (!j) {
            ks_err_set(err, 400, "BadRequest", "JSON: %s at line %d, column %d", je.text, je.line,
                       je.column);
            json_decref(arr);
            return NULL;
        }
        if (json_is_array(j)) {
            size_t k;
            json_t *v;
            json_array_foreach(j, k, v) add_flat(arr, json_incref(v));
            json_decref(j);
        } else {
            add_flat(arr, j);
        }
        return arr;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&p, &doc)) {
            ks_err_set(err, 400, "BadRequest", "YAML: %s at line %zu, column %zu",
                       p.problem ? p.problem : "error", p.problem_mark.line + 1,
                       p.problem_mark.column + 1);
            json_decref(arr);
            arr = NULL;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {
            yaml_document_delete(&doc);
            break; /* end of stream */
        }
        json_t *j = convert(&doc, root, 0);
        yaml_document_delete(&doc);
        if (!j) {
            ks_err_set(err, 400, "BadRequest", "YAML: unsupported node (aliases or complex keys)");
            json_decref(arr);
            arr = NULL;
            break;
        }
        add_flat(arr, j);
    }
    yaml_parser_delete(&p);
    return arr;
}

static const ks_res *res_for(const json_t *obj)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *av = json_string_value(json_object_get(obj, "apiVersion"));
    for (int i = 0; kind && av && i < KS_RES_COUNT; i++)
        if (strcmp(ks_resources[i].kind, kind) == 0 && strcmp(ks_resources[i].api_version, av) == 0)
            return &ks_resources[i];
    return NULL;
}

int ks_objects_load(ks_store *s, const json_t *arr, ks_err *err)
{
    for (int pass = 0; pass < 2; pass++) { /* namespaces first, then the rest */
        size_t i;
        json_t *o;
        json_array_foreach(arr, i, o)
        {
            const ks_res *res = res_for(o);
            if (!res) {
                ks_err_set(err, 400, "BadRequest", "object %zu: unsupported kind %s %s", i,
                           json_string_value(json_object_get(o, "apiVersion")),
                           json_string_value(json_object_get(o, "kind")));
                return -1;
            }
            if ((pass == 0) != (res->id == KS_RES_NAMESPACE))
                continue;
            const char *ns = ks_meta_str(o, "namespace");
            if (res->namespaced && !ns)
                ns = "default";
            json_t *c = json_deep_copy(o);
            json_t *status = json_incref(json_object_get(c, "status"));
            json_t *r = ks_api_create(s, res, ns, c, err, NULL, false);
            json_decref(c);
            if (!r) {
                json_decref(status);
                char m[sizeof err->message];
                snprintf(m, sizeof m, "%s", err->message);
                ks_err_set(err, err->code, err->reason, "object %zu (%s %s): %s", i, res->kind,
                           ks_meta_str(o, "name") ? ks_meta_str(o, "name") : "", m);
                return -1;
            }
            if (status && res->has_status) { /* seed status as the file says */
                json_t *st = json_pack("{s:O}", "status", status);
                json_t *r2 =
                        ks_api_patch(s, res, res->namespaced ? ns : NULL, ks_meta_str(r, "name"),
                                     "status", KS_PATCH_MERGE, st, err, NULL, false);
                json_decref(r2);
                json_decref(st);
            }
            json_decref(status);
            json_decref(r);
        }
    }
    return 0;
}
