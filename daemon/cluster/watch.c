/* A generic LIST+WATCH with an object cache (see watch.h).
 *
 * Flow: API server -> [LIST pages -> WATCH stream -> cache + index] -> on_change callbacks.
 *
 * Thread loop (one thread per watch), as src/informer does it:
 *   rv == ""  -> paged LIST (one snapshot), objects absent from it are DELETED, rv = list rv
 *   WATCH from rv with bookmarks; each event moves rv; timeoutSeconds ends it -> WATCH again
 *   410 Gone (ERROR event or HTTP status), "Too large resource version" (504 with cause
 *     ResourceVersionTooLarge), an event line over the limit -> relist
 *   an API error (HTTP status, non-410 ERROR event, malformed event) -> backoff, WATCH from
 *     rv; the 3rd in a row without progress -> relist (the informer's rule; client-go
 *     relists after one)
 *   anything else (network, truncated event) -> backoff, WATCH from rv
 * Before resuming after a watch that was cut or heard nothing (no event, no bookmark), a
 * LIST of one item at rv (NotOlderThan) asks whether the server still has rv: a restarted
 * kapi-sim, or an etcd restored without --bump-revision, counts from 1 again, and
 * kube-apiserver accepts a WATCH from a version it has not reached and sends nothing (not
 * even bookmarks) until it gets there. Only the LIST says so: after 3 s, 504 Timeout with
 * cause ResourceVersionTooLarge (measured on v1.34: realk8s/diff TestFutureResourceVersion).
 * Then relist: the cache converges to the new server's objects.
 * An event at the cached version is a replay (after a reconnect) and changes nothing; one at
 * an older decimal version too.
 *
 * Locking: `mu` guards `cache` and `index` only (in pod mode: the pod table and its groups);
 * the watch thread is their only writer. Readers copy references out under it. No other lock
 * is taken while `mu` is held.
 */
#include "watch.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_ 8192
#define MIN_BUCKETS 1024u

/* Pod mode: one entry per cached pod in a chained hash table keyed "ns/name", and in the
 * group of its index label value ("ns/value"), where `gi` is its slot (removal swaps the
 * last entry in). Watch thread writes, under mu. */
typedef struct pod_group pod_group;
typedef struct pod_entry {
    struct pod_entry *next;
    pc_watch_pod *p;
    pod_group *group; /* NULL: no index label */
    size_t gi;
    uint64_t hash;
    uint32_t list_gen; /* the last LIST that had it */
    char key[];
} pod_entry;

struct pod_group {
    pod_group *next;
    pod_entry **items;
    size_t n, cap;
    char key[];
};
#define STOP_GONE 1
#define STOP_RESUME 2
#define RELIST_AFTER 3u /* API errors in a row on the watch, without progress between */

struct pc_watch {
    /* fixed after new */
    pc_kube_client *client;
    char *path;
    char *selector_enc; /* URL-encoded, "" = none */
    char *index_label;
    char *name;
    uint32_t page_size, watch_timeout_s;
    int64_t backoff_initial_ns, backoff_max_ns;
    pc_watch_fn on_change;
    pc_watch_sync_fn on_sync;
    bool pods;
    pc_watch_pod_fn on_pod;
    void *arg;
    pc_cluster_log log;
    pc_kube_conn *conn;

    _Atomic bool stop;
    _Atomic bool synced;
    bool started;
    pthread_t thread;

    pthread_mutex_t mu;
    json_t *cache;       /* "ns/name" -> object */
    json_t *index;       /* "ns/value" -> {"ns/name": object} */
    pod_entry **buckets; /* pod mode, instead of cache and index */
    size_t nbuckets, npods;
    pod_group *groups;
    uint32_t list_gen; /* pod mode: generation of the LIST in progress (watch thread) */

    /* watch thread only */
    char rv[64];
    uint32_t backoff_attempt;
    uint64_t rng;
    bool got_event;
    uint32_t watch_failures; /* API errors in a row, without progress between */
    bool check_rv;           /* ask the server whether it still has rv before resuming */

    _Atomic uint64_t n_lists, n_relists, n_watches, n_events, n_bookmarks, n_errors;
};

#define INC(f) atomic_fetch_add_explicit(&w->f, 1, memory_order_relaxed)
#define LOG(lvl, ...) pc__cl_log(&w->log, lvl, "watch", __VA_ARGS__)

static void obj_key(const json_t *obj, char *buf, size_t len)
{
    const char *ns = pc__cl_jstr(obj, "metadata.namespace");
    const char *name = pc__cl_jstr(obj, "metadata.name");
    snprintf(buf, len, "%s/%s", ns ? ns : "", name ? name : "");
}

static bool index_key(const pc_watch *w, const json_t *obj, char *buf, size_t len)
{
    if (!w->index_label)
        return false;
    const char *v = pc__cl_label(obj, w->index_label);
    if (!v)
        return false;
    const char *ns = pc__cl_jstr(obj, "metadata.namespace");
    snprintf(buf, len, "%s/%s", ns ? ns : "", v);
    return true;
}

