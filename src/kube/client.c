/* Kubernetes API client: settings, credentials, curl handle setup, Status decoding.
 *
 * Flow: informer / CAS backend -> [client] -> API server (TLS, bearer token or client cert).
 *
 * The client is immutable after creation except the bearer token read from a file: a
 * service-account token is rotated by the kubelet, so the file is stat()ed at most once a
 * second and re-read when its mtime or size changed. That state sits behind creds.lock,
 * the only lock here; nothing else is taken while it is held.
 */
#include "kube_internal.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PC__KUBE_DEFAULT_CONNECT_NS (5LL * 1000000000LL)
#define PC__KUBE_DEFAULT_REQUEST_NS (30LL * 1000000000LL)
#define PC__KUBE_DEFAULT_MAX_BODY ((size_t)64 << 20)
#define PC__KUBE_TOKEN_MAX ((size_t)64 << 10) /* a JWT is ~1-2 KiB; refuse absurd files */

int64_t pc__kube_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t pc__kube_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void pc__kube_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pc__kube_log(const pc_kube_client *c, int level, const char *fmt, ...)
{
    if (c && level > c->log_level)
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "level=%s component=kube ",
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (c && c->log)
        c->log(c->log_arg, level, line);
    else
        fprintf(stderr, "%s\n", line);
}

/* ---- bounded buffer ----------------------------------------------------------------------- */

