/* podclaim: the per-pool streaming claim scheduler.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> result.
 *
 * A pool hands idle pods to claims. Callers enqueue claims (any thread); the informer
 * offers idle pods (pc_pool_offer_idle); one scheduler thread pairs the best waiting
 * claim with the oldest idle pod, reserves the pod and starts the backend's
 * compare-and-swap (non-blocking); the result comes back to the same thread, which runs
 * the callback. Every enqueued claim ends in exactly one callback.
 *
 * Thread-safety: every function here may be called from any thread unless its comment
 * says otherwise. pc_pool_free() must not race with anything on the same pool.
 */
#ifndef PODCLAIM_PODCLAIM_H
#define PODCLAIM_PODCLAIM_H

#include <podclaim/backend.h>

#include <ck_stack.h> /* the intrusive inbox linkage inside pc_claim (Concurrency Kit) */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------------------- */

/* Functions return 0 or a negative errno. The name of any such code, or of a positive
 * errno; static storage. */
const char *pc_strerror(int err);

/* ---- time ------------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in ns: the clock of every deadline and *_at field below. Cannot fail. */
int64_t pc_now_ns(void);

/* ---- pool configuration ----------------------------------------------------------------- */

typedef struct pc_pool_config {
    /* Identity, copied by pc_pool_new; labels of the metrics. namespace_ and name required. */
    const char *namespace_;
    const char *name;
    const char *team;
    const char *user;
    const char *env;
    const char *const *tags; /* n_tags strings */
    size_t n_tags;

    /* Claims waiting (accepted by enqueue, not yet answered, no CAS in flight): enqueue
     * refuses with -EAGAIN beyond it. A claim whose CAS lost waits again without being
     * refused, so the count may pass it by at most max_inflight. 0 = 65536 */
    uint32_t inbox_capacity;
    uint32_t max_inflight;    /* concurrent CAS calls of this pool; 0 = 256 */
    uint32_t cas_workers;     /* ignored: the scheduler thread starts every CAS itself */
    int64_t promote_after_ns; /* aging period: a claim moves up one level per period; 0 = 30 s */
    uint32_t retry_limit;     /* retryable CAS failures before ERROR; 0 = 5 */
    int64_t retry_backoff_ns; /* first backoff, doubled per retry, jittered, capped at 32x; 0 = 50 ms */
    /* How long a dispatched pod stays unselectable unless the informer shows it at another
     * version first (it normally does within milliseconds); when one expires the resync hook
     * runs at once. 0 = 5 s */
    int64_t reservation_ttl_ns;
    /* How long a pod whose CAS got CONFLICT stays unselectable unless the informer shows it at
     * another version first (a real server's 409 means a newer version exists, which the
     * watch brings within its lag; this bounds a spurious one). 0 = 1 s; capped at the TTL;
     * expiry works as the TTL's. */
    int64_t conflict_hold_ns;
    int64_t resync_period_ns; /* how often the resync hook runs; 0 = 10 s; <0 = never */
    /* Resync hook: the safety net that re-offers idle pods. Called on the scheduler thread
     * every resync_period_ns; it should call pc_pool_offer_idle for every pod it believes
     * idle (offers of pods already queued or reserved at that version are ignored).
     * It must not block long and must not call pc_pool_shutdown/free. NULL = none. */
    void (*resync)(void *arg);
    void *resync_arg;
    /* Offers and withdrawals waiting for the scheduler at most; beyond, they return
     * -EAGAIN (the resync hook offers again). 0 = 65536 */
    uint32_t offer_capacity;
} pc_pool_config;

/* ---- claims ----------------------------------------------------------------------------- */

#define PC_PRIORITY_HIGHEST 0
#define PC_PRIORITY_LOWEST 5
#define PC_PRIORITY_LEVELS 6

#define PC_CLAIM_STATUS_MAP(XX)                                                                    \
    XX(OK, "ok") /* the pod is the caller's: pod_namespace/pod_name at resource_version */         \
    XX(DEADLINE, "deadline")   /* the deadline passed before a pod was won */                      \
    XX(CANCELLED, "cancelled") /* pc_claim_cancel before a pod was won */                          \
    XX(SHUTDOWN, "shutdown")   /* the pool shut down before a pod was won */                       \
    XX(REJECTED, "rejected")   /* the claim's options are invalid (the server said 400/422) */     \
    XX(ERROR, "error")         /* retries exhausted; error says the last failure */