/* Under mu: replace (obj != NULL) or remove the cached object at key, keeping the index. */
static void cache_set_locked(pc_watch *w, const char *key, const json_t *old, json_t *obj)
{
    char ik[512];
    if (old && index_key(w, old, ik, sizeof(ik))) {
        json_t *set = json_object_get(w->index, ik);
        json_object_del(set, key);
        if (set && json_object_size(set) == 0)
            json_object_del(w->index, ik);
    }
    if (obj) {
        json_object_set(w->cache, key, obj);
        if (index_key(w, obj, ik, sizeof(ik))) {
            json_t *set = json_object_get(w->index, ik);
            if (!set) {
                set = json_object();
                json_object_set_new(w->index, ik, set);
            }
            json_object_set(set, key, obj);
        }
    } else {
        json_object_del(w->cache, key);
    }
}

/* Apply one observed object (ADDED/MODIFIED, or from a LIST). Steals nothing. */
static void apply(pc_watch *w, json_t *obj)
{
    char key[512];
    obj_key(obj, key, sizeof(key));
    const char *rv = pc__cl_jstr(obj, "metadata.resourceVersion");
    pthread_mutex_lock(&w->mu);
    json_t *old = json_incref(json_object_get(w->cache, key));
    const char *orv = old ? pc__cl_jstr(old, "metadata.resourceVersion") : NULL;
    if (old && orv && rv && (strcmp(orv, rv) == 0 || pc__cl_rv_older(rv, orv))) {
        /* a replay after a reconnect, or an older version than the cache holds */
        pthread_mutex_unlock(&w->mu);
        json_decref(old);
        return;
    }
    cache_set_locked(w, key, old, obj);
    pthread_mutex_unlock(&w->mu);
    if (w->on_change)
        w->on_change(w->arg, old ? PC_WATCH_MODIFIED : PC_WATCH_ADDED, obj, old);
    json_decref(old);
}

static void remove_obj(pc_watch *w, const json_t *obj)
{
    char key[512];
    obj_key(obj, key, sizeof(key));
    pthread_mutex_lock(&w->mu);
    json_t *old = json_incref(json_object_get(w->cache, key));
    if (old)
        cache_set_locked(w, key, old, NULL);
    pthread_mutex_unlock(&w->mu);
    if (old && w->on_change)
        w->on_change(w->arg, PC_WATCH_DELETED, obj, old);
    json_decref(old);
}

/* ---- pod mode: the table ------------------------------------------------------------------ */

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)k; *s; s++)
        h = (h ^ *s) * 1099511628211ULL;
    return h;
}

static pc_watch_pod *wp_ref(pc_watch_pod *p)
{
    /* relaxed: the caller already holds a reference (or mu, under which the cache holds one) */
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void pc_watch_pod_unref(pc_watch_pod *p)
{
    if (!p)
        return;
    /* acq_rel: every holder's reads of the summary happen before the last one frees it */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
        pc_kube_pod_free((pc_kube_pod *)p->pod);
        free(p);
    }
}

void pc_watch_pods_free(pc_watch_pod **pods, long n)
{
    for (long i = 0; i < n; i++)
        pc_watch_pod_unref(pods[i]);
    free(pods);
}

