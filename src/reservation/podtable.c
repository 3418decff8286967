/* The pod table: ready-queue and reservations in one record per pod. See podtable.h.
 *
 * ck_hs deletes leave tombstones; a put reuses the first tombstone on its probe path, but
 * probe bounds only shrink on ck_hs_gc. Records are removed only when forgotten (a pod
 * gone for a TTL), so removals are rare next to lookups; a full gc runs after as many
 * removals as the table holds records (at least GC_MIN): O(capacity) work amortised over
 * that many removals.
 */
#include "reservation/podtable.h"
#include "util/ckhs.h"
#include "util/sat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_CAPACITY 1024
#define GC_MIN 1024

/* ck_hs calls this only to rehash stored records when it grows. */
static unsigned long hs_hash(const void *obj, unsigned long seed)
{
    (void)seed;
    return ((const pc__pod_key *)obj)->hash;
}

/* a: a stored record; b: a record or a probe (both start with a pc__pod_key). ck_hs has
 * already matched the hash's high bits it packs into the pointer. */
static bool hs_compare(const void *a, const void *b)
{
    const pc__pod_key *x = a, *y = b;
    return x->hash == y->hash && strcmp(x->name, y->name) == 0 && strcmp(x->ns, y->ns) == 0;
}

/* ---- the three lists --------------------------------------------------------------------- */

static pc__podlist *list_of(pc__podtable *t, int state, bool held)
{
    return state == PC__POD_IDLE       ? &t->ready
           : state == PC__POD_RESERVED ? (held ? &t->held : &t->reserved)
                                       : &t->gone;
}

static void unlink_pod(pc__podtable *t, pc__pod *p)
{
    pc__podlist *l = list_of(t, p->state, p->held);
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    p->prev = p->next = NULL;
    l->len--;
}

static void link_pod_on(pc__podtable *t, pc__pod *p, int state, bool held, bool front)
{
    p->state = state;
    p->held = held;
    pc__podlist *l = list_of(t, state, held);
    if (front) {
        p->prev = NULL;
        p->next = l->head;
        if (l->head)
            l->head->prev = p;
        else
            l->tail = p;
        l->head = p;
    } else {
        p->next = NULL;
        p->prev = l->tail;
        if (l->tail)
            l->tail->next = p;
        else
            l->head = p;
        l->tail = p;
    }
    l->len++;
}

static void link_pod(pc__podtable *t, pc__pod *p, int state, bool front)
{
    link_pod_on(t, p, state, false, front);
}

