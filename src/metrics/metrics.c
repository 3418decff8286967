/* Metrics: latency histograms, a bounded text buffer and Prometheus text exposition.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> result; every stage counts into [metrics].
 *
 * Every atomic here is memory_order_relaxed (see metrics.h): a histogram's fields are
 * independent counters, and no reader uses one to find other data. A consequence: a
 * render concurrent with observes may see a bucket incremented before `count`. Prometheus
 * requires the +Inf bucket to equal _count, so the renderer derives _count from the
 * buckets it read, not from `count`; `count` stays for cheap readers of the total.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in ns, ascending; the "1-2.5-5" ladder of Prometheus client defaults,
 * stretched from 1 us (a dispatch) to 10 s (a claim that waited for a pod). */
static const int64_t bounds_ns[PC__HIST_BOUNDS] = {
        1000,      2500,      5000,       10000,      25000,      50000,       100000,   250000,
        500000,    1000000,   2500000,    5000000,    10000000,   25000000,    50000000, 100000000,
        250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

int64_t pc__histogram_bound_ns(size_t i)
{
    return i < PC__HIST_BOUNDS ? bounds_ns[i] : INT64_MAX;
}

/* The first bucket whose bound is >= 2^k, for k = 0..63: where a value of bit length k+1
 * can fall. The bounds grow by 2x or 2.5x per step, so a value in [2^k, 2^(k+1)) is in that
 * bucket or the next: one comparison, not a binary search (observe runs on the scheduler's
 * hot path, three times per claim). tests/core/test_metrics.c checks it against the bounds. */
static const unsigned char first_bucket_of_bit[64] = {
        0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  1,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 10,
        11, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
        22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
};

/* The bucket of v (>= 0): the first bound >= v (Prometheus `le` is inclusive), or the +Inf
 * bucket (PC__HIST_BOUNDS). */
size_t pc__histogram_bucket(int64_t v)
{
    if (v <= 0)
        return 0;
    size_t i = first_bucket_of_bit[63 - __builtin_clzll((unsigned long long)v)];
    return i < PC__HIST_BOUNDS && v > bounds_ns[i] ? i + 1 : i;
}

void pc__histogram_observe(pc__histogram *h, int64_t value_ns)
{
    if (value_ns < 0)
        value_ns = 0;
    atomic_fetch_add_explicit(&h->buckets[pc__histogram_bucket(value_ns)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)value_ns, memory_order_relaxed);
}

static void add_1w(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

void pc__histogram_observe_1w(pc__histogram *h, int64_t value_ns)
{
    if (value_ns < 0)
        value_ns = 0;
    add_1w(&h->buckets[pc__histogram_bucket(value_ns)], 1);
    add_1w(&h->count, 1);
    add_1w(&h->sum_ns, (uint64_t)value_ns);
}

/* Read every bucket once; returns their total. */
static uint64_t snapshot_buckets(const pc__histogram *h, uint64_t out[PC__HIST_BOUNDS + 1])
{
    uint64_t total = 0;
    for (size_t i = 0; i <= PC__HIST_BOUNDS; i++) {
        out[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += out[i];
    }
    return total;
}

int64_t pc__histogram_quantile_ns(const pc__histogram *h, double q)
{
    uint64_t b[PC__HIST_BOUNDS + 1];
    uint64_t total = snapshot_buckets(h, b);
    if (total == 0)
        return 0;
    if (!(q > 0)) /* also NaN */
        q = 0;
    if (q > 1)
        q = 1;
    /* The rank-th smallest observation (1-based) holds the quantile. */
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    if (rank > total)
        rank = total;
    uint64_t cum = 0;
    for (size_t i = 0; i < PC__HIST_BOUNDS; i++) {
        cum += b[i];
        if (cum >= rank)
            return bounds_ns[i];
    }
    return INT64_MAX;
}

/* ---- text buffer ----------------------------------------------------------------------- */

void pc__textbuf_init(pc__textbuf *t, char *buf, size_t len)
{
    t->buf = buf;
    t->len = buf != NULL ? len : 0;
    t->need = 0;
    if (t->len > 0)
        t->buf[0] = '\0';
}

/* Where the next byte goes, and how much room (including the NUL) is left there. Once the
 * text no longer fits, writes land on the final byte, which only ever receives a NUL. */
static char *tail(const pc__textbuf *t, size_t *room)
{
    if (t->len == 0) {
        *room = 0;
        return NULL;
    }
    size_t used = t->need < t->len - 1 ? t->need : t->len - 1;
    *room = t->len - used;
    return t->buf + used;
}

static void append(pc__textbuf *t, const char *s, size_t n)
{
    size_t room;
    char *p = tail(t, &room);
    if (room > 0) {
        size_t k = n < room - 1 ? n : room - 1;
        memcpy(p, s, k);
        p[k] = '\0';
    }
    t->need += n;
}

static void append_str(pc__textbuf *t, const char *s)
{
    append(t, s, strlen(s));
}

void pc__textbuf_printf(pc__textbuf *t, const char *fmt, ...)
{
    size_t room;
    char *p = tail(t, &room);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p, room, fmt, ap);
    va_end(ap);
    if (n > 0) /* n < 0: an encoding error; nothing counted, the text stays as it was */
        t->need += (size_t)n;
    else if (room > 0)
        *p = '\0';
}

/* Append s with the given characters escaped: backslash and newline always, the double
 * quote only in label values (HELP text keeps it verbatim, per the exposition format). */
static void append_escaped(pc__textbuf *t, const char *s, bool quote)
{
    if (s == NULL)
        return;
    const char *run = s;
    for (; *s; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quote)
            esc = "\\\"";
        if (esc == NULL)
            continue;
        append(t, run, (size_t)(s - run));
        append(t, esc, 2);
        run = s + 1;
    }
    append(t, run, (size_t)(s - run));
}

void pc__textbuf_label_value(pc__textbuf *t, const char *v)
{
    append_escaped(t, v, true);
}

/* ---- Prometheus exposition ------------------------------------------------------------- */

void pc__prom_header(pc__textbuf *t, const char *name, const char *help, const char *type)
{
    append_str(t, "# HELP ");
    append_str(t, name);
    append_str(t, " ");
    append_escaped(t, help, false);
    append_str(t, "\n# TYPE ");
    append_str(t, name);
    append_str(t, " ");
    append_str(t, type);
    append_str(t, "\n");
}

/* name suffix{labels,extra} with the braces left out when both are empty. */
static void sample_name(pc__textbuf *t, const char *name, const char *suffix, const char *labels,
                        const char *extra)
{
    bool has_l = labels != NULL && labels[0] != '\0';
    bool has_e = extra != NULL && extra[0] != '\0';
    append_str(t, name);
    append_str(t, suffix);
    if (!has_l && !has_e)
        return;
    append_str(t, "{");
    if (has_l)
        append_str(t, labels);
    if (has_l && has_e)
        append_str(t, ",");
    if (has_e)
        append_str(t, extra);
    append_str(t, "}");
}

/* A float the way Prometheus parses it: NaN, +Inf, -Inf; integers without exponent up
 * to 2^53 (counters stay exact and readable); otherwise the shortest of %.15g/%.17g that
 * reads back as the same double. */
static void append_value(pc__textbuf *t, double v)
{
    char buf[40];
    if (isnan(v))
        snprintf(buf, sizeof buf, "NaN");
    else if (isinf(v))
        snprintf(buf, sizeof buf, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) <= 9007199254740992.0)
        snprintf(buf, sizeof buf, "%.0f", v);
    else {
        snprintf(buf, sizeof buf, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof buf, "%.17g", v);
    }
    append_str(t, buf);
}

