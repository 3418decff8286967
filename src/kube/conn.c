/* Blocking and streaming requests on one keep-alive connection (pc_kube_conn).
 *
 * Flow: informer (LIST pages, WATCH stream) / tools -> [conn] -> API server.
 *
 * Each conn drives its single easy handle through its own multi handle instead of
 * curl_easy_perform: curl_multi_poll can be woken from another thread
 * (curl_multi_wakeup), which is how the informer is stopped or asked to resync while it
 * sits in a watch that may stay silent for minutes. The multi keeps the connection cache,
 * so consecutive requests reuse one TCP/TLS connection.
 */
#include "kube_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PC__KUBE_429_RETRIES 3
#define PC__KUBE_429_MAX_WAIT_NS (10LL * 1000000000LL)
#define PC__KUBE_KEEP_BUF ((size_t)64 << 10) /* a framer buffer beyond this is not kept */

struct pc_kube_conn {
    pc_kube_client *client;
    CURLM *multi;
    CURL *easy;
    char errbuf[CURL_ERROR_SIZE];
    pc__kube_idle_fn idle;
    void *idle_arg;
    /* per transfer */
    pc__buf body;
    pc__kube_stream *stream; /* NULL = plain request */
    pc__framer framer;
    bool framing;       /* the response is 2xx: body goes to the framer */
    int frame_rc;       /* framer error or on_line stop value */
    int64_t last_rx_ns; /* CLOCK_MONOTONIC of the last body byte (or the transfer start) */
    bool stalled;       /* the stream's idle timeout ended the transfer */
};

int pc_kube_conn_new(pc_kube_client *c, pc_kube_conn **out)
{
    pc_kube_conn *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->client = c;
    k->multi = curl_multi_init();
    k->easy = curl_easy_init();
    if (!k->multi || !k->easy) {
        pc_kube_conn_free(k);
        return -ENOMEM;
    }
    pc__framer_init(&k->framer, 0);
    *out = k;
    return 0;
}

void pc_kube_conn_free(pc_kube_conn *k)
{
    if (!k)
        return;
    if (k->easy)
        curl_easy_cleanup(k->easy);
    if (k->multi)
        curl_multi_cleanup(k->multi);
    pc__buf_fini(&k->body);
    pc__framer_fini(&k->framer);
    free(k);
}

void pc__kube_conn_wakeup(pc_kube_conn *k)
{
    curl_multi_wakeup(k->multi);
}

void pc__kube_conn_set_idle(pc_kube_conn *k, pc__kube_idle_fn fn, void *arg)
{
    k->idle = fn;
    k->idle_arg = arg;
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
    pc_kube_conn *k = arg;
    size_t len = size * n;
    if (k->stream)
        k->last_rx_ns = pc__kube_mono_ns();
    if (k->stream && !k->framing) {
        long st = 0;
        curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &st);
        k->framing = st >= 200 && st < 300;
    }
    if (k->framing) {
        k->stream->bytes += len;
        k->stream->chunk_at_ns = k->last_rx_ns;
        int rc = pc__framer_feed(&k->framer, p, len, k->stream->on_line, k->stream->arg);
        if (rc) {
            k->frame_rc = rc;
            return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
        }
        return len;
    }
    if (pc__buf_append(&k->body, p, len) != 0) {
        k->frame_rc = -EMSGSIZE;
        return 0;
    }
    return len;
}

/* Run the easy handle to completion on the conn's multi. Returns the CURLcode, or
 * CURLE_ABORTED_BY_CALLBACK with *cancelled when the idle hook asked to stop. */
