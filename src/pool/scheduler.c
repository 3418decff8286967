/* The scheduler thread: pairs the best waiting claim with the oldest idle pod and starts
 * the CAS.
 *
 * Flow: informer -> pool ([inbox, ready-queue, pending]) -> reservation -> CAS (backend)
 *       -> result.
 *
 * One thread owns everything here (see pool_internal.h). Each round it takes in what
 * other threads pushed (CAS results, pod offers and withdrawals, new claims), honours
 * cancels and timers, then dispatches while there is an idle pod, a waiting claim and room
 * under max_inflight. Dispatching is calling the backend's cas_start, which never blocks
 * (backend.h); its result comes back through one inbox, and the callback runs here too.
 * With nothing to do it parks on a futex until a producer pushes or the nearest timer (a
 * deadline, a retry, a reservation expiry, the resync period) is due; it never spins or
 * sleeps a fixed time. A backend with an event loop of its own may let this thread run it
 * (backend.h: attach): then the thread sleeps in the backend's wait instead of the futex,
 * producers wake it through the backend, and CAS results are reported on this thread.
 *
 * Why no CAS worker threads: the scheduler used to hand each pair to a worker, which
 * called cas_start and took the completion back. That cost a futex wake-up and a context
 * switch per claim on the way out (the wake-up path was 2-6x the one-thread baseline's),
 * and a backend that is non-blocking by contract gains nothing from another thread.
 *
 * Aging is computed, not scheduled: a claim's effective level is its base level minus
 * one per promote_after it has waited. Each base level is FIFO by enqueued_at, so the
 * head of a level is its oldest and best claim, and the best claim overall is among
 * the six heads: selection is O(levels), and no timer is needed for promotions.
 * Ties between levels go to the older claim (the seed's score = level, then time).
 */
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- pending claims ---------------------------------------------------------------------- */

static int effective_level(const pc_pool *p, const pc_claim *c, int64_t now)
{
    if (c->priv.level_base == 0)
        return 0;
    int64_t waited = pc__sub_sat(now, c->enqueued_at_ns);
    /* A division is ~40 cycles, twice per dispatch; most claims have not waited a period. */
    int64_t steps = waited >= p->cfg.promote_after_ns ? waited / p->cfg.promote_after_ns : 0;
    return steps >= c->priv.level_base ? 0 : c->priv.level_base - (int)steps;
}

static pc_claim *pending_best(const pc_pool *p, int64_t now)
{
    pc_claim *best = NULL;
    int best_eff = PC_PRIORITY_LEVELS;
    for (int l = 0; l < PC_PRIORITY_LEVELS; l++) {
        pc_claim *h = pc__claim_level_top(&p->levels[l]);
        if (h == NULL)
            continue;
        int eff = effective_level(p, h, now);
        if (eff < best_eff || (eff == best_eff && h->enqueued_at_ns < best->enqueued_at_ns)) {
            best = h;
            best_eff = eff;
        }
    }
    return best;
}

/* The claim waits for a pod (from INBOX, or back from a CAS). Its deadline, if any, is its
 * timer. */
static void pending_add(pc_pool *p, pc_claim *c)
{
    pc__claim_move(p, c, CLAIM_S(INBOX) | CLAIM_S(INFLIGHT) | CLAIM_S(RETRY_WAIT), CLAIM_PENDING);
    c->priv.timer_at_ns = c->deadline_ns;
    if (c->deadline_ns > 0 && pc__claim_heap_push(&p->timers, c) != 0) {
        pc__claim_finish(p, c, PC_CLAIM_ERROR, "out of memory for the claim's deadline timer");
        return;
    }
    if (pc__claim_level_push(&p->levels[c->priv.level_base], c) != 0) {
        pc__claim_heap_remove(&p->timers, c);
        pc__claim_finish(p, c, PC_CLAIM_ERROR, "out of memory for the claim's pending level");
        return;
    }
    p->pending_len++;
}

/* Take c out of its level and the timer heap (state unchanged); count its promotions. */
static void pending_take(pc_pool *p, pc_claim *c, int64_t now)
{
    pc__claim_heap_remove(&p->timers, c);
    pc__claim_level_remove(&p->levels[c->priv.level_base], c);
    p->pending_len--;
    int gained = c->priv.level_base - effective_level(p, c, now);
    if (gained > 0)
        pc__count1(&p->m.promotions, (uint64_t)gained);
}

