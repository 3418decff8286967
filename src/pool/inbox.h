/* Lock-free multi-producer, single-consumer queues and a futex parker.
 *
 * Flow: callers, informer and backend completions -> [inbox] -> scheduler thread;
 *       scheduler -> [free ring] -> offering threads (offer messages).
 *
 * Why not ck_ring: its MPSC enqueue waits for earlier producers to commit, and a
 * preempted producer stalls the rest; with more enqueuing threads than cores it
 * collapsed (DESIGN.md §1). A ck_stack push never waits on another producer: the
 * consumer takes the whole stack with one atomic exchange and reverses the batch
 * to restore arrival order. Entries are intrusive (no allocation).
 *
 * The parker lets a consumer sleep on a futex when it has no work; a producer pays one
 * atomic load on its fast path and a syscall only when the consumer is actually asleep.
 *
 * Thread-safety: pc__mpsc_push and pc__parker_unpark from any thread; pc__mpsc_pop,
 * pc__mpsc_empty and pc__parker_park from the one consumer thread only.
 */
#ifndef PODCLAIM_INBOX_H
#define PODCLAIM_INBOX_H

#include <podclaim/backend.h>

#include <ck_md.h>
#include <ck_stack.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pc__mpsc {
    _Alignas(CK_MD_CACHELINE) ck_stack_t shared;       /* producers push here */
    _Alignas(CK_MD_CACHELINE) ck_stack_entry_t *batch; /* consumer-owned: the taken batch */
} pc__mpsc;

void pc__mpsc_init(pc__mpsc *q);

/* Push one entry. Lock-free, never waits for another producer. */
void pc__mpsc_push(pc__mpsc *q, ck_stack_entry_t *e);

/* Oldest entry not yet taken, or NULL. Consumer only. */
ck_stack_entry_t *pc__mpsc_pop(pc__mpsc *q);

/* True when the batch the consumer took holds nothing more (the shared stack may).
 * Consumer only. */
static inline bool pc__mpsc_batch_empty(const pc__mpsc *q)
{
    return q->batch == NULL;
}

/* True when neither the taken batch nor the shared stack holds anything. Consumer only. */
bool pc__mpsc_empty(pc__mpsc *q);

typedef struct pc__parker {
    /* 1 while the consumer sleeps or is about to; futex word. A line of its own. */
    _Alignas(CK_MD_CACHELINE) _Atomic uint32_t parked;
    /* A backend whose event loop the consumer runs (backend.h: attach): it sleeps in the
     * backend's wait instead of on the futex, and is woken through the backend's wake. Set
     * by the consumer before its first park, never cleared; a producer reads it only after
     * its acquire CAS has seen the consumer's release store of parked = 1, hence no atomic. */
    pc_backend *drive;
} pc__parker;

void pc__parker_init(pc__parker *k);

/* Sleep until unparked or until deadline_ns (CLOCK_MONOTONIC; 0 = no deadline), unless
 * has_work(arg) is already true after the consumer has announced that it parks: that
 * re-check closes the race with a producer that pushed just before. With `drive` set, the
 * sleep is the backend's wait (which may report CAS results on this thread and return), and
 * with work at hand the backend's loop still gets one turn without sleeping, so it keeps
 * moving while the consumer stays busy. Consumer only. */
void pc__parker_park(pc__parker *k, int64_t deadline_ns, bool (*has_work)(void *arg), void *arg);

/* Wake the consumer if it is parked. Call after making work visible (a push).
 * Fast path: one fence and one load. */
void pc__parker_unpark(pc__parker *k);

/* A bounded ring of pointers with one producer and many consumers: the pool's free list of
 * offer messages (the scheduler gives them back, offering threads take them). A consumer
 * claims a slot with one CAS on `head` and never waits for another consumer.
 *
 * Why not ck_ring's SPMC mode, which is the same algorithm: its counters are plain
 * volatile accesses ordered by fences, which ThreadSanitizer cannot see; with C11 atomics
 * the sanitizer checks the hand-off of the messages' contents too.
 *
 * Thread-safety: pc__spmc_ring_push from one thread at a time; pc__spmc_ring_pop from any. */
typedef struct pc__spmc_ring {
    _Alignas(CK_MD_CACHELINE) _Atomic uint32_t head; /* consumers */
    _Alignas(CK_MD_CACHELINE) _Atomic uint32_t tail; /* the producer */
    _Alignas(CK_MD_CACHELINE) uint32_t mask;         /* capacity - 1; fixed */
    _Atomic(void *) *slots;
} pc__spmc_ring;

/* capacity: a power of two. Returns 0 or -ENOMEM. */
int pc__spmc_ring_init(pc__spmc_ring *r, uint32_t capacity);
void pc__spmc_ring_fini(pc__spmc_ring *r);

/* False when full (the ring is unchanged). Producer only. */
bool pc__spmc_ring_push(pc__spmc_ring *r, void *v);

/* False when empty. Any thread. */
bool pc__spmc_ring_pop(pc__spmc_ring *r, void **out);

#endif /* PODCLAIM_INBOX_H */
