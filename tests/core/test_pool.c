/* Behaviour of one pool: ordering, aging, preemption, backpressure, deadlines, cancel,
 * shutdown, CAS outcomes and reservations. Uses the controllable fake backend. */
#include "pool_fixture.h"

#include <podclaim/podclaim.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(pool, serves_higher_priority_first_and_fifo_inside_a_level, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    int prios[] = {3, 1, 5, 0, 2, 1, 3, 0};
    for (int i = 0; i < 8; i++)
        enqueue(i, prios[i]);
    wait_queue_len(8);
    serve_all(8);
    int expect[] = {3, 7, 1, 5, 4, 0, 6, 2};
    for (int k = 0; k < 8; k++)
        cr_assert_str_eq(fake_get(&F, k).claim_id, ids[expect[k]], "dispatch #%d: expected %s", k,
                         ids[expect[k]]);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(R.res[i].status, PC_CLAIM_OK, "claim %d: %s", i,
                     pc_claim_status_name(R.res[i].status));
}

Test(pool, promotes_an_old_low_priority_claim_over_newer_higher_ones, .fini = teardown_pool,
     .timeout = 20)
{
    /* No waiting on the clock: claim 0 says it was enqueued two and a half periods ago, so
     * it is at level 3 (5 - 2) and stays ahead of the level-4 claims however slow the run
     * (they could age too, but never past a claim that is older by more than a period). */
    const int64_t period = 3600 * 1000000000LL;
    setup_pool(false, (pc_pool_config){.promote_after_ns = period});
    start();
    pc_claim_init(&C[0], 5, on_result, NULL);
    C[0].id = "c0";
    C[0].enqueued_at_ns = pc_now_ns() - period * 5 / 2;
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), 0);
    enqueue(1, 4);
    enqueue(2, 4);
    wait_queue_len(3);
    serve_all(3);
    cr_assert_str_eq(fake_get(&F, 0).claim_id, "c0", "the aged claim goes first");
    cr_assert_str_eq(fake_get(&F, 1).claim_id, "c1");
    cr_assert_str_eq(fake_get(&F, 2).claim_id, "c2");
    cr_assert_geq(metric("podclaim_promotions_total"), 2);
}

Test(pool, without_aging_the_low_priority_claim_waits, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.promote_after_ns = 3600 * 1000000000LL});
    start();
    enqueue(0, 5);
    enqueue(1, 4);
    wait_queue_len(2);
    serve_all(2);
    cr_assert_str_eq(fake_get(&F, 0).claim_id, "c1");
    cr_assert_str_eq(fake_get(&F, 1).claim_id, "c0");
}

Test(pool, a_later_high_priority_claim_preempts_an_earlier_low_one, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    enqueue(0, 4);
    wait_queue_len(1);
    enqueue(1, 0);
    wait_queue_len(2);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.order[0], 1, "the high-priority claim is served by the first pod");
    cr_assert_str_eq(R.res[1].pod_name, "pod-a");
    offer("pod-b", "1");
    wait_results(2);
    cr_assert_str_eq(R.res[0].pod_name, "pod-b");
}

Test(pool, full_inbox_refuses_and_never_calls_back, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.inbox_capacity = 4});
    for (int i = 0; i < 4; i++)
        enqueue(i, 2);
    pc_claim_init(&C[4], 2, on_result, NULL);
    cr_assert_eq(pc_pool_enqueue(P, &C[4]), -EAGAIN, "the fifth claim is refused");
    cr_assert_eq(pc_pool_snapshot(P).queue_len, 4);
    cr_assert_eq(metric("podclaim_enqueue_rejected_total"), 1);
    start();
    serve_all(4);
    pc_pool_shutdown(P);
    cr_assert_eq(R.n, 4, "exactly the accepted claims were answered");
    cr_assert_eq(R.calls[4], 0, "the refused claim's callback never runs");
}

