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
 *     |                 |    ^                   |   \\---retryable---> RETRY_WAIT --timer--> PENDING
 *     |                 |    '-------------------|---------------------------'
 *     '--------+--------+-------------+----------'  (and from RETRY_WAIT)
 *              v (cancel, deadline, shutdown, result)
 *          DEFERRED (a cancel message still to arrive) ---> DONE (callback)
 */
#include "pool/pool_internal.h"

#include <assert.h>
#include <stdio.h>
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