void pc__buf_init(pc__buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

int pc__buf_append(pc__buf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return -EMSGSIZE;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        char *d;
        if (b->secret) {
            /* realloc would free the old block as it is: copy, then wipe it ourselves */
            d = malloc(cap);
            if (d && b->data) {
                memcpy(d, b->data, b->len + 1);
                explicit_bzero(b->data, b->cap);
                free(b->data);
            }
        } else {
            d = realloc(b->data, cap);
        }
        if (!d)
            return -ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void pc__buf_reset(pc__buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void pc__buf_fini(pc__buf *b)
{
    if (b->secret && b->data)
        explicit_bzero(b->data, b->cap);
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- credentials -------------------------------------------------------------------------- */

/* Read a whole small secret file. Returns 0 and a malloc'd NUL-terminated copy of *out_cap
 * bytes, or a negative errno. No copy is left behind unwiped (stdio's buffer is off). */
static int read_secret_file(const char *path, size_t max, char **out, size_t *out_cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    setvbuf(f, NULL, _IONBF, 0);
    pc__buf b;
    pc__buf_init(&b, max);
    b.secret = true;
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        rc = pc__buf_append(&b, chunk, n);
        if (rc)
            break;
    }
    explicit_bzero(chunk, sizeof(chunk));
    if (!rc && ferror(f))
        rc = -EIO;
    fclose(f);
    if (!rc && !b.data)
        rc = pc__buf_append(&b, "", 0) ? -ENOMEM : 0;
    if (!b.data && !rc)
        rc = -ENOMEM;
    if (rc) {
        pc__buf_fini(&b);
        return rc;
    }
    *out = b.data;
    *out_cap = b.cap;
    return 0;
}

static void token_free(pc__kube_creds *cr)
{
    if (cr->token) {
        explicit_bzero(cr->token, cr->token_cap);
        free(cr->token);
    }
    cr->token = NULL;
    cr->token_cap = 0;
}

/* Trim whitespace (token files end in "\n"). */
static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
}

/* Re-read the token file when it changed. Called with creds.lock held. */
static int token_refresh_locked(pc__kube_creds *cr, bool force, char *err, size_t errlen)
{
    struct stat st;
    if (stat(cr->token_file, &st) != 0) {
        int e = errno;
        pc__kube_errf(err, errlen, "token file %s: %s", cr->token_file, strerror(e));
        return -e;
    }
    if (!force && cr->token && st.st_mtim.tv_sec == cr->token_mtime.tv_sec &&
        st.st_mtim.tv_nsec == cr->token_mtime.tv_nsec && st.st_size == cr->token_size)
        return 0;
    char *t;
    size_t cap;
    int rc = read_secret_file(cr->token_file, PC__KUBE_TOKEN_MAX, &t, &cap);
    if (rc) {
        pc__kube_errf(err, errlen, "token file %s: %s", cr->token_file, strerror(-rc));
        return rc;
    }
    trim(t);
    if (!cr->token || strcmp(cr->token, t) != 0)
        cr->token_gen++;
    /* The old token is wiped, not just freed: freed memory is handed out again. */
    token_free(cr);
    cr->token = t;
    cr->token_cap = cap;
    cr->token_mtime = st.st_mtim;
    cr->token_size = st.st_size;
    return 0;
}

uint64_t pc__kube_token_gen(pc_kube_client *c)
{
    pc__kube_creds *cr = &c->creds;
    if (!cr->token_file)
        return 0;
    int64_t now = pc__kube_mono_ns();
    pthread_mutex_lock(&cr->lock);
    if (now - cr->token_checked_ns >= 1000000000LL) {
        cr->token_checked_ns = now;
        /* A failed re-read keeps the old token: the kubelet replaces the file atomically,
         * so a miss is transient and the old token stays valid for a while. */
        if (token_refresh_locked(cr, false, NULL, 0) != 0)
            pc__kube_log(c, PC_KUBE_LOG_WARN, "msg=\"cannot re-read token file\" file=%s",
                         cr->token_file);
    }
    uint64_t g = cr->token_gen;
    pthread_mutex_unlock(&cr->lock);
    return g;
}

struct curl_slist *pc__kube_headers(pc_kube_client *c, const char *content_type, uint64_t *gen)
{
    struct curl_slist *h = NULL, *t;
    uint64_t g = pc__kube_token_gen(c);
    if (!(t = curl_slist_append(h, "Accept: application/json")))
        goto fail;
    h = t;
    /* curl sends "Expect: 100-continue" for larger bodies and waits up to 1 s for it;
     * the API server answers directly, so the wait would only add latency. */
    if (!(t = curl_slist_append(h, "Expect:")))
        goto fail;
    h = t;
    if (content_type) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        if (!(t = curl_slist_append(h, ct)))
            goto fail;
        h = t;
    }
    pthread_mutex_lock(&c->creds.lock);
    if (c->creds.token) {
        size_t n = strlen(c->creds.token) + 32;
        char *a = malloc(n);
        if (a) {
            snprintf(a, n, "Authorization: Bearer %s", c->creds.token);
            t = curl_slist_append(h, a);
            /* The header held the secret: wipe before free (explicit_bzero: a memset
             * before free may be optimised away). */
            explicit_bzero(a, n);
            free(a);
        }
        if (!a || !t) {
            pthread_mutex_unlock(&c->creds.lock);
            goto fail;
        }
        h = t;
    }
    g = c->creds.token_gen;
    pthread_mutex_unlock(&c->creds.lock);
    if (gen)
        *gen = g;
    return h;
fail:
    pc__kube_headers_free(h);
    return NULL;
}

void pc__kube_headers_free(struct curl_slist *h)
{
    for (struct curl_slist *n = h; n; n = n->next)
        if (n->data)
            explicit_bzero(n->data, strlen(n->data));
    curl_slist_free_all(h);
}

/* ---- easy handle setup -------------------------------------------------------------------- */

#define SETOPT(e, opt, val)                                                                        \
    do {                                                                                           \
        CURLcode rc_ = curl_easy_setopt((e), (opt), (val));                                        \
        if (rc_ != CURLE_OK) {                                                                     \
            snprintf(errbuf, CURL_ERROR_SIZE, "curl option %s: %s", #opt,                          \
                     curl_easy_strerror(rc_));                                                     \
            return -EINVAL;                                                                        \
        }                                                                                          \
    } while (0)

int pc__kube_easy_setup(pc_kube_client *c, CURL *e, char *errbuf)
{
    errbuf[0] = '\0';
    SETOPT(e, CURLOPT_ERRORBUFFER, errbuf);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout_ns / 1000000));
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* "" disables proxies, also those of http_proxy / https_proxy / all_proxy: a variable
     * meant for other tools would otherwise get our bearer token, in clear text for an
     * http:// server. A proxy is used only when configured (kubeconfig proxy-url). */
    SETOPT(e, CURLOPT_PROXY, c->proxy ? c->proxy : "");
    if (c->connect_to)
        SETOPT(e, CURLOPT_CONNECT_TO, c->connect_to);
    /* HTTP/2 only where ALPN offers it over TLS; cleartext stays HTTP/1.1 keep-alive
     * (h2c upgrade is a round trip the API server does not need). */
    SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (c->https) {
        SETOPT(e, CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
        SETOPT(e, CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
        if (c->creds.ca.data)
            SETOPT(e, CURLOPT_CAINFO_BLOB, &c->creds.ca);
        else if (c->creds.ca_file)
            SETOPT(e, CURLOPT_CAINFO, c->creds.ca_file);
        if (c->creds.cert.data) {
            SETOPT(e, CURLOPT_SSLCERT_BLOB, &c->creds.cert);
            SETOPT(e, CURLOPT_SSLCERTTYPE, "PEM");
        } else if (c->creds.cert_file) {
            SETOPT(e, CURLOPT_SSLCERT, c->creds.cert_file);
        }
        if (c->creds.key.data) {
            SETOPT(e, CURLOPT_SSLKEY_BLOB, &c->creds.key);
            SETOPT(e, CURLOPT_SSLKEYTYPE, "PEM");
        } else if (c->creds.key_file) {
            SETOPT(e, CURLOPT_SSLKEY, c->creds.key_file);
        }
    }
    return 0;
}

int pc__kube_url(const pc_kube_client *c, const char *path, char *out, size_t len)
{
    int n = snprintf(out, len, "%s%s", c->server, path);
    return (n < 0 || (size_t)n >= len) ? -EMSGSIZE : 0;
}

int pc__kube_curl_error(CURLcode rc, const char *errbuf, const char *what, char *err, size_t errlen)
{
    const char *why = (errbuf && errbuf[0]) ? errbuf : curl_easy_strerror(rc);
    int e;
    const char *kind;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        e = -ETIMEDOUT, kind = "timed out";
        break;
    case CURLE_COULDNT_CONNECT:
        e = -ECONNREFUSED, kind = "server unreachable";
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        e = -EHOSTUNREACH, kind = "server host not resolved";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        e = -EPROTO, kind = "TLS: server certificate not trusted (wrong CA or host name)";
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_USE_SSL_FAILED:
        e = -EPROTO, kind = "TLS handshake failed";
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        e = -ECONNRESET, kind = "connection dropped";
        break;
    case CURLE_OUT_OF_MEMORY:
        e = -ENOMEM, kind = "out of memory";
        break;
    default:
        e = -EIO, kind = "transfer failed";
        break;
    }
    pc__kube_errf(err, errlen, "%s: %s: %s", what, kind, why);
    return e;
}

