/* kapi-sim watch streams: each watch is a cursor into the store's event history.
 *
 * Batching: under a stream of writes, waking every watcher for every write costs a futex wake,
 * a lock round and a send per watcher per event; measured here that capped live fan-out at
 * ~80k events/s and cut concurrent PATCH throughput to a third. So after a watch has sent
 * something it gathers for batch_ns (default 500 us, --watch-batch-us) before sending again,
 * without being woken by each commit. An event after a quiet period goes out at once; only a
 * busy stream waits, and at most batch_ns.
 *
 * An event is serialised once, at commit (ks_event.line); a watcher copies the lines that pass
 * its filters into its own buffer under the store mutex and hands them to MHD after unlocking,
 * so fan-out costs one memcpy per watcher per event and no JSON work. A watcher blocks on the
 * store condvar (one connection thread each: MHD thread-per-connection mode) with the nearest
 * of its deadlines (timeoutSeconds, next bookmark, injected drop, a delayed event) as timeout.
 * A watcher that falls behind the bounded history gets 410 Expired, like a compacted resume.
 * One that starts ahead of the store (a resourceVersion not reached yet) is silent until the
 * store passes it, as on kube-apiserver: only a LIST answers "Too large resource version".
 */
#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define WATCH_BATCH (256u << 10) /* bytes gathered per wake before handing them to MHD */
/* An idle watch looks at its socket this often: a client that went away is otherwise noticed
 * only at the next write, and its connection thread would wait for an event until then. */
#define PEER_CHECK_NS 1000000000LL

struct ks_watch {
    ks_store *s;
    ks_faults *f;
    const ks_res *res;
    char *ns; /* NULL = all namespaces */
    ks_lsel *lsel;
    ks_fsel *fsel;
    uint64_t cursor; /* every event with rev <= cursor has been considered */
    bool bookmarks;
    bool expired;        /* send a 410 ERROR event, then end */
    bool finished;       /* end after draining buf */
    bool drop;           /* end abruptly after draining buf (injected fault) */
    int64_t deadline_ns; /* timeoutSeconds; 0 = none */
    int64_t drop_at_ns;  /* injected drop; 0 = none */
    int64_t bookmark_every_ns;
    int64_t next_bookmark_ns;
    uint64_t drop_after; /* events; 0 = never */
    uint64_t sent;       /* events sent (not bookmarks) */
    int peer_fd;         /* <= 0 = unknown */
    ks_waiter waiter;    /* registered with the store while the watch exists */
    int64_t batch_ns;
    bool table;
    int64_t last_send_ns; /* when the last batch of events was gathered; 0 = never */
    int64_t next_peer_check_ns;
    json_t *initial; /* synthetic ADDED objects still to send (array) */
    size_t initial_i;
    char *buf; /* pending output: buf[off, len) */
    size_t len, off, cap;
};

static bool buf_put(ks_watch *w, const char *p, size_t n)
{
    if (w->len + n > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->len + n)
            nc *= 2;
        char *nb = realloc(w->buf, nc);
        if (!nb)
            return false;
        w->buf = nb;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return true;
}

static bool matches(const ks_watch *w, const json_t *obj)
{
    if (!obj)
        return false;
    const json_t *md = json_object_get(obj, "metadata");
    if (w->ns) {
        const char *ns = json_string_value(json_object_get(md, "namespace"));
        if (!ns || strcmp(ns, w->ns) != 0)
            return false;
    }
    return ks_lsel_match(w->lsel, json_object_get(md, "labels")) && ks_fsel_match(w->fsel, obj);
}

ks_watch *ks_watch_new(ks_store *s, ks_faults *f, const ks_watch_opts *o, ks_err *err)
{
    ks_watch *w = calloc(1, sizeof *w);
    if (!w) {
        ks_lsel_free(o->lsel);
        ks_fsel_free(o->fsel);
        ks_err_set(err, 500, "InternalError", "out of memory");
        return NULL;
    }
    w->s = s;
    w->f = f;
    w->res = o->res;
    w->ns = o->ns ? strdup(o->ns) : NULL;
    w->lsel = o->lsel;
    w->fsel = o->fsel;
    w->bookmarks = o->bookmarks;
    w->peer_fd = o->peer_fd;
    w->batch_ns = o->batch_ns;
    w->table = o->table;
    int64_t now = ks_now_ns();
    w->next_peer_check_ns = now + PEER_CHECK_NS;
    w->deadline_ns = o->timeout_ns > 0 ? now + o->timeout_ns : 0;
    w->bookmark_every_ns = o->bookmark_ns > 0 ? o->bookmark_ns : 1000000000;
    w->next_bookmark_ns = now + w->bookmark_every_ns;
    ks_fault_cfg fc = ks_faults_get(f);
    w->drop_after = fc.watch_drop_events;
    w->drop_at_ns = fc.watch_drop_ms > 0 ? now + fc.watch_drop_ms * 1000000 : 0;

    bool initial = !o->rv || !*o->rv || strcmp(o->rv, "0") == 0;
    uint64_t from = 0;
    if (!initial) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(o->rv, &end, 10);
        if (errno || *end || o->rv[0] == '-') {
            ks_err_set(err, 400, "BadRequest", "invalid resource version: %.60s", o->rv);
            ks_watch_free(w);
            return NULL;
        }
        from = v;
    }
    pthread_mutex_lock(&s->mu);
    if (initial) {
        /* No resourceVersion: the current state as ADDED events first, then changes. */
        w->initial = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(s->objs[o->res->id], k, v)
        {
            if (matches(w, v))
                json_array_append(w->initial, v);
        }
        w->cursor = s->rev;
    } else {
        w->cursor = from;
        if (from < s->compacted || from + 1 < s->lo)
            w->expired = true;
    }
    ks_waiter_add_locked(s, &w->waiter);
    w->waiter.res = o->res->id;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(&f->watches_open, 1, memory_order_relaxed);
    return w;
}

