/* The Kubernetes CAS backend: claims as resourceVersion-guarded PATCHes over libcurl multi.
 *
 * Flow: pool scheduler -> cas_start -> [submit queue -> multi loop -> PATCH] -> done.
 *
 * One thread drives one curl multi handle with many transfers in flight over a small set of
 * reused connections (HTTP/1.1 keep-alive, or multiplexed HTTP/2 when TLS ALPN offers it).
 * A fixed array of transfer slots, each with its own easy handle and bounded request and
 * response buffers, is allocated at start: the CAS hot path allocates nothing of ours
 * (curl's own per-transfer state aside).
 *
 * cas_start runs on the pools' scheduler threads: it takes a free slot, builds the URL and
 * body into it, queues it and wakes the multi loop. The slot is owned by the caller until it
 * is queued, then by the multi loop until done() has been called; `lock` hands it over.
 *
 * Who runs the multi loop (the multi handle, the slots' transfers): the backend's own thread
 * "pc-kube-cas", except while a pool's scheduler thread has attached (backend.h: attach,
 * wait, wake, detach). Then that thread runs the loop inside its own sleep (`drv_wait`), the
 * backend thread waits on `cond` out of the loop, and a CAS of that pool is sent, answered
 * and taken in on one thread: no wake-up of a second thread per CAS. The hand-over is under
 * `lock` with an acknowledgement (`thread_out`), so exactly one thread touches the multi
 * handle at any time. CASes of other pools sharing the backend are driven by the attached
 * thread too; their cas_start wakes it like it woke the backend thread.
 *
 * Locking: `lock` protects free_list, the submit queue and `stopping`; held for a few
 * pointer moves only, never across curl calls or done(). Why a mutex and not a lock-free
 * stack: callers are the pools' scheduler threads, each PATCH costs a loopback round trip
 * (~20 us), and a mutex keeps the stop-and-drain logic obvious.
 *
 * Outcome mapping (DESIGN.md §2): 2xx WON (new resourceVersion from the returned pod);
 * 409 CONFLICT; 404 NOT_FOUND; 400/422 INVALID; 429, 5xx, 408, timeouts and network
 * errors RETRYABLE (Retry-After passed on); any other status RETRYABLE too (401/403 will
 * not heal, but retries are bounded by the pool and the claim then reports the message).
 */
#include "jscan.h"
#include "kube_internal.h"
#include "util/sat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC__CAS_DEFAULT_SLOTS 1024u
#define PC__CAS_DEFAULT_CONNS 8u
#define PC__CAS_DEFAULT_TIMEOUT_NS (10LL * 1000000000LL)
#define PC__CAS_DEFAULT_GRACE_NS (1000000000LL)
#define PC__CAS_DEFAULT_MAX_BODY ((size_t)1 << 20)
#define PC__CAS_DEFAULT_MAX_REQ ((size_t)64 << 10)
#define PC__CAS_MIN_TIMEOUT_MS 50L
#define PC__CAS_KEEP_BUF ((size_t)64 << 10) /* a response buffer beyond this is given back */

/* The request headers, one list shared by every slot (one copy of the bearer token, not one
 * per slot). Rebuilt when the token rotates; a transfer in flight keeps the list it started
 * with, since curl reads CURLOPT_HTTPHEADER until the transfer ends: hence the count. */
typedef struct hdrs {
    struct curl_slist *list;
    uint64_t gen;  /* token generation it was built with */
    uint32_t refs; /* kb->hdr's own + one per slot using it; under kb->lock */
} hdrs;

typedef struct slot {
    struct slot *next; /* free list or submit queue */
    pc_kube_backend *kb;
    CURL *easy;
    hdrs *hdr;         /* the headers this transfer uses (a counted reference) */
    bool active;       /* added to the multi (multi thread only) */
    bool counted;      /* counted in kb->in_use (queued or added; under kb->lock) */
    bool truncated;    /* response over max_body: the rest was read and dropped */
    size_t path_off;   /* url + path_off is the path (messages show the redacted server) */
    size_t resp_bytes; /* resp.cap as counted in buffer_bytes (multi thread only) */
    pc_cas_done_fn done;
    void *token;
    char url[PC__KUBE_URL_MAX];
    char errbuf[CURL_ERROR_SIZE];
    char *req; /* max_request bytes */
    pc__buf resp;
} slot;

