/* Tests of src/metrics: histograms, the bounded text buffer and Prometheus rendering
 * (every stage of informer -> pool -> CAS -> result counts into metrics). */
#include "common.h"
#include "metrics/metrics.h"

#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static uint64_t bucket(const pc__histogram *h, size_t i)
{
    return atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
}

Test(metrics, bounds_are_the_documented_ladder, .timeout = 10)
{
    static const int64_t want[PC__HIST_BOUNDS] = {
            1000,       2500,       5000,       10000,      25000,     50000,
            100000,     250000,     500000,     1000000,    2500000,   5000000,
            10000000,   25000000,   50000000,   100000000,  250000000, 500000000,
            1000000000, 2500000000, 5000000000, 10000000000};
    for (size_t i = 0; i < PC__HIST_BOUNDS; i++)
        cr_assert_eq(pc__histogram_bound_ns(i), want[i], "bound %zu: expected %lld, got %lld", i,
                     (long long)want[i], (long long)pc__histogram_bound_ns(i));
}

Test(metrics, a_value_on_a_bound_lands_in_that_bucket, .timeout = 10)
{
    for (size_t i = 0; i < PC__HIST_BOUNDS; i++) {
        pc__histogram h = {0};
        int64_t b = pc__histogram_bound_ns(i);
        pc__histogram_observe(&h, b);     /* le is inclusive */
        pc__histogram_observe(&h, b + 1); /* just above: the next bucket */
        cr_assert_eq(bucket(&h, i), 1, "bound %lld: bucket %zu holds %llu", (long long)b, i,
                     (unsigned long long)bucket(&h, i));
        cr_assert_eq(bucket(&h, i + 1), 1, "bound+1 %lld: bucket %zu holds %llu", (long long)b + 1,
                     i + 1, (unsigned long long)bucket(&h, i + 1));
    }
}

/* The bucket by definition: the first bound >= v, or +Inf. */
static size_t bucket_by_scan(int64_t v)
{
    size_t i = 0;
    while (i < PC__HIST_BOUNDS && v > pc__histogram_bound_ns(i))
        i++;
    return i;
}

Test(metrics, the_constant_time_bucket_agrees_with_the_bounds_everywhere, .timeout = 10)
{
    /* Every power of two and its neighbours, every bound and its neighbours, and a sweep of
     * pseudo-random values of every bit length. */
    for (int k = 0; k < 63; k++) {
        int64_t p2 = (int64_t)1 << k;
        for (int64_t d = -1; d <= 1; d++) {
            int64_t v = p2 + d;
            cr_assert_eq(pc__histogram_bucket(v), bucket_by_scan(v), "v=%lld", (long long)v);
        }
    }
    for (size_t i = 0; i < PC__HIST_BOUNDS; i++) {
        int64_t b = pc__histogram_bound_ns(i);
        for (int64_t d = -1; d <= 1; d++)
            cr_assert_eq(pc__histogram_bucket(b + d), bucket_by_scan(b + d), "v=%lld",
                         (long long)(b + d));
    }
    uint64_t x = 88172645463325252ULL;
    for (int n = 0; n < 200000; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t v = (int64_t)(x >> (1 + n % 63));
        cr_assert_eq(pc__histogram_bucket(v), bucket_by_scan(v), "v=%lld", (long long)v);
    }
    cr_assert_eq(pc__histogram_bucket(INT64_MAX), (size_t)PC__HIST_BOUNDS);
    cr_assert_eq(pc__histogram_bucket(-7), 0u);
}

Test(metrics, zero_negative_and_huge_values_land_in_the_end_buckets, .timeout = 10)
{
    pc__histogram h = {0};
    pc__histogram_observe(&h, 0);
    pc__histogram_observe(&h, -5);
    pc__histogram_observe(&h, INT64_MAX);
    cr_assert_eq(bucket(&h, 0), 2, "0 and -5 go to the first bucket");
    cr_assert_eq(bucket(&h, PC__HIST_BOUNDS), 1, "above 10 s goes to +Inf");
    cr_assert_eq(atomic_load(&h.count), 3);
    cr_assert_eq(atomic_load(&h.sum_ns), (uint64_t)INT64_MAX, "negative counts as 0");
}