static pod_entry *find_locked(pc_watch *w, const char *key, uint64_t h)
{
    if (!w->nbuckets)
        return NULL;
    for (pod_entry *e = w->buckets[h & (w->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* Keep the load factor at most 1. A failed growth leaves the table as it was (longer
 * chains, still correct). */
static void grow_locked(pc_watch *w)
{
    if (w->npods < w->nbuckets)
        return;
    size_t nb = w->nbuckets ? w->nbuckets * 2 : MIN_BUCKETS;
    pod_entry **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < w->nbuckets; i++) {
        for (pod_entry *e = w->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(w->buckets);
    w->buckets = b;
    w->nbuckets = nb;
}

static void unlink_locked(pc_watch *w, pod_entry *e)
{
    pod_entry **pp = &w->buckets[e->hash & (w->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    w->npods--;
}

static void ungroup_locked(pod_entry *e)
{
    pod_group *g = e->group;
    if (!g)
        return;
    pod_entry *last = g->items[--g->n];
    g->items[e->gi] = last;
    last->gi = e->gi;
    e->group = NULL;
}

/* Put e in the group of its pod's index label value. Groups are per pool: few, never freed
 * before the watch. Returns 0 or -ENOMEM (then e is in no group). */
static int group_locked(pc_watch *w, pod_entry *e)
{
    const char *v = w->index_label ? pc_kube_pod_label(e->p->pod, w->index_label) : NULL;
    if (!v)
        return 0;
    char gk[512];
    snprintf(gk, sizeof(gk), "%s/%s", e->p->pod->namespace_, v);
    pod_group *g = w->groups;
    while (g && strcmp(g->key, gk) != 0)
        g = g->next;
    if (!g) {
        size_t kl = strlen(gk) + 1;
        if (!(g = calloc(1, sizeof(*g) + kl)))
            return -ENOMEM;
        memcpy(g->key, gk, kl);
        g->next = w->groups;
        w->groups = g;
    }
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 64;
        pod_entry **ni = realloc(g->items, nc * sizeof(*ni));
        if (!ni)
            return -ENOMEM;
        g->items = ni;
        g->cap = nc;
    }
    e->group = g;
    e->gi = g->n;
    g->items[g->n++] = e;
    return 0;
}

/* Apply one observed pod (ADDED/MODIFIED, or a LIST item); takes pod. Returns 0 or -ENOMEM. */
static int apply_pod(pc_watch *w, pc_kube_pod *pod)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", pod->namespace_, pod->name);
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&w->mu);
    pod_entry *e = find_locked(w, key, h);
    if (e) {
        e->list_gen = w->list_gen;
        const char *orv = e->p->pod->resource_version, *rv = pod->resource_version;
        if (orv[0] && rv[0] && (strcmp(orv, rv) == 0 || pc__cl_rv_older(rv, orv))) {
            /* a replay after a reconnect, or an older version than the cache holds */
            pthread_mutex_unlock(&w->mu);
            pc_kube_pod_free(pod);
            return 0;
        }
    }
    pc_watch_pod *np = calloc(1, sizeof(*np));
    size_t kl = strlen(key) + 1;
    pod_entry *ne = e ? NULL : malloc(sizeof(*ne) + kl);
    if (!np || (!e && !ne)) {
        pthread_mutex_unlock(&w->mu);
        free(np);
        free(ne);
        pc_kube_pod_free(pod);
        return -ENOMEM;
    }
    np->pod = pod;
    atomic_init(&np->refs, 1); /* the cache's */
    pc_watch_pod *old = NULL;
    int rc = 0;
    if (e) {
        old = e->p; /* the cache's reference passes to this function */
        ungroup_locked(e);
        e->p = np;
    } else {
        e = ne;
        *e = (pod_entry){.p = np, .hash = h, .list_gen = w->list_gen};
        memcpy(e->key, key, kl);
        grow_locked(w);
        e->next = w->buckets[h & (w->nbuckets - 1)];
        w->buckets[h & (w->nbuckets - 1)] = e;
        w->npods++;
    }
    rc = group_locked(w, e);
    pthread_mutex_unlock(&w->mu);
    if (w->on_pod)
        w->on_pod(w->arg, old ? PC_WATCH_MODIFIED : PC_WATCH_ADDED, pod, old ? old->pod : NULL);
    pc_watch_pod_unref(old);
    return rc;
}

/* A DELETED event: `pod` (borrowed) is the pod's last state. */
static void remove_pod(pc_watch *w, const pc_kube_pod *pod)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", pod->namespace_, pod->name);
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&w->mu);
    pod_entry *e = find_locked(w, key, h);
    if (e) {
        ungroup_locked(e);
        unlink_locked(w, e);
    }
    pthread_mutex_unlock(&w->mu);
    if (!e)
        return;
    if (w->on_pod)
        w->on_pod(w->arg, PC_WATCH_DELETED, pod, e->p->pod);
    pc_watch_pod_unref(e->p);
    free(e);
}

/* After a complete LIST: the pods it did not have were deleted meanwhile. */
static void sweep_pods(pc_watch *w)
{
    pod_entry *gone = NULL;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nbuckets; i++) {
        for (pod_entry *e = w->buckets[i], *next; e; e = next) {
            next = e->next;
            if (e->list_gen != w->list_gen) {
                ungroup_locked(e);
                unlink_locked(w, e);
                e->next = gone;
                gone = e;
            }
        }
    }
    pthread_mutex_unlock(&w->mu);
    for (pod_entry *e = gone, *next; e; e = next) {
        next = e->next;
        if (w->on_pod)
            w->on_pod(w->arg, PC_WATCH_DELETED, e->p->pod, e->p->pod);
        pc_watch_pod_unref(e->p);
        free(e);
    }
}

static bool on_wake(void *arg)
{
    pc_watch *w = arg;
    /* acquire: pairs with the release in pc_watch_stop */
    return atomic_load_explicit(&w->stop, memory_order_acquire);
}

/* ---- LIST ---------------------------------------------------------------------------------- */

/* The URL of one LIST page: the collection, the page size, the selector, the continue token
 * of the page before ("" for the first). Returns 0 or -EMSGSIZE. */
static int page_path(const pc_watch *w, const char *cont, char *path, size_t len)
{
    char enc[6144];
    int n = snprintf(path, len, "%s?limit=%u%s%s", w->path, w->page_size,
                     w->selector_enc[0] ? "&labelSelector=" : "", w->selector_enc);
    if (n < 0 || (size_t)n >= len)
        return -EMSGSIZE;
    if (cont[0] &&
        (pc__cl_urlenc(cont, enc, sizeof(enc)) ||
         snprintf(path + n, len - (size_t)n, "&continue=%s", enc) >= (int)(len - (size_t)n)))
        return -EMSGSIZE;
    return 0;
}

/* After a LIST page: keep its continue token for the next page (-EBADMSG when the server
 * hands back the one just used: no progress), -ECANCELED when asked to stop; 1 after the
 * last page (w->rv = the list's version, where the watch starts), else 0. */
static int page_done(pc_watch *w, const char *next, char *cont, size_t cont_len,
                     const char *list_rv)
{
    bool more = next && next[0];
    if (more && strcmp(next, cont) == 0)
        return -EBADMSG;
    snprintf(cont, cont_len, "%s", more ? next : "");
    if (on_wake(w))
        return -ECANCELED;
    if (more)
        return 0;
    snprintf(w->rv, sizeof(w->rv), "%s", list_rv);
    return 1;
}

static int do_list(pc_watch *w)
{
    char path[PATH_MAX_], cont[4096] = "";
    json_t *seen = json_object();
    int restarts = 0, rc = 0;
    w->rv[0] = '\0';
    for (;;) {
        if ((rc = page_path(w, cont, path, sizeof(path))) != 0)
            break;
        long status;
        json_t *page;
        char err[512];
        rc = pc__cl_request(w->conn, "GET", path, NULL, NULL, &status, &page, err, sizeof(err));
        if (rc == 0 && status == 410) {
            /* the continue token expired (compaction): start over */
            if (++restarts > 3) {
                rc = -EAGAIN;
                break;
            }
            cont[0] = '\0';
            json_object_clear(seen);
            continue;
        }
        if (rc || status != 200 || !page) {
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"list failed: %s\"", w->name, err);
            json_decref(page);
            rc = rc ? rc : -EIO;
            break;
        }
        json_t *items = json_object_get(page, "items");
        const char *prv = pc__cl_jstr(page, "metadata.resourceVersion");
        const char *next = pc__cl_jstr(page, "metadata.continue");
        if (!json_is_array(items) || !prv) {
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"malformed list page\"", w->name);
            json_decref(page);
            rc = -EBADMSG;
            break;
        }
        size_t i;
        json_t *obj;
        json_array_foreach(items, i, obj)
        {
            char key[512];
            obj_key(obj, key, sizeof(key));
            json_object_set_new(seen, key, json_true());
            apply(w, obj);
        }
        int step = page_done(w, next, cont, sizeof(cont), prv);
        json_decref(page); /* next and prv point into it */
        if (step < 0)
            rc = step;
        if (step != 0)
            break;
    }
    if (rc == 0) {
        /* sweep: cached objects the snapshot no longer has were deleted meanwhile */
        json_t *gone = json_array();
        pthread_mutex_lock(&w->mu);
        const char *k;
        json_t *v;
        json_object_foreach(w->cache, k, v)
        {
            if (!json_object_get(seen, k))
                json_array_append(gone, v);
        }
        pthread_mutex_unlock(&w->mu);
        size_t i;
        json_array_foreach(gone, i, v) remove_obj(w, v);
        json_decref(gone);
        INC(n_lists);
        bool first = !atomic_load_explicit(&w->synced, memory_order_relaxed);
        /* release: a reader that sees synced sees the cache filled before it */
        atomic_store_explicit(&w->synced, true, memory_order_release);
        if (first)
            LOG(PC_KUBE_LOG_INFO, "watch=%s msg=\"synced\" objects=%zu rv=%s", w->name,
                json_object_size(w->cache), w->rv);
        if (w->on_sync)
            w->on_sync(w->arg);
    }
    json_decref(seen);
    return rc;
}

