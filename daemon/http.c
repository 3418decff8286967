/* podclaimd HTTP front: libmicrohttpd event loop, routing, bearer auth, bounded bodies.
 *
 * Flow: client -> [http] -> claims.c (claim/release) | metrics.c (/metrics, snapshots).
 *
 * MHD runs http.threads epoll event loops (internal polling thread pool) with
 * MHD_ALLOW_SUSPEND_RESUME: a claim's connection is suspended while the claim waits in its
 * pool, so ten thousand waiting claims cost ten thousand sockets and request records, not
 * threads. Everything here runs on MHD's threads; the request record (pcd_req) is owned by
 * the connection from the first call of the handler until MHD reports the request completed.
 */
#include "log.h"
#include "podclaimd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const pcd_route_names[] = {
#define PCD_XX(n, s) s,
        PCD_ROUTE_MAP(PCD_XX)
#undef PCD_XX
};
const int pcd_codes[PCD_N_CODES] = {200, 400, 401, 404, 405, 409, 413,
                                    422, 499, 500, 502, 503, 504, 0};

void pcd_count_response(pcd *d, pcd_route r, int code)
{
    int i = 0;
    while (i < PCD_N_CODES - 1 && pcd_codes[i] != code)
        i++;
    atomic_fetch_add_explicit(&d->responses[r][i], 1, memory_order_relaxed);
}