Test(metrics, quantile_is_the_upper_bound_of_the_bucket_holding_it, .timeout = 10)
{
    pc__histogram h = {0};
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.5), 0, "empty histogram");
    /* 90 values of 3 us (bucket le 5us), 9 of 700 us (le 1ms), 1 of 20 s (+Inf). */
    for (int i = 0; i < 90; i++)
        pc__histogram_observe(&h, 3000);
    for (int i = 0; i < 9; i++)
        pc__histogram_observe(&h, 700000);
    pc__histogram_observe(&h, 20000000000);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.0), 5000);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.5), 5000);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.9), 5000, "rank 90 is the last 3 us value");
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.91), 1000000);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.99), 1000000);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 0.995), INT64_MAX, "+Inf bucket");
    cr_assert_eq(pc__histogram_quantile_ns(&h, 1.0), INT64_MAX);
    cr_assert_eq(pc__histogram_quantile_ns(&h, 7.0), INT64_MAX, "q clamped to 1");
    cr_assert_eq(pc__histogram_quantile_ns(&h, -1.0), 5000, "q clamped to 0");
}

Test(metrics, textbuf_counts_the_full_length_when_truncated, .timeout = 10)
{
    char buf[8];
    pc__textbuf t;
    pc__textbuf_init(&t, buf, sizeof buf);
    cr_assert_str_eq(buf, "");
    pc__textbuf_printf(&t, "%s", "hello");
    cr_assert_str_eq(buf, "hello");
    cr_assert_eq(t.need, 5);
    pc__textbuf_printf(&t, " %d", 12345);
    cr_assert_eq(t.need, 11, "need: expected 11, got %zu", t.need);
    cr_assert_str_eq(buf, "hello 1", "keeps the prefix that fits, NUL-terminated");
    pc__textbuf_label_value(&t, "a\"b");
    pc__prom_sample(&t, "m", NULL, NULL, 1);
    cr_assert_eq(t.need, 11 + 4 + 4, "need: got %zu", t.need);
    cr_assert_eq(buf[sizeof buf - 1], '\0');
    cr_assert_str_eq(buf, "hello 1");

    /* A zero-length buffer only counts, like snprintf(NULL, 0, ...). */
    pc__textbuf c;
    pc__textbuf_init(&c, NULL, 0);
    pc__textbuf_printf(&c, "%d-%s", 42, "abc");
    pc__textbuf_label_value(&c, "x\n");
    cr_assert_eq(c.need, 6 + 3);

    /* Rendering into a buffer of exactly need + 1 gives the whole text. */
    char exact[10];
    pc__textbuf e;
    pc__textbuf_init(&e, exact, sizeof exact);
    pc__textbuf_printf(&e, "%d-%s", 42, "abc");
    pc__textbuf_label_value(&e, "x\n");
    cr_assert_str_eq(exact, "42-abcx\\n");
}

Test(metrics, label_values_escape_backslash_quote_and_newline, .timeout = 10)
{
    char buf[64];
    pc__textbuf t;
    pc__textbuf_init(&t, buf, sizeof buf);
    pc__textbuf_label_value(&t, "a\\b\"c\nd");
    cr_assert_str_eq(buf, "a\\\\b\\\"c\\nd", "got [%s]", buf);
    cr_assert_eq(t.need, strlen("a\\\\b\\\"c\\nd"));
    pc__textbuf_label_value(&t, NULL);
    pc__textbuf_label_value(&t, "");
    cr_assert_eq(t.need, strlen(buf), "NULL and empty append nothing");
}

Test(metrics, header_and_sample_render_in_exposition_format, .timeout = 10)
{
    char buf[512];
    pc__textbuf t;
    pc__textbuf_init(&t, buf, sizeof buf);
    pc__prom_header(&t, "podclaim_claims_total", "Claims by result.\nSecond \\ line", "counter");
    pc__prom_sample(&t, "podclaim_claims_total", "pool=\"p\",namespace=\"ns\"", "result=\"ok\"",
                    42);
    pc__prom_sample(&t, "podclaim_up", NULL, NULL, 1);
    pc__prom_sample(&t, "podclaim_ratio", "pool=\"p\"", NULL, 0.25);
    pc__prom_sample(&t, "podclaim_x", "", "le=\"1\"", 1.0 / 3);
    cr_assert_str_eq(buf,
                     "# HELP podclaim_claims_total Claims by result.\\nSecond \\\\ line\n"
                     "# TYPE podclaim_claims_total counter\n"
                     "podclaim_claims_total{pool=\"p\",namespace=\"ns\",result=\"ok\"} 42\n"
                     "podclaim_up 1\n"
                     "podclaim_ratio{pool=\"p\"} 0.25\n"
                     "podclaim_x{le=\"1\"} 0.33333333333333331\n",
                     "got:\n%s", buf);
    cr_assert_eq(t.need, strlen(buf));
}