typedef enum pc_claim_status {
#define PC_XX_ENUM(name, str) PC_CLAIM_##name,
    PC_CLAIM_STATUS_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            PC_CLAIM_STATUS_COUNT
} pc_claim_status;

/* "ok", "deadline", ...; "unknown" out of range. Static storage. */
const char *pc_claim_status_name(pc_claim_status s);

typedef struct pc_claim_result {
    pc_claim_status status;
    char pod_namespace[PC_NAMESPACE_MAX]; /* OK only; else "" */
    char pod_name[PC_NAME_MAX];           /* OK only; else "" */
    char resource_version[PC_RV_MAX];     /* OK: the pod's version after the claim */
    char claim_id[PC_CLAIM_ID_MAX];       /* the id written to podclaim.io/claim-id */
    char error[256];                      /* why, for anything but OK; else "" */
    int64_t latency_ns;                   /* enqueued_at -> result */
    uint32_t attempts;                    /* CAS calls made for this claim */
} pc_claim_result;

typedef struct pc_claim pc_claim;
struct pc__pod; /* the pool's record of a pod (private) */

/* Called exactly once per claim that pc_pool_enqueue accepted. Runs on the pool's
 * scheduler thread (for a pool shut down before it was started, on the thread calling
 * pc_pool_shutdown), one callback at a time: keep it short, never block in it (the pool
 * dispatches nothing meanwhile), and never call pc_pool_claim, pc_pool_shutdown or
 * pc_pool_free from it (enqueueing more claims, cancelling, offering pods are fine). `r` is valid during the call;
 * from its first instruction the pool no longer touches `c`, so the callback may free it. */
typedef void (*pc_claim_cb)(pc_claim *c, const pc_claim_result *r, void *arg);

/* A claim lives in caller storage (no allocation on the hot path). Initialise it with
 * pc_claim_init (or zero it), fill the public fields, enqueue. Public fields are read by the pool
 * from enqueue until the callback starts; do not change them in between. */
struct pc_claim {
    /* public */
    pc_claim_opts opts;
    int priority;        /* PC_PRIORITY_HIGHEST (0) .. PC_PRIORITY_LOWEST (5); clamped */
    int64_t deadline_ns; /* CLOCK_MONOTONIC (pc_now_ns); 0 = none. A CAS in flight at the
                          * deadline is waited for (as long as the backend lets it run): a
                          * pod it wins is the caller's, result OK after the deadline */
    pc_claim_cb cb;      /* required */
    void *cb_arg;
    int64_t enqueued_at_ns; /* CLOCK_MONOTONIC; 0 = set by enqueue. Orders FIFO inside a level */
    const char *id; /* claim id written to the pod; NULL = the pool makes one (<pool>-<n>) */

    /* private: owned by the pool between enqueue and callback. Ordered by use: the fields
     * every claim touches first (a claim is written on the producer's core and read on the
     * scheduler's, so each cache line it spans is a transfer), the rare ones last. */
    struct {
        ck_stack_entry_t entry; /* inbox / results inbox linkage */
        struct pc_pool *pool;
        struct pc_claim *prev, *next; /* its level's in-order list */
        _Atomic unsigned flags;       /* cancel requested / queued, result final */
        int state;
        /* Set when the scheduler takes the claim in (all on the lines above and below, so
         * that admission touches as few lines as a claim has: a backlog of 200k waiting
         * claims does not fit in any cache). */
        int level_base; /* priority after clamping */
        uint32_t attempts;
        uint32_t retries;
        bool suspect;             /* in the pool's map of ids whose CAS was answered RETRYABLE */
        uint64_t seq;             /* the order the scheduler took claims in (FIFO tie-break) */
        int64_t admitted_at_ns;   /* CLOCK_MONOTONIC: when the scheduler took it in */
        size_t level_index;       /* in its level: heap position, PC__IN_LIST; SIZE_MAX = none */
        size_t timer_index;       /* position in the scheduler's timer heap; SIZE_MAX = none */
        int64_t timer_at_ns;      /* next timer of this claim (deadline or retry); 0 = none */
        struct pc__pod *pod;      /* the pod record of the CAS (held until the callback) */
        struct pc__pod *seen_pod; /* INFLIGHT: the informer showed this pod claimed with our
                                   * id (held until the CAS reports); NULL = none */
        uint32_t pod_gen;         /* the reservation the CAS was made under */
        pc_cas_outcome outcome;
        char pod_rv[PC_RV_MAX]; /* the version the CAS is made at */
        char new_rv[PC_RV_MAX]; /* the version after a won CAS */
        /* rarer */
        int final_status;    /* the result decided while a cancel was on its way */
        int64_t retry_at_ns; /* CLOCK_MONOTONIC: when a backing-off claim may run again */
        int64_t retry_after_ns;
        ck_stack_entry_t cancel_entry; /* cancel inbox linkage */
        /* Recognition of a CAS whose answer was lost (pc_pool_observe_claimed): */
        uint64_t id_hash;         /* of the claim id, while suspect */
        struct pc_claim *id_next; /* that map's chain */
        char seen_rv[PC_RV_MAX];  /* the version seen_pod showed */
        char pod_uid[PC_UID_MAX];
        char id_buf[PC_CLAIM_ID_MAX];
        char message[192];
    } priv;
};

