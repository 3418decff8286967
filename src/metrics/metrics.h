/* Metrics: counters, latency histograms and Prometheus text rendering.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> result; every stage counts into [metrics].
 *
 * A leaf module: it knows no pool. The pool owns a set of these and renders them with
 * its labels. Everything is a C11 atomic updated with memory_order_relaxed: each value
 * is independent, readers only need each number to be some value it really had, and
 * relaxed increments are the cheapest a writer can do.
 *
 * Thread-safety: observe/add from any thread; render from any thread, concurrently.
 */
#ifndef PODCLAIM_METRICS_H
#define PODCLAIM_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Latency histogram with fixed bucket bounds (in seconds when rendered):
 * 1us 2.5us 5us 10us 25us 50us 100us 250us 500us 1ms 2.5ms 5ms 10ms 25ms 50ms 100ms
 * 250ms 500ms 1s 2.5s 5s 10s, then +Inf. */
#define PC__HIST_BOUNDS 22

typedef struct pc__histogram {
    _Atomic uint64_t buckets[PC__HIST_BOUNDS + 1]; /* non-cumulative; last = above all bounds */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
} pc__histogram;

/* The upper bound of bucket i in ns (i < PC__HIST_BOUNDS). */
int64_t pc__histogram_bound_ns(size_t i);

/* The bucket a value (ns) counts in: the first whose bound is >= it, or PC__HIST_BOUNDS
 * (+Inf). Negative values count as 0. O(1). */
size_t pc__histogram_bucket(int64_t value_ns);

/* Record one value (negative values count as 0). Lock-free, O(1). */
void pc__histogram_observe(pc__histogram *h, int64_t value_ns);

/* The same for a histogram only one thread ever records into: plain loads and stores (still
 * atomic, so concurrent readers are fine), no locked instructions. */
void pc__histogram_observe_1w(pc__histogram *h, int64_t value_ns);

/* Approximate quantile q in [0,1] from the buckets: the upper bound of the bucket that
 * holds it, in ns (INT64_MAX for the +Inf bucket, 0 when empty). */
int64_t pc__histogram_quantile_ns(const pc__histogram *h, double q);

/* Append-only text buffer for rendering: writes at most len-1 bytes (always NUL-
 * terminated when len > 0) and counts the length the full text needs, like snprintf. */
typedef struct pc__textbuf {
    char *buf;
    size_t len;
    size_t need; /* bytes the full text needs, excluding the NUL */
} pc__textbuf;

void pc__textbuf_init(pc__textbuf *t, char *buf, size_t len);
void pc__textbuf_printf(pc__textbuf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Escape a label value per the exposition format (backslash, double quote, newline)
 * and append it. */
void pc__textbuf_label_value(pc__textbuf *t, const char *v);

/* "# HELP name help\n# TYPE name type\n" */
void pc__prom_header(pc__textbuf *t, const char *name, const char *help, const char *type);

/* One sample: name{labels[,extra]} value\n. `labels` is an already-rendered label list
 * without braces (e.g. pool="p",namespace="ns"); `extra` another one or NULL. */
void pc__prom_sample(pc__textbuf *t, const char *name, const char *labels, const char *extra,
                     double value);

/* A histogram in seconds: name_bucket{...,le="..."} cumulative, name_sum, name_count.
 * Writes no HELP/TYPE (call pc__prom_header first). */
void pc__prom_histogram(pc__textbuf *t, const char *name, const char *labels,
                        const pc__histogram *h);

#endif /* PODCLAIM_METRICS_H */