Test(pool, enqueue_without_callback_is_invalid, .fini = teardown_pool)
{
    setup_pool(false, (pc_pool_config){0});
    pc_claim c;
    pc_claim_init(&c, 0, NULL, NULL);
    cr_assert_eq(pc_pool_enqueue(P, &c), -EINVAL);
}

Test(pool, deadline_while_waiting_ends_the_claim, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    pc_claim_init(&C[0], 0, on_result, NULL);
    C[0].deadline_ns = pc_now_ns() + 30 * 1000000LL;
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), 0);
    int64_t enqueued_by = pc_now_ns();
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_DEADLINE, "got %s",
                 pc_claim_status_name(R.res[0].status));
    /* not before the deadline; the latency counts from inside the enqueue, which a slow
     * machine (TSan in CI) may reach a few ms after the deadline was set: bound it from the
     * enqueue's return, not from the 30 ms */
    cr_assert_geq(R.res[0].latency_ns, C[0].deadline_ns - enqueued_by);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).queue_len == 0, 2000));
}

Test(pool, cancel_while_waiting_ends_the_claim, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    enqueue(0, 1);
    enqueue(1, 1);
    wait_queue_len(2);
    pc_claim_cancel(&C[0]);
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_CANCELLED);
    offer("pod-a", "1");
    wait_results(2);
    cr_assert_eq(R.res[1].status, PC_CLAIM_OK, "the other claim is unaffected");
}

/* In flight: the CAS is already sent; if it loses, the claim ends instead of retrying. */
Test(pool, deadline_while_in_flight_ends_the_claim_when_the_cas_loses, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(true, (pc_pool_config){0});
    start();
    offer("pod-a", "1");
    offer("pod-b", "1");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 2, 5000));
    /* The deadline must pass after the dispatch: start short (fast when the machine is),
     * and on a machine too slow to dispatch within it (the claim ends DEADLINE without a
     * CAS) try again with four times as long. */
    int i = 0;
    for (int64_t budget = 20 * 1000000LL;; budget *= 4, i++) {
        cr_assert_lt(i, 6, "no dispatch within %lld ms", (long long)(budget / 1000000));
        pc_claim_init(&C[i], 0, on_result, NULL);
        C[i].deadline_ns = pc_now_ns() + budget;
        cr_assert_eq(pc_pool_enqueue(P, &C[i]), 0);
        cr_assert(PC_TEST_WAIT_UNTIL(fake_started(&F) == 1 || results() == i + 1, 5000));
        if (fake_started(&F) == 1)
            break;
        cr_assert_eq(R.res[i].status, PC_CLAIM_DEADLINE);
    }
    cr_assert(PC_TEST_WAIT_UNTIL(pc_now_ns() > C[i].deadline_ns, 10000));
    fake_complete(&F, 0, PC_CAS_CONFLICT);
    wait_results(i + 1);
    cr_assert_eq(R.res[i].status, PC_CLAIM_DEADLINE, "got %s",
                 pc_claim_status_name(R.res[i].status));
    cr_assert_eq(fake_started(&F), 1, "no second CAS after the deadline");
}

Test(pool, cancel_while_in_flight_keeps_a_won_pod, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){0});
    start();
    enqueue(0, 0);
    enqueue(1, 0);
    offer("pod-a", "1");
    offer("pod-b", "1");
    wait_started(2);
    pc_claim_cancel(&C[0]);
    pc_claim_cancel(&C[1]);
    fake_complete(&F, 0, PC_CAS_WON);
    fake_complete(&F, 1, PC_CAS_CONFLICT);
    wait_results(2);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK, "a won pod is the caller's: got %s",
                 pc_claim_status_name(R.res[0].status));
    cr_assert_eq(R.res[1].status, PC_CLAIM_CANCELLED, "a lost CAS after cancel: got %s",
                 pc_claim_status_name(R.res[1].status));
}

static void *shutdown_thread(void *arg)
{
    pc_pool_shutdown(arg);
    return NULL;
}