Test(metrics, histogram_renders_cumulative_buckets_sum_in_seconds_and_count, .timeout = 10)
{
    pc__histogram h = {0};
    pc__histogram_observe(&h, 1000);        /* le 1e-06 */
    pc__histogram_observe(&h, 2000);        /* le 2.5e-06 */
    pc__histogram_observe(&h, 1500000);     /* le 0.0025 */
    pc__histogram_observe(&h, 30000000000); /* +Inf */
    char buf[4096];
    pc__textbuf t;
    pc__textbuf_init(&t, buf, sizeof buf);
    pc__prom_histogram(&t, "podclaim_dispatch_seconds", "pool=\"p\"", &h);
    cr_assert_lt(t.need, sizeof buf, "needs %zu", t.need);

    const char *want[] = {
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"0.000001\"} 1\n",
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"0.0000025\"} 2\n",
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"0.001\"} 2\n",
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"0.0025\"} 3\n",
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"10\"} 3\n",
            "podclaim_dispatch_seconds_bucket{pool=\"p\",le=\"+Inf\"} 4\n",
            "podclaim_dispatch_seconds_sum{pool=\"p\"} 30.001503\n",
            "podclaim_dispatch_seconds_count{pool=\"p\"} 4\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(buf, want[i]), "missing line %s in:\n%s", want[i], buf);

    /* 23 bucket lines, then _sum and _count, in that order, nothing else. */
    int lines = 0;
    for (const char *p = buf; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, PC__HIST_BOUNDS + 1 + 2, "lines: %d", lines);
    cr_assert_lt(strstr(buf, "le=\"+Inf\""), strstr(buf, "_sum"));
    cr_assert_lt(strstr(buf, "_sum"), strstr(buf, "_count"));

    /* Without labels only le is inside the braces; sum of whole seconds has no point. */
    pc__histogram g = {0};
    pc__histogram_observe(&g, 2000000000);
    pc__textbuf_init(&t, buf, sizeof buf);
    pc__prom_histogram(&t, "x", NULL, &g);
    cr_assert_not_null(strstr(buf, "x_bucket{le=\"2.5\"} 1\n"), "%s", buf);
    cr_assert_not_null(strstr(buf, "\nx_sum 2\nx_count 1\n"), "%s", buf);
}

Test(metrics, truncated_histogram_render_reports_the_length_it_needs, .timeout = 10)
{
    pc__histogram h = {0};
    pc__histogram_observe(&h, 123456);
    char full[4096];
    pc__textbuf f;
    pc__textbuf_init(&f, full, sizeof full);
    pc__prom_histogram(&f, "m", "a=\"b\"", &h);

    char small[100];
    memset(small, 'X', sizeof small);
    pc__textbuf t;
    pc__textbuf_init(&t, small, sizeof small);
    pc__prom_histogram(&t, "m", "a=\"b\"", &h);
    cr_assert_eq(t.need, f.need, "need: expected %zu, got %zu", f.need, t.need);
    cr_assert_eq(small[sizeof small - 1], '\0');
    cr_assert_eq(strncmp(small, full, sizeof small - 1), 0, "a prefix of the full text");
}

#define THREADS 4
#define PER_THREAD 100000

struct observer {
    pc__histogram *h;
    pthread_barrier_t *start;
    int64_t base;
};

static void *observe_many(void *arg)
{
    struct observer *o = arg;
    pthread_barrier_wait(o->start);
    for (int i = 0; i < PER_THREAD; i++)
        pc__histogram_observe(o->h, o->base + (i % 4) * 1000);
    return NULL;
}

Test(metrics, concurrent_observes_from_four_threads_sum_exactly, .timeout = 10)
{
    pc__histogram h = {0};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t th[THREADS];
    struct observer o[THREADS];
    for (int i = 0; i < THREADS; i++) {
        o[i] = (struct observer){&h, &start, 1000};
        cr_assert_eq(pthread_create(&th[i], NULL, observe_many, &o[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    /* Values cycle 1000, 2000, 3000, 4000 ns: buckets le 1us, 2.5us, 5us, 5us. */
    uint64_t n = (uint64_t)THREADS * PER_THREAD;
    cr_assert_eq(atomic_load(&h.count), n, "count: expected %llu, got %llu", (unsigned long long)n,
                 (unsigned long long)atomic_load(&h.count));
    uint64_t want_sum = (uint64_t)THREADS * (PER_THREAD / 4) * (1000 + 2000 + 3000 + 4000);
    cr_assert_eq(atomic_load(&h.sum_ns), want_sum, "sum: expected %llu, got %llu",
                 (unsigned long long)want_sum, (unsigned long long)atomic_load(&h.sum_ns));
    cr_assert_eq(bucket(&h, 0), n / 4);
    cr_assert_eq(bucket(&h, 1), n / 4);
    cr_assert_eq(bucket(&h, 2), n / 2);
}
