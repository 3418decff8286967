/* A CAS whose answer was lost but that the server applied: the informer shows the pod
 * claimed with the claim's id (pc_pool_observe_claimed) and the claim ends OK with that pod,
 * exactly once, without a second pod. The fake backend holds every CAS (manual mode), so a
 * "timeout" is a RETRYABLE the test answers; retries back off for an hour unless a test needs
 * them, so nothing but the observation can end a claim. */
#include "pool_fixture.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#define HOUR (3600 * 1000000000LL)

static void observe_claimed(const char *pod, const char *rv, const char *id)
{
    pc_pod_ref ref = {.namespace_ = "ns", .name = pod, .uid = "u", .resource_version = rv};
    int err = pc_pool_observe_claimed(P, &ref, id);
    cr_assert_eq(err, 0, "observe_claimed %s: %s", pod, pc_strerror(err));
}

static void assert_ok_on(int i, const char *pod, const char *rv)
{
    cr_assert_eq(R.calls[i], 1, "claim %d: %d callbacks", i, R.calls[i]);
    cr_assert_eq(R.res[i].status, PC_CLAIM_OK, "claim %d ended %s: %s", i,
                 pc_claim_status_name(R.res[i].status), R.res[i].error);
    cr_assert_str_eq(R.res[i].pod_name, pod);
    cr_assert_str_eq(R.res[i].resource_version, rv, "the version the informer showed");
    cr_assert_str_eq(R.res[i].claim_id, ids[i]);
}

Test(pool_recognize, a_timed_out_cas_the_server_applied_ends_the_backing_off_claim_ok,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = HOUR, .retry_limit = 3});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    offer("pod-b", "1");
    wait_started(1);
    cr_assert_str_eq(fake_get(&F, 0).pod, "pod-a");
    fake_complete(&F, 0, PC_CAS_RETRYABLE); /* the PATCH timed out ... */
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).inflight_cas == 0 &&
                                         pc_pool_snapshot(P).idle_ready == 2,
                                 5000),
              "the claim backs off, pod-a is idle again");
    observe_claimed("pod-a", "7", "c0"); /* ... but the server applied it */
    wait_results(1);
    assert_ok_on(0, "pod-a", "7");
    cr_assert_eq(fake_started(&F), 1, "no second CAS");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 5000),
              "pod-a withdrawn, pod-b untouched: idle %lu",
              (unsigned long)pc_pool_snapshot(P).idle_ready);
    cr_assert_eq(metric("podclaim_claims_recognized_total"), 1);
    cr_assert_eq(pc_pool_snapshot(P).queue_len, 0);
}

Test(pool_recognize, the_watch_event_before_the_timeout_ends_the_claim_ok_when_the_cas_reports,
     .fini = teardown_pool, .timeout = 20)
{
    /* The usual order of a timeout: the server applies the PATCH, the watch event arrives,
     * and only later does the client give up on the answer. */
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = HOUR});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    offer("pod-b", "1");
    wait_started(1);
    observe_claimed("pod-a", "7", "c0");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 1, 5000));
    cr_assert_eq(results(), 0, "the CAS in flight is not touched");
    fake_complete(&F, 0, PC_CAS_RETRYABLE);
    wait_results(1);
    assert_ok_on(0, "pod-a", "7");
    cr_assert_eq(fake_started(&F), 1, "no second CAS");
    cr_assert_eq(pc_pool_snapshot(P).idle_ready, 1, "pod-b stays idle");
}

Test(pool_recognize, a_won_cas_whose_watch_event_came_first_is_one_ok_result, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(true, (pc_pool_config){0});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    observe_claimed("pod-a", "2", "c0");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 1, 5000));
    fake_complete(&F, 0, PC_CAS_WON);
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_str_eq(R.res[0].pod_name, "pod-a");
    cr_assert_eq(metric("podclaim_claims_recognized_total"), 0, "an ordinary win");
    /* and the watch event after the win (the normal order) finds nothing */
    observe_claimed("pod-a", "3", "c0");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 2, 5000));
    cr_assert_eq(results(), 1);
    cr_assert_eq(R.calls[0], 1);
}

