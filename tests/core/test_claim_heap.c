/* Tests of src/pool/claim_heap: the timer heap and the pending levels (a sorted list with a
 * heap of late arrivals beside it) give claims back in key order whatever the arrival order
 * and removals (pool (pending) -> dispatch). */
#include "common.h"
#include "pool/claim_heap.h"

#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N 3000

static pc_claim claims[N];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void init_claims(int64_t spread)
{
    memset(claims, 0, sizeof(claims));
    for (int i = 0; i < N; i++) {
        /* mostly increasing stamps, a quarter of them late by up to `spread` */
        claims[i].enqueued_at_ns =
                1000 * i - (next_rand() % 4 == 0 ? (int64_t)(next_rand() % spread) : 0);
        claims[i].priv.seq = (uint64_t)i;
        claims[i].priv.timer_at_ns = (int64_t)(next_rand() % 1000000);
        claims[i].priv.level_index = SIZE_MAX;
        claims[i].priv.timer_index = SIZE_MAX;
    }
}

static bool level_before(const pc_claim *a, const pc_claim *b)
{
    return a->enqueued_at_ns < b->enqueued_at_ns ||
           (a->enqueued_at_ns == b->enqueued_at_ns && a->priv.seq < b->priv.seq);
}

Test(claim_heap, a_level_gives_claims_back_oldest_first_whatever_the_arrival_order, .timeout = 10)
{
    init_claims(500000);
    pc__claim_level l;
    pc__claim_level_init(&l);
    bool removed[N] = {false};
    for (int i = 0; i < N; i++)
        cr_assert_eq(pc__claim_level_push(&l, &claims[i]), 0);
    for (int i = 0; i < N; i += 7) { /* cancellations, from the list and from the heap */
        pc__claim_level_remove(&l, &claims[i]);
        removed[i] = true;
    }
    const pc_claim *prev = NULL;
    int n = 0;
    pc_claim *c;
    while ((c = pc__claim_level_top(&l)) != NULL) {
        cr_assert_not(removed[c - claims], "a removed claim came back");
        if (prev)
            cr_assert(level_before(prev, c), "out of order: %lld then %lld",
                      (long long)prev->enqueued_at_ns, (long long)c->enqueued_at_ns);
        pc__claim_level_remove(&l, c);
        cr_assert_eq(c->priv.level_index, SIZE_MAX);
        prev = c;
        n++;
    }
    cr_assert_eq(n, N - (N + 6) / 7);
    cr_assert_null(l.head);
    cr_assert_eq(l.late.len, 0);
    pc__claim_level_fini(&l);
}

Test(claim_heap, the_timer_heap_gives_the_earliest_timer_first_and_shrinks_when_emptied,
     .timeout = 10)
{
    init_claims(1);
    pc__claim_heap h;
    pc__claim_heap_init(&h, PC__HEAP_TIMER);
    for (int i = 0; i < N; i++)
        cr_assert_eq(pc__claim_heap_push(&h, &claims[i]), 0);
    size_t grown = h.cap;
    for (int i = 1; i < N; i += 3)
        pc__claim_heap_remove(&h, &claims[i]);
    int64_t last = -1;
    pc_claim *c;
    while ((c = pc__claim_heap_top(&h)) != NULL) {
        cr_assert_geq(c->priv.timer_at_ns, last);
        last = c->priv.timer_at_ns;
        pc__claim_heap_remove(&h, c);
    }
    cr_assert_lt(h.cap, grown, "capacity %zu after emptying, %zu at the peak", h.cap, grown);
    pc__claim_heap_fini(&h);
}
