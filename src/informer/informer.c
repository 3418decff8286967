/* The informer: LIST + WATCH one pool's pods, keep a cache, feed the pool (see informer.h).
 *
 * Flow: API server -> [informer: list/watch -> pod cache -> transitions] -> pool offer/withdraw.
 *
 * State machine of the informer thread (changed only in set_state, which logs old -> new):
 *
 *   LIST ──ok──► WATCH ──timeoutSeconds rotation / bookmark──► WATCH (from the last rv)
 *    ▲  ╲err      │ 410 Gone (event or HTTP)             │ network error, malformed or
 *    │   ▼        ▼                                      ▼ truncated event
 *    └─ BACKOFF ◄─┴─────── (relist: rv forgotten) ──── BACKOFF ──► WATCH (rv kept)
 *
 * Kubernetes behaviour relied on:
 * - A paged LIST (limit/continue) is one consistent snapshot; its resourceVersion is the
 *   point to WATCH from, so no change between LIST and WATCH is lost.
 * - A WATCH from resourceVersion R replays every change after R. Resuming from the last
 *   applied event's (or bookmark's) version after a dropped connection therefore misses
 *   nothing; an event replayed at a version already applied is recognised and ignored.
 * - When R has been compacted away the server says 410 Gone (as an ERROR event carrying a
 *   Status, or as the HTTP status): the only way on is a fresh LIST, and pods missing from
 *   it were deleted meanwhile (they are withdrawn from the pool).
 * - BOOKMARK events carry only a resourceVersion: progress without a change, so a quiet
 *   watch can resume from a recent version instead of hitting 410.
 *
 * The cache is touched only by the informer thread. The resync hook (pool scheduler thread)
 * raises `resync_req` and wakes the thread through curl_multi_wakeup; see informer.h for why.
 */
#include <podclaim/informer.h>

#include "kube_internal.h"
#include "podcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC__INF_PAGE 500u
#define PC__INF_WATCH_S 300u
#define PC__INF_BACKOFF_NS (100LL * 1000000LL)
#define PC__INF_BACKOFF_MAX_NS (10LL * 1000000000LL)
#define PC__INF_PATH_MAX 8192

#define PC__INF_STATE_MAP(XX)                                                                      \
    XX(IDLE, "idle")                                                                               \
    XX(LIST, "list")                                                                               \
    XX(WATCH, "watch")                                                                             \
    XX(BACKOFF, "backoff")                                                                         \
    XX(STOPPED, "stopped")

typedef enum inf_state {
#define PC_XX_ENUM(name, str) ST_##name,
    PC__INF_STATE_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            ST_COUNT
} inf_state;

static const char *const state_names[] = {
#define PC_XX_STR(name, str) str,
        PC__INF_STATE_MAP(PC_XX_STR)
#undef PC_XX_STR
};

static const char *const change_names[] = {
#define PC_XX_STR(name, str) str,
        PC_INFORMER_CHANGE_MAP(PC_XX_STR)
#undef PC_XX_STR
};

const char *pc_informer_change_name(pc_informer_change c)
{
    return (unsigned)c < PC_INFORMER_CHANGE_COUNT ? change_names[c] : "unknown";
}

/* Why a watch stream was stopped from inside the line callback. */
enum { STOP_GONE = 1, STOP_RESUME = 2 };

typedef struct counters {
    _Atomic uint64_t lists, relists, list_pages, list_bytes, watches, watch_events, duplicates,
            bookmarks, watch_bytes, reconnects, offers, withdrawals, resyncs, errors, pods, idle;
    _Atomic int64_t synced_at_ns, started_at_ns;
} counters;

struct pc_informer {
    /* fixed after new/set_pool: read by any thread */
    pc_kube_client *client;
    pc_pool *target;
    char namespace_[PC_NAMESPACE_MAX];
    char pool[64];
    char selector[128]; /* URL-encoded labelSelector value */
    uint32_t page_size;
    uint32_t watch_timeout_s;
    int64_t backoff_initial_ns, backoff_max_ns;
    size_t max_event;
    pc_informer_observer observer;
    void *observer_arg;
    pc_kube_conn *conn; /* created in new: resync_hook may wake it from any thread */

