/* kapi-sim HTTP front: libmicrohttpd glue, bearer auth, fault injection, routing of
 * Kubernetes-style paths to the verbs of api.c and watch.c, and the /sim endpoints.
 *
 * Threading: MHD thread-per-connection. Loopback clients hold a few keep-alive connections each,
 * and a connection thread blocks in read/write with no event-loop bookkeeping per request, which
 * measured faster here than the epoll pool for PATCH; a watch simply blocks its own thread on the
 * store condvar (see watch.c), so no suspend/resume dance is needed. Cost: one thread per open
 * connection (stack size capped below).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* A connection thread's stack: room to parse, merge, copy and print a body nested KS_MAX_DEPTH
 * deep (jansson and patch.c recurse per level; ~1 KiB a level under ASan). Address space only:
 * the pages a thread never touches are never backed. */
#define CONN_STACK (4u << 20)

/* ---- responses ------------------------------------------------------------------------------ */

enum MHD_Result ks_send_text(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
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

enum MHD_Result ks_send_json(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
                             json_t *j /* stolen */)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return MHD_NO;
    return ks_send_text(conn, f, v, code, text, "application/json", 0);
}

enum MHD_Result ks_send_err(struct MHD_Connection *conn, ks_faults *f, ks_verb v, const ks_err *e,
                            const ks_res *res, const char *name)
{
    ks_err e2 = *e;
    if (e2.code == 429 && !e2.retry_after_s)
        e2.retry_after_s = ks_faults_get(f).retry_after_s;
    json_t *st = ks_status_json(&e2, res, name);
    char *text = st ? json_dumps(st, JSON_COMPACT) : NULL;
    json_decref(st);
    return ks_send_text(conn, f, v, e2.code, text, "application/json", e2.retry_after_s);
}

/* ---- body parsing --------------------------------------------------------------------------- */

json_t *ks_parse_body(const ks_req *rq, ks_err *err)
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
                                  const char *method, const ks_req *rq)
{
    ks_err err = {0};
    ks_faults *f = srv->f;
    if (strcmp(path, "claims") == 0 && strcmp(method, "GET") == 0) {
        int64_t since = 0;
        if (ks_query_int(conn, "since", 0, INT64_MAX, &since, &err))
            return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
        return ks_send_json(conn, f, KS_VERB_OTHER, 200,
                            ks_controller_claims_json(srv->c, (size_t)since));
    }
    if (strcmp(path, "stats") == 0 && strcmp(method, "GET") == 0)
        return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_stats_json(f, srv->s));
    if (strcmp(path, "faults") == 0 && strcmp(method, "GET") == 0) {
        ks_fault_cfg c = ks_faults_get(f);
        return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_faults_to_json(&c));
    }
    if (strcmp(path, "faults") == 0 && strcmp(method, "PUT") == 0) {
        json_t *j = ks_parse_body(rq, &err);
        if (!j)
            return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
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
            return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
        ks_faults_set(f, &c);
        return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_faults_to_json(&c));
    }
    if (strcmp(path, "compact") == 0 && strcmp(method, "POST") == 0) {
        uint64_t upto = 0;
        if (rq && rq->len) {
            json_t *j = ks_parse_body(rq, &err);
            if (!j)
                return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
            const json_t *rvj = json_object_get(j, "resourceVersion");
            const char *rv = json_string_value(rvj);
            char *end = NULL;
            errno = 0;
            upto = rv ? strtoull(rv, &end, 10) : 0;
            bool bad = (rvj && !rv) || (rv && (!*rv || *end || errno || *rv == '-'));
            json_decref(j);
            if (bad) {
                ks_err_set(&err, 400, "BadRequest", "resourceVersion: want a decimal string");
                return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
            }
        }
        ks_store_compact(srv->s, upto);
        pthread_mutex_lock(&srv->s->mu);
        json_int_t comp = (json_int_t)srv->s->compacted;
        pthread_mutex_unlock(&srv->s->mu);
        return ks_send_json(conn, f, KS_VERB_OTHER, 200, json_pack("{s:I}", "compacted", comp));
    }
    ks_err_set(&err, 404, "NotFound", "no /sim endpoint %s %.100s", method, path);
    return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
}

#define MAX_SEGS 12

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
                             const char *method, const ks_req *rq)
{
    ks_faults *f = srv->f;
    ks_err err = {0};
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/livez") == 0 || strcmp(url, "/readyz") == 0)
        return ks_send_text(conn, f, KS_VERB_OTHER, 200, strdup("ok"), "text/plain", 0);
    if (!authorized(srv, conn)) {
        ks_err_set(&err, 401, "Unauthorized", "Unauthorized");
        return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
    }
    char path[2048];
    if (strlen(url) >= sizeof path) {
        ks_err_set(&err, 414, "RequestURITooLong", "request URI too long");
        return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
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
        return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_version());
    if (get && nseg >= 2 && strcmp(seg[0], "openapi") == 0 && strcmp(seg[1], "v3") == 0) {
        json_t *d = nseg == 2   ? ks_openapi_root()
                    : nseg == 4 ? ks_openapi_gv("", seg[3])
                    : nseg == 5 ? ks_openapi_gv(seg[3], seg[4])
                                : NULL;
        if (d)
            return ks_send_json(conn, f, KS_VERB_OTHER, 200, d);
    }
    if (!get && (nseg == 1 || nseg == 2) && (!strcmp(seg[0], "api") || !strcmp(seg[0], "apis"))) {
        /* discovery documents are read-only: 405, as kube-apiserver answers */
        ks_err_set(&err, 405, "MethodNotAllowed",
                   "the server does not allow this method on the requested resource");
        ks_err_details(&err, NULL, NULL, NULL);
        return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
    }
    if (nseg >= 1 && strcmp(seg[0], "api") == 0) {
        if (get && nseg == 1)
            return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_core(srv->addr));
        if (nseg >= 2 && strcmp(seg[1], "v1") == 0) {
            if (get && nseg == 2)
                return ks_send_json(conn, f, KS_VERB_OTHER, 200, ks_discovery_resources("", "v1"));
            return ks_handle_resource(srv, conn, method, "", "v1", seg + 2, nseg - 2, rq);
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
            return ks_send_json(conn, f, KS_VERB_OTHER, 200, d);
        if (nseg >= 4)
            return ks_handle_resource(srv, conn, method, seg[1], seg[2], seg + 3, nseg - 3, rq);
    }
    ks_err_set(&err, 404, "NotFound", "the server could not find the requested resource");
    return ks_send_err(conn, f, KS_VERB_OTHER, &err, NULL, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    (void)version;
    ks_server *srv = cls;
    ks_req *rq = *con_cls;
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
    ks_req *rq = *con_cls;
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
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)2000, MHD_OPTION_CONNECTION_TIMEOUT,
            o->conn_timeout_s ? o->conn_timeout_s : 90u, MHD_OPTION_LISTEN_BACKLOG_SIZE,
            (unsigned)1024, MHD_OPTION_THREAD_STACK_SIZE, (size_t)CONN_STACK, MHD_OPTION_ARRAY,
            (flags & MHD_USE_TLS) ? tls_opts : tls_opts + 2, MHD_OPTION_END);
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
