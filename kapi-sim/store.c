/* kapi-sim store: every object of every resource, one global revision counter and a bounded
 * ring of events that watchers read from.
 *
 * One mutex guards everything here; one condvar (CLOCK_MONOTONIC) wakes watchers. Stored objects
 * are immutable: a write builds a new object and swaps it in, so a reader may keep a reference
 * (jansson refcounts are atomic) and serialise it after unlocking. Every commit makes exactly one
 * event, so the history holds the contiguous revisions [lo, rev] and a watch can resume from X
 * from X iff X >= lo - 1 and X >= compacted; an established watch only needs its cursor to stay
 * inside the ring.
 */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const ks_ev_names[KS_EV_COUNT] = {"ADDED", "MODIFIED", "DELETED"};

int64_t ks_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ks_rfc3339_now(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *ks_meta_str(const json_t *obj, const char *field)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), field));
}

const char *ks_key(char *buf, size_t n, const ks_res *res, const char *ns, const char *name)
{
    if (res->namespaced)
        snprintf(buf, n, "%s/%s", ns ? ns : "", name);
    else
        snprintf(buf, n, "%s", name);
    return buf;
}

void ks_tune_malloc(void)
{
    /* Every write allocates a new object version and event line, and the history ring frees
     * the oldest: steady churn of a few KB per write across connection threads. glibc trims and
     * regrows the thread arenas around it (mprotect + first-touch page faults), which on these
     * VMs cost more than the write itself; keep freed memory and grow in large steps instead. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
}

int ks_store_init(ks_store *s, size_t hist_cap)
{
    memset(s, 0, sizeof *s);
    if (hist_cap < 16)
        hist_cap = 16;
    s->hist = calloc(hist_cap, sizeof *s->hist);
    if (!s->hist)
        return -1;
    s->hist_cap = hist_cap;
    for (int i = 0; i < KS_RES_COUNT; i++)
        s->objs[i] = json_object();
    pthread_mutex_init(&s->mu, NULL);
    s->rev = 1; /* like etcd, revisions start above zero; "0" means "any" to a watch */
    s->lo = 2;
    s->compacted = 0;
    return 0;
}

static void event_clear(ks_event *e)
{
    json_decref(e->obj);
    json_decref(e->old);
    free(e->line);
    memset(e, 0, sizeof *e);
}

void ks_store_fini(ks_store *s)
{
    for (uint64_t r = s->lo; r <= s->rev; r++)
        event_clear(&s->hist[r % s->hist_cap]);
    free(s->hist);
    for (int i = 0; i < KS_RES_COUNT; i++)
        json_decref(s->objs[i]);
    pthread_mutex_destroy(&s->mu);
}

void ks_waiter_add_locked(ks_store *s, ks_waiter *w)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->waiting = false;
    w->catch_up = 0;
    w->prev = NULL;
    w->next = s->waiters;
    if (s->waiters)
        s->waiters->prev = w;
    s->waiters = w;
}

void ks_waiter_remove_locked(ks_store *s, ks_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_cond_destroy(&w->cv);
}

/* After the commit of e: the idle watches of e's resource, and any watch that must catch up
 * (see ks_waiter). A pthread_cond_signal to a thread that is waiting is a futex syscall, and
 * the wakee's own switch in and out: waking a watch that has nothing to send was most of
 * kapi-sim's CPU in the fault soak (two of five watches were not of pods). */
static void wake_locked(ks_store *s, const ks_event *e)
{
    for (ks_waiter *w = s->waiters; w; w = w->next) {
        if ((w->waiting && w->res == (int)e->res) || e->rev >= w->catch_up) {
            w->waiting = false;
            w->catch_up = UINT64_MAX;
            pthread_cond_signal(&w->cv);
        }
    }
}

