/* The informer core: the pod cache and its transitions, pool notifications, the thread and
 * its state machine, the public API (see informer.h). The LIST is in informer_list.c, the
 * WATCH in informer_watch.c; what they share is in informer_internal.h.
 *
 * Flow: API server -> [informer: list/watch -> pod cache -> transitions] -> pool offer/withdraw.
 *
 * State machine of the informer thread (changed only in pc__informer_set_state, which logs
 * old -> new):
 *
 *   LIST ──ok──► WATCH ──timeoutSeconds rotation / bookmark──► WATCH (from the last rv)
 *    ▲  ╲err      │ 410 Gone (event or HTTP),              │ network error, truncated event,
 *    │   ▼        │ 3rd API error in a row                 │ silent watch (watchdog), 429,
 *    │            ▼                                        ▼ an API error (ERROR event, HTTP)
 *    └─ BACKOFF ◄─┴─────── (relist: rv forgotten) ──── BACKOFF ──► WATCH (rv kept)
 *                   ▲                                                 │ after a cut or a
 *                   └── rv "too large" or 410 ◄── LIST 1 pod at rv ◄──┘ silent watch
 *                       (the server restarted with fresh versions)
 *
 * The backoff waits at least a 429's Retry-After. A pod that is well-formed but unusable is
 * skipped and counted (LIST and watch alike), never a reason to stop.
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
#include "informer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC__INF_PAGE 500u
#define PC__INF_WATCH_S 300u
#define PC__INF_BACKOFF_NS (100LL * 1000000LL)
#define PC__INF_BACKOFF_MAX_NS (10LL * 1000000000LL)
#define PC__INF_WATCH_IDLE_NS (90LL * 1000000000LL)

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

#define INC(f) PC__INF_INC(inf, f)
#define ADD(f, v) PC__INF_ADD(inf, f, v)

void pc__informer_set_state(pc_informer *inf, pc__inf_state s, const char *why)
{
    if (inf->state == s)
        return;
    pc__kube_log(inf->client, s == PC__INF_BACKOFF ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_DEBUG,
                 "informer=%s/%s state=%s->%s rv=%s why=\"%s\"", inf->namespace_, inf->pool,
                 state_names[inf->state], state_names[s], inf->rv[0] ? inf->rv : "-", why);
    inf->state = s;
}

/* ---- pool notifications ------------------------------------------------------------------ */

/* claimed: a withdrawal of a pod that has just taken a claim id (p->claim_id): the pool
 * also learns whose, so a claim whose PATCH timed out but was applied ends OK with it. The
 * observer sees a WITHDRAW either way. */
static void notify(pc_informer *inf, pc_informer_change ch, const pc__pod *p, bool claimed)
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
            rc = claimed ? pc_pool_observe_claimed(inf->target, &ref, p->claim_id)
                         : pc_pool_withdraw(inf->target, &ref);
    }
    if (rc)
        pc__kube_log(inf->client, PC_KUBE_LOG_DEBUG, "informer=%s/%s pod=%s rv=%s %s=%d",
                     inf->namespace_, inf->pool, p->name, p->rv, pc_informer_change_name(ch), rc);
    if (inf->observer)
        inf->observer(inf->observer_arg, ch, &ref, inf->received_ns);
}

/* The claim id `p` is held by, or NULL: a claim's PATCH sets the id and a phase other than
 * these three (DESIGN.md §2); a release moves it to Stopping, a recycle back to Starting/Idle. */
