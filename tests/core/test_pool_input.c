/* What a pool accepts from its callers: claim options and ids checked at enqueue, ids
 * generated unique and stable, priorities clamped, configurations refused, arithmetic that
 * saturates instead of overflowing. Uses the controllable fake backend. */
#include "pool/pool_internal.h" /* pc__retry_delay_ns */
#include "pool_fixture.h"

#include <podclaim/podclaim.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- claim options --------------------------------------------------------------------- */

static char long_name[300], name_63[64], name_64[65], prefix_253[260], prefix_254[260];
static char *big_value;

static void make_strings(void)
{
    memset(name_63, 'a', 63);
    name_63[63] = '\0';
    memset(name_64, 'a', 64);
    name_64[64] = '\0';
    memset(long_name, 'a', 299);
    long_name[299] = '\0';
    /* 253 = 3 labels of 63 + 1 of 61, dot-separated */
    snprintf(prefix_253, sizeof(prefix_253), "%s.%s.%s.%.61s/x", name_63, name_63, name_63,
             name_63);
    snprintf(prefix_254, sizeof(prefix_254), "%s.%s.%s.%.62s/x", name_63, name_63, name_63,
             name_63);
    big_value = malloc(256 * 1024 + 1);
    memset(big_value, 'v', 256 * 1024);
    big_value[256 * 1024] = '\0';
}

typedef struct opts_case {
    const char *what;
    pc_claim_opts o;
} opts_case;

static int try_enqueue(const pc_claim_opts *o)
{
    pc_claim_init(&C[0], 0, on_result, NULL);
    C[0].opts = *o;
    return pc_pool_enqueue(P, &C[0]);
}

Test(pool_input, bad_claim_options_are_refused_at_enqueue_and_never_called_back,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    make_strings();
    static pc_kv img_ok = {"main", "python:3.12"};
    static pc_kv kv_null_key = {NULL, "v"}, kv_empty_key = {"", "v"}, kv_null_val = {"k", NULL};
    pc_kv img_bad_name = {"Main_1", "python"}, img_empty = {"main", ""}, img_null = {"main", NULL},
          img_long = {name_64, "python"};
    pc_kv lab_long_val = {"k", name_64}, lab_bad_val = {"k", "-x"}, lab_long_key = {name_64, "v"},
          lab_long_prefix = {prefix_254, "v"}, lab_bad_prefix = {"Ex.com/k", "v"},
          lab_empty_name = {"ex.com/", "v"};
    pc_kv ann_big = {"k", big_value};
    opts_case bad[] = {
            {"images NULL, n_images 1", {.images = NULL, .n_images = 1}},
            {"labels NULL, n_labels 1", {.labels = NULL, .n_labels = 1}},
            {"annotations NULL, n_annotations 2", {.annotations = NULL, .n_annotations = 2}},
            {"image with NULL container name", {.images = &kv_null_key, .n_images = 1}},
            {"image with an upper-case container name", {.images = &img_bad_name, .n_images = 1}},
            {"image with a 64-byte container name", {.images = &img_long, .n_images = 1}},
            {"empty image", {.images = &img_empty, .n_images = 1}},
            {"NULL image", {.images = &img_null, .n_images = 1}},
            {"label with NULL key", {.labels = &kv_null_key, .n_labels = 1}},
            {"label with empty key", {.labels = &kv_empty_key, .n_labels = 1}},
            {"label with NULL value", {.labels = &kv_null_val, .n_labels = 1}},
            {"label value of 64 bytes", {.labels = &lab_long_val, .n_labels = 1}},
            {"label value starting with '-'", {.labels = &lab_bad_val, .n_labels = 1}},
            {"label key name of 64 bytes", {.labels = &lab_long_key, .n_labels = 1}},
            {"label key prefix of 254 bytes", {.labels = &lab_long_prefix, .n_labels = 1}},
            {"label key prefix not a DNS subdomain", {.labels = &lab_bad_prefix, .n_labels = 1}},
            {"label key with an empty name", {.labels = &lab_empty_name, .n_labels = 1}},
            {"annotation with empty key", {.annotations = &kv_empty_key, .n_annotations = 1}},
            {"annotation with NULL value", {.annotations = &kv_null_val, .n_annotations = 1}},
            {"annotations over 256 KiB", {.annotations = &ann_big, .n_annotations = 1}},
            {"empty target phase", {.images = &img_ok, .n_images = 1, .target_phase = ""}},
            {"target phase of 299 bytes", {.target_phase = long_name}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[256];
        cr_assert_eq(pc_claim_opts_check(&bad[i].o, why, sizeof(why)), -EINVAL,
                     "pc_claim_opts_check accepts: %s", bad[i].what);
        cr_assert_neq(why[0], '\0', "%s: no message", bad[i].what);
        cr_assert_eq(try_enqueue(&bad[i].o), -EINVAL, "enqueue accepts: %s", bad[i].what);
    }
    offer("pod-a", "1"); /* a wrongly accepted claim would be served and called back */
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 5000));
    cr_assert_eq(results(), 0, "a refused claim was called back");
    cr_assert_eq(fake_started(&F), 0);
    free(big_value);
}

