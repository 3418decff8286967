/* podclaim Kubernetes API client and the Kubernetes CAS backend.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> scheduler (cas_start)
 *       -> [backend: kube] -> result; the informer also reads through [kube].
 *
 * pc_kube_client  the connection settings and credentials (kubeconfig, in-cluster or explicit
 *                 options). Immutable after creation except the service-account token, which
 *                 is re-read when its file changes. Thread-safe: share one client.
 * pc_kube_conn    one keep-alive connection for blocking requests (the informer's LIST, tools,
 *                 tests). Owned by one thread.
 * pc_kube_backend the pc_backend of DESIGN.md §2: each CAS is one strategic-merge PATCH with
 *                 the resourceVersion precondition, driven by one libcurl multi handle on its
 *                 own thread, many transfers in flight over reused connections (HTTP/2 when
 *                 the server offers it over TLS).
 *
 * Security: TLS verification is on unless insecure_skip_tls_verify is set explicitly (then a
 * warning is logged). Tokens, Authorization headers, client keys and credentials in a server
 * URL never appear in a log line or an error message: credentials live in one internal struct
 * without a print function, and every copy of a token we make is wiped before it is freed.
 * No proxy is used unless one is configured (http_proxy & co. are ignored).
 *
 * Errors: functions return 0 or a negative errno and fill `err` (when not NULL) with a line
 * that says what failed on which object; err is NUL-terminated and truncated to errlen.
 */
#ifndef PODCLAIM_KUBE_H
#define PODCLAIM_KUBE_H

#include <podclaim/backend.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Log levels of the `level=` field; a client logs lines at or above its log_level. */
#define PC_KUBE_LOG_ERROR 0
#define PC_KUBE_LOG_WARN 1
#define PC_KUBE_LOG_INFO 2
#define PC_KUBE_LOG_DEBUG 3

/* Where log lines go: one line, no newline, already `level=... key=value` formatted.
 * Called from any thread the client is used on. */
typedef void (*pc_kube_log_fn)(void *arg, int level, const char *line);

/* Explicit connection settings. Strings are borrowed for the duration of pc_kube_client_new
 * (the client copies them). PEM "data" fields win over the matching file fields. */
typedef struct pc_kube_options {
    const char *server;  /* required: https://host:port or http://host:port (a path prefix is
                          * kept), at most 512 bytes */
    const char *ca_file; /* PEM bundle trusted for the server; NULL = system store */
    const char *ca_pem;  /* PEM data, ca_pem_len bytes (0 = strlen) */
    size_t ca_pem_len;
    const char *client_cert_file; /* mutual TLS (PEM); with client_key_file */
    const char *client_key_file;
    const char *client_cert_pem; /* PEM data (0 len = strlen) */
    size_t client_cert_pem_len;
    const char *client_key_pem;
    size_t client_key_pem_len;
    const char *token;             /* bearer token; NULL = none */
    const char *token_file;        /* bearer token read from here and re-read when the file
                                * changes (service-account rotation); wins over token */
    bool insecure_skip_tls_verify; /* explicit only; logs a warning; refused with a CA */
    const char *tls_server_name;   /* name for SNI and certificate verification instead of
                                    * the server's host (kubeconfig tls-server-name); NULL =
                                    * the host */
    const char *proxy_url;         /* HTTP(S) proxy (kubeconfig proxy-url); NULL = none: the
                                    * *_proxy environment variables are ignored */
    const char *default_namespace; /* informational: pc_kube_client_namespace(); NULL = "default" */

    int64_t connect_timeout_ns; /* 0 = 5 s */
    int64_t request_timeout_ns; /* blocking requests (not watches); 0 = 30 s */
    size_t max_body;            /* response body limit of blocking requests; 0 = 64 MiB */
    int log_level;      /* PC_KUBE_LOG_*; 0 (error) .. 3 (debug); default set by _new: warn */
    bool log_level_set; /* false = PC_KUBE_LOG_WARN */
    pc_kube_log_fn log; /* NULL = stderr */
    void *log_arg;
} pc_kube_options;

