/* A backend whose event loop the pool's scheduler runs (backend.h: attach, wait, wake,
 * detach): producers wake the scheduler through the backend, results are reported on the
 * scheduler thread, shutdown with CASes in flight ends every claim once, and a second pool on
 * the same backend (which cannot attach) is served too, also after the first one stopped.
 * The whole pool suite also runs against this fake in driven mode (the *_driven tests). */
#include "pool_fixture.h"

#include <podclaim/podclaim.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static pthread_t cb_thread;
static atomic_int cb_other_thread; /* callbacks on another thread than the first one's */

static void on_result_thread(pc_claim *c, const pc_claim_result *r, void *arg)
{
    static atomic_int first = 0;
    if (atomic_exchange(&first, 1) == 0)
        cb_thread = pthread_self();
    else if (!pthread_equal(cb_thread, pthread_self()))
        atomic_fetch_add(&cb_other_thread, 1);
    on_result(c, r, arg);
}

static void enqueue_cb(pc_pool *p, int i)
{
    pc_claim_init(&C[i], 0, on_result_thread, NULL);
    snprintf(ids[i], sizeof(ids[i]), "c%d", i);
    C[i].id = ids[i];
    int err = pc_pool_enqueue(p, &C[i]);
    cr_assert_eq(err, 0, "enqueue claim %d: %s", i, pc_strerror(err));
}

/* Offer idle pod "<prefix>-<i>" to p. */
static void offer_to(pc_pool *p, const char *prefix, int i)
{
    char name[32];
    snprintf(name, sizeof(name), "%s-%d", prefix, i);
    pc_pod_ref pod = {.namespace_ = "ns", .name = name, .uid = "u", .resource_version = "1"};
    cr_assert_eq(pc_pool_offer_idle(p, &pod), 0);
}

static bool scheduler_asleep(void)
{
    return fake_drive_stats_get(&F).sleeping > 0;
}

Test(pool_drive, producers_wake_a_scheduler_asleep_in_the_backends_wait, .fini = teardown_pool,
     .timeout = 30)
{
    setup_pool(false, (pc_pool_config){0});
    fake_drive(&F);
    start();
    for (int round = 0; round < 20; round++) {
        /* Asleep in the backend's wait (no timer: no deadline), not on the futex: only a
         * wake through the backend can bring it back. */
        cr_assert(PC_TEST_WAIT_UNTIL(scheduler_asleep(), 5000), "round %d: the scheduler sleeps",
                  round);
        if (round % 2)
            offer_to(P, "pod", round); /* the pod first, then the claim */
        enqueue_cb(P, round);
        if (round % 2 == 0)
            offer_to(P, "pod", round);
        wait_results(round + 1);
        cr_assert_eq(R.res[round].status, PC_CLAIM_OK, "round %d", round);
    }
    fake_drive_stats s = fake_drive_stats_get(&F);
    cr_assert_eq(s.attaches, 1);
    cr_assert(s.attached);
    cr_assert_eq(s.reported, 20, "every CAS was reported by the backend's wait");
    cr_assert_eq(s.off_driver, 0, "and on the attached thread");
    cr_assert_eq(atomic_load(&cb_other_thread), 0);
    pc_pool_shutdown(P);
    s = fake_drive_stats_get(&F);
    cr_assert_eq(s.detaches, 1, "shutdown gives the loop back");
    cr_assert(!s.attached);
}

static void *shutdown_thread(void *arg)
{
    pc_pool_shutdown(arg);
    return NULL;
}

#define INFLIGHT 32

Test(pool_drive, shutdown_with_cas_calls_in_flight_ends_every_claim_once, .fini = teardown_pool,
     .timeout = 30)
{
    setup_pool(true, (pc_pool_config){.max_inflight = INFLIGHT}); /* CASes held by the test */
    fake_drive(&F);
    start();
    for (int i = 0; i < INFLIGHT; i++) {
        offer_to(P, "pod", i);
    }
    for (int i = 0; i < INFLIGHT + 8; i++) /* 8 wait for a pod */
        enqueue_cb(P, i);
    wait_started(INFLIGHT);
    cr_assert(PC_TEST_WAIT_UNTIL(scheduler_asleep(), 5000));
    pthread_t t;
    pthread_create(&t, NULL, shutdown_thread, P);
    /* The 8 waiting ones end SHUTDOWN at once; the ones in flight when their CAS reports. */
    wait_results(8);
    for (int i = 0; i < INFLIGHT; i++)
        fake_complete(&F, i, i % 2 ? PC_CAS_CONFLICT : PC_CAS_WON);
    pthread_join(t, NULL);
    cr_assert_eq(results(), INFLIGHT + 8);
    for (int i = 0; i < INFLIGHT + 8; i++) {
        cr_assert_eq(R.calls[i], 1, "claim %d: %d callbacks", i, R.calls[i]);
        pc_claim_status want = PC_CLAIM_SHUTDOWN;
        for (int k = 0; k < INFLIGHT; k++) {
            fake_cas c = fake_get(&F, k);
            if (k % 2 == 0 && strcmp(c.claim_id, ids[i]) == 0)
                want = PC_CLAIM_OK;
        }
        cr_assert_eq(R.res[i].status, want, "claim %d: %s", i,
                     pc_claim_status_name(R.res[i].status));
    }
    fake_drive_stats s = fake_drive_stats_get(&F);
    cr_assert_eq(s.reported, INFLIGHT);
    cr_assert_eq(s.off_driver, 0);
    cr_assert_eq(s.detaches, 1);
}

