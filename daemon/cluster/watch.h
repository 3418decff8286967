/* A generic LIST+WATCH of one Kubernetes collection, with a cache of the objects as jansson
 * values (pods, SandboxPools, SandboxClaims, ...).
 *
 * Flow: API server -> [watch thread: paged LIST, WATCH from its resourceVersion, bookmarks,
 *       410 -> relist, backoff] -> cache (keyed "namespace/name") -> on_change callbacks ->
 *       the controllers' work queues.
 *
 * The same protocol as src/informer (read it for the details relied on), without its pod
 * specialisation: every object is kept whole, immutable once cached (a change replaces it), so
 * readers on other threads take a reference under the cache lock and use it without the lock
 * (jansson's reference counts are atomic). An optional index keeps the objects by
 * "namespace/<label value>" for one label (the pool controller's pods by pool).
 *
 * Pod mode (cfg.pods): the objects are pods, kept as compact summaries (pc_kube_pod,
 * include/podclaim/kubepod.h) instead of jansson trees, decoded from LIST pages and watch
 * events by the kube client's validating scanner: ~0.7 KB per cached pod and a fraction of
 * the decoding cost, where whole trees took ~10 KB and ~75 us per event (bench/RESULTS.md).
 * The pod functions below replace get/list/list_index and on_change in that mode.
 *
 * Thread-safety: new/start/stop/free from one controlling thread; get, list, synced from any
 * thread. Callbacks run on the watch thread, after the cache changed, without the lock held;
 * they must not block long and must not call stop/free.
 */
#ifndef PODCLAIM_CLUSTER_WATCH_H
#define PODCLAIM_CLUSTER_WATCH_H

#include "cluster.h"

#include <podclaim/kubepod.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum pc_watch_change {
    PC_WATCH_ADDED,
    PC_WATCH_MODIFIED,
    PC_WATCH_DELETED,
    PC_WATCH_CHANGE_COUNT
} pc_watch_change;

/* obj: the new state (DELETED: the last state); old: the previous cached state or NULL.
 * Both borrowed for the call. */
typedef void (*pc_watch_fn)(void *arg, pc_watch_change ch, const json_t *obj, const json_t *old);
/* Pod mode: the same with pod summaries (obj: the new state, DELETED: the last state as the
 * event carried it). Both borrowed for the call. */
typedef void (*pc_watch_pod_fn)(void *arg, pc_watch_change ch, const pc_kube_pod *obj,
                                const pc_kube_pod *old);
/* After every complete LIST (the first sync and each relist). */
typedef void (*pc_watch_sync_fn)(void *arg);

typedef struct pc_watch_config {
    pc_kube_client *client; /* required; borrowed */
    /* required: the collection's path without query, e.g. "/api/v1/namespaces/ns/pods",
     * "/api/v1/pods" (all namespaces), "/apis/podclaim.io/v1alpha1/sandboxpools" */
    const char *path;
    const char *label_selector; /* NULL = everything; not yet URL-encoded */
    const char *index_label;    /* NULL = no index; else pc_watch_list_index works on it */
    const char *name;           /* for log lines; NULL = path */
    uint32_t page_size;         /* LIST limit; 0 = 500 */
    uint32_t watch_timeout_s;   /* timeoutSeconds of each WATCH; 0 = 300 */
    int64_t backoff_initial_ns; /* 0 = 100 ms, doubled per failure, jittered */
    int64_t backoff_max_ns;     /* 0 = 10 s */
    pc_watch_fn on_change;      /* optional */
    bool pods;                  /* pod mode: the collection holds pods (see above) */
    pc_watch_pod_fn on_pod;     /* pod mode: optional */
    pc_watch_sync_fn on_sync;   /* optional */
    void *arg;
    pc_cluster_log log;
} pc_watch_config;

typedef struct pc_watch pc_watch;

/* Create (not started). Copies the strings. Returns 0 and *out, -EINVAL (no client or path),
 * -ENOMEM. */
int pc_watch_new(const pc_watch_config *cfg, pc_watch **out);
/* Start the thread. Returns 0, -EALREADY or a pthread_create error (negative). */
int pc_watch_start(pc_watch *w);
/* Stop and join the thread (no callback runs after this returns). Idempotent. The cache is
 * kept; a later start resumes from the last resourceVersion. */
void pc_watch_stop(pc_watch *w);
/* Stop and free. NULL is a no-op. */
void pc_watch_free(pc_watch *w);

/* True once the first LIST is complete. Thread: any. */
bool pc_watch_synced(const pc_watch *w);

/* The cached object ns/name (ns NULL or "" for cluster-scoped), a new reference, or NULL.
 * Thread: any. */
json_t *pc_watch_get(pc_watch *w, const char *ns, const char *name);
/* Every cached object (a new array of new references; NULL on allocation failure), in no
 * particular order. Thread: any. */
json_t *pc_watch_list(pc_watch *w);
/* The cached objects in namespace ns whose index label has `value` (array as above). */
json_t *pc_watch_list_index(pc_watch *w, const char *ns, const char *value);

/* A cached pod (pod mode): its summary, shared and reference-counted. */
typedef struct pc_watch_pod {
    const pc_kube_pod *pod; /* read-only */
    _Atomic uint32_t refs;  /* private */
} pc_watch_pod;

/* The cached pod ns/name with a new reference (pc_watch_pod_unref), or NULL. Thread: any. */
pc_watch_pod *pc_watch_get_pod(pc_watch *w, const char *ns, const char *name);
/* The cached pods in namespace ns whose index label has `value`: *out gets a new array of new
 * references (pc_watch_pods_free), NULL when there are none; returns their count, or -ENOMEM.
 * Thread: any. */
long pc_watch_list_pods(pc_watch *w, const char *ns, const char *value, pc_watch_pod ***out);
void pc_watch_pod_unref(pc_watch_pod *p); /* NULL is a no-op. Thread: any. */
void pc_watch_pods_free(pc_watch_pod **pods, long n);

typedef struct pc_watch_stats {
    uint64_t lists, relists, watches, events, bookmarks, errors, objects;
} pc_watch_stats;
void pc_watch_stats_read(pc_watch *w, pc_watch_stats *out); /* relaxed; thread: any */

#endif /* PODCLAIM_CLUSTER_WATCH_H */