typedef struct pc_kube_client pc_kube_client;

/* Create a client from explicit options. Thread: any. Blocking: reads token/PEM files.
 * Returns 0 and *out, or -EINVAL (no server, bad scheme, a server URL over 512 bytes,
 * insecure_skip_tls_verify with a CA, a tls_server_name that is no host name, unreadable
 * token file...), -ENOMEM; *out unchanged on failure. */
int pc_kube_client_new(const pc_kube_options *o, pc_kube_client **out, char *err, size_t errlen);

/* Create a client from a kubeconfig file (the real format: clusters/users/contexts lists,
 * current-context). context NULL = current-context. Supported: server,
 * certificate-authority(-data), insecure-skip-tls-verify, tls-server-name, proxy-url, token,
 * tokenFile, client-certificate(-data), client-key(-data), the context's namespace; relative paths are
 * relative to the file's folder. `tuning` supplies timeouts/limits/logging (its credential
 * and server fields are ignored); NULL = defaults. path NULL = $KUBECONFIG or ~/.kube/config.
 * Returns 0 and *out, -ENOENT (no file, context/cluster/user not found), -EINVAL (bad YAML,
 * missing server, exec/auth-provider users, which are unsupported), -EMSGSIZE (a file over
 * 4 MiB), -ENOMEM. */
int pc_kube_client_new_kubeconfig(const char *path, const char *context,
                                  const pc_kube_options *tuning, pc_kube_client **out, char *err,
                                  size_t errlen);

/* Create a client from in-cluster settings: KUBERNETES_SERVICE_HOST/PORT, the service account
 * token (re-read when it rotates), ca.crt and namespace under `sa_dir`
 * (NULL = /var/run/secrets/kubernetes.io/serviceaccount). Returns 0, -ENOENT (not in a
 * cluster: variables or files missing), -EINVAL, -ENOMEM. */
int pc_kube_client_new_in_cluster(const char *sa_dir, const pc_kube_options *tuning,
                                  pc_kube_client **out, char *err, size_t errlen);

/* The server URL as configured (no trailing slash; user:password@ in it shown as ***@) and
 * the default namespace. Valid until the client is freed. Thread: any. */
const char *pc_kube_client_server(const pc_kube_client *c);
const char *pc_kube_client_namespace(const pc_kube_client *c);

/* Check that the server is reachable and accepts the credentials: GET /api.
 * Returns 0, -ECONNREFUSED / -EHOSTUNREACH / -ETIMEDOUT (unreachable), -EPROTO (TLS failure,
 * e.g. certificate not signed by the configured CA), -EACCES (401/403: token rejected),
 * -EIO (other HTTP error). err says which, with the server's Status message. Blocking. */
int pc_kube_client_check(pc_kube_client *c, char *err, size_t errlen);

/* Free a client. NULL is a no-op. Every conn/backend/informer using it must be freed first. */
void pc_kube_client_free(pc_kube_client *c);

/* ---- blocking requests ---------------------------------------------------------------- */

/* The result of one request. body is malloc'd and NUL-terminated (free with
 * pc_kube_response_fini); status 0 means no HTTP response arrived. */
typedef struct pc_kube_response {
    long status; /* HTTP status; 0 = none */
    char *body;  /* NULL when empty */
    size_t body_len;
    int64_t retry_after_ns; /* from Retry-After on 429/503; 0 = none */
    char error[512];        /* status 0 or >= 400: what failed (decoded Status message) */
} pc_kube_response;

void pc_kube_response_fini(pc_kube_response *r);

typedef struct pc_kube_conn pc_kube_conn;

/* A keep-alive connection for blocking requests. Owned by the calling thread. Returns 0,
 * -ENOMEM. */
int pc_kube_conn_new(pc_kube_client *c, pc_kube_conn **out);
void pc_kube_conn_free(pc_kube_conn *k);

