/* The in-memory backend: a pod store with resourceVersion compare-and-swap, used by
 * the tests, the demo and the benchmarks in place of a Kubernetes API server.
 *
 * Flow: pool scheduler (cas_start) -> [membackend] -> completion -> pool.
 *
 * It models what the scheduler relies on: each pod has a resourceVersion (one global
 * counter, as in etcd) and a sandbox phase; a CAS wins only if the pod exists, is at the
 * expected version and is Idle, and then moves it to the target phase with a new version.
 * It can add latency (a timer thread delivers completions), inject conflicts (the pod's
 * version moves under the claim, as if another writer touched it), retryable errors and
 * invalid outcomes, and it logs every Idle -> claimed transition so a test can prove that
 * no idle period (pod, version) was won twice.
 *
 * Thread-safety: every function may be called from any thread; the store is guarded by
 * one mutex (it stands in for a remote server, its cost is not the scheduler's).
 */
#ifndef PODCLAIM_MEMBACKEND_H
#define PODCLAIM_MEMBACKEND_H

#include <podclaim/backend.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pc_membackend pc_membackend;

/* Called when a pod becomes Idle at a new version (added, released, or its version moved
 * by an injected conflict): the informer's role. Runs on the thread that caused it, with
 * no backend lock held, so it may call pc_pool_offer_idle. */
typedef void (*pc_membackend_idle_fn)(const pc_pod_ref *pod, void *arg);

typedef struct pc_membackend_config {
    int64_t latency_ns;    /* fixed latency of each CAS; 0 = complete inline */
    int64_t jitter_ns;     /* + uniform [0, jitter_ns) */
    double conflict_rate;  /* 0..1: CAS answers CONFLICT and the pod's version moves */
    double retryable_rate; /* 0..1: CAS answers RETRYABLE, nothing changes */
    uint64_t seed;         /* PRNG seed for latency jitter and injection; 0 = fixed default */
    pc_membackend_idle_fn on_idle; /* may be NULL */
    void *on_idle_arg;
    size_t log_capacity; /* transitions kept, the newest (older ones are dropped); 0 = 65536 */
} pc_membackend_config;

/* Returns 0 and *out, -EINVAL (rates out of [0,1], negative latency), -ENOMEM, or a
 * pthread error (starting the timer thread). */
int pc_membackend_new(const pc_membackend_config *cfg, pc_membackend **out);

/* The backend interface to pass to pc_pool_new; valid until pc_membackend_free. */
pc_backend *pc_membackend_backend(pc_membackend *b);

/* Add an Idle pod with the given containers (names; a claim may set images only for
 * these). Calls on_idle. Returns 0, -EEXIST, -EINVAL (bad names), -ENOMEM. */
int pc_membackend_add_pod(pc_membackend *b, const char *namespace_, const char *name,
                          const char *const *containers, size_t n_containers);

/* Return a claimed pod to Idle with a new version (the pool controller's recycle) and
 * call on_idle. Returns 0, -ENOENT, or -EBUSY if the pod is already Idle. */
int pc_membackend_release_pod(pc_membackend *b, const char *namespace_, const char *name);

/* Delete a pod; a later CAS on it answers NOT_FOUND. Returns 0 or -ENOENT. */
int pc_membackend_delete_pod(pc_membackend *b, const char *namespace_, const char *name);

/* Current phase and version of a pod, copied into caller buffers (either may be NULL).
 * Returns 0 or -ENOENT. */
int pc_membackend_get_pod(pc_membackend *b, const char *namespace_, const char *name,
                          char phase[32], char rv[PC_RV_MAX]);

/* One Idle -> claimed transition, in the order they happened. */
typedef struct pc_membackend_transition {
    char namespace_[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char from_rv[PC_RV_MAX]; /* the idle period that was won */
    char to_rv[PC_RV_MAX];
    char claim_id[PC_CLAIM_ID_MAX];
    char phase[32]; /* target phase written */
} pc_membackend_transition;

/* Copy the transition log, oldest first: returns the number of transitions kept (at most
 * log_capacity) and, if out != NULL, copies up to cap of them. */
size_t pc_membackend_transitions(pc_membackend *b, pc_membackend_transition *out, size_t cap);

/* Counts of CAS outcomes answered so far, indexed by pc_cas_outcome. */
void pc_membackend_outcomes(pc_membackend *b, uint64_t counts[PC_CAS_OUTCOME_COUNT]);

typedef struct pc_membackend_stats {
    uint64_t outcomes[PC_CAS_OUTCOME_COUNT]; /* as pc_membackend_outcomes */
    uint64_t injected_conflicts;  /* CONFLICT answers drawn by conflict_rate (of outcomes[]) */
    uint64_t injected_retryable;  /* RETRYABLE answers drawn by retryable_rate */
    uint64_t transitions_total;   /* Idle -> claimed transitions ever */
    uint64_t transitions_dropped; /* of them, no longer in the log (capacity) */
} pc_membackend_stats;

/* One consistent reading of the counters above. Cannot fail. */
void pc_membackend_stats_read(pc_membackend *b, pc_membackend_stats *out);

/* Stop the timer thread after delivering every pending completion, then free.
 * No CAS may be started concurrently. NULL is a no-op. */
void pc_membackend_free(pc_membackend *b);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_MEMBACKEND_H */
