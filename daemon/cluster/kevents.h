/* Kubernetes Events (events.k8s.io/v1) about our objects, for what an operator must see (a
 * pod that will not become Ready, a template the server rejects, a pool empty while claims
 * wait), deduplicated: one (object uid, reason) is reported at most once per window.
 *
 * Flow: pool / claim controllers -> [kevents] -> POST .../events (one request, on the
 *       caller's connection).
 *
 * Thread-safety: pc_kevents_emit may be called from any thread; each call takes the caller's
 * pc_kube_conn (owned by the calling thread) and a mutex for the dedup table only.
 */
#ifndef PODCLAIM_CLUSTER_KEVENTS_H
#define PODCLAIM_CLUSTER_KEVENTS_H

#include "cluster.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pc_kevents pc_kevents;

typedef struct pc_kevents_config {
    const char *controller; /* reportingController; NULL = "podclaim.io/podclaimd" */
    const char *instance;   /* reportingInstance (this replica); required */
    int64_t dedup_ns;       /* one (uid, reason) per window; 0 = 10 min */
    pc_cluster_log log;
} pc_kevents_config;

int pc_kevents_new(const pc_kevents_config *cfg, pc_kevents **out);
void pc_kevents_free(pc_kevents *ev);

/* Report `reason` about `regarding` (an object with apiVersion, kind, metadata). type is
 * "Normal" or "Warning"; action a verb in CamelCase ("Create", "Recycle", ...); note is
 * printf-formatted (cut at 1 KiB). related (may be NULL): a second object, e.g. the pod.
 * Returns 0 (written), 1 (suppressed as a duplicate), or a negative errno (the server's
 * answer is logged). Blocking: one request on k. */
int pc_kevents_emit(pc_kevents *ev, pc_kube_conn *k, const json_t *regarding, const json_t *related,
                    const char *type, const char *reason, const char *action, const char *note_fmt,
                    ...) __attribute__((format(printf, 8, 9)));

/* Forget the dedup entries of one object (e.g. once a condition cleared, so a recurrence is
 * reported again). Thread: any. */
void pc_kevents_forget(pc_kevents *ev, const char *uid, const char *reason);

#endif /* PODCLAIM_CLUSTER_KEVENTS_H */