/* One request: method ("GET", "PATCH", ...), path with query ("/api/v1/..."), optional body
 * with its content type. A 429 is retried after its Retry-After (at most 3 times, each wait
 * capped at 10 s). Returns 0 when a response arrived (any status; out->error set for >= 400),
 * or -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -EPROTO (TLS), -EMSGSIZE (body over the
 * limit), -EIO with out->error set. Always call pc_kube_response_fini(out). Blocking: yes. */
int pc_kube_conn_request(pc_kube_conn *k, const char *method, const char *path,
                         const char *content_type, const char *body, size_t body_len,
                         pc_kube_response *out);

/* pc_kube_conn_request without the 429 retry: a 429 comes back as it is, its Retry-After in
 * out->retry_after_ns, for a caller that serves many objects from one thread and would rather
 * put this one aside than make all of them wait (the pool controller). Blocking: yes. */
int pc_kube_conn_request_once(pc_kube_conn *k, const char *method, const char *path,
                              const char *content_type, const char *body, size_t body_len,
                              pc_kube_response *out);

/* How long to wait before sending again after the 429 `r`: its Retry-After, 1 s when it gave
 * none, at most 10 s (the bounds of pc_kube_conn_request's own retry). Cannot fail. */
int64_t pc_kube_retry_wait_ns(const pc_kube_response *r);

/* ---- streaming and interruption (watches outside the informer) -------------------------- */

/* Called on the conn's thread after every wake-up of a transfer or sleep (data, a 1 s poll
 * timeout, or pc_kube_conn_wakeup). Return true to abandon the transfer: the request then
 * returns -ECANCELED. Keep it short. */
typedef bool (*pc_kube_idle_fn)(void *arg);

/* Install the idle hook for every later request, stream and sleep on k (NULL = none).
 * Thread: the conn's owner, while no transfer runs. Cannot fail. */
void pc_kube_conn_set_idle(pc_kube_conn *k, pc_kube_idle_fn fn, void *arg);

/* Wake the conn's current or next wait so its idle hook runs now. Thread: any (the only conn
 * function other threads may call). Blocking: no. Cannot fail. */
void pc_kube_conn_wakeup(pc_kube_conn *k);

/* One line of a streamed 2xx body (a watch event), without its newline; valid during the call
 * only, not NUL-terminated. Return 0 to go on, anything else to stop the stream. */
typedef int (*pc_kube_line_fn)(void *arg, const char *line, size_t len);

/* GET path and hand each line of a 2xx body to on_line as it arrives (a non-2xx body is kept
 * in out->body for its Status). max_line bounds one line (0 = 16 MiB); timeout_ns bounds the
 * whole transfer (0 = none: a watch ends by its timeoutSeconds). Returns 0 when the response
 * ended or on_line stopped it (*line_rc, may be NULL, gets on_line's value, else 0),
 * -ECANCELED (idle hook), -EMSGSIZE (a line over max_line), or a transfer error as for
 * pc_kube_conn_request (no 429 retry). Always call pc_kube_response_fini(out). Blocking: yes. */
int pc_kube_conn_stream(pc_kube_conn *k, const char *path, size_t max_line, int64_t timeout_ns,
                        pc_kube_line_fn on_line, void *arg, int *line_rc, pc_kube_response *out);

/* Wait up to ns, returning early with -ECANCELED when the idle hook asks to stop (woken by
 * pc_kube_conn_wakeup). Returns 0 after the full wait. Blocking: yes. */
int pc_kube_conn_sleep(pc_kube_conn *k, int64_t ns);

/* ---- helpers (pure functions, unit-tested) --------------------------------------------- */

/* Describe an error response: "409 Conflict: <Status.message> (reason=Conflict)" when the body
 * is a Kubernetes Status object, else "HTTP 502: <start of body, printable>". Never copies
 * more than msglen-1 bytes. Returns the Status `code` when present, else http_status. */
long pc_kube_status_describe(long http_status, const char *body, size_t body_len, char *msg,
                             size_t msglen);