Test(pool_input, options_at_the_kubernetes_limits_are_accepted, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    make_strings();
    pc_kv img = {name_63, "registry.example.com/team/python@sha256:abc"};
    pc_kv labels[] = {{name_63, name_63}, {prefix_253, ""}, {"app.kubernetes.io/name", "A_b.c-9"}};
    big_value[256 * 1024 - 10] = '\0'; /* with key "k": just under 256 KiB */
    pc_kv ann[] = {{"k", big_value}, {"e", ""}};
    pc_claim_opts o = {.images = &img,
                       .n_images = 1,
                       .labels = labels,
                       .n_labels = 3,
                       .annotations = ann,
                       .n_annotations = 2,
                       .target_phase = "Running"};
    char why[256];
    cr_assert_eq(pc_claim_opts_check(&o, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(try_enqueue(&o), 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    free(big_value);
}

Test(pool_input, claim_ids_that_are_empty_or_too_long_are_refused, .fini = teardown_pool)
{
    setup_pool(false, (pc_pool_config){0});
    make_strings();
    pc_claim_init(&C[0], 0, on_result, NULL);
    C[0].id = "";
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), -EINVAL);
    C[0].id = name_64;
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), -EINVAL);
    C[0].id = name_63;
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), 0);
    free(big_value);
}

/* ---- claim ids ------------------------------------------------------------------------- */

static atomic_int retry_first;
static pc_cas_outcome retry_once(const pc_cas_request *req, void *arg)
{
    (void)req;
    (void)arg;
    return atomic_fetch_sub(&retry_first, 1) > 0 ? PC_CAS_RETRYABLE : PC_CAS_WON;
}

Test(pool_input, generated_claim_ids_are_unique_for_long_pool_names_and_stable_across_retries,
     .fini = teardown_pool, .timeout = 20)
{
    /* 60 bytes: the old "<pool>-<tag>-<n>" no longer fit in 64 and every id came out the same */
    const char *pool = "a-pool-with-a-name-long-enough-to-fill-most-of-a-claim-id-60";
    setup_pool(false, (pc_pool_config){.name = pool, .retry_backoff_ns = 1000000});
    F.decide = retry_once;
    atomic_store(&retry_first, 1);
    start();
    for (int i = 0; i < 3; i++) {
        pc_claim_init(&C[i], 0, on_result, NULL); /* no id: the pool makes one */
        cr_assert_eq(pc_pool_enqueue(P, &C[i]), 0);
    }
    serve_all(3);
    cr_assert_eq(fake_started(&F), 4, "3 claims, one retried once");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(R.res[i].status, PC_CLAIM_OK);
        cr_assert_neq(R.res[i].claim_id[0], '\0', "claim %d: the result names its id", i);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(R.res[i].claim_id, R.res[j].claim_id, "claims %d and %d: id %s", i, j,
                              R.res[i].claim_id);
        /* every CAS of the claim, the retry included, carried its one id */
        uint32_t sent = 0;
        for (int k = 0; k < 4; k++)
            sent += strcmp(fake_get(&F, k).claim_id, R.res[i].claim_id) == 0;
        cr_assert_eq(sent, R.res[i].attempts, "claim %d (%s): %u attempts, %u CAS with its id", i,
                     R.res[i].claim_id, R.res[i].attempts, sent);
    }
}