static enum MHD_Result reply_text(pcd_req *q, int code, const char *ctype, char *body, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(q->conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    pcd_count_response(q->d, q->route, code);
    q->answered = true;
    return rc;
}

enum MHD_Result pcd_reply(pcd_req *q, int code, char *body, int retry_after)
{
    size_t len = strlen(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after >= 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (code == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(q->conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    pcd_count_response(q->d, q->route, code);
    q->answered = true;
    return rc;
}

enum MHD_Result pcd_reply_error(pcd_req *q, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* jansson refuses a string that is not UTF-8, and no JSON meant no answer at all */
    pcd_utf8_repair(msg);
    json_t *j = json_pack("{s:s,s:i}", "error", msg, "code", code);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body)
        return MHD_NO;
    int ra = code == 503 ? (int)q->d->cfg.retry_after_s : -1;
    return pcd_reply(q, code, body, ra);
}

enum MHD_Result pcd_reply_not_leader(pcd_req *q, const pcd_pool *p)
{
    char leader[256] = "";
    pcd_leader_of(q->d, p, leader, sizeof(leader));
    char msg[512];
    snprintf(msg, sizeof(msg),
             "this replica does not lead %s%s; retry%s%s (the leader dispatches every claim)",
             p ? "pool " : "these pools", p ? p->key : "", leader[0] ? " on " : " later", leader);
    json_t *j = json_pack("{s:s,s:i,s:s}", "error", msg, "code", 503, "leader", leader);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body)
        return MHD_NO;
    size_t len = strlen(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", (unsigned)q->d->cfg.retry_after_s);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    if (leader[0])
        MHD_add_response_header(resp, "X-Podclaim-Leader", leader);
    enum MHD_Result rc = MHD_queue_response(q->conn, 503, resp);
    MHD_destroy_response(resp);
    pcd_count_response(q->d, q->route, 503);
    q->answered = true;
    return rc;
}

/* Constant-time comparison, so the token cannot be guessed byte by byte from timings. */
static bool token_ok(pcd *d, struct MHD_Connection *c)
{
    if (!d->token[0])
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    const char *t = h + 7;
    size_t n = strlen(t), m = strlen(d->token);
    unsigned char diff = n != m;
    for (size_t i = 0; i < m; i++)
        diff |= (unsigned char)(t[i < n ? i : 0] ^ d->token[i]);
    return diff == 0;
}

/* Split "/v1/pools/ns/p/claims" into at most 8 segments (in place on a copy). */
static size_t split_path(char *path, char **seg, size_t max)
{
    size_t n = 0;
    for (char *save, *t = strtok_r(path, "/", &save); t && n < max; t = strtok_r(NULL, "/", &save))
        seg[n++] = t;
    return n;
}

typedef struct route_match {
    pcd_route route;
    bool method_ok;
    const char *ns, *pool, *env, *id;
} route_match;

static route_match match(const char *method, char **s, size_t n)
{
    route_match m = {.route = PCD_ROUTE_OTHER, .method_ok = true};
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0, del = strcmp(method, "DELETE") == 0;
    if (n == 1 && strcmp(s[0], "healthz") == 0) {
        m.route = PCD_ROUTE_HEALTHZ;
        m.method_ok = get;
    } else if (n == 1 && strcmp(s[0], "readyz") == 0) {
        m.route = PCD_ROUTE_READYZ;
        m.method_ok = get;
    } else if (n == 1 && strcmp(s[0], "metrics") == 0) {
        m.route = PCD_ROUTE_METRICS;
        m.method_ok = get;
    } else if (n >= 2 && strcmp(s[0], "v1") == 0 && strcmp(s[1], "pools") == 0) {
        if (n == 2) {
            m.route = PCD_ROUTE_POOLS;
            m.method_ok = get;
        } else if (n == 4) {
            m.route = PCD_ROUTE_POOL;
            m.method_ok = get;
        } else if (n == 5 && strcmp(s[4], "claims") == 0) {
            m.route = PCD_ROUTE_CLAIM;
            m.method_ok = post;
        } else if (n == 6 && strcmp(s[4], "claims") == 0) {
            m.route = PCD_ROUTE_RELEASE;
            m.method_ok = del;
            m.id = s[5];
        }
        if (n >= 4) {
            m.ns = s[2];
            m.pool = s[3];
        }
    } else if (n >= 2 && strcmp(s[0], "v1") == 0 && strcmp(s[1], "envs") == 0) {
        if (n == 2) {
            m.route = PCD_ROUTE_ENVS;
            m.method_ok = get;
        } else if (n == 4 && strcmp(s[3], "claims") == 0) {
            m.route = PCD_ROUTE_ENV_CLAIM;
            m.method_ok = post;
            m.env = s[2];
        }
    }
    return m;
}

static enum MHD_Result handle_get(pcd_req *q, route_match *m)
{
    pcd *d = q->d;
    size_t len = 0;
    char *body;
    switch (m->route) {
    case PCD_ROUTE_HEALTHZ:
        return reply_text(q, 200, "text/plain", strdup("ok\n"), 3);
    case PCD_ROUTE_READYZ: {
        /* ready: every informer and controller cache synced; the body says whether this
         * replica leads (a follower is ready too: it answers claims with 503 naming the
         * leader, and takes over within the lease duration) */
        char role[300], text[400];
        pcd_cluster_role(d, role, sizeof(role));
        bool ready = pcd_ready(d);
        snprintf(text, sizeof(text), "%s%s\n",
                 ready                       ? "ok "
                 : atomic_load(&d->draining) ? "shutting down; "
                                             : "not synced; ",
                 role);
        body = strdup(text);
        return reply_text(q, ready ? 200 : 503, "text/plain", body, strlen(body));
    }
    case PCD_ROUTE_METRICS:
        body = pcd_metrics_render(d, &len);
        if (!body)
            return MHD_NO;
        return reply_text(q, 200, "text/plain; version=0.0.4; charset=utf-8", body, len);
    case PCD_ROUTE_POOLS:
        body = pcd_pools_json(d, NULL, &len);
        return body ? pcd_reply(q, 200, body, -1) : MHD_NO;
    case PCD_ROUTE_ENVS:
        body = pcd_envs_json(d, &len);
        return body ? pcd_reply(q, 200, body, -1) : MHD_NO;
    case PCD_ROUTE_POOL: {
        pcd_pool *p = pcd_find_pool(d, m->ns, m->pool);
        if (!p)
            return pcd_reply_error(q, 404, "pool %s/%s is not served here", m->ns, m->pool);
        body = pcd_pools_json(d, p, &len);
        return body ? pcd_reply(q, 200, body, -1) : MHD_NO;
    }
    default:
        return pcd_reply_error(q, 404, "no such path");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    pcd *d = cls;
    pcd_req *q = *con_cls;
    char path[1024];
    char *seg[8];
    snprintf(path, sizeof(path), "%s", url);
    size_t n = split_path(path, seg, 8);
    route_match m = match(method, seg, n);

    if (q == NULL) { /* first call: headers are in, the body is not */
        q = calloc(1, sizeof(*q));
        if (!q)
            return MHD_NO;
        q->d = d;
        q->conn = conn;
        q->fd = -1;
        q->route = m.route;
        q->started_ns = pc_now_ns();
        *con_cls = q;
        if (m.route == PCD_ROUTE_CLAIM || m.route == PCD_ROUTE_ENV_CLAIM ||
            m.route == PCD_ROUTE_RELEASE)
            atomic_fetch_add_explicit(&d->open_reqs, 1, memory_order_relaxed);
        /* a declared body over the limit is refused before it is read (MHD then closes the
         * connection instead of reading the body it did not consume) */
        const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > d->cfg.http_max_body) {
            q->too_big = true;
            return pcd_reply_error(q, 413, "request body of %s bytes is over the limit of %llu", cl,
                                   (unsigned long long)d->cfg.http_max_body);
        }
        return MHD_YES;
    }
    if (q->answered) {
        *upload_size = 0; /* discard whatever else comes */
        return MHD_YES;
    }
    if (*upload_size) { /* a body chunk */
        if (!q->too_big && q->body_len + *upload_size <= d->cfg.http_max_body) {
            if (q->body_len + *upload_size + 1 > q->body_cap) {
                size_t cap = q->body_cap ? q->body_cap : 1024;
                while (cap < q->body_len + *upload_size + 1)
                    cap *= 2;
                char *nb = realloc(q->body, cap);
                if (!nb)
                    return MHD_NO;
                q->body = nb;
                q->body_cap = cap;
            }
            memcpy(q->body + q->body_len, upload, *upload_size);
            q->body_len += *upload_size;
            q->body[q->body_len] = '\0';
        } else {
            q->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* the whole request is in (or a suspended request was resumed) */
    if (q->suspended) {
        q->suspended = false;
        return q->route == PCD_ROUTE_RELEASE ? pcd_release_answer(q) : pcd_claim_answer(q);
    }
    if (m.route == PCD_ROUTE_OTHER)
        return pcd_reply_error(q, 404, "no such path: %s", url);
    if (!m.method_ok)
        return pcd_reply_error(q, 405, "%s is not allowed on %s", method, url);
    if (m.route != PCD_ROUTE_HEALTHZ && m.route != PCD_ROUTE_READYZ &&
        m.route != PCD_ROUTE_METRICS && !token_ok(d, conn))
        return pcd_reply_error(q, 401, "missing or wrong bearer token");
    if (q->too_big)
        return pcd_reply_error(q, 413, "request body is over the limit of %llu bytes",
                               (unsigned long long)d->cfg.http_max_body);
    switch (m.route) {
    case PCD_ROUTE_CLAIM:
        return pcd_claim_begin(q, m.ns, m.pool, NULL);
    case PCD_ROUTE_ENV_CLAIM:
        return pcd_claim_begin(q, NULL, NULL, m.env);
    case PCD_ROUTE_RELEASE:
        return pcd_release_begin(q, m.ns, m.pool, m.id);
    default:
        return handle_get(q, &m);
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    pcd *d = cls;
    pcd_req *q = *con_cls;
    if (!q)
        return;
    if (q->route == PCD_ROUTE_CLAIM || q->route == PCD_ROUTE_ENV_CLAIM ||
        q->route == PCD_ROUTE_RELEASE)
        atomic_fetch_sub_explicit(&d->open_reqs, 1, memory_order_relaxed);
    pcd_req_free(q);
    *con_cls = NULL;
}

/* MHD divides MHD_OPTION_CONNECTION_LIMIT over its threads, and a thread at its share stops
 * accepting while the other may have room: with 10,000 waiting claims on 2 threads some
 * connections sat unaccepted in the listen queue. So MHD gets a per-thread limit of the whole
 * bound, and the bound itself is kept here, over all threads: a connection beyond it is
 * accepted and closed at once (the client sees a reset, not a hang). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)c;
    (void)socket_ctx;
    pcd *d = cls;
    atomic_fetch_add_explicit(&d->open_conns, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1,
                              memory_order_relaxed);
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    (void)addr;
    (void)len;
    pcd *d = cls;
    return atomic_load_explicit(&d->open_conns, memory_order_relaxed) <
                           (int64_t)d->cfg.http_max_connections
                   ? MHD_YES
                   : MHD_NO;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '"'))
        msg[--n] = '\0';
    pcd_logf(PCD_DEBUG, "component=http msg=\"%s\"", msg);
}

int pcd_http_start(pcd *d)
{
    char host[256];
    snprintf(host, sizeof(host), "%s", d->cfg.listen);
    char *colon = strrchr(host, ':');
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        pcd_logf(PCD_ERROR, "listen=%s msg=\"not an IPv4 address\"", d->cfg.listen);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    unsigned threads = (unsigned)d->cfg.http_threads;
    d->mhd = MHD_start_daemon(
            flags, 0, accept_policy, d, on_request, d, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
            d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, d, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, d, MHD_OPTION_THREAD_POOL_SIZE,
            threads > 1 ? threads : 0, MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)(d->cfg.http_max_connections * (threads > 1 ? threads : 1)),
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(d->cfg.http_idle_timeout_ns / 1000000000),
            MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
            /* per-connection pool: headers and MHD's buffers (the body is copied out of it);
             * it is most of what a waiting claim costs, so it is kept small */
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_END);
    if (!d->mhd) {
        pcd_logf(PCD_ERROR, "listen=%s msg=\"cannot start the HTTP server (address in use?)\"",
                 d->cfg.listen);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
    d->port = info ? info->port : 0;
    return 0;
}

void pcd_http_stop(pcd *d)
{
    if (d->mhd)
        MHD_stop_daemon(d->mhd);
    d->mhd = NULL;
}
