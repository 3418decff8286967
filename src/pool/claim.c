/* Claim states and results: the one place a claim changes state, and the one place it ends
 * and its callback runs.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> [result].
 *
 * Runs on the scheduler thread (or, for a pool shut down before it was started, on the
 * thread calling pc_pool_shutdown), so a callback never runs concurrently with another
 * of the same pool.
 *
 *   INBOX ---admit---> PENDING ---dispatch---> INFLIGHT ---lost CAS---> PENDING
 *     '---admit, the only claim and a pod idle--->'
 *     |                 |    ^                   |   \\---retryable---> RETRY_WAIT --timer--> PENDING
 *     |                 |    '-------------------|---------------------------'
 *     '--------+--------+-------------+----------'  (and from RETRY_WAIT)
 *              v (cancel, deadline, shutdown, result)
 *          DEFERRED (a cancel message still to arrive) ---> DONE (callback)
 */
#include "pool/pool_internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {
#define PC_XX_NAME(name, str) str,
        PC__CLAIM_STATE_MAP(PC_XX_NAME)
#undef PC_XX_NAME
};

static int waiting(int state)
{
    return state == CLAIM_INBOX || state == CLAIM_PENDING || state == CLAIM_RETRY_WAIT;
}

void pc__claim_move(pc_pool *p, pc_claim *c, unsigned from, int to)
{
    int old = c->priv.state;
    assert(old >= 0 && old < CLAIM_STATE_COUNT && (from & (1u << old)) && "claim state");
    (void)from;
    p->queued_delta += waiting(to) - waiting(old);
    c->priv.state = to;
#ifdef PC_TRACE_CLAIMS
    fprintf(stderr, "level=debug pool=%s/%s claim=%s state=%s->%s\n", p->ns, p->name,
            c->id ? c->id : c->priv.id_buf, state_names[old], state_names[to]);
#else
    (void)state_names;
#endif
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memmove(dst, src, n); /* src may be dst (a deferred result's own message) */
    dst[n] = '\0';
}

static void deliver(pc_pool *p, pc_claim *c, pc_claim_status st, const char *error)
{
    int64_t now = pc_now_ns();
    pc_claim_result r;
    r.status = st;
    if (st == PC_CLAIM_OK) {
        copy_str(r.pod_namespace, sizeof(r.pod_namespace), c->priv.pod->ns);
        copy_str(r.pod_name, sizeof(r.pod_name), c->priv.pod->name);
        copy_str(r.resource_version, sizeof(r.resource_version), c->priv.new_rv);
        r.error[0] = '\0';
    } else {
        r.pod_namespace[0] = r.pod_name[0] = r.resource_version[0] = '\0';
        copy_str(r.error, sizeof(r.error), error);
    }
    copy_str(r.claim_id, sizeof(r.claim_id), c->id ? c->id : c->priv.id_buf);
    if (c->priv.pod) { /* held since the dispatch for the names above */
        pc__podtable_unref(c->priv.pod);
        c->priv.pod = NULL;
    }
    r.latency_ns = pc__sub_sat(now, c->enqueued_at_ns);
    r.attempts = c->priv.attempts;
    pc__histogram_observe_1w(&p->m.claim_latency, r.latency_ns);
    pc__count1(&p->m.results[st], 1);
    pc__claim_move(p, c, ~CLAIM_S(DONE), CLAIM_DONE);
    /* From here the claim is the caller's: the callback may free it. */
    c->cb(c, &r, c->cb_arg);
}

void pc__claim_finish(pc_pool *p, pc_claim *c, pc_claim_status st, const char *error)
{
    if (c->priv.suspect) /* ended: an observation of its id must find nothing from now on */
        pc__suspect_remove(p, c);
    /* acq_rel: pairs with the CAS in pc_claim_cancel that sets QUEUED; whichever comes
     * second sees the other's bit. */
    unsigned old = atomic_fetch_or_explicit(&c->priv.flags, CLAIM_F_FINAL, memory_order_acq_rel);
    if (old & CLAIM_F_QUEUED) {
        /* Its cancel message is (or will shortly be) in the cancel inbox: calling back now
         * would let the caller free the claim under it. Answer when it arrives. */
        c->priv.final_status = st;
        copy_str(c->priv.message, sizeof(c->priv.message), error);
        pc__claim_move(p, c,
                       CLAIM_S(INBOX) | CLAIM_S(PENDING) | CLAIM_S(RETRY_WAIT) | CLAIM_S(INFLIGHT),
                       CLAIM_DEFERRED);
        p->deferred_n++;
        return;
    }
    deliver(p, c, st, error);
}

void pc__claim_deliver_deferred(pc_pool *p, pc_claim *c)
{
    p->deferred_n--;
    deliver(p, c, (pc_claim_status)c->priv.final_status, c->priv.message);
}

/* ---- claims whose CAS answer was lost, by id ------------------------------------------------
 *
 * A chained hash table holding only the claims whose CAS was answered RETRYABLE (at most the
 * waiting claims; in a healthy cluster almost none), so a claim that never met a timeout
 * pays nothing. Grows by doubling at load 1; freed when it empties, so a burst of timeouts
 * leaves no memory behind. */

static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)id; *s; s++)
        h = (h ^ *s) * 1099511628211ULL;
    return h;
}

static bool suspects_grow(pc_pool *p)
{
    size_t nb = p->suspects.nb ? p->suspects.nb * 2 : 64;
    pc_claim **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return false;
    for (size_t i = 0; i < p->suspects.nb; i++) {
        for (pc_claim *c = p->suspects.b[i], *next; c; c = next) {
            next = c->priv.id_next;
            c->priv.id_next = b[c->priv.id_hash & (nb - 1)];
            b[c->priv.id_hash & (nb - 1)] = c;
        }
    }
    free(p->suspects.b);
    p->suspects.b = b;
    p->suspects.nb = nb;
    return true;
}

void pc__suspect_add(pc_pool *p, pc_claim *c)
{
    if (c->priv.suspect)
        return;
    if (p->suspects.n >= p->suspects.nb && !suspects_grow(p) && p->suspects.nb == 0)
        return; /* no table at all: this claim cannot be recognised */
    c->priv.id_hash = id_hash(pc__claim_id(c));
    pc_claim **head = &p->suspects.b[c->priv.id_hash & (p->suspects.nb - 1)];
    c->priv.id_next = *head;
    *head = c;
    c->priv.suspect = true;
    p->suspects.n++;
}

void pc__suspect_remove(pc_pool *p, pc_claim *c)
{
    pc_claim **pp = &p->suspects.b[c->priv.id_hash & (p->suspects.nb - 1)];
    while (*pp != c)
        pp = &(*pp)->priv.id_next;
    *pp = c->priv.id_next;
    c->priv.suspect = false;
    if (--p->suspects.n == 0) {
        free(p->suspects.b);
        p->suspects.b = NULL;
        p->suspects.nb = 0;
    }
}

pc_claim *pc__suspect_find(pc_pool *p, const char *id)
{
    if (p->suspects.n == 0)
        return NULL;
    uint64_t h = id_hash(id);
    for (pc_claim *c = p->suspects.b[h & (p->suspects.nb - 1)]; c; c = c->priv.id_next)
        if (c->priv.id_hash == h && strcmp(pc__claim_id(c), id) == 0)
            return c;
    return NULL;
}

void pc__suspects_fini(pc_pool *p)
{
    free(p->suspects.b);
    p->suspects.b = NULL;
    p->suspects.nb = p->suspects.n = 0;
}