    /* cross-thread flags */
    _Atomic bool stop;       /* set by pc_informer_stop */
    _Atomic bool resync_req; /* set by the resync hook */
    _Atomic bool synced;
    bool started; /* controlling thread only */
    pthread_t thread;

    /* informer thread only */
    inf_state state;
    pc__podcache cache;
    char rv[PC_RV_MAX]; /* resume point; "" = relist needed */
    uint32_t gen;       /* LIST generation */
    uint32_t backoff_attempt;
    uint64_t rng;
    bool got_event;              /* the current watch applied or bookmarked something */
    pc__kube_stream *cur_stream; /* the watch being read; NULL between watches */
    int64_t received_ns;         /* arrival of the bytes being applied (observer timestamps) */

    counters n;
};

#define INC(f) atomic_fetch_add_explicit(&inf->n.f, 1, memory_order_relaxed)
#define ADD(f, v) atomic_fetch_add_explicit(&inf->n.f, (v), memory_order_relaxed)

static void set_state(pc_informer *inf, inf_state s, const char *why)
{
    if (inf->state == s)
        return;
    pc__kube_log(inf->client, s == ST_BACKOFF ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_DEBUG,
                 "informer=%s/%s state=%s->%s rv=%s why=\"%s\"", inf->namespace_, inf->pool,
                 state_names[inf->state], state_names[s], inf->rv[0] ? inf->rv : "-", why);
    inf->state = s;
}

/* ---- pool notifications ------------------------------------------------------------------ */

static void notify(pc_informer *inf, pc_informer_change ch, const pc__pod *p)
{
    pc_pod_ref ref = {p->namespace_, p->name, p->uid[0] ? p->uid : NULL, p->rv};
    int rc = 0;
    if (ch == PC_INFORMER_OFFER) {
        INC(offers);
        if (inf->target)
            rc = pc_pool_offer_idle(inf->target, &ref);
    } else {
        INC(withdrawals);
        if (inf->target)
            rc = pc_pool_withdraw(inf->target, &ref);
    }
    if (rc)
        pc__kube_log(inf->client, PC_KUBE_LOG_DEBUG, "informer=%s/%s pod=%s rv=%s %s=%d",
                     inf->namespace_, inf->pool, p->name, p->rv, pc_informer_change_name(ch), rc);
    if (inf->observer)
        inf->observer(inf->observer_arg, ch, &ref, inf->received_ns);
}

/* True when both versions are decimal numbers (etcd revisions, which every API server in
 * practice uses) and a < b. resourceVersions are formally opaque, so anything else compares
 * as "not older" and falls back to the equality check. */
static bool rv_older(const char *a, const char *b)
{
    size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
    if (!la || !lb || a[la] || b[lb])
        return false;
    while (la > 1 && *a == '0')
        a++, la--;
    while (lb > 1 && *b == '0')
        b++, lb--;
    return la != lb ? la < lb : strcmp(a, b) < 0;
}

/* Apply one observed pod version to the cache and tell the pool what changed.
 * `np` is a parsed pod on the stack; its owned parts move into the cache. */