void ks_store_shutdown(ks_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->shutdown = true;
    for (ks_waiter *w = s->waiters; w; w = w->next) { /* batching ones too */
        w->waiting = false;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

void ks_store_compact(ks_store *s, uint64_t upto)
{
    pthread_mutex_lock(&s->mu);
    if (upto == 0 || upto > s->rev)
        upto = s->rev;
    /* Like etcd compaction under kube-apiserver's watch cache: a new watch or a continue from
     * before upto gets 410, but the events stay in the ring, so a watch already established
     * keeps streaming (the real server never ends live watches on compaction). */
    if (upto > s->compacted)
        s->compacted = upto;
    pthread_mutex_unlock(&s->mu);
}

const json_t *ks_store_get_locked(ks_store *s, const ks_res *res, const char *ns, const char *name)
{
    char key[512];
    return json_object_get(s->objs[res->id], ks_key(key, sizeof key, res, ns, name));
}

const ks_event *ks_store_event_locked(const ks_store *s, uint64_t rev)
{
    if (rev < s->lo || rev > s->rev)
        return NULL;
    return &s->hist[rev % s->hist_cap];
}

char *ks_store_last_text_locked(const ks_store *s)
{
    const ks_event *e = ks_store_event_locked(s, s->rev);
    if (!e || !e->line)
        return NULL;
    const char *o = strstr(e->line, "\"object\":");
    if (!o || e->line_len < 2)
        return NULL;
    o += 9;
    size_t n = (size_t)(e->line + e->line_len - 2 - o); /* drop the closing "}\n" */
    return strndup(o, n);
}

static void set_rv(json_t *obj, uint64_t rev)
{
    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, rev);
    json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md)) {
        md = json_object();
        json_object_set_new(obj, "metadata", md);
    }
    json_object_set_new(md, "resourceVersion", json_string(rv));
}

static char *event_line(ks_ev_type t, const json_t *obj, size_t *len)
{
    char *o = json_dumps(obj, JSON_COMPACT);
    if (!o)
        return NULL;
    size_t ol = strlen(o);
    const char *pfx = t == KS_EV_ADDED      ? "{\"type\":\"ADDED\",\"object\":"
                      : t == KS_EV_MODIFIED ? "{\"type\":\"MODIFIED\",\"object\":"
                                            : "{\"type\":\"DELETED\",\"object\":";
    size_t pl = strlen(pfx);
    char *line = malloc(pl + ol + 3);
    if (line) {
        memcpy(line, pfx, pl);
        memcpy(line + pl, o, ol);
        memcpy(line + pl + ol, "}\n", 3);
        *len = pl + ol + 2;
    }
    free(o);
    return line;
}

/* The placeholder is long and odd enough that user data containing it is implausible; if the
 * text has it more than once we fall back to serialising under the lock. */
#define RV_PLACEHOLDER "#kapi-sim-rv-7e3f19c2#"

/* A key jansson writes as is (no escapes), so "\"" key "\":" is its serialisation. */
static bool plain_key(const char *k)
{
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
              *k == '.' || *k == '_' || *k == '-'))
            return false;
    return true;
}

typedef struct tbuf {
    char *b;
    size_t len, cap;
    bool oom;
} tbuf;

static void tbuf_put(tbuf *t, const char *p, size_t n)
{
    if (t->oom)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t nc = t->cap ? t->cap : 4096;
        while (nc < t->len + n + 1)
            nc *= 2;
        char *nb = realloc(t->b, nc);
        if (!nb) {
            t->oom = true;
            return;
        }
        t->b = nb;
        t->cap = nc;
    }
    memcpy(t->b + t->len, p, n);
    t->len += n;
    t->b[t->len] = '\0';
}

/* json_dumps(obj, JSON_COMPACT), written member by member (jansson writes an object's members
 * in insertion order, as json_object_foreach visits them): a member whose value is a json_t
 * prev has the text of is copied from prev, and each member's place is noted in p->mem.
 * Serialising the whole pod per write was a fifth of kapi-sim's CPU in the fault soak; a
 * claim changes metadata, so spec and status are usually reused. NULL when a key would need
 * escaping (the caller serialises the whole object then). */
static char *dump_members(ks_prepared *p, const json_t *obj, const ks_prev_text *prev, size_t *len)
{
    tbuf t = {0};
    tbuf_put(&t, "{", 1);
    const char *k;
    json_t *v;
    int i = 0;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!plain_key(k)) {
            free(t.b);
            return NULL;
        }
        if (i)
            tbuf_put(&t, ",", 1);
        tbuf_put(&t, "\"", 1);
        tbuf_put(&t, k, strlen(k));
        tbuf_put(&t, "\":", 2);
        size_t off = t.len;
        const ks_member_text *m = NULL;
        for (int j = 0; prev && prev->text && j < prev->nmem && !m; j++)
            if (prev->mem[j].val == v)
                m = &prev->mem[j];
        if (m) {
            tbuf_put(&t, prev->text + m->off, m->len);
        } else {
            char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!d)
                t.oom = true;
            else
                tbuf_put(&t, d, strlen(d));
            free(d);
        }
        if (i < KS_TEXT_MEMBERS)
            p->mem[i] = (ks_member_text){v, off, t.len - off};
        i++;
    }
    tbuf_put(&t, "}", 1);
    if (t.oom) {
        free(t.b);
        return NULL;
    }
    p->nmem = i < KS_TEXT_MEMBERS ? i : KS_TEXT_MEMBERS;
    *len = t.len;
    return t.b;
}

