/* podclaimd registry: the claims of the pods this daemon serves, for DELETE .../claims/{id}
 * (podclaimd.h): the ones it won, and the ones its informers show won through another process
 * (the other replica, or this one before a restart), so any replica can release any claim.
 *
 * Flow: pool callback (won), informer on_claimed (a pod newly held by a claim id) ->
 *       [registry] <- DELETE (release), informer observer (pod idle again: the claim is over).
 *
 * Two chained hash tables over one entry set: by "pool-key/claim-id" and by "ns/pod"; two FIFOs
 * bound the memory: live claims (claims.maxTracked, oldest forgotten first) and ended ones kept
 * so a repeated DELETE says "already released" (the newest 8192; older ones are
 * forgotten and a DELETE of them gets 404). Without the second bound every claim ever won
 * would stay, ~1.1 KB each (fixed-size names): 8192 cost ~9 MB at most. One mutex guards everything: every operation is a
 * hash lookup and a few copies (well under a microsecond), far from any contention that
 * would matter next to an HTTP request.
 */
#include "podclaimd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char key[PC_NAMESPACE_MAX + PC_NAME_MAX + PC_CLAIM_ID_MAX + 4]; /* pool-key/id */
    char pod_key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2];               /* ns/pod */
    pcd_claim_info ci;
    struct entry *next_id, *next_pod; /* hash chains */
    struct entry *older, *newer;      /* FIFO */
    bool in_pod_index;
    bool ended; /* on the ended FIFO */
} entry;

typedef struct fifo {
    entry *oldest, *newest;
    size_t n;
} fifo;

struct pcd_registry {
    pthread_mutex_t mu;
    entry **by_id, **by_pod;
    size_t nbuckets; /* power of two */
    size_t max;
    fifo live, ended;
};

#define PCD_ENDED_MAX 8192

static void fifo_unlink(fifo *f, entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        f->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        f->newest = e->older;
    e->older = e->newer = NULL;
    f->n--;
}

