/* Reservation map: pod -> claim, bounded by a TTL.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> [reservation] -> CAS workers
 *       -> backend -> result.
 *
 * When the scheduler hands a pod to a CAS it reserves the pod at the version it was
 * offered. Until the reservation is released (the informer showed a different version,
 * or the pod went away) or expires, an offer of that pod at the reserved version is
 * stale and the pod must not be selected again. This is the defence against the
 * informer lag between the API server accepting a claim and the watch event arriving.
 *
 * O(1) reserve, lookup and release (a ck_hs hash set keyed "namespace/name"); the TTL is
 * the same for every entry, so insertion order is expiry order and the sweep pops from
 * the head of one doubly-linked list.
 *
 * Thread-safety: none. The pool's scheduler thread owns the map.
 */
#ifndef PODCLAIM_RESERVATION_H
#define PODCLAIM_RESERVATION_H

#include <podclaim/backend.h>

#include <stddef.h>
#include <stdint.h>

typedef struct pc__reservation {
    char namespace_[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char rv[PC_RV_MAX]; /* the version the pod was reserved at */
    char claim_id[PC_CLAIM_ID_MAX];
    int64_t reserved_at_ns; /* CLOCK_MONOTONIC */
    int64_t expires_at_ns;  /* CLOCK_MONOTONIC: reserved_at_ns + ttl */
    /* private */
    struct pc__reservation *prev, *next; /* expiry order */
    unsigned long hash;
} pc__reservation;

typedef struct pc__reservation_map pc__reservation_map;

/* ttl_ns > 0. Returns 0 and *out, -EINVAL, -ENOMEM. */
int pc__reservation_map_new(int64_t ttl_ns, pc__reservation_map **out);
void pc__reservation_map_free(pc__reservation_map *m); /* NULL: no-op */

/* Reserve (ns, name) at rv for claim_id, expiring at now_ns + ttl. A pod already
 * reserved (even expired but not yet swept) is replaced. Returns 0, -EINVAL (a string
 * too long or NULL ns/name/rv), -ENOMEM; the map is unchanged on error. */
int pc__reservation_reserve(pc__reservation_map *m, const char *ns, const char *name,
                            const char *rv, const char *claim_id, int64_t now_ns);

/* The live reservation of (ns, name), or NULL if none or expired at now_ns.
 * The pointer is valid until the next reserve/release/sweep/free. */
const pc__reservation *pc__reservation_lookup(const pc__reservation_map *m, const char *ns,
                                              const char *name, int64_t now_ns);

/* Release (ns, name). Returns 0, or -ENOENT if it was not reserved. */
int pc__reservation_release(pc__reservation_map *m, const char *ns, const char *name);

/* Release the reservation `r` returned by pc__reservation_lookup (no second lookup).
 * Cannot fail. */
void pc__reservation_release_entry(pc__reservation_map *m, const pc__reservation *r);

/* Remove every reservation with expires_at_ns <= now_ns, oldest first, calling
 * expired(r, arg) for each before it is freed (expired may be NULL; it must not touch
 * the map). Returns how many were removed. */
size_t pc__reservation_sweep(pc__reservation_map *m, int64_t now_ns,
                             void (*expired)(const pc__reservation *r, void *arg), void *arg);

/* The earliest expires_at_ns, or 0 if the map is empty. */
int64_t pc__reservation_next_expiry(const pc__reservation_map *m);

/* Number of reservations held (expired but unswept included). */
size_t pc__reservation_count(const pc__reservation_map *m);

#endif /* PODCLAIM_RESERVATION_H */