/* Move p to the end (or front) of another state's list. */
static void move_pod(pc__podtable *t, pc__pod *p, int state, bool front)
{
    unlink_pod(t, p);
    link_pod(t, p, state, front);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int pc__podtable_init(pc__podtable *t, int64_t ttl_ns, int64_t hold_ns)
{
    if (ttl_ns <= 0 || hold_ns <= 0)
        return -EINVAL;
    memset(t, 0, sizeof(*t));
    t->alloc = pc__ck_allocator;
    t->ttl_ns = ttl_ns;
    t->hold_ns = hold_ns < ttl_ns ? hold_ns : ttl_ns;
    if (!ck_hs_init(&t->hs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE, hs_hash,
                    hs_compare, &t->alloc, INITIAL_CAPACITY, 0))
        return -ENOMEM;
    return 0;
}

void pc__podtable_fini(pc__podtable *t)
{
    pc__podlist *lists[] = {&t->ready, &t->reserved, &t->held, &t->gone};
    for (int i = 0; i < 4; i++)
        for (pc__pod *p = lists[i]->head, *next; p; p = next) {
            next = p->next;
            free(p);
        }
    ck_hs_destroy(&t->hs);
}

/* ---- operations -------------------------------------------------------------------------- */

static pc__pod *find(pc__podtable *t, const pc__pod_key *k)
{
    return ck_hs_get(&t->hs, k->hash, k);
}

pc__pod *pc__podtable_find(pc__podtable *t, const pc__pod_key *k)
{
    return find(t, k);
}

/* A record for a pod the table does not hold (the caller checked), stored, on no list yet.
 * NULL: out of memory. */
static pc__pod *new_record(pc__podtable *t, const pc__pod_key *k, const char *uid, const char *rv)
{
    pc__pod *p = malloc(sizeof(*p));
    if (p == NULL)
        return NULL;
    strcpy(p->ns, k->ns);
    strcpy(p->name, k->name);
    p->key = (pc__pod_key){k->hash, p->ns, p->name};
    p->gen = 0;
    p->refs = 0;
    p->until_ns = 0;
    p->held = false;
    p->cas_claim = NULL;
    /* put_unique: the caller's lookup proved the key absent, so skip ck_hs's second probe. */
    if (!ck_hs_put_unique(&t->hs, p->key.hash, p)) {
        free(p);
        return NULL;
    }
    strcpy(p->uid, uid);
    strcpy(p->rv, rv);
    return p;
}

pc__offer_result pc__podtable_offer(pc__podtable *t, const pc__pod_key *k, const char *uid,
                                    const char *rv)
{
    pc__pod *p = find(t, k);
    if (p == NULL) {
        if ((p = new_record(t, k, uid, rv)) == NULL)
            return PC__OFFER_NOMEM;
        link_pod(t, p, PC__POD_IDLE, false);
        return PC__OFFER_QUEUED;
    }
    pc__offer_result r = PC__OFFER_QUEUED;
    switch (p->state) {
    case PC__POD_RESERVED:
        if (strcmp(p->rv, rv) == 0)
            return PC__OFFER_STALE; /* the informer has not seen the claim we sent yet */
        /* Another version: our CAS at the reserved one can no longer win (or it won and the
         * pod is idle again). The reservation has done its job. */
        move_pod(t, p, PC__POD_IDLE, false);
        r = PC__OFFER_RELEASED;
        break;
    case PC__POD_IDLE:
        r = PC__OFFER_UPDATED; /* keeps its place */
        break;
    default: /* GONE: back */
        move_pod(t, p, PC__POD_IDLE, false);
        break;
    }
    strcpy(p->uid, uid);
    strcpy(p->rv, rv);
    return r;
}

static void make_gone(pc__podtable *t, pc__pod *p, int64_t now_ns)
{
    p->until_ns = pc__add_sat(now_ns, t->ttl_ns);
    move_pod(t, p, PC__POD_GONE, false);
}

void pc__podtable_withdraw_record(pc__podtable *t, pc__pod *p, int64_t now_ns)
{
    if (p->state != PC__POD_GONE)
        make_gone(t, p, now_ns);
}

void pc__podtable_withdraw(pc__podtable *t, const pc__pod_key *k, int64_t now_ns)
{
    pc__pod *p = find(t, k);
    if (p != NULL)
        pc__podtable_withdraw_record(t, p, now_ns);
}

pc__pod *pc__podtable_gone_record(pc__podtable *t, const pc__pod_key *k, const char *uid,
                                  const char *rv, int64_t now_ns)
{
    pc__pod *p = find(t, k);
    if (p == NULL) {
        if ((p = new_record(t, k, uid, rv)) == NULL)
            return NULL;
        p->until_ns = pc__add_sat(now_ns, t->ttl_ns);
        link_pod(t, p, PC__POD_GONE, false);
    } else if (p->state != PC__POD_GONE) {
        make_gone(t, p, now_ns);
    }
    return p;
}

pc__pod *pc__podtable_reserve(pc__podtable *t, int64_t now_ns)
{
    pc__pod *p = t->ready.head;
    if (p == NULL)
        return NULL;
    p->gen++;
    p->refs++;
    /* saturated: a TTL of INT64_MAX means "until released", not "expired long ago" */
    p->until_ns = pc__add_sat(now_ns, t->ttl_ns);
    move_pod(t, p, PC__POD_RESERVED, false); /* one TTL for all: the list stays sorted */
    return p;
}

void pc__podtable_cas_done(pc__podtable *t, pc__pod *pod, uint32_t gen, int outcome, int64_t now_ns)
{
    if (pod->state != PC__POD_RESERVED || pod->gen != gen)
        return; /* a newer offer or a withdrawal already decided the pod's fate */
    switch (outcome) {
    case PC_CAS_NOT_FOUND:
        make_gone(t, pod, now_ns);
        break;
    case PC_CAS_INVALID:
    case PC_CAS_RETRYABLE:
        /* Untouched as far as we know: first in line again. If the write did land after
         * all, the next CAS at this version conflicts, which is safe. */
        move_pod(t, pod, PC__POD_IDLE, true);
        break;
    case PC_CAS_CONFLICT: {
        /* The pod is at a version we have not seen; the reserved one stays unselectable
         * until the informer shows the new one, but for the conflict hold at most. */
        int64_t until = pc__add_sat(now_ns, t->hold_ns);
        if (until < pod->until_ns) {
            unlink_pod(t, pod);
            pod->until_ns = until;
            link_pod_on(t, pod, PC__POD_RESERVED, true, false);
        }
        break;
    }
    default:
        /* WON: ours now; unselectable until the informer shows it at the claimed version
         * (or at a later one), or the TTL passes. */
        break;
    }
}

static void forget(pc__podtable *t, pc__pod *p)
{
    ck_hs_remove(&t->hs, p->key.hash, &p->key);
    unlink_pod(t, p);
    free(p);
    size_t n = pc__podtable_count(t);
    if (++t->removed_since_gc >= (n > GC_MIN ? n : GC_MIN)) {
        /* cycles 0: one full pass. A failed gc (it allocates a small bound array) only
         * leaves probe bounds long, so ignore it. */
        (void)ck_hs_gc(&t->hs, 0, 0);
        t->removed_since_gc = 0;
    }
}

size_t pc__podtable_sweep(pc__podtable *t, int64_t now_ns, void (*expired)(pc__pod *, void *),
                          void *arg)
{
    size_t n = 0;
    pc__pod *p;
    for (pc__podlist *l = &t->reserved; l; l = l == &t->reserved ? &t->held : NULL)
        while ((p = l->head) != NULL && p->until_ns <= now_ns) {
            make_gone(t, p, now_ns);
            if (expired)
                expired(p, arg);
            n++;
        }
    /* The gone list is in forget order; a record still referenced (a result on its way)
     * waits another TTL at the end, so the walk never stalls on it. */
    size_t budget = t->gone.len;
    while ((p = t->gone.head) != NULL && p->until_ns <= now_ns && budget--) {
        if (p->refs) {
            make_gone(t, p, now_ns);
            continue;
        }
        forget(t, p);
    }
    return n;
}

int64_t pc__podtable_next_event(const pc__podtable *t)
{
    int64_t at = 0;
    const pc__podlist *lists[] = {&t->reserved, &t->held, &t->gone};
    for (int i = 0; i < 3; i++)
        if (lists[i]->head && (at == 0 || lists[i]->head->until_ns < at))
            at = lists[i]->head->until_ns;
    return at;
}