struct pc_kube_backend {
    pc_backend iface;
    pc_kube_client *client;
    uint32_t n_slots;
    int64_t timeout_ns;
    int64_t deadline_grace_ns; /* >= 0 */
    size_t max_body;
    size_t max_request;
    CURLM *multi;
    slot *slots;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock; /* protects free_list, sub_head, sub_tail, stopping, hdr, refs,
                             in_use, driven, driver, thread_out */
    pthread_cond_t cond;  /* driven / thread_out changed */
    bool driven;          /* a pool's scheduler thread (driver) runs the multi loop */
    bool thread_out;      /* the backend thread is out of the loop, waiting for !driven */
    pthread_t driver;
    slot *free_list;
    slot *sub_head, *sub_tail;
    bool stopping;
    uint32_t in_use;   /* transfers queued or added to the multi, not yet finished */
    uint32_t conns;    /* max_connections */
    bool one_per_conn; /* plain http: HTTP/1.1, one transfer per connection at a time */
    hdrs *hdr;         /* the current headers */

    /* statistics: relaxed counters, each independent (read by stats_read on any thread) */
    _Atomic uint64_t started;
    _Atomic uint64_t outcomes[PC_CAS_OUTCOME_COUNT];
    _Atomic uint64_t connections;
    _Atomic uint64_t buffer_bytes;
};

static void hdrs_free(hdrs *h)
{
    if (!h)
        return;
    pc__kube_headers_free(h->list);
    free(h);
}

static hdrs *hdrs_build(pc_kube_client *c)
{
    hdrs *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->list = pc__kube_headers(c, "application/strategic-merge-patch+json", &h->gen);
    if (!h->list) {
        free(h);
        return NULL;
    }
    h->refs = 1;
    return h;
}

/* Drop one reference; returns the list to free (after unlocking) when it was the last. */
static hdrs *hdrs_unref_locked(hdrs *h)
{
    return h && --h->refs == 0 ? h : NULL;
}

/* Give a slot back: its header reference, then the slot to the free list. */
static void slot_put(pc_kube_backend *kb, slot *s)
{
    pthread_mutex_lock(&kb->lock);
    hdrs *gone = hdrs_unref_locked(s->hdr);
    s->hdr = NULL;
    if (s->counted) {
        s->counted = false;
        kb->in_use--;
    }
    s->next = kb->free_list;
    kb->free_list = s;
    pthread_mutex_unlock(&kb->lock);
    hdrs_free(gone);
}

/* A reference to headers carrying the current token (built when it rotated). Thread: any
 * scheduler thread. Returns NULL on allocation failure. */
static hdrs *hdrs_get(pc_kube_backend *kb)
{
    uint64_t gen = pc__kube_token_gen(kb->client);
    hdrs *h = NULL, *built = NULL, *gone = NULL;
    pthread_mutex_lock(&kb->lock);
    if (kb->hdr && kb->hdr->gen == gen) {
        h = kb->hdr;
        h->refs++;
    }
    pthread_mutex_unlock(&kb->lock);
    if (h)
        return h;
    /* built without the lock: it takes the credentials lock and allocates */
    if (!(built = hdrs_build(kb->client)))
        return NULL;
    pthread_mutex_lock(&kb->lock);
    if (!kb->hdr || kb->hdr->gen < built->gen) {
        gone = hdrs_unref_locked(kb->hdr);
        kb->hdr = built;
        built = NULL;
    }
    h = kb->hdr; /* ours, or one another worker built meanwhile */
    h->refs++;
    pthread_mutex_unlock(&kb->lock);
    hdrs_free(gone);
    hdrs_free(built);
    return h;
}

static bool valid_dns(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
            return false;
    }
    return n > 0 && n < max;
}

