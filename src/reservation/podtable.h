/* The pod table: one record per pod, at a stable address, holding both what used to be
 * the ready-queue entry and the reservation.
 *
 * Flow: informer -> pool (inbox, [ready-queue], pending) -> [reservation] -> CAS (backend)
 *       -> result.
 *
 * A record is in exactly one state, and on that state's list:
 *   IDLE      in the ready-queue (FIFO: offered order; a pod whose CAS failed without
 *             touching it goes back to the front), selectable;
 *   RESERVED  handed to a CAS at `rv`, not selectable until the informer shows the pod
 *             at another version (offer or withdraw) or `until_ns` (the TTL) passes; the
 *             list is in expiry order because the TTL is one constant. After a 409 the
 *             record moves to a second list, `held`, with the shorter conflict hold (also
 *             one constant, so also in expiry order): the server has a newer version, which
 *             the informer normally shows within its lag; a spurious conflict (a fault
 *             injected, a lost event) should not keep the pod out for a whole TTL;
 *   GONE      not idle as far as we know (withdrawn, NOT_FOUND, reservation expired);
 *             forgotten (freed) one TTL later unless offered again meanwhile.
 * So an offer costs one hash lookup (the offering thread computed the hash), a dispatch
 * pops the ready head and marks it RESERVED (no lookup, no allocation), a CAS result
 * finds its record through the claim's pointer and checks `gen` to know whether the
 * reservation is still the one it made. Records are allocated when a pod is first seen
 * and freed when forgotten; memory follows the pods seen in the last TTL, not all time.
 *
 * Replaces a ready-queue pod table and a reservation map (two ck_hs sets, about six hash
 * operations and an allocation per claim).
 *
 * Thread-safety: none. The pool's scheduler thread owns the table. ck_hs is used in its
 * single-writer mode with no concurrent reader, so no fences are needed here.
 */
#ifndef PODCLAIM_PODTABLE_H
#define PODCLAIM_PODTABLE_H

#include <podclaim/backend.h>

#include <ck_hs.h>
#include <ck_malloc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { PC__POD_IDLE = 1, PC__POD_RESERVED, PC__POD_GONE };

struct pc_claim;

/* What the table compares: the first member of a record, and the probe of a lookup. */
typedef struct pc__pod_key {
    unsigned long hash; /* pc__pod_key_hash(ns, name, 0) */
    const char *ns;
    const char *name;
} pc__pod_key;

/* The fields a dispatch touches come first (two cache lines), the names after them. */
typedef struct pc__pod {
    pc__pod_key key; /* first: points at ns/name below */
    int state;
    uint32_t gen;     /* new on every reservation: a CAS result compares it */
    uint32_t refs;    /* claims holding a pointer to this record (CAS in flight or result) */
    int64_t until_ns; /* RESERVED: expiry; GONE: when it is forgotten (CLOCK_MONOTONIC) */
    bool held;        /* RESERVED after a conflict: on the `held` list */
    struct pc__pod *prev, *next; /* the list of its state */
    /* The claim whose CAS on this record is in flight (set at dispatch, cleared when its
     * result is taken in); NULL = none. Lets the informer's "claimed, claim id X" find the
     * claim without a lookup (the pool's business: the table only stores it). */
    struct pc_claim *cas_claim;
    char rv[PC_RV_MAX]; /* IDLE: the version offered; RESERVED: the version dispatched */
    char ns[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char uid[PC_UID_MAX];
} pc__pod;

typedef struct pc__podlist {
    pc__pod *head, *tail;
    size_t len;
} pc__podlist;

typedef struct pc__podtable {
    ck_hs_t hs;
    struct ck_malloc alloc;
    pc__podlist ready, reserved, held, gone;
    int64_t ttl_ns;  /* reservation TTL; also how long a GONE record is kept */
    int64_t hold_ns; /* reservation after a conflict (<= ttl_ns) */
    size_t removed_since_gc;
} pc__podtable;

/* ttl_ns > 0; hold_ns > 0 (capped at ttl_ns). Returns 0, -EINVAL, -ENOMEM. */
int pc__podtable_init(pc__podtable *t, int64_t ttl_ns, int64_t hold_ns);
void pc__podtable_fini(pc__podtable *t); /* frees every record */

typedef enum pc__offer_result {
    PC__OFFER_QUEUED,   /* new in the ready-queue (appended) */
    PC__OFFER_UPDATED,  /* already queued: keeps its place, takes the version and uid */
    PC__OFFER_RELEASED, /* was reserved at another version: released, appended */
    PC__OFFER_STALE,    /* reserved at this version: the informer has not seen our claim */
    PC__OFFER_NOMEM,    /* a new record could not be stored; the pod is not queued */
} pc__offer_result;

/* The informer saw the pod idle at rv (uid may be ""). Strings must fit their fields. */
pc__offer_result pc__podtable_offer(pc__podtable *t, const pc__pod_key *k, const char *uid,
                                    const char *rv);

/* The pod is not idle any more: out of the ready-queue, reservation released; GONE.
 * Unknown pods are ignored. */
void pc__podtable_withdraw(pc__podtable *t, const pc__pod_key *k, int64_t now_ns);

/* The record of k, or NULL. */
pc__pod *pc__podtable_find(pc__podtable *t, const pc__pod_key *k);

/* A record found with pc__podtable_find is not idle any more: as pc__podtable_withdraw,
 * without a second lookup. */
void pc__podtable_withdraw_record(pc__podtable *t, pc__pod *p, int64_t now_ns);

/* The pod is not idle any more and a claim needs its record (the informer showed it claimed):
 * the record of k, made GONE if it was not, or a new GONE record (uid and rv copied) when the
 * table had forgotten the pod. NULL: out of memory. */
pc__pod *pc__podtable_gone_record(pc__podtable *t, const pc__pod_key *k, const char *uid,
                                  const char *rv, int64_t now_ns);

/* Take the ready-queue's head, reserve it at its version until now + TTL, and take a
 * reference for the caller. NULL when no pod is idle. */
pc__pod *pc__podtable_reserve(pc__podtable *t, int64_t now_ns);

/* The CAS made under reservation `gen` of `pod` reported `outcome`. If the reservation is
 * still that one: NOT_FOUND -> GONE; INVALID, RETRYABLE (the pod untouched as far as we
 * know) -> IDLE at the front of the ready-queue; WON, CONFLICT -> stays reserved (the pod
 * moved to a version we have not seen). Does not drop the reference. */
void pc__podtable_cas_done(pc__podtable *t, pc__pod *pod, uint32_t gen, int outcome,
                           int64_t now_ns);

/* Drop a reference taken by pc__podtable_reserve. */
static inline void pc__podtable_unref(pc__pod *pod)
{
    pod->refs--;
}

/* Expire the reservations due at now (-> GONE), calling expired(pod, arg) for each, and
 * forget the GONE records due (unless referenced: they wait another TTL). Returns the
 * number of reservations expired. */
size_t pc__podtable_sweep(pc__podtable *t, int64_t now_ns, void (*expired)(pc__pod *, void *),
                          void *arg);

/* When the next sweep has something to do (CLOCK_MONOTONIC), or 0. */
int64_t pc__podtable_next_event(const pc__podtable *t);

/* Records held (idle + reserved + gone). */
static inline size_t pc__podtable_count(const pc__podtable *t)
{
    return t->ready.len + t->reserved.len + t->held.len + t->gone.len;
}

#endif /* PODCLAIM_PODTABLE_H */