/* Pod mode: one LIST item. */
static int list_item(void *arg, const char *item, size_t len)
{
    pc_watch *w = arg;
    pc_kube_pod *pod;
    char err[256];
    int rc = pc_kube_pod_decode(item, len, &pod, err, sizeof(err));
    if (rc == -EINVAL) {
        INC(n_errors); /* a pod we cannot key: skipped, as the informer does */
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"list item skipped: %s\"", w->name, err);
        return 0;
    }
    if (rc)
        return rc;
    return apply_pod(w, pod);
}

/* Pod mode: the paged LIST, scanned without a tree. Same protocol as do_list. */
static int do_list_pods(pc_watch *w)
{
    char path[PATH_MAX_], cont[4096] = "", next[4096], prv[64];
    int restarts = 0, rc = 0;
    w->rv[0] = '\0';
    w->list_gen++;
    for (;;) {
        if ((rc = page_path(w, cont, path, sizeof(path))) != 0)
            break;
        pc_kube_response r;
        rc = pc_kube_conn_request(w->conn, "GET", path, NULL, NULL, 0, &r);
        if (rc == 0 && r.status == 410) {
            /* the continue token expired (compaction): start over, a new snapshot */
            pc_kube_response_fini(&r);
            if (++restarts > 3) {
                rc = -EAGAIN;
                break;
            }
            cont[0] = '\0';
            w->list_gen++;
            continue;
        }
        if (rc || r.status != 200 || !r.body) {
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"list failed: %s\"", w->name, r.error);
            pc_kube_response_fini(&r);
            rc = rc ? rc : -EIO;
            break;
        }
        rc = pc_kube_list_scan(r.body, r.body_len, list_item, w, prv, sizeof(prv), next,
                               sizeof(next));
        pc_kube_response_fini(&r);
        if (rc) {
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"malformed list page (%d)\"", w->name, rc);
            rc = rc == -ENOMEM ? rc : -EBADMSG;
            break;
        }
        int step = page_done(w, next, cont, sizeof(cont), prv);
        if (step < 0)
            rc = step;
        if (step != 0)
            break;
    }
    if (rc == 0) {
        sweep_pods(w);
        INC(n_lists);
        bool first = !atomic_load_explicit(&w->synced, memory_order_relaxed);
        /* release: a reader that sees synced sees the cache filled before it */
        atomic_store_explicit(&w->synced, true, memory_order_release);
        if (first)
            LOG(PC_KUBE_LOG_INFO, "watch=%s msg=\"synced\" objects=%zu rv=%s", w->name, w->npods,
                w->rv);
        if (w->on_sync)
            w->on_sync(w->arg);
    }
    return rc;
}

