/* Claim-outcome webhooks: one JSON POST per claim outcome to the pool's URL, from a thread of
 * their own, so a slow or dead receiver never changes claim latency.
 *
 * Flow: claim callbacks (pool threads, the claim controller, the daemon's HTTP API)
 *       --pc_webhook_post: copy the fields, push under a mutex held for a pointer move-->
 *       bounded queue --> [webhook thread: libcurl multi, up to max_inflight POSTs at once,
 *       retries with jittered exponential backoff] --> receiver.
 *
 * Body (Content-Type application/json):
 *   {"claimId":"…","namespace":"…","pool":"…","pod":"…","result":"ok|deadline|…",
 *    "error":"…","latencyMs":1.234,"time":"2026-…Z"}
 * A 2xx answer is delivery; anything else (or no answer within timeout) is retried up to
 * max_attempts in all, then counted failed. A full queue drops the outcome and counts it
 * (`dropped`): pc_webhook_post never waits.
 *
 * Thread-safety: pc_webhook_post and stats from any thread; new/start/stop/free from one
 * controlling thread.
 */
#ifndef PODCLAIM_CLUSTER_WEBHOOK_H
#define PODCLAIM_CLUSTER_WEBHOOK_H

#include "cluster.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pc_webhook_config {
    uint32_t queue_capacity;    /* outcomes waiting to be sent (retries included); 0 = 4096 */
    uint32_t max_inflight;      /* POSTs at once; 0 = 8 */
    uint32_t max_attempts;      /* per outcome, first try included; 0 = 5 */
    int64_t backoff_initial_ns; /* before the first retry; doubled per retry; 0 = 200 ms */
    int64_t backoff_max_ns;     /* 0 = 10 s */
    int64_t timeout_ns;         /* per POST (connect included); 0 = 5 s */
    const char *ca_file;        /* PEM bundle for https receivers; NULL = system store */
    pc_cluster_log log;
} pc_webhook_config;

/* One outcome. Strings are copied (cut to their field sizes); NULL = "". */
typedef struct pc_webhook_event {
    const char *url; /* required: http:// or https:// */
    const char *claim_id;
    const char *namespace_;
    const char *pool;
    const char *pod;
    const char *result; /* pc_claim_status_name() */
    const char *error;
    int64_t latency_ns;
    int64_t at_unix_ns; /* when the outcome happened; 0 = now */
} pc_webhook_event;

typedef struct pc_webhook pc_webhook;

int pc_webhook_new(const pc_webhook_config *cfg, pc_webhook **out);
int pc_webhook_start(pc_webhook *w);
/* Queue one outcome. Thread: any. Blocking: no (a malloc and a mutex held for a list push).
 * Returns 0, -EAGAIN (queue full: counted in dropped), -EINVAL (no URL), -ESHUTDOWN. */
int pc_webhook_post(pc_webhook *w, const pc_webhook_event *ev);
/* Stop: outcomes still queued get until drain_ns to go out, the rest are counted abandoned.
 * Idempotent. */
void pc_webhook_stop(pc_webhook *w, int64_t drain_ns);
void pc_webhook_free(pc_webhook *w); /* stop(0) and free; NULL is a no-op */

typedef struct pc_webhook_stats {
    uint64_t posted;    /* accepted by pc_webhook_post */
    uint64_t dropped;   /* refused: queue full */
    uint64_t delivered; /* 2xx */
    uint64_t retries;   /* attempts after the first */
    uint64_t failed;    /* gave up after max_attempts */
    uint64_t abandoned; /* still queued at stop */
    uint64_t queued;    /* waiting or in flight now */
} pc_webhook_stats;
void pc_webhook_stats_read(pc_webhook *w, pc_webhook_stats *out);

#endif /* PODCLAIM_CLUSTER_WEBHOOK_H */
