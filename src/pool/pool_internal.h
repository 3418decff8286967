/* Pool internals shared by the pool's files: the API (pool.c), the scheduler thread
 * (scheduler.c), claim results (claim.c) and the metrics rendering (pool_metrics.c).
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> result.
 *
 * Who owns what:
 *   - producers (any thread) touch only the lock-free inboxes (claims, offers), the
 *     atomics marked "shared", and a claim's priv.flags (cancel).
 *   - the scheduler thread owns the pending levels, the timer heap, the ready-queue's
 *     pod table (ready-queue and reservations). Nobody else reads them. It starts
 *     every CAS itself (a backend's cas_start never blocks) and runs every callback.
 *   - a backend's completion (any thread) writes the claim's outcome fields and pushes
 *     it to the results inbox; from the push on the claim is the scheduler's again.
 *   - a claim is in exactly one place at a time: the inbox, a pending level (+ maybe the
 *     timer heap), the backend, or the results inbox.
 * No locks; no lock order.
 */
#ifndef PODCLAIM_POOL_INTERNAL_H
#define PODCLAIM_POOL_INTERNAL_H

#include <podclaim/podclaim.h>

#include "metrics/metrics.h"
#include "pool/claim_heap.h"
#include "pool/inbox.h"
#include "reservation/podtable.h"
#include "util/sat.h"

#include <pthread.h>
#include <stdatomic.h>

/* claim->priv.state. A claim changes state only through pc__claim_move, which checks the
 * old state. "Waiting" states count in the pool's `queued` gauge (inbox_capacity). */
#define PC__CLAIM_STATE_MAP(XX)                                                                    \
    XX(INBOX, "inbox")           /* pushed, not yet taken in by the scheduler; waiting */          \
    XX(PENDING, "pending")       /* in its level's heap (+ timer heap), for a pod; waiting */      \
    XX(RETRY_WAIT, "retry_wait") /* backing off after a retryable failure (timer heap); waiting */ \
    XX(INFLIGHT, "inflight")     /* CAS started, its result not yet taken in */                    \
    XX(DEFERRED, "deferred")     /* result decided; its cancel message has yet to arrive */        \
    XX(DONE, "done")             /* callback started */

enum {
#define PC_XX_ENUM(name, str) CLAIM_##name,
    PC__CLAIM_STATE_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            CLAIM_STATE_COUNT
};
#define CLAIM_S(name) (1u << CLAIM_##name)

/* claim->priv.flags: the cancel hand-off between pc_claim_cancel (any thread) and the
 * scheduler. A cancel message (priv.cancel_entry) must never be in the cancel inbox after
 * the callback started (the caller may have freed the claim), so:
 *   - cancel sets CANCEL; then, unless FINAL is set, QUEUED (one CAS) and pushes the
 *     message;
 *   - the scheduler, deciding a result, sets FINAL; if QUEUED was set, the result waits
 *     (state DEFERRED) until the scheduler takes the message in and clears QUEUED.
 * Every step is an atomic read-modify-write on the one word, so the two sides agree on
 * which came first. */
#define CLAIM_F_CANCEL 1u /* pc_claim_cancel was called */
#define CLAIM_F_QUEUED 2u /* its cancel message is in, or on its way to, the cancel inbox */
#define CLAIM_F_FINAL 4u  /* the result is decided: no cancel message may follow */

/* An offer or withdrawal on its way from another thread to the scheduler. The offering
 * thread takes it from the pool's free list (no allocation once the pool has seen its
 * busiest moment), fills it and computes the key's hash, so the scheduler's work is one
 * lookup. */
typedef struct pc__pod_msg {
    ck_stack_entry_t entry; /* offers inbox linkage */
    int kind;               /* POD_MSG_OFFER / POD_MSG_WITHDRAW */
    pc__pod_key key;        /* points at ns/name below */
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char uid[PC_UID_MAX];
    char rv[PC_RV_MAX];             /* "" for a withdraw without version */
    char claim_id[PC_CLAIM_ID_MAX]; /* POD_MSG_CLAIMED only */
} pc__pod_msg;

/* OFFER: pc_pool_offer_idle; WITHDRAW: pc_pool_withdraw; CLAIMED: pc_pool_observe_claimed. */
enum { POD_MSG_OFFER = 1, POD_MSG_WITHDRAW, POD_MSG_CLAIMED };

/* One gauge per cache line: they are written by different threads. */
/* A gauge: one value the scheduler writes (once per round) and snapshot readers load. */
typedef struct pc__gauge {
    _Atomic int64_t v;
} pc__gauge;

/* Written by the scheduler only (load + store, no read-modify-write: pc__count1), read by
 * pc_pool_metrics_render from any thread. */
