/* Claim-outcome webhooks (see webhook.h).
 *
 * Flow: pc_webhook_post (any thread) -> `incoming` list (mu) -> webhook thread: body built,
 *       POST on a curl multi handle -> done: delivered | retry list (due time) | failed.
 *
 * Ownership: an item belongs to the posting thread until it is on `incoming`, then to the
 * webhook thread (which alone touches `retry`, the transfers and the curl handles). `count`
 * (items accepted and not yet finished) is the queue bound; it is reserved by the poster with
 * an atomic increment before the push, so the bound holds without a lock around the check.
 * The poster wakes the thread with curl_multi_wakeup only when `incoming` was empty.
 */
#include "webhook.h"

#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG(lvl, ...) pc__cl_log(&w->log, lvl, "webhook", __VA_ARGS__)

typedef struct item {
    struct item *next;
    char url[1024];
    char claim_id[PC_CLAIM_ID_MAX];
    char ns[PC_NAMESPACE_MAX];
    char pool[PC_NAME_MAX];
    char pod[PC_NAME_MAX];
    char result[24];
    char error[256];
    int64_t latency_ns;
    int64_t at_unix_ns;
    uint32_t attempts;
    int64_t due_ns; /* retry list: CLOCK_MONOTONIC when to try again */
    /* in flight */
    CURL *easy;
    char *body;
    struct curl_slist *headers;
} item;

struct pc_webhook {
    uint32_t capacity, max_inflight, max_attempts;
    int64_t backoff_initial_ns, backoff_max_ns, timeout_ns;
    char *ca_file;
    pc_cluster_log log;
    CURLM *multi;

    pthread_t thread;
    bool started;
    _Atomic bool stop;
    _Atomic bool closed; /* post refuses from now on */
    _Atomic int64_t drain_until_ns;

    pthread_mutex_t mu; /* guards incoming */
    item *incoming;     /* LIFO push; the thread reverses it */

    _Atomic uint32_t count; /* accepted and not finished: the queue bound */

    /* webhook thread only */
    item *retry;
    item **active; /* max_inflight slots: the transfers in flight (NULL = free) */
    uint32_t inflight;
    uint64_t rng;

    _Atomic uint64_t n_posted, n_dropped, n_delivered, n_retries, n_failed, n_abandoned;
};

#define INC(f) atomic_fetch_add_explicit(&w->f, 1, memory_order_relaxed)

static void copy(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

int pc_webhook_post(pc_webhook *w, const pc_webhook_event *ev)
{
    if (!ev || !ev->url || !ev->url[0])
        return -EINVAL;
    if (atomic_load_explicit(&w->closed, memory_order_relaxed))
        return -ESHUTDOWN;
    /* reserve a place first: the bound holds however many threads post at once */
    if (atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed) >= w->capacity) {
        atomic_fetch_sub_explicit(&w->count, 1, memory_order_relaxed);
        INC(n_dropped);
        return -EAGAIN;
    }
    item *it = calloc(1, sizeof(*it));
    if (!it) {
        atomic_fetch_sub_explicit(&w->count, 1, memory_order_relaxed);
        INC(n_dropped);
        return -EAGAIN;
    }
    copy(it->url, sizeof(it->url), ev->url);
    copy(it->claim_id, sizeof(it->claim_id), ev->claim_id);
    copy(it->ns, sizeof(it->ns), ev->namespace_);
    copy(it->pool, sizeof(it->pool), ev->pool);
    copy(it->pod, sizeof(it->pod), ev->pod);
    copy(it->result, sizeof(it->result), ev->result);
    copy(it->error, sizeof(it->error), ev->error);
    it->latency_ns = ev->latency_ns;
    it->at_unix_ns = ev->at_unix_ns ? ev->at_unix_ns : pc__cl_real_ns();
    pthread_mutex_lock(&w->mu);
    bool was_empty = !w->incoming;
    it->next = w->incoming;
    w->incoming = it;
    pthread_mutex_unlock(&w->mu);
    INC(n_posted);
    if (was_empty)
        curl_multi_wakeup(w->multi); /* thread-safe in libcurl >= 7.68 */
    return 0;
}

/* An item's end: free it, give its queue place back, then count its outcome, in that order
 * and with release on the outcome counter: a reader that sees the outcome (acquire, in
 * pc_webhook_stats_read) also sees the place given back, so "failed == n" never comes with
 * those n still counted as queued. */