static void fifo_push(fifo *f, entry *e)
{
    e->older = f->newest;
    e->newer = NULL;
    if (f->newest)
        f->newest->newer = e;
    else
        f->oldest = e;
    f->newest = e;
    f->n++;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int pcd_registry_new(size_t max, pcd_registry **out)
{
    pcd_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->nbuckets = 1024;
    r->by_id = calloc(r->nbuckets, sizeof(entry *));
    r->by_pod = calloc(r->nbuckets, sizeof(entry *));
    if (!r->by_id || !r->by_pod) {
        free(r->by_id);
        free(r->by_pod);
        free(r);
        return -1;
    }
    r->max = max;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

void pcd_registry_free(pcd_registry *r)
{
    if (!r)
        return;
    for (entry *e = r->live.oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    for (entry *e = r->ended.oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    free(r->by_id);
    free(r->by_pod);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static entry **find_id(pcd_registry *r, const char *key)
{
    entry **pp = &r->by_id[hash(key) & (r->nbuckets - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next_id;
    return pp;
}

static entry **find_pod_slot(pcd_registry *r, const entry *e)
{
    entry **pp = &r->by_pod[hash(e->pod_key) & (r->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->next_pod;
    return pp;
}

static void unlink_pod(pcd_registry *r, entry *e)
{
    if (!e->in_pod_index)
        return;
    entry **pp = find_pod_slot(r, e);
    if (*pp)
        *pp = e->next_pod;
    e->in_pod_index = false;
}

static void remove_entry(pcd_registry *r, entry *e)
{
    entry **pp = find_id(r, e->key);
    if (*pp == e)
        *pp = e->next_id;
    unlink_pod(r, e);
    fifo_unlink(e->ended ? &r->ended : &r->live, e);
    free(e);
}

/* The claim is over: move it to the ended FIFO, forgetting the oldest ended ones. */
static void end_entry(pcd_registry *r, entry *e)
{
    e->ci.state = PCD_RELEASED;
    unlink_pod(r, e);
    if (e->ended)
        return;
    fifo_unlink(&r->live, e);
    e->ended = true;
    fifo_push(&r->ended, e);
    while (r->ended.n > PCD_ENDED_MAX)
        remove_entry(r, r->ended.oldest);
}

static void grow(pcd_registry *r)
{
    size_t nb = r->nbuckets * 2;
    entry **bi = calloc(nb, sizeof(entry *)), **bp = calloc(nb, sizeof(entry *));
    if (!bi || !bp) {
        free(bi);
        free(bp);
        return; /* longer chains, still correct */
    }
    for (int list = 0; list < 2; list++)
        for (entry *e = list ? r->ended.oldest : r->live.oldest; e; e = e->newer) {
            size_t h = hash(e->key) & (nb - 1);
            e->next_id = bi[h];
            bi[h] = e;
            if (e->in_pod_index) {
                h = hash(e->pod_key) & (nb - 1);
                e->next_pod = bp[h];
                bp[h] = e;
            }
        }
    free(r->by_id);
    free(r->by_pod);
    r->by_id = bi;
    r->by_pod = bp;
    r->nbuckets = nb;
}

static entry *new_entry(const char *pool_key, const pcd_claim_info *ci)
{
    entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL; /* a DELETE of this claim will say 404; the pod is recycled by its pool */
    snprintf(e->key, sizeof(e->key), "%s/%s", pool_key, ci->id);
    snprintf(e->pod_key, sizeof(e->pod_key), "%s/%s", ci->pod_namespace, ci->pod);
    e->ci = *ci;
    return e;
}

/* Under r->mu: index e (replacing an entry with its id). */
static void add_locked(pcd_registry *r, entry *e)
{
    entry **old = find_id(r, e->key);
    if (*old)
        remove_entry(r, *old);
    /* a pod holds one claim at a time: an older claim on it is over */
    size_t hp = hash(e->pod_key) & (r->nbuckets - 1);
    for (entry *p = r->by_pod[hp]; p; p = p->next_pod)
        if (strcmp(p->pod_key, e->pod_key) == 0) {
            end_entry(r, p);
            break;
        }
    while (r->live.n >= r->max && r->live.oldest)
        remove_entry(r, r->live.oldest);
    if (r->live.n + r->ended.n >= r->nbuckets)
        grow(r);
    size_t h = hash(e->key) & (r->nbuckets - 1);
    e->next_id = r->by_id[h];
    r->by_id[h] = e;
    hp = hash(e->pod_key) & (r->nbuckets - 1);
    e->next_pod = r->by_pod[hp];
    r->by_pod[hp] = e;
    e->in_pod_index = true;
    fifo_push(&r->live, e);
}

void pcd_registry_add(pcd_registry *r, const char *pool_key, const pcd_claim_info *ci)
{
    entry *e = new_entry(pool_key, ci);
    if (!e)
        return;
    pthread_mutex_lock(&r->mu);
    add_locked(r, e);
    pthread_mutex_unlock(&r->mu);
}

bool pcd_registry_adopt(pcd_registry *r, const char *pool_key, const pcd_claim_info *ci)
{
    entry *e = new_entry(pool_key, ci);
    if (!e)
        return false;
    pthread_mutex_lock(&r->mu);
    /* known, live or ended: our own win (its callback came first), or a claim released since
     * whose claimed event arrives late; either way nothing to learn (and a releasing claim
     * must not turn active again) */
    bool known = *find_id(r, e->key) != NULL;
    if (!known)
        add_locked(r, e);
    pthread_mutex_unlock(&r->mu);
    if (known)
        free(e);
    return !known;
}

bool pcd_registry_get(pcd_registry *r, const char *pool_key, const char *id, pcd_claim_info *out,
                      bool take, bool *took)
{
    char key[sizeof(((entry *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", pool_key, id);
    pthread_mutex_lock(&r->mu);
    entry *e = *find_id(r, key);
    if (e) {
        if (take && e->ci.state == PCD_ACTIVE) {
            e->ci.state = PCD_RELEASING;
            if (took)
                *took = true;
        }
        if (out)
            *out = e->ci;
    }
    pthread_mutex_unlock(&r->mu);
    return e != NULL;
}

void pcd_registry_set(pcd_registry *r, const char *pool_key, const char *id, pcd_claim_state st,
                      const char *rv)
{
    char key[sizeof(((entry *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", pool_key, id);
    pthread_mutex_lock(&r->mu);
    entry *e = *find_id(r, key);
    if (e) {
        if (rv)
            snprintf(e->ci.rv, sizeof(e->ci.rv), "%s", rv);
        if (st == PCD_RELEASED)
            end_entry(r, e);
        else
            e->ci.state = st;
    }
    pthread_mutex_unlock(&r->mu);
}

/* resourceVersions are opaque to Kubernetes clients, but every server in practice (etcd
 * revisions, kapi-sim's counter) issues increasing decimals; an idle offer at a version above
 * the claim's is the pod's next idle period. A non-decimal version is never compared: the
 * claim then ends on DELETE or by being forgotten. */
void pcd_registry_pod_idle(pcd_registry *r, const char *ns, const char *pod, const char *rv)
{
    char pk[PC_NAMESPACE_MAX + PC_NAME_MAX + 2], *end;
    snprintf(pk, sizeof(pk), "%s/%s", ns, pod);
    unsigned long long v = strtoull(rv, &end, 10);
    if (*end || end == rv)
        return;
    pthread_mutex_lock(&r->mu);
    size_t hp = hash(pk) & (r->nbuckets - 1);
    for (entry *p = r->by_pod[hp]; p; p = p->next_pod) {
        if (strcmp(p->pod_key, pk) != 0)
            continue;
        unsigned long long cv = strtoull(p->ci.rv, &end, 10);
        if (!*end && cv < v)
            end_entry(r, p);
        break;
    }
    pthread_mutex_unlock(&r->mu);
}

size_t pcd_registry_size(pcd_registry *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->live.n + r->ended.n;
    pthread_mutex_unlock(&r->mu);
    return n;
}
