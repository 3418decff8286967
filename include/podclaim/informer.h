/* podclaim informer: LIST + WATCH the pods of one pool and feed the pool's ready-queue.
 *
 * Flow: API server -> [informer] -> pool (offer_idle / withdraw) -> ... -> CAS -> result.
 *
 * One thread per watched scope (a namespace + label selector podclaim.io/pool=<pool>):
 * paged LIST (limit/continue), then WATCH from the list's resourceVersion with bookmarks,
 * rotated every watch_timeout_s; 410 Gone -> relist and reconcile (vanished pods withdrawn);
 * network errors and silent watches (watchdog) -> reconnect from the last seen
 * resourceVersion with jittered, capped exponential backoff (at least the Retry-After of a
 * 429); three API errors on the watch in a row -> relist. The pod cache (keyed
 * namespace/name) is owned by that thread; a LIST replaces it (it is authoritative).
 *
 * On every observed transition to idle (DESIGN.md §2: phase label Idle, status.phase Running,
 * condition Ready=True, no deletionTimestamp) the informer calls pc_pool_offer_idle with the
 * resourceVersion it saw, and again when an idle pod shows up at a new resourceVersion; on a
 * transition away from idle, or deletion, pc_pool_withdraw. Replayed events (same
 * resourceVersion) change nothing, so reconnects neither miss nor duplicate a transition.
 *
 * Resync: pc_informer_resync_hook is meant for pc_pool_config.resync. It runs on the pool's
 * scheduler thread, which must not touch the informer's cache, so it only raises an atomic
 * flag and wakes the informer thread (curl_multi_wakeup); the informer thread then re-offers
 * every idle pod of its cache. Chosen over an immutable snapshot because a 10,000-pod snapshot
 * would have to be rebuilt on every event to stay fresh, while the flag costs nothing until a
 * resync is asked for, and the pool ignores offers of pods already queued at that version.
 *
 * Thread-safety: new/start/stop/free from one controlling thread; has_synced, stats,
 * resync_hook from any thread.
 */
#ifndef PODCLAIM_INFORMER_H
#define PODCLAIM_INFORMER_H

#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the informer tells its pool (and the optional observer). */
#define PC_INFORMER_CHANGE_MAP(XX)                                                                 \
    XX(OFFER, "offer")       /* the pod is idle at this resourceVersion */                         \
    XX(WITHDRAW, "withdraw") /* the pod is no longer idle, or gone */

typedef enum pc_informer_change {
#define PC_XX_ENUM(name, str) PC_INFORMER_##name,
    PC_INFORMER_CHANGE_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            PC_INFORMER_CHANGE_COUNT
} pc_informer_change;

/* "offer", "withdraw"; "unknown" out of range. Static storage. */
const char *pc_informer_change_name(pc_informer_change c);

/* Called on the informer thread for every offer/withdraw it sends to the pool, just after the
 * pool call returned (tests, benchmarks, the daemon's status). `pod` is valid during the call
 * only. received_at_ns: CLOCK_MONOTONIC when the bytes carrying this change arrived (the watch
 * chunk or LIST page), so observed_at - received_at is the informer's own latency. Keep it
 * short. */
typedef void (*pc_informer_observer)(void *arg, pc_informer_change change, const pc_pod_ref *pod,
                                     int64_t received_at_ns);
/* Called on the informer thread when a pod is newly held by a claim: it carries a claim id
 * (annotation podclaim.io/claim-id) it did not carry in the cache before, its phase is not
 * Idle, Starting or Stopping, and it is not being deleted. That includes pods first seen held
 * (the LIST at start, a relist): claims won through another process, before this one started.
 * For a pod the pool knew, the call comes just after the pool heard of it
 * (pc_pool_observe_claimed), which ends a live claim of that id OK; a claim that already ended
 * (its PATCH timed out at the deadline and was applied later) is the owner's to find here and
 * give the pod back. `pod` and `claim_id` are valid during the call only. Keep it short. */
typedef void (*pc_informer_claimed_fn)(void *arg, const pc_pod_ref *pod, const char *claim_id);