static void apply(pc_informer *inf, pc__pod *np)
{
    pc__pod *old = pc__podcache_get(&inf->cache, np->namespace_, np->name);
    np->seen_gen = inf->gen;
    if (old && rv_older(np->rv, old->rv)) {
        /* An older version than the cache holds: a replay from before a LIST page that was
         * newer than the list's resourceVersion (servers whose pages are not one snapshot).
         * Applying it would roll the pod back and offer it again later. */
        INC(duplicates);
        old->seen_gen = inf->gen;
        pc__pod_clear(np);
        return;
    }
    if (old && strcmp(old->rv, np->rv) == 0) {
        /* Same version seen again (watch replay after a reconnect, or the LIST after a
         * relist): nothing changed, no transition to report. */
        INC(duplicates);
        old->seen_gen = inf->gen;
        pc__pod_clear(np);
        return;
    }
    bool was_idle = old && pc__pod_is_idle(old);
    bool is_idle = pc__pod_is_idle(np);
    if (old && old->uid[0] && np->uid[0] && strcmp(old->uid, np->uid) != 0 && was_idle) {
        /* Same name, new pod: the old incarnation is gone. */
        notify(inf, PC_INFORMER_WITHDRAW, old);
        atomic_fetch_sub_explicit(&inf->n.idle, 1, memory_order_relaxed);
        was_idle = false;
    }
    if (!old) {
        pc__pod *p = malloc(sizeof(*p));
        if (!p) {
            INC(errors);
            pc__pod_clear(np);
            return;
        }
        *p = *np;
        pc__podcache_insert(&inf->cache, p);
        old = p;
        INC(pods);
    } else {
        pc__pod *next = old->next;
        uint64_t hash = old->hash;
        pc__pod_clear(old);
        *old = *np;
        old->next = next;
        old->hash = hash;
    }
    if (is_idle && !was_idle)
        INC(idle);
    else if (!is_idle && was_idle)
        atomic_fetch_sub_explicit(&inf->n.idle, 1, memory_order_relaxed);
    /* An idle pod at a new version is offered again: the pool drops the old queue entry and
     * releases a reservation taken at the old version. */
    if (is_idle)
        notify(inf, PC_INFORMER_OFFER, old);
    else if (was_idle)
        notify(inf, PC_INFORMER_WITHDRAW, old);
}

static void drop(pc_informer *inf, pc__pod *p)
{
    if (pc__pod_is_idle(p))
        atomic_fetch_sub_explicit(&inf->n.idle, 1, memory_order_relaxed);
    /* Withdraw even a pod that was not idle: it may hold a reservation from a claim. */
    notify(inf, PC_INFORMER_WITHDRAW, p);
    pc__podcache_remove(&inf->cache, p);
    atomic_fetch_sub_explicit(&inf->n.pods, 1, memory_order_relaxed);
    pc__pod_clear(p);
    free(p);
}

static void resync(pc_informer *inf)
{
    pc__podcache_iter it;
    INC(resyncs);
    for (pc__pod *p = pc__podcache_first(&inf->cache, &it); p;
         p = pc__podcache_next(&inf->cache, &it))
        if (pc__pod_is_idle(p))
            notify(inf, PC_INFORMER_OFFER, p);
}

/* The conn's idle hook: runs on the informer thread between chunks and during waits. */
static bool on_wake(void *arg)
{
    pc_informer *inf = arg;
    /* acquire: pairs with the release in pc_informer_stop so that nothing written before the
     * stop request is missed; the flag itself is all that is read. */
    if (atomic_load_explicit(&inf->stop, memory_order_acquire))
        return true;
    if (atomic_load_explicit(&inf->resync_req, memory_order_relaxed) &&
        atomic_exchange_explicit(&inf->resync_req, false, memory_order_acq_rel))
        resync(inf);
    return false;
}

/* ---- LIST ------------------------------------------------------------------------------- */

