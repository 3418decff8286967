/* Internals of the informer shared by its three files: the core (informer.c: cache updates,
 * pool notifications, the thread and its state machine, the public API), the LIST
 * (informer_list.c) and the WATCH (informer_watch.c).
 *
 * Flow: API server -> [list | watch] -> [core: pod cache -> transitions] -> pool.
 *
 * Everything here runs on the informer thread unless a field says otherwise (STYLE: one
 * owner thread for the cache). Not a public header.
 */
#ifndef PODCLAIM_INFORMER_INTERNAL_H
#define PODCLAIM_INFORMER_INTERNAL_H

#include <podclaim/informer.h>

#include "kube_internal.h"
#include "podcache.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define PC__INF_PATH_MAX 8192

#define PC__INF_STATE_MAP(XX)                                                                      \
    XX(IDLE, "idle")                                                                               \
    XX(LIST, "list")                                                                               \
    XX(WATCH, "watch")                                                                             \
    XX(BACKOFF, "backoff")                                                                         \
    XX(STOPPED, "stopped")

typedef enum pc__inf_state {
#define PC_XX_ENUM(name, str) PC__INF_##name,
    PC__INF_STATE_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            PC__INF_STATE_COUNT
} pc__inf_state;

/* Why a watch stream was stopped from inside the line callback. */
enum { PC__INF_STOP_GONE = 1, PC__INF_STOP_RESUME = 2 };

typedef struct pc__inf_counters {
    _Atomic uint64_t lists, relists, list_pages, list_bytes, watches, watch_events, duplicates,
            bookmarks, watch_bytes, reconnects, offers, withdrawals, resyncs, errors, skipped,
            stalls, throttled, pods, idle;
    _Atomic int64_t synced_at_ns, started_at_ns;
} pc__inf_counters;

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
    int64_t watch_idle_timeout_ns;
    pc_informer_observer observer;
    pc_informer_claimed_fn on_claimed;
    void *observer_arg;
    pc_kube_conn *conn; /* created in new: resync_hook may wake it from any thread */

    /* cross-thread flags */
    _Atomic bool stop;       /* set by pc_informer_stop */
    _Atomic bool resync_req; /* set by the resync hook */
    _Atomic bool synced;
    bool started; /* controlling thread only */
    pthread_t thread;

    /* informer thread only */
    pc__inf_state state;
    pc__podcache cache;
    char rv[PC_RV_MAX]; /* resume point; "" = relist needed */
    uint32_t gen;       /* LIST generation */
    uint32_t backoff_attempt;
    uint32_t watch_failures; /* API errors on the watch in a row, without progress between */
    int64_t retry_after_ns;  /* the next backoff waits at least this long (429); 0 = none */
    uint64_t rng;
    bool got_event;              /* the current watch applied or bookmarked something */
    bool check_rv;               /* ask whether the server still has rv before resuming */
    pc__kube_stream *cur_stream; /* the watch being read; NULL between watches */
    int64_t received_ns;         /* arrival of the bytes being applied (observer timestamps) */

    pc__inf_counters n;
};

#define PC__INF_INC(inf, f) atomic_fetch_add_explicit(&(inf)->n.f, 1, memory_order_relaxed)
#define PC__INF_ADD(inf, f, v) atomic_fetch_add_explicit(&(inf)->n.f, (v), memory_order_relaxed)

/* ---- core (informer.c) ------------------------------------------------------------------- */

/* Change state, logging old -> new with the reason. */
void pc__informer_set_state(pc_informer *inf, pc__inf_state s, const char *why);

/* Apply one observed pod version (a LIST item, from_list, or a watch event) to the cache and
 * tell the pool what changed. `np` is a parsed pod on the caller's stack; its owned parts
 * move into the cache (or are freed): the caller must not clear it afterwards. */
void pc__informer_apply(pc_informer *inf, pc__pod *np, bool from_list);

/* A watch says the pod `np` names is gone (DELETED), or shows a version of it we cannot hold:
 * drop the cached pod and withdraw it, unless the event is stale: an older resourceVersion
 * than cached, or (same_uid, for DELETED) another incarnation's. Returns 1 (dropped), 0 (not
 * cached) or -1 (stale, ignored). np stays the caller's. */
int pc__informer_remove(pc_informer *inf, const pc__pod *np, bool same_uid);

/* Remove a cached pod and withdraw it from the pool. */
void pc__informer_drop(pc_informer *inf, pc__pod *p);

/* The conn's idle hook: true when the informer is asked to stop; runs a pending resync. */
bool pc__informer_on_wake(void *arg);

/* Percent-encode a query value. Returns 0 or -EMSGSIZE if it does not fit in len. */
int pc__informer_urlenc(const char *s, char *out, size_t len);

/* ---- LIST (informer_list.c) -------------------------------------------------------------- */

/* One full paged LIST, applied to the cache; pods not in it are dropped. Returns 0 (inf->rv
 * set to the list's version), -ECANCELED (stop), or another negative errno. */
int pc__informer_list(pc_informer *inf);

/* Apply one LIST page: every pod of "items", and metadata.resourceVersion / continue into
 * rv (PC_RV_MAX) / cont (4096 bytes). Returns 0, -EBADMSG, -EMSGSIZE. */
int pc__informer_list_page(pc_informer *inf, const char *body, size_t len, char *rv, char *cont);

/* After the last page of LIST generation inf->gen: drop (and withdraw) every cached pod the
 * LIST did not show. */
void pc__informer_list_sweep(pc_informer *inf);

/* ---- WATCH (informer_watch.c) ------------------------------------------------------------ */

/* One WATCH request. Returns 0 (rotation: resume), 1 (410: relist), -ECANCELED, or another
 * negative errno (reconnect with backoff, resuming from inf->rv). */
int pc__informer_watch(pc_informer *inf);

/* Before resuming after a watch that was cut or heard nothing: does the server still have
 * inf->rv? (A LIST of one pod at it, NotOlderThan.) Returns 0 (resume), 1 (relist: 410, or
 * "Too large resource version"), -ECANCELED, or another negative errno (back off, ask again;
 * an API error counts as a watch failure). */
int pc__informer_check_rv(pc_informer *inf);

/* Handle one watch event line (the framer's callback). Returns 0 to go on, or
 * PC__INF_STOP_GONE / PC__INF_STOP_RESUME to end the stream. */
int pc__informer_watch_line(void *arg, const char *line, size_t len);

#endif /* PODCLAIM_INFORMER_INTERNAL_H */
