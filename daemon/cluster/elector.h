/* Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.
 *
 * Flow: [elector thread] --GET / create / PUT with resourceVersion--> Lease; callbacks tell
 *       the daemon when it starts and stops leading (only the leader dispatches and writes).
 *
 * The Lease spec: holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
 * leaseTransitions. Defaults are client-go's: lease 15 s, renew deadline 10 s, retry 2 s.
 * - A follower tries every retry period (jittered up to 2.2x, as client-go's JitterUntil) and
 *   takes the lease when it is free (no holder: released) or when the record it observes has
 *   not changed for a full lease duration, measured on its own monotonic clock from when it
 *   saw the record change (so clocks need not agree, only run at the same rate).
 * - The leader renews every retry period. It leads until (start of its last successful renew
 *   + renew deadline); renew deadline < lease duration, so it has stopped before any follower
 *   can see the lease expire. pc_elector_is_leader checks that deadline itself, so a caller
 *   stops in time even when the elector thread is stuck in a request.
 * - Stop with release: the leader calls on_stop, then writes the Lease with no holder (and a
 *   1 s duration, as client-go's ReleaseOnCancel). A follower waits between tries in a watch
 *   on the Lease (field selector on its name) that ends when the lease is released: it takes
 *   over at once instead of at its next retry (client-go polls).
 * - The Lease promises no fencing by itself: the resourceVersion precondition on every claim
 *   write is the fence (DESIGN.md §4 invariant 1 holds across a leadership change).
 *
 * Thread-safety: new/start/stop/free from one controlling thread; is_leader, leader, stats
 * from any thread. Callbacks run on the elector thread (on_stop may also run on the thread
 * calling pc_elector_stop); they must not call stop/free.
 */
#ifndef PODCLAIM_CLUSTER_ELECTOR_H
#define PODCLAIM_CLUSTER_ELECTOR_H

#include "cluster.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pc_elector_config {
    pc_kube_client *client;      /* required; borrowed */
    const char *namespace_;      /* required: the Lease's namespace */
    const char *name;            /* required: the Lease's name */
    const char *identity;        /* required: this replica's holderIdentity (e.g. the pod name) */
    int64_t lease_duration_ns;   /* 0 = 15 s; whole seconds are written (rounded up) */
    int64_t renew_deadline_ns;   /* 0 = 10 s; must be < lease duration */
    int64_t retry_period_ns;     /* 0 = 2 s; 1.2x must be < renew deadline */
    void (*on_start)(void *arg); /* became leader */
    void (*on_stop)(void *arg);  /* no longer leader */
    void (*on_new_leader)(void *arg,
                          const char *identity); /* observed holder changed ("" = none) */
    void *arg;
    pc_cluster_log log;
} pc_elector_config;

typedef struct pc_elector pc_elector;

/* Create (not started). Returns 0 and *out, -EINVAL (missing field, durations out of order:
 * message in err), -ENOMEM. */
int pc_elector_new(const pc_elector_config *cfg, pc_elector **out, char *err, size_t errlen);
/* Start the elector thread. Returns 0, -EALREADY, or a pthread_create error. */
int pc_elector_start(pc_elector *e);
/* Stop the thread. If leading: on_stop runs, then with `release` the Lease is released (one
 * write, bounded by the renew deadline). Blocking: until the thread has ended. Idempotent. */
void pc_elector_stop(pc_elector *e, bool release);
/* Stop (releasing) and free. NULL is a no-op. */
void pc_elector_free(pc_elector *e);

/* True while this replica leads: it has renewed within the renew deadline. Lock-free, a
 * clock read and two atomic loads. Thread: any. */
bool pc_elector_is_leader(const pc_elector *e);
/* The holder last observed ("" = none) into buf; returns buf. Thread: any. */
const char *pc_elector_leader(pc_elector *e, char *buf, size_t len);

typedef struct pc_elector_stats {
    uint64_t attempts;        /* acquire or renew tries */
    uint64_t acquired;        /* times this replica became leader */
    uint64_t renewals;        /* successful renews */
    uint64_t lost;            /* times it stopped leading (deadline passed, or lost the lease) */
    uint64_t conflicts;       /* 409 on create or update */
    uint64_t errors;          /* other failures */
    uint64_t release_wakeups; /* a follower's wait ended by the leader's release */
} pc_elector_stats;
void pc_elector_stats_read(pc_elector *e, pc_elector_stats *out);

#endif /* PODCLAIM_CLUSTER_ELECTOR_H */