/* ---- Status decoding ---------------------------------------------------------------------- */

static const char *reason_phrase(long s)
{
    switch (s) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Request Entity Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "";
    }
}

bool pc_kube_status_too_large(const char *status, size_t len)
{
    json_t *st = status ? json_loadb(status, len, 0, NULL) : NULL;
    bool yes = false;
    if (json_integer_value(json_object_get(st, "code")) == 504) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(json_object_get(st, "details"), "causes"), i, c)
        {
            const char *r = json_string_value(json_object_get(c, "reason"));
            yes = yes || (r && strcmp(r, "ResourceVersionTooLarge") == 0);
        }
    }
    json_decref(st);
    return yes;
}

long pc_kube_status_describe(long http_status, const char *body, size_t body_len, char *msg,
                             size_t msglen)
{
    long code = http_status;
    json_t *root = NULL;
    if (body && body_len)
        root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, NULL);
    const char *kind = root ? json_string_value(json_object_get(root, "kind")) : NULL;
    if (root && json_is_object(root) && kind && strcmp(kind, "Status") == 0) {
        json_t *jc = json_object_get(root, "code");
        if (json_is_integer(jc) && json_integer_value(jc) > 0)
            code = (long)json_integer_value(jc);
        const char *m = json_string_value(json_object_get(root, "message"));
        const char *r = json_string_value(json_object_get(root, "reason"));
        pc__kube_errf(msg, msglen, "%ld %s: %s%s%s%s", http_status, reason_phrase(http_status),
                      m ? m : "(no message)", r ? " (reason=" : "", r ? r : "", r ? ")" : "");
    } else if (msg && msglen) {
        /* Not a Status: show the start of the body, printable bytes only. */
        char snip[121];
        size_t n = 0;
        for (size_t i = 0; body && i < body_len && n < sizeof(snip) - 1; i++)
            snip[n++] = isprint((unsigned char)body[i]) ? body[i] : ' ';
        snip[n] = '\0';
        pc__kube_errf(msg, msglen, "HTTP %ld%s%s: %s", http_status,
                      reason_phrase(http_status)[0] ? " " : "", reason_phrase(http_status),
                      n ? snip : "(empty body)");
    }
    json_decref(root);
    return code;
}