void ks_watch_free(ks_watch *w)
{
    if (!w)
        return;
    if (w->f) { /* fully constructed */
        atomic_fetch_sub_explicit(&w->f->watches_open, 1, memory_order_relaxed);
        pthread_mutex_lock(&w->s->mu);
        ks_waiter_remove_locked(w->s, &w->waiter);
        pthread_mutex_unlock(&w->s->mu);
    }
    free(w->ns);
    ks_lsel_free(w->lsel);
    ks_fsel_free(w->fsel);
    json_decref(w->initial);
    free(w->buf);
    free(w);
}

static void put_expired(ks_watch *w, uint64_t oldest)
{
    char line[400];
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                     "\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource "
                     "version: %" PRIu64 " (%" PRIu64 ")\",\"reason\":\"Expired\",\"code\":410}}\n",
                     w->cursor, oldest);
    buf_put(w, line, (size_t)n);
    w->expired = false;
    w->finished = true;
}

static void put_bookmark(ks_watch *w)
{
    char line[300];
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"%s\",\"apiVersion\":\"%s\","
                     "\"metadata\":{\"resourceVersion\":\"%" PRIu64 "\"}}}\n",
                     w->res->kind, w->res->api_version, w->cursor);
    buf_put(w, line, (size_t)n);
}

/* An event with the object as a Table (a slow path: only kubectl asks for it). */
static bool put_table(ks_watch *w, const char *type, const json_t *obj)
{
    json_t *t = ks_table(w->res, obj);
    char *d = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    char pfx[64];
    int n = snprintf(pfx, sizeof pfx, "{\"type\":\"%s\",\"object\":", type);
    bool ok = d && buf_put(w, pfx, (size_t)n) && buf_put(w, d, strlen(d)) && buf_put(w, "}\n", 2);
    free(d);
    return ok;
}

/* Append the line for e as seen through this watch's filters; returns whether one was sent. */
static bool put_event(ks_watch *w, const ks_event *e)
{
    if (e->res != w->res->id)
        return false;
    bool mn = matches(w, e->obj);
    bool mo = e->type == KS_EV_MODIFIED && matches(w, e->old);
    if (w->table) {
        if (mn)
            return put_table(w, mo || e->type != KS_EV_MODIFIED ? ks_ev_names[e->type] : "ADDED",
                             e->obj);
        return mo && put_table(w, "DELETED", e->old);
    }
    if (e->type != KS_EV_MODIFIED || (mn && mo)) {
        return mn && buf_put(w, e->line, e->line_len);
    }
    if (mn) { /* entered the selection: ADDED with the new state */
        static const char mod[] = "{\"type\":\"MODIFIED\",";
        return buf_put(w, "{\"type\":\"ADDED\",", 16) &&
               buf_put(w, e->line + sizeof mod - 1, e->line_len - (sizeof mod - 1));
    }
    if (mo) { /* left the selection: DELETED with the old state at the new revision */
        json_t *o = json_deep_copy(e->old);
        char rv[24];
        snprintf(rv, sizeof rv, "%" PRIu64, e->rev);
        json_object_set_new(json_object_get(o, "metadata"), "resourceVersion", json_string(rv));
        char *d = json_dumps(o, JSON_COMPACT);
        bool ok = d && buf_put(w, "{\"type\":\"DELETED\",\"object\":", 27) &&
                  buf_put(w, d, strlen(d)) && buf_put(w, "}\n", 2);
        free(d);
        json_decref(o);
        return ok;
    }
    return false;
}

static void deadline_min(int64_t *wake, int64_t t)
{
    if (t > 0 && (*wake == 0 || t < *wake))
        *wake = t;
}

