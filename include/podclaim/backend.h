/* podclaim backend interface: how the pool's scheduler reaches the API server.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS
 *       -> [backend] -> result.
 *
 * A backend performs one compare-and-swap on a pod: "if the pod is still at
 * resourceVersion V, apply the claim (phase -> target, labels, annotations, images)".
 * The call is asynchronous: cas_start() must not wait on the network; it reports the
 * outcome later through the completion function, from any thread, exactly once.
 * Implementations: the in-memory backend (podclaim/membackend.h) and the Kubernetes
 * backend (libcurl multi, a later module).
 */
#ifndef PODCLAIM_BACKEND_H
#define PODCLAIM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds of the strings the core copies. Kubernetes: namespace is a DNS label (63),
 * a pod name a DNS subdomain (253), uid a UUID (36); resourceVersion is opaque but
 * in practice a decimal etcd revision. One byte more for the NUL. */
#define PC_NAMESPACE_MAX 64
#define PC_NAME_MAX 254
#define PC_UID_MAX 64
#define PC_RV_MAX 32
#define PC_CLAIM_ID_MAX 64

/* A pod as the informer saw it. Used for offers and as the CAS precondition.
 * All strings are NUL-terminated and borrowed: the callee copies what it keeps. */
typedef struct pc_pod_ref {
    const char *namespace_;       /* required */
    const char *name;             /* required */
    const char *uid;              /* may be NULL or "" when unknown */
    const char *resource_version; /* required: the version observed idle */
} pc_pod_ref;

typedef struct pc_kv {
    const char *key;
    const char *value;
} pc_kv;

/* What a claim writes onto the pod. Borrowed by the pool from enqueue until the
 * claim's callback has started: the caller keeps these arrays and strings alive. */
typedef struct pc_claim_opts {
    const pc_kv *images; /* key = container name, value = image */
    size_t n_images;
    const pc_kv *labels;
    size_t n_labels;
    const pc_kv *annotations;
    size_t n_annotations;
    const char *target_phase; /* podclaim.io/phase after the claim; NULL = "Running" */
} pc_claim_opts;

#define PC_CAS_OUTCOME_MAP(XX)                                                                     \
    XX(WON, "won")             /* applied; new_rv is the pod's version after the claim */          \
    XX(CONFLICT, "conflict")   /* 409: the version moved; drop this pod, try the next */           \
    XX(NOT_FOUND, "not_found") /* 404: the pod is gone; drop it, try the next */                   \
    XX(INVALID, "invalid")     /* 400/422: the claim's options are bad; no retry */                \
    XX(RETRYABLE, "retryable") /* 429/5xx/timeout/network: back off and retry */

typedef enum pc_cas_outcome {
#define PC_XX_ENUM(name, str) PC_CAS_##name,
    PC_CAS_OUTCOME_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            PC_CAS_OUTCOME_COUNT
} pc_cas_outcome;

/* "won", "conflict", ...; "unknown" for a value out of range. Static storage. */
const char *pc_cas_outcome_name(pc_cas_outcome o);

/* One CAS. The struct itself is valid only during cas_start(); the strings and opts it
 * points to stay valid until the completion function has been called. */
typedef struct pc_cas_request {
    pc_pod_ref pod;             /* resourceVersion here is the precondition */
    const pc_claim_opts *opts;  /* never NULL */
    const char *target_phase;   /* resolved: opts->target_phase or "Running" */
    const char *claim_id;       /* value of annotation podclaim.io/claim-id */
    int64_t claimed_at_unix_ns; /* value of annotation podclaim.io/claimed-at (RFC 3339) */
    int64_t deadline_ns;        /* CLOCK_MONOTONIC; 0 = none. A backend may bound the request by
                                 * it, but a request the server may still apply should be
                                 * waited for a while past it: a WON reported late is the
                                 * claim's (OK), one abandoned is a pod nobody is told of */
} pc_cas_request;

/* Reported exactly once per cas_start() that returned 0.
 * new_rv: the pod's resourceVersion after a WON, else NULL. message: why, for anything
 * but WON (may be NULL); both borrowed for the duration of the call.
 * retry_after_ns: for RETRYABLE, the server's Retry-After (0 = none).
 * Thread: any; may be called before cas_start() returns. */
typedef void (*pc_cas_done_fn)(void *token, pc_cas_outcome outcome, const char *new_rv,
                               const char *message, int64_t retry_after_ns);

typedef struct pc_backend pc_backend;
struct pc_backend {
    /* Start one CAS. Must not block on the network, nor for long on anything else: the
     * pool's scheduler thread calls it and dispatches nothing meanwhile. Returns 0 and later
     * calls done(token, ...) exactly once, or returns a negative errno and never calls done.
     * Thread: the scheduler threads of the pools using the backend; concurrent calls (from
     * several pools) must be safe. */
    int (*cas_start)(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done, void *token);
    void *impl; /* the implementation's state */

    /* Optional: a backend with an event loop of its own (the Kubernetes backend's curl multi
     * handle) may let one pool's scheduler thread run that loop, so a CAS is sent, answered
     * and its result taken in on one thread: no hand-off and no wake-up of a second thread
     * per CAS. All four or none (NULL, as designated initialisers leave them); a pool uses
     * them only when all four are set.
     *
     * attach: the scheduler thread, once, when it starts. 0: the calling thread drives the
     *   backend from now until detach (the backend's own thread, if any, stays out of the
     *   loop). A negative errno: it does not (another pool's scheduler drives it already);
     *   that pool then parks on its own futex as without these hooks. CASes started by
     *   other threads (other pools sharing the backend) keep working: the attached thread
     *   drives them too, and their done() runs on it.
     * wait: the attached thread only, where it would sleep. Sends what cas_start queued and
     *   reports (done(), on the calling thread) what has ended; then, if it reported
     *   nothing and deadline_ns >= 0, sleeps until deadline_ns (CLOCK_MONOTONIC, 0 = none;
     *   may return earlier, never sleeps much past it), I/O of the backend or a wake. -1:
     *   never sleeps (the caller has other work; called so the loop keeps moving).
     * wake: any thread. Makes the attached thread's current wait return soon, or its next
     *   one if it is not waiting now (a wake is not lost). Thread-safe against detach: may
     *   be called after it, until the backend is freed.
     * detach: the attached thread, when its scheduler stops (its own CASes have all been
     *   reported); the backend drives its loop itself again. */
    int (*attach)(pc_backend *b);
    void (*wait)(pc_backend *b, int64_t deadline_ns);
    void (*wake)(pc_backend *b);
    void (*detach)(pc_backend *b);
};

/* A backend that wraps another (to time, count or filter its CASes) and hands the loop hooks
 * through to it, so the pool still drives the inner backend's loop. Set iface.cas_start and
 * iface.impl as for any backend, call pc_backend_wrap, and pass &iface to pc_pool_new. */
typedef struct pc_backend_wrapper {
    pc_backend iface; /* first member: the hooks find `inner` from the pointer the pool passes */
    pc_backend *inner;
} pc_backend_wrapper;

/* Sets w->inner = inner, and w->iface's attach, wait, wake and detach to call inner's when
 * inner has all four (else they stay NULL, and a pool on w parks on its own). Leaves
 * cas_start and impl alone. Thread: any, before the pool starts. Cannot fail. */
void pc_backend_wrap(pc_backend_wrapper *w, pc_backend *inner);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_BACKEND_H */
