/* A pool's threads over its life: idle means asleep (no CPU), shutdown answers every claim
 * however it races with enqueue, cancellation wins over every waiting state.
 * Uses the controllable fake backend (tests/core/fake_backend.h). */
#include "pool_fixture.h"

#include <podclaim/podclaim.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A shutdown whose `stopping` lands after the scheduler's round has looked at it (the round
 * dispatched, as if running) and before it parks. The backend's cas_start is where that
 * window is held open: it starts the shutdown and waits until enqueue reports it (the probe
 * is refused for want of room until then: inbox_capacity 2, both claims still count), then
 * holds the CAS. The other claim waits for a pod (max_inflight 1): the drain answers it at
 * once. While stopping, the park used to count only the exit (every CAS answered, nothing
 * queued) as work, so such a claim waited for the CAS's answer, or for good when none was in
 * flight, and the shutdown with it (seen first as a hang of the enqueue-racing-shutdown test:
 * 1 run in 18, six at a time under ASan). */
static pthread_t late_shutdown;
static atomic_bool late_shutdown_started; /* release: the fields below are set */
static int probe_err;
static pc_cas_done_fn held_done;
static void *held_token;

static int start_shutdown_then_hold(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                                    void *token)
{
    (void)b, (void)req;
    held_done = done;
    held_token = token;
    pthread_create(&late_shutdown, NULL, shutdown_thread, P);
    static pc_claim probe;
    do {
        pc_claim_init(&probe, 0, on_result, NULL);
        probe_err = pc_pool_enqueue(P, &probe);
    } while (probe_err == -EAGAIN);
    atomic_store_explicit(&late_shutdown_started, true, memory_order_release);
    return 0;
}

Test(pool_lifecycle, a_shutdown_landing_between_a_round_and_its_park_answers_the_waiting_claims,
     .fini = teardown_pool, .timeout = 30)
{
    setup_pool(false, (pc_pool_config){.inbox_capacity = 2, .max_inflight = 1});
    F.base.cas_start = start_shutdown_then_hold;
    start();
    enqueue(0, 0);
    enqueue(1, 0);
    /* Taken in and pending before the pod comes, so the round's dispatch starts the CAS (a
     * lone claim and a pod taken in together start it at admission, before that check). */
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_claims_enqueued_total") == 2, 5000));
    offer("pod-a", "1");
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load(&late_shutdown_started), 5000), "the CAS started");
    cr_assert_eq(probe_err, -ESHUTDOWN);
    cr_assert(PC_TEST_WAIT_UNTIL(results() == 1, 10000),
              "the claim waiting for a pod was not answered while the CAS is in flight");
    int waiting = R.order[0];
    cr_assert_eq(R.res[waiting].status, PC_CLAIM_SHUTDOWN, "%s",
                 pc_claim_status_name(R.res[waiting].status));
    held_done(held_token, PC_CAS_WON, "2", NULL, 0);
    cr_assert(PC_TEST_WAIT_UNTIL(pthread_tryjoin_np(late_shutdown, NULL) == 0, 10000));
    cr_assert_eq(R.res[1 - waiting].status, PC_CLAIM_OK);
    cr_assert_eq(R.calls[0] + R.calls[1], 2);
}

/* ---- enqueue racing shutdown -------------------------------------------------------------- */

#define RACE_PRODUCERS 2
#define RACE_CLAIMS 8192 /* per producer and round; shutdown usually stops them far earlier */

typedef struct race {
    pc_pool *pool;
    pthread_barrier_t go;
    pc_claim *claims[RACE_PRODUCERS];
    atomic_long accepted;
    atomic_long answered;
    atomic_long twice;
} race;

static void race_cb(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)r;
    race *rc = arg;
    /* priority doubles as an "answered" mark: a second callback for one claim shows here */
    if (c->priority == -1)
        atomic_fetch_add(&rc->twice, 1);
    c->priority = -1;
    atomic_fetch_add(&rc->answered, 1);
}

typedef struct race_arg {
    race *rc;
    int index;
} race_arg;

static void *race_producer(void *arg)
{
    race_arg *a = arg;
    race *rc = a->rc;
    pthread_barrier_wait(&rc->go);
    for (int k = 0; k < RACE_CLAIMS; k++) {
        pc_claim *c = &rc->claims[a->index][k];
        pc_claim_init(c, k % PC_PRIORITY_LEVELS, race_cb, rc);
        int err = pc_pool_enqueue(rc->pool, c);
        if (err == -ESHUTDOWN)
            break;
        cr_assert_eq(err, 0, "enqueue: %s", pc_strerror(err));
        atomic_fetch_add(&rc->accepted, 1);
    }
    return NULL;
}

static void enqueue_races_shutdown(bool started, int rounds)
{
    fake_init(&F, false);
    race rc;
    for (int i = 0; i < RACE_PRODUCERS; i++)
        rc.claims[i] = calloc(RACE_CLAIMS, sizeof(pc_claim));
    for (int round = 0; round < rounds; round++) {
        pc_pool_config cfg = {.namespace_ = "ns", .name = "race"};
        cr_assert_eq(pc_pool_new(&cfg, &F.base, &rc.pool), 0);
        if (started)
            cr_assert_eq(pc_pool_start(rc.pool), 0);
        atomic_init(&rc.accepted, 0);
        atomic_init(&rc.answered, 0);
        atomic_init(&rc.twice, 0);
        pthread_barrier_init(&rc.go, NULL, RACE_PRODUCERS + 1);
        pthread_t t[RACE_PRODUCERS];
        race_arg args[RACE_PRODUCERS];
        for (int i = 0; i < RACE_PRODUCERS; i++) {
            args[i] = (race_arg){&rc, i};
            pthread_create(&t[i], NULL, race_producer, &args[i]);
        }
        pthread_barrier_wait(&rc.go);
        pc_pool_shutdown(rc.pool);
        for (int i = 0; i < RACE_PRODUCERS; i++)
            pthread_join(t[i], NULL);
        /* Every enqueue that returned 0 has its callback by the time shutdown returned (and
         * the producers stopped at -ESHUTDOWN, or at the end of their claims). */
        cr_assert_eq(atomic_load(&rc.answered), atomic_load(&rc.accepted),
                     "round %d (%s): %ld claims accepted, %ld answered", round,
                     started ? "started" : "never started", atomic_load(&rc.accepted),
                     atomic_load(&rc.answered));
        cr_assert_eq(atomic_load(&rc.twice), 0, "round %d: a claim answered twice", round);
        pthread_barrier_destroy(&rc.go);
        pc_pool_free(rc.pool);
    }
    for (int i = 0; i < RACE_PRODUCERS; i++)
        free(rc.claims[i]);
    fake_fini(&F);
}

