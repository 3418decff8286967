/* Lock-free MPSC queues on ck_stack, and the futex parker. See inbox.h. */
#include "pool/inbox.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void pc__mpsc_init(pc__mpsc *q)
{
    ck_stack_init(&q->shared);
    q->batch = NULL;
}

void pc__mpsc_push(pc__mpsc *q, ck_stack_entry_t *e)
{
    /* ck_stack_push_upmc: a CAS loop on the head (a full barrier on x86); the entry's
     * fields written before the push are visible to the consumer that pops it, because
     * ck_stack fences the entry's next pointer before the CAS and the batch pop fences
     * loads after its exchange. */
    ck_stack_push_upmc(&q->shared, e);
}

ck_stack_entry_t *pc__mpsc_pop(pc__mpsc *q)
{
    ck_stack_entry_t *e = q->batch;
    if (e == NULL) {
        /* A plain load first: the scheduler looks at four inboxes every round and most are
         * empty; the exchange is a locked instruction that takes the line from the
         * producers' caches, the load leaves it shared. A push it misses is found by the
         * next look (the parker's has_work re-checks after announcing sleep). */
        if (ck_pr_load_ptr(&q->shared.head) == NULL)
            return NULL;
        /* Take everything at once (one atomic exchange), newest first, and reverse it so
         * the consumer sees arrival order. */
        ck_stack_entry_t *top = ck_stack_batch_pop_upmc(&q->shared);
        ck_stack_entry_t *rev = NULL;
        while (top != NULL) {
            ck_stack_entry_t *next = top->next;
            top->next = rev;
            rev = top;
            top = next;
        }
        e = rev;
        if (e == NULL)
            return NULL;
    }
    q->batch = e->next;
    return e;
}

bool pc__mpsc_empty(pc__mpsc *q)
{
    return q->batch == NULL && ck_pr_load_ptr(&q->shared.head) == NULL;
}

void pc__parker_init(pc__parker *k)
{
    atomic_init(&k->parked, 0);
    k->drive = NULL;
}

void pc__parker_park(pc__parker *k, int64_t deadline_ns, bool (*has_work)(void *arg), void *arg)
{
    /* Dekker-style handshake with pc__parker_unpark: the consumer stores parked=1 then
     * reads the queues; a producer pushes then reads parked. With a full fence between
     * the store and the loads on each side, at least one of them sees the other: either
     * the consumer sees the work and does not sleep, or the producer sees parked=1 and
     * wakes it. */
    /* release: `drive` (written before the first park) is visible to the producer whose
     * acquire CAS takes this 1 (pc__parker_unpark). */
    atomic_store_explicit(&k->parked, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (has_work(arg)) {
        atomic_store_explicit(&k->parked, 0, memory_order_relaxed);
        if (k->drive)
            k->drive->wait(k->drive, -1);
        return;
    }
    if (k->drive) {
        /* A producer's wake before this call is kept by the backend (backend.h: wake), so
         * the Dekker argument above holds as for the futex. */
        k->drive->wait(k->drive, deadline_ns);
        atomic_store_explicit(&k->parked, 0, memory_order_relaxed);
        return;
    }
    struct timespec ts, *tsp = NULL;
    if (deadline_ns > 0) {
        ts.tv_sec = deadline_ns / 1000000000;
        ts.tv_nsec = deadline_ns % 1000000000;
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. It returns at once
     * (EAGAIN) if a producer already reset the word to 0. EINTR and ETIMEDOUT need no
     * handling: the caller's loop re-checks everything. */
    syscall(SYS_futex, &k->parked, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 1, tsp, NULL,
            FUTEX_BITSET_MATCH_ANY);
    atomic_store_explicit(&k->parked, 0, memory_order_relaxed);
}

void pc__parker_unpark(pc__parker *k)
{
    /* Pairs with the fence in pc__parker_park: orders our push before this load. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&k->parked, memory_order_relaxed) == 0)
        return;
    uint32_t expected = 1;
    /* Only the producer that flips 1 -> 0 pays for the syscall. acquire: see `drive`. */
    if (atomic_compare_exchange_strong_explicit(&k->parked, &expected, 0, memory_order_acquire,
                                                memory_order_relaxed)) {
        if (k->drive)
            k->drive->wake(k->drive);
        else
            syscall(SYS_futex, &k->parked, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
    }
}

int pc__spmc_ring_init(pc__spmc_ring *r, uint32_t capacity)
{
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->mask = capacity - 1;
    r->slots = calloc(capacity, sizeof(*r->slots));
    return r->slots ? 0 : -ENOMEM;
}

void pc__spmc_ring_fini(pc__spmc_ring *r)
{
    free(r->slots);
    r->slots = NULL;
}

bool pc__spmc_ring_push(pc__spmc_ring *r, void *v)
{
    uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* acquire: pairs with the consumers' CAS on head; what a consumer did with the slot's
     * old value before it moved head happens-before we overwrite the slot. */
    uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h > r->mask)
        return false;
    atomic_store_explicit(&r->slots[t & r->mask], v, memory_order_relaxed);
    /* release: the slot, and everything we did with the object before giving it back,
     * is visible to the consumer that sees the new tail. */
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return true;
}

bool pc__spmc_ring_pop(pc__spmc_ring *r, void **out)
{
    uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        /* acquire: pairs with the producer's release of tail (the slot and the object). */
        uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (h == t)
            return false;
        void *v = atomic_load_explicit(&r->slots[h & r->mask], memory_order_relaxed);
        /* The slot cannot have been overwritten if head is still h: the producer reuses a
         * slot only after head has passed it. acq_rel: publishes our read to the producer
         * (see push); on failure h is reloaded and we try the next slot. */
        if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            *out = v;
            return true;
        }
    }
}