/* ---- WATCH --------------------------------------------------------------------------------- */

/* Pod mode: one watch event, scanned without a tree (the ERROR Status aside). */
static int on_line_pods(pc_watch *w, const char *line, size_t len)
{
    char type[16], err[256];
    const char *obj;
    size_t olen;
    if (pc_kube_watch_event_scan(line, len, type, sizeof(type), &obj, &olen)) {
        INC(n_errors);
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"malformed watch event, resuming from rv %s\"",
            w->name, w->rv);
        return STOP_RESUME;
    }
    if (strcmp(type, "ERROR") == 0) {
        json_t *st = json_loadb(obj, olen, 0, NULL);
        json_int_t code = json_integer_value(json_object_get(st, "code"));
        bool gone = code == 410 || pc_kube_status_too_large(obj, olen);
        LOG(gone ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_WARN,
            "watch=%s msg=\"watch error event: %lld %s\"", w->name, (long long)code,
            json_string_value(json_object_get(st, "message")) ?: "");
        json_decref(st);
        return gone ? STOP_GONE : STOP_RESUME;
    }
    char rv[sizeof(w->rv)] = "";
    if (strcmp(type, "BOOKMARK") == 0) {
        INC(n_bookmarks);
        w->got_event = true;
        pc_kube_object_rv(obj, olen, rv, sizeof(rv));
    } else if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0 ||
               strcmp(type, "DELETED") == 0) {
        INC(n_events);
        w->got_event = true;
        pc_kube_pod *pod;
        int rc = pc_kube_pod_decode(obj, olen, &pod, err, sizeof(err));
        if (rc == -EINVAL) {
            INC(n_errors);
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"event skipped: %s\"", w->name, err);
            pc_kube_object_rv(obj, olen, rv, sizeof(rv));
        } else if (rc) {
            INC(n_errors);
            LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"bad watch event, resuming from rv %s: %s\"",
                w->name, w->rv, err);
            return STOP_RESUME;
        } else {
            snprintf(rv, sizeof(rv), "%s", pod->resource_version);
            if (type[0] == 'D') {
                remove_pod(w, pod);
                pc_kube_pod_free(pod);
            } else if (apply_pod(w, pod)) {
                INC(n_errors);
                return STOP_RESUME; /* out of memory: try again from rv */
            }
        }
    }
    if (rv[0])
        snprintf(w->rv, sizeof(w->rv), "%s", rv);
    return 0;
}