void pc__prom_sample(pc__textbuf *t, const char *name, const char *labels, const char *extra,
                     double value)
{
    sample_name(t, name, "", labels, extra);
    append_str(t, " ");
    append_value(t, value);
    append_str(t, "\n");
}

/* ns as exact decimal seconds, without trailing zeros: 2500 -> "0.0000025",
 * 1000000000 -> "1". Exact where %g of ns/1e9 would print binary noise. */
static void format_seconds(char *out, size_t cap, uint64_t ns)
{
    uint64_t sec = ns / 1000000000u, frac = ns % 1000000000u;
    if (frac == 0) {
        snprintf(out, cap, "%llu", (unsigned long long)sec);
        return;
    }
    int digits = 9;
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(out, cap, "%llu.%0*llu", (unsigned long long)sec, digits, (unsigned long long)frac);
}

/* A sample whose value is already rendered (exact integers and decimal seconds). */
static void sample_text(pc__textbuf *t, const char *name, const char *suffix, const char *labels,
                        const char *extra, const char *value)
{
    sample_name(t, name, suffix, labels, extra);
    append_str(t, " ");
    append_str(t, value);
    append_str(t, "\n");
}

void pc__prom_histogram(pc__textbuf *t, const char *name, const char *labels,
                        const pc__histogram *h)
{
    uint64_t b[PC__HIST_BOUNDS + 1];
    uint64_t total = snapshot_buckets(h, b);
    uint64_t sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);

    char le[48], secs[32], num[24];
    uint64_t cum = 0;
    for (size_t i = 0; i <= PC__HIST_BOUNDS; i++) {
        cum += b[i];
        if (i < PC__HIST_BOUNDS)
            format_seconds(secs, sizeof secs, (uint64_t)bounds_ns[i]);
        else
            snprintf(secs, sizeof secs, "+Inf");
        snprintf(le, sizeof le, "le=\"%s\"", secs);
        snprintf(num, sizeof num, "%llu", (unsigned long long)cum);
        sample_text(t, name, "_bucket", labels, le, num);
    }
    format_seconds(secs, sizeof secs, sum_ns);
    sample_text(t, name, "_sum", labels, NULL, secs);
    snprintf(num, sizeof num, "%llu", (unsigned long long)total);
    sample_text(t, name, "_count", labels, NULL, num);
}
