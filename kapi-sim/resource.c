/* kapi-sim resource routing: one table says which verb each resource (and subresource) serves
 * and which handler does it; a hole in the table is 405 MethodNotAllowed, as kube-apiserver
 * answers for a verb its REST storage does not implement (deletecollection on namespaces).
 *
 *   http.c route()  -> ks_handle_resource: path -> (resource, namespace, name, subresource),
 *                      method + name + ?watch -> op, then routes[res][sub][op]
 *                   -> handler: query checks, faults, then api.c / list.c / watch.c
 *
 * Every number a client sends (limit, timeoutSeconds, gracePeriodSeconds) is parsed whole and
 * range-checked: garbage is 400 BadRequest, never a silent 0.
 */
#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef enum kr_op {
    KR_GET,
    KR_LIST,
    KR_WATCH,
    KR_CREATE,
    KR_UPDATE,
    KR_PATCH,
    KR_DELETE,
    KR_DELETECOLLECTION,
    KR_COUNT
} kr_op;

typedef enum kr_sub { KR_MAIN, KR_STATUS, KR_SCALE, KR_SUB_COUNT } kr_sub;

static const ks_verb op_verb[KR_COUNT] = {
        [KR_GET] = KS_VERB_GET,       [KR_LIST] = KS_VERB_LIST,
        [KR_WATCH] = KS_VERB_WATCH,   [KR_CREATE] = KS_VERB_CREATE,
        [KR_UPDATE] = KS_VERB_UPDATE, [KR_PATCH] = KS_VERB_PATCH,
        [KR_DELETE] = KS_VERB_DELETE, [KR_DELETECOLLECTION] = KS_VERB_DELETE,
};

typedef struct kr_ctx {
    ks_server *srv;
    struct MHD_Connection *conn;
    const ks_req *rq;
    const ks_res *res;
    const char *ns;   /* NULL: cluster-scoped, or a namespaced list over all namespaces */
    const char *name; /* NULL for collection verbs */
    kr_sub sub;
    ks_verb v;
    bool table; /* Accept asks for a meta.k8s.io Table (kubectl get) */
} kr_ctx;

typedef enum MHD_Result (*kr_handler)(kr_ctx *c);

/* ---- query parameters ------------------------------------------------------------------- */

const char *ks_query(struct MHD_Connection *c, const char *key)
{
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &n) !=
        MHD_YES)
        return NULL;
    return v ? v : "";
}

bool ks_query_bool(struct MHD_Connection *c, const char *key)
{
    const char *v = ks_query(c, key);
    return v && strcmp(v, "0") != 0 && strcasecmp(v, "false") != 0;
}