static void retry_take(pc_pool *p, pc_claim *c)
{
    pc__claim_heap_remove(&p->timers, c);
    p->retry_len--;
}

/* ---- taking in what other threads pushed ------------------------------------------------- */

static void claimed_event(pc_pool *p, const pc__pod_key *k, const char *uid, const char *rv,
                          const char *claim_id, int64_t now);

void pc__scheduler_pod_event(pc_pool *p, int kind, const pc__pod_key *k, const char *uid,
                             const char *rv, const char *claim_id, int64_t now)
{
    if (kind == POD_MSG_CLAIMED) {
        claimed_event(p, k, uid, rv, claim_id, now);
        return;
    }
    if (kind == POD_MSG_WITHDRAW) {
        pc__count1(&p->m.withdrawals, 1);
        pc__podtable_withdraw(&p->pods, k, now);
        return;
    }
    pc__count1(&p->m.offers, 1);
    switch (pc__podtable_offer(&p->pods, k, uid, rv)) {
    case PC__OFFER_STALE:
        pc__count1(&p->m.offers_stale, 1);
        break;
    case PC__OFFER_NOMEM:
        fprintf(stderr,
                "level=error pool=%s/%s pod=%s/%s msg=\"pod table: out of memory; the resync "
                "offers it again\"\n",
                p->ns, p->name, k->ns, k->name);
        break;
    default:
        break;
    }
}

/* The informer showed the pod claimed with claim_id at rv (pc_pool_observe_claimed). */
static void claimed_event(pc_pool *p, const pc__pod_key *k, const char *uid, const char *rv,
                          const char *claim_id, int64_t now)
{
    pc__count1(&p->m.withdrawals, 1);
    pc__pod *pod = pc__podtable_find(&p->pods, k);
    if (pod != NULL)
        pc__podtable_withdraw_record(&p->pods, pod, now);
    /* Whose id is it? The claim whose CAS on this very pod is in flight (the usual case: the
     * watch event of our own write, or a PATCH that is timing out), else one whose CAS was
     * answered RETRYABLE. Other claims are no candidates: a claim only ever sent its id in
     * a CAS, and every CAS either is in flight or has answered. */
    pc_claim *c = NULL;
    if (pod != NULL && pod->cas_claim != NULL &&
        strcmp(pc__claim_id(pod->cas_claim), claim_id) == 0)
        c = pod->cas_claim;
    else
        c = pc__suspect_find(p, claim_id);
    if (c == NULL)
        return;
    int st = c->priv.state;
    if (st != CLAIM_INFLIGHT && st != CLAIM_PENDING && st != CLAIM_RETRY_WAIT)
        return; /* ended (DEFERRED: its result is decided) */
    if (st == CLAIM_INFLIGHT && c->priv.seen_pod != NULL)
        return; /* the first sighting stands */
    if (pod == NULL && (pod = pc__podtable_gone_record(&p->pods, k, uid, rv, now)) == NULL) {
        fprintf(stderr,
                "level=error pool=%s/%s pod=%s/%s claim=%s msg=\"pod table: out of memory; "
                "the pod claimed by this claim is not recognised\"\n",
                p->ns, p->name, k->ns, k->name, claim_id);
        return;
    }
    pod->refs++; /* held by the claim until its result names the pod */
    if (st == CLAIM_INFLIGHT) {
        /* Not touched now: its CAS reports later, and a WON there is as good as this. */
        c->priv.seen_pod = pod;
        copy_str(c->priv.seen_rv, sizeof(c->priv.seen_rv), rv);
        return;
    }
    if (st == CLAIM_PENDING)
        pending_take(p, c, now);
    else
        retry_take(p, c);
    c->priv.pod = pod;
    copy_str(c->priv.new_rv, sizeof(c->priv.new_rv), rv);
    pc__count1(&p->m.recognized, 1);
    pc__claim_finish(p, c, PC_CLAIM_OK, NULL);
}

static void take_pod_msg(pc_pool *p, pc__pod_msg *m, int64_t now)
{
    pc__scheduler_pod_event(p, m->kind, &m->key, m->uid, m->rv, m->claim_id, now);
    /* Back to the free list. It holds every message there can be, so this cannot fail. */
    pc__spmc_ring_push(&p->free_msgs, m);
}

