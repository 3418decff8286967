/* Internals of the Kubernetes client shared by the client, the CAS backend and the informer.
 *
 * Flow: informer / CAS backend -> [client internals: credentials, curl easy setup,
 *       bounded buffers, blocking and streaming transfers] -> API server.
 *
 * Not a public header: nothing outside src/kube and src/informer includes it.
 */
#ifndef PODCLAIM_KUBE_INTERNAL_H
#define PODCLAIM_KUBE_INTERNAL_H

#include <podclaim/kube.h>

#include "framer.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

/* ---- credentials --------------------------------------------------------------------------
 * Everything secret lives here and nowhere else. There is deliberately no function that
 * prints or describes this struct (curl docs/internals/CREDENTIALS.md). */
typedef struct pc__kube_creds {
    pthread_mutex_t lock; /* protects token, token_gen, token_mtime, token_checked_ns */
    char *token;          /* NULL = no bearer token */
    size_t token_cap;     /* bytes allocated at token: all of them are wiped when it goes */
    char *token_file;     /* NULL = static token */
    struct timespec token_mtime;
    off_t token_size;
    int64_t token_checked_ns; /* CLOCK_MONOTONIC of the last stat(); rotation checked 1/s */
    uint64_t token_gen;       /* bumped whenever the token changes; lets callers cache headers */
    struct curl_blob ca;      /* PEM data; .data NULL = use ca_file or the system store */
    struct curl_blob cert;
    struct curl_blob key;
    char *ca_file;
    char *cert_file;
    char *key_file;
} pc__kube_creds;

/* Longest server URL accepted: with the longest namespace and pod name, a PATCH URL must fit
 * the CAS slot's fixed buffer (a truncated URL would PATCH the wrong object). */
#define PC__KUBE_SERVER_MAX 512
#define PC__KUBE_URL_MAX (PC__KUBE_SERVER_MAX + PC_NAMESPACE_MAX + PC_NAME_MAX + 64)

struct pc_kube_client {
    /* fixed after creation: read by any thread without a lock */
    char *server;       /* request base, no trailing slash; its host is tls_server_name if set */
    char *server_shown; /* for messages: the configured URL, user:password@ shown as ***@ */
    struct curl_slist *connect_to; /* tls_server_name: "name:port:host:port"; NULL = none */
    char *proxy;                   /* NULL = no proxy, whatever the *_proxy variables say */
    char *namespace_;              /* default namespace */
    bool https;
    bool insecure;
    int64_t connect_timeout_ns;
    int64_t request_timeout_ns;
    size_t max_body;
    int log_level;
    pc_kube_log_fn log;
    void *log_arg;
    pc__kube_creds creds;
};

/* Log one line "level=<l> component=kube <fmt...>" if level passes the client's threshold. */
void pc__kube_log(const pc_kube_client *c, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Copy an error message into err (may be NULL). */
void pc__kube_errf(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Configure an easy handle for this client: TLS settings and client certificate, timeouts,
 * keep-alive, HTTP/2 over TLS, no signals. errbuf must be CURL_ERROR_SIZE bytes and live as
 * long as the handle is used. Returns 0 or -EINVAL (curl refused an option: message in errbuf). */
int pc__kube_easy_setup(pc_kube_client *c, CURL *e, char *errbuf);

/* The request headers: Accept JSON, the content type when not NULL, the bearer token (re-read
 * if its file rotated), no "Expect: 100-continue". *gen receives the token generation.
 * Returns the list (free with curl_slist_free_all) or NULL on allocation failure. */
struct curl_slist *pc__kube_headers(pc_kube_client *c, const char *content_type, uint64_t *gen);

/* Wipe the header strings (they may hold the bearer token) and free the list. NULL: no-op. */
void pc__kube_headers_free(struct curl_slist *h);

/* Current token generation, after checking the token file for rotation. Thread: any. */
uint64_t pc__kube_token_gen(pc_kube_client *c);

/* Map a transfer failure to a negative errno and write "<what>: <why>" into err. */
int pc__kube_curl_error(CURLcode rc, const char *errbuf, const char *what, char *err,
                        size_t errlen);

/* A byte buffer with a bound fixed at creation (curl DYNBUF's toobig). */
typedef struct pc__buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max;  /* append beyond this fails with -EMSGSIZE */
    bool secret; /* wipe every copy it leaves behind (growth, fini): token files */
} pc__buf;

void pc__buf_init(pc__buf *b, size_t max);
int pc__buf_append(pc__buf *b, const void *p, size_t n);
void pc__buf_reset(pc__buf *b);
void pc__buf_fini(pc__buf *b);

/* "GET" etc. + server + path into out. Returns -EMSGSIZE when it does not fit. */
int pc__kube_url(const pc_kube_client *c, const char *path, char *out, size_t len);

/* ---- blocking and streaming transfers on a pc_kube_conn -----------------------------------
 * A conn owns one curl multi handle with one easy handle, so that a blocked transfer can be
 * interrupted from another thread (pc__kube_conn_wakeup -> curl_multi_wakeup) and the owner
 * can do other work (the informer's resync) between chunks. */

/* Called on the conn's thread after every wake-up of the transfer loop (data, timeout or
 * pc__kube_conn_wakeup). Return true to abandon the transfer (-ECANCELED). */
typedef bool (*pc__kube_idle_fn)(void *arg);

typedef struct pc__kube_stream {
    size_t max_line;     /* framer bound; 0 = 16 MiB */
    pc__line_fn on_line; /* each complete line of a 2xx response */
    void *arg;
    int64_t timeout_ns;      /* whole-transfer timeout; 0 = none */
    int64_t idle_timeout_ns; /* no byte for this long: abort (-ETIMEDOUT, stalled); 0 = none */
    /* filled: */
    bool stalled;        /* ended by idle_timeout_ns */
    int line_rc;         /* the non-zero value on_line stopped with, else 0 */
    size_t truncated;    /* bytes of an unterminated last line when the stream ended */
    uint64_t bytes;      /* body bytes received */
    int64_t chunk_at_ns; /* CLOCK_MONOTONIC when the chunk being framed arrived */
} pc__kube_stream;

/* Interrupt the conn's current or next wait (thread: any). */
void pc__kube_conn_wakeup(pc_kube_conn *k);

/* Install the idle hook of the conn (thread: owner, while no transfer runs). */
void pc__kube_conn_set_idle(pc_kube_conn *k, pc__kube_idle_fn fn, void *arg);

/* Like pc_kube_conn_request, but a 2xx body goes line by line to s->on_line instead of
 * out->body (a non-2xx body is kept in out->body for the Status). Returns 0 when the response
 * ended normally or on_line stopped it (s->line_rc), -ECANCELED (idle hook), -EMSGSIZE (a line
 * over max_line), -ETIMEDOUT with s->stalled (silent for idle_timeout_ns) or a transfer
 * error. No 429 retry. */
int pc__kube_conn_stream(pc_kube_conn *k, const char *path, pc__kube_stream *s,
                         pc_kube_response *out);

/* Wait up to ns, waking early for pc__kube_conn_wakeup; runs the idle hook on each wake.
 * Returns 0, or -ECANCELED if the hook asked to stop. */
int pc__kube_conn_sleep(pc_kube_conn *k, int64_t ns);

/* CLOCK_MONOTONIC / CLOCK_REALTIME in ns. */
int64_t pc__kube_mono_ns(void);
int64_t pc__kube_real_ns(void);

#endif /* PODCLAIM_KUBE_INTERNAL_H */
