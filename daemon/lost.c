/* The late-win memory (lost.h). */
#include "lost.h"

#include <podclaim/backend.h> /* PC_CLAIM_ID_MAX */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lost_entry {
    const void *pool;
    int64_t at_ns;
    uint64_t hash;
    struct lost_entry *next_hash, *older, *newer;
    char id[PC_CLAIM_ID_MAX];
} lost_entry;

struct pcd_lost_set {
    pthread_mutex_t mu;
    _Atomic size_t live; /* entries; read without mu by pcd_lost_take */
    lost_entry **buckets;
    size_t nbuckets;             /* power of two */
    lost_entry *oldest, *newest; /* FIFO by at_ns */
    int64_t ttl_ns;
    size_t max;
    uint64_t forgotten;
};

static uint64_t key_hash(const void *pool, const char *id)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)pool; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h ^ (h >> 29);
}

int pcd_lost_new(int64_t ttl_ns, size_t max, pcd_lost_set **out)
{
    pcd_lost_set *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    /* about four entries per bucket when full; most of the time the set holds a few */
    s->nbuckets = 64;
    while (s->nbuckets * 4 < max)
        s->nbuckets *= 2;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
        free(s);
        return -ENOMEM;
    }
    s->ttl_ns = ttl_ns;
    s->max = max ? max : 1;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return 0;
}

void pcd_lost_free(pcd_lost_set *s)
{
    if (!s)
        return;
    for (lost_entry *e = s->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static lost_entry **find(pcd_lost_set *s, const void *pool, const char *id, uint64_t h)
{
    lost_entry **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->pool == pool && strcmp((*pp)->id, id) == 0))
        pp = &(*pp)->next_hash;
    return pp;
}

/* Under mu: forget e. */
static void drop(pcd_lost_set *s, lost_entry *e)
{
    lost_entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->next_hash;
    *pp = e->next_hash;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    atomic_fetch_sub_explicit(&s->live, 1, memory_order_relaxed);
    free(e);
}

static void expire(pcd_lost_set *s, int64_t now_ns)
{
    while (s->oldest && now_ns - s->oldest->at_ns > s->ttl_ns)
        drop(s, s->oldest);
}

bool pcd_lost_add(pcd_lost_set *s, const void *pool, const char *id, int64_t now_ns)
{
    uint64_t h = key_hash(pool, id);
    bool kept_all = true;
    pthread_mutex_lock(&s->mu);
    expire(s, now_ns);
    lost_entry *old = *find(s, pool, id, h);
    if (old)
        drop(s, old);
    if (atomic_load_explicit(&s->live, memory_order_relaxed) >= s->max) {
        s->forgotten++;
        kept_all = false;
        drop(s, s->oldest);
    }
    lost_entry *e = calloc(1, sizeof(*e));
    if (e) {
        e->pool = pool;
        e->at_ns = now_ns;
        e->hash = h;
        snprintf(e->id, sizeof(e->id), "%s", id);
        lost_entry **b = &s->buckets[h & (s->nbuckets - 1)];
        e->next_hash = *b;
        *b = e;
        e->older = s->newest;
        if (s->newest)
            s->newest->newer = e;
        else
            s->oldest = e;
        s->newest = e;
        atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
    } else {
        s->forgotten++;
        kept_all = false;
    }
    pthread_mutex_unlock(&s->mu);
    return kept_all;
}

bool pcd_lost_take(pcd_lost_set *s, const void *pool, const char *id, int64_t now_ns)
{
    /* relaxed: an id added just now is for a PATCH whose event cannot be here yet; a miss of
     * one added concurrently would need the event to overtake the claim's own answer */
    if (atomic_load_explicit(&s->live, memory_order_relaxed) == 0)
        return false;
    uint64_t h = key_hash(pool, id);
    pthread_mutex_lock(&s->mu);
    expire(s, now_ns);
    lost_entry *e = *find(s, pool, id, h);
    bool hit = e != NULL;
    if (hit)
        drop(s, e);
    pthread_mutex_unlock(&s->mu);
    return hit;
}

size_t pcd_lost_size(pcd_lost_set *s)
{
    return atomic_load_explicit(&s->live, memory_order_relaxed);
}

uint64_t pcd_lost_forgotten(pcd_lost_set *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->forgotten;
    pthread_mutex_unlock(&s->mu);
    return n;
}