Test(pool_input, a_retried_claim_sends_the_same_generated_id, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.retry_backoff_ns = 1000000});
    F.decide = retry_once;
    atomic_store(&retry_first, 1);
    start();
    pc_claim_init(&C[0], 0, on_result, NULL);
    cr_assert_eq(pc_pool_enqueue(P, &C[0]), 0);
    offer("pod-a", "1");
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_OK);
    cr_assert_eq(fake_started(&F), 2);
    cr_assert_str_eq(fake_get(&F, 1).claim_id, fake_get(&F, 0).claim_id);
    cr_assert_str_eq(R.res[0].claim_id, fake_get(&F, 0).claim_id);
}

/* ---- arithmetic at the edges: saturate, never wrap ------------------------------------- */

Test(pool_input, retry_delays_saturate_for_huge_backoffs_and_retry_after)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int64_t backoffs[] = {2, 50 * 1000000LL, INT64_MAX / 64, INT64_MAX / 2, INT64_MAX};
    for (size_t b = 0; b < sizeof(backoffs) / sizeof(backoffs[0]); b++) {
        int64_t prev_cap = 0;
        for (uint32_t retries = 1; retries <= 10; retries++) {
            int64_t d = pc__retry_delay_ns(backoffs[b], retries, 0, &rng);
            cr_assert_gt(d, 0, "backoff %lld, retry %u: delay %lld", (long long)backoffs[b],
                         retries, (long long)d);
            /* never less than half of the un-jittered, saturated backoff of this retry */
            int64_t cap = backoffs[b];
            for (uint32_t k = 1; k < retries && k <= 5; k++)
                cap = cap > INT64_MAX / 2 ? INT64_MAX : cap * 2;
            cr_assert_geq(d, cap / 2, "backoff %lld, retry %u", (long long)backoffs[b], retries);
            cr_assert_geq(cap, prev_cap);
            prev_cap = cap;
        }
    }
    cr_assert_eq(pc__retry_delay_ns(1000, 1, INT64_MAX, &rng), INT64_MAX, "Retry-After is kept");
}

Test(pool_input, a_retry_after_of_int64_max_waits_instead_of_wrapping_to_now, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(true, (pc_pool_config){0});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_started(1);
    fake_complete_retry(&F, 0, INT64_MAX);
    /* backing off: counted as queued, the pod idle again */
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).idle_ready == 1, 5000));
    wait_queue_len(1);
    pc_claim_cancel(&C[0]);
    wait_results(1);
    cr_assert_eq(R.res[0].status, PC_CLAIM_CANCELLED, "got %s",
                 pc_claim_status_name(R.res[0].status));
    cr_assert_eq(fake_started(&F), 1, "no retry: its time is the end of time, not the past");
}

Test(pool_input, a_reservation_ttl_of_int64_max_never_expires, .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.reservation_ttl_ns = INT64_MAX});
    start();
    enqueue(0, 0);
    offer("pod-a", "1");
    wait_results(1);
    enqueue(1, 0);
    offer("pod-a", "1"); /* the informer has not seen the claim yet: stale */
    cr_assert(PC_TEST_WAIT_UNTIL(metric("podclaim_offers_stale_total") == 1, 5000),
              "the reservation still holds: stale %lu, expired %lu, CAS %d",
              (unsigned long)metric("podclaim_offers_stale_total"),
              (unsigned long)metric("podclaim_reservations_expired_total"), fake_started(&F));
    cr_assert_eq(fake_started(&F), 1);
    cr_assert_eq(metric("podclaim_reservations_expired_total"), 0);
}