static int on_line(void *arg, const char *line, size_t len)
{
    pc_watch *w = arg;
    if (w->pods)
        return on_line_pods(w, line, len);
    json_error_t je;
    json_t *ev = json_loadb(line, len, 0, &je);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    if (!type || !json_is_object(obj)) {
        INC(n_errors);
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"malformed watch event, resuming from rv %s: %s\"",
            w->name, w->rv, ev ? "no type or object" : je.text);
        json_decref(ev);
        return STOP_RESUME;
    }
    int rc = 0;
    const char *rv = pc__cl_jstr(obj, "metadata.resourceVersion");
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(obj, "code"));
        /* the object's text, for the client's check (a rare path: parsing twice is fine) */
        const char *otext = NULL;
        size_t olen = 0;
        char t[16];
        pc_kube_watch_event_scan(line, len, t, sizeof(t), &otext, &olen);
        rc = code == 410 || pc_kube_status_too_large(otext, olen) ? STOP_GONE : STOP_RESUME;
        LOG(rc == STOP_GONE ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_WARN,
            "watch=%s msg=\"watch error event: %lld %s\"", w->name, (long long)code,
            json_string_value(json_object_get(obj, "message")) ?: "");
    } else if (strcmp(type, "BOOKMARK") == 0) {
        INC(n_bookmarks);
        w->got_event = true;
    } else if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0) {
        INC(n_events);
        w->got_event = true;
        apply(w, obj);
    } else if (strcmp(type, "DELETED") == 0) {
        INC(n_events);
        w->got_event = true;
        remove_obj(w, obj);
    }
    if (rc == 0 && rv)
        snprintf(w->rv, sizeof(w->rv), "%s", rv);
    json_decref(ev);
    return rc;
}

/* An answer whose body is a "Too large resource version" Status. */
static bool status_too_large(const pc_kube_response *r)
{
    return r->status == 504 && pc_kube_status_too_large(r->body, r->body_len);
}

/* Does the server still have w->rv? A LIST of one item at it (NotOlderThan): 0 yes (resume),
 * 1 no (relist: 410, or 504 "Too large resource version" after the server's 3 s wait),
 * -EIO an API error, -EAGAIN a 429, another negative errno a transfer failure. */
static int check_rv(pc_watch *w)
{
    char path[PATH_MAX_], rv[200];
    if (pc__cl_urlenc(w->rv, rv, sizeof(rv)))
        return -EINVAL;
    int n = snprintf(path, sizeof(path),
                     "%s?limit=1&resourceVersion=%s&resourceVersionMatch=NotOlderThan%s%s", w->path,
                     rv, w->selector_enc[0] ? "&labelSelector=" : "", w->selector_enc);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -EMSGSIZE;
    pc_kube_response r;
    int rc = pc_kube_conn_request(w->conn, "GET", path, NULL, NULL, 0, &r);
    if (rc == 0 && (r.status == 410 || status_too_large(&r))) {
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"the server no longer has rv %s (%ld %s); relisting\"",
            w->name, w->rv, r.status, r.error);
        rc = 1;
    } else if (rc == 0 && r.status == 429) {
        rc = -EAGAIN; /* "later" (after the client's own Retry-After waits): no failure */
    } else if (rc == 0 && r.status != 200) {
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"rv check failed: %s\"", w->name, r.error);
        rc = -EIO;
    } else if (rc && rc != -ECANCELED) {
        LOG(PC_KUBE_LOG_INFO, "watch=%s msg=\"rv check: %s\"", w->name, r.error);
    }
    pc_kube_response_fini(&r);
    return rc;
}

/* An API-level failure (an HTTP error, a non-410 ERROR event, a malformed event): a single one
 * resumes at the same version, but RELIST_AFTER in a row without progress between mean the
 * server keeps refusing it: forget it (as src/informer does). Returns whether to relist. */
static bool watch_failed(pc_watch *w)
{
    if (++w->watch_failures < RELIST_AFTER)
        return false;
    LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"relisting after %u API errors in a row\"", w->name,
        w->watch_failures);
    w->watch_failures = 0;
    return true;
}

/* One WATCH. Returns 0 (rotation), 1 (relist), -ECANCELED, or another negative errno. */
static int do_watch(pc_watch *w)
{
    char path[PATH_MAX_], rv[200];
    if (pc__cl_urlenc(w->rv, rv, sizeof(rv)))
        return -EINVAL;
    snprintf(path, sizeof(path),
             "%s?watch=true&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%u%s%s",
             w->path, rv, w->watch_timeout_s, w->selector_enc[0] ? "&labelSelector=" : "",
             w->selector_enc);
    INC(n_watches);
    w->got_event = false;
    pc_kube_response r;
    int line_rc = 0;
    /* the server ends the watch after timeoutSeconds; this bound catches a silent dead peer */
    int rc =
            pc_kube_conn_stream(w->conn, path, 0, ((int64_t)w->watch_timeout_s + 30) * 1000000000LL,
                                on_line, w, &line_rc, &r);
    if (rc == 0 && (r.status == 410 || status_too_large(&r)))
        rc = 1;
    else if (rc == 0 && r.status != 200) {
        LOG(PC_KUBE_LOG_WARN, "watch=%s msg=\"watch failed: %s\"", w->name, r.error);
        rc = -EIO;
    } else if (rc == 0 && line_rc == STOP_GONE)
        rc = 1;
    else if (rc == 0 && line_rc == STOP_RESUME)
        rc = -EBADMSG;
    else if (rc == -EMSGSIZE)
        rc = 1; /* an event we cannot hold: resuming would hit it again */
    else if (rc && rc != -ECANCELED)
        LOG(PC_KUBE_LOG_INFO, "watch=%s msg=\"watch ended: %s\"", w->name, r.error);
    pc_kube_response_fini(&r);
    return rc;
}

