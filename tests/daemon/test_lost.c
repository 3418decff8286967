/* podclaimd's late-win memory (daemon/lost.h): the ids of claims that ended without a pod
 * after a CAS was sent, so that a pod one of them wins late is given back. It was a ring of
 * the newest 512 ids: a burst of timeouts (a slow API server, when late wins come) pushed out
 * the ids whose PATCHes were still to be applied, and their pods stayed claimed by nobody. */
#include "lost.h"

#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>

#define SEC 1000000000LL

static pcd_lost_set *S;
static const char pool_a[] = "a", pool_b[] = "b";

static void fini(void)
{
    pcd_lost_free(S);
}

Test(lost, an_id_is_remembered_however_many_others_end_within_the_ttl, .fini = fini)
{
    cr_assert_eq(pcd_lost_new(120 * SEC, 65536, &S), 0);
    cr_assert(pcd_lost_add(S, pool_a, "first", 0));
    char id[32];
    for (int i = 0; i < 20000; i++) { /* a burst: 20,000 claims time out within 10 s */
        snprintf(id, sizeof(id), "burst-%d", i);
        cr_assert(pcd_lost_add(S, pool_a, id, (int64_t)i * SEC / 2000));
    }
    cr_assert_eq(pcd_lost_size(S), 20001);
    cr_assert(pcd_lost_take(S, pool_a, "first", 60 * SEC), "the first id was forgotten");
    cr_assert(pcd_lost_take(S, pool_a, "burst-12345", 60 * SEC));
    cr_assert_eq(pcd_lost_size(S), 19999);
    cr_assert_eq(pcd_lost_forgotten(S), 0);
}

Test(lost, a_take_forgets_the_id_and_pools_do_not_share_ids, .fini = fini)
{
    cr_assert_eq(pcd_lost_new(120 * SEC, 16, &S), 0);
    pcd_lost_add(S, pool_a, "c1", 0);
    cr_assert_not(pcd_lost_take(S, pool_b, "c1", SEC), "another pool's claim with that id");
    cr_assert_not(pcd_lost_take(S, pool_a, "c2", SEC));
    cr_assert(pcd_lost_take(S, pool_a, "c1", SEC));
    cr_assert_not(pcd_lost_take(S, pool_a, "c1", SEC), "a pod given back twice");
    cr_assert_eq(pcd_lost_size(S), 0);
}

Test(lost, an_id_is_forgotten_after_the_ttl, .fini = fini)
{
    cr_assert_eq(pcd_lost_new(120 * SEC, 16, &S), 0);
    pcd_lost_add(S, pool_a, "old", 0);
    pcd_lost_add(S, pool_a, "new", 100 * SEC);
    cr_assert_not(pcd_lost_take(S, pool_a, "old", 121 * SEC));
    cr_assert(pcd_lost_take(S, pool_a, "new", 121 * SEC));
    /* added again: the TTL counts from the last add */
    pcd_lost_add(S, pool_a, "again", 0);
    pcd_lost_add(S, pool_a, "again", 100 * SEC);
    cr_assert(pcd_lost_take(S, pool_a, "again", 200 * SEC));
    cr_assert_eq(pcd_lost_size(S), 0);
}

Test(lost, a_full_set_forgets_the_oldest_and_says_so, .fini = fini)
{
    cr_assert_eq(pcd_lost_new(120 * SEC, 4, &S), 0);
    cr_assert(pcd_lost_add(S, pool_a, "c1", 0));
    cr_assert(pcd_lost_add(S, pool_a, "c2", 0));
    cr_assert(pcd_lost_take(S, pool_a, "c2", 0)); /* taken: its room is free again */
    cr_assert(pcd_lost_add(S, pool_a, "c3", 0));
    cr_assert(pcd_lost_add(S, pool_a, "c4", 0));
    cr_assert(pcd_lost_add(S, pool_a, "c5", 0));
    cr_assert_not(pcd_lost_add(S, pool_a, "c6", 0), "the set was full");
    cr_assert_eq(pcd_lost_forgotten(S), 1);
    cr_assert_not(pcd_lost_take(S, pool_a, "c1", 0), "the oldest is the one forgotten");
    for (const char *const *id = (const char *const[]){"c3", "c4", "c5", "c6", NULL}; *id; id++)
        cr_assert(pcd_lost_take(S, pool_a, *id, 0), "%s", *id);
}

/* Informer threads take while pool callbacks add: every id added is taken exactly once. */
#define N_PER_THREAD 20000
static void *adder(void *arg)
{
    char id[32];
    for (int i = 0; i < N_PER_THREAD; i++) {
        snprintf(id, sizeof(id), "%s-%d", (const char *)arg, i);
        pcd_lost_add(S, pool_a, id, 0);
    }
    return NULL;
}

static void *taker(void *arg)
{
    char id[32];
    long *taken = arg;
    for (int i = 0; i < N_PER_THREAD; i++) {
        snprintf(id, sizeof(id), "t1-%d", i);
        while (!pcd_lost_take(S, pool_a, id, 0))
            sched_yield();
        (*taken)++;
    }
    return NULL;
}

Test(lost, adds_and_takes_from_several_threads, .fini = fini)
{
    cr_assert_eq(pcd_lost_new(120 * SEC, 65536, &S), 0);
    pthread_t a1, a2, t;
    long taken = 0;
    pthread_create(&t, NULL, taker, &taken);
    pthread_create(&a1, NULL, adder, "t1");
    pthread_create(&a2, NULL, adder, "t2");
    pthread_join(a1, NULL);
    pthread_join(a2, NULL);
    pthread_join(t, NULL);
    cr_assert_eq(taken, N_PER_THREAD);
    cr_assert_eq(pcd_lost_size(S), N_PER_THREAD, "the other thread's ids are still there");
}