int ks_query_int(struct MHD_Connection *c, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 ks_err *err)
{
    const char *v = ks_query(c, key);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi) {
        ks_err_set(err, 400, "BadRequest", "invalid value for query parameter %s: %.60s", key, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static enum MHD_Result fail(kr_ctx *c, const ks_err *e)
{
    return ks_send_err(c->conn, c->srv->f, c->v, e, c->res, c->name);
}

/* No Content-Type (curl -d sends a form type, also accepted), or any JSON type. */
static bool json_content_type(const char *ct)
{
    if (!ct || !*ct)
        return true;
    size_t n = strcspn(ct, ";");
    return strncasecmp(ct, "application/json", n) == 0 ||
           strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0 ||
           (n >= 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

static const char *header(kr_ctx *c, const char *h)
{
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, h);
}

static void sleep_us(int64_t us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Returns true (err set) when the request is to be failed by an injected fault. */
static bool inject(kr_ctx *c, ks_err *err)
{
    ks_faults *f = c->srv->f;
    ks_fault_cfg cfg = ks_faults_get(f);
    const ks_latency *l = &cfg.latency[c->v];
    if (l->fixed_us || l->jitter_us)
        sleep_us(l->fixed_us + (int64_t)(ks_faults_rand(f) * (double)l->jitter_us));
    if (cfg.throttle_rate > 0 &&
        (!cfg.throttle_name[0] || (c->name && strcmp(c->name, cfg.throttle_name) == 0)) &&
        (!cfg.throttle_verb || cfg.throttle_verb == 1 + (int)c->v) &&
        ks_faults_rand(f) < cfg.throttle_rate) {
        ks_err_set(err, 429, "TooManyRequests", "Too many requests, please try again later.");
        return true;
    }
    if (cfg.error_rate > 0 && (!cfg.error_verb || cfg.error_verb == 1 + (int)c->v) &&
        ks_faults_rand(f) < cfg.error_rate) {
        int code = cfg.error_code ? cfg.error_code : 500;
        ks_err_set(err, code, code == 503 ? "ServiceUnavailable" : "InternalError",
                   "injected server error");
        return true;
    }
    if ((c->v == KS_VERB_PATCH || c->v == KS_VERB_UPDATE) && cfg.conflict_rate > 0 &&
        ks_faults_rand(f) < cfg.conflict_rate) {
        char r[128];
        snprintf(r, sizeof r, "%s%s%s", c->res->plural, c->res->group[0] ? "." : "", c->res->group);
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s \"%s\": the object has been modified; "
                   "please apply your changes to the latest version and try again",
                   r, c->name ? c->name : "");
        return true;
    }
    return false;
}

/* ?dryRun: only "All" is a valid value, as in kube-apiserver's ValidateDryRun. */
static int dry_run(kr_ctx *c, bool *out, ks_err *err)
{
    const char *v = ks_query(c->conn, "dryRun");
    *out = false;
    if (!v)
        return 0;
    if (strcmp(v, "All") != 0) {
        ks_err_set(err, 422, "Invalid", "dryRun: Unsupported value: \"%.60s\"", v);
        ks_err_cause(err, "FieldValueNotSupported", "dryRun",
                     "Unsupported value: \"%.60s\": supported values: \"All\"", v);
        ks_err_details(err, "meta.k8s.io",
                       c->v == KS_VERB_CREATE   ? "CreateOptions"
                       : c->v == KS_VERB_DELETE ? "DeleteOptions"
                       : c->v == KS_VERB_PATCH  ? "PatchOptions"
                                                : "UpdateOptions",
                       NULL);
        return -1;
    }
    *out = true;
    return 0;
}

static enum MHD_Result answer(kr_ctx *c, int code, json_t *out, char *text)
{
    if (out && text) {
        json_decref(out);
        return ks_send_text(c->conn, c->srv->f, c->v, code, text, "application/json", 0);
    }
    free(text);
    return ks_send_json(c->conn, c->srv->f, c->v, code, out);
}

/* ---- handlers --------------------------------------------------------------------------- */

static enum MHD_Result h_get(kr_ctx *c)
{
    ks_err err = {0};
    json_t *out = ks_api_get(c->srv->s, c->res, c->ns, c->name, &err);
    if (!out)
        return fail(c, &err);
    if (c->table && c->sub == KR_MAIN) {
        json_t *t = ks_table(c->res, out);
        json_decref(out);
        out = t;
    }
    return ks_send_json(c->conn, c->srv->f, c->v, 200, out);
}

static int selectors(kr_ctx *c, ks_lsel **ls, ks_fsel **fs, ks_err *err)
{
    *ls = ks_lsel_parse(ks_query(c->conn, "labelSelector"), err);
    if (!*ls)
        return -1;
    *fs = ks_fsel_parse(ks_query(c->conn, "fieldSelector"), err);
    if (!*fs) {
        ks_lsel_free(*ls);
        return -1;
    }
    return 0;
}

static enum MHD_Result h_list(kr_ctx *c)
{
    ks_err err = {0};
    ks_list_opts lo = {.rv = ks_query(c->conn, "resourceVersion"),
                       .rv_match = ks_query(c->conn, "resourceVersionMatch"),
                       .cont = ks_query(c->conn, "continue")};
    if (ks_query_int(c->conn, "limit", INT64_MIN, INT64_MAX, &lo.limit, &err) ||
        selectors(c, &lo.lsel, &lo.fsel, &err))
        return fail(c, &err);
    const char *fsq = ks_query(c->conn, "fieldSelector");
    lo.fsel_set = fsq && *fsq;
    json_t *out = ks_list(c->srv->s, c->res, c->ns, &lo, &err);
    ks_lsel_free(lo.lsel);
    ks_fsel_free(lo.fsel);
    if (!out)
        return fail(c, &err);
    if (c->table) {
        json_t *t = ks_table(c->res, out);
        json_decref(out);
        out = t;
    }
    return ks_send_json(c->conn, c->srv->f, c->v, 200, out);
}

static ssize_t watch_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    long n = ks_watch_read(cls, buf, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* injected drop: no terminating chunk */
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return n;
}

static void watch_free_cb(void *cls)
{
    ks_watch_free(cls);
}

static enum MHD_Result h_watch(kr_ctx *c)
{
    ks_err err = {0};
    int64_t timeout_s = 0;
    /* kube-apiserver caps nothing here but a negative or non-numeric value is a decode error. */
    if (ks_query_int(c->conn, "timeoutSeconds", 0, INT32_MAX, &timeout_s, &err))
        return fail(c, &err);
    ks_watch_opts wo = {.res = c->res,
                        .ns = c->ns,
                        .rv = ks_query(c->conn, "resourceVersion"),
                        .bookmarks = ks_query_bool(c->conn, "allowWatchBookmarks"),
                        .timeout_ns = timeout_s * 1000000000,
                        .bookmark_ns = c->srv->bookmark_ms * 1000000,
                        .peer_fd = -1,
                        .batch_ns = c->srv->watch_batch_us * 1000,
                        .table = c->table};
    if (selectors(c, &wo.lsel, &wo.fsel, &err))
        return fail(c, &err);
    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        wo.peer_fd = ci->connect_fd;
    ks_watch *w = ks_watch_new(c->srv->s, c->srv->f, &wo, &err);
    if (!w)
        return fail(c, &err);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                               watch_reader, w, watch_free_cb);
    if (!r) {
        ks_watch_free(w);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c->conn, 200, r);
    MHD_destroy_response(r);
    ks_faults_count(c->srv->f, c->v, 200);
    return ret;
}

static enum MHD_Result h_create(kr_ctx *c)
{
    ks_err err = {0};
    bool dry = false;
    if (dry_run(c, &dry, &err))
        return fail(c, &err);
    json_t *body = ks_parse_body(c->rq, &err);
    if (!body)
        return fail(c, &err);
    char *text = NULL;
    json_t *out = ks_api_create(c->srv->s, c->res, c->ns, body, &err, dry ? NULL : &text, dry);
    json_decref(body);
    if (!out)
        return fail(c, &err);
    return answer(c, 201, out, text);
}

static enum MHD_Result h_update(kr_ctx *c)
{
    ks_err err = {0};
    bool dry = false;
    if (dry_run(c, &dry, &err))
        return fail(c, &err);
    json_t *body = ks_parse_body(c->rq, &err);
    if (!body)
        return fail(c, &err);
    char *text = NULL;
    json_t *out =
            ks_api_update(c->srv->s, c->res, c->ns, c->name, c->sub == KR_STATUS ? "status" : NULL,
                          body, &err, dry ? NULL : &text, dry);
    json_decref(body);
    if (!out)
        return fail(c, &err);
    return answer(c, 200, out, text);
}

static int patch_type(kr_ctx *c, ks_err *err)
{
    int t = ks_patch_type_parse(header(c, "Content-Type"));
    if (t < 0 || t == KS_PATCH_APPLY) {
        ks_err_set(err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json-patch+json, application/merge-patch+json, "
                   "application/apply-patch+yaml, application/strategic-merge-patch+json");
        ks_err_details(err, NULL, NULL, NULL); /* details {} */
        return -1;
    }
    return t;
}

static enum MHD_Result h_patch(kr_ctx *c)
{
    ks_err err = {0};
    bool dry = false;
    int t = patch_type(c, &err);
    if (t < 0 || dry_run(c, &dry, &err))
        return fail(c, &err);
    json_t *body = ks_parse_body(c->rq, &err);
    if (!body)
        return fail(c, &err);
    char *text = NULL;
    json_t *out =
            ks_api_patch(c->srv->s, c->res, c->ns, c->name, c->sub == KR_STATUS ? "status" : NULL,
                         (ks_patch_type)t, body, &err, dry ? NULL : &text, dry);
    json_decref(body);
    if (!out)
        return fail(c, &err);
    return answer(c, 200, out, text);
}

/* DeleteOptions from the body and the query (the query wins where both are given, as the
 * apiserver decodes the query over the body). */
static json_t *delete_opts(kr_ctx *c, ks_err *err)
{
    json_t *opts = NULL;
    if (c->rq && c->rq->len) {
        opts = ks_parse_body(c->rq, err);
        if (!opts)
            return NULL;
        if (!json_is_object(opts)) {
            json_decref(opts);
            ks_err_set(err, 400, "BadRequest", "DeleteOptions must be a JSON object");
            return NULL;
        }
    } else {
        opts = json_object();
    }
    int64_t grace = -1;
    if (ks_query_int(c->conn, "gracePeriodSeconds", INT64_MIN, INT64_MAX, &grace, err)) {
        json_decref(opts);
        return NULL;
    }
    if (ks_query(c->conn, "gracePeriodSeconds"))
        json_object_set_new(opts, "gracePeriodSeconds", json_integer(grace));
    const char *pp = ks_query(c->conn, "propagationPolicy");
    if (pp)
        json_object_set_new(opts, "propagationPolicy", json_string(pp));
    if (ks_query(c->conn, "orphanDependents"))
        json_object_set_new(opts, "orphanDependents",
                            json_boolean(ks_query_bool(c->conn, "orphanDependents")));
    bool dry = false;
    if (dry_run(c, &dry, err)) {
        json_decref(opts);
        return NULL;
    }
    if (dry)
        json_object_set_new(opts, "dryRun", json_pack("[s]", "All"));
    return opts;
}

static enum MHD_Result h_delete(kr_ctx *c)
{
    ks_err err = {0};
    json_t *opts = delete_opts(c, &err);
    if (!opts)
        return fail(c, &err);
    bool gone = false;
    json_t *out = ks_api_delete(c->srv->s, c->res, c->ns, c->name, opts, &err, &gone);
    json_decref(opts);
    if (!out)
        return fail(c, &err);
    if (gone && c->res->id != KS_RES_POD) {
        /* An object deleted at once is answered with a Success Status for most resources; pods
         * (and any object that only got a deletionTimestamp) with the object itself. */
        json_decref(out);
        ks_err ok = {.code = 200, .reason = ""};
        json_t *st = ks_status_json(&ok, c->res, c->name);
        json_object_set_new(json_object_get(st, "details"), "uid", json_string(""));
        return ks_send_json(c->conn, c->srv->f, c->v, 200, st);
    }
    return ks_send_json(c->conn, c->srv->f, c->v, gone ? 200 : 200, out);
}

/* DELETE on a collection: every object the selectors match, one by one (each its own event),
 * answered with the list of what was deleted, as kube-apiserver does. */
static enum MHD_Result h_deletecollection(kr_ctx *c)
{
    ks_err err = {0};
    json_t *opts = delete_opts(c, &err);
    if (!opts)
        return fail(c, &err);
    ks_list_opts lo = {0};
    if (selectors(c, &lo.lsel, &lo.fsel, &err)) {
        json_decref(opts);
        return fail(c, &err);
    }
    json_t *list = ks_list(c->srv->s, c->res, c->ns, &lo, &err);
    ks_lsel_free(lo.lsel);
    ks_fsel_free(lo.fsel);
    if (!list) {
        json_decref(opts);
        return fail(c, &err);
    }
    json_t *done = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(list, "items"), i, o)
    {
        ks_err e = {0};
        bool gone = false;
        json_t *d = ks_api_delete(c->srv->s, c->res,
                                  c->res->namespaced ? ks_meta_str(o, "namespace") : NULL,
                                  ks_meta_str(o, "name"), opts, &e, &gone);
        if (d)
            json_array_append_new(done, d); /* a 404 means someone else deleted it first */
    }
    json_decref(opts);
    json_object_set_new(list, "items", done);
    return ks_send_json(c->conn, c->srv->f, c->v, 200, list);
}

/* ---- /scale (autoscaling/v1 Scale over spec.replicas) --------------------------------------- */

static enum MHD_Result h_get_scale(kr_ctx *c)
{
    ks_err err = {0};
    json_t *obj = ks_api_get(c->srv->s, c->res, c->ns, c->name, &err);
    if (!obj)
        return fail(c, &err);
    json_t *sc = ks_scale_of(obj);
    json_decref(obj);
    return ks_send_json(c->conn, c->srv->f, c->v, 200, sc);
}

static enum MHD_Result h_write_scale(kr_ctx *c)
{
    ks_err err = {0};
    bool dry = false;
    int t = -1;
    if (c->v == KS_VERB_PATCH && (t = patch_type(c, &err)) < 0)
        return fail(c, &err);
    if (dry_run(c, &dry, &err))
        return fail(c, &err);
    json_t *body = ks_parse_body(c->rq, &err);
    if (!body)
        return fail(c, &err);
    json_t *out = ks_api_scale(c->srv->s, c->res, c->ns, c->name, t, body, &err, dry);
    json_decref(body);
    if (!out)
        return fail(c, &err);
    return ks_send_json(c->conn, c->srv->f, c->v, 200, out);
}

/* ---- the table -------------------------------------------------------------------------- */

#define MAIN_VERBS                                                                                 \
    [KR_GET] = h_get, [KR_LIST] = h_list, [KR_WATCH] = h_watch, [KR_CREATE] = h_create,            \
    [KR_UPDATE] = h_update, [KR_PATCH] = h_patch, [KR_DELETE] = h_delete
#define STATUS_VERBS [KR_GET] = h_get, [KR_UPDATE] = h_update, [KR_PATCH] = h_patch
#define SCALE_VERBS [KR_GET] = h_get_scale, [KR_UPDATE] = h_write_scale, [KR_PATCH] = h_write_scale

static const kr_handler routes[KS_RES_COUNT][KR_SUB_COUNT][KR_COUNT] = {
        [KS_RES_POD] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection},
                        [KR_STATUS] = {STATUS_VERBS}},
        /* kube-apiserver's namespace storage has no DeleteCollection: 405. */
        [KS_RES_NAMESPACE] = {[KR_MAIN] = {MAIN_VERBS}, [KR_STATUS] = {STATUS_VERBS}},
        [KS_RES_LEASE] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection}},
        [KS_RES_SANDBOXPOOL] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] =
                                                                 h_deletecollection},
                                [KR_STATUS] = {STATUS_VERBS},
                                [KR_SCALE] = {SCALE_VERBS}},
        [KS_RES_SANDBOXCLAIM] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] =
                                                                  h_deletecollection},
                                 [KR_STATUS] = {STATUS_VERBS}},
        [KS_RES_CRD] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection},
                        [KR_STATUS] = {STATUS_VERBS}},
        /* Kinds deploy/ applies and the cluster components write (Events); kapi-sim stores
         * them, nothing acts on them. */
        [KS_RES_EVENT] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection}},
        [KS_RES_SERVICEACCOUNT] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] =
                                                                    h_deletecollection}},
        [KS_RES_CONFIGMAP] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection}},
        /* kube-apiserver's service storage has no DeleteCollection either. */
        [KS_RES_SERVICE] = {[KR_MAIN] = {MAIN_VERBS}, [KR_STATUS] = {STATUS_VERBS}},
        [KS_RES_DEPLOYMENT] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection},
                               [KR_STATUS] = {STATUS_VERBS}},
        [KS_RES_ROLE] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] = h_deletecollection}},
        [KS_RES_ROLEBINDING] = {[KR_MAIN] = {MAIN_VERBS, [KR_DELETECOLLECTION] =
                                                                 h_deletecollection}},
};