/* Percent-encode a query value. Returns -EMSGSIZE if it does not fit. */
static int urlenc(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.' || *c == '~';
        if (o + (plain ? 1 : 3) >= len)
            return -EMSGSIZE;
        if (plain) {
            out[o++] = (char)*c;
        } else {
            out[o++] = '%';
            out[o++] = hex[*c >> 4];
            out[o++] = hex[*c & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

/* Apply one LIST page: every pod of "items", and metadata.resourceVersion / continue into
 * rv / cont (4096 bytes). A pod that is well-formed JSON but unusable is skipped with a
 * warning; malformed JSON ends the page. Returns 0, -EBADMSG, -EMSGSIZE. */
static int list_page(pc_informer *inf, const char *body, size_t len, char *rv, char *cont)
{
    pc__js js;
    char key[32];
    int rc;
    bool have_items = false;
    pc__js_init(&js, body, len);
    if ((rc = pc__js_obj_begin(&js)))
        goto bad;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (!strcmp(key, "metadata") && pc__js_peek(&js) == '{') {
            pc__js_obj_begin(&js);
            while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
                int n = 0;
                if (!strcmp(key, "resourceVersion") && pc__js_peek(&js) == '"')
                    n = pc__js_str(&js, rv, PC_RV_MAX);
                else if (!strcmp(key, "continue") && pc__js_peek(&js) == '"')
                    n = pc__js_str(&js, cont, 4096);
                else
                    n = pc__js_skip(&js);
                if (n == -EMSGSIZE) {
                    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                                 "informer=%s/%s msg=\"list %s too long\"", inf->namespace_,
                                 inf->pool, key);
                    return -EMSGSIZE;
                }
                if (n < 0)
                    goto bad;
            }
            if (rc < 0)
                goto bad;
        } else if (!strcmp(key, "items") && pc__js_peek(&js) == '[') {
            have_items = true;
            pc__js_arr_begin(&js);
            while ((rc = pc__js_arr_next(&js)) == 1) {
                pc__pod np;
                char err[160];
                memset(&np, 0, sizeof(np));
                int prc = pc__pod_scan(&js, &np, err, sizeof(err));
                if (prc == -EBADMSG) {
                    pc__pod_clear(&np);
                    goto bad;
                }
                if (prc) {
                    INC(errors);
                    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                                 "informer=%s/%s msg=\"skipping pod in list: %s\"", inf->namespace_,
                                 inf->pool, err);
                    pc__pod_clear(&np);
                    continue;
                }
                apply(inf, &np);
            }
            if (rc < 0)
                goto bad;
        } else if (pc__js_skip(&js)) {
            goto bad;
        }
    }
    if (rc < 0 || pc__js_end(&js))
        goto bad;
    if (!have_items || !rv[0]) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"malformed list page: no items or resourceVersion\"",
                     inf->namespace_, inf->pool);
        return -EBADMSG;
    }
    return 0;
bad:
    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                 "informer=%s/%s msg=\"malformed list page at byte %zu: %s\"", inf->namespace_,
                 inf->pool, (size_t)(js.p - body), js.why ? js.why : "?");
    return -EBADMSG;
}

/* One full paged LIST, applied to the cache; pods not in it are dropped. Returns 0 (inf->rv
 * set to the list's version), -ECANCELED (stop), or another negative errno. */
static int do_list(pc_informer *inf)
{
    char path[PC__INF_PATH_MAX], cont[4096] = "", enc[6144];
    int restarts = 0;
    char list_rv[PC_RV_MAX] = "";
    inf->rv[0] = '\0';
    inf->gen++;
    set_state(inf, ST_LIST, inf->n.lists ? "relist" : "initial sync");
    for (;;) {
        int n = snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s&limit=%u",
                         inf->namespace_, inf->selector, inf->page_size);
        if (cont[0]) {
            if (urlenc(cont, enc, sizeof(enc)) ||
                snprintf(path + n, sizeof(path) - (size_t)n, "&continue=%s", enc) >=
                        (int)(sizeof(path) - (size_t)n)) {
                pc__kube_log(inf->client, PC_KUBE_LOG_ERROR,
                             "informer=%s/%s msg=\"continue token too long\"", inf->namespace_,
                             inf->pool);
                return -EMSGSIZE;
            }
        }
        pc_kube_response r;
        int rc = pc_kube_conn_request(inf->conn, "GET", path, NULL, NULL, 0, &r);
        if (rc == 0 && r.status == 410) {
            /* The continue token expired (compaction): start the LIST over. */
            pc__kube_log(inf->client, PC_KUBE_LOG_INFO,
                         "informer=%s/%s msg=\"list continue token expired, restarting\"",
                         inf->namespace_, inf->pool);
            pc_kube_response_fini(&r);
            if (++restarts > 3)
                return -EAGAIN; /* keeps expiring: back off, then try again */
            cont[0] = '\0';
            inf->gen++;
            continue;
        }
        if (rc || r.status != 200) {
            pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"list failed: %s\"",
                         inf->namespace_, inf->pool, r.error);
            pc_kube_response_fini(&r);
            return rc ? rc : -EIO;
        }
        INC(list_pages);
        inf->received_ns = pc__kube_mono_ns();
        ADD(list_bytes, r.body_len);
        char page_rv[PC_RV_MAX] = "", next[sizeof(cont)] = "";
        int prc = list_page(inf, r.body ? r.body : "", r.body_len, page_rv, next);
        pc_kube_response_fini(&r);
        if (prc) {
            INC(errors);
            return prc;
        }
        /* The resume point only once the whole LIST is in: a LIST cut short (error, stop)
         * must be redone, not resumed from the middle. */
        snprintf(list_rv, sizeof(list_rv), "%s", page_rv);
        bool more = next[0] != '\0';
        if (more && strcmp(cont, next) == 0) {
            INC(errors);
            pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                         "informer=%s/%s msg=\"list continue token did not advance\"",
                         inf->namespace_, inf->pool);
            return -EBADMSG;
        }
        snprintf(cont, sizeof(cont), "%s", next);
        if (on_wake(inf))
            return -ECANCELED;
        if (!more)
            break;
    }
    snprintf(inf->rv, sizeof(inf->rv), "%s", list_rv);
    /* Sweep: pods the snapshot no longer has were deleted while we were not watching. */
    pc__podcache_iter it;
    for (pc__pod *p = pc__podcache_first(&inf->cache, &it); p;
         p = pc__podcache_next(&inf->cache, &it))
        if (p->seen_gen != inf->gen)
            drop(inf, p);
    INC(lists);
    if (!atomic_load_explicit(&inf->synced, memory_order_relaxed)) {
        atomic_store_explicit(&inf->n.synced_at_ns, pc__kube_mono_ns(), memory_order_relaxed);
        /* release: a thread that sees synced also sees the counters written before it */
        atomic_store_explicit(&inf->synced, true, memory_order_release);
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO, "informer=%s/%s msg=\"synced\" pods=%zu rv=%s",
                     inf->namespace_, inf->pool, inf->cache.count, inf->rv);
    }
    return 0;
}