/* A generated id: "<pool name, at most 32 bytes>-<8 hex of this pool instance>-<n>", at most
 * 32 + 1 + 8 + 1 + 20 = 62 bytes, so it always fits (a long pool name used to cut the
 * counter off and make every id the same). Made once per claim, when the scheduler takes it
 * in: every retry sends the same id, so a PATCH that timed out but was applied can be
 * recognised by its podclaim.io/claim-id. Unique per pool: n counts up. */
static void make_claim_id(pc_pool *p, pc_claim *c)
{
    snprintf(c->priv.id_buf, sizeof(c->priv.id_buf), "%.32s-%s-%llu", p->name, p->id_tag,
             (unsigned long long)++p->next_claim_seq);
}

static int64_t realtime_from(pc_pool *p, int64_t now);
static void start_cas(pc_pool *p, pc_claim *c, int64_t now, int64_t now_real);

static void admit(pc_pool *p, pc_claim *c, int64_t now)
{
    /* The private fields enqueue left to us (see pc_pool_enqueue). */
    c->priv.timer_index = SIZE_MAX;
    c->priv.level_index = SIZE_MAX;
    c->priv.attempts = 0;
    c->priv.retries = 0;
    c->priv.timer_at_ns = 0;
    c->priv.pod = NULL;
    c->priv.seen_pod = NULL;
    c->priv.suspect = false;
    if (c->id == NULL)
        make_claim_id(p, c);
    c->priv.seq = p->admit_seq++;
    /* The stages a dispatch latency is made of, each from a timestamp the scheduler takes
     * anyway (the round's `now`): the inbox (producers -> this round), then the wait for a
     * pod (here -> the first CAS). */
    c->priv.admitted_at_ns = now;
    pc__histogram_observe_1w(&p->m.inbox_wait, pc__sub_sat(now, c->enqueued_at_ns));
    pc__count1(&p->m.enqueued, 1);
    int prio = c->priority;
    c->priv.level_base = prio < PC_PRIORITY_HIGHEST  ? PC_PRIORITY_HIGHEST
                         : prio > PC_PRIORITY_LOWEST ? PC_PRIORITY_LOWEST
                                                     : prio;
    if (atomic_load_explicit(&p->stopping, memory_order_acquire))
        pc__claim_finish(p, c, PC_CLAIM_SHUTDOWN, "the pool is shutting down");
    else if (atomic_load_explicit(&c->priv.flags, memory_order_acquire) & CLAIM_F_CANCEL)
        pc__claim_finish(p, c, PC_CLAIM_CANCELLED, "cancelled while waiting");
    else if (c->deadline_ns > 0 && now >= c->deadline_ns)
        pc__claim_finish(p, c, PC_CLAIM_DEADLINE, "deadline passed while waiting for a pod");
    else if (p->pending_len == 0 && pc__mpsc_batch_empty(&p->claims) && p->pods.ready.head &&
             p->inflight_n < p->cfg.max_inflight) {
        /* The only claim waiting (none pending, none behind it in this batch) and a pod
         * idle: what the round's dispatch would pick, started now, without joining a level
         * and leaving it again. This is the wake-up path: one claim, an idle pool. */
        pc__claim_move(p, c, CLAIM_S(INBOX), CLAIM_INFLIGHT);
        int64_t now_real = realtime_from(p, now);
        start_cas(p, c, now, now_real);
        pc__gauge_set(&p->last_dispatch_at, now_real);
    } else {
        pending_add(p, c);
    }
}

int64_t pc__retry_delay_ns(int64_t backoff_ns, uint32_t retries, int64_t retry_after_ns,
                           uint64_t *rng)
{
    uint32_t shift = retries > 6 ? 5 : retries - 1; /* cap at 32x */
    int64_t base = backoff_ns > (INT64_MAX >> shift) ? INT64_MAX : backoff_ns << shift;
    /* xorshift64: jitter to [base/2, base) so claims that failed together spread out. */
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    int64_t half = base / 2;
    int64_t d = half + (half > 0 ? (int64_t)(*rng % (uint64_t)half) : 0);
    return d > retry_after_ns ? d : retry_after_ns;
}