Test(pool_recognize, a_later_cas_on_another_pod_that_loses_leaves_the_claim_on_the_first,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = 1000000});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    fake_complete(&F, 0, PC_CAS_RETRYABLE);
    /* The retry must go elsewhere: pod-a is gone from the ready-queue (say, deleted and
     * recreated: the informer withdrew it), pod-b is offered. */
    pc_pod_ref a = {.namespace_ = "ns", .name = "pod-a"};
    cr_assert_eq(pc_pool_withdraw(P, &a), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 0, 5000));
    offer("pod-b", "1");
    wait_started(2);
    cr_assert_str_eq(fake_get(&F, 1).pod, "pod-b");
    observe_claimed("pod-a", "9", "c0"); /* the first PATCH was applied after all */
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 2, 5000));
    cr_assert_eq(results(), 0, "a CAS in flight is not touched");
    fake_complete(&F, 1, PC_CAS_CONFLICT);
    wait_results(1);
    assert_ok_on(0, "pod-a", "9");
    cr_assert_eq(fake_started(&F), 2, "no third CAS");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).reserved == 1, 5000),
              "pod-b stays reserved after its 409 (its version moved)");
}

Test(pool_recognize, a_later_cas_that_wins_another_pod_keeps_it_and_counts_the_orphan,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = 1000000});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    fake_complete(&F, 0, PC_CAS_RETRYABLE);
    pc_pod_ref a = {.namespace_ = "ns", .name = "pod-a"};
    cr_assert_eq(pc_pool_withdraw(P, &a), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 0, 5000));
    offer("pod-b", "1");
    wait_started(2);
    observe_claimed("pod-a", "9", "c0");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 2, 5000));
    fake_complete(&F, 1, PC_CAS_WON);
    wait_results(1);
    cr_assert_eq(R.calls[0], 1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_str_eq(R.res[0].pod_name, "pod-b", "the won CAS names its pod");
    cr_assert_eq(metric("podclaim_pods_orphaned_total"), 1);
    cr_assert_eq(metric("podclaim_claims_recognized_total"), 0);
}

Test(pool_recognize, an_unknown_id_or_another_claims_id_only_withdraws_the_pod,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = HOUR});
    start();
    enqueue(0, 0);
    enqueue(1, 0);
    offer("pod-a", "1");
    wait_started(1);
    fake_complete(&F, 0, PC_CAS_RETRYABLE); /* c0 backs off */
    offer("pod-b", "1");
    wait_started(2); /* c1 on pod-a (front again), or pod-b */
    observe_claimed("pod-z", "5", "someone-else");
    observe_claimed("pod-b", "5", "c1-not-quite");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 2, 5000));
    cr_assert_eq(results(), 0);
    /* c1 never had a RETRYABLE answer: only the pod its CAS is on can name it */
    const char *c1_pod = fake_get(&F, 1).pod;
    const char *other = strcmp(c1_pod, "pod-a") == 0 ? "pod-b" : "pod-a";
    observe_claimed(other, "6", "c1");
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_withdrawals_total") == 3, 5000));
    fake_complete(&F, 1, PC_CAS_WON);
    wait_results(1);
    cr_assert_str_eq(R.res[1].pod_name, c1_pod);
    cr_assert_eq(metric("podclaim_pods_orphaned_total"), 0);
    cr_assert_eq(R.calls[0], 0, "c0 still backs off");
}

Test(pool_recognize, observe_claimed_checks_its_arguments, .fini = teardown_pool)
{
    setup_pool(true, (pc_pool_config){0});
    pc_pod_ref pod = {.namespace_ = "ns", .name = "pod-a", .resource_version = "1"};
    cr_assert_eq(pc_pool_observe_claimed(P, &pod, NULL), -EINVAL);
    cr_assert_eq(pc_pool_observe_claimed(P, &pod, ""), -EINVAL);
    char long_id[PC_CLAIM_ID_MAX + 1];
    memset(long_id, 'x', PC_CLAIM_ID_MAX);
    long_id[PC_CLAIM_ID_MAX] = '\0';
    cr_assert_eq(pc_pool_observe_claimed(P, &pod, long_id), -EINVAL);
    pc_pod_ref noname = {.namespace_ = "ns", .resource_version = "1"};
    cr_assert_eq(pc_pool_observe_claimed(P, &noname, "c0"), -EINVAL);
    cr_assert_eq(pc_pool_observe_claimed(P, &pod, "c0"), 0, "a pool not started takes it");
}