static CURLcode run(pc_kube_conn *k, bool *cancelled)
{
    CURLcode result = CURLE_OK;
    *cancelled = false;
    if (curl_multi_add_handle(k->multi, k->easy) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    for (;;) {
        int running = 0;
        if (curl_multi_perform(k->multi, &running) != CURLM_OK) {
            result = CURLE_OUT_OF_MEMORY;
            break;
        }
        CURLMsg *m;
        int left;
        bool done = false;
        while ((m = curl_multi_info_read(k->multi, &left))) {
            if (m->msg == CURLMSG_DONE && m->easy_handle == k->easy) {
                result = m->data.result;
                done = true;
            }
        }
        if (done)
            break;
        if (k->idle && k->idle(k->idle_arg)) {
            *cancelled = true;
            result = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        int wait_ms = 1000;
        if (k->stream && k->stream->idle_timeout_ns > 0) {
            /* the watchdog: bytes are due; none for idle_timeout_ns ends the transfer */
            int64_t left = k->last_rx_ns + k->stream->idle_timeout_ns - pc__kube_mono_ns();
            if (left <= 0) {
                k->stalled = true;
                result = CURLE_OPERATION_TIMEDOUT;
                break;
            }
            if (left < 1000LL * 1000000LL)
                wait_ms = (int)((left + 999999) / 1000000);
        }
        /* Blocks until socket activity, a curl timer, or curl_multi_wakeup. */
        if (curl_multi_poll(k->multi, NULL, 0, wait_ms, NULL) != CURLM_OK) {
            result = CURLE_OUT_OF_MEMORY;
            break;
        }
        if (k->idle && k->idle(k->idle_arg)) {
            *cancelled = true;
            result = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
    }
    curl_multi_remove_handle(k->multi, k->easy);
    return result;
}

/* One transfer; fills out. Returns 0 when a response arrived, else a negative errno. */
static int transfer(pc_kube_conn *k, const char *method, const char *path, const char *content_type,
                    const char *body, size_t body_len, int64_t timeout_ns, pc_kube_response *out)
{
    pc_kube_client *c = k->client;
    char url[PC__KUBE_SERVER_MAX + 8192]; /* a LIST path with a long continue token */
    char what[PC__KUBE_SERVER_MAX + 8192 + 16];
    memset(out, 0, sizeof(*out));
    snprintf(what, sizeof(what), "%s %s%s", method, c->server_shown, path);
    if (pc__kube_url(c, path, url, sizeof(url))) {
        pc__kube_errf(out->error, sizeof(out->error), "%s: URL too long", method);
        return -EINVAL;
    }
    CURL *e = k->easy;
    curl_easy_reset(e);
    int rc = pc__kube_easy_setup(c, e, k->errbuf);
    if (rc) {
        pc__kube_errf(out->error, sizeof(out->error), "%s: %s", what, k->errbuf);
        return rc;
    }
    struct curl_slist *h = pc__kube_headers(c, content_type, NULL);
    if (!h) {
        pc__kube_errf(out->error, sizeof(out->error), "%s: out of memory", what);
        return -ENOMEM;
    }
    pc__buf_fini(&k->body);
    pc__buf_init(&k->body, c->max_body);
    pc__framer_reset(&k->framer);
    k->framing = false;
    k->frame_rc = 0;
    k->stalled = false;
    k->last_rx_ns = pc__kube_mono_ns();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, k);
    if (timeout_ns > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ns / 1000000));
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    }

    bool cancelled;
    CURLcode cr = run(k, &cancelled);
    pc__kube_headers_free(h);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    if (k->stream)
        k->stream->truncated = pc__framer_pending(&k->framer);

    if (cancelled) {
        pc__kube_errf(out->error, sizeof(out->error), "%s: cancelled", what);
        return -ECANCELED;
    }
    if (k->frame_rc) {
        if (k->frame_rc == -EMSGSIZE) {
            pc__kube_errf(out->error, sizeof(out->error), "%s: %s exceeds the limit of %zu bytes",
                          what, k->stream ? "a watch event line" : "response body",
                          k->stream ? k->framer.max_line : c->max_body);
            return -EMSGSIZE;
        }
        if (k->frame_rc < 0 && k->frame_rc != -ECANCELED) {
            pc__kube_errf(out->error, sizeof(out->error), "%s: %s", what, strerror(-k->frame_rc));
            return k->frame_rc;
        }
        k->stream->line_rc = k->frame_rc; /* on_line stopped the stream on purpose */
        return 0;
    }
    if (k->stalled) {
        k->stream->stalled = true;
        pc__kube_errf(out->error, sizeof(out->error), "%s: no data for %lld ms", what,
                      (long long)(k->stream->idle_timeout_ns / 1000000));
        return -ETIMEDOUT;
    }
    if (cr != CURLE_OK) {
        out->status = 0;
        return pc__kube_curl_error(cr, k->errbuf, what, out->error, sizeof(out->error));
    }
    if (out->status == 429 || out->status == 503) {
        curl_off_t ra = 0;
        if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            out->retry_after_ns = (int64_t)ra * 1000000000LL;
    }
    if (out->status >= 300) {
        char m[400];
        pc_kube_status_describe(out->status, k->body.data, k->body.len, m, sizeof(m));
        pc__kube_errf(out->error, sizeof(out->error), "%s: %s", what, m);
    }
    /* hand the body over */
    out->body = k->body.data;
    out->body_len = k->body.len;
    k->body.data = NULL;
    k->body.len = k->body.cap = 0;
    return 0;
}