void ks_store_prepare(ks_prepared *p, json_t *obj, const ks_prev_text *prev)
{
    memset(p, 0, sizeof *p);
    p->obj = obj;
    json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md))
        return;
    json_object_set_new(md, "resourceVersion", json_string(RV_PLACEHOLDER));
    p->text = dump_members(p, obj, prev, &p->len);
    if (!p->text) {
        p->nmem = 0;
        p->text = json_dumps(obj, JSON_COMPACT);
        if (!p->text)
            return;
        p->len = strlen(p->text);
    }
    const size_t pl = sizeof RV_PLACEHOLDER - 1;
    char *at = memmem(p->text, p->len, RV_PLACEHOLDER, pl);
    if (!at || memmem(at + pl, p->len - (size_t)(at - p->text) - pl, RV_PLACEHOLDER, pl)) {
        free(p->text);
        p->text = NULL;
        p->nmem = 0;
        return;
    }
    p->rv_off = (size_t)(at - p->text);
}

void ks_store_prev_text_locked(const ks_store *s, const json_t *cur, ks_prev_text *prev)
{
    memset(prev, 0, sizeof *prev);
    const char *rv = ks_meta_str(cur, "resourceVersion");
    const ks_event *e = rv ? ks_store_event_locked(s, strtoull(rv, NULL, 10)) : NULL;
    if (!e || e->obj != cur || !e->nmem || !e->line)
        return;
    size_t lo = e->mem[0].off, hi = lo;
    for (int i = 0; i < e->nmem; i++)
        if (e->mem[i].off + e->mem[i].len > hi)
            hi = e->mem[i].off + e->mem[i].len;
    prev->text = malloc(hi - lo);
    if (!prev->text)
        return;
    memcpy(prev->text, e->line + lo, hi - lo);
    for (int i = 0; i < e->nmem; i++)
        prev->mem[i] = (ks_member_text){e->mem[i].val, e->mem[i].off - lo, e->mem[i].len};
    prev->nmem = e->nmem;
}

void ks_prev_text_fini(ks_prev_text *prev)
{
    free(prev->text);
    memset(prev, 0, sizeof *prev);
}

/* text with the placeholder replaced by rv, between pfx and sfx; malloc'd. */
static char *splice(const ks_prepared *p, const char *rv, const char *pfx, const char *sfx,
                    size_t *out_len)
{
    size_t pl = strlen(pfx), sl = strlen(sfx), rl = strlen(rv), hl = sizeof RV_PLACEHOLDER - 1;
    size_t n = pl + p->len - hl + rl + sl;
    char *b = malloc(n + 1);
    if (!b)
        return NULL;
    char *w = b;
    memcpy(w, pfx, pl), w += pl;
    memcpy(w, p->text, p->rv_off), w += p->rv_off;
    memcpy(w, rv, rl), w += rl;
    memcpy(w, p->text + p->rv_off + hl, p->len - p->rv_off - hl), w += p->len - p->rv_off - hl;
    memcpy(w, sfx, sl), w += sl;
    *w = '\0';
    if (out_len)
        *out_len = n;
    return b;
}

char *ks_prepared_text(const ks_prepared *p, uint64_t rev)
{
    if (!p->text)
        return json_dumps(p->obj, JSON_COMPACT);
    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, rev);
    return splice(p, rv, "", "", NULL);
}

json_t *ks_prepared_take(ks_prepared *p)
{
    json_t *o = p->obj;
    p->obj = NULL;
    free(p->text);
    p->text = NULL;
    return o;
}

void ks_prepared_fini(ks_prepared *p)
{
    json_decref(p->obj);
    free(p->text);
    memset(p, 0, sizeof *p);
}

void ks_event_release(ks_event *e)
{
    event_clear(e);
}

