/* podclaimd's memory of claims that ended without a pod after a CAS was sent ("late wins",
 * claims.c): such a claim may still win, when a PATCH that timed out at its deadline is
 * applied afterwards. When an informer then shows a pod claimed with one of these ids, the pod
 * is given back.
 *
 * Flow: pool callback (a claim ended without a pod, attempts > 0) -> pcd_lost_add;
 *       informer on_claimed (a pod newly held by a claim id) -> pcd_lost_take.
 *
 * Each id is kept for ttl_ns (a late PATCH is applied within the API server's request
 * timeout, a minute by default) whatever the number of others: a burst of timeouts, when the
 * server is slow, is when late wins come. The entries are bounded by max (the oldest
 * forgotten first, with a warning), which only a burst of more than max failed claims within
 * ttl_ns reaches. A chained hash table by (pool, id) over a FIFO by time: add and take are
 * O(1) on average; expiry pops the FIFO's old end.
 *
 * Thread-safety: every function may be called from any thread (one mutex inside);
 * pcd_lost_take skips the mutex while nothing is remembered.
 */
#ifndef PODCLAIMD_LOST_H
#define PODCLAIMD_LOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pcd_lost_set pcd_lost_set;

/* podclaimd's settings: kube-apiserver's request timeout is a minute by default, so a PATCH
 * is applied within about that long of its send, or never; 65,536 ids (~100 B each, 6.5 MB
 * at most) cover 540 failed claims a second for the whole TTL. */
#define PCD_LOST_TTL_NS (120 * 1000000000LL)
#define PCD_LOST_MAX 65536

/* 0, or -ENOMEM. */
int pcd_lost_new(int64_t ttl_ns, size_t max, pcd_lost_set **out);
void pcd_lost_free(pcd_lost_set *s);

/* Remember claim `id` of `pool` (any pointer that names the pool for the set's lifetime), at
 * now_ns (CLOCK_MONOTONIC). An id remembered already is remembered from now on. False when the
 * set was full and the oldest id was forgotten to make room (or, out of memory, this one). */
bool pcd_lost_add(pcd_lost_set *s, const void *pool, const char *id, int64_t now_ns);

/* True when `id` of `pool` was remembered less than ttl_ns before now_ns; it is forgotten. */
bool pcd_lost_take(pcd_lost_set *s, const void *pool, const char *id, int64_t now_ns);

/* Ids remembered now, and ids forgotten early because the set was full (since its start). */
size_t pcd_lost_size(pcd_lost_set *s);
uint64_t pcd_lost_forgotten(pcd_lost_set *s);

#endif /* PODCLAIMD_LOST_H */