static void report(pc_kube_backend *kb, pc_cas_done_fn done, void *token, pc_cas_outcome oc,
                   const char *new_rv, const char *msg, int64_t retry_after_ns)
{
    atomic_fetch_add_explicit(&kb->outcomes[oc], 1, memory_order_relaxed);
    done(token, oc, new_rv, msg, retry_after_ns);
}

static int cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done, void *token)
{
    pc_kube_backend *kb = b->impl;
    if (!req || !done || !req->pod.namespace_ || !req->pod.name)
        return -EINVAL;

    pthread_mutex_lock(&kb->lock);
    if (kb->stopping) {
        pthread_mutex_unlock(&kb->lock);
        return -ESHUTDOWN;
    }
    slot *s = kb->free_list;
    if (s)
        kb->free_list = s->next;
    pthread_mutex_unlock(&kb->lock);
    if (!s)
        return -EAGAIN;

    char msg[256];
    int len = -EINVAL;
    if (!valid_dns(req->pod.namespace_, PC_NAMESPACE_MAX) || !valid_dns(req->pod.name, PC_NAME_MAX))
        snprintf(msg, sizeof(msg), "pod %s/%s: not a valid namespace/name", req->pod.namespace_,
                 req->pod.name);
    else
        len = pc_kube_patch_body(req, s->req, kb->max_request, msg, sizeof(msg));
    char path[sizeof(s->url)];
    if (len >= 0) {
        snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", req->pod.namespace_,
                 req->pod.name);
        /* Cannot fail for a server the client accepted and a valid name; never send a cut
         * URL if it does. */
        if (pc__kube_url(kb->client, path, s->url, sizeof(s->url))) {
            snprintf(msg, sizeof(msg), "pod %s/%s: PATCH URL too long", req->pod.namespace_,
                     req->pod.name);
            len = -EMSGSIZE;
        }
    }
    if (len < 0) {
        /* Bad claim options: no request is sent; the claim fails without retry. */
        slot_put(kb, s);
        atomic_fetch_add_explicit(&kb->started, 1, memory_order_relaxed);
        report(kb, done, token, PC_CAS_INVALID, NULL, msg, 0);
        return 0;
    }
    s->path_off = strlen(kb->client->server);
    if (!(s->hdr = hdrs_get(kb))) {
        slot_put(kb, s);
        return -ENOMEM;
    }
    /* Past the claim's deadline by the grace at most: a PATCH given up on may still be
     * applied (the server does not know the client left), and then nobody learns of the pod
     * it won. Waited for, its answer reaches the pool, which ends the claim by it (a WON is
     * OK even past the deadline). Only a server slower than the grace leaves a late win for
     * the informer to show (pc_informer_config.on_claimed). */
    int64_t timeout = kb->timeout_ns;
    if (req->deadline_ns > 0) {
        int64_t left = pc__add_sat(req->deadline_ns - pc__kube_mono_ns(), kb->deadline_grace_ns);
        if (left < timeout)
            timeout = left;
    }
    long tms = (long)(timeout / 1000000);
    if (tms < PC__CAS_MIN_TIMEOUT_MS)
        tms = PC__CAS_MIN_TIMEOUT_MS;

    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_URL, s->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdr->list);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->req);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, tms);
    pc__buf_reset(&s->resp);
    s->truncated = false;
    s->done = done;
    s->token = token;
    s->next = NULL;

    pthread_mutex_lock(&kb->lock);
    if (kb->stopping) {
        pthread_mutex_unlock(&kb->lock);
        slot_put(kb, s);
        return -ESHUTDOWN;
    }
    /* Wake the backend thread only when the queue was empty: it takes the whole queue at
     * once, so a non-empty queue means a wake-up is already pending since its last take, or
     * (below) a transfer whose end will wake it. Saves a write() + a poll() round per CAS
     * under load. curl_multi_wakeup is thread-safe.
     *
     * Nor when, over HTTP/1.1, every connection already has a transfer queued or running:
     * this one could not be sent before one of them ends, and that end wakes the thread
     * (socket or curl timer), which takes the queue before it next sleeps (backend_main
     * looks at the queue again before polling, so a transfer counted here that ended in
     * the meantime cannot leave this one waiting). Under load that is most CASes: the
     * wake-up cost a context switch of the backend thread per claim, for nothing. Over
     * HTTP/2 (https) a connection carries many streams, so there it always wakes. */
    bool wake = kb->sub_head == NULL && !(kb->one_per_conn && kb->in_use >= kb->conns);
    /* Nor when the caller is the attached scheduler: it runs the loop itself and sends the
     * queue before it next sleeps (drv_wait). */
    if (kb->driven && pthread_equal(kb->driver, pthread_self()))
        wake = false;
    s->counted = true;
    kb->in_use++;
    if (kb->sub_tail)
        kb->sub_tail->next = s;
    else
        kb->sub_head = s;
    kb->sub_tail = s;
    pthread_mutex_unlock(&kb->lock);
    atomic_fetch_add_explicit(&kb->started, 1, memory_order_relaxed);
    if (wake)
        curl_multi_wakeup(kb->multi);
    return 0;
}

