/* The SandboxPool controller: keeps each pool's warm pods, recycles released ones, and
 * publishes the pool's status (DESIGN.md §2, issue 13).
 *
 * Flow: API server --watch--> [pods of every pool (indexed by podclaim.io/pool), SandboxPools]
 *       --changes--> work queue --> controller thread: reconcile(pool) --guarded writes-->
 *       API server; the daemon's schedulers --pc_snapshot via the snapshot callback--> status.
 *
 * What reconcile(pool) does, each write one request guarded by the pod's resourceVersion (a
 * 409 means: wait for the watch to bring the new version, then decide again):
 * - pods are created from spec.template (generateName "<pool>-", ownerReference to the pool,
 *   labels podclaim.io/pool, podclaim.io/phase=Starting, podclaim.io/template-hash);
 * - a Starting pod that is Running and Ready (and runs its spec's images) -> Idle, one PATCH;
 * - warm pods (Idle + Starting + recycling) are kept at spec.replicas while claims take Idle
 *   ones (a claimed pod is the caller's and does not count); surplus is deleted, Starting
 *   first, then Stopping, then Idle;
 * - a released pod (Stopping): recycle InPlace = reset labels, annotations and container images
 *   to the template (the kubelet restarts a container whose image changed) and -> Idle once
 *   Ready again, in one PATCH when no image had to change; Replace = delete it;
 * - Failed/Succeeded pods are deleted, deleted pods replaced;
 * - a template change rolls the warm pods: up to spec.maxSurge (default 1) new pods beyond
 *   replicas, old-template pods deleted as the count allows (recycled pods of an old template
 *   are replaced);
 * - a pool that is gone from the cache: its pods (owned by it) are deleted, as the cluster's
 *   garbage collector would;
 * - status through /status (merge patch guarded by resourceVersion), only when it changed and
 *   at most once per status_interval per pool: replicas (warm pods), idle, idleReady,
 *   pendingRequests, reserved, inflight, lastDispatchTime, selector, observedGeneration,
 *   conditions Ready and Degraded (reason PodsNotReady | TemplateRejected |
 *   EmptyWithWaitingClaims | InvalidTemplate);
 * - Events: PodNotReady (a pod not Ready ready_timeout after start or recycle), FailedCreate
 *   (the server rejected the template), PoolEmpty (claims waiting, no idle pod, for
 *   empty_grace).
 * Only while may_write says so (the leader, or the owner of the pool's Lease): followers keep
 * their caches warm and write nothing.
 *
 * Thread-safety: new/start/stop/free from one controlling thread; resync, notify, synced,
 * get_pool from any thread. Callbacks run on the controller or watch threads: keep them short.
 */
#ifndef PODCLAIM_CLUSTER_POOLCTL_H
#define PODCLAIM_CLUSTER_POOLCTL_H

#include "cluster.h"
#include "kevents.h"

#include <podclaim/podclaim.h>

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pc_poolctl_config {
    pc_kube_client *client; /* required; borrowed */
    const char *namespace_; /* pools and pods of this namespace; NULL or "" = all namespaces */
    pc_kevents *events;     /* required; borrowed (shared with the claim controller) */

    /* May this replica write for ns/pool now? (pc_elector_is_leader of the daemon's Lease, or
     * of the pool's own Lease.) NULL = always. Controller thread. */
    bool (*may_write)(void *arg, const char *ns, const char *pool);
    /* The scheduler's figures of ns/pool if this daemon serves it (pc_pool_snapshot); false =
     * not served (status then carries the controller's own counts only). Controller thread;
     * must not block. */
    bool (*snapshot)(void *arg, const char *ns, const char *pool, pc_snapshot *out);
    /* A SandboxPool appeared, changed its spec, or went away (pool NULL): the daemon creates,
     * reconfigures or shuts down its pc_pool. `pool` borrowed for the call. Watch thread. */
    void (*on_pool)(void *arg, const char *ns, const char *name, const json_t *pool);
    void *arg;

    int64_t ready_timeout_ns;   /* a pod not Ready this long after start/recycle: Event +
                                 * Degraded; 0 = 5 min */
    int64_t status_interval_ns; /* at most one status write per pool per interval, and the
                                 * snapshot is looked at this often; 0 = 1 s */
    int64_t empty_grace_ns;     /* claims waiting with no idle pod this long: Event +
                                 * Degraded; 0 = 10 s */
    uint32_t max_creates;       /* pod creations per reconcile pass (then requeued); 0 = 50 */
    uint32_t watch_timeout_s;   /* 0 = 300 */
    pc_cluster_log log;
} pc_poolctl_config;

typedef struct pc_poolctl pc_poolctl;

/* Create (not started). Returns 0 and *out, -EINVAL (message in err), -ENOMEM. */
int pc_poolctl_new(const pc_poolctl_config *cfg, pc_poolctl **out, char *err, size_t errlen);
/* Start the watches and the controller thread. Returns 0 or a negative errno. */
int pc_poolctl_start(pc_poolctl *c);
/* Stop the threads (a write in flight finishes or is abandoned). Idempotent. */
void pc_poolctl_stop(pc_poolctl *c);
void pc_poolctl_free(pc_poolctl *c);

/* True once both watches have listed. Thread: any. */
bool pc_poolctl_synced(const pc_poolctl *c);
/* Reconcile every pool now (call when this replica starts leading). Thread: any. */
void pc_poolctl_resync(pc_poolctl *c);
/* The cached SandboxPool ns/name, a new reference, or NULL. Thread: any. */
json_t *pc_poolctl_get_pool(pc_poolctl *c, const char *ns, const char *name);

typedef struct pc_poolctl_stats {
    uint64_t reconciles;
    uint64_t creates, create_errors;
    uint64_t idles;       /* Starting/Stopping -> Idle PATCHes that won */
    uint64_t resets;      /* InPlace resets (labels/images) that won */
    uint64_t deletes;     /* pod deletions that won */
    uint64_t conflicts;   /* 409 on a guarded write */
    uint64_t stale_skips; /* writes not sent: the cache had moved past the pass's snapshot */
    uint64_t throttled;   /* writes answered 429: that pod, or the pool's creates or status,
                           * wait the Retry-After while the controller goes on */
    uint64_t status_writes, status_errors;
    uint64_t events;
} pc_poolctl_stats;
void pc_poolctl_stats_read(pc_poolctl *c, pc_poolctl_stats *out);

/* The template hash written to podclaim.io/template-hash: FNV-1a 64 of the template's
 * canonical JSON (sorted keys), 10 hex digits. Pure. */
void pc_poolctl_template_hash(const json_t *template_, char *buf, size_t len);

#endif /* PODCLAIM_CLUSTER_POOLCTL_H */
