/* A pool's threads over its life: idle means asleep (no CPU), shutdown answers every claim
 * however it races with enqueue, cancellation wins over every waiting state.
 * Uses the controllable fake backend (tests/core/fake_backend.h). */
#include "pool_fixture.h"

#include <podclaim/podclaim.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* An idle pool's threads sleep: in a 300 ms window they may wake a few times (timers),
 * never run. A spinning thread burns the whole window, or at least a large share of it on
 * a loaded 2-core machine; 50 ms separates the two with a wide margin either way. */
#define IDLE_WINDOW_MS 300
#define IDLE_CPU_MAX_NS (50 * 1000000LL)

static void assert_idle(const char *when)
{
    int64_t used = cpu_ns_during_sleep(IDLE_WINDOW_MS);
    cr_assert_lt(used, IDLE_CPU_MAX_NS, "%s: the pool used %.1f ms of CPU in %d ms idle", when,
                 (double)used / 1e6, IDLE_WINDOW_MS);
}

Test(pool_lifecycle, an_expired_reservation_without_a_resync_hook_leaves_the_pool_asleep,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.reservation_ttl_ns = 20 * 1000000LL}); /* no hook */
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_reservations_expired_total") == 1, 5000),
              "the reservation expires");
    assert_idle("after the expiry");
}

static atomic_int resyncs;
static void count_resync(void *arg)
{
    (void)arg;
    atomic_fetch_add(&resyncs, 1);
}

static void *shutdown_thread(void *arg)
{
    pc_pool_shutdown(arg);
    return NULL;
}

Test(pool_lifecycle, a_shutdown_waiting_for_a_cas_leaves_the_pool_asleep, .fini = teardown_pool,
     .timeout = 20)
{
    /* A resync period far shorter than the wait: its due time passes during the drain. */
    setup_pool(true, (pc_pool_config){.resync = count_resync, .resync_period_ns = 5 * 1000000LL});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    enqueue(1, 0); /* waits for a pod: the drain answers it SHUTDOWN at once */
    pthread_t t;
    pthread_create(&t, NULL, shutdown_thread, P);
    wait_results(1);
    cr_assert_eq(R.res[1].status, PC_CLAIM_SHUTDOWN);
    int64_t used = cpu_ns_during_sleep(IDLE_WINDOW_MS);
    fake_complete(&F, 0, PC_CAS_WON);
    pthread_join(t, NULL);
    cr_assert_lt(used, IDLE_CPU_MAX_NS,
                 "draining, one CAS in flight: the pool used %.1f ms of CPU in %d ms idle",
                 (double)used / 1e6, IDLE_WINDOW_MS);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
}