static int backoff(pc_watch *w)
{
    int64_t d = w->backoff_initial_ns;
    for (uint32_t i = 0; i < w->backoff_attempt && d < w->backoff_max_ns; i++)
        d *= 2;
    if (d > w->backoff_max_ns)
        d = w->backoff_max_ns;
    d = d / 2 + (int64_t)(pc__cl_rand(&w->rng) % (uint64_t)(d / 2 + 1));
    w->backoff_attempt++;
    return pc_kube_conn_sleep(w->conn, d);
}

/* After a check or a watch that did not go on: a relist (the server said the version is gone,
 * or API errors repeated), else an error and a backoff. -ECANCELED when stopping. */
static int failed_step(pc_watch *w, bool relist)
{
    if (relist) {
        INC(n_relists);
        w->rv[0] = '\0';
        return 0;
    }
    INC(n_errors);
    return backoff(w) == -ECANCELED ? -ECANCELED : 0;
}

static void *watch_main(void *arg)
{
    pc_watch *w = arg;
    pthread_setname_np(pthread_self(), "pc-watch");
    while (!on_wake(w)) {
        int rc;
        if (!w->rv[0]) {
            rc = w->pods ? do_list_pods(w) : do_list(w);
            if (rc == -ECANCELED)
                break;
            if (rc) {
                INC(n_errors);
                w->rv[0] = '\0';
                if (backoff(w) == -ECANCELED)
                    break;
                continue;
            }
            w->backoff_attempt = 0;
            w->watch_failures = 0;
            w->check_rv = false;
        }
        if (w->check_rv) {
            rc = check_rv(w);
            if (rc == -ECANCELED)
                break;
            if (rc == 1 || rc < 0) {
                if (failed_step(w, rc == 1 || (rc == -EIO && watch_failed(w))) == -ECANCELED)
                    break;
                continue;
            }
            w->check_rv = false;
        }
        int64_t began = pc__cl_mono_ns();
        rc = do_watch(w);
        if (rc == -ECANCELED)
            break;
        if (rc == 0 && !w->got_event && pc__cl_mono_ns() - began < 1000000000LL)
            rc = -ECONNRESET; /* a watch closed at once: no hot reconnect loop */
        if (w->got_event) {
            w->backoff_attempt = 0;
            w->watch_failures = 0;
        }
        /* Cut (a transfer failure), or silent for its whole life: is the server behind it
         * still one that has rv? Not after an API error: the server answered, and those are
         * counted (watch_failed). */
        w->check_rv = (rc == 0 && !w->got_event) || (rc < 0 && rc != -EIO && rc != -EBADMSG);
        if ((rc == 1 || rc < 0) && failed_step(w, rc == 1 || ((rc == -EIO || rc == -EBADMSG) &&
                                                              watch_failed(w))) == -ECANCELED)
            break;
    }
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

int pc_watch_new(const pc_watch_config *cfg, pc_watch **out)
{
    if (!cfg || !cfg->client || !cfg->path || cfg->path[0] != '/')
        return -EINVAL;
    pc_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    char enc[1024] = "";
    if (cfg->label_selector && pc__cl_urlenc(cfg->label_selector, enc, sizeof(enc))) {
        free(w);
        return -EINVAL;
    }
    w->client = cfg->client;
    w->path = strdup(cfg->path);
    w->selector_enc = strdup(enc);
    w->index_label = cfg->index_label ? strdup(cfg->index_label) : NULL;
    w->name = strdup(cfg->name ? cfg->name : cfg->path);
    w->page_size = cfg->page_size ? cfg->page_size : 500;
    w->watch_timeout_s = cfg->watch_timeout_s ? cfg->watch_timeout_s : 300;
    w->backoff_initial_ns = cfg->backoff_initial_ns > 0 ? cfg->backoff_initial_ns : 100000000LL;
    w->backoff_max_ns = cfg->backoff_max_ns > 0 ? cfg->backoff_max_ns : 10000000000LL;
    if (w->backoff_max_ns < w->backoff_initial_ns)
        w->backoff_max_ns = w->backoff_initial_ns;
    w->on_change = cfg->on_change;
    w->on_sync = cfg->on_sync;
    w->pods = cfg->pods;
    w->on_pod = cfg->on_pod;
    w->arg = cfg->arg;
    w->log = cfg->log;
    w->rng = (uint64_t)pc__cl_mono_ns() ^ (uint64_t)(uintptr_t)w ^ 0x9e3779b97f4a7c15ULL;
    w->cache = json_object();
    w->index = json_object();
    pthread_mutex_init(&w->mu, NULL);
    if (!w->path || !w->selector_enc || !w->name || (cfg->index_label && !w->index_label) ||
        !w->cache || !w->index || pc_kube_conn_new(w->client, &w->conn)) {
        pc_watch_free(w);
        return -ENOMEM;
    }
    pc_kube_conn_set_idle(w->conn, on_wake, w);
    *out = w;
    return 0;
}

int pc_watch_start(pc_watch *w)
{
    if (w->started)
        return -EALREADY;
    atomic_store_explicit(&w->stop, false, memory_order_relaxed);
    int rc = pthread_create(&w->thread, NULL, watch_main, w);
    if (rc)
        return -rc;
    w->started = true;
    return 0;
}

void pc_watch_stop(pc_watch *w)
{
    if (!w || !w->started)
        return;
    /* release: pairs with the acquire in on_wake */
    atomic_store_explicit(&w->stop, true, memory_order_release);
    pc_kube_conn_wakeup(w->conn);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void pc_watch_free(pc_watch *w)
{
    if (!w)
        return;
    pc_watch_stop(w);
    pc_kube_conn_free(w->conn);
    json_decref(w->cache);
    json_decref(w->index);
    for (size_t i = 0; i < w->nbuckets; i++) {
        for (pod_entry *e = w->buckets[i], *next; e; e = next) {
            next = e->next;
            pc_watch_pod_unref(e->p);
            free(e);
        }
    }
    free(w->buckets);
    while (w->groups) {
        pod_group *g = w->groups;
        w->groups = g->next;
        free(g->items);
        free(g);
    }
    pthread_mutex_destroy(&w->mu);
    free(w->path);
    free(w->selector_enc);
    free(w->index_label);
    free(w->name);
    free(w);
}

bool pc_watch_synced(const pc_watch *w)
{
    /* acquire: pairs with the release after the first LIST */
    return atomic_load_explicit(&((pc_watch *)w)->synced, memory_order_acquire);
}

json_t *pc_watch_get(pc_watch *w, const char *ns, const char *name)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", name);
    pthread_mutex_lock(&w->mu);
    json_t *o = json_incref(json_object_get(w->cache, key));
    pthread_mutex_unlock(&w->mu);
    return o;
}

static json_t *values_of(const json_t *map)
{
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    if (arr)
        json_object_foreach((json_t *)map, k, v) json_array_append(arr, v);
    return arr;
}

json_t *pc_watch_list(pc_watch *w)
{
    pthread_mutex_lock(&w->mu);
    json_t *arr = values_of(w->cache);
    pthread_mutex_unlock(&w->mu);
    return arr;
}

json_t *pc_watch_list_index(pc_watch *w, const char *ns, const char *value)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", value);
    pthread_mutex_lock(&w->mu);
    json_t *set = json_object_get(w->index, key);
    json_t *arr = set ? values_of(set) : json_array();
    pthread_mutex_unlock(&w->mu);
    return arr;
}

