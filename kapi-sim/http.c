/* kapi-sim HTTP front: libmicrohttpd glue, bearer auth, fault injection, routing of
 * Kubernetes-style paths to the verbs of api.c and watch.c, and the /sim endpoints.
 *
 * Threading: MHD thread-per-connection. Loopback clients hold a few keep-alive connections each,
 * and a connection thread blocks in read/write with no event-loop bookkeeping per request, which
 * measured faster here than the epoll pool for PATCH; a watch simply blocks its own thread on the
 * store condvar (see watch.c), so no suspend/resume dance is needed. Cost: one thread per open
 * connection (stack size capped below).
 */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

struct ks_server {
    struct MHD_Daemon *d;
    ks_store *s;
    ks_faults *f;
    ks_controller *c;
    char *token;
    char *tls_cert, *tls_key; /* PEM text, kept for the daemon's lifetime */
    int64_t bookmark_ms;
    int64_t watch_batch_us;
    int port;
    char addr[64];
};

typedef struct req {
    char *body;
    size_t len, cap;
    bool too_big;
} req;

/* ---- responses ------------------------------------------------------------------------------ */

static enum MHD_Result send_text(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
                                 char *text /* freed */, const char *ctype, int retry_after)
{
    struct MHD_Response *r =
            MHD_create_response_from_buffer(text ? strlen(text) : 0, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)code, r);
    MHD_destroy_response(r);
    ks_faults_count(f, v, code);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
                                 json_t *j /* stolen */)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return MHD_NO;
    return send_text(conn, f, v, code, text, "application/json", 0);
}

static enum MHD_Result send_err(struct MHD_Connection *conn, ks_faults *f, ks_verb v,
                                const ks_err *e, const ks_res *res, const char *name)
{
    json_t *st = ks_status_json(e, res, name);
    int retry = 0;
    if (e->code == 429) {
        retry = ks_faults_get(f).retry_after_s;
        json_object_set_new(json_object_get(st, "details"), "retryAfterSeconds",
                            json_integer(retry));
    }
    char *text = json_dumps(st, JSON_COMPACT);
    json_decref(st);
    return send_text(conn, f, v, e->code, text, "application/json", retry);
}