/* ---- WATCH ------------------------------------------------------------------------------ */

/* The event's "type" and the bounds of its "object" (in either order). Returns 0 or -EBADMSG
 * with why set. */
static int event_split(const char *line, size_t len, char *type, size_t tcap, const char **obj,
                       size_t *olen, const char **why)
{
    pc__js js;
    char key[16];
    int rc;
    *obj = NULL;
    type[0] = '\0';
    pc__js_init(&js, line, len);
    if ((rc = pc__js_obj_begin(&js)) == 0) {
        while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
            if (!strcmp(key, "type") && pc__js_peek(&js) == '"') {
                if (pc__js_str(&js, type, tcap) < 0)
                    type[0] = '\0';
            } else if (!strcmp(key, "object") && pc__js_peek(&js) == '{') {
                *obj = js.p;
                if (pc__js_skip(&js))
                    break;
                *olen = (size_t)(js.p - *obj);
            } else if (pc__js_skip(&js)) {
                break;
            }
        }
    }
    if (rc < 0 || js.why || pc__js_end(&js)) {
        *why = js.why ? js.why : "malformed JSON";
        return -EBADMSG;
    }
    if (!type[0] || !*obj) {
        *why = "no type or object";
        return -EBADMSG;
    }
    return 0;
}

/* An ERROR event's Status: code and message. */
static long status_of(const char *obj, size_t len, char *msg, size_t cap)
{
    pc__js js;
    char key[16];
    long long code = 0;
    msg[0] = '\0';
    pc__js_init(&js, obj, len);
    if (pc__js_obj_begin(&js))
        return 0;
    while (pc__js_obj_key(&js, key, sizeof(key)) == 1) {
        if (!strcmp(key, "code") && pc__js_peek(&js) == '0') {
            if (pc__js_int(&js, &code))
                return 0;
        } else if (!strcmp(key, "message") && pc__js_peek(&js) == '"') {
            if (pc__js_str(&js, msg, cap) == -EMSGSIZE)
                msg[0] = '\0';
        } else if (pc__js_skip(&js)) {
            return 0;
        }
    }
    return (long)code;
}

