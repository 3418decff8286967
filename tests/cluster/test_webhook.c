/* Claim-outcome webhooks against a receiver in the test (libmicrohttpd): delivery with every
 * field, retries after failures, giving up on a dead receiver, and a receiver that hangs
 * never holding up pc_webhook_post (the queue overflows and counts instead). */
#include "common.h"
#include "webhook.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct receiver {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *bodies;   /* every body received, in order; under mu */
    int fail_first;   /* answer 500 to this many requests; under mu */
    bool gate_closed; /* requests wait until it opens; under mu */
    _Atomic int requests, answered;
} receiver;

static receiver rx;

typedef struct conn_buf {
    char *data;
    size_t len;
} conn_buf;

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **ctx)
{
    (void)url, (void)method, (void)version;
    receiver *r = cls;
    conn_buf *b = *ctx;
    if (!b) {
        *ctx = calloc(1, sizeof(conn_buf));
        return MHD_YES;
    }
    if (*upload_len) {
        b->data = realloc(b->data, b->len + *upload_len + 1);
        memcpy(b->data + b->len, upload, *upload_len);
        b->len += *upload_len;
        b->data[b->len] = '\0';
        *upload_len = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&r->requests, 1);
    pthread_mutex_lock(&r->mu);
    while (r->gate_closed) /* a receiver that hangs until the test lets it answer */
        pthread_cond_wait(&r->cv, &r->mu);
    int code = 200;
    if (r->fail_first > 0) {
        r->fail_first--;
        code = 500;
    } else {
        json_array_append_new(r->bodies, json_loads(b->data ? b->data : "", 0, NULL));
    }
    pthread_mutex_unlock(&r->mu);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&r->answered, 1);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode t)
{
    (void)cls, (void)c, (void)t;
    conn_buf *b = *ctx;
    if (b) {
        free(b->data);
        free(b);
    }
    *ctx = NULL;
}

static void rx_start(int fail_first, bool gate_closed)
{
    memset(&rx, 0, sizeof(rx));
    pthread_mutex_init(&rx.mu, NULL);
    pthread_cond_init(&rx.cv, NULL);
    rx.bodies = json_array();
    rx.fail_first = fail_first;
    rx.gate_closed = gate_closed;
    rx.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, handle, &rx, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                            MHD_OPTION_END);
    cr_assert_not_null(rx.d);
    rx.port = MHD_get_daemon_info(rx.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(rx.url, sizeof(rx.url), "http://127.0.0.1:%d/hook", rx.port);
}

static void open_gate(void)
{
    pthread_mutex_lock(&rx.mu);
    rx.gate_closed = false;
    pthread_cond_broadcast(&rx.cv);
    pthread_mutex_unlock(&rx.mu);
}

static size_t received(void)
{
    pthread_mutex_lock(&rx.mu);
    size_t n = json_array_size(rx.bodies);
    pthread_mutex_unlock(&rx.mu);
    return n;
}

static pc_webhook *wh;

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner), not one process each as Criterion runs them. */
static void setup(void)
{
    memset(&rx, 0, sizeof(rx));
    wh = NULL;
}

static void fini(void)
{
    if (rx.d)
        open_gate();
    pc_webhook_free(wh);
    wh = NULL;
    if (rx.d)
        MHD_stop_daemon(rx.d);
    rx.d = NULL;
    json_decref(rx.bodies);
    rx.bodies = NULL;
}

static pc_webhook_event event(const char *url, int i, char *id, size_t len)
{
    snprintf(id, len, "claim-%d", i);
    return (pc_webhook_event){.url = url,
                              .claim_id = id,
                              .namespace_ = "ns",
                              .pool = "web",
                              .pod = "web-abcde",
                              .result = "ok",
                              .error = "",
                              .latency_ns = 1500000};
}

Test(webhook, each_outcome_is_posted_with_its_fields, .init = setup, .fini = fini, .timeout = 60)
{
    rx_start(0, false);
    pc_webhook_config c = {0};
    cr_assert_eq(pc_webhook_new(&c, &wh), 0);
    cr_assert_eq(pc_webhook_start(wh), 0);
    for (int i = 0; i < 20; i++) {
        char id[32];
        pc_webhook_event e = event(rx.url, i, id, sizeof(id));
        cr_assert_eq(pc_webhook_post(wh, &e), 0);
    }
    cr_assert(PC_TEST_WAIT(received() == 20, 10000), "received %zu of 20", received());
    json_t *seen = json_object();
    for (size_t i = 0; i < 20; i++) {
        json_t *b = json_array_get(rx.bodies, i);
        cr_assert_str_eq(json_string_value(json_object_get(b, "pool")), "web");
        cr_assert_str_eq(json_string_value(json_object_get(b, "namespace")), "ns");
        cr_assert_str_eq(json_string_value(json_object_get(b, "pod")), "web-abcde");
        cr_assert_str_eq(json_string_value(json_object_get(b, "result")), "ok");
        cr_assert_float_eq(json_real_value(json_object_get(b, "latencyMs")), 1.5, 1e-9);
        cr_assert(json_string_value(json_object_get(b, "time")));
        json_object_set_new(seen, json_string_value(json_object_get(b, "claimId")), json_true());
    }
    cr_assert_eq(json_object_size(seen), 20, "an outcome was posted twice or lost");
    json_decref(seen);
    pc_webhook_stats st;
    /* the receiver records a body before it answers: delivery is counted a moment later */
    cr_assert(PC_TEST_WAIT(({
                               pc_webhook_stats_read(wh, &st);
                               st.delivered == 20;
                           }),
                           10000));
    cr_assert_eq(st.retries, 0);
}