typedef struct pc__pool_metrics {
    _Atomic uint64_t results[PC_CLAIM_STATUS_COUNT]; /* claims ended, by status */
    _Atomic uint64_t cas[PC_CAS_OUTCOME_COUNT];      /* CAS outcomes reported */
    _Atomic uint64_t promotions;   /* priority levels gained by aging (counted at exit) */
    _Atomic uint64_t enqueued;     /* claims taken in from the inbox */
    _Atomic uint64_t offers;       /* offers taken in */
    _Atomic uint64_t offers_stale; /* offers ignored: reserved at that version */
    _Atomic uint64_t withdrawals;
    _Atomic uint64_t reservations_expired;
    _Atomic uint64_t recognized;    /* claims ended OK by pc_pool_observe_claimed */
    _Atomic uint64_t orphaned;      /* pods shown claimed by a claim that won another one */
    pc__histogram dispatch_latency; /* enqueued_at -> first CAS start (= the two below) */
    pc__histogram inbox_wait;       /* enqueued_at -> taken in by the scheduler */
    pc__histogram pending_wait;     /* taken in -> first CAS start */
    pc__histogram claim_latency;    /* enqueued_at -> result */
} pc__pool_metrics;

enum { POOL_NEW = 0, POOL_RUNNING, POOL_STOPPED };

/* Laid out by who writes what: a cache line written by one side and read by the other
 * costs a transfer per write, and two sides writing one line fight over it. So the
 * producer-written inbox heads, the parker, the shared `queued` count, the rarely-written
 * flags, the scheduler's gauges and the scheduler's own state each start a line. */
struct pc_pool {
    /* --- fixed after pc_pool_new: read by any thread --- */
    pc_pool_config cfg; /* strings point into the owned copies below */
    char *ns, *name, *team, *user, *env;
    char **tags;
    char *labels;    /* rendered Prometheus labels: pool="..",namespace="..",... */
    char id_tag[12]; /* random per-pool-instance part of generated claim ids */
    pc_backend *backend;
    uint32_t msg_capacity; /* offer messages in existence at most (cfg.offer_capacity) */
    /* The scheduler thread, set by itself when it starts: a completion or an offer made on
     * it (a backend answering inside cas_start, a callback recycling a pod) needs neither
     * an inbox nor a wake-up. Atomic (relaxed) because any thread asks "am I the
     * scheduler?": 0 or the id, either answer is right for a thread that is not. */
    _Atomic(pthread_t) sched_self;

    /* --- inboxes: producers push (each pc__mpsc keeps its shared head and the
     * scheduler's batch on lines of their own) --- */
    pc__mpsc claims;   /* claim inbox */
    pc__mpsc offers;   /* pod offers and withdrawals */
    pc__mpsc results;  /* claims whose CAS reported, from the backend's threads */
    pc__mpsc cancels;  /* cancel messages (priv.cancel_entry) */
    pc__parker parker; /* the scheduler sleeps here (a line of its own) */
    /* Free offer messages: the scheduler gives them back (the one producer), offering
     * threads take them (many consumers, a CAS each; none waits for another). Sized so it
     * holds every message there can be: giving back never fails. */
    pc__spmc_ring free_msgs;

    /* Claims waiting (inbox, pending, backing off): enqueue adds 1 before its push and
     * refuses beyond inbox_capacity; the scheduler applies its changes once per round. */
    _Alignas(CK_MD_CACHELINE) pc__gauge queued;

    /* --- rarely written, by any thread --- */
    _Alignas(CK_MD_CACHELINE) _Atomic bool stopping; /* set once by shutdown */
    _Atomic bool resync_now;
    _Atomic uint32_t msgs_allocated;   /* offer messages in existence */
    _Atomic uint64_t enqueue_rejected; /* enqueue returned -EAGAIN (inbox full) */
    _Atomic uint64_t offers_refused;   /* offer/withdraw returned -EAGAIN */
    /* Backend completions (cas_done) on other threads still running: the claim is visible
     * to the scheduler before cas_done has finished waking it, so shutdown waits for this
     * to reach 0 before the pool's memory can go. */
    _Atomic int completions_running;
    _Atomic int cancels_running; /* the same for pc_claim_cancel after its push */

    /* --- written by the scheduler, read by snapshots and metrics --- */
    _Alignas(CK_MD_CACHELINE) pc__gauge idle_ready;
    pc__gauge reserved;
    pc__gauge inflight;
    pc__gauge last_dispatch_at;
    pc__gauge pods_tracked;
    pc__pool_metrics m;

    /* --- lifecycle (caller of start/shutdown/free) --- */
    pthread_mutex_t life_lock;
    int life_state;
    pthread_t sched_thread;

