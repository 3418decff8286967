/* The SandboxClaim controller: declarative claims (DESIGN.md §2, issue 13).
 *
 * Flow: API server --watch SandboxClaims--> [claim cache] --> controller thread:
 *       pc_pool_enqueue into the daemon's pool (lookup callback) --> the pool's callback -->
 *       controller thread: status Bound / Failed (PATCH /status, guarded) --> on_outcome
 *       (webhooks); a deleted claim: cancel if waiting, release its pod if bound.
 *
 * SandboxClaim (podclaim.io/v1alpha1):
 *   spec:   pool (required), priority (0 highest .. 5; default 2), images {container: image},
 *           labels, annotations, targetPhase, timeoutSeconds (from creation; default none)
 *   status: phase Pending | Bound | Failed, claimId, pod, podNamespace, boundTime, reason,
 *           message
 *
 * Exactly once, by uid, across restarts and leader changes:
 * - in one process, a uid is enqueued at most once (a record per uid lives from enqueue until
 *   the cache shows the final status the controller wrote);
 * - a claim whose status is Bound or Failed is never served again;
 * - the claim's pod carries label podclaim.io/sandboxclaim-uid=<uid> (set by the claim's own
 *   PATCH, so it is there iff the claim won): before serving a Pending claim the controller
 *   lists pods by that label, and binds to a pod it finds instead of claiming another one. So a
 *   claim won by a replica that died before writing Bound is bound, not served twice;
 * - claim id "sbc-<uid>" (annotation podclaim.io/claim-id on the pod).
 * A pool shutting down (SHUTDOWN) leaves the claim Pending for the next leader or restart.
 * Deleting a claim: Pending -> pc_claim_cancel (if its CAS won meanwhile, the pod is released);
 * Bound -> its pod is released: phase -> Stopping, one PATCH guarded by the pod's version (after
 * checking the pod still carries this claim's id). Before a claim is first served the controller
 * adds finalizer podclaim.io/release to it, so a claim deleted while no replica runs stays,
 * terminating, until a leader has cancelled it or released what it won (found by the uid
 * label), and then removes the finalizer.
 *
 * Only while may_write says so for the claim's pool does the controller serve or release.
 *
 * Thread-safety: new/start/stop/free from one controlling thread; resync and stats from any.
 * lookup/may_write/on_outcome run on the controller thread and must not block.
 */
#ifndef PODCLAIM_CLUSTER_CLAIMCTL_H
#define PODCLAIM_CLUSTER_CLAIMCTL_H

#include "cluster.h"

#include <podclaim/podclaim.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One claim's outcome, for webhooks and logs. Strings valid during the call. */
typedef struct pc_claimctl_outcome {
    const char *namespace_;
    const char *claim;    /* the SandboxClaim's name */
    const char *claim_id; /* "sbc-<uid>" */
    const char *pool;
    const char *pod; /* "" unless bound */
    pc_claim_status status;
    const char *error; /* "" for OK */
    int64_t latency_ns;
} pc_claimctl_outcome;

typedef struct pc_claimctl_config {
    pc_kube_client *client; /* required; borrowed */
    const char *namespace_; /* claims of this namespace; NULL or "" = all */
    /* The daemon's pool ns/name, or NULL if it does not serve it. The pool must stay usable
     * until every claim enqueued into it has had its callback (pc_pool_shutdown drains). */
    pc_pool *(*lookup)(void *arg, const char *ns, const char *pool);
    /* May this replica serve claims of ns/pool now (leader)? NULL = always. */
    bool (*may_write)(void *arg, const char *ns, const char *pool);
    void (*on_outcome)(void *arg, const pc_claimctl_outcome *o); /* optional */
    void *arg;
    int64_t unknown_pool_retry_ns; /* lookup NULL: retry this often until the timeout; 0 = 1 s */
    uint32_t watch_timeout_s;      /* 0 = 300 */
    pc_cluster_log log;
} pc_claimctl_config;

typedef struct pc_claimctl pc_claimctl;

int pc_claimctl_new(const pc_claimctl_config *cfg, pc_claimctl **out, char *err, size_t errlen);
int pc_claimctl_start(pc_claimctl *c);
/* Stop the watch and the controller thread. Claims still enqueued keep their records: call
 * pc_pool_shutdown on the pools first (their SHUTDOWN results leave the claims Pending), then
 * this. Idempotent. */
void pc_claimctl_stop(pc_claimctl *c);
void pc_claimctl_free(pc_claimctl *c);

bool pc_claimctl_synced(const pc_claimctl *c);
/* Look at every cached claim again (call when this replica starts leading, or when a pool
 * appears). Thread: any. */
void pc_claimctl_resync(pc_claimctl *c);

/* This replica stopped leading (for some pools): claims enqueued into pools it no longer may
 * write for are cancelled and left Pending for the next leader. Thread: any. */
void pc_claimctl_step_down(pc_claimctl *c);

typedef struct pc_claimctl_stats {
    uint64_t enqueued, bound, failed, recovered, cancelled, released, status_writes, conflicts,
            errors;
} pc_claimctl_stats;
void pc_claimctl_stats_read(pc_claimctl *c, pc_claimctl_stats *out);

#endif /* PODCLAIM_CLUSTER_CLAIMCTL_H */