static int on_line(void *arg, const char *line, size_t len)
{
    pc_informer *inf = arg;
    inf->received_ns = inf->cur_stream ? inf->cur_stream->chunk_at_ns : pc__kube_mono_ns();
    char type[16];
    const char *obj, *why = NULL;
    size_t olen = 0;
    if (event_split(line, len, type, sizeof(type), &obj, &olen, &why)) {
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"malformed watch event, resuming from rv %s: %s\"",
                     inf->namespace_, inf->pool, inf->rv, why);
        return STOP_RESUME;
    }
    if (strcmp(type, "ERROR") == 0) {
        char msg[200];
        long code = status_of(obj, olen, msg, sizeof(msg));
        int rc = code == 410 ? STOP_GONE : STOP_RESUME;
        if (rc != STOP_GONE)
            INC(errors);
        pc__kube_log(inf->client, rc == STOP_GONE ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"watch error event: %ld %s\"", inf->namespace_, inf->pool,
                     code, msg);
        return rc;
    }
    if (strcmp(type, "BOOKMARK") == 0) {
        char rv[PC_RV_MAX];
        if (pc__js_metadata_rv(obj, olen, rv, sizeof(rv)) > 0)
            snprintf(inf->rv, sizeof(inf->rv), "%s", rv);
        INC(bookmarks);
        inf->got_event = true;
        return 0;
    }
    bool deleted = strcmp(type, "DELETED") == 0;
    if (!deleted && strcmp(type, "ADDED") != 0 && strcmp(type, "MODIFIED") != 0) {
        pc__kube_log(inf->client, PC_KUBE_LOG_DEBUG, "informer=%s/%s msg=\"ignoring event %s\"",
                     inf->namespace_, inf->pool, type);
        return 0;
    }
    pc__pod np;
    pc__js js;
    char err[160];
    memset(&np, 0, sizeof(np));
    pc__js_init(&js, obj, olen);
    if (pc__pod_scan(&js, &np, err, sizeof(err)) != 0) {
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"bad pod in %s: %s\"",
                     inf->namespace_, inf->pool, type, err);
        pc__pod_clear(&np);
        return STOP_RESUME;
    }
    INC(watch_events);
    inf->got_event = true;
    char rv[PC_RV_MAX];
    snprintf(rv, sizeof(rv), "%s", np.rv);
    if (deleted) {
        pc__pod *old = pc__podcache_get(&inf->cache, np.namespace_, np.name);
        if (old)
            drop(inf, old);
        else
            INC(duplicates); /* replayed deletion */
        pc__pod_clear(&np);
    } else {
        apply(inf, &np);
    }
    snprintf(inf->rv, sizeof(inf->rv), "%s", rv);
    return 0;
}

/* One WATCH request. Returns 0 (rotation: resume), 1 (410: relist), -ECANCELED, or another
 * negative errno (reconnect with backoff, resuming from inf->rv). */
static int do_watch(pc_informer *inf)
{
    char path[PC__INF_PATH_MAX], rv[3 * PC_RV_MAX];
    /* resourceVersions are opaque: encode them like any query value */
    if (urlenc(inf->rv, rv, sizeof(rv)))
        return -EINVAL;
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=%s&watch=true&resourceVersion=%s"
             "&allowWatchBookmarks=true&timeoutSeconds=%u",
             inf->namespace_, inf->selector, rv, inf->watch_timeout_s);
    set_state(inf, ST_WATCH, "watching");
    INC(watches);
    inf->got_event = false;
    pc__kube_stream s = {
            .max_line = inf->max_event,
            .on_line = on_line,
            .arg = inf,
            /* The server ends the watch after timeoutSeconds; a silent dead peer is caught
             * by this client-side bound (plus TCP keep-alive). */
            .timeout_ns = ((int64_t)inf->watch_timeout_s + 30) * 1000000000LL,
    };
    pc_kube_response r;
    inf->cur_stream = &s;
    int rc = pc__kube_conn_stream(inf->conn, path, &s, &r);
    inf->cur_stream = NULL;
    ADD(watch_bytes, s.bytes);
    if (rc == -ECANCELED) {
        pc_kube_response_fini(&r);
        return rc;
    }
    if (rc == 0 && r.status == 410) {
        rc = 1;
    } else if (rc == 0 && r.status != 200) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"watch failed: %s\"",
                     inf->namespace_, inf->pool, r.error);
        rc = -EIO;
    } else if (rc == 0 && s.line_rc == STOP_GONE) {
        rc = 1;
    } else if (rc == 0 && s.line_rc == STOP_RESUME) {
        rc = -EBADMSG;
    } else if (rc == 0 && s.truncated) {
        /* The stream ended inside an event: the partial event is dropped; resuming from the
         * last applied version delivers it again. */
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO,
                     "informer=%s/%s msg=\"watch stream truncated (%zu bytes of a partial event)\"",
                     inf->namespace_, inf->pool, s.truncated);
        rc = -ECONNRESET;
    } else if (rc == -EMSGSIZE) {
        /* An event over max_event: we cannot apply it, and resuming would hit it again. The
         * LIST has its own (larger) body limit, so relist. */
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"%s; relisting\"",
                     inf->namespace_, inf->pool, r.error);
        rc = 1;
    } else if (rc) {
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO, "informer=%s/%s msg=\"watch ended: %s\"",
                     inf->namespace_, inf->pool, r.error);
    }
    pc_kube_response_fini(&r);
    return rc;
}

