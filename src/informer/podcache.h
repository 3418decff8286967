/* The informer's pod cache: what the informer last saw of each pod, keyed namespace/name.
 *
 * Flow: WATCH/LIST JSON -> [pod cache] -> idle transitions -> pool offer_idle / withdraw.
 *
 * A chained hash table that doubles when it gets full; entries own their strings.
 * Thread-safety: none. The informer thread owns the cache (STYLE: one owner thread).
 */
#ifndef PODCLAIM_INFORMER_PODCACHE_H
#define PODCLAIM_INFORMER_PODCACHE_H

#include <podclaim/backend.h>

#include "jscan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PC__PHASE_MAX 32

typedef struct pc__pod {
    struct pc__pod *next; /* hash chain */
    uint64_t hash;
    char namespace_[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char uid[PC_UID_MAX];
    char rv[PC_RV_MAX];
    char phase[PC__PHASE_MAX]; /* label podclaim.io/phase; "" = none */
    bool running;              /* status.phase == Running */
    bool ready;                /* condition Ready=True */
    bool deleting;             /* metadata.deletionTimestamp set */
    uint32_t seen_gen;         /* the LIST generation that last saw it (relist sweep) */
    pc_kv *labels;             /* n_labels entries; strings owned */
    size_t n_labels;
    size_t labels_cap; /* entries allocated: kept with the array, since a document may carry
                         * "labels" (or "metadata") more than once and each adds to it */
    char *claim_id;    /* annotation podclaim.io/claim-id (who claimed it); owned; NULL = none */
    char **containers; /* spec.containers[].name; owned */
    size_t n_containers;
    size_t containers_cap;
} pc__pod;

/* DESIGN.md §2: phase Idle, status.phase Running, Ready=True, not being deleted. */
bool pc__pod_is_idle(const pc__pod *p);

/* Fill `p` (zeroed by the caller) from the Pod object at the scanner's cursor, consuming it.
 * Returns 0; -EINVAL with err set for well-formed JSON that is no usable pod (no
 * metadata.name/namespace/resourceVersion, a name that is no DNS subdomain or a namespace no
 * DNS label, an over-long field, podclaim.io/phase or podclaim.io/claim-id given twice), the
 * object consumed all the
 * same; -EBADMSG for malformed JSON (err says where); -ENOMEM. On failure p holds nothing to
 * free beyond pc__pod_clear. */
int pc__pod_scan(pc__js *js, pc__pod *p, char *err, size_t errlen);

/* Free what a pod owns (labels, containers, claim id); keeps the fixed fields. Cannot fail. */
void pc__pod_clear(pc__pod *p);

/* Label value or NULL. */
const char *pc__pod_label(const pc__pod *p, const char *key);

typedef struct pc__podcache {
    pc__pod **buckets;
    size_t n_buckets; /* power of two */
    size_t count;
} pc__podcache;

int pc__podcache_init(pc__podcache *c);
void pc__podcache_fini(pc__podcache *c);

/* The cached pod or NULL. */
pc__pod *pc__podcache_get(const pc__podcache *c, const char *ns, const char *name);

/* Insert a heap pod (the cache takes it; its key must not be present). Returns 0 or -ENOMEM
 * (the pod is then still the caller's). */
int pc__podcache_insert(pc__podcache *c, pc__pod *p);

/* Unlink a pod and return it (the caller frees it with pc__pod_clear + free). */
void pc__podcache_remove(pc__podcache *c, pc__pod *p);

/* Iterate: for (pc__pod *p = pc__podcache_first(c, &it); p; p = pc__podcache_next(c, &it)).
 * Removing the current pod during iteration is allowed (next is looked up first). */
typedef struct pc__podcache_iter {
    size_t bucket;
    pc__pod *next;
} pc__podcache_iter;
pc__pod *pc__podcache_first(const pc__podcache *c, pc__podcache_iter *it);
pc__pod *pc__podcache_next(const pc__podcache *c, pc__podcache_iter *it);

#endif /* PODCLAIM_INFORMER_PODCACHE_H */
