/* Binary min-heaps of claims: the timer heap (deadlines and retry times), and the six
 * pending levels (oldest claim first), each a sorted list with a heap beside it.
 *
 * Flow: pool pending and retry-waiting claims -> [claim heaps] -> dispatch, wake-ups.
 *
 * Each claim stores its position in each heap it is in (priv.timer_index, priv.level_index),
 * so insertion, removal of any claim (served, cancelled, timed out) and taking the top are
 * O(log n) with no search. A level used to be a list kept in enqueued_at order: inserting a
 * claim stamped earlier than the tail (producers racing, or a caller-set enqueued_at_ns)
 * walked it from the head, O(n) per claim under a backlog.
 *
 * A level orders by (enqueued_at_ns, admission sequence): FIFO by enqueue time, ties in the
 * order the scheduler took the claims in, and a claim coming back after a lost CAS keeps
 * its place. Most claims arrive in that order, so a level appends them to a sorted list
 * (O(1) in and out: a heap of thousands of waiting claims cost ~380 instructions per
 * claim to pop, callgrind); a claim stamped earlier than the list's tail (a producer
 * preempted between stamping and pushing, a caller-set stamp, a claim back from a lost
 * CAS) goes to a heap beside it, O(log k) for the k such claims. A heap's array grows by
 * doubling and shrinks by half when a quarter full, so a burst does not keep its memory.
 *
 * Thread-safety: none; the scheduler thread owns the heaps.
 */
#ifndef PODCLAIM_CLAIM_HEAP_H
#define PODCLAIM_CLAIM_HEAP_H

#include <podclaim/podclaim.h>

#include <stddef.h>

typedef enum pc__heap_kind {
    PC__HEAP_TIMER, /* key priv.timer_at_ns; position priv.timer_index */
    PC__HEAP_LEVEL, /* key (enqueued_at_ns, priv.seq); position priv.level_index */
} pc__heap_kind;

typedef struct pc__heap_item {
    int64_t key;  /* timer_at_ns, or enqueued_at_ns */
    uint64_t tie; /* 0, or the admission number */
    pc_claim *c;
} pc__heap_item;

typedef struct pc__claim_heap {
    pc__heap_item *items;
    size_t len;
    size_t cap;
    pc__heap_kind kind;
} pc__claim_heap;

void pc__claim_heap_init(pc__claim_heap *h, pc__heap_kind kind);
void pc__claim_heap_fini(pc__claim_heap *h);

/* Insert c. Returns 0 or -ENOMEM (heap unchanged). */
int pc__claim_heap_push(pc__claim_heap *h, pc_claim *c);

/* Remove c if it is in the heap (its position is not SIZE_MAX). */
void pc__claim_heap_remove(pc__claim_heap *h, pc_claim *c);

/* The first claim, or NULL. */
static inline pc_claim *pc__claim_heap_top(const pc__claim_heap *h)
{
    return h->len ? h->items[0].c : NULL;
}

/* A pending level: the in-order list (priv.prev/next) and the heap of late arrivals. */
typedef struct pc__claim_level {
    pc_claim *head, *tail;
    pc__claim_heap late;
} pc__claim_level;

#define PC__IN_LIST (SIZE_MAX - 1) /* priv.level_index of a claim on a level's list */

void pc__claim_level_init(pc__claim_level *l);
void pc__claim_level_fini(pc__claim_level *l);
/* Returns 0 or -ENOMEM (level unchanged). */
int pc__claim_level_push(pc__claim_level *l, pc_claim *c);
/* Remove c if it is in the level. */
void pc__claim_level_remove(pc__claim_level *l, pc_claim *c);
/* The level's first claim, or NULL. */
pc_claim *pc__claim_level_top(const pc__claim_level *l);

#endif /* PODCLAIM_CLAIM_HEAP_H */