uint64_t ks_store_commit_prepared_locked(ks_store *s, const ks_res *res, const char *ns,
                                         const char *name, ks_prepared *p, ks_event *evicted)
{
    char key[512];
    ks_key(key, sizeof key, res, ns, name);
    json_t *old = json_object_get(s->objs[res->id], key);
    uint64_t rev = ++s->rev;
    ks_ev_type t = old ? KS_EV_MODIFIED : KS_EV_ADDED;
    if (old)
        json_incref(old);
    set_rv(p->obj, rev);
    json_object_set(s->objs[res->id], key, p->obj);
    memset(evicted, 0, sizeof *evicted);
    if (rev - s->lo + 1 > s->hist_cap) { /* ring full: the caller frees the oldest, unlocked */
        *evicted = s->hist[s->lo % s->hist_cap];
        memset(&s->hist[s->lo % s->hist_cap], 0, sizeof(ks_event));
        s->lo++;
    }
    ks_event *e = &s->hist[rev % s->hist_cap];
    e->rev = rev;
    e->res = res->id;
    e->type = t;
    e->at_ns = ks_now_ns();
    e->obj = json_incref(p->obj); /* one reference for the event, one kept by p */
    e->old = old;
    e->nmem = 0;
    if (p->text) {
        char rv[24];
        snprintf(rv, sizeof rv, "%" PRIu64, rev);
        const char *pfx = t == KS_EV_ADDED ? "{\"type\":\"ADDED\",\"object\":"
                                           : "{\"type\":\"MODIFIED\",\"object\":";
        e->line = splice(p, rv, pfx, "}\n", &e->line_len);
        /* the members' places in the line: after the prefix, shifted past the placeholder by
         * the length difference of the real resourceVersion; the member holding it (metadata)
         * is never reused (every write gives metadata a new json_t anyway) */
        size_t pl = strlen(pfx), hl = sizeof RV_PLACEHOLDER - 1, rl = strlen(rv);
        for (int i = 0; e->line && i < p->nmem; i++) {
            ks_member_text m = p->mem[i];
            if (m.off <= p->rv_off && p->rv_off < m.off + m.len)
                m.val = NULL;
            else if (m.off > p->rv_off)
                m.off = m.off - hl + rl;
            m.off += pl;
            e->mem[e->nmem++] = m;
        }
    } else {
        e->line = event_line(t, p->obj, &e->line_len);
    }
    if (!e->line) {
        e->line = strdup("\n");
        e->line_len = e->line ? 1 : 0;
    }
    if (s->hook)
        s->hook(s->hook_arg, e);
    wake_locked(s, e);
    return rev;
}

static const json_t *commit(ks_store *s, const ks_res *res, const char *ns, const char *name,
                            json_t *obj, bool del)
{
    char key[512];
    ks_key(key, sizeof key, res, ns, name);
    json_t *old = json_object_get(s->objs[res->id], key);
    assert(obj || old);
    uint64_t rev = ++s->rev;
    ks_ev_type t = del ? KS_EV_DELETED : !old ? KS_EV_ADDED : KS_EV_MODIFIED;
    if (old)
        json_incref(old);
    if (!obj)
        obj = json_deep_copy(old); /* DELETED carries the last state at the deletion revision */
    set_rv(obj, rev);
    if (t == KS_EV_DELETED)
        json_object_del(s->objs[res->id], key);
    else
        json_object_set(s->objs[res->id], key, obj);

    if (rev - s->lo + 1 > s->hist_cap) { /* ring full: forget the oldest event */
        event_clear(&s->hist[s->lo % s->hist_cap]);
        s->lo++;
    }
    ks_event *e = &s->hist[rev % s->hist_cap];
    e->rev = rev;
    e->res = res->id;
    e->type = t;
    e->at_ns = ks_now_ns();
    e->obj = obj; /* the event owns the reference we got */
    e->old = old;
    e->nmem = 0;
    e->line = event_line(t, obj, &e->line_len);
    if (!e->line) { /* out of memory: an empty line keeps revisions contiguous */
        e->line = strdup("\n");
        e->line_len = e->line ? 1 : 0;
    }
    if (s->hook)
        s->hook(s->hook_arg, e);
    wake_locked(s, e);
    return obj;
}

const json_t *ks_store_commit_locked(ks_store *s, const ks_res *res, const char *ns,
                                     const char *name, json_t *obj)
{
    return commit(s, res, ns, name, obj, obj == NULL);
}