Test(pool, shutdown_drains_with_exactly_one_result_per_claim, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){0});
    start();
    for (int i = 0; i < 20; i++)
        enqueue(i, i % 6);
    offer("pod-a", "1");
    offer("pod-b", "1");
    wait_started(2);
    pthread_t t;
    pthread_create(&t, NULL, shutdown_thread, P);
    /* The 18 waiting claims end at once; the two in flight wait for their CAS. */
    wait_results(18);
    pc_claim late;
    pc_claim_init(&late, 0, on_result, NULL);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_enqueue(P, &late) == -ESHUTDOWN, 1000));
    fake_complete(&F, 0, PC_CAS_WON);
    fake_complete(&F, 1, PC_CAS_CONFLICT);
    pthread_join(t, NULL);
    cr_assert_eq(R.n, 20);
    int ok = 0, shut = 0;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(R.calls[i], 1, "claim %d answered %d times", i, R.calls[i]);
        ok += R.res[i].status == PC_CLAIM_OK;
        shut += R.res[i].status == PC_CLAIM_SHUTDOWN;
    }
    cr_assert_eq(ok, 1, "the won CAS reports OK");
    cr_assert_eq(shut, 19);
    pc_snapshot s = pc_pool_snapshot(P);
    cr_assert_eq(s.queue_len + s.inflight_cas, 0);
}

Test(pool, shutdown_of_a_pool_never_started_answers_its_claims, .fini = teardown_pool)
{
    setup_pool(false, (pc_pool_config){0});
    enqueue(0, 0);
    enqueue(1, 3);
    pc_pool_shutdown(P);
    cr_assert_eq(R.n, 2);
    cr_assert_eq(R.res[0].status, PC_CLAIM_SHUTDOWN);
    cr_assert_eq(R.res[1].status, PC_CLAIM_SHUTDOWN);
}

static pc_cas_outcome conflict_on_pod_a(const pc_cas_request *req, void *arg)
{
    (void)arg;
    return strcmp(req->pod.name, "pod-a") == 0 ? PC_CAS_CONFLICT : PC_CAS_WON;
}

Test(pool, conflict_serves_the_claim_from_the_next_pod, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    F.decide = conflict_on_pod_a;
    enqueue(0, 2);
    offer("pod-a", "1");
    offer("pod-b", "1");
    start();
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_str_eq(R.res[0].pod_name, "pod-b");
    cr_assert_eq(R.res[0].attempts, 2);
}

static pc_cas_outcome always(const pc_cas_request *req, void *arg)
{
    (void)req;
    return (pc_cas_outcome)(intptr_t)arg;
}

Test(pool, retryable_failures_retry_then_error, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.retry_limit = 2, .retry_backoff_ns = 1000000});
    F.decide = always;
    F.decide_arg = (void *)(intptr_t)PC_CAS_RETRYABLE;
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_ERROR, "got %s", pc_claim_status_name(R.res[0].status));
    cr_assert_eq(R.res[0].attempts, 3, "1 try + 2 retries");
    cr_assert(strstr(R.res[0].error, "retries") != NULL, "error says why: %s", R.res[0].error);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 2000),
              "the untouched pod is idle again");
}

Test(pool, invalid_options_reject_the_claim_and_keep_the_pod, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    F.decide = always;
    F.decide_arg = (void *)(intptr_t)PC_CAS_INVALID;
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_REJECTED);
    cr_assert_eq(R.res[0].attempts, 1, "no retry");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 2000));
}

Test(pool, a_stale_reoffer_of_a_reserved_pod_is_ignored_until_a_new_version, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0}); /* reservations hold for the test (fixture) */
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    /* Gauges are published at the end of a scheduler round, maybe after the callback. */
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).reserved == 1, 2000));
    /* The informer has not seen the claim yet and offers the old version again. */
    enqueue(1, 0);
    offer("pod-a", "1");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_offers_stale_total") == 1, 2000));
    cr_assert_eq(fake_started(&F), 1, "the stale version is not dispatched");
    /* A new version (the pod was recycled and is idle again) releases it. */
    offer("pod-a", "7");
    wait_results(2);
    cr_assert_eq(R.res[1].status, PC_CLAIM_OK);
    cr_assert_str_eq(fake_get(&F, 1).rv, "7");
}