void pc_kube_response_fini(pc_kube_response *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

/* ---- client construction ------------------------------------------------------------------ */

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static int blob_dup(struct curl_blob *b, const char *p, size_t n)
{
    if (!p)
        return 0;
    if (!n)
        n = strlen(p);
    b->data = malloc(n + 1);
    if (!b->data)
        return -ENOMEM;
    memcpy(b->data, p, n);
    ((char *)b->data)[n] = '\0';
    b->len = n;
    b->flags = CURL_BLOB_NOCOPY; /* the client outlives every handle using it */
    return 0;
}

static void blob_free(struct curl_blob *b)
{
    if (b->data) {
        explicit_bzero(b->data, b->len); /* may be a private key */
        free(b->data);
    }
    b->data = NULL;
}

/* The URL for messages: "user:password@" in the authority shown as "***@" (a server URL may
 * carry basic-auth credentials; no error message or log line repeats them). malloc'd. */
static char *redact_url(const char *url)
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t alen = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', alen);
    char *r = NULL;
    if (!at)
        return strdup(url);
    if (asprintf(&r, "%.*s***%s", (int)(auth - url), url, at) < 0)
        return NULL;
    return r;
}

/* tls-server-name: TLS (SNI and certificate verification) uses `name`, the TCP connection
 * goes to the server's own host and port. curl has no SNI option of its own, so the request
 * URL names `name` and CURLOPT_CONNECT_TO maps name:port to the real host:port, which is what
 * client-go's TLSClientConfig.ServerName amounts to. */
static int apply_server_name(pc_kube_client *c, const char *name, char *err, size_t errlen)
{
    if (!name[0] || strlen(name) > 253 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != strlen(name)) {
        pc__kube_errf(err, errlen, "kube client %s: tls-server-name \"%.64s\" is no host name",
                      c->server_shown, name);
        return -EINVAL;
    }
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *url = NULL, *ct = NULL;
    int rc = -ENOMEM;
    if (!u)
        goto out;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, c->server, 0);
    if (!uc)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (!uc)
        uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (!uc)
        uc = curl_url_set(u, CURLUPART_HOST, name, 0);
    if (!uc)
        uc = curl_url_get(u, CURLUPART_URL, &url, 0);
    if (uc) {
        pc__kube_errf(err, errlen, "kube client %s: %s", c->server_shown, curl_url_strerror(uc));
        rc = uc == CURLUE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
        goto out;
    }
    if (asprintf(&ct, "%s:%s:%s:%s", name, port, host, port) < 0) {
        ct = NULL;
        goto out;
    }
    if (!(c->connect_to = curl_slist_append(NULL, ct)))
        goto out;
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        url[--n] = '\0';
    char *s = strdup(url);
    if (!s)
        goto out;
    free(c->server);
    c->server = s;
    rc = 0;