/* ---- thread ----------------------------------------------------------------------------- */

static uint64_t rnd(pc_informer *inf)
{
    uint64_t x = inf->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return inf->rng = x;
}

/* Wait before the next attempt: min(cap, initial * 2^attempt), jittered into [d/2, d] so
 * that many informers reconnecting after a server restart do not arrive together. */
static int backoff(pc_informer *inf, const char *why)
{
    set_state(inf, ST_BACKOFF, why);
    int64_t d = inf->backoff_initial_ns;
    for (uint32_t i = 0; i < inf->backoff_attempt && d < inf->backoff_max_ns; i++)
        d *= 2;
    if (d > inf->backoff_max_ns)
        d = inf->backoff_max_ns;
    d = d / 2 + (int64_t)(rnd(inf) % (uint64_t)(d / 2 + 1));
    inf->backoff_attempt++;
    return pc__kube_conn_sleep(inf->conn, d);
}

static void *informer_main(void *arg)
{
    pc_informer *inf = arg;
    pthread_setname_np(pthread_self(), "pc-informer");
    while (!on_wake(inf)) {
        int rc;
        if (!inf->rv[0]) {
            rc = do_list(inf);
            if (rc == -ECANCELED)
                break;
            if (rc) {
                inf->rv[0] = '\0';
                if (backoff(inf, "list failed") == -ECANCELED)
                    break;
                continue;
            }
            inf->backoff_attempt = 0;
        }
        int64_t began = pc__kube_mono_ns();
        rc = do_watch(inf);
        if (rc == -ECANCELED)
            break;
        if (rc == 0 && !inf->got_event && pc__kube_mono_ns() - began < 1000000000LL) {
            /* A watch that ended at once without a single event or bookmark: a server (or
             * proxy) closing watches early would otherwise have us reconnect in a hot loop. */
            rc = -ECONNRESET;
        }
        if (inf->got_event)
            inf->backoff_attempt = 0;
        if (rc == 1) {
            INC(relists);
            inf->rv[0] = '\0';
            continue;
        }
        if (rc < 0) {
            INC(reconnects);
            if (backoff(inf, "watch failed") == -ECANCELED)
                break;
        }
    }
    set_state(inf, ST_STOPPED, "stop requested");
    return NULL;
}

/* ---- public ----------------------------------------------------------------------------- */

