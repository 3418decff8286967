/* podclaimd's cluster components (issue 13, phase 1): what makes the daemon a Kubernetes
 * controller with a standby. Each module is self-contained and driven by the daemon through
 * the narrow interface of its header:
 *
 *   watch.h     generic LIST+WATCH of one resource with a cache (any object kind)
 *   elector.h   leader election on a coordination.k8s.io/v1 Lease (one, or one per pool)
 *   kevents.h   Kubernetes Events (events.k8s.io/v1), deduplicated
 *   poolctl.h   the SandboxPool controller: pods from the template, Idle, recycle, status
 *   claimctl.h  the SandboxClaim controller: declarative claims into the daemon's pc_pools
 *   webhook.h   claim outcomes POSTed to per-pool URLs from a thread of its own
 *
 * Flow: API server --watch--> [watch caches] --> poolctl / claimctl --guarded writes--> API
 *       server; claimctl --pc_pool_enqueue--> the daemon's pools --callback--> claimctl
 *       (status) and webhook. elector decides whether this replica may write.
 *
 * Everything talks to the API server through include/podclaim/kube.h only. docs/cluster.md
 * has the picture and the integration steps.
 */
#ifndef PODCLAIM_CLUSTER_H
#define PODCLAIM_CLUSTER_H

#include <podclaim/kube.h>

#include <stdbool.h>

/* Where the cluster modules log: one line, no newline, "level=… component=… key=value".
 * fn NULL = stderr. level: PC_KUBE_LOG_ERROR..DEBUG; level_set false = info. Called from the
 * modules' own threads. */
typedef struct pc_cluster_log {
    pc_kube_log_fn fn;
    void *arg;
    int level;
    bool level_set;
} pc_cluster_log;

/* Object conventions (DESIGN.md §2). */
#define PC_CL_GROUP "podclaim.io"
#define PC_CL_VERSION "v1alpha1"
#define PC_CL_API_VERSION "podclaim.io/v1alpha1"
#define PC_CL_LABEL_POOL "podclaim.io/pool"
#define PC_CL_LABEL_PHASE "podclaim.io/phase"
#define PC_CL_LABEL_TEMPLATE_HASH "podclaim.io/template-hash"
#define PC_CL_LABEL_CLAIM_UID "podclaim.io/sandboxclaim-uid"
#define PC_CL_ANN_CLAIM_ID "podclaim.io/claim-id"
#define PC_CL_ANN_CLAIMED_AT "podclaim.io/claimed-at"

#endif /* PODCLAIM_CLUSTER_H */