/* Zero the public fields of `c` (the pool initialises the private ones at enqueue) and set
 * priority, callback and its argument. Cannot fail. */
void pc_claim_init(pc_claim *c, int priority, pc_claim_cb cb, void *cb_arg);

/* Check claim options against the Kubernetes rules for what they become on the pod, as
 * pc_pool_enqueue does: no NULL array with a non-zero count, no NULL string; label and
 * annotation keys are qualified names ([DNS subdomain <= 253 "/"] name <= 63); label values
 * and the target phase are label values (<= 63; the phase not empty); annotations together
 * <= 256 KiB; container names are DNS labels; images are not empty. Image syntax is not
 * checked. NULL opts are valid. Returns 0, or -EINVAL with a message in err (if err is not
 * NULL; truncated to errlen). Thread: any. */
int pc_claim_opts_check(const pc_claim_opts *opts, char *err, size_t errlen);

/* ---- snapshot ---------------------------------------------------------------------------- */

typedef struct pc_snapshot {
    uint64_t idle_ready;      /* idle pods selectable now (in the ready-queue) */
    uint64_t queue_len;       /* claims waiting: in the inbox, for a pod, or for a retry */
    uint64_t reserved;        /* pods reserved (dispatched, not yet seen in their new state) */
    uint64_t inflight_cas;    /* CAS calls started and not yet reported */
    int64_t last_dispatch_at; /* CLOCK_REALTIME unix ns of the last dispatch; 0 = never */
} pc_snapshot;

/* ---- pool -------------------------------------------------------------------------------- */

typedef struct pc_pool pc_pool;

/* Create a pool (not started). Copies cfg; borrows `backend`, which must outlive the pool.
 * Returns 0 and *out, or -EINVAL (missing namespace/name/backend, bad values) with *out
 * unchanged, or -ENOMEM. Thread: any. */
int pc_pool_new(const pc_pool_config *cfg, pc_backend *backend, pc_pool **out);

/* Start the scheduler thread. Returns 0, -EALREADY, -ESHUTDOWN (after pc_pool_shutdown),
 * or the error of pthread_create. Claims may be enqueued and pods offered before start;
 * they wait. */
int pc_pool_start(pc_pool *p);

/* Hand a claim to the pool. Blocking: no (lock-free; wakes the scheduler if it sleeps).
 * Returns 0: the callback will be called exactly once. Otherwise the callback is never
 * called and `c` is the caller's again: -EAGAIN inbox full (backpressure), -EINVAL no
 * callback, an empty id or one of PC_CLAIM_ID_MAX bytes or more, or options that
 * pc_claim_opts_check refuses; -ESHUTDOWN the pool is shutting down.
 * Sets c->enqueued_at_ns if 0. */
int pc_pool_enqueue(pc_pool *p, pc_claim *c);

/* Request cancellation. The claim ends CANCELLED unless it already won a pod or its CAS
 * wins (a CAS already sent is not aborted: a won pod is the caller's, result OK).
 * Thread: any, from enqueue until the callback has started; the caller must keep `c`
 * alive until this returns. Blocking: no (one lock-free push; O(log n) for the scheduler).
 * Idempotent. */