static bool sub_served(const ks_res *res, kr_sub sub)
{
    for (int op = 0; op < KR_COUNT; op++)
        if (routes[res->id][sub][op])
            return true;
    return false;
}

static int op_of(const char *method, bool named, bool watch)
{
    if (strcmp(method, "GET") == 0)
        return named ? KR_GET : watch ? KR_WATCH : KR_LIST;
    if (strcmp(method, "POST") == 0)
        return named ? -1 : KR_CREATE;
    if (strcmp(method, "PUT") == 0)
        return named ? KR_UPDATE : -1;
    if (strcmp(method, "PATCH") == 0)
        return named ? KR_PATCH : -1;
    if (strcmp(method, "DELETE") == 0)
        return named ? KR_DELETE : KR_DELETECOLLECTION;
    return -1;
}

static enum MHD_Result not_found(ks_server *srv, struct MHD_Connection *conn, ks_verb v)
{
    ks_err err = {0};
    ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
    return ks_send_err(conn, srv->f, v, &err, NULL, NULL);
}

enum MHD_Result ks_handle_resource(ks_server *srv, struct MHD_Connection *conn, const char *method,
                                   const char *group, const char *version, char **seg, int nseg,
                                   const ks_req *rq)
{
    kr_ctx c = {.srv = srv, .conn = conn, .rq = rq, .v = KS_VERB_OTHER};
    if (nseg >= 3 && strcmp(seg[0], "namespaces") == 0) {
        const ks_res *r = ks_res_find(group, version, seg[2]);
        if (r && r->namespaced) {
            c.ns = seg[1];
            c.res = r;
            seg += 2;
            nseg -= 2;
        }
    }
    if (!c.res)
        c.res = nseg >= 1 ? ks_res_find(group, version, seg[0]) : NULL;
    if (!c.res || nseg > 3 || (c.res->namespaced && nseg >= 2 && !c.ns))
        return not_found(srv, conn, KS_VERB_OTHER);
    c.name = nseg >= 2 ? seg[1] : NULL;
    if (nseg == 3) {
        c.sub = strcmp(seg[2], "status") == 0  ? KR_STATUS
                : strcmp(seg[2], "scale") == 0 ? KR_SCALE
                                               : KR_SUB_COUNT;
        if (c.sub == KR_SUB_COUNT || !sub_served(c.res, c.sub))
            return not_found(srv, conn, KS_VERB_OTHER);
    }
    int op = op_of(method, c.name != NULL, ks_query_bool(conn, "watch"));
    kr_handler h = op >= 0 ? routes[c.res->id][c.sub][op] : NULL;
    if (op >= 0)
        c.v = op_verb[op];
    ks_err err = {0};
    if (!h) {
        ks_err_set(&err, 405, "MethodNotAllowed",
                   "the server does not allow this method on the requested resource");
        ks_err_details(&err, NULL, NULL, NULL); /* details {} */
        return ks_send_err(conn, srv->f, c.v, &err, NULL, NULL);
    }
    if (rq && rq->too_big) {
        ks_err_set(&err, 413, "RequestEntityTooLarge",
                   "Request entity too large: limit is %u bytes", KS_MAX_BODY);
        return fail(&c, &err);
    }
    if (inject(&c, &err))
        return fail(&c, &err);
    if ((op == KR_CREATE || op == KR_UPDATE ||
         ((op == KR_DELETE || op == KR_DELETECOLLECTION) && rq && rq->len)) &&
        !json_content_type(header(&c, "Content-Type"))) {
        /* kubectl's typed clients send protobuf first; client-go answers a 415 by retrying
         * with JSON, which is all kapi-sim speaks. */
        ks_err_set(&err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json, application/yaml");
        ks_err_details(&err, NULL, NULL, NULL);
        return fail(&c, &err);
    }
    c.table = ks_accepts_table(header(&c, "Accept"));
    return h(&c);
}