static const char *arg(struct MHD_Connection *c, const char *k)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static bool arg_true(struct MHD_Connection *c, const char *k)
{
    const char *v = arg(c, k);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* ---- watch streaming ------------------------------------------------------------------------ */

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

/* ---- body parsing --------------------------------------------------------------------------- */

static json_t *parse_body(const req *rq, ks_err *err)
{
    if (!rq || rq->len == 0) {
        ks_err_set(err, 400, "BadRequest", "the request body is empty");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        ks_err_set(err, 400, "BadRequest",
                   "the request body is not valid JSON: %s at line %d, column %d (byte %d)",
                   je.text, je.line, je.column, je.position);
    return j;
}

/* ---- /sim ----------------------------------------------------------------------------------- */

static enum MHD_Result handle_sim(ks_server *srv, struct MHD_Connection *conn, const char *path,
                                  const char *method, const req *rq)
{
    ks_err err = {0};
    ks_faults *f = srv->f;
    if (strcmp(path, "claims") == 0 && strcmp(method, "GET") == 0) {
        const char *since = arg(conn, "since");
        return send_json(conn, f, KS_VERB_OTHER, 200,
                         ks_controller_claims_json(srv->c, since ? strtoull(since, NULL, 10) : 0));
    }
    if (strcmp(path, "stats") == 0 && strcmp(method, "GET") == 0)
        return send_json(conn, f, KS_VERB_OTHER, 200, ks_stats_json(f, srv->s));
    if (strcmp(path, "faults") == 0 && strcmp(method, "GET") == 0) {
        ks_fault_cfg c = ks_faults_get(f);
        return send_json(conn, f, KS_VERB_OTHER, 200, ks_faults_to_json(&c));
    }
    if (strcmp(path, "faults") == 0 && strcmp(method, "PUT") == 0) {
        json_t *j = parse_body(rq, &err);
        if (!j)
            return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
        ks_fault_cfg c = ks_faults_get(f);
        if (json_is_true(json_object_get(j, "reset"))) {
            memset(&c, 0, sizeof c);
            c.retry_after_s = 1;
            c.error_code = 500;
        }
        int rc = ks_faults_from_json(&c, j, &err);
        bool compact_now = json_is_true(json_object_get(j, "compactNow"));
        json_decref(j);
        if (!rc && compact_now)
            ks_store_compact(srv->s, 0);
        if (rc)
            return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
        ks_faults_set(f, &c);
        return send_json(conn, f, KS_VERB_OTHER, 200, ks_faults_to_json(&c));
    }
    if (strcmp(path, "compact") == 0 && strcmp(method, "POST") == 0) {
        uint64_t upto = 0;
        if (rq && rq->len) {
            json_t *j = parse_body(rq, &err);
            if (!j)
                return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
            const char *rv = json_string_value(json_object_get(j, "resourceVersion"));
            upto = rv ? strtoull(rv, NULL, 10) : 0;
            json_decref(j);
        }
        ks_store_compact(srv->s, upto);
        pthread_mutex_lock(&srv->s->mu);
        json_int_t comp = (json_int_t)srv->s->compacted;
        pthread_mutex_unlock(&srv->s->mu);
        return send_json(conn, f, KS_VERB_OTHER, 200, json_pack("{s:I}", "compacted", comp));
    }
    ks_err_set(&err, 404, "NotFound", "no /sim endpoint %s %.100s", method, path);
    return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
}

/* ---- fault injection ------------------------------------------------------------------------ */

static void sleep_us(int64_t us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Returns true (err set) when the request is to be failed by an injected fault. */
static bool inject(ks_server *srv, ks_verb v, const ks_res *res, const char *name, ks_err *err)
{
    ks_fault_cfg c = ks_faults_get(srv->f);
    const ks_latency *l = &c.latency[v];
    if (l->fixed_us || l->jitter_us)
        sleep_us(l->fixed_us + (int64_t)(ks_faults_rand(srv->f) * (double)l->jitter_us));
    if (c.throttle_rate > 0 && ks_faults_rand(srv->f) < c.throttle_rate) {
        ks_err_set(err, 429, "TooManyRequests", "Too many requests, please try again later.");
        return true;
    }
    if (c.error_rate > 0 && ks_faults_rand(srv->f) < c.error_rate) {
        int code = c.error_code ? c.error_code : 500;
        ks_err_set(err, code, code == 503 ? "ServiceUnavailable" : "InternalError",
                   "injected server error");
        return true;
    }
    if ((v == KS_VERB_PATCH || v == KS_VERB_UPDATE) && c.conflict_rate > 0 &&
        ks_faults_rand(srv->f) < c.conflict_rate) {
        char r[128];
        snprintf(r, sizeof r, "%s%s%s", res->plural, res->group[0] ? "." : "", res->group);
        ks_err_set(err, 409, "Conflict",
                   "Operation cannot be fulfilled on %s \"%s\": the object has been modified; "
                   "please apply your changes to the latest version and try again",
                   r, name ? name : "");
        return true;
    }
    return false;
}

/* DELETE on a collection: every object the selectors match, one by one (each its own event),
 * answered with the list of what was deleted, as kube-apiserver does. */
static enum MHD_Result delete_collection(ks_server *srv, struct MHD_Connection *conn,
                                         const ks_res *res, const char *ns)
{
    ks_err err = {0};
    ks_lsel *ls = ks_lsel_parse(arg(conn, "labelSelector"), &err);
    ks_fsel *fs = ls ? ks_fsel_parse(arg(conn, "fieldSelector"), &err) : NULL;
    json_t *list = fs ? ks_api_list(srv->s, res, ns, ls, fs, 0, NULL, &err) : NULL;
    ks_lsel_free(ls);
    ks_fsel_free(fs);
    if (!list)
        return send_err(conn, srv->f, KS_VERB_DELETE, &err, res, NULL);
    json_t *gone = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(list, "items"), i, o)
    {
        ks_err e = {0};
        json_t *d = ks_api_delete(srv->s, res, res->namespaced ? ks_meta_str(o, "namespace") : NULL,
                                  ks_meta_str(o, "name"), NULL, &e);
        if (d)
            json_array_append_new(gone, d); /* a 404 means someone else deleted it first */
    }
    json_object_set_new(list, "items", gone);
    return send_json(conn, srv->f, KS_VERB_DELETE, 200, list);
}

/* ---- resources ------------------------------------------------------------------------------ */

#define MAX_SEGS 12

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

static enum MHD_Result handle_resource(ks_server *srv, struct MHD_Connection *conn,
                                       const char *method, const char *group, const char *version,
                                       char **seg, int nseg, const req *rq)
{
    ks_err err = {0};
    ks_faults *f = srv->f;
    const char *ns = NULL;
    const ks_res *res = NULL;
    if (nseg >= 3 && strcmp(seg[0], "namespaces") == 0) {
        const ks_res *r = ks_res_find(group, version, seg[2]);
        if (r && r->namespaced) {
            ns = seg[1];
            res = r;
            seg += 2;
            nseg -= 2;
        }
    }
    if (!res)
        res = nseg >= 1 ? ks_res_find(group, version, seg[0]) : NULL;
    if (!res || nseg > 3) {
        ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
        return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
    }
    const char *name = nseg >= 2 ? seg[1] : NULL;
    const char *sub = nseg == 3 ? seg[2] : NULL;
    if (res->namespaced && name && !ns) {
        ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
        return send_err(conn, f, KS_VERB_OTHER, &err, res, name);
    }
    ks_verb v;
    if (strcmp(method, "GET") == 0)
        v = name ? KS_VERB_GET : (arg_true(conn, "watch") ? KS_VERB_WATCH : KS_VERB_LIST);
    else if (strcmp(method, "POST") == 0 && !name)
        v = KS_VERB_CREATE;
    else if (strcmp(method, "PUT") == 0 && name)
        v = KS_VERB_UPDATE;
    else if (strcmp(method, "PATCH") == 0 && name)
        v = KS_VERB_PATCH;
    else if (strcmp(method, "DELETE") == 0)
        v = KS_VERB_DELETE; /* without a name: deletecollection */
    else {
        ks_err_set(&err, 405, "MethodNotAllowed", "%s is not supported on %s", method,
                   name ? "an object" : "a collection");
        return send_err(conn, f, KS_VERB_OTHER, &err, res, name);
    }
    if (sub && (v == KS_VERB_CREATE || v == KS_VERB_DELETE)) {
        ks_err_set(&err, 405, "MethodNotAllowed", "%s is not supported on %s/%s", method,
                   res->plural, sub);
        return send_err(conn, f, v, &err, res, name);
    }
    if (rq && rq->too_big) {
        ks_err_set(&err, 413, "RequestEntityTooLarge",
                   "Request entity too large: limit is %u bytes", KS_MAX_BODY);
        return send_err(conn, f, v, &err, res, name);
    }
    if (inject(srv, v, res, name, &err))
        return send_err(conn, f, v, &err, res, name);
    if ((v == KS_VERB_CREATE || v == KS_VERB_UPDATE || (v == KS_VERB_DELETE && rq && rq->len)) &&
        !json_content_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"))) {
        /* kubectl's typed clients send protobuf first; client-go answers a 415 by retrying
         * with JSON, which is all kapi-sim speaks. */
        ks_err_set(&err, 415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json, application/yaml");
        return send_err(conn, f, v, &err, res, name);
    }

    if (sub && strcmp(sub, "scale") == 0 && res->id == KS_RES_SANDBOXPOOL &&
        (v == KS_VERB_GET || v == KS_VERB_PATCH || v == KS_VERB_UPDATE)) {
        /* the CRD's scale subresource (scale.c) */
        int pt = v == KS_VERB_PATCH ? ks_patch_type_parse(MHD_lookup_connection_value(
                                              conn, MHD_HEADER_KIND, "Content-Type"))
                                    : -1;
        json_t *body = v == KS_VERB_GET ? NULL : parse_body(rq, &err);
        json_t *sc = NULL;
        if (v == KS_VERB_PATCH && (pt < 0 || pt == KS_PATCH_APPLY))
            ks_err_set(&err, 415, "UnsupportedMediaType", "unsupported patch type");
        else if (v == KS_VERB_GET || body)
            sc = ks_scale(srv->s, res, ns, name, pt, body, &err);
        json_decref(body);
        if (sc)
            return send_json(conn, f, v, 200, sc);
        return send_err(conn, f, v, &err, res, name);
    }

    json_t *out = NULL;
    char *text = NULL; /* the answer already serialised by the store, if any */
    bool table = ks_accepts_table(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept"));
    switch (v) {
    case KS_VERB_GET:
        if (sub && (strcmp(sub, "status") != 0 || !res->has_status)) {
            ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
            break;
        }
        out = ks_api_get(srv->s, res, ns, name, &err);
        if (out && table && !sub) {
            json_t *t = ks_table(res, out);
            json_decref(out);
            out = t;
        }
        break;
    case KS_VERB_LIST:
    case KS_VERB_WATCH: {
        ks_lsel *ls = ks_lsel_parse(arg(conn, "labelSelector"), &err);
        ks_fsel *fs = ls ? ks_fsel_parse(arg(conn, "fieldSelector"), &err) : NULL;
        if (!ls || !fs) {
            ks_lsel_free(ls);
            break;
        }
        if (v == KS_VERB_LIST) {
            const char *lim = arg(conn, "limit");
            out = ks_api_list(srv->s, res, ns, ls, fs, lim ? strtol(lim, NULL, 10) : 0,
                              arg(conn, "continue"), &err);
            if (out && table) {
                json_t *t = ks_table(res, out);
                json_decref(out);
                out = t;
            }
            ks_lsel_free(ls);
            ks_fsel_free(fs);
            break;
        }
        const char *to = arg(conn, "timeoutSeconds");
        ks_watch_opts wo = {.res = res,
                            .ns = ns,
                            .lsel = ls,
                            .fsel = fs,
                            .rv = arg(conn, "resourceVersion"),
                            .bookmarks = arg_true(conn, "allowWatchBookmarks"),
                            .timeout_ns = to ? strtoll(to, NULL, 10) * 1000000000 : 0,
                            .bookmark_ns = srv->bookmark_ms * 1000000,
                            .peer_fd = -1,
                            .batch_ns = srv->watch_batch_us * 1000,
                            .table = table};
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            wo.peer_fd = ci->connect_fd;
        ks_watch *w = ks_watch_new(srv->s, f, &wo, &err);
        if (!w)
            break;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                   watch_reader, w, watch_free_cb);
        if (!r) {
            ks_watch_free(w);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        enum MHD_Result ret = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        ks_faults_count(f, v, 200);
        return ret;
    }
    case KS_VERB_CREATE: {
        json_t *body = parse_body(rq, &err);
        if (body)
            out = ks_api_create(srv->s, res, ns, body, &err, &text);
        json_decref(body);
        if (out && text) {
            json_decref(out);
            return send_text(conn, f, v, 201, text, "application/json", 0);
        }
        if (out)
            return send_json(conn, f, v, 201, out);
        break;
    }
    case KS_VERB_UPDATE: {
        json_t *body = parse_body(rq, &err);
        if (body)
            out = ks_api_update(srv->s, res, ns, name, sub, body, &err, &text);
        json_decref(body);
        break;
    }
    case KS_VERB_PATCH: {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        int t = ks_patch_type_parse(ct);
        if (t < 0 || t == KS_PATCH_APPLY) {
            ks_err_set(&err, 415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types "
                       "include: application/json-patch+json, application/merge-patch+json, "
                       "application/strategic-merge-patch+json");
            break;
        }
        json_t *body = parse_body(rq, &err);
        if (body)
            out = ks_api_patch(srv->s, res, ns, name, sub, (ks_patch_type)t, body, &err, &text);
        json_decref(body);
        break;
    }
    case KS_VERB_DELETE: {
        if (!name)
            return delete_collection(srv, conn, res, ns);
        json_t *opts = NULL;
        if (rq && rq->len) {
            opts = parse_body(rq, &err);
            if (!opts)
                break;
        }
        out = ks_api_delete(srv->s, res, ns, name, opts, &err);
        json_decref(opts);
        if (out && res->id != KS_RES_POD) {
            /* kube-apiserver answers an immediate delete with a Success Status for most
             * resources and with the deleted object for pods. */
            json_decref(out);
            ks_err ok = {.code = 200, .reason = ""};
            json_t *st = ks_status_json(&ok, res, name);
            json_object_set_new(json_object_get(st, "details"), "uid", json_string(""));
            return send_json(conn, f, v, 200, st);
        }
        break;
    }
    default:
        break;
    }
    if (out && text) {
        json_decref(out);
        return send_text(conn, f, v, 200, text, "application/json", 0);
    }
    if (out)
        return send_json(conn, f, v, 200, out);
    if (!err.code)
        ks_err_set(&err, 500, "InternalError", "internal error");
    return send_err(conn, f, v, &err, res, name);
}

/* ---- routing -------------------------------------------------------------------------------- */

static bool authorized(ks_server *srv, struct MHD_Connection *conn)
{
    if (!srv->token)
        return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    /* Compare without an early exit so timing says nothing about the token. */
    const char *a = h + 7, *b = srv->token;
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la != lb);
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

static enum MHD_Result route(ks_server *srv, struct MHD_Connection *conn, const char *url,
                             const char *method, const req *rq)
{
    ks_faults *f = srv->f;
    ks_err err = {0};
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/livez") == 0 || strcmp(url, "/readyz") == 0)
        return send_text(conn, f, KS_VERB_OTHER, 200, strdup("ok"), "text/plain", 0);
    if (!authorized(srv, conn)) {
        ks_err_set(&err, 401, "Unauthorized", "Unauthorized");
        return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
    }
    char path[2048];
    if (strlen(url) >= sizeof path) {
        ks_err_set(&err, 414, "RequestURITooLong", "request URI too long");
        return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
    }
    strcpy(path, url);
    char *seg[MAX_SEGS];
    int nseg = 0;
    char *save = NULL;
    for (char *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (nseg == MAX_SEGS) {
            nseg = -1;
            break;
        }
        seg[nseg++] = t;
    }
    bool get = strcmp(method, "GET") == 0;
    if (nseg >= 1 && strcmp(seg[0], "sim") == 0 && nseg == 2)
        return handle_sim(srv, conn, seg[1], method, rq);
    if (get && nseg == 1 && strcmp(seg[0], "version") == 0)
        return send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_version());
    if (get && nseg >= 2 && strcmp(seg[0], "openapi") == 0 && strcmp(seg[1], "v3") == 0) {
        json_t *d = nseg == 2   ? ks_openapi_root()
                    : nseg == 4 ? ks_openapi_gv("", seg[3])
                    : nseg == 5 ? ks_openapi_gv(seg[3], seg[4])
                                : NULL;
        if (d)
            return send_json(conn, f, KS_VERB_OTHER, 200, d);
    }
    if (nseg >= 1 && strcmp(seg[0], "api") == 0) {
        if (get && nseg == 1)
            return send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_core(srv->addr));
        if (strcmp(seg[1], "v1") == 0) {
            if (get && nseg == 2)
                return send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_resources("", "v1"));
            return handle_resource(srv, conn, method, "", "v1", seg + 2, nseg - 2, rq);
        }
    }
    if (nseg >= 1 && strcmp(seg[0], "apis") == 0) {
        json_t *d = NULL;
        if (get && nseg == 1)
            d = ks_discovery_groups();
        else if (get && nseg == 2)
            d = ks_discovery_group(seg[1]);
        else if (get && nseg == 3)
            d = ks_discovery_resources(seg[1], seg[2]);
        if (d)
            return send_json(conn, f, KS_VERB_OTHER, 200, d);
        if (nseg >= 4)
            return handle_resource(srv, conn, method, seg[1], seg[2], seg + 3, nseg - 3, rq);
    }
    ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
    return send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    (void)version;
    ks_server *srv = cls;
    req *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*data_size) {
        /* Bodies over the limit are read and dropped so the 413 goes out on a sane stream. */
        if (!rq->too_big && rq->len + *data_size > KS_MAX_BODY) {
            rq->too_big = true;
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
        }
        if (!rq->too_big) {
            if (rq->len + *data_size > rq->cap) {
                size_t nc = rq->cap ? rq->cap : 1024;
                while (nc < rq->len + *data_size)
                    nc *= 2;
                char *nb = realloc(rq->body, nc);
                if (!nb)
                    return MHD_NO;
                rq->body = nb;
                rq->cap = nc;
            }
            memcpy(rq->body + rq->len, data, *data_size);
            rq->len += *data_size;
        }
        *data_size = 0;
        return MHD_YES;
    }
    return route(srv, conn, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's messages as log lines (STYLE.md). A watch we end abruptly (injected drop,
 * client gone) makes MHD say "application error generating response": expected, not logged. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '.'))
        msg[--n] = '\0';
    if (strstr(msg, "application error generating response"))
        return;
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    fprintf(stderr, "level=warn component=mhd msg=\"%s\"\n", msg);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = n >= 0 && n < (16 << 20) ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, fp) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b)
        b[n] = '\0';
    fclose(fp);
    return b;
}