Test(webhook, failed_posts_are_retried, .init = setup, .fini = fini, .timeout = 60)
{
    rx_start(3, false);
    pc_webhook_config c = {.backoff_initial_ns = 20000000LL, .max_attempts = 5};
    cr_assert_eq(pc_webhook_new(&c, &wh), 0);
    cr_assert_eq(pc_webhook_start(wh), 0);
    char id[32];
    pc_webhook_event e = event(rx.url, 1, id, sizeof(id));
    cr_assert_eq(pc_webhook_post(wh, &e), 0);
    cr_assert(PC_TEST_WAIT(received() == 1, 10000), "not delivered after retries");
    pc_webhook_stats st;
    cr_assert(PC_TEST_WAIT(({
                               pc_webhook_stats_read(wh, &st);
                               st.delivered == 1;
                           }),
                           10000));
    cr_assert_eq(st.retries, 3);
    cr_assert_eq(atomic_load(&rx.requests), 4);
}

Test(webhook, a_dead_receiver_is_given_up_after_the_attempts, .init = setup, .fini = fini,
     .timeout = 60)
{
    /* a port nobody listens on: start a receiver, note its port, stop it */
    rx_start(0, false);
    char url[64];
    snprintf(url, sizeof(url), "%s", rx.url);
    MHD_stop_daemon(rx.d);
    rx.d = NULL;
    pc_webhook_config c = {.backoff_initial_ns = 10000000LL, .max_attempts = 3};
    cr_assert_eq(pc_webhook_new(&c, &wh), 0);
    cr_assert_eq(pc_webhook_start(wh), 0);
    for (int i = 0; i < 5; i++) {
        char id[32];
        pc_webhook_event e = event(url, i, id, sizeof(id));
        cr_assert_eq(pc_webhook_post(wh, &e), 0);
    }
    pc_webhook_stats st;
    cr_assert(PC_TEST_WAIT(({
                               pc_webhook_stats_read(wh, &st);
                               st.failed == 5;
                           }),
                           10000),
              "failed %llu", (unsigned long long)st.failed);
    cr_assert_eq(st.retries, 10, "2 retries per outcome");
    cr_assert_eq(st.queued, 0);
}

/* The receiver hangs: posting 100 outcomes returns at once for each (none waits for the
 * receiver, which has answered nothing while they are posted), the queue holds its capacity,
 * the rest is counted dropped; once the receiver answers, the queued ones go out. */
Test(webhook, a_hanging_receiver_never_holds_up_post, .init = setup, .fini = fini, .timeout = 60)
{
    rx_start(0, true);
    pc_webhook_config c = {.queue_capacity = 16, .max_inflight = 4};
    cr_assert_eq(pc_webhook_new(&c, &wh), 0);
    cr_assert_eq(pc_webhook_start(wh), 0);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 100; i++) {
        char id[32];
        pc_webhook_event e = event(rx.url, i, id, sizeof(id));
        int rc = pc_webhook_post(wh, &e);
        cr_assert(rc == 0 || rc == -EAGAIN, "post: %d", rc);
        rc == 0 ? accepted++ : refused++;
    }
    cr_assert_eq(atomic_load(&rx.answered), 0, "the receiver answered before the posts ended");
    cr_assert_eq(accepted, 16, "the queue bound is 16, %d accepted", accepted);
    pc_webhook_stats st;
    pc_webhook_stats_read(wh, &st);
    cr_assert_eq(st.dropped, (uint64_t)refused);
    cr_assert(PC_TEST_WAIT(atomic_load(&rx.requests) == 4, 10000),
              "%d requests waiting at the receiver, want max_inflight 4",
              atomic_load(&rx.requests));
    open_gate();
    cr_assert(PC_TEST_WAIT(received() == 16, 10000), "received %zu of 16", received());
}