typedef struct pc_informer_config {
    pc_kube_client *client;        /* required; borrowed, must outlive the informer */
    const char *namespace_;        /* required */
    const char *pool;              /* required: the value of label podclaim.io/pool */
    pc_pool *target;               /* where offers/withdrawals go; may be NULL (observer only), or
                              * set later with pc_informer_set_pool, before start */
    uint32_t page_size;            /* LIST limit; 0 = 500 */
    uint32_t watch_timeout_s;      /* timeoutSeconds of each WATCH (rotation); 0 = 300 */
    int64_t backoff_initial_ns;    /* first reconnect delay; 0 = 100 ms; doubles, jittered */
    int64_t backoff_max_ns;        /* cap; 0 = 10 s */
    size_t max_event;              /* longest watch event line; 0 = 16 MiB (bigger: relist) */
    int64_t watch_idle_timeout_ns; /* watchdog: a watch silent this long is restarted (a
                                    * half-open connection); 0 = 90 s. Bookmarks, which the
                                    * informer asks for, keep a live quiet watch talking. */
    pc_informer_observer observer; /* optional */
    pc_informer_claimed_fn on_claimed; /* optional; called with observer_arg */
    void *observer_arg;
} pc_informer_config;

typedef struct pc_informer pc_informer;

/* Create (not started). Copies cfg strings. Returns 0 and *out, -EINVAL (missing client,
 * namespace or pool; a namespace that is no DNS label; a pool value over 63 bytes), -ENOMEM. */
int pc_informer_new(const pc_informer_config *cfg, pc_informer **out);

/* Set the pool fed by the informer (the pool is usually created after the informer, because
 * the pool's config carries the informer's resync hook). Call before pc_informer_start.
 * Cannot fail. */
void pc_informer_set_pool(pc_informer *inf, pc_pool *target);

/* Start the informer thread; after pc_informer_stop it may be started again, and resumes
 * watching from the last resourceVersion it saw (a relist if that is gone). Returns 0,
 * -EALREADY, or the error of pthread_create. */
int pc_informer_start(pc_informer *inf);

/* True once the first full LIST has been applied (every pod idle at that moment has been
 * offered). Thread: any. Lock-free. */
bool pc_informer_has_synced(const pc_informer *inf);

/* The resync hook for pc_pool_config.resync with resync_arg = the informer. Thread: any.
 * Blocking: no (one atomic store and a wake-up). The re-offers happen on the informer thread
 * shortly after. Cannot fail. */
void pc_informer_resync_hook(void *informer);

typedef struct pc_informer_stats {
    uint64_t lists;   /* completed LISTs (first sync and relists) */
    uint64_t relists; /* LISTs after 410 Gone or a lost stream */
    uint64_t list_pages;
    uint64_t list_bytes;   /* JSON bytes of all LIST pages */
    uint64_t watches;      /* WATCH requests started */
    uint64_t watch_events; /* ADDED/MODIFIED/DELETED applied (duplicates included) */
    uint64_t duplicates;   /* events at a resourceVersion already seen, ignored */
    uint64_t bookmarks;
    uint64_t watch_bytes;
    uint64_t reconnects; /* watches that ended in an error */
    uint64_t offers;
    uint64_t withdrawals;
    uint64_t resyncs;
    uint64_t errors;       /* malformed events/pages, oversized events */
    uint64_t skipped;      /* well-formed pods we cannot hold (LIST or watch), skipped */
    uint64_t stalls;       /* watches restarted by the watchdog (no bytes for too long) */
    uint64_t throttled;    /* watches answered 429 (retried after Retry-After) */
    uint64_t pods;         /* pods in the cache now */
    uint64_t idle;         /* of which idle */
    int64_t synced_at_ns;  /* CLOCK_MONOTONIC of the first completed sync; 0 = not yet */
    int64_t started_at_ns; /* CLOCK_MONOTONIC of pc_informer_start */
} pc_informer_stats;

/* Read the counters (relaxed loads; each exact at some instant). Thread: any. */
void pc_informer_stats_read(const pc_informer *inf, pc_informer_stats *out);

/* Stop the thread (wakes it, waits for it). The cache stays as it was. Idempotent. */
void pc_informer_stop(pc_informer *inf);

/* Stop and free. Free the pool (which may call the resync hook) before the informer.
 * NULL is a no-op. */
void pc_informer_free(pc_informer *inf);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_INFORMER_H */