Test(pool, a_reservation_expires_after_its_ttl, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.reservation_ttl_ns = 50 * 1000000LL});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    /* Wait on the counter, not the gauge: the gauge may not even show the reservation yet. */
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_reservations_expired_total") == 1, 2000),
              "the TTL releases it");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).reserved == 0, 2000));
    enqueue(1, 0);
    offer("pod-a", "1");
    wait_results(2);
    cr_assert_str_eq(fake_get(&F, 1).rv, "1", "after the TTL the version is selectable again");
}

Test(pool, a_withdrawn_pod_is_not_dispatched, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    offer("pod-a", "1");
    offer("pod-b", "1");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 2, 2000));
    pc_pod_ref a = {.namespace_ = "ns", .name = "pod-a"};
    cr_assert_eq(pc_pool_withdraw(P, &a), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 2000));
    enqueue(0, 0);
    wait_results(1);
    cr_assert_str_eq(R.res[0].pod_name, "pod-b");
}

Test(pool, a_pod_is_queued_at_most_once, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    offer("pod-a", "1");
    offer("pod-a", "1");
    offer("pod-a", "2");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_offers_total") == 3, 2000));
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 2000));
    cr_assert_eq(pc_pool_snapshot(P).idle_ready, 1, "and stays 1");
    enqueue(0, 0);
    wait_results(1);
    cr_assert_str_eq(fake_get(&F, 0).rv, "2", "the newest version seen is used");
}

Test(pool, offers_without_a_version_are_invalid, .fini = teardown_pool)
{
    setup_pool(false, (pc_pool_config){0});
    pc_pod_ref pod = {.namespace_ = "ns", .name = "x"};
    cr_assert_eq(pc_pool_offer_idle(P, &pod), -EINVAL);
}

typedef struct claimer {
    pc_pool *p;
    int rc;
    pc_claim_result r;
} claimer;

static void *claim_thread(void *arg)
{
    claimer *c = arg;
    pc_kv img = {"main", "python:3.12"};
    pc_claim_opts o = {.images = &img, .n_images = 1};
    c->rc = pc_pool_claim(c->p, &o, 1, 5 * 1000000000LL, &c->r);
    return NULL;
}

Test(pool, blocking_claim_returns_the_pod_or_the_deadline, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    pc_claim_result r;
    cr_assert_eq(pc_pool_claim(P, NULL, 0, 20 * 1000000LL, &r), 0);
    cr_assert_eq(r.status, PC_CLAIM_DEADLINE);
    claimer c = {.p = P};
    pthread_t t;
    pthread_create(&t, NULL, claim_thread, &c);
    wait_queue_len(1);
    offer("pod-a", "1");
    pthread_join(t, NULL);
    cr_assert_eq(c.rc, 0);
    cr_assert_eq(c.r.status, PC_CLAIM_OK);
    cr_assert_str_eq(c.r.pod_namespace, "ns");
    cr_assert_str_eq(c.r.pod_name, "pod-a");
    cr_assert_str_neq(c.r.resource_version, "");
}

static atomic_int resyncs;
static void count_resync(void *arg)
{
    (void)arg;
    atomic_fetch_add(&resyncs, 1);
}

Test(pool, notify_idle_runs_the_resync_hook, .fini = teardown_pool, .timeout = 20)
{
    atomic_store(&resyncs, 0);
    setup_pool(false, (pc_pool_config){.resync = count_resync, .resync_period_ns = -1});
    start();
    pc_pool_notify_idle(P);
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load(&resyncs) == 1, 2000));
}

static atomic_int conflicts_left;
static pc_cas_outcome conflict_once(const pc_cas_request *req, void *arg)
{
    (void)req;
    (void)arg;
    return atomic_fetch_sub(&conflicts_left, 1) > 0 ? PC_CAS_CONFLICT : PC_CAS_WON;
}

