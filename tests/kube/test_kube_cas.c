/* End to end: claims through pool -> kube CAS backend -> kapi-sim, fed by the informer. */
#include "e2e_common.h"

#include "../core/common.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

static ksim sim;
static stack st;

static void teardown(void)
{
    stack_stop(&st);
    ksim_stop(&sim);
}

static void wait_all(run *r, int64_t ms)
{
    bool ok = PC_TEST_WAIT_UNTIL(atomic_load_explicit(&r->done, memory_order_acquire) >= r->n, ms);
    cr_assert(ok, "only %zu of %zu claims got a callback in %lld ms", atomic_load(&r->done), r->n,
              (long long)ms);
}

Test(kube_cas, serves_every_claim_once_with_20pct_conflicts_and_2pct_5xx, .fini = teardown,
     .timeout = 60)
{
    const char *args[] = {
            "--pool",    "e2e/p=100", "--warmup-ms",     "10",  "--hold-ms",    "30",
            "--stop-ms", "10",        "--conflict-rate", "0.2", "--error-rate", "0.02",
            NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    cr_assert_eq(stack_start(&st, &sim, "e2e", "p", NULL, NULL, NULL), 0);
    run r;
    cr_assert_eq(run_claims(&r, st.pool, 1000, "cas", 40000), 0);
    wait_all(&r, 45000);
    size_t ok = 0;
    for (size_t i = 0; i < r.n; i++) {
        cr_assert_eq(atomic_load(&r.claims[i].calls), 1, "claim %zu: %d callbacks", i,
                     atomic_load(&r.claims[i].calls));
        if (r.claims[i].r.status == PC_CLAIM_OK)
            ok++;
        else
            cr_log_warn("claim %zu: %s: %s", i, pc_claim_status_name(r.claims[i].r.status),
                        r.claims[i].r.error);
    }
    cr_assert_eq(ok, r.n, "%zu of %zu claims OK", ok, r.n);
    pc_kube_backend_stats bs;
    pc_kube_backend_stats_read(st.backend, &bs);
    cr_assert_gt(bs.outcomes[PC_CAS_CONFLICT], 0, "no conflict seen: injection not exercised");
    size_t logged = check_claim_log(&sim, &r, "cas");
    cr_log_info("claims=%zu won=%llu conflicts=%llu retryable=%llu log=%zu connections=%llu", r.n,
                (unsigned long long)bs.outcomes[PC_CAS_WON],
                (unsigned long long)bs.outcomes[PC_CAS_CONFLICT],
                (unsigned long long)bs.outcomes[PC_CAS_RETRYABLE], logged,
                (unsigned long long)bs.connections);
    free(r.claims);
}

Test(kube_cas, never_double_claims_with_300ms_informer_lag, .fini = teardown, .timeout = 60)
{
    const char *args[] = {"--pool",    "lag/p=50", "--warmup-ms",      "10",  "--hold-ms", "20",
                          "--stop-ms", "10",       "--watch-delay-ms", "300", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    cr_assert_eq(stack_start(&st, &sim, "lag", "p", NULL, NULL, NULL), 0);
    run r;
    cr_assert_eq(run_claims(&r, st.pool, 300, "lag", 40000), 0);
    wait_all(&r, 45000);
    for (size_t i = 0; i < r.n; i++) {
        cr_assert_eq(atomic_load(&r.claims[i].calls), 1);
        cr_assert_eq(r.claims[i].r.status, PC_CLAIM_OK, "claim %zu: %s: %s", i,
                     pc_claim_status_name(r.claims[i].r.status), r.claims[i].r.error);
    }
    check_claim_log(&sim, &r, "lag");
    free(r.claims);
}

Test(kube_cas, rejects_a_claim_with_reserved_labels_without_a_request, .fini = teardown,
     .timeout = 30)
{
    const char *args[] = {"--pool", "inv/p=2", "--warmup-ms", "10", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    cr_assert_eq(stack_start(&st, &sim, "inv", "p", NULL, NULL, NULL), 0);
    pc_kv labels[] = {{"podclaim.io/pool", "stolen"}};
    pc_claim_opts o = {.labels = labels, .n_labels = 1};
    pc_claim_result res;
    cr_assert_eq(pc_pool_claim(st.pool, &o, 0, 10000000000LL, &res), 0);
    cr_assert_eq(res.status, PC_CLAIM_REJECTED, "got %s: %s", pc_claim_status_name(res.status),
                 res.error);
    cr_assert(strstr(res.error, "podclaim.io/pool"), "error: %s", res.error);
    /* a good claim still works on the same pool */
    pc_claim_opts good = {0};
    cr_assert_eq(pc_pool_claim(st.pool, &good, 0, 10000000000LL, &res), 0);
    cr_assert_eq(res.status, PC_CLAIM_OK, "got %s: %s", pc_claim_status_name(res.status),
                 res.error);
}