out:
    free(ct);
    curl_free(url);
    curl_free(port);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

int pc_kube_client_new(const pc_kube_options *o, pc_kube_client **out, char *err, size_t errlen)
{
    if (!o || !o->server || !out) {
        pc__kube_errf(err, errlen, "kube client: no server given");
        return -EINVAL;
    }
    char *shown = redact_url(o->server);
    if (!shown) {
        pc__kube_errf(err, errlen, "kube client: out of memory");
        return -ENOMEM;
    }
    bool https = strncmp(o->server, "https://", 8) == 0;
    int rc = -EINVAL;
    if (!https && strncmp(o->server, "http://", 7) != 0) {
        pc__kube_errf(err, errlen, "kube client: server %.200s: scheme must be https:// or http://",
                      shown);
        goto fail_early;
    }
    if (strlen(o->server) > PC__KUBE_SERVER_MAX) {
        /* a PATCH URL would not fit its slot's buffer and be cut */
        pc__kube_errf(err, errlen, "kube client: server URL %.64s... is longer than %d bytes",
                      shown, PC__KUBE_SERVER_MAX);
        goto fail_early;
    }
    if (o->insecure_skip_tls_verify && (o->ca_file || o->ca_pem)) {
        /* kubectl / client-go refuse this too: the CA would be silently ignored, and the
         * user likely believes the server is verified. */
        pc__kube_errf(err, errlen,
                      "kube client %s: insecure-skip-tls-verify together with a certificate "
                      "authority is not allowed (remove one of them)",
                      shown);
        goto fail_early;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        pc__kube_errf(err, errlen, "kube client: curl_global_init failed");
        rc = -ENOMEM;
        goto fail_early;
    }
    pc_kube_client *c = calloc(1, sizeof(*c));
    rc = -ENOMEM;
    bool oom = false;
    if (!c)
        goto fail_global;
    pthread_mutex_init(&c->creds.lock, NULL);
    c->server_shown = shown;
    shown = NULL;
    c->server = dup_opt(o->server, &oom);
    c->namespace_ = dup_opt(o->default_namespace ? o->default_namespace : "default", &oom);
    c->proxy = dup_opt(o->proxy_url && o->proxy_url[0] ? o->proxy_url : NULL, &oom);
    if (oom)
        goto fail;
    size_t sl = strlen(c->server);
    while (sl && c->server[sl - 1] == '/')
        c->server[--sl] = '\0';
    sl = strlen(c->server_shown);
    while (sl && c->server_shown[sl - 1] == '/')
        c->server_shown[--sl] = '\0';
    if (o->tls_server_name && o->tls_server_name[0]) {
        if ((rc = apply_server_name(c, o->tls_server_name, err, errlen)))
            goto fail_msg;
        if (strlen(c->server) > PC__KUBE_SERVER_MAX) {
            pc__kube_errf(err, errlen, "kube client %s: URL with tls-server-name longer than %d",
                          c->server_shown, PC__KUBE_SERVER_MAX);
            rc = -EINVAL;
            goto fail_msg;
        }
    }
    c->https = https;
    c->insecure = o->insecure_skip_tls_verify;
    c->connect_timeout_ns =
            o->connect_timeout_ns > 0 ? o->connect_timeout_ns : PC__KUBE_DEFAULT_CONNECT_NS;
    c->request_timeout_ns =
            o->request_timeout_ns > 0 ? o->request_timeout_ns : PC__KUBE_DEFAULT_REQUEST_NS;
    c->max_body = o->max_body ? o->max_body : PC__KUBE_DEFAULT_MAX_BODY;
    c->log_level = o->log_level_set ? o->log_level : PC_KUBE_LOG_WARN;
    c->log = o->log;
    c->log_arg = o->log_arg;

    pc__kube_creds *cr = &c->creds;
    cr->ca_file = dup_opt(o->ca_file, &oom);
    cr->cert_file = dup_opt(o->client_cert_file, &oom);
    cr->key_file = dup_opt(o->client_key_file, &oom);
    cr->token_file = dup_opt(o->token_file, &oom);
    if (!o->token_file) {
        cr->token = dup_opt(o->token && o->token[0] ? o->token : NULL, &oom);
        cr->token_cap = cr->token ? strlen(cr->token) + 1 : 0;
    }
    if (oom || blob_dup(&cr->ca, o->ca_pem, o->ca_pem_len) ||
        blob_dup(&cr->cert, o->client_cert_pem, o->client_cert_pem_len) ||
        blob_dup(&cr->key, o->client_key_pem, o->client_key_pem_len))
        goto fail;
    if (cr->token_file) {
        rc = token_refresh_locked(cr, true, err, errlen);
        if (rc) {
            rc = -EINVAL;
            goto fail;
        }
        cr->token_checked_ns = pc__kube_mono_ns();
    }
    if (c->insecure && https)
        pc__kube_log(c, PC_KUBE_LOG_WARN,
                     "server=%s msg=\"TLS certificate verification disabled "
                     "(insecure-skip-tls-verify): the connection can be intercepted\"",
                     c->server_shown);
    if (!https && (cr->token || cr->token_file))
        pc__kube_log(c, PC_KUBE_LOG_WARN, "server=%s msg=\"bearer token sent over cleartext http\"",
                     c->server_shown);
    *out = c;
    return 0;

fail:
    if (rc == -ENOMEM)
        pc__kube_errf(err, errlen, "kube client %s: out of memory", c->server_shown);
fail_msg:
    pc_kube_client_free(c);
    return rc;
fail_global:
    pc__kube_errf(err, errlen, "kube client %s: out of memory", shown);
    curl_global_cleanup();
fail_early:
    free(shown);
    return rc;
}