    /* --- scheduler-owned --- */
    _Alignas(CK_MD_CACHELINE) pc__claim_level levels[PC_PRIORITY_LEVELS];
    size_t pending_len;
    size_t retry_len;
    size_t deferred_n;    /* claims DEFERRED: shutdown waits for their cancel messages */
    int64_t queued_delta; /* change to `queued` not yet applied (once per round) */
    uint64_t admit_seq;   /* numbers claims in the order they are taken in */
    pc__claim_heap timers;
    pc__podtable pods; /* ready-queue and reservations, one record per pod */
    /* Claims whose CAS was answered RETRYABLE (maybe applied: a timeout), by claim id, so
     * that the informer showing a pod claimed with that id finds them. Chained through
     * priv.id_next; holds only those claims, so the common path never touches it. */
    struct {
        pc_claim **b;
        size_t nb; /* buckets: 0 or a power of two */
        size_t n;
    } suspects;
    uint64_t next_claim_seq;
    int64_t next_resync_at;
    int64_t real_offset;    /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns (see realtime_from) */
    int64_t real_offset_at; /* CLOCK_MONOTONIC when it was read; 0 = never */
    uint64_t rng;
    size_t inflight_n; /* CAS calls started, results not yet taken in */
    struct {
        ck_stack_entry_t *head, *tail;
    } local_results; /* results reported on the scheduler thread itself, in order */
};

/* scheduler.c */
void *pc__scheduler_main(void *arg);
/* An offer or withdrawal taken in (from its message, or directly when made on the
 * scheduler thread itself: from a callback, or a backend inside cas_start). */
void pc__scheduler_pod_event(pc_pool *p, int kind, const pc__pod_key *k, const char *uid,
                             const char *rv, const char *claim_id, int64_t now);
int pc__scheduler_init(pc_pool *p);
void pc__scheduler_fini(pc_pool *p);
/* Drain without threads: for a pool shut down before it was started. */
void pc__scheduler_drain_unstarted(pc_pool *p);

/* How long a claim backs off before retry number `retries` (1 = the first): retry_backoff
 * doubled per retry up to 32x, jittered to [1/2, 1) of that, and at least the server's
 * Retry-After. rng: the caller's xorshift64 state (non-zero). */
int64_t pc__retry_delay_ns(int64_t backoff_ns, uint32_t retries, int64_t retry_after_ns,
                           uint64_t *rng);

/* claim.c. The scheduler thread (or the thread draining a pool never started) only.
 *
 * The one function that changes a claim's state: asserts that the old state is in
 * `from` (CLAIM_S() bits), keeps the `queued` count, and with PC_TRACE_CLAIMS defined
 * logs old -> new. */
void pc__claim_move(pc_pool *p, pc_claim *c, unsigned from, int to);
/* End a claim: fill the result, count it, call the callback; or, if a cancel message is
 * on its way, keep the result (DEFERRED) until pc__claim_deliver_deferred. */
void pc__claim_finish(pc_pool *p, pc_claim *c, pc_claim_status st, const char *error);
void pc__claim_deliver_deferred(pc_pool *p, pc_claim *c);
/* The claim id written to the pod (the caller's or the generated one). */
static inline const char *pc__claim_id(const pc_claim *c)
{
    return c->id ? c->id : c->priv.id_buf;
}
/* The map of suspect claims (see pc_pool.suspects). add: no-op when out of memory (the claim
 * is then not recognised); remove: only a claim that was added; find: NULL = none. */
void pc__suspect_add(pc_pool *p, pc_claim *c);
void pc__suspect_remove(pc_pool *p, pc_claim *c);
pc_claim *pc__suspect_find(pc_pool *p, const char *id);
void pc__suspects_fini(pc_pool *p);

/* pool.c */
int64_t pc__realtime_ns(void);
static inline void pc__gauge_set(pc__gauge *g, int64_t v)
{
    atomic_store_explicit(&g->v, v, memory_order_relaxed);
}
static inline int64_t pc__gauge_get(const pc__gauge *g)
{
    return atomic_load_explicit(&g->v, memory_order_relaxed);
}
/* Is the calling thread the pool's scheduler? */
static inline bool pc__on_scheduler(pc_pool *p)
{
    return pthread_equal(pthread_self(),
                         atomic_load_explicit(&p->sched_self, memory_order_relaxed));
}

/* A counter any thread may bump. */
static inline void pc__count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}
/* A counter only the scheduler writes: no locked instruction, readers see each value it
 * stores (relaxed: every counter is independent). */
static inline void pc__count1(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

#endif /* PODCLAIM_POOL_INTERNAL_H */