/* Gather output into w->buf; called with the store mutex held. Returns false at end. */
static void gather_locked(ks_watch *w, int64_t delay_ns)
{
    ks_store *s = w->s;
    for (;;) {
        int64_t now = ks_now_ns();
        if (s->shutdown) {
            w->finished = true;
            return;
        }
        if (w->cursor + 1 < s->lo) /* fell out of the ring; compaction alone ends no watch */
            w->expired = true;
        if (w->expired) {
            put_expired(w, s->lo > s->compacted + 1 ? s->lo - 1 : s->compacted);
            return;
        }
        if (w->deadline_ns && now >= w->deadline_ns) {
            w->finished = true;
            return;
        }
        if (w->drop_at_ns && now >= w->drop_at_ns) {
            w->drop = true;
            return;
        }
        if (w->peer_fd > 0 && now >= w->next_peer_check_ns) {
            char c;
            if (recv(w->peer_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                w->drop = true; /* hung up: nobody to send to */
                return;
            }
            w->next_peer_check_ns = now + PEER_CHECK_NS;
        }
        int64_t wake = 0;
        int64_t due_ns = 0; /* the next event is delayed until then (--watch-delay-ms) */
        uint64_t n0 = w->sent;
        while (w->cursor < s->rev && w->len < WATCH_BATCH) {
            const ks_event *e = ks_store_event_locked(s, w->cursor + 1);
            /* another resource's event is nothing to this watch, delayed or not: step over
             * it now rather than wake at its delivery time to do so */
            if (delay_ns && e->res == w->res->id && e->at_ns + delay_ns > now) {
                due_ns = e->at_ns + delay_ns;
                break;
            }
            w->cursor++;
            if (put_event(w, e) && ++w->sent == w->drop_after) {
                w->drop = true;
                break;
            }
        }
        if (w->sent != n0) {
            atomic_fetch_add_explicit(&w->f->watch_events, w->sent - n0, memory_order_relaxed);
            w->last_send_ns = now;
        }
        /* A watch from a version the store has not reached (a client of an earlier kapi-sim
         * lifetime: revisions start again at 1) gets nothing until the store passes it, not
         * even a bookmark: the watch cache sends a watcher only what is newer than its
         * version, bookmarks included (measured on kube-apiserver v1.34: realk8s/diff
         * TestFutureResourceVersion). */
        if (w->bookmarks && now >= w->next_bookmark_ns) {
            if (w->cursor <= s->rev)
                put_bookmark(w);
            w->next_bookmark_ns = now + w->bookmark_every_ns;
        }
        if (w->len > w->off || w->drop)
            return;
        deadline_min(&wake, w->deadline_ns);
        deadline_min(&wake, w->drop_at_ns);
        if (w->bookmarks)
            deadline_min(&wake, w->next_bookmark_ns);
        if (w->peer_fd > 0)
            deadline_min(&wake, w->next_peer_check_ns);
        int64_t gap_end = w->last_send_ns ? w->last_send_ns + w->batch_ns : 0;
        bool batching = w->batch_ns && gap_end > now;
        if (due_ns) {
            /* A delayed event is next: no commit can bring anything forward (later commits are
             * due later), so only its time wakes us; while batching, the end of the gap if that
             * is later (the events due by then go out together). */
            deadline_min(&wake, batching && gap_end > due_ns ? gap_end : due_ns);
            w->waiter.waiting = false;
        } else if (batching) {
            deadline_min(&wake, gap_end); /* batching: commits do not wake us */
            w->waiter.waiting = false;
        } else {
            w->waiter.waiting = true;
        }
        w->waiter.catch_up = w->cursor + s->hist_cap / 2;
        if (wake) {
            struct timespec ts = {.tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000};
            pthread_cond_timedwait(&w->waiter.cv, &s->mu, &ts);
        } else {
            pthread_cond_wait(&w->waiter.cv, &s->mu);
        }
        w->waiter.waiting = false;
    }
}

long ks_watch_read(ks_watch *w, char *out, size_t max)
{
    if (w->off == w->len) {
        w->off = w->len = 0;
        if (w->drop)
            return -1;
        if (w->finished)
            return 0;
        if (w->initial && w->initial_i < json_array_size(w->initial)) {
            /* Serialise the synthetic ADDED events outside the lock, a batch at a time. */
            while (w->initial_i < json_array_size(w->initial) && w->len < WATCH_BATCH) {
                const json_t *o = json_array_get(w->initial, w->initial_i++);
                if (w->table) {
                    w->sent += put_table(w, "ADDED", o);
                    continue;
                }
                char *d = json_dumps(o, JSON_COMPACT);
                if (d) {
                    buf_put(w, "{\"type\":\"ADDED\",\"object\":", 25);
                    buf_put(w, d, strlen(d));
                    buf_put(w, "}\n", 2);
                    free(d);
                    w->sent++;
                }
            }
        } else {
            int64_t delay_ns = ks_faults_get(w->f).watch_delay_ms * 1000000;
            pthread_mutex_lock(&w->s->mu);
            gather_locked(w, delay_ns);
            pthread_mutex_unlock(&w->s->mu);
            if (w->off == w->len)
                return w->drop ? -1 : 0;
        }
    }
    size_t n = w->len - w->off;
    if (n > max)
        n = max;
    memcpy(out, w->buf + w->off, n);
    w->off += n;
    return (long)n;
}