static const char *held_by(const pc__pod *p)
{
    if (!p->claim_id || p->deleting || strcmp(p->phase, "Idle") == 0 ||
        strcmp(p->phase, "Stopping") == 0 || strcmp(p->phase, "Starting") == 0)
        return NULL;
    return p->claim_id;
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

static bool other_uid(const pc__pod *a, const pc__pod *b)
{
    return a->uid[0] && b->uid[0] && strcmp(a->uid, b->uid) != 0;
}

void pc__informer_apply(pc_informer *inf, pc__pod *np, bool from_list)
{
    pc__pod *old = pc__podcache_get(&inf->cache, np->namespace_, np->name);
    np->seen_gen = inf->gen;
    if (old && !from_list && rv_older(np->rv, old->rv)) {
        /* An older version than the cache holds, in a watch: a replay from before a LIST
         * page that was newer than the list's resourceVersion (servers whose pages are not
         * one snapshot). Applying it would roll the pod back and offer it again later.
         * Not for a LIST item: a LIST is the truth, also when versions went backwards (an
         * etcd restore, a server swap); keeping the newer cached state would keep a phantom
         * that every claim meets with a 409. */
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
    /* A pod we knew, not idle now, carrying a claim id it did not carry before: someone's
     * claim was just applied to it (ours, maybe one whose answer was lost). Pods first seen
     * already claimed (a LIST at start) are no news to this pool's claims. */
    bool claimed = !is_idle && np->claim_id != NULL && old != NULL && !other_uid(old, np) &&
                   (old->claim_id == NULL || strcmp(old->claim_id, np->claim_id) != 0);
    /* For the owner (on_claimed): a pod now held by a claim it was not held by in this cache,
     * whether we knew the pod or not. A pod first seen held (a LIST at start, after a server
     * swap) is how a replica learns of claims won through another process. */
    const char *held = held_by(np), *was_held = old && !other_uid(old, np) ? held_by(old) : NULL;
    bool newly_held = held && (!was_held || strcmp(was_held, held) != 0);
    if (old && other_uid(old, np)) {
        /* Same name, new pod: the old incarnation is gone. Withdrawn whatever its state:
         * a pod that is not idle may still hold a reservation from a claim. */
        notify(inf, PC_INFORMER_WITHDRAW, old, false);
        if (was_idle)
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
        notify(inf, PC_INFORMER_OFFER, old, false);
    else if (was_idle || claimed)
        notify(inf, PC_INFORMER_WITHDRAW, old, claimed);
    if (newly_held && inf->on_claimed) {
        pc_pod_ref ref = {old->namespace_, old->name, old->uid[0] ? old->uid : NULL, old->rv};
        inf->on_claimed(inf->observer_arg, &ref, old->claim_id);
    }
}

void pc__informer_drop(pc_informer *inf, pc__pod *p)
{
    if (pc__pod_is_idle(p))
        atomic_fetch_sub_explicit(&inf->n.idle, 1, memory_order_relaxed);
    /* Withdraw even a pod that was not idle: it may hold a reservation from a claim. */
    notify(inf, PC_INFORMER_WITHDRAW, p, false);
    pc__podcache_remove(&inf->cache, p);
    atomic_fetch_sub_explicit(&inf->n.pods, 1, memory_order_relaxed);
    pc__pod_clear(p);
    free(p);
}

int pc__informer_remove(pc_informer *inf, const pc__pod *np, bool same_uid)
{
    pc__pod *old = pc__podcache_get(&inf->cache, np->namespace_, np->name);
    if (!old)
        return 0;
    /* A deletion of another incarnation (the pod was recreated under the same name and the
     * cache already holds the new one), or an older version replayed: not about the pod we
     * hold. */
    if ((same_uid && other_uid(old, np)) || (np->rv[0] && rv_older(np->rv, old->rv)))
        return -1;
    pc__informer_drop(inf, old);
    return 1;
}

static void resync(pc_informer *inf)
{
    pc__podcache_iter it;
    INC(resyncs);
    for (pc__pod *p = pc__podcache_first(&inf->cache, &it); p;
         p = pc__podcache_next(&inf->cache, &it))
        if (pc__pod_is_idle(p))
            notify(inf, PC_INFORMER_OFFER, p, false);
}

/* The conn's idle hook: runs on the informer thread between chunks and during waits. */
bool pc__informer_on_wake(void *arg)
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

/* Percent-encode a query value. Returns -EMSGSIZE if it does not fit. */
int pc__informer_urlenc(const char *s, char *out, size_t len)
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
 * that many informers reconnecting after a server restart do not arrive together; and never
 * less than the Retry-After the server gave (429). */
static int backoff(pc_informer *inf, const char *why)
{
    pc__informer_set_state(inf, PC__INF_BACKOFF, why);
    int64_t d = inf->backoff_initial_ns;
    for (uint32_t i = 0; i < inf->backoff_attempt && d < inf->backoff_max_ns; i++)
        d *= 2;
    if (d > inf->backoff_max_ns)
        d = inf->backoff_max_ns;
    d = d / 2 + (int64_t)(rnd(inf) % (uint64_t)(d / 2 + 1));
    if (d < inf->retry_after_ns)
        d = inf->retry_after_ns;
    inf->retry_after_ns = 0;
    inf->backoff_attempt++;
    return pc__kube_conn_sleep(inf->conn, d);
}

static void *informer_main(void *arg)
{
    pc_informer *inf = arg;
    pthread_setname_np(pthread_self(), "pc-informer");
    while (!pc__informer_on_wake(inf)) {
        int rc;
        if (!inf->rv[0]) {
            rc = pc__informer_list(inf);
            if (rc == -ECANCELED)
                break;
            if (rc) {
                inf->rv[0] = '\0';
                if (backoff(inf, "list failed") == -ECANCELED)
                    break;
                continue;
            }
            inf->backoff_attempt = 0;
            inf->watch_failures = 0;
            inf->check_rv = false;
        }
        if (inf->check_rv) {
            rc = pc__informer_check_rv(inf);
            if (rc == -ECANCELED)
                break;
            if (rc == 1) /* rv forgotten: relist */
                continue;
            if (rc < 0) {
                INC(reconnects);
                if (backoff(inf, "rv check failed") == -ECANCELED)
                    break;
                continue;
            }
            inf->check_rv = false;
        }
        int64_t began = pc__kube_mono_ns();
        rc = pc__informer_watch(inf);
        if (rc == -ECANCELED)
            break;
        if (rc == 0 && !inf->got_event && pc__kube_mono_ns() - began < 1000000000LL) {
            /* A watch that ended at once without a single event or bookmark: a server (or
             * proxy) closing watches early would otherwise have us reconnect in a hot loop. */
            rc = -ECONNRESET;
        }
        if (inf->got_event) {
            inf->backoff_attempt = 0;
            if (rc >= 0)
                inf->watch_failures = 0;
        }
        /* Cut (a transfer failure, a stall), or silent for its whole life: the server behind
         * it may be a new one that has not reached rv, which accepts a watch from it and says
         * nothing. Not after an answer of the server (an API error, a 429): that one is
         * counted above, or says "later". */
        inf->check_rv = (rc == 0 && !inf->got_event) ||
                        (rc < 0 && rc != -EIO && rc != -EBADMSG && rc != -EAGAIN);
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
    pc__informer_set_state(inf, PC__INF_STOPPED, "stop requested");
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
    if (pc__informer_urlenc(sel, inf->selector, sizeof(inf->selector))) {
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
    inf->watch_idle_timeout_ns =
            cfg->watch_idle_timeout_ns > 0 ? cfg->watch_idle_timeout_ns : PC__INF_WATCH_IDLE_NS;
    inf->observer = cfg->observer;
    inf->on_claimed = cfg->on_claimed;
    inf->observer_arg = cfg->observer_arg;
    inf->rng = (uint64_t)pc__kube_mono_ns() ^ (uint64_t)(uintptr_t)inf ^ 0x9e3779b97f4a7c15ULL;
    if (!inf->rng)
        inf->rng = 1;
    if (pc__podcache_init(&inf->cache) || pc_kube_conn_new(inf->client, &inf->conn)) {
        pc__podcache_fini(&inf->cache);
        free(inf);
        return -ENOMEM;
    }
    pc__kube_conn_set_idle(inf->conn, pc__informer_on_wake, inf);
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
    LD(skipped);
    LD(stalls);
    LD(throttled);
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
    /* release: pairs with the acquire in pc__informer_on_wake */
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