int pc_informer_new(const pc_informer_config *cfg, pc_informer **out)
{
    if (!cfg || !cfg->client || !cfg->namespace_ || !cfg->pool || !cfg->namespace_[0] ||
        !cfg->pool[0] || strlen(cfg->namespace_) >= PC_NAMESPACE_MAX || strlen(cfg->pool) > 63)
        return -EINVAL;
    /* the namespace goes into URL paths unencoded: a DNS label only */
    if (strspn(cfg->namespace_, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(cfg->namespace_))
        return -EINVAL;
    pc_informer *inf = calloc(1, sizeof(*inf));
    if (!inf)
        return -ENOMEM;
    inf->client = cfg->client;
    inf->target = cfg->target;
    snprintf(inf->namespace_, sizeof(inf->namespace_), "%s", cfg->namespace_);
    snprintf(inf->pool, sizeof(inf->pool), "%s", cfg->pool);
    char sel[128];
    snprintf(sel, sizeof(sel), "podclaim.io/pool=%s", cfg->pool);
    if (urlenc(sel, inf->selector, sizeof(inf->selector))) {
        free(inf);
        return -EINVAL;
    }
    inf->page_size = cfg->page_size ? cfg->page_size : PC__INF_PAGE;
    inf->watch_timeout_s = cfg->watch_timeout_s ? cfg->watch_timeout_s : PC__INF_WATCH_S;
    inf->backoff_initial_ns =
            cfg->backoff_initial_ns > 0 ? cfg->backoff_initial_ns : PC__INF_BACKOFF_NS;
    inf->backoff_max_ns = cfg->backoff_max_ns > 0 ? cfg->backoff_max_ns : PC__INF_BACKOFF_MAX_NS;
    if (inf->backoff_max_ns < inf->backoff_initial_ns)
        inf->backoff_max_ns = inf->backoff_initial_ns;
    inf->max_event = cfg->max_event;
    inf->observer = cfg->observer;
    inf->observer_arg = cfg->observer_arg;
    inf->rng = (uint64_t)pc__kube_mono_ns() ^ (uint64_t)(uintptr_t)inf ^ 0x9e3779b97f4a7c15ULL;
    if (!inf->rng)
        inf->rng = 1;
    if (pc__podcache_init(&inf->cache) || pc_kube_conn_new(inf->client, &inf->conn)) {
        pc__podcache_fini(&inf->cache);
        free(inf);
        return -ENOMEM;
    }
    pc__kube_conn_set_idle(inf->conn, on_wake, inf);
    *out = inf;
    return 0;
}

void pc_informer_set_pool(pc_informer *inf, pc_pool *target)
{
    inf->target = target;
}

int pc_informer_start(pc_informer *inf)
{
    if (inf->started)
        return -EALREADY;
    /* A restart after pc_informer_stop: the thread has been joined, nothing reads the flag. */
    atomic_store_explicit(&inf->stop, false, memory_order_relaxed);
    atomic_store_explicit(&inf->n.started_at_ns, pc__kube_mono_ns(), memory_order_relaxed);
    int rc = pthread_create(&inf->thread, NULL, informer_main, inf);
    if (rc)
        return -rc;
    inf->started = true;
    return 0;
}

bool pc_informer_has_synced(const pc_informer *inf)
{
    /* acquire: pairs with the release store after the first sync */
    return atomic_load_explicit(&((pc_informer *)inf)->synced, memory_order_acquire);
}

void pc_informer_resync_hook(void *arg)
{
    pc_informer *inf = arg;
    /* release: nothing to publish but the request itself; acq_rel exchange on the informer
     * side consumes it exactly once. */
    atomic_store_explicit(&inf->resync_req, true, memory_order_release);
    pc__kube_conn_wakeup(inf->conn);
}

void pc_informer_stats_read(const pc_informer *cinf, pc_informer_stats *o)
{
    pc_informer *inf = (pc_informer *)cinf; /* atomic loads need a non-const object */
#define LD(f) o->f = atomic_load_explicit(&inf->n.f, memory_order_relaxed)
    LD(lists);
    LD(relists);
    LD(list_pages);
    LD(list_bytes);
    LD(watches);
    LD(watch_events);
    LD(duplicates);
    LD(bookmarks);
    LD(watch_bytes);
    LD(reconnects);
    LD(offers);
    LD(withdrawals);
    LD(resyncs);
    LD(errors);
    LD(pods);
    LD(idle);
    LD(synced_at_ns);
    LD(started_at_ns);
#undef LD
}

void pc_informer_stop(pc_informer *inf)
{
    if (!inf || !inf->started)
        return;
    /* release: pairs with the acquire in on_wake */
    atomic_store_explicit(&inf->stop, true, memory_order_release);
    pc__kube_conn_wakeup(inf->conn);
    pthread_join(inf->thread, NULL);
    inf->started = false;
}

void pc_informer_free(pc_informer *inf)
{
    if (!inf)
        return;
    pc_informer_stop(inf);
    pc_kube_conn_free(inf->conn);
    pc__podcache_fini(&inf->cache);
    free(inf);
}