void pc_claim_cancel(pc_claim *c);

/* Convenience: enqueue a claim with `opts` and `priority` and wait for its result.
 * timeout_ns > 0 becomes the claim's deadline (result DEADLINE); <= 0 waits without one.
 * Returns 0 with *out filled (any status), or an enqueue error (*out untouched).
 * Blocking: yes. Never call it from a pool callback. */
int pc_pool_claim(pc_pool *p, const pc_claim_opts *opts, int priority, int64_t timeout_ns,
                  pc_claim_result *out);

/* Offer an idle pod (the informer saw it idle at pod->resource_version).
 * Thread: any. Blocking: no (a message from a lock-free free list, a lock-free push; an
 * allocation only while the pool holds fewer than offer_capacity messages). Owns: copies
 * `pod`. The scheduler makes it selectable unless it is reserved at that version (stale);
 * a queued pod keeps its place and takes the newer version; a reserved pod offered at a
 * different version has its reservation released. Returns 0, -EINVAL (missing namespace,
 * name or resourceVersion, or a string too long), -EAGAIN (offer_capacity messages are
 * waiting for the scheduler), -ENOMEM, -ESHUTDOWN. */
int pc_pool_offer_idle(pc_pool *p, const pc_pod_ref *pod);

/* The pod is no longer idle (claimed by someone, not ready, being deleted, gone):
 * remove it from the ready-queue and release its reservation. resource_version may be
 * NULL. Same contract as pc_pool_offer_idle. */
int pc_pool_withdraw(pc_pool *p, const pc_pod_ref *pod);

/* The informer saw `pod` leave idle carrying annotation podclaim.io/claim-id = claim_id, at
 * pod->resource_version (the version of that change). The pod is withdrawn as by
 * pc_pool_withdraw; and if a claim of this pool with that id has not ended, the pod is
 * recognised as its own: a PATCH whose answer was lost (a timeout, a dropped connection) that
 * the server applied all the same. A claim waiting (backing off after a retryable failure, or
 * pending) ends OK with this pod at that version; a claim whose CAS is in flight keeps the
 * observation and ends OK with this pod when that CAS reports anything but WON (if it wins
 * another pod, the result names that pod and this one is counted in
 * podclaim_pods_orphaned_total). An unknown id, or a claim that has ended, changes nothing
 * more than the withdrawal. Ids are matched as given: caller-set ids (pc_claim.id) must be
 * unique in the pool for this to be right; generated ones are.
 * Thread: any. Blocking: no. Owns: copies pod and claim_id. Returns 0, -EINVAL (as
 * pc_pool_offer_idle, or a claim id empty or of PC_CLAIM_ID_MAX bytes or more), -EAGAIN,
 * -ENOMEM, -ESHUTDOWN. */
int pc_pool_observe_claimed(pc_pool *p, const pc_pod_ref *pod, const char *claim_id);

/* Ask the scheduler to run the resync hook now (e.g. after the informer relisted).
 * Thread: any. Blocking: no. Cannot fail. */
void pc_pool_notify_idle(pc_pool *p);

/* Stop intake and drain: enqueue returns -ESHUTDOWN from now on, every waiting claim gets
 * SHUTDOWN, CAS calls in flight finish and report (OK if won, else SHUTDOWN); then the
 * threads exit. Blocking: yes, until drained. Idempotent. Works on a pool never started. */
void pc_pool_shutdown(pc_pool *p);

/* Read the gauges. Lock-free: a handful of relaxed atomic loads; each field is exact at
 * some instant, the set is not one atomic picture. Thread: any. Cannot fail. */
pc_snapshot pc_pool_snapshot(const pc_pool *p);

/* Render the pool's metrics in Prometheus text exposition format (version 0.0.4) into
 * buf (NUL-terminated, truncated to len). Returns the length the full text needs
 * (like snprintf), so a caller can retry with a bigger buffer. Thread: any. */
size_t pc_pool_metrics_render(const pc_pool *p, char *buf, size_t len);

/* Shut down (if not yet) and free. NULL is a no-op. Nothing may use `p` afterwards. */
void pc_pool_free(pc_pool *p);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_PODCLAIM_H */