/* A claim whose CAS reported (its fields written by cas_done). sent: the CAS reached the
 * backend (false: cas_start refused it, so a RETRYABLE cannot have been applied). */
static void take_result(pc_pool *p, pc_claim *c, int64_t now, bool sent)
{
    pc_cas_outcome o = c->priv.outcome;
    p->inflight_n--;
    pc__count1(&p->m.cas[o], 1);
    if (c->priv.pod->cas_claim == c)
        c->priv.pod->cas_claim = NULL;
    pc__pod *seen = c->priv.seen_pod;
    if (seen != NULL) {
        /* While this CAS was in flight the informer showed `seen` claimed with our id: an
         * earlier CAS of ours whose answer was lost was applied (or this one was, and the
         * watch event beat the answer, which the outcome then confirms). */
        c->priv.seen_pod = NULL;
        if (o == PC_CAS_WON) {
            if (seen != c->priv.pod) {
                pc__count1(&p->m.orphaned, 1);
                fprintf(stderr,
                        "level=warn pool=%s/%s claim=%s pod=%s/%s msg=\"claimed by an earlier "
                        "CAS of this claim whose answer was lost, and this claim won pod %s/%s: "
                        "the first pod is claimed by nobody\"\n",
                        p->ns, p->name, pc__claim_id(c), seen->ns, seen->name, c->priv.pod->ns,
                        c->priv.pod->name);
            }
            pc__podtable_unref(seen);
        } else {
            pc__podtable_cas_done(&p->pods, c->priv.pod, c->priv.pod_gen, o, now);
            pc__podtable_unref(c->priv.pod);
            c->priv.pod = seen; /* its reference moves with it */
            copy_str(c->priv.new_rv, sizeof(c->priv.new_rv), c->priv.seen_rv);
            pc__count1(&p->m.recognized, 1);
            pc__claim_finish(p, c, PC_CLAIM_OK, NULL);
            return;
        }
    }
    if (o == PC_CAS_WON) {
        /* The pod is the caller's. Its reservation stays until the informer shows the pod
         * at another version (offer or withdraw) or the TTL passes. */
        pc__claim_finish(p, c, PC_CLAIM_OK, NULL);
        return;
    }
    /* The pod's fate (the table checks that the reservation is still this dispatch's: a
     * newer offer or a withdrawal may have decided it meanwhile). Only an OK result names
     * the pod, so the claim lets go of the record now. */
    pc__podtable_cas_done(&p->pods, c->priv.pod, c->priv.pod_gen, o, now);
    pc__podtable_unref(c->priv.pod);
    c->priv.pod = NULL;

    char why[256];
    if (o == PC_CAS_INVALID) {
        pc__claim_finish(p, c, PC_CLAIM_REJECTED, c->priv.message);
    } else if (atomic_load_explicit(&p->stopping, memory_order_acquire)) {
        pc__claim_finish(p, c, PC_CLAIM_SHUTDOWN, "the pool is shutting down");
    } else if (atomic_load_explicit(&c->priv.flags, memory_order_acquire) & CLAIM_F_CANCEL) {
        pc__claim_finish(p, c, PC_CLAIM_CANCELLED, "cancelled while its CAS was in flight");
    } else if (c->deadline_ns > 0 && now >= c->deadline_ns) {
        snprintf(why, sizeof(why), "deadline passed; last CAS: %s: %s", pc_cas_outcome_name(o),
                 c->priv.message);
        pc__claim_finish(p, c, PC_CLAIM_DEADLINE, why);
    } else if (o == PC_CAS_RETRYABLE) {
        /* A timeout may have been applied: from now on the informer showing a pod claimed
         * with this id ends the claim OK (claimed_event). */
        if (sent)
            pc__suspect_add(p, c);
        if (++c->priv.retries > p->cfg.retry_limit) {
            snprintf(why, sizeof(why), "gave up after %u retries: %s", p->cfg.retry_limit,
                     c->priv.message);
            pc__claim_finish(p, c, PC_CLAIM_ERROR, why);
            return;
        }
        int64_t at = pc__add_sat(now, pc__retry_delay_ns(p->cfg.retry_backoff_ns, c->priv.retries,
                                                         c->priv.retry_after_ns, &p->rng));
        c->priv.retry_at_ns = at;
        c->priv.timer_at_ns = (c->deadline_ns > 0 && c->deadline_ns < at) ? c->deadline_ns : at;
        pc__claim_move(p, c, CLAIM_S(INFLIGHT), CLAIM_RETRY_WAIT);
        if (pc__claim_heap_push(&p->timers, c) != 0) {
            pc__claim_finish(p, c, PC_CLAIM_ERROR, "out of memory for the claim's retry timer");
            return;
        }
        p->retry_len++;
    } else {
        /* CONFLICT / NOT_FOUND: serve the claim from the next pod, in its old place. */
        pending_add(p, c);
    }
}

