/* Internals of the SandboxPool controller shared by poolctl.c (queue, thread, lifecycle),
 * poolctl_pods.c (pods: create, Idle, recycle, delete) and poolctl_status.c (status,
 * conditions, Events). Not part of the daemon's interface. */
#ifndef PODCLAIM_CLUSTER_POOLCTL_INTERNAL_H
#define PODCLAIM_CLUSTER_POOLCTL_INTERNAL_H

#include "poolctl.h"
#include "util.h"
#include "watch.h"

#include <pthread.h>
#include <stdatomic.h>

#define PC__PC_KEY_MAX (PC_NAMESPACE_MAX + PC_NAME_MAX + 2)

/* What the controller remembers of one pool between passes. Controller thread only. */
typedef struct pc__pool_state {
    struct pc__pool_state *next;
    char key[PC__PC_KEY_MAX]; /* "ns/name" */
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    json_t *pending_creates; /* pod name -> CLOCK_MONOTONIC ns until which it is expected */
    json_t *acted;           /* pod uid -> the resourceVersion we last wrote from: the cache
                              * still shows that version, so do not act on it twice */
    json_t *since;           /* pod uid -> CLOCK_MONOTONIC ns since when it is waiting to be
                              * Ready (started or recycled) */
    json_t *deleting;        /* pod uid -> CLOCK_MONOTONIC ns until which a delete we sent is
                              * expected to show (the pod no longer counts) */
    json_t *throttled;       /* pod uid -> CLOCK_MONOTONIC ns until which its writes wait:
                              * the server answered its last one 429 with that Retry-After */
    int64_t create_after_ns; /* no creation before (backoff after a failure, a 429's
                              * Retry-After); 0 = now */
    uint32_t create_failures;
    int64_t status_after_ns; /* no status write before (a 429's Retry-After); 0 = now */
    char rejected[300];      /* the server's answer to the last failed create; "" = none */
    bool invalid_template;
    int64_t last_status_ns; /* CLOCK_MONOTONIC of the last status write; 0 = never */
    int64_t empty_since_ns; /* claims waiting with no idle pod since; 0 = not so */
    int64_t next_pass_ns;   /* CLOCK_MONOTONIC: no pass before (pacing, poolctl.c); 0 = now */
    /* the last pass's counts, for the status */
    uint32_t warm, idle, starting, recycling, not_ready, claimed, outdated;
} pc__pool_state;

typedef struct pc__poolctl_counters {
    _Atomic uint64_t reconciles, creates, create_errors, idles, resets, deletes, conflicts,
            status_writes, status_errors, events, stale_skips, throttled;
} pc__poolctl_counters;

struct pc_poolctl {
    /* fixed after new */
    pc_kube_client *client;
    pc_kevents *events;
    bool (*may_write)(void *arg, const char *ns, const char *pool);
    bool (*snapshot)(void *arg, const char *ns, const char *pool, pc_snapshot *out);
    void (*on_pool)(void *arg, const char *ns, const char *name, const json_t *pool);
    void *arg;
    int64_t ready_timeout_ns, status_interval_ns, empty_grace_ns;
    uint32_t max_creates;
    pc_cluster_log log;
    pc_watch *pods;     /* label podclaim.io/pool, indexed by it; pod mode (summaries) */
    pc_watch *pools;    /* SandboxPools */
    pc_kube_conn *conn; /* controller thread */

    pthread_t thread;
    bool started;
    _Atomic bool stop;
    pthread_mutex_t mu; /* guards queue, delayed, all */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC */
    json_t *queue;      /* pool keys to reconcile, FIFO (jansson keeps insertion order) */
    json_t *delayed;    /* pool key -> CLOCK_MONOTONIC ns when to reconcile */
    bool all;           /* reconcile every pool */

    pc__pool_state *states; /* controller thread only */
    pc__poolctl_counters n;
};

#define PC__PC_INC(c, f) atomic_fetch_add_explicit(&(c)->n.f, 1, memory_order_relaxed)

/* Reconcile key again after delay_ns (the earliest request wins). Thread: any. */
void pc__poolctl_requeue_after(pc_poolctl *c, const char *key, int64_t delay_ns);
/* Pods: everything but the status (poolctl_pods.c). pods: the pool's cached pods. */
void pc__poolctl_sync_pods(pc_poolctl *c, pc__pool_state *st, const json_t *pool,
                           pc_watch_pod *const *pods, size_t npods);
/* A pool gone from the cache: delete the pods it owned. */
void pc__poolctl_delete_orphans(pc_poolctl *c, const char *ns, const char *name);
/* Status and Events (poolctl_status.c), from st's counts of the last sync_pods. */
void pc__poolctl_sync_status(pc_poolctl *c, pc__pool_state *st, const json_t *pool);

/* Readiness as the controller needs it: status.phase Running, condition Ready=True, no
 * deletionTimestamp, and every container reported running its spec's image (when the kubelet
 * reports containerStatuses), so a restart for a new image is known to be done. */
bool pc__poolctl_pod_ready(const pc_kube_pod *pod);
/* "python:3.12" and "docker.io/library/python:3.12" name the same image. */
void pc__poolctl_image_norm(const char *img, char *buf, size_t len);

#endif /* PODCLAIM_CLUSTER_POOLCTL_INTERNAL_H */
