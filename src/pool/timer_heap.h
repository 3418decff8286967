/* Binary min-heap of claims keyed by their next timer (deadline or retry time).
 *
 * Flow: pool pending and retry-waiting claims -> [timer heap] -> scheduler wake-ups.
 *
 * Each claim stores its own position (priv.heap_index), so removing a claim that was
 * served or cancelled is O(log n) without a search. Grows by doubling; the scheduler
 * reserves room before a claim enters the heap so insertion itself cannot fail.
 *
 * Thread-safety: none; the scheduler thread owns it.
 */
#ifndef PODCLAIM_TIMER_HEAP_H
#define PODCLAIM_TIMER_HEAP_H

#include <podclaim/podclaim.h>

#include <stddef.h>

typedef struct pc__timer_heap {
    pc_claim **items;
    size_t len;
    size_t cap;
} pc__timer_heap;

void pc__timer_heap_init(pc__timer_heap *h);
void pc__timer_heap_fini(pc__timer_heap *h);

/* Insert c keyed by c->priv.timer_at_ns. Returns 0 or -ENOMEM (heap unchanged). */
int pc__timer_heap_push(pc__timer_heap *h, pc_claim *c);

/* Remove c if it is in the heap (heap_index != SIZE_MAX). */
void pc__timer_heap_remove(pc__timer_heap *h, pc_claim *c);

/* The claim with the earliest timer, or NULL. */
pc_claim *pc__timer_heap_top(const pc__timer_heap *h);

#endif /* PODCLAIM_TIMER_HEAP_H */
