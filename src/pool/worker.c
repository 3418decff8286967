/* CAS workers: start the backend's compare-and-swap for each dispatched (claim, pod),
 * take its outcome, and deliver results.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> [CAS workers]
 *       -> backend -> result.
 *
 * A worker's queue holds two kinds of claims: DISPATCHED (start the CAS) and COMPLETED
 * (the backend reported, from whatever thread it runs on). A won CAS ends right here:
 * the callback runs on the worker, off the scheduler thread, so a slow callback never
 * delays dispatch. Any other outcome goes back to the scheduler, which owns the pod's
 * fate (ready-queue, reservation) and the claim's next step.
 */
#include "pool/pool_internal.h"

#include <stdio.h>
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

void pc__claim_finish(pc_pool *p, pc_claim *c, pc_claim_status st, const char *error)
{
    int64_t now = pc_now_ns();
    pc_claim_result r;
    r.status = st;
    if (st == PC_CLAIM_OK) {
        copy_str(r.pod_namespace, sizeof(r.pod_namespace), c->priv.pod_namespace);
        copy_str(r.pod_name, sizeof(r.pod_name), c->priv.pod_name);
        copy_str(r.resource_version, sizeof(r.resource_version), c->priv.new_rv);
        r.error[0] = '\0';
    } else {
        r.pod_namespace[0] = r.pod_name[0] = r.resource_version[0] = '\0';
        copy_str(r.error, sizeof(r.error), error);
    }
    copy_str(r.claim_id, sizeof(r.claim_id), c->id ? c->id : c->priv.id_buf);
    r.latency_ns = pc__sub_sat(now, c->enqueued_at_ns);
    r.attempts = c->priv.attempts;
    pc__histogram_observe(&p->m.claim_latency, r.latency_ns);
    pc__count(&p->m.results[st]);
    c->priv.state = CLAIM_DONE;
    /* From here the claim is the caller's: the callback may free it. */
    c->cb(c, &r, c->cb_arg);
}

/* The backend's completion: any thread, exactly once per started CAS. */
static void cas_done(void *token, pc_cas_outcome outcome, const char *new_rv, const char *message,
                     int64_t retry_after_ns)
{
    pc_claim *c = token;
    pc_pool *p = c->priv.pool;
    /* Counted before the push below makes the claim visible: from then on the claim can be
     * finished and the pool shut down while this function still uses p. */
    atomic_fetch_add_explicit(&p->completions_running, 1, memory_order_relaxed);
    if ((unsigned)outcome >= PC_CAS_OUTCOME_COUNT) {
        message = "backend reported an unknown outcome";
        outcome = PC_CAS_RETRYABLE;
    }
    c->priv.outcome = outcome;
    copy_str(c->priv.new_rv, sizeof(c->priv.new_rv), outcome == PC_CAS_WON ? new_rv : "");
    copy_str(c->priv.message, sizeof(c->priv.message),
             message ? message : pc_cas_outcome_name(outcome));
    c->priv.retry_after_ns = retry_after_ns > 0 ? retry_after_ns : 0;
    c->priv.state = CLAIM_COMPLETED;
    /* Back to the worker that started it (the push publishes the fields above). */
    pc__worker *w = &p->workers[c->priv.worker];
    pc__mpsc_push(&w->jobs, &c->priv.entry);
    pc__parker_unpark(&w->parker);
    /* release: everything this call did to the pool happens-before shutdown's acquire
     * load that sees the count drop. */
    atomic_fetch_sub_explicit(&p->completions_running, 1, memory_order_release);
}

static void start_cas(pc_pool *p, pc_claim *c)
{
    int64_t now = pc_now_ns();
    if (c->priv.attempts++ == 0)
        pc__histogram_observe(&p->m.dispatch_latency, pc__sub_sat(now, c->enqueued_at_ns));
    pc_cas_request req = {
            .pod = {.namespace_ = c->priv.pod_namespace,
                    .name = c->priv.pod_name,
                    .uid = c->priv.pod_uid,
                    .resource_version = c->priv.pod_rv},
            .opts = &c->opts,
            .target_phase = c->opts.target_phase ? c->opts.target_phase : "Running",
            .claim_id = c->id ? c->id : c->priv.id_buf,
            .claimed_at_unix_ns = pc__realtime_ns(),
            .deadline_ns = c->deadline_ns,
    };
    c->priv.state = CLAIM_INFLIGHT;
    int err = p->backend->cas_start(p->backend, &req, cas_done, c);
    if (err != 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "backend could not start the CAS: %s", pc_strerror(err));
        cas_done(c, PC_CAS_RETRYABLE, NULL, msg, 0);
    }
    /* Nothing may touch c here: it may already be completed and queued. */
}

static void complete(pc_pool *p, pc_claim *c)
{
    pc_cas_outcome o = c->priv.outcome;
    pc__count(&p->m.cas[o]);
    if (o == PC_CAS_WON)
        pc__claim_finish(p, c, PC_CLAIM_OK, NULL);
    else
        pc__mpsc_push(&p->completions, &c->priv.entry);
    /* release: the completion pushed above (or the callback run) happens-before a
     * scheduler that reads the lower count with acquire (shutdown's exit test). */
    int64_t before = atomic_fetch_sub_explicit(&p->inflight.v, 1, memory_order_release);
    /* Wake the scheduler when it has something new: a completion to take, a slot under
     * max_inflight it may be waiting for, or the last CAS a shutdown waits for. */
    if (o != PC_CAS_WON || before == (int64_t)p->cfg.max_inflight ||
        (before == 1 && atomic_load_explicit(&p->stopping, memory_order_relaxed)))
        pc__parker_unpark(&p->parker);
}

static bool worker_has_work(void *arg)
{
    pc__worker *w = arg;
    return !pc__mpsc_empty(&w->jobs) ||
           atomic_load_explicit(&w->pool->workers_stop, memory_order_relaxed);
}

void *pc__worker_main(void *arg)
{
    pc__worker *w = arg;
    pc_pool *p = w->pool;
    char name[16];
    snprintf(name, sizeof(name), "pc-cas-%d", w->index);
    pthread_setname_np(pthread_self(), name); /* best effort: shows in top -H, perf, gdb */
    for (;;) {
        ck_stack_entry_t *e = pc__mpsc_pop(&w->jobs);
        if (e == NULL) {
            /* acquire: pairs with the scheduler's release store after its last dispatch. */
            if (atomic_load_explicit(&p->workers_stop, memory_order_acquire) &&
                pc__mpsc_empty(&w->jobs))
                break;
            pc__parker_park(&w->parker, 0, worker_has_work, w);
            continue;
        }
        pc_claim *c = (pc_claim *)((char *)e - offsetof(pc_claim, priv.entry));
        if (c->priv.state == CLAIM_DISPATCHED)
            start_cas(p, c);
        else
            complete(p, c);
    }
    return NULL;
}