/* A body over max_body is read to its end and dropped beyond the limit, never a reason to
 * fail the transfer: a 2xx means the PATCH applied, whatever the size of the pod it returns
 * (failing it would report RETRYABLE and orphan a claimed pod). */
static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
    slot *s = arg;
    if (!s->truncated && pc__buf_append(&s->resp, p, size * n) != 0)
        s->truncated = true;
    return size * n;
}

/* The new resourceVersion from a 2xx body (the patched pod), by the pull scanner: a full
 * jansson tree of a pod costs ~75 us here, this ~5 us (see jscan.h). The body may be cut at
 * max_body: kube-apiserver writes resourceVersion among the first metadata fields. */
static bool new_rv_of(const char *body, size_t len, char *rv, size_t rvlen)
{
    return body && pc__js_metadata_rv_prefix(body, len, rv, rvlen) > 0;
}

/* A transfer ended: map it, free the slot, then report (no lock held, slot already reusable
 * so done() may start the next CAS at once). */
static void finish(pc_kube_backend *kb, slot *s, CURLcode cr)
{
    long status = 0;
    long conns = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &conns);
    if (conns > 0)
        atomic_fetch_add_explicit(&kb->connections, (uint64_t)conns, memory_order_relaxed);
    curl_off_t ra = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &ra);
    curl_multi_remove_handle(kb->multi, s->easy);
    s->active = false;

    pc_cas_outcome oc;
    char msg[320];
    char rv[PC_RV_MAX] = "";
    int64_t retry_after = 0;
    const char *shown = kb->client->server_shown, *path = s->url + s->path_off;
    msg[0] = '\0';
    if (status >= 200 && status < 300) {
        /* Won, even when the body was cut at max_body or the transfer failed after the
         * status line: the server answers 2xx only once the update is stored. */
        oc = PC_CAS_WON;
        if (!new_rv_of(s->resp.data, s->resp.len, rv, sizeof(rv)))
            pc__kube_log(kb->client, PC_KUBE_LOG_WARN,
                         "url=%s%s msg=\"claim won but the response carries no resourceVersion"
                         "%s\"",
                         shown, path, s->truncated ? " in its first bytes" : "");
    } else if (cr != CURLE_OK) {
        oc = PC_CAS_RETRYABLE;
        pc__kube_curl_error(cr, s->errbuf, "PATCH", msg, sizeof(msg));
    } else {
        pc_kube_status_describe(status, s->resp.data, s->resp.len, msg, sizeof(msg));
        if (status == 409)
            oc = PC_CAS_CONFLICT;
        else if (status == 404)
            oc = PC_CAS_NOT_FOUND;
        else if (status == 400 || status == 422)
            oc = PC_CAS_INVALID;
        else
            oc = PC_CAS_RETRYABLE;
        if (status == 429 || status == 503)
            retry_after = ra > 0 ? (int64_t)ra * 1000000000LL : 0;
    }
    pc_cas_done_fn done = s->done;
    void *token = s->token;
    s->done = NULL;
    /* A spike of big answers must not leave up to max_body x max_inflight allocated. */
    if (s->resp.cap > PC__CAS_KEEP_BUF)
        pc__buf_fini(&s->resp);
    if (s->resp.cap != s->resp_bytes) {
        atomic_fetch_add_explicit(&kb->buffer_bytes, (uint64_t)s->resp.cap - s->resp_bytes,
                                  memory_order_relaxed);
        s->resp_bytes = s->resp.cap;
    }
    slot_put(kb, s);
    report(kb, done, token, oc, oc == PC_CAS_WON ? rv : NULL, oc == PC_CAS_WON ? NULL : msg,
           retry_after);
}