ks_server *ks_server_start(const ks_server_opts *o, ks_store *s, ks_faults *f, ks_controller *c,
                           char *err, size_t errlen)
{
    ks_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->s = s;
    srv->f = f;
    srv->c = c;
    srv->bookmark_ms = o->bookmark_ms > 0 ? o->bookmark_ms : 1000;
    srv->watch_batch_us = o->watch_batch_us >= 0 ? o->watch_batch_us : 0;
    srv->token = o->token ? strdup(o->token) : NULL;

    char host[64] = "127.0.0.1";
    int port = 0, lfd = -1;
    const char *colon = o->listen ? strrchr(o->listen, ':') : NULL;
    if (o->listen) {
        if (!colon || colon - o->listen >= (long)sizeof host) {
            snprintf(err, errlen, "--listen %s: want host:port", o->listen);
            goto fail;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - o->listen), o->listen);
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p < 0 || p > 65535) {
            snprintf(err, errlen, "--listen %s: bad port", o->listen);
            goto fail;
        }
        port = (int)p;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--listen %s: host must be an IPv4 address", o->listen);
        goto fail;
    }
    /* Bind here rather than in MHD so the port (for /api's serverAddressByClientCIDRs) is known
     * before any connection thread can read it. */
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    socklen_t sl = sizeof sa;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1024) ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        goto fail;
    }
    srv->port = ntohs(sa.sin_port);
    snprintf(srv->addr, sizeof srv->addr, "%s:%d", host, srv->port);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (o->tls_cert || o->tls_key) {
        if (!o->tls_cert || !o->tls_key) {
            snprintf(err, errlen, "--tls-cert and --tls-key go together");
            goto fail;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "this libmicrohttpd has no TLS support");
            goto fail;
        }
        srv->tls_cert = read_file(o->tls_cert);
        srv->tls_key = read_file(o->tls_key);
        if (!srv->tls_cert || !srv->tls_key) {
            snprintf(err, errlen, "cannot read %s: %s", srv->tls_cert ? o->tls_key : o->tls_cert,
                     strerror(errno));
            goto fail;
        }
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem tls_opts[] = {
            {MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert},
            {MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key},
            {MHD_OPTION_END, 0, NULL},
    };
    srv->d = MHD_start_daemon(
            flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
            MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)2000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_THREAD_STACK_SIZE,
            (size_t)(512 * 1024), MHD_OPTION_ARRAY, (flags & MHD_USE_TLS) ? tls_opts : tls_opts + 2,
            MHD_OPTION_END);
    if (!srv->d) {
        snprintf(err, errlen,
                 "cannot listen on %s:%d (libmicrohttpd refused: port in use, bad TLS "
                 "files, or no permission)",
                 host, port);
        goto fail;
    }
    return srv;
fail:
    if (lfd >= 0)
        close(lfd);
    free(srv->token);
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv);
    return NULL;
}

int ks_server_port(const ks_server *srv)
{
    return srv->port;
}

const char *ks_server_addr(const ks_server *srv)
{
    return srv->addr;
}

void ks_server_stop(ks_server *srv)
{
    if (!srv)
        return;
    ks_store_shutdown(srv->s); /* wakes every watch; they end their streams */
    MHD_stop_daemon(srv->d);
    free(srv->token);
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv);
}
