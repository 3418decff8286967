/* backlog_probe: what a backlog of waiting claims costs the scheduler, through the public API
 * only, so the same source builds against any version of libpodclaim (to compare them).
 *
 * n claims go into a started pool that has no pods; every other one is stamped just before
 * the claim before it (two producers racing, one preempted between stamping and pushing).
 * Printed: ns per claim to take all n in (the last claim is cancelled at once and is answered
 * when the scheduler reaches it, after taking in the others: every version takes its inbox
 * in order), ns per cancel when 2000 are cancelled in groups of 16, each group waiting for
 * its answers (a trickle), and ns per cancel when the rest are cancelled at once.
 *
 * Usage: backlog_probe N
 * Against the library of another commit, e.g.:
 *   git archive <commit> | tar -x -C /tmp/old && cmake -S /tmp/old -B /tmp/old/b \
 *     -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=OFF && cmake --build /tmp/old/b --target podclaim
 *   cc -O2 -I /tmp/old/include bench/core/backlog_probe.c /tmp/old/b/src/libpodclaim.a \
 *     -lck -lpthread -lm -o /tmp/backlog_probe_old
 */
#include <podclaim/podclaim.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_long answered;

static void on_result(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c, (void)r, (void)arg;
    atomic_fetch_add(&answered, 1);
}

static int no_cas(pc_backend *b, const pc_cas_request *r, pc_cas_done_fn d, void *t)
{
    (void)b, (void)r, (void)d, (void)t;
    return -1; /* no pod is ever offered */
}

static void wait_answered(long n)
{
    while (atomic_load(&answered) < n)
        sched_yield();
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    if (n < 4002) {
        fprintf(stderr, "usage: backlog_probe N   (N >= 4002)\n");
        return 2;
    }
    pc_backend be = {.cas_start = no_cas};
    pc_pool_config cfg = {.namespace_ = "bench", .name = "probe", .inbox_capacity = (uint32_t)n};
    pc_pool *p;
    if (pc_pool_new(&cfg, &be, &p) != 0 || pc_pool_start(p) != 0)
        return 1;
    pc_claim *cl = calloc((size_t)n, sizeof(pc_claim));
    int64_t base = pc_now_ns(), t0 = pc_now_ns();
    for (long i = 0; i < n; i++) {
        pc_claim_init(&cl[i], 2, on_result, NULL);
        cl[i].enqueued_at_ns = base + (i / 2) * 1000 - (i % 2);
        if (pc_pool_enqueue(p, &cl[i]) != 0)
            return 1;
    }
    pc_claim_cancel(&cl[n - 1]);
    wait_answered(1);
    double take_in = (double)(pc_now_ns() - t0) / (double)n;

    /* 7919 is prime and does not divide n - 1 for the n used here: every claim once.
     * 2000 cancels in groups of 16, each group waiting for its answers (a trickle). */
    enum { CANCELS = 2000, GROUP = 16 };
    t0 = pc_now_ns();
    for (long k = 0; k < CANCELS; k++) {
        pc_claim_cancel(&cl[(k * 7919) % (n - 1)]);
        if ((k + 1) % GROUP == 0)
            wait_answered(k + 2);
    }
    double trickle = (double)(pc_now_ns() - t0) / CANCELS;
    t0 = pc_now_ns();
    for (long k = CANCELS; k < n - 1; k++)
        pc_claim_cancel(&cl[(k * 7919) % (n - 1)]);
    wait_answered(n);
    double burst = (double)(pc_now_ns() - t0) / (double)(n - 1 - CANCELS);
    printf("%-8ld take in %9.0f ns/claim   cancel in groups of 16 %9.0f ns/claim   all at once "
           "%6.0f ns/claim\n",
           n, take_in, trickle, burst);
    pc_pool_free(p);
    free(cl);
    return 0;
}