Test(pool_drive, a_second_pool_on_the_backend_is_served_by_the_attached_one_and_after_it,
     .fini = teardown_pool, .timeout = 30)
{
    setup_pool(false, (pc_pool_config){0});
    fake_drive(&F);
    pc_pool_config cb = {.namespace_ = "ns", .name = "b"};
    pc_pool *b = NULL;
    cr_assert_eq(pc_pool_new(&cb, &F.base, &b), 0);
    start();
    cr_assert(PC_TEST_WAIT_UNTIL(fake_drive_stats_get(&F).attaches == 1, 5000));
    cr_assert_eq(pc_pool_start(b), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(fake_drive_stats_get(&F).refused == 1, 5000),
              "the second pool does not attach: one thread runs the loop");
    /* a: claims 0..49 on pods a-*, b: claims 100..149 on pods b-*; b's CASes are started on
     * b's thread and reported by a's wait. */
    for (int i = 0; i < 50; i++) {
        enqueue_cb(P, i);
        offer_to(P, "a", i);
        pc_claim_init(&C[100 + i], 0, on_result, NULL);
        cr_assert_eq(pc_pool_enqueue(b, &C[100 + i]), 0);
        offer_to(b, "b", i);
    }
    wait_results(100);
    fake_drive_stats s = fake_drive_stats_get(&F);
    cr_assert_eq(s.reported, 100, "both pools' CASes were reported by the attached wait");
    cr_assert_eq(s.off_driver, 0);
    /* The attached pool stops first: b's CASes are then answered without it. */
    pc_pool_shutdown(P);
    cr_assert_eq(fake_drive_stats_get(&F).detaches, 1);
    for (int i = 50; i < 60; i++) {
        pc_claim_init(&C[100 + i], 0, on_result, NULL);
        cr_assert_eq(pc_pool_enqueue(b, &C[100 + i]), 0);
        offer_to(b, "b", i);
    }
    wait_results(110);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(R.res[i].status, PC_CLAIM_OK, "a's claim %d", i);
    for (int i = 100; i < 160; i++)
        cr_assert_eq(R.res[i].status, PC_CLAIM_OK, "b's claim %d", i);
    for (int i = 0; i < MAXC; i++)
        cr_assert_leq(R.calls[i], 1, "claim %d: %d callbacks", i, R.calls[i]);
    pc_pool_free(b);
}

/* A backend that wraps another (podclaimd's timing layer, bench_kube's latency probe) and
 * passes the loop hooks through with pc_backend_wrap: the pool still runs the inner
 * backend's loop on its scheduler thread, and every CAS goes through the wrapper. */
static atomic_int wrapped_starts;

static int counting_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                              void *token)
{
    pc_backend_wrapper *w = b->impl;
    atomic_fetch_add(&wrapped_starts, 1);
    return w->inner->cas_start(w->inner, req, done, token);
}

Test(pool_drive, a_wrapping_backend_hands_the_loop_through_to_the_inner_one, .fini = teardown_pool,
     .timeout = 30)
{
    setup_pool(false, (pc_pool_config){0}); /* P, never started: the wrapped pool is the test's */
    pc_backend_wrapper w = {.iface = {.cas_start = counting_cas_start, .impl = &w}};
    pc_backend_wrap(&w, &F.base);
    cr_assert(!w.iface.attach && !w.iface.wait && !w.iface.wake && !w.iface.detach,
              "an inner backend without a loop: the wrapper has none either");
    fake_drive(&F);
    pc_backend_wrap(&w, &F.base);
    cr_assert_eq(w.inner, &F.base);
    pc_pool_config cw = {.namespace_ = "ns", .name = "wrapped"};
    pc_pool *wp = NULL;
    cr_assert_eq(pc_pool_new(&cw, &w.iface, &wp), 0);
    cr_assert_eq(pc_pool_start(wp), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(fake_drive_stats_get(&F).attaches == 1, 5000),
              "the pool attached to the inner backend through the wrapper");
    for (int i = 0; i < 20; i++) {
        enqueue_cb(wp, i);
        offer_to(wp, "w", i);
    }
    wait_results(20);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(R.res[i].status, PC_CLAIM_OK, "claim %d", i);
    fake_drive_stats s = fake_drive_stats_get(&F);
    cr_assert_eq(atomic_load(&wrapped_starts), 20, "every CAS went through the wrapper");
    cr_assert_eq(s.reported, 20, "and was reported by the inner backend's wait");
    cr_assert_eq(s.off_driver, 0, "on the scheduler thread");
    pc_pool_shutdown(wp);
    cr_assert_eq(fake_drive_stats_get(&F).detaches, 1, "shutdown gives the loop back");
    pc_pool_free(wp);
}