const char *pc_kube_client_server(const pc_kube_client *c)
{
    return c->server_shown;
}

const char *pc_kube_client_namespace(const pc_kube_client *c)
{
    return c->namespace_;
}

void pc_kube_client_free(pc_kube_client *c)
{
    if (!c)
        return;
    pc__kube_creds *cr = &c->creds;
    token_free(cr);
    free(cr->token_file);
    free(cr->ca_file);
    free(cr->cert_file);
    free(cr->key_file);
    blob_free(&cr->ca);
    blob_free(&cr->cert);
    blob_free(&cr->key);
    pthread_mutex_destroy(&cr->lock);
    free(c->server);
    free(c->server_shown);
    free(c->proxy);
    curl_slist_free_all(c->connect_to);
    free(c->namespace_);
    free(c);
    curl_global_cleanup();
}

int pc_kube_client_check(pc_kube_client *c, char *err, size_t errlen)
{
    pc_kube_conn *k;
    int rc = pc_kube_conn_new(c, &k);
    if (rc) {
        pc__kube_errf(err, errlen, "kube client %s: out of memory", c->server_shown);
        return rc;
    }
    pc_kube_response r;
    rc = pc_kube_conn_request(k, "GET", "/api", NULL, NULL, 0, &r);
    if (rc == 0 && (r.status == 401 || r.status == 403)) {
        pc__kube_errf(err, errlen, "server %s rejected the credentials: %s", c->server_shown,
                      r.error);
        rc = -EACCES;
    } else if (rc == 0 && r.status >= 300) {
        pc__kube_errf(err, errlen, "server %s: GET /api: %s", c->server_shown, r.error);
        rc = -EIO;
    } else if (rc) {
        pc__kube_errf(err, errlen, "%s", r.error);
    }
    pc_kube_response_fini(&r);
    pc_kube_conn_free(k);
    return rc;
}