/* A 409 that no new version follows leaves the pod reserved; when the reservation
 * expires the pool asks the informer (the resync hook) to re-offer it at once. */
static pc_pool *resync_pool;
static void reoffer_pod_a(void *arg)
{
    (void)arg;
    atomic_fetch_add(&resyncs, 1);
    pc_pod_ref pod = {.namespace_ = "ns", .name = "pod-a", .resource_version = "1"};
    pc_pool_offer_idle(resync_pool, &pod);
}

Test(pool, an_expired_reservation_resyncs_and_the_pod_serves_again, .fini = teardown_pool,
     .timeout = 20)
{
    atomic_store(&resyncs, 0);
    setup_pool(false, (pc_pool_config){.resync = reoffer_pod_a,
                                       .resync_period_ns = 3600 * 1000000000LL,
                                       .reservation_ttl_ns = 50 * 1000000LL});
    resync_pool = P;
    F.decide = conflict_once; /* spurious: the pod stays idle at version 1 */
    atomic_store(&conflicts_left, 1);
    enqueue(0, 0);
    offer("pod-a", "1");
    start();
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK, "got %s", pc_claim_status_name(R.res[0].status));
    cr_assert_str_eq(R.res[0].pod_name, "pod-a");
    cr_assert_eq(R.res[0].attempts, 2);
    cr_assert_geq(atomic_load(&resyncs), 1);
    cr_assert_geq(metric("podclaim_reservations_expired_total"), 1);
}

Test(pool, metrics_render_with_the_pool_labels, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.team = "ml", .user = "ann", .env = "prod"});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    char small[8];
    size_t need = pc_pool_metrics_render(P, small, sizeof(small));
    cr_assert_gt(need, sizeof(small));
    char *buf = malloc(need + 1);
    cr_assert_eq(pc_pool_metrics_render(P, buf, need + 1), need);
    cr_assert(strstr(buf, "podclaim_claims_total{pool=\"pool\",namespace=\"ns\",team=\"ml\","
                          "user=\"ann\",env=\"prod\",result=\"ok\"} 1\n") != NULL,
              "%s", buf);
    cr_assert(strstr(buf, "podclaim_dispatch_latency_seconds_count{") != NULL);
    free(buf);
}

static pc_cas_outcome gone_on_pod_a(const pc_cas_request *req, void *arg)
{
    (void)arg;
    return strcmp(req->pod.name, "pod-a") == 0 ? PC_CAS_NOT_FOUND : PC_CAS_WON;
}

Test(pool, not_found_drops_the_pod_and_serves_the_claim_from_the_next, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    F.decide = gone_on_pod_a;
    enqueue(0, 2);
    offer("pod-a", "1");
    offer("pod-b", "1");
    start();
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_str_eq(R.res[0].pod_name, "pod-b");
    cr_assert_eq(R.res[0].attempts, 2);
    /* pod-a is neither idle nor reserved: only pod-b's reservation is left */
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).reserved == 1, 5000));
    cr_assert_eq(pc_pool_snapshot(P).idle_ready, 0);
    /* and it is not stale: if it comes back at the same version, it is offered again */
    F.decide = NULL;
    enqueue(1, 2);
    offer("pod-a", "1");
    wait_results(2);
    cr_assert_str_eq(R.res[1].pod_name, "pod-a");
    cr_assert_eq(metric("podclaim_offers_stale_total"), 0);
}

Test(pool, max_inflight_caps_the_cas_calls_in_flight, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.max_inflight = 2});
    start();
    for (int i = 0; i < 5; i++)
        enqueue(i, 0);
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        offer(name, "1");
    }
    wait_started(2);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 3, 5000));
    cr_assert_eq(fake_started(&F), 2, "no third CAS while two are in flight");
    cr_assert_eq(pc_pool_snapshot(P).inflight_cas, 2);
    fake_complete(&F, 0, PC_CAS_WON);
    wait_started(3);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 2, 5000));
    cr_assert_eq(fake_started(&F), 3);
    for (int k = 1; k < 5; k++) {
        wait_started(k + 1);
        fake_complete(&F, k, PC_CAS_WON);
    }
    wait_results(5);
}