/* Add what cas_start queued to the multi handle. The loop's thread only. */
static void add_queued(pc_kube_backend *kb, slot *q)
{
    for (slot *s = q; s;) {
        slot *n = s->next;
        if (curl_multi_add_handle(kb->multi, s->easy) == CURLM_OK) {
            s->active = true;
        } else {
            pc_cas_done_fn done = s->done;
            void *token = s->token;
            slot_put(kb, s);
            report(kb, done, token, PC_CAS_RETRYABLE, NULL, "curl_multi_add_handle failed", 0);
        }
        s = n;
    }
}

/* One turn of the loop without sleeping: send and receive what can move, report what ended.
 * Returns how many transfers ended. The loop's thread only. */
static unsigned turn(pc_kube_backend *kb)
{
    int running;
    curl_multi_perform(kb->multi, &running);
    CURLMsg *m;
    int left;
    unsigned n = 0;
    while ((m = curl_multi_info_read(kb->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        slot *s = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        finish(kb, s, m->data.result);
        n++;
    }
    return n;
}

/* Take the submit queue. `busy`: transfers queued or running. */
static slot *take_queue(pc_kube_backend *kb, bool *busy)
{
    pthread_mutex_lock(&kb->lock);
    slot *q = kb->sub_head;
    kb->sub_head = kb->sub_tail = NULL;
    *busy = kb->in_use > 0;
    pthread_mutex_unlock(&kb->lock);
    return q;
}

static void *backend_main(void *arg)
{
    pc_kube_backend *kb = arg;
    pthread_setname_np(pthread_self(), "pc-kube-cas");
    for (;;) {
        pthread_mutex_lock(&kb->lock);
        /* A pool's scheduler runs the loop (drv_attach): stay out of it until it detaches,
         * even when stopping (pc_kube_backend_free before the pool's shutdown is a misuse;
         * waiting turns it into a wait, not two threads in one multi handle). */
        while (kb->driven) {
            if (!kb->thread_out) {
                kb->thread_out = true;
                pthread_cond_broadcast(&kb->cond);
            }
            pthread_cond_wait(&kb->cond, &kb->lock);
        }
        kb->thread_out = false;
        slot *q = kb->sub_head;
        kb->sub_head = kb->sub_tail = NULL;
        bool stopping = kb->stopping;
        pthread_mutex_unlock(&kb->lock);
        if (stopping) {
            /* queued after the last round: never added, report them too */
            for (slot *s = q; s;) {
                slot *n = s->next;
                s->active = true;
                curl_multi_add_handle(kb->multi, s->easy);
                s = n;
            }
            break;
        }
        add_queued(kb, q);
        turn(kb);
        /* Sleeps until a socket is ready, a curl timer is due or cas_start/free/attach wakes
         * us; not while CASes wait in the queue (cas_start may have left them to us without
         * a wake-up, counting on a transfer that has ended since: see cas_start). */
        pthread_mutex_lock(&kb->lock);
        bool queued = kb->sub_head != NULL || kb->stopping || kb->driven;
        pthread_mutex_unlock(&kb->lock);
        if (!queued)
            curl_multi_poll(kb->multi, NULL, 0, 1000, NULL);
    }
    /* Stopped: abort whatever is in flight, each reported exactly once. */
    for (uint32_t i = 0; i < kb->n_slots; i++) {
        slot *s = &kb->slots[i];
        if (!s->active)
            continue;
        curl_multi_remove_handle(kb->multi, s->easy);
        s->active = false;
        pc_cas_done_fn done = s->done;
        void *token = s->token;
        s->done = NULL;
        slot_put(kb, s);
        report(kb, done, token, PC_CAS_RETRYABLE, NULL, "kube backend stopped", 0);
    }
    return NULL;
}

/* ---- a pool's scheduler runs the loop (backend.h: attach, wait, wake, detach) ---------- */

static int drv_attach(pc_backend *b)
{
    pc_kube_backend *kb = b->impl;
    pthread_mutex_lock(&kb->lock);
    if (kb->driven || kb->stopping) {
        pthread_mutex_unlock(&kb->lock);
        return -EBUSY;
    }
    kb->driven = true;
    kb->driver = pthread_self();
    pthread_mutex_unlock(&kb->lock);
    curl_multi_wakeup(kb->multi); /* out of its poll, if it is in it */
    /* The multi handle is ours once the backend thread says it has left the loop. */
    pthread_mutex_lock(&kb->lock);
    while (!kb->thread_out)
        pthread_cond_wait(&kb->cond, &kb->lock);
    pthread_mutex_unlock(&kb->lock);
    return 0;
}

/* The scheduler's sleep. Costs nothing when no transfer is queued or running and it must not
 * sleep (the scheduler calls it every round it has more work, so the loop keeps moving while
 * the scheduler stays busy). */
static void drv_wait(pc_backend *b, int64_t deadline_ns)
{
    pc_kube_backend *kb = b->impl;
    bool busy;
    slot *q = take_queue(kb, &busy);
    if (q || busy) {
        add_queued(kb, q);
        if (turn(kb) > 0)
            return; /* results for the caller to take in */
    }
    if (deadline_ns < 0)
        return;
    long ms = 1000;
    if (deadline_ns > 0) {
        /* rounded up: waking before the deadline would have the caller come back at once,
         * again and again, until it passed */
        int64_t left = deadline_ns - pc__kube_mono_ns();
        if (left <= 0)
            return;
        if (left < 1000LL * 1000000)
            ms = (long)((left + 999999) / 1000000);
    }
    /* A CAS another thread queued after take_queue without waking us (cas_start's HTTP/1.1
     * case, counting on a transfer end we may have consumed in turn()): send it first. */
    pthread_mutex_lock(&kb->lock);
    bool queued = kb->sub_head != NULL;
    pthread_mutex_unlock(&kb->lock);
    if (queued)
        return;
    curl_multi_poll(kb->multi, NULL, 0, (int)ms, NULL);
    turn(kb);
}

static void drv_wake(pc_backend *b)
{
    pc_kube_backend *kb = b->impl;
    curl_multi_wakeup(kb->multi);
}

static void drv_detach(pc_backend *b)
{
    pc_kube_backend *kb = b->impl;
    pthread_mutex_lock(&kb->lock);
    kb->driven = false;
    pthread_cond_broadcast(&kb->cond);
    pthread_mutex_unlock(&kb->lock);
}

int pc_kube_backend_new(pc_kube_client *c, const pc_kube_backend_options *o, pc_kube_backend **out,
                        char *err, size_t errlen)
{
    pc_kube_backend_options d = {0};
    if (!o)
        o = &d;
    pc_kube_backend *kb = calloc(1, sizeof(*kb));
    if (!kb) {
        pc__kube_errf(err, errlen, "kube backend: out of memory");
        return -ENOMEM;
    }
    int rc = -ENOMEM;
    kb->client = c;
    kb->n_slots = o->max_inflight ? o->max_inflight : PC__CAS_DEFAULT_SLOTS;
    kb->timeout_ns = o->timeout_ns > 0 ? o->timeout_ns : PC__CAS_DEFAULT_TIMEOUT_NS;
    kb->deadline_grace_ns = o->deadline_grace_ns > 0    ? o->deadline_grace_ns
                            : o->deadline_grace_ns == 0 ? PC__CAS_DEFAULT_GRACE_NS
                                                        : 0;
    kb->max_body = o->max_body ? o->max_body : PC__CAS_DEFAULT_MAX_BODY;
    kb->max_request = o->max_request ? o->max_request : PC__CAS_DEFAULT_MAX_REQ;
    uint32_t conns = o->max_connections ? o->max_connections : PC__CAS_DEFAULT_CONNS;
    kb->conns = conns;
    /* pc__kube_easy_setup asks for HTTP/2 over TLS only (CURL_HTTP_VERSION_2TLS) */
    kb->one_per_conn = strncmp(c->server, "http://", 7) == 0;
    pthread_mutex_init(&kb->lock, NULL);
    pthread_cond_init(&kb->cond, NULL);
    kb->iface.cas_start = cas_start;
    kb->iface.impl = kb;
    kb->iface.attach = drv_attach;
    kb->iface.wait = drv_wait;
    kb->iface.wake = drv_wake;
    kb->iface.detach = drv_detach;

    kb->multi = curl_multi_init();
    kb->slots = calloc(kb->n_slots, sizeof(slot));
    if (!kb->multi || !kb->slots)
        goto fail;
    curl_multi_setopt(kb->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(kb->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns);
    curl_multi_setopt(kb->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns);
    curl_multi_setopt(kb->multi, CURLMOPT_MAXCONNECTS, (long)conns);
    if (!(kb->hdr = hdrs_build(c)))
        goto fail;
    for (uint32_t i = 0; i < kb->n_slots; i++) {
        slot *s = &kb->slots[i];
        s->kb = kb;
        pc__buf_init(&s->resp, kb->max_body);
        s->req = malloc(kb->max_request);
        s->easy = curl_easy_init();
        if (!s->req || !s->easy)
            goto fail;
        if (pc__kube_easy_setup(c, s->easy, s->errbuf) != 0) {
            pc__kube_errf(err, errlen, "kube backend: %s", s->errbuf);
            rc = -EINVAL;
            goto fail_msg;
        }
        curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, "PATCH");
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, (char *)s);
        /* wait for a multiplexed HTTP/2 stream rather than opening a new connection */
        curl_easy_setopt(s->easy, CURLOPT_PIPEWAIT, 1L);
        s->next = kb->free_list;
        kb->free_list = s;
    }
    rc = pthread_create(&kb->thread, NULL, backend_main, kb);
    if (rc) {
        pc__kube_errf(err, errlen, "pthread_create for the kube backend: %s", strerror(rc));
        rc = -rc;
        goto fail_msg;
    }
    kb->thread_started = true;
    *out = kb;
    return 0;
fail:
    pc__kube_errf(err, errlen, "kube backend: out of memory");
fail_msg:
    pc_kube_backend_free(kb);
    return rc;
}

pc_backend *pc_kube_backend_iface(pc_kube_backend *kb)
{
    return &kb->iface;
}

void pc_kube_backend_stats_read(const pc_kube_backend *kb, pc_kube_backend_stats *out)
{
    pc_kube_backend *m = (pc_kube_backend *)kb; /* atomics loads need a non-const object */
    memset(out, 0, sizeof(*out));
    out->started = atomic_load_explicit(&m->started, memory_order_relaxed);
    for (int i = 0; i < PC_CAS_OUTCOME_COUNT; i++)
        out->outcomes[i] = atomic_load_explicit(&m->outcomes[i], memory_order_relaxed);
    out->connections = atomic_load_explicit(&m->connections, memory_order_relaxed);
    out->buffer_bytes = atomic_load_explicit(&m->buffer_bytes, memory_order_relaxed);
}

void pc_kube_backend_free(pc_kube_backend *kb)
{
    if (!kb)
        return;
    if (kb->thread_started) {
        pthread_mutex_lock(&kb->lock);
        kb->stopping = true;
        pthread_mutex_unlock(&kb->lock);
        curl_multi_wakeup(kb->multi);
        pthread_join(kb->thread, NULL);
    }
    for (uint32_t i = 0; kb->slots && i < kb->n_slots; i++) {
        slot *s = &kb->slots[i];
        if (s->easy)
            curl_easy_cleanup(s->easy);
        free(s->req);
        pc__buf_fini(&s->resp);
    }
    free(kb->slots);
    hdrs_free(kb->hdr); /* every slot gave its reference back (the thread is joined) */
    if (kb->multi)
        curl_multi_cleanup(kb->multi);
    pthread_cond_destroy(&kb->cond);
    pthread_mutex_destroy(&kb->lock);
    free(kb);
}