typedef struct claimer {
    int rc;
    pc_claim_result r;
} claimer;

static void *claim_forever(void *arg)
{
    claimer *c = arg;
    c->rc = pc_pool_claim(P, NULL, 0, INT64_MAX, &c->r);
    return NULL;
}

Test(pool_input, a_blocking_claim_with_a_timeout_of_int64_max_waits_for_a_pod,
     .fini = teardown_pool, .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.resync_period_ns = INT64_MAX});
    start();
    claimer c = {0};
    pthread_t t;
    pthread_create(&t, NULL, claim_forever, &c);
    wait_queue_len(1);
    offer("pod-a", "1");
    pthread_join(t, NULL);
    cr_assert_eq(c.rc, 0);
    cr_assert_eq(c.r.status, PC_CLAIM_OK, "got %s: %s", pc_claim_status_name(c.r.status),
                 c.r.error);
}

/* ---- priorities and configurations ------------------------------------------------------ */

Test(pool_input, priorities_out_of_range_are_clamped_to_the_nearest_level, .fini = teardown_pool,
     .timeout = 20)
{
    setup_pool(false, (pc_pool_config){.promote_after_ns = 3600 * 1000000000LL});
    enqueue(0, 99); /* -> 5 */
    enqueue(1, 4);
    enqueue(2, -3); /* -> 0 */
    enqueue(3, 0);
    enqueue(4, 6); /* -> 5, after claim 0 */
    start();
    wait_queue_len(5);
    serve_all(5);
    const char *expect[] = {"c2", "c3", "c1", "c0", "c4"};
    for (int k = 0; k < 5; k++)
        cr_assert_str_eq(fake_get(&F, k).claim_id, expect[k], "dispatch #%d", k);
}

static int new_pool(pc_pool_config cfg, pc_backend *b)
{
    pc_pool *p = NULL;
    int err = pc_pool_new(&cfg, b, &p);
    if (err == 0)
        pc_pool_free(p);
    return err;
}

Test(pool_input, bad_configurations_are_refused)
{
    fake_init(&F, false);
    char long_ns[80];
    memset(long_ns, 'n', 79);
    long_ns[79] = '\0';
    const char *tags[] = {"gpu"};
    pc_backend no_cas = {0};
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p"}, &F.base), 0);
    cr_assert_eq(new_pool((pc_pool_config){.name = "p"}, &F.base), -EINVAL, "no namespace");
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = ""}, &F.base), -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = long_ns, .name = "p"}, &F.base), -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p"}, NULL), -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p"}, &no_cas), -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p", .promote_after_ns = -1},
                          &F.base),
                 -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p", .retry_backoff_ns = -1},
                          &F.base),
                 -EINVAL);
    cr_assert_eq(
            new_pool((pc_pool_config){.namespace_ = "ns", .name = "p", .reservation_ttl_ns = -5},
                     &F.base),
            -EINVAL);
    cr_assert_eq(new_pool((pc_pool_config){.namespace_ = "ns", .name = "p", .n_tags = 1}, &F.base),
                 -EINVAL, "n_tags without tags");
    cr_assert_eq(
            new_pool((pc_pool_config){.namespace_ = "ns", .name = "p", .tags = tags, .n_tags = 1},
                     &F.base),
            0);
    pc_pool *p = (pc_pool *)&F; /* must stay untouched on failure */
    pc_pool_config bad = {.name = "p"};
    cr_assert_eq(pc_pool_new(&bad, &F.base, &p), -EINVAL);
    cr_assert_eq((void *)p, (void *)&F, "*out unchanged on error");
    fake_fini(&F);
}

Test(pool_input, start_twice_is_ealready_and_after_shutdown_eshutdown, .fini = teardown_pool)
{
    setup_pool(false, (pc_pool_config){0});
    start();
    cr_assert_eq(pc_pool_start(P), -EALREADY);
    pc_pool_shutdown(P);
    cr_assert_eq(pc_pool_start(P), -ESHUTDOWN);
    pc_pool_shutdown(P); /* idempotent */
}
