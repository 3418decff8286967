/* podclaim Kubernetes decoding for controllers: a pod's summary, watch event envelopes and
 * LIST pages, read by the client's validating pull scanner (no JSON tree is built).
 *
 * Flow: API server bytes -> a controller's watch (LIST pages, WATCH lines) -> [kubepod: item
 *       and event spans, pod summaries] -> the controller's cache -> reconcile.
 *
 * Why: a controller that caches pods as jansson trees pays ~75 us of decoding per 1.3 KB pod
 * event and ~10 KB of heap per cached pod (a hash table per object, a block per value). A
 * summary keeps the fields a pool controller acts on in one allocation (~0.5-1 KB) and is
 * decoded in one pass that checks the whole text is well-formed JSON and skips the rest
 * (managedFields, status details, spec beyond containers).
 *
 * Thread-safety: every function touches only its arguments; a summary is immutable, so any
 * number of threads may read one.
 */
#ifndef PODCLAIM_KUBEPOD_H
#define PODCLAIM_KUBEPOD_H

#include <podclaim/backend.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One container: from spec.containers (ready false) or status.containerStatuses. */
typedef struct pc_kube_container {
    const char *name;  /* "" when absent */
    const char *image; /* "" when absent */
    bool ready;        /* containerStatuses[].ready; false for spec containers */
} pc_kube_container;

/* An annotation: its key, and a hash of its value (FNV-1a 64 of the value's bytes, see
 * pc_kube_value_hash), not the value: annotation values may be kilobytes (kubectl's
 * last-applied-configuration) and a controller only compares them with its template's. */
typedef struct pc_kube_annotation {
    const char *key;
    uint64_t value_hash;
} pc_kube_annotation;

/* What a pool controller acts on, from one pod object. Every string is NUL-terminated and ""
 * when absent (null, a wrong type, or a string holding \u0000); lists keep the document's
 * order (for a key given twice, the lookups below return the last, as Go and jansson keep).
 * All of it lives in the one block pc_kube_pod_free frees. Read-only. */
typedef struct pc_kube_pod {
    const char *namespace_, *name, *uid, *resource_version;
    const char *creation_timestamp; /* RFC 3339 as sent */
    const char *status_phase;       /* status.phase: Pending, Running, Succeeded, Failed, ... */
    bool deleting;                  /* metadata.deletionTimestamp is set (not null) */
    bool ready_condition;           /* status.conditions has type Ready with status "True" */
    bool has_container_statuses;    /* status.containerStatuses is an array (maybe empty) */
    size_t n_labels, n_annotations, n_containers, n_statuses, n_owners;
    const pc_kv *labels;
    const pc_kube_annotation *annotations;
    const pc_kube_container *containers; /* spec.containers: name, image */
    const pc_kube_container *statuses;   /* status.containerStatuses: name, image, ready */
    const pc_kv *owners;                 /* metadata.ownerReferences: key = kind, value = name */
} pc_kube_pod;

/* Decode one pod object (the JSON text of the object alone, e.g. a LIST item or a watch
 * event's "object"). Returns 0 and *out (free with pc_kube_pod_free); -EBADMSG for text that
 * is not well-formed JSON or not an object; -EINVAL for a pod without metadata.name or
 * metadata.namespace; -ENOMEM. On error *out is NULL and err says why. */
int pc_kube_pod_decode(const char *json, size_t len, pc_kube_pod **out, char *err, size_t errlen);
void pc_kube_pod_free(pc_kube_pod *p); /* NULL is a no-op */

/* The value of label `key`, or NULL. */
const char *pc_kube_pod_label(const pc_kube_pod *p, const char *key);
/* The annotation `key`, or NULL. */
const pc_kube_annotation *pc_kube_pod_annotation(const pc_kube_pod *p, const char *key);
/* FNV-1a 64 of s's bytes (NULL hashes as ""): what pc_kube_annotation.value_hash holds. */
uint64_t pc_kube_value_hash(const char *s);

/* One watch event line {"type": T, "object": {...}}: T into type (truncated to typecap-1),
 * and the span of the object's text (valid as long as line is). Returns 0, -EBADMSG (not
 * well-formed JSON), or -ENOENT (no string type or no object). */
int pc_kube_watch_event_scan(const char *line, size_t len, char *type, size_t typecap,
                             const char **object, size_t *object_len);

/* metadata.resourceVersion of one object's text (a BOOKMARK's object). Returns its length,
 * -EBADMSG, -EMSGSIZE (over cap) or -ENOENT. */
int pc_kube_object_rv(const char *json, size_t len, char *rv, size_t cap);

/* A LIST answer: each element of "items" is handed to on_item as the span of its text (after
 * it was checked to be well-formed), in order; a non-zero return stops the scan and is
 * returned. metadata.resourceVersion and metadata.continue go to rv and cont ("" when absent;
 * -EMSGSIZE when longer than their buffers). Returns 0, on_item's value, -EBADMSG (items
 * before the bad byte may have been handed out), or -ENOENT (no metadata.resourceVersion or
 * no items array). */
int pc_kube_list_scan(const char *body, size_t len,
                      int (*on_item)(void *arg, const char *item, size_t len), void *arg, char *rv,
                      size_t rvcap, char *cont, size_t contcap);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_KUBEPOD_H */