static void finish(pc_webhook *w, item *it, _Atomic uint64_t *outcome)
{
    free(it->body);
    curl_slist_free_all(it->headers);
    free(it);
    atomic_fetch_sub_explicit(&w->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(outcome, 1, memory_order_release);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

/* Start one POST of `it` (webhook thread). On failure to start, treat as a failed attempt. */
static void send_item(pc_webhook *w, item *it)
{
    it->attempts++;
    if (!it->body) {
        char when[40];
        pc__cl_rfc3339(it->at_unix_ns, true, when, sizeof(when));
        json_t *b =
                json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:f,s:s}", "claimId", it->claim_id, "namespace",
                          it->ns, "pool", it->pool, "pod", it->pod, "result", it->result, "error",
                          it->error, "latencyMs", (double)it->latency_ns / 1e6, "time", when);
        it->body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        it->headers = curl_slist_append(NULL, "Content-Type: application/json");
    }
    it->easy = curl_easy_init();
    if (!it->body || !it->headers || !it->easy) {
        if (it->easy)
            curl_easy_cleanup(it->easy);
        it->easy = NULL;
        finish(w, it, &w->n_failed);
        return;
    }
    CURL *e = it->easy;
    curl_easy_setopt(e, CURLOPT_URL, it->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, it->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(w->timeout_ns / 1000000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(w->timeout_ns / 1000000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (w->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, w->ca_file);
    curl_easy_setopt(e, CURLOPT_PRIVATE, it);
    uint32_t slot = 0;
    while (slot < w->max_inflight && w->active[slot])
        slot++;
    if (slot == w->max_inflight || curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        it->easy = NULL;
        finish(w, it, &w->n_failed);
        return;
    }
    w->active[slot] = it;
    w->inflight++;
}

static void unslot(pc_webhook *w, item *it)
{
    for (uint32_t i = 0; i < w->max_inflight; i++)
        if (w->active[i] == it)
            w->active[i] = NULL;
}

/* A POST ended (webhook thread): delivered, or retry later, or give up. */
static void completed(pc_webhook *w, item *it, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(it->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(w->multi, it->easy);
    curl_easy_cleanup(it->easy);
    it->easy = NULL;
    unslot(w, it);
    w->inflight--;
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        finish(w, it, &w->n_delivered);
        return;
    }
    if (it->attempts >= w->max_attempts) {
        LOG(PC_KUBE_LOG_WARN, "url=%s claim=%s msg=\"gave up after %u attempts: %s\"", it->url,
            it->claim_id, it->attempts,
            rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP error status");
        finish(w, it, &w->n_failed);
        return;
    }
    int64_t d = w->backoff_initial_ns;
    for (uint32_t i = 1; i < it->attempts && d < w->backoff_max_ns; i++)
        d *= 2;
    if (d > w->backoff_max_ns)
        d = w->backoff_max_ns;
    d = d / 2 + (int64_t)(pc__cl_rand(&w->rng) % (uint64_t)(d / 2 + 1));
    it->due_ns = pc__cl_mono_ns() + d;
    it->next = w->retry;
    w->retry = it;
    INC(n_retries);
}

static void *webhook_main(void *arg)
{
    pc_webhook *w = arg;
    pthread_setname_np(pthread_self(), "pc-webhook");
    item *ready = NULL, *ready_tail = NULL; /* FIFO of items waiting for a transfer slot */
    for (;;) {
        bool stopping = atomic_load_explicit(&w->stop, memory_order_acquire);
        int64_t now = pc__cl_mono_ns();
        if (stopping && now >= atomic_load_explicit(&w->drain_until_ns, memory_order_relaxed))
            break;
        pthread_mutex_lock(&w->mu);
        item *in = w->incoming;
        w->incoming = NULL;
        pthread_mutex_unlock(&w->mu);
        item *rev = NULL; /* posts arrive LIFO: restore their order */
        while (in) {
            item *n = in->next;
            in->next = rev;
            rev = in;
            in = n;
        }
        while (rev) {
            item *n = rev->next;
            rev->next = NULL;
            if (ready_tail)
                ready_tail->next = rev;
            else
                ready = rev;
            ready_tail = rev;
            rev = n;
        }
        int64_t next_due = 0;
        for (item **pp = &w->retry; *pp;) {
            item *it = *pp;
            if (it->due_ns <= now) {
                *pp = it->next;
                it->next = NULL;
                if (ready_tail)
                    ready_tail->next = it;
                else
                    ready = it;
                ready_tail = it;
            } else {
                if (!next_due || it->due_ns < next_due)
                    next_due = it->due_ns;
                pp = &it->next;
            }
        }
        while (ready && w->inflight < w->max_inflight) {
            item *it = ready;
            ready = it->next;
            if (!ready)
                ready_tail = NULL;
            it->next = NULL;
            send_item(w, it);
        }
        if (stopping && !ready && !w->retry && !w->inflight)
            break; /* drained */
        int running = 0;
        curl_multi_perform(w->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(w->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            item *it = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&it);
            completed(w, it, m->data.result);
        }
        int timeout_ms = 1000;
        if (next_due) {
            int64_t left_ns = next_due - pc__cl_mono_ns();
            int ms = left_ns <= 0 ? 0 : (int)((left_ns + 999999) / 1000000);
            if (ms < timeout_ms)
                timeout_ms = ms;
        }
        if (ready && w->inflight < w->max_inflight)
            timeout_ms = 0;
        curl_multi_poll(w->multi, NULL, 0, timeout_ms, NULL);
    }
    /* what is left is abandoned: transfers cut short, then what waits */
    for (uint32_t i = 0; i < w->max_inflight; i++) {
        item *it = w->active[i];
        if (!it)
            continue;
        curl_multi_remove_handle(w->multi, it->easy);
        curl_easy_cleanup(it->easy);
        it->easy = NULL;
        w->active[i] = NULL;
        w->inflight--;
        finish(w, it, &w->n_abandoned);
    }
    item *lists[2] = {ready, w->retry};
    w->retry = NULL;
    for (int l = 0; l < 2; l++) {
        while (lists[l]) {
            item *it = lists[l];
            lists[l] = it->next;
            finish(w, it, &w->n_abandoned);
        }
    }
    return NULL;
}

int pc_webhook_new(const pc_webhook_config *cfg, pc_webhook **out)
{
    pc_webhook *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    pc_webhook_config d = {0};
    if (!cfg)
        cfg = &d;
    w->capacity = cfg->queue_capacity ? cfg->queue_capacity : 4096;
    w->max_inflight = cfg->max_inflight ? cfg->max_inflight : 8;
    w->max_attempts = cfg->max_attempts ? cfg->max_attempts : 5;
    w->backoff_initial_ns = cfg->backoff_initial_ns > 0 ? cfg->backoff_initial_ns : 200000000LL;
    w->backoff_max_ns = cfg->backoff_max_ns > 0 ? cfg->backoff_max_ns : 10000000000LL;
    w->timeout_ns = cfg->timeout_ns > 0 ? cfg->timeout_ns : 5000000000LL;
    w->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : NULL;
    w->log = cfg->log;
    w->rng = (uint64_t)pc__cl_mono_ns() ^ (uint64_t)(uintptr_t)w ^ 0x9e3779b97f4a7c15ULL;
    pthread_mutex_init(&w->mu, NULL);
    w->multi = curl_multi_init();
    w->active = calloc(w->max_inflight, sizeof(*w->active));
    if (!w->multi || !w->active || (cfg->ca_file && !w->ca_file)) {
        pc_webhook_free(w);
        return -ENOMEM;
    }
    *out = w;
    return 0;
}

int pc_webhook_start(pc_webhook *w)
{
    if (w->started)
        return -EALREADY;
    int rc = pthread_create(&w->thread, NULL, webhook_main, w);
    if (rc)
        return -rc;
    w->started = true;
    return 0;
}

void pc_webhook_stop(pc_webhook *w, int64_t drain_ns)
{
    if (!w)
        return;
    atomic_store_explicit(&w->closed, true, memory_order_relaxed);
    if (!w->started)
        return;
    atomic_store_explicit(&w->drain_until_ns, pc__cl_mono_ns() + (drain_ns > 0 ? drain_ns : 0),
                          memory_order_relaxed);
    /* release: the thread that sees stop sees the drain deadline */
    atomic_store_explicit(&w->stop, true, memory_order_release);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void pc_webhook_free(pc_webhook *w)
{
    if (!w)
        return;
    pc_webhook_stop(w, 0);
    /* items never picked up (the thread drained everything else) */
    while (w->incoming) {
        item *it = w->incoming;
        w->incoming = it->next;
        finish(w, it, &w->n_abandoned);
    }
    if (w->multi)
        curl_multi_cleanup(w->multi);
    pthread_mutex_destroy(&w->mu);
    free(w->active);
    free(w->ca_file);
    free(w);
}

void pc_webhook_stats_read(pc_webhook *w, pc_webhook_stats *o)
{
    /* The outcomes first, with acquire: what their writer did before counting them (the
     * retries, the queue place given back: see finish()) is then seen by the loads below. */
    o->delivered = atomic_load_explicit(&w->n_delivered, memory_order_acquire);
    o->failed = atomic_load_explicit(&w->n_failed, memory_order_acquire);
    o->abandoned = atomic_load_explicit(&w->n_abandoned, memory_order_acquire);
    o->posted = atomic_load_explicit(&w->n_posted, memory_order_relaxed);
    o->dropped = atomic_load_explicit(&w->n_dropped, memory_order_relaxed);
    o->retries = atomic_load_explicit(&w->n_retries, memory_order_relaxed);
    o->queued = atomic_load_explicit(&w->count, memory_order_relaxed);
}