Test(pool, a_pod_withdrawn_while_its_cas_is_in_flight_is_not_requeued_after_a_retryable_error,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = 1000000});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    pc_pod_ref a = {.namespace_ = "ns", .name = "pod-a"};
    cr_assert_eq(pc_pool_withdraw(P, &a), 0); /* the informer: pod-a is no longer idle */
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 1, 5000));
    fake_complete(&F, 0, PC_CAS_RETRYABLE);
    /* the claim backs off and waits; pod-a must not come back to the ready-queue */
    wait_queue_len(1);
    offer("pod-b", "1");
    wait_started(2);
    cr_assert_str_eq(fake_get(&F, 1).pod, "pod-b",
                     "the retry goes to pod-b, not the withdrawn one");
    fake_complete(&F, 1, PC_CAS_WON);
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_eq(pc_pool_snapshot(P).idle_ready, 0);
}

Test(pool, inbox_capacity_bounds_every_waiting_claim_not_only_the_inbox, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.inbox_capacity = 4});
    start();
    for (int i = 0; i < 4; i++)
        enqueue(i, 2);
    offer("pod-a", "1");
    wait_started(1);
    wait_queue_len(3); /* taken in by the scheduler; one in flight, three waiting */
    enqueue(4, 2);     /* 4 waiting */
    pc_claim_init(&C[5], 2, on_result, NULL);
    cr_assert_eq(pc_pool_enqueue(P, &C[5]), -EAGAIN,
                 "4 claims wait for a pod: a fifth is refused however long they waited");
    cr_assert_eq(metric("podclaim_enqueue_rejected_total"), 1);
    fake_complete(&F, 0, PC_CAS_WON);
    wait_results(1);
    wait_queue_len(4);
}

/* A histogram's _sum or _count sample, as rendered. */
static double hist_value(const char *name, const char *suffix)
{
    static char buf[32768];
    pc_pool_metrics_render(P, buf, sizeof(buf));
    char key[128];
    snprintf(key, sizeof(key), "\n%s%s{", name, suffix);
    char *line = strstr(buf, key);
    cr_assert_not_null(line, "%s%s not rendered", name, suffix);
    return strtod(strchr(line, '}') + 2, NULL);
}

Test(pool, splits_the_dispatch_latency_into_inbox_and_pending_waits, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    for (int i = 0; i < 3; i++)
        enqueue(i, 0);
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_claims_enqueued_total") == 3, 5000));
    /* Not synchronisation: the claims are taken in and wait for a pod; this makes that
     * wait at least 5 ms long, so it cannot hide in the other histogram. */
    int64_t t0 = pc_now_ns();
    cr_assert(PC_TEST_WAIT_UNTIL(pc_now_ns() - t0 >= 5000000, 1000));
    serve_all(3);
    const char *in = "podclaim_inbox_wait_seconds", *pend = "podclaim_pending_wait_seconds",
               *disp = "podclaim_dispatch_latency_seconds";
    cr_assert_eq(hist_value(in, "_count"), 3);
    cr_assert_eq(hist_value(pend, "_count"), 3);
    cr_assert_eq(hist_value(disp, "_count"), 3);
    cr_assert_geq(hist_value(pend, "_sum"), 3 * 0.005, "each waited >= 5 ms for a pod");
    /* the two stages are the dispatch latency, to the ns (the same timestamps) */
    double sum = hist_value(in, "_sum") + hist_value(pend, "_sum");
    cr_assert(fabs(sum - hist_value(disp, "_sum")) < 3e-9, "inbox %.9f + pending %.9f != %.9f",
              hist_value(in, "_sum"), hist_value(pend, "_sum"), hist_value(disp, "_sum"));
}