Test(pool_lifecycle, enqueue_racing_shutdown_of_a_pool_never_started_answers_every_claim,
     .timeout = 120)
{
    enqueue_races_shutdown(false, 1000);
}

Test(pool_lifecycle, enqueue_racing_shutdown_of_a_started_pool_answers_every_claim, .timeout = 120)
{
    enqueue_races_shutdown(true, 1000);
}

/* ---- cancellation -------------------------------------------------------------------------- */

static int claim_of_cas(int k)
{
    return atoi(fake_get(&F, k).claim_id + 1); /* ids are "c<i>" */
}

/* Backing-off claims wait in the timer heap only. Their retry times (the server's
 * Retry-After, in thousands of seconds so scheduling jitter cannot reorder them) build the
 * heap [1 5 2 6 7 3]; cancelling the claims at 5, 6 and 7 in one wake-up removes entries
 * whose replacement sifts up, past slots a walk from the end has not visited yet. */
Test(pool_lifecycle, cancelling_several_backing_off_claims_at_once_cancels_each,
     .fini = teardown_pool, .timeout = 30)
{
    setup_pool(true, (pc_pool_config){.retry_backoff_ns = 1000000});
    start();
    for (int i = 0; i < 6; i++)
        enqueue(i, 0);
    char name[16];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        offer(name, "1");
    }
    wait_started(6);
    const int64_t ks = 1000LL * 1000000000LL;
    const int64_t retry_at[6] = {1 * ks, 5 * ks, 2 * ks, 6 * ks, 7 * ks, 3 * ks};
    int claim[6];
    for (int k = 0; k < 6; k++) {
        claim[k] = claim_of_cas(k);
        fake_complete_retry(&F, k, retry_at[k]);
    }
    /* All six back off (they count as queued); the pods are idle again. */
    wait_queue_len(6);
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 6, 5000));
    const int cancelled[3] = {1, 3, 4}; /* retry at 5, 6 and 7 ks */
    for (int j = 0; j < 3; j++)
        pc_claim_cancel(&C[claim[cancelled[j]]]);
    wait_results(3);
    for (int j = 0; j < 3; j++) {
        int k = cancelled[j];
        cr_assert_eq(R.calls[claim[k]], 1, "claim %d (retry at %lld ks) answered", claim[k],
                     (long long)(retry_at[k] / ks));
        cr_assert_eq(R.res[claim[k]].status, PC_CLAIM_CANCELLED, "claim %d: %s", claim[k],
                     pc_claim_status_name(R.res[claim[k]].status));
    }
    wait_queue_len(3);
}

/* ---- bounded memory ------------------------------------------------------------------------ */

Test(pool_lifecycle, offers_beyond_offer_capacity_are_refused_until_the_scheduler_takes_them,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.offer_capacity = 4});
    char name[16];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        offer(name, "1");
    }
    pc_pod_ref extra = {.namespace_ = "ns", .name = "pod-4", .resource_version = "1"};
    cr_assert_eq(pc_pool_offer_idle(P, &extra), -EAGAIN, "4 offers wait: a fifth is refused");
    cr_assert_eq(pc_pool_withdraw(P, &extra), -EAGAIN, "withdrawals share the bound");
    cr_assert_eq(metric("podclaim_offers_refused_total"), 2);
    start();
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 4, 5000));
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_offer_idle(P, &extra) == 0, 5000),
              "taken in: the messages are free again");
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 5, 5000));
}

Test(pool_lifecycle, records_of_pods_gone_for_a_ttl_are_forgotten, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.reservation_ttl_ns = 20 * 1000000LL});
    start();
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        offer(name, "1");
    }
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_pods_tracked") == 2000, 5000));
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        pc_pod_ref pod = {.namespace_ = "ns", .name = name};
        cr_assert_eq(pc_pool_withdraw(P, &pod), 0);
    }
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 0, 5000));
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_pods_tracked") == 0, 5000), "%lu records left",
              (unsigned long)metric("podclaim_pods_tracked"));
}

Test(pool_lifecycle, offers_to_a_pool_that_never_takes_them_in_stop_at_the_default_bound,
     .fini = teardown_pool, .timeout = 60)
{
    setup_pool(false, (pc_pool_config){0}); /* never started: nothing takes offers in */
    char name[32];
    int accepted = 0, err = 0;
    for (int i = 0; i < 70000 && err == 0; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        pc_pod_ref pod = {.namespace_ = "ns", .name = name, .resource_version = "1"};
        if ((err = pc_pool_offer_idle(P, &pod)) == 0)
            accepted++;
    }
    cr_assert_eq(err, -EAGAIN, "offers were never refused (%d accepted)", accepted);
    cr_assert_eq(accepted, 65536, "the default offer_capacity");
}