void pc_watch_stats_read(pc_watch *w, pc_watch_stats *o)
{
    o->lists = atomic_load_explicit(&w->n_lists, memory_order_relaxed);
    o->relists = atomic_load_explicit(&w->n_relists, memory_order_relaxed);
    o->watches = atomic_load_explicit(&w->n_watches, memory_order_relaxed);
    o->events = atomic_load_explicit(&w->n_events, memory_order_relaxed);
    o->bookmarks = atomic_load_explicit(&w->n_bookmarks, memory_order_relaxed);
    o->errors = atomic_load_explicit(&w->n_errors, memory_order_relaxed);
    pthread_mutex_lock(&w->mu);
    o->objects = w->pods ? w->npods : json_object_size(w->cache);
    pthread_mutex_unlock(&w->mu);
}

pc_watch_pod *pc_watch_get_pod(pc_watch *w, const char *ns, const char *name)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", name);
    pthread_mutex_lock(&w->mu);
    pod_entry *e = find_locked(w, key, key_hash(key));
    pc_watch_pod *p = e ? wp_ref(e->p) : NULL;
    pthread_mutex_unlock(&w->mu);
    return p;
}

long pc_watch_list_pods(pc_watch *w, const char *ns, const char *value, pc_watch_pod ***out)
{
    char gk[512];
    snprintf(gk, sizeof(gk), "%s/%s", ns ? ns : "", value);
    *out = NULL;
    pthread_mutex_lock(&w->mu);
    pod_group *g = w->groups;
    while (g && strcmp(g->key, gk) != 0)
        g = g->next;
    long n = g ? (long)g->n : 0;
    if (n && !(*out = malloc((size_t)n * sizeof(**out))))
        n = -ENOMEM;
    for (long i = 0; i < n; i++)
        (*out)[i] = wp_ref(g->items[i]->p);
    pthread_mutex_unlock(&w->mu);
    return n;
}