static void fire_timers(pc_pool *p, int64_t now)
{
    pc_claim *c;
    while ((c = pc__claim_heap_top(&p->timers)) != NULL && c->priv.timer_at_ns <= now) {
        if (c->priv.state == CLAIM_PENDING) {
            pending_take(p, c, now);
            pc__claim_finish(p, c, PC_CLAIM_DEADLINE, "deadline passed while waiting for a pod");
        } else { /* CLAIM_RETRY_WAIT */
            retry_take(p, c);
            if (c->deadline_ns > 0 && now >= c->deadline_ns)
                pc__claim_finish(p, c, PC_CLAIM_DEADLINE, "deadline passed while backing off");
            else
                pending_add(p, c);
        }
    }
}

/* A cancel message: O(log n) for a waiting claim, nothing to look for. */
static void take_cancel(pc_pool *p, pc_claim *c, int64_t now)
{
    /* acq_rel: pairs with the canceller's CAS that set QUEUED (its flag writes are
     * visible) and with pc__claim_finish's fetch_or of FINAL (whichever is second sees the
     * other). From here no cancel message of this claim is in the inbox. */
    unsigned old = atomic_fetch_and_explicit(&c->priv.flags, ~CLAIM_F_QUEUED, memory_order_acq_rel);
    if (old & CLAIM_F_FINAL) {
        pc__claim_deliver_deferred(p, c); /* its result waited for this message */
        return;
    }
    switch (c->priv.state) {
    case CLAIM_PENDING:
        pending_take(p, c, now);
        pc__claim_finish(p, c, PC_CLAIM_CANCELLED, "cancelled while waiting");
        break;
    case CLAIM_RETRY_WAIT:
        retry_take(p, c);
        pc__claim_finish(p, c, PC_CLAIM_CANCELLED, "cancelled while backing off");
        break;
    default:
        /* INBOX: admission sees the flag. INFLIGHT: the CAS is not aborted; unless it wins,
         * its result ends the claim CANCELLED. */
        break;
    }
}