int64_t pc_kube_retry_wait_ns(const pc_kube_response *r)
{
    int64_t wait = r->retry_after_ns > 0 ? r->retry_after_ns : 1000000000LL;
    return wait < PC__KUBE_429_MAX_WAIT_NS ? wait : PC__KUBE_429_MAX_WAIT_NS;
}

int pc_kube_conn_request_once(pc_kube_conn *k, const char *method, const char *path,
                              const char *content_type, const char *body, size_t body_len,
                              pc_kube_response *out)
{
    k->stream = NULL;
    return transfer(k, method, path, content_type, body, body_len, k->client->request_timeout_ns,
                    out);
}

int pc_kube_conn_request(pc_kube_conn *k, const char *method, const char *path,
                         const char *content_type, const char *body, size_t body_len,
                         pc_kube_response *out)
{
    for (int attempt = 0;; attempt++) {
        int rc = pc_kube_conn_request_once(k, method, path, content_type, body, body_len, out);
        if (rc || out->status != 429 || attempt >= PC__KUBE_429_RETRIES)
            return rc;
        /* 429: the server (API priority and fairness) says when to come back. */
        int64_t wait = pc_kube_retry_wait_ns(out);
        pc__kube_log(k->client, PC_KUBE_LOG_INFO,
                     "msg=\"429 Too Many Requests, retrying\" path=%s wait_ms=%lld", path,
                     (long long)(wait / 1000000));
        pc_kube_response_fini(out);
        if (pc__kube_conn_sleep(k, wait) == -ECANCELED) {
            memset(out, 0, sizeof(*out));
            pc__kube_errf(out->error, sizeof(out->error), "%s %s: cancelled", method, path);
            return -ECANCELED;
        }
    }
}

int pc__kube_conn_stream(pc_kube_conn *k, const char *path, pc__kube_stream *s,
                         pc_kube_response *out)
{
    k->stream = s;
    s->line_rc = 0;
    s->truncated = 0;
    s->stalled = false;
    /* A fresh framer when the bound changed, or to give back a buffer a big event grew:
     * the conn lives as long as the informer, the spike should not. */
    if (k->framer.max_line != (s->max_line ? s->max_line : (16u << 20)) ||
        k->framer.cap > PC__KUBE_KEEP_BUF) {
        pc__framer_fini(&k->framer);
        pc__framer_init(&k->framer, s->max_line);
    }
    int rc = transfer(k, "GET", path, NULL, NULL, 0, s->timeout_ns, out);
    k->stream = NULL;
    return rc;
}

int pc__kube_conn_sleep(pc_kube_conn *k, int64_t ns)
{
    int64_t end = pc__kube_mono_ns() + ns;
    for (;;) {
        if (k->idle && k->idle(k->idle_arg))
            return -ECANCELED;
        int64_t left = end - pc__kube_mono_ns();
        if (left <= 0)
            return 0;
        int ms = (int)((left + 999999) / 1000000);
        curl_multi_poll(k->multi, NULL, 0, ms, NULL);
    }
}
