/* Reservation map: pod -> claim, bounded by a TTL.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> [reservation] -> CAS workers
 *       -> backend -> result.
 *
 * Two views of the same entries:
 *   - a ck_hs hash set of pc__reservation pointers keyed "namespace/name" (O(1) reserve,
 *     lookup, release). The entry caches its hash so ck_hs can rehash on growth without
 *     touching the strings;
 *   - a doubly-linked list in expiry order. The TTL is one constant, so appending at the
 *     tail keeps the list sorted as long as now_ns does not go backwards (CLOCK_MONOTONIC);
 *     the sweep pops from the head and stops at the first live entry.
 *
 * Thread-safety: none; the pool's scheduler thread owns the map. ck_hs is used in its
 * single-writer mode and nothing reads it concurrently, so no fences are needed here.
 *
 * ck_hs deletes leave tombstones; a put reuses the first tombstone on its probe path, but
 * probe bounds only shrink on ck_hs_gc. Reserve/release churn is this map's steady state,
 * so release runs a full gc after as many removals as the map holds entries (at least
 * PC__RES_GC_MIN): O(capacity) work amortised over that many releases, O(1) each.
 */
#include "reservation/reservation.h"
#include "util/ckhs.h"

#include <ck_hs.h>
#include <ck_malloc.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PC__RES_INITIAL_CAPACITY 64
#define PC__RES_GC_MIN 1024
/* Hash seed. Keys come from the API server, not from an adversary who could choose pod
 * names to collide, so a fixed seed is enough (and keeps runs reproducible). */
#define PC__RES_SEED 0x9e3779b97f4a7c15UL

struct pc__reservation_map {
    ck_hs_t hs;
    struct ck_malloc alloc;
    pc__reservation *head; /* earliest expiry; NULL when empty */
    pc__reservation *tail; /* latest expiry */
    size_t count;
    size_t removed_since_gc;
    int64_t ttl_ns;
};

/* ck_hs calls this only to rehash stored entries when it grows. */
static unsigned long hs_hash(const void *obj, unsigned long seed)
{
    (void)seed; /* the cached hash was computed with the same seed */
    return ((const pc__reservation *)obj)->hash;
}

/* a: the stored entry; b: the probe (a stored entry or a stack key). Hash-tag mismatches
 * are filtered by ck_hs before this runs. */
static bool hs_compare(const void *a, const void *b)
{
    const pc__reservation *x = a, *y = b;
    return x->hash == y->hash && strcmp(x->name, y->name) == 0 &&
           strcmp(x->namespace_, y->namespace_) == 0;
}

static bool fits(const char *s, size_t cap)
{
    return s != NULL && s[0] != '\0' && strnlen(s, cap) < cap;
}

/* Fill the key part of a probe; false if ns/name cannot be a key. */
static bool make_key(pc__reservation *k, const char *ns, const char *name)
{
    if (!fits(ns, sizeof k->namespace_) || !fits(name, sizeof k->name))
        return false;
    strcpy(k->namespace_, ns);
    strcpy(k->name, name);
    k->hash = pc__pod_key_hash(ns, name, PC__RES_SEED);
    return true;
}

static pc__reservation *find(const pc__reservation_map *m, const char *ns, const char *name)
{
    pc__reservation key;
    if (m == NULL || !make_key(&key, ns, name))
        return NULL;
    /* ck_hs_get takes a non-const set; a get does not modify it in single-writer mode. */
    return ck_hs_get((ck_hs_t *)&m->hs, key.hash, &key);
}

static void list_unlink(pc__reservation_map *m, pc__reservation *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        m->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        m->tail = r->prev;
    r->prev = r->next = NULL;
}

static void list_append(pc__reservation_map *m, pc__reservation *r)
{
    r->next = NULL;
    r->prev = m->tail;
    if (m->tail)
        m->tail->next = r;
    else
        m->head = r;
    m->tail = r;
}

