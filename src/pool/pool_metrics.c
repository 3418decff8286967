/* The pool's metrics in Prometheus text exposition format.
 *
 * Flow: every stage of informer -> pool -> reservation -> CAS (backend) -> result
 *       counts into the pool's metrics; this file renders them.
 *
 * Reads only atomics (relaxed) and fields fixed at pc_pool_new: safe from any thread,
 * concurrently with everything else.
 */
#include "pool/pool_internal.h"

#include <stdio.h>

static uint64_t load(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void counter(pc__textbuf *t, const char *labels, const char *name, const char *help,
                    const _Atomic uint64_t *v)
{
    pc__prom_header(t, name, help, "counter");
    pc__prom_sample(t, name, labels, NULL, (double)load(v));
}

static void gauge(pc__textbuf *t, const char *labels, const char *name, const char *help, double v)
{
    pc__prom_header(t, name, help, "gauge");
    pc__prom_sample(t, name, labels, NULL, v);
}

size_t pc_pool_metrics_render(const pc_pool *p, char *buf, size_t len)
{
    pc__textbuf t;
    pc__textbuf_init(&t, buf, len);
    const char *l = p->labels;
    pc_snapshot s = pc_pool_snapshot(p);

    gauge(&t, l, "podclaim_idle_ready", "Idle pods selectable now.", (double)s.idle_ready);
    gauge(&t, l, "podclaim_queue_length", "Claims in the inbox or waiting for a pod or a retry.",
          (double)s.queue_len);
    gauge(&t, l, "podclaim_reserved_pods", "Pods reserved by a dispatched claim.",
          (double)s.reserved);
    gauge(&t, l, "podclaim_inflight_cas", "CAS calls started and not yet reported.",
          (double)s.inflight_cas);
    gauge(&t, l, "podclaim_pods_tracked",
          "Pods the pool keeps a record of: idle, reserved, or gone for less than a TTL.",
          (double)pc__gauge_get(&p->pods_tracked));
    gauge(&t, l, "podclaim_last_dispatch_timestamp_seconds",
          "Unix time of the last dispatch (0 = never).", (double)s.last_dispatch_at / 1e9);

    char extra[64];
    pc__prom_header(&t, "podclaim_claims_total", "Claims ended, by result.", "counter");
    for (int i = 0; i < PC_CLAIM_STATUS_COUNT; i++) {
        snprintf(extra, sizeof(extra), "result=\"%s\"", pc_claim_status_name(i));
        pc__prom_sample(&t, "podclaim_claims_total", l, extra, (double)load(&p->m.results[i]));
    }
    pc__prom_header(&t, "podclaim_cas_total", "CAS outcomes reported by the backend.", "counter");
    for (int i = 0; i < PC_CAS_OUTCOME_COUNT; i++) {
        snprintf(extra, sizeof(extra), "outcome=\"%s\"", pc_cas_outcome_name(i));
        pc__prom_sample(&t, "podclaim_cas_total", l, extra, (double)load(&p->m.cas[i]));
    }
    counter(&t, l, "podclaim_claims_enqueued_total",
            "Claims accepted by enqueue (counted when the scheduler takes them in).",
            &p->m.enqueued);
    counter(&t, l, "podclaim_enqueue_rejected_total",
            "Enqueues refused because the inbox was full (backpressure).", &p->enqueue_rejected);
    counter(&t, l, "podclaim_promotions_total",
            "Priority levels gained by waiting claims through aging.", &p->m.promotions);
    counter(&t, l, "podclaim_offers_total", "Idle-pod offers taken in.", &p->m.offers);
    counter(&t, l, "podclaim_offers_stale_total",
            "Offers ignored because the pod was reserved at that version.", &p->m.offers_stale);
    counter(&t, l, "podclaim_withdrawals_total", "Pods withdrawn (no longer idle).",
            &p->m.withdrawals);
    counter(&t, l, "podclaim_offers_refused_total",
            "Offers and withdrawals refused because offer_capacity messages were waiting.",
            &p->offers_refused);
    counter(&t, l, "podclaim_reservations_expired_total",
            "Reservations that reached their TTL before the pod was seen again.",
            &p->m.reservations_expired);
    counter(&t, l, "podclaim_claims_recognized_total",
            "Claims ended OK because the informer showed their claim id on a pod after their "
            "CAS answer was lost (a timed-out PATCH the server applied).",
            &p->m.recognized);
    counter(&t, l, "podclaim_pods_orphaned_total",
            "Pods shown claimed by a claim that won another pod meanwhile (claimed by nobody).",
            &p->m.orphaned);

    pc__prom_header(&t, "podclaim_dispatch_latency_seconds",
                    "From enqueue to the start of the claim's first CAS.", "histogram");
    pc__prom_histogram(&t, "podclaim_dispatch_latency_seconds", l, &p->m.dispatch_latency);
    pc__prom_header(&t, "podclaim_inbox_wait_seconds",
                    "From enqueue to the scheduler taking the claim in (the inbox stage of the "
                    "dispatch latency).",
                    "histogram");
    pc__prom_histogram(&t, "podclaim_inbox_wait_seconds", l, &p->m.inbox_wait);
    pc__prom_header(&t, "podclaim_pending_wait_seconds",
                    "From the scheduler taking the claim in to its first CAS start (waiting for a "
                    "pod, or for room under max_inflight).",
                    "histogram");
    pc__prom_histogram(&t, "podclaim_pending_wait_seconds", l, &p->m.pending_wait);
    pc__prom_header(&t, "podclaim_claim_latency_seconds", "From enqueue to the claim's result.",
                    "histogram");
    pc__prom_histogram(&t, "podclaim_claim_latency_seconds", l, &p->m.claim_latency);
    return t.need;
}