/* Whether `status` (an error answer's body, an ERROR watch event's object) is the watch cache's
 * "Too large resource version": a Status with code 504 and a details.causes entry of reason
 * ResourceVersionTooLarge (kube-apiserver's answer to a LIST at a version it has not reached;
 * the client should relist). false for anything else, malformed input included. */
bool pc_kube_status_too_large(const char *status, size_t len);

/* Build the CAS PATCH body (strategic merge patch JSON) for `req` into buf. Returns the length,
 * or -EMSGSIZE (buf too small), -EINVAL (a label or annotation that would overwrite
 * podclaim.io/phase, podclaim.io/pool, podclaim.io/claim-id or podclaim.io/claimed-at; a
 * missing field; a string that is not valid UTF-8; with a message in err). */
int pc_kube_patch_body(const pc_cas_request *req, char *buf, size_t len, char *err, size_t errlen);

/* ---- the CAS backend ---------------------------------------------------------------------- */

typedef struct pc_kube_backend_options {
    uint32_t max_inflight;    /* transfer slots; cas_start beyond returns -EAGAIN; 0 = 1024 */
    uint32_t max_connections; /* connections to the server; 0 = 8 */
    int64_t timeout_ns;       /* per PATCH (also the cap below); 0 = 10 s */
    /* How long a PATCH sent for a claim with a deadline may run past that deadline; 0 = 1 s,
     * < 0 = none (the PATCH is abandoned at the deadline). The server applies a PATCH it has
     * received whether or not the client still waits: abandoned at the deadline, it can win a
     * pod that nobody is told of (the claim ends DEADLINE). Waited for, its answer decides
     * the claim, and a pod won past the deadline is the caller's (result OK). */
    int64_t deadline_grace_ns;
    size_t max_body;    /* response body limit per PATCH; 0 = 1 MiB */
    size_t max_request; /* request body limit per PATCH; 0 = 64 KiB */
} pc_kube_backend_options;

typedef struct pc_kube_backend pc_kube_backend;

/* Start the backend thread. Borrows `c` (must outlive the backend). o NULL = defaults.
 * Returns 0 and *out, -ENOMEM, or a pthread_create error. */
int pc_kube_backend_new(pc_kube_client *c, const pc_kube_backend_options *o, pc_kube_backend **out,
                        char *err, size_t errlen);

/* The interface to pass to pc_pool_new; valid until pc_kube_backend_free.
 * cas_start: Thread: any. Blocking: no (builds the body, takes a mutex for a few ns, wakes the
 * backend thread). Returns 0, -EAGAIN (all slots busy), -ESHUTDOWN. An invalid claim (reserved
 * label/annotation keys, bad pod name, body too big) is reported as PC_CAS_INVALID through done,
 * possibly before cas_start returns. It also has backend.h's attach/wait/wake/detach: the first
 * pool started on it runs the curl loop on its scheduler thread until it shuts down (the
 * backend thread stays out of the loop meanwhile); other pools on the same backend are then
 * driven by that thread. */
pc_backend *pc_kube_backend_iface(pc_kube_backend *kb);

/* Counters since start (relaxed reads). Thread: any. */
typedef struct pc_kube_backend_stats {
    uint64_t started;
    uint64_t outcomes[PC_CAS_OUTCOME_COUNT];
    uint64_t connections;  /* connections opened so far (keep-alive reuse keeps this low) */
    uint64_t buffer_bytes; /* held by the response buffers between transfers; a buffer that
                            * grew over 64 KiB is given back after its transfer */
} pc_kube_backend_stats;
void pc_kube_backend_stats_read(const pc_kube_backend *kb, pc_kube_backend_stats *out);

/* Stop the thread and free. Transfers still in flight are aborted and reported RETRYABLE
 * ("backend stopped") exactly once. Order at teardown: pc_pool_shutdown (drains the CAS calls),
 * then this (the join guarantees no completion is still running inside the pool), then
 * pc_pool_free. NULL is a no-op. Called while a pool still drives the loop (not shut down), it
 * waits for that pool's shutdown. */
void pc_kube_backend_free(pc_kube_backend *kb);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_KUBE_H */