int pc__reservation_map_new(int64_t ttl_ns, pc__reservation_map **out)
{
    if (ttl_ns <= 0 || out == NULL)
        return -EINVAL;
    pc__reservation_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->alloc = pc__ck_allocator;
    m->ttl_ns = ttl_ns;
    if (!ck_hs_init(&m->hs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE, hs_hash,
                    hs_compare, &m->alloc, PC__RES_INITIAL_CAPACITY, PC__RES_SEED)) {
        free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

void pc__reservation_map_free(pc__reservation_map *m)
{
    if (m == NULL)
        return;
    for (pc__reservation *r = m->head, *next; r != NULL; r = next) {
        next = r->next;
        free(r);
    }
    ck_hs_destroy(&m->hs);
    free(m);
}

int pc__reservation_reserve(pc__reservation_map *m, const char *ns, const char *name,
                            const char *rv, const char *claim_id, int64_t now_ns)
{
    if (m == NULL || !fits(rv, PC_RV_MAX))
        return -EINVAL;
    if (claim_id == NULL)
        claim_id = "";
    if (strnlen(claim_id, PC_CLAIM_ID_MAX) >= PC_CLAIM_ID_MAX)
        return -EINVAL;

    pc__reservation key;
    if (!make_key(&key, ns, name))
        return -EINVAL;

    pc__reservation *r = ck_hs_get(&m->hs, key.hash, &key);
    if (r != NULL) {
        /* Replace in place: same key, same hash-set slot; only its expiry moves, to the
         * tail, since now_ns + ttl is the latest expiry in the map. */
        list_unlink(m, r);
    } else {
        r = malloc(sizeof *r);
        if (r == NULL)
            return -ENOMEM;
        memcpy(r->namespace_, key.namespace_, sizeof r->namespace_);
        memcpy(r->name, key.name, sizeof r->name);
        r->hash = key.hash;
        /* put_unique: the get above proved the key absent, so skip ck_hs's second probe. */
        if (!ck_hs_put_unique(&m->hs, r->hash, r)) {
            free(r);
            return -ENOMEM;
        }
        m->count++;
    }
    strcpy(r->rv, rv);
    strcpy(r->claim_id, claim_id);
    r->reserved_at_ns = now_ns;
    /* saturated: a TTL of INT64_MAX means "until released", not "expired long ago" */
    r->expires_at_ns = __builtin_add_overflow(now_ns, m->ttl_ns, &r->expires_at_ns)
                               ? INT64_MAX
                               : r->expires_at_ns;
    list_append(m, r);
    return 0;
}

const pc__reservation *pc__reservation_lookup(const pc__reservation_map *m, const char *ns,
                                              const char *name, int64_t now_ns)
{
    const pc__reservation *r = find(m, ns, name);
    if (r == NULL || r->expires_at_ns <= now_ns)
        return NULL;
    return r;
}

static void forget(pc__reservation_map *m, pc__reservation *r)
{
    void *removed = ck_hs_remove(&m->hs, r->hash, r);
    (void)removed;
    list_unlink(m, r);
    m->count--;
    free(r);
    if (++m->removed_since_gc >= (m->count > PC__RES_GC_MIN ? m->count : PC__RES_GC_MIN)) {
        /* cycles 0: one full pass; seed 0: unused by the full pass. A failed gc (it
         * allocates a small bound array) only leaves probe bounds long, so ignore it. */
        (void)ck_hs_gc(&m->hs, 0, 0);
        m->removed_since_gc = 0;
    }
}

int pc__reservation_release(pc__reservation_map *m, const char *ns, const char *name)
{
    if (m == NULL || ns == NULL || name == NULL)
        return -EINVAL;
    pc__reservation *r = find(m, ns, name);
    if (r == NULL)
        return -ENOENT;
    forget(m, r);
    return 0;
}

void pc__reservation_release_entry(pc__reservation_map *m, const pc__reservation *r)
{
    forget(m, (pc__reservation *)r);
}

size_t pc__reservation_sweep(pc__reservation_map *m, int64_t now_ns,
                             void (*expired)(const pc__reservation *r, void *arg), void *arg)
{
    if (m == NULL)
        return 0;
    size_t n = 0;
    while (m->head != NULL && m->head->expires_at_ns <= now_ns) {
        pc__reservation *r = m->head;
        if (expired)
            expired(r, arg);
        forget(m, r);
        n++;
    }
    return n;
}

int64_t pc__reservation_next_expiry(const pc__reservation_map *m)
{
    return m != NULL && m->head != NULL ? m->head->expires_at_ns : 0;
}

size_t pc__reservation_count(const pc__reservation_map *m)
{
    return m != NULL ? m->count : 0;
}