static void count_expired(pc__pod *pod, void *arg)
{
    (void)pod;
    pc__count1(&((pc_pool *)arg)->m.reservations_expired, 1);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* The backend's completion: any thread, exactly once per started CAS, maybe inside
 * cas_start. It only fills the claim's outcome fields and hands the claim back. */
static void cas_done(void *token, pc_cas_outcome outcome, const char *new_rv, const char *message,
                     int64_t retry_after_ns)
{
    pc_claim *c = token;
    pc_pool *p = c->priv.pool;
    if ((unsigned)outcome >= PC_CAS_OUTCOME_COUNT) {
        message = "backend reported an unknown outcome";
        outcome = PC_CAS_RETRYABLE;
    }
    c->priv.outcome = outcome;
    if (outcome == PC_CAS_WON) {
        copy_str(c->priv.new_rv, sizeof(c->priv.new_rv), new_rv);
    } else { /* the message and Retry-After only when they will be read */
        copy_str(c->priv.message, sizeof(c->priv.message),
                 message ? message : pc_cas_outcome_name(outcome));
        c->priv.retry_after_ns = retry_after_ns > 0 ? retry_after_ns : 0;
    }
    c->priv.entry.next = NULL;
    if (pc__on_scheduler(p)) {
        /* Answered inside cas_start, or inside the backend's wait when this thread runs
         * the backend's loop (parker.drive): no inbox, no wake-up. */
        if (p->local_results.tail)
            p->local_results.tail->next = &c->priv.entry;
        else
            p->local_results.head = &c->priv.entry;
        p->local_results.tail = &c->priv.entry;
        return;
    }
    /* Counted before the push makes the claim visible: from then on the claim can be
     * finished and the pool shut down while this function still uses p. */
    atomic_fetch_add_explicit(&p->completions_running, 1, memory_order_relaxed);
    pc__mpsc_push(&p->results, &c->priv.entry); /* publishes the fields above */
    pc__parker_unpark(&p->parker);
    /* release: everything this call did to the pool happens-before shutdown's acquire
     * load that sees the count drop. */
    atomic_fetch_sub_explicit(&p->completions_running, 1, memory_order_release);
}

/* Wall-clock time (claimed-at, last_dispatch_at) from the round's monotonic `now` and an
 * offset read at most every 100 ms: a clock read costs 40-80 ns on this project's VMs,
 * a third of a dispatch. The offset moves only when the wall clock is stepped or slewed;
 * a step shows within 100 ms, a slew is microseconds per second. */
static int64_t realtime_from(pc_pool *p, int64_t now)
{
    if (p->real_offset_at == 0 || now - p->real_offset_at >= 100000000) {
        p->real_offset = pc__realtime_ns() - pc_now_ns();
        p->real_offset_at = now;
    }
    return now + p->real_offset;
}

/* Start the CAS of c (just moved to INFLIGHT) on the ready-queue's head. */
static void start_cas(pc_pool *p, pc_claim *c, int64_t now, int64_t now_real)
{
    pc__pod *pod = pc__podtable_reserve(&p->pods, now);
    c->priv.pod = pod;
    c->priv.pod_gen = pod->gen;
    pod->cas_claim = c;
    /* Copies: an offer may change the record's version and uid while the CAS is in
     * flight, and the backend may read the request's strings until it reports. */
    copy_str(c->priv.pod_rv, sizeof(c->priv.pod_rv), pod->rv);
    copy_str(c->priv.pod_uid, sizeof(c->priv.pod_uid), pod->uid);
    if (c->priv.attempts++ == 0) {
        pc__histogram_observe_1w(&p->m.dispatch_latency, pc__sub_sat(now, c->enqueued_at_ns));
        pc__histogram_observe_1w(&p->m.pending_wait, now - c->priv.admitted_at_ns);
    }
    pc_cas_request req = {
            .pod = {.namespace_ = pod->ns,
                    .name = pod->name,
                    .uid = c->priv.pod_uid,
                    .resource_version = c->priv.pod_rv},
            .opts = &c->opts,
            .target_phase = c->opts.target_phase ? c->opts.target_phase : "Running",
            .claim_id = pc__claim_id(c),
            .claimed_at_unix_ns = now_real,
            .deadline_ns = c->deadline_ns,
    };
    p->inflight_n++;
    int err = p->backend->cas_start(p->backend, &req, cas_done, c);
    if (err != 0) {
        /* Never started: the claim backs off like after a retryable answer. */
        char msg[96];
        snprintf(msg, sizeof(msg), "backend could not start the CAS: %s", pc_strerror(err));
        c->priv.outcome = PC_CAS_RETRYABLE;
        copy_str(c->priv.message, sizeof(c->priv.message), msg);
        c->priv.retry_after_ns = 0;
        take_result(p, c, now, false);
    }
    /* c may be answered already (a backend that completes inside cas_start). */
}

static void dispatch(pc_pool *p, int64_t now)
{
    int64_t now_real = 0;
    while (p->pods.ready.head && p->pending_len && p->inflight_n < p->cfg.max_inflight) {
        pc_claim *c = pending_best(p, now);
        pending_take(p, c, now);
        pc__claim_move(p, c, CLAIM_S(PENDING), CLAIM_INFLIGHT);
        if (now_real == 0)
            now_real = realtime_from(p, now);
        start_cas(p, c, now, now_real);
    }
    if (now_real)
        pc__gauge_set(&p->last_dispatch_at, now_real);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void drain(pc_pool *p, int64_t now)
{
    ck_stack_entry_t *e;
    while ((e = pc__mpsc_pop(&p->offers)) != NULL)
        take_pod_msg(p, (pc__pod_msg *)e, now);
    while ((e = p->local_results.head) != NULL) {
        p->local_results.head = e->next;
        if (p->local_results.head == NULL)
            p->local_results.tail = NULL;
        take_result(p, (pc_claim *)((char *)e - offsetof(pc_claim, priv.entry)), now, true);
    }
    while ((e = pc__mpsc_pop(&p->results)) != NULL)
        take_result(p, (pc_claim *)((char *)e - offsetof(pc_claim, priv.entry)), now, true);
    while ((e = pc__mpsc_pop(&p->claims)) != NULL)
        admit(p, (pc_claim *)((char *)e - offsetof(pc_claim, priv.entry)), now);
    /* After the claims: a cancel message for a claim still in the claims inbox would find
     * it INBOX and leave it to admission, which sees the flag too. */
    while ((e = pc__mpsc_pop(&p->cancels)) != NULL)
        take_cancel(p, (pc_claim *)((char *)e - offsetof(pc_claim, priv.cancel_entry)), now);
}

/* Apply the round's changes to `queued` in one atomic add. seq_cst: shutdown's exit test
 * reads the count after storing `stopping` (see pc_pool_enqueue). */
static void flush_queued(pc_pool *p)
{
    if (p->queued_delta != 0) {
        atomic_fetch_add_explicit(&p->queued.v, p->queued_delta, memory_order_seq_cst);
        p->queued_delta = 0;
    }
}

static void publish_gauges(pc_pool *p)
{
    pc__gauge_set(&p->inflight, (int64_t)p->inflight_n);
    pc__gauge_set(&p->idle_ready, (int64_t)p->pods.ready.len);
    pc__gauge_set(&p->pods_tracked, (int64_t)pc__podtable_count(&p->pods));
    pc__gauge_set(&p->reserved, (int64_t)(p->pods.reserved.len + p->pods.held.len));
}

/* Shutdown: every waiting claim gets SHUTDOWN; returns true once nothing is left
 * anywhere (inbox, pending, backing off, in flight, a result waiting for its cancel). */
static bool drain_for_shutdown(pc_pool *p, int64_t now)
{
    for (int l = 0; l < PC_PRIORITY_LEVELS; l++) {
        pc_claim *c;
        while ((c = pc__claim_level_top(&p->levels[l])) != NULL) {
            pending_take(p, c, now);
            pc__claim_finish(p, c, PC_CLAIM_SHUTDOWN, "the pool is shutting down");
        }
    }
    pc_claim *c;
    while ((c = pc__claim_heap_top(&p->timers)) != NULL) {
        retry_take(p, c);
        pc__claim_finish(p, c, PC_CLAIM_SHUTDOWN, "the pool is shutting down");
    }
    flush_queued(p);
    /* queued == 0: every enqueue that counted itself has pushed and been answered (or
     * backed out); the in-flight ones come back through results. */
    return p->inflight_n == 0 && p->deferred_n == 0 &&
           atomic_load_explicit(&p->queued.v, memory_order_seq_cst) == 0 &&
           p->local_results.head == NULL && pc__mpsc_empty(&p->results) &&
           pc__mpsc_empty(&p->claims) && pc__mpsc_empty(&p->cancels);
}

static bool has_work(void *arg)
{
    pc_pool *p = arg;
    if (p->local_results.head || !pc__mpsc_empty(&p->claims) || !pc__mpsc_empty(&p->offers) ||
        !pc__mpsc_empty(&p->results) || !pc__mpsc_empty(&p->cancels))
        return true;
    if (atomic_load_explicit(&p->resync_now, memory_order_relaxed))
        return true;
    if (atomic_load_explicit(&p->stopping, memory_order_relaxed))
        /* Claims the drain would answer at once (a round that read `stopping` before it
         * was set left them waiting), or the exit. Counting only the exit left such claims
         * waiting for the next CAS answer, or for good, and the shutdown with them. */
        return p->pending_len || pc__claim_heap_top(&p->timers) ||
               (p->inflight_n == 0 && p->deferred_n == 0 &&
                atomic_load_explicit(&p->queued.v, memory_order_relaxed) == 0);
    return p->pods.ready.head && p->pending_len && p->inflight_n < p->cfg.max_inflight;
}

static int64_t next_wakeup(pc_pool *p)
{
    int64_t at = 0;
    pc_claim *t = pc__claim_heap_top(&p->timers);
    if (t)
        at = t->priv.timer_at_ns;
    int64_t r = pc__podtable_next_event(&p->pods);
    if (r && (at == 0 || r < at))
        at = r;
    /* No resync while stopping: its due time would stay in the past and wake us at once,
     * again and again, until the last CAS reports. */
    if (p->cfg.resync && p->cfg.resync_period_ns > 0 &&
        !atomic_load_explicit(&p->stopping, memory_order_relaxed) &&
        (at == 0 || p->next_resync_at < at))
        at = p->next_resync_at;
    return at;
}

void *pc__scheduler_main(void *arg)
{
    pc_pool *p = arg;
    atomic_store_explicit(&p->sched_self, pthread_self(), memory_order_relaxed);
    pthread_setname_np(pthread_self(), "pc-sched"); /* best effort: shows in top -H, perf, gdb */
    /* Run the backend's event loop here if it lets us (backend.h: attach): a CAS is then
     * sent, answered and taken in on this thread (cas_done sees pc__on_scheduler), without a
     * second thread's wake-up per claim. Before the first park: see pc__parker.drive. */
    pc_backend *b = p->backend;
    if (b->attach && b->wait && b->wake && b->detach && b->attach(b) == 0)
        p->parker.drive = b;
    int64_t now = pc_now_ns();
    p->next_resync_at = pc__add_sat(now, p->cfg.resync_period_ns);
    for (;;) {
        now = pc_now_ns();
        drain(p, now);
        fire_timers(p, now);
        /* An expired reservation guarded a pod whose new version never showed up: a 409
         * that nothing followed (a spurious conflict), or a lost event. Resync now, so the
         * informer re-offers the pod if it is still idle, instead of a period later. */
        /* The request flag is consumed every round, hook or not: a flag only the hook
         * cleared kept has_work() true and the thread spinning in a pool without one. */
        bool resync = atomic_load_explicit(&p->resync_now, memory_order_relaxed) &&
                      atomic_exchange_explicit(&p->resync_now, false, memory_order_acq_rel);
        if (pc__podtable_sweep(&p->pods, now, count_expired, p) > 0)
            resync = true;

        bool stopping = atomic_load_explicit(&p->stopping, memory_order_seq_cst);
        if (!stopping && p->cfg.resync &&
            (resync || (p->cfg.resync_period_ns > 0 && now >= p->next_resync_at))) {
            p->cfg.resync(p->cfg.resync_arg);
            p->next_resync_at = pc__add_sat(now, p->cfg.resync_period_ns);
        }
        if (stopping) {
            bool done = drain_for_shutdown(p, now);
            publish_gauges(p);
            if (done)
                break;
        } else {
            dispatch(p, now);
            flush_queued(p);
            publish_gauges(p);
        }
        pc__parker_park(&p->parker, next_wakeup(p), has_work, p);
    }
    /* Every CAS of ours has reported (drain_for_shutdown): the loop goes back to the backend.
     * parker.drive stays set: a late producer's wake through it is harmless. */
    if (p->parker.drive)
        b->detach(b);
    return NULL;
}

void pc__scheduler_drain_unstarted(pc_pool *p)
{
    /* The calling thread plays the scheduler. An enqueuer may have counted its place
     * before `stopping` was set and not pushed yet: drain_for_shutdown says so (false), and
     * we park until its push wakes us. Giving up there lost that claim's callback. */
    for (;;) {
        int64_t now = pc_now_ns();
        drain(p, now);
        bool done = drain_for_shutdown(p, now);
        publish_gauges(p);
        if (done)
            break;
        pc__parker_park(&p->parker, 0, has_work, p);
    }
}

int pc__scheduler_init(pc_pool *p)
{
    int err = pc__podtable_init(&p->pods, p->cfg.reservation_ttl_ns, p->cfg.conflict_hold_ns);
    if (err)
        return err;
    pc__claim_heap_init(&p->timers, PC__HEAP_TIMER);
    for (int l = 0; l < PC_PRIORITY_LEVELS; l++)
        pc__claim_level_init(&p->levels[l]);
    return 0;
}

void pc__scheduler_fini(pc_pool *p)
{
    pc__suspects_fini(p);
    pc__podtable_fini(&p->pods);
    pc__claim_heap_fini(&p->timers);
    for (int l = 0; l < PC_PRIORITY_LEVELS; l++)
        pc__claim_level_fini(&p->levels[l]);
}
