/* The pool's public API: lifecycle, enqueue, offers, cancel, the blocking claim,
 * snapshot.
 *
 * Flow: [callers, informer] -> pool (inbox, ready-queue, pending) -> reservation
 *       -> CAS (backend) -> result.
 *
 * Everything a producer thread does here is lock-free: a relaxed-or-stronger atomic on
 * a counter, a ck_stack push, and a parker check. The scheduler thread (scheduler.c)
 * does the rest. Lifecycle calls (start, shutdown, free) serialise on life_lock; they
 * are rare and may block.
 */
#include "pool/pool_internal.h"
#include "util/ckhs.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t pc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t pc__realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *pc_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "ok";
    case EAGAIN:
        return "EAGAIN: full, try again later";
    case EINVAL:
        return "EINVAL: invalid argument";
    case ENOMEM:
        return "ENOMEM: out of memory";
    case ESHUTDOWN:
        return "ESHUTDOWN: the pool is shutting down";
    case EALREADY:
        return "EALREADY: already started";
    case ENOENT:
        return "ENOENT: not found";
    case EEXIST:
        return "EEXIST: already exists";
    case EBUSY:
        return "EBUSY: busy";
    default:
        return strerror(err); /* glibc: static or thread-local storage */
    }
}

const char *pc_claim_status_name(pc_claim_status s)
{
    static const char *const names[] = {
#define PC_XX_NAME(name, str) str,
            PC_CLAIM_STATUS_MAP(PC_XX_NAME)
#undef PC_XX_NAME
    };
    return (unsigned)s < PC_CLAIM_STATUS_COUNT ? names[s] : "unknown";
}

const char *pc_cas_outcome_name(pc_cas_outcome o)
{
    static const char *const names[] = {
#define PC_XX_NAME(name, str) str,
            PC_CAS_OUTCOME_MAP(PC_XX_NAME)
#undef PC_XX_NAME
    };
    return (unsigned)o < PC_CAS_OUTCOME_COUNT ? names[o] : "unknown";
}

void pc_claim_init(pc_claim *c, int priority, pc_claim_cb cb, void *cb_arg)
{
    /* The public part only: the pool initialises its private part (enqueue, admit), and
     * zeroing all of it would pull every line of a reused claim back from the scheduler's
     * core for nothing. */
    memset(c, 0, offsetof(pc_claim, priv));
    c->priority = priority;
    c->cb = cb;
    c->cb_arg = cb_arg;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* C11 aligned_alloc wants the size to be a multiple of the alignment. */
static void *alloc_cachelines(size_t n)
{
    return aligned_alloc(CK_MD_CACHELINE,
                         (n + CK_MD_CACHELINE - 1) / CK_MD_CACHELINE * CK_MD_CACHELINE);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static void free_identity(pc_pool *p)
{
    free(p->ns);
    free(p->name);
    free(p->team);
    free(p->user);
    free(p->env);
    if (p->tags)
        for (size_t i = 0; i < p->cfg.n_tags; i++)
            free(p->tags[i]);
    free(p->tags);
    free(p->labels);
}

static char *render_labels(const pc_pool *p)
{
    char buf[1024];
    pc__textbuf t;
    pc__textbuf_init(&t, buf, sizeof(buf));
    const char *keys[] = {"pool", "namespace", "team", "user", "env"};
    const char *vals[] = {p->name, p->ns, p->team, p->user, p->env};
    for (size_t i = 0; i < 5; i++) {
        pc__textbuf_printf(&t, "%s%s=\"", i ? "," : "", keys[i]);
        pc__textbuf_label_value(&t, vals[i]);
        pc__textbuf_printf(&t, "\"");
    }
    if (t.need >= sizeof(buf))
        return NULL; /* identity strings absurdly long: refuse rather than truncate */
    return strdup(buf);
}

int pc_pool_new(const pc_pool_config *cfg, pc_backend *backend, pc_pool **out)
{
    if (cfg == NULL || out == NULL || backend == NULL || backend->cas_start == NULL)
        return -EINVAL;
    if (cfg->namespace_ == NULL || cfg->namespace_[0] == '\0' || cfg->name == NULL ||
        cfg->name[0] == '\0' || strlen(cfg->namespace_) >= PC_NAMESPACE_MAX ||
        strlen(cfg->name) >= PC_NAME_MAX)
        return -EINVAL;
    if (cfg->promote_after_ns < 0 || cfg->retry_backoff_ns < 0 || cfg->reservation_ttl_ns < 0 ||
        cfg->conflict_hold_ns < 0 || (cfg->n_tags > 0 && cfg->tags == NULL))
        return -EINVAL;

    pc_pool *p = alloc_cachelines(sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    p->backend = backend;
    if (!p->cfg.inbox_capacity)
        p->cfg.inbox_capacity = 65536;
    if (!p->cfg.max_inflight)
        p->cfg.max_inflight = 256;
    if (!p->cfg.promote_after_ns)
        p->cfg.promote_after_ns = 30 * (int64_t)1000000000;
    if (!p->cfg.retry_limit)
        p->cfg.retry_limit = 5;
    if (!p->cfg.retry_backoff_ns)
        p->cfg.retry_backoff_ns = 50 * (int64_t)1000000;
    if (!p->cfg.reservation_ttl_ns)
        p->cfg.reservation_ttl_ns = 5 * (int64_t)1000000000;
    if (!p->cfg.conflict_hold_ns)
        p->cfg.conflict_hold_ns = (int64_t)1000000000;
    if (!p->cfg.resync_period_ns)
        p->cfg.resync_period_ns = 10 * (int64_t)1000000000;
    if (!p->cfg.offer_capacity)
        p->cfg.offer_capacity = 65536;

    int err = -ENOMEM;
    p->ns = dup_or_empty(cfg->namespace_);
    p->name = dup_or_empty(cfg->name);
    p->team = dup_or_empty(cfg->team);
    p->user = dup_or_empty(cfg->user);
    p->env = dup_or_empty(cfg->env);
    if (!p->ns || !p->name || !p->team || !p->user || !p->env)
        goto fail_identity;
    if (cfg->n_tags) {
        p->tags = calloc(cfg->n_tags, sizeof(char *));
        if (p->tags == NULL)
            goto fail_identity;
        for (size_t i = 0; i < cfg->n_tags; i++)
            if ((p->tags[i] = dup_or_empty(cfg->tags[i])) == NULL)
                goto fail_identity;
    }
    p->cfg.namespace_ = p->ns;
    p->cfg.name = p->name;
    p->cfg.team = p->team;
    p->cfg.user = p->user;
    p->cfg.env = p->env;
    p->cfg.tags = (const char *const *)p->tags;
    if ((p->labels = render_labels(p)) == NULL) {
        err = -EINVAL;
        goto fail_identity;
    }

    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
        rnd = (uint32_t)pc__realtime_ns() ^ (uint32_t)(uintptr_t)p;
    snprintf(p->id_tag, sizeof(p->id_tag), "%08x", rnd);
    p->rng = ((uint64_t)rnd << 32) | 0x9e3779b9u;

    pc__mpsc_init(&p->claims);
    pc__mpsc_init(&p->offers);
    pc__mpsc_init(&p->results);
    pc__mpsc_init(&p->cancels);
    pc__parker_init(&p->parker);
    /* The ring holds every message there can be: the smallest power of two >= capacity. */
    p->msg_capacity = p->cfg.offer_capacity > (1u << 30) ? (1u << 30) : p->cfg.offer_capacity;
    uint32_t ring = 1;
    while (ring < p->msg_capacity)
        ring *= 2;
    if ((err = pc__spmc_ring_init(&p->free_msgs, ring)) != 0)
        goto fail_identity;
    if ((err = pc__scheduler_init(p)) != 0)
        goto fail_ring;
    if ((err = -pthread_mutex_init(&p->life_lock, NULL)) != 0)
        goto fail_sched;
    p->life_state = POOL_NEW;
    *out = p;
    return 0;

fail_sched:
    pc__scheduler_fini(p);
fail_ring:
    pc__spmc_ring_fini(&p->free_msgs);
fail_identity:
    free_identity(p);
    free(p);
    return err;
}

int pc_pool_start(pc_pool *p)
{
    int err = 0;
    pthread_mutex_lock(&p->life_lock);
    if (p->life_state != POOL_NEW) {
        err = p->life_state == POOL_RUNNING ? -EALREADY : -ESHUTDOWN;
    } else if ((err = -pthread_create(&p->sched_thread, NULL, pc__scheduler_main, p)) != 0) {
        fprintf(stderr, "level=error pool=%s/%s msg=\"pthread_create for scheduler: %s\"\n", p->ns,
                p->name, pc_strerror(err));
    } else {
        p->life_state = POOL_RUNNING;
    }
    pthread_mutex_unlock(&p->life_lock);
    return err;
}

void pc_pool_shutdown(pc_pool *p)
{
    pthread_mutex_lock(&p->life_lock);
    /* seq_cst: ordered against the `queued` increment an enqueuer makes before it reads
     * `stopping` (see pc_pool_enqueue). */
    atomic_store_explicit(&p->stopping, true, memory_order_seq_cst);
    if (p->life_state == POOL_RUNNING) {
        pc__parker_unpark(&p->parker);
        pthread_join(p->sched_thread, NULL); /* returns once drained */
        /* A backend thread may still be in the last instructions of a completion (waking
         * the scheduler, which has already taken the claim). A few instructions: yield, not
         * sleep. */
        while (atomic_load_explicit(&p->completions_running, memory_order_acquire) != 0 ||
               atomic_load_explicit(&p->cancels_running, memory_order_acquire) != 0)
            sched_yield();
    } else if (p->life_state == POOL_NEW) {
        pc__scheduler_drain_unstarted(p);
    }
    p->life_state = POOL_STOPPED;
    pthread_mutex_unlock(&p->life_lock);
}

void pc_pool_free(pc_pool *p)
{
    if (p == NULL)
        return;
    pc_pool_shutdown(p);
    pc__scheduler_fini(p);
    /* Every message is in the free ring or (offered after the drain) in the inbox. */
    ck_stack_entry_t *e;
    while ((e = pc__mpsc_pop(&p->offers)) != NULL)
        free(e);
    void *m;
    while (pc__spmc_ring_pop(&p->free_msgs, &m))
        free(m);
    pc__spmc_ring_fini(&p->free_msgs);
    pthread_mutex_destroy(&p->life_lock);
    free_identity(p);
    free(p);
}

/* ---- producers -------------------------------------------------------------------------- */

int pc_pool_enqueue(pc_pool *p, pc_claim *c)
{
    if (c == NULL || c->cb == NULL ||
        (c->id && (c->id[0] == '\0' || strnlen(c->id, PC_CLAIM_ID_MAX) >= PC_CLAIM_ID_MAX)) ||
        pc_claim_opts_check(&c->opts, NULL, 0) != 0)
        return -EINVAL;
    /* Reserve a place first (seq_cst), then check `stopping` (seq_cst): shutdown stores
     * `stopping` then waits for `queued` to reach 0, so either we see `stopping` and back
     * out, or the scheduler sees our place and waits for our push. The count covers every
     * waiting claim, not only the inbox: the scheduler subtracts a claim when it gets a CAS
     * or a result. */
    int64_t before = atomic_fetch_add_explicit(&p->queued.v, 1, memory_order_seq_cst);
    int err = 0;
    if (atomic_load_explicit(&p->stopping, memory_order_seq_cst))
        err = -ESHUTDOWN;
    else if (before >= (int64_t)p->cfg.inbox_capacity)
        err = -EAGAIN;
    if (err) {
        atomic_fetch_sub_explicit(&p->queued.v, 1, memory_order_seq_cst);
        if (err == -EAGAIN)
            pc__count(&p->enqueue_rejected);
        /* A draining scheduler may have seen our place and parked waiting for the push. */
        if (atomic_load_explicit(&p->stopping, memory_order_seq_cst))
            pc__parker_unpark(&p->parker);
        return err;
    }
    if (c->enqueued_at_ns == 0)
        c->enqueued_at_ns = pc_now_ns();
    /* Only what a cancel may read before admission; the scheduler sets the rest when it
     * takes the claim in (admit). Every line of the claim the producer writes moves to the
     * scheduler's core afterwards; lines only the scheduler writes stay in its cache when
     * the caller reuses the claim's memory. */
    c->priv.pool = p;
    atomic_init(&c->priv.flags, 0);
    c->priv.state = CLAIM_INBOX; /* the one state set outside pc__claim_move: the start */
    pc__mpsc_push(&p->claims, &c->priv.entry);
    pc__parker_unpark(&p->parker);
    return 0;
}

void pc_claim_cancel(pc_claim *c)
{
    pc_pool *p = c->priv.pool;
    /* acq_rel on every step: see CLAIM_F_* in pool_internal.h for the protocol. */
    unsigned cur = atomic_fetch_or_explicit(&c->priv.flags, CLAIM_F_CANCEL, memory_order_acq_rel);
    if (cur & (CLAIM_F_CANCEL | CLAIM_F_FINAL) || p == NULL)
        return; /* already requested, or the result is decided (too late) */
    cur |= CLAIM_F_CANCEL;
    do {
        if (cur & CLAIM_F_FINAL)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&c->priv.flags, &cur, cur | CLAIM_F_QUEUED,
                                                    memory_order_acq_rel, memory_order_acquire));
    /* QUEUED is set: the scheduler holds the claim's result until it takes this message in,
     * so the claim stays alive past the push. The pool must too, until we are out of it. */
    atomic_fetch_add_explicit(&p->cancels_running, 1, memory_order_relaxed);
    pc__mpsc_push(&p->cancels, &c->priv.cancel_entry);
    pc__parker_unpark(&p->parker);
    /* release: our last touch of the pool happens-before shutdown's acquire load. */
    atomic_fetch_sub_explicit(&p->cancels_running, 1, memory_order_release);
}

static bool fits(const char *s, size_t cap)
{
    return strnlen(s, cap) < cap;
}

/* A message from the free list, or a new one while fewer than msg_capacity exist. NULL:
 * the pool holds msg_capacity messages already (*err = -EAGAIN), or -ENOMEM. */
static pc__pod_msg *take_msg(pc_pool *p, int *err)
{
    void *m;
    if (pc__spmc_ring_pop(&p->free_msgs, &m))
        return m;
    /* relaxed: only a bound; the ring hand-off orders the messages themselves. */
    if (atomic_fetch_add_explicit(&p->msgs_allocated, 1, memory_order_relaxed) >= p->msg_capacity) {
        atomic_fetch_sub_explicit(&p->msgs_allocated, 1, memory_order_relaxed);
        /* One more look: the scheduler may have given one back meanwhile. */
        if (pc__spmc_ring_pop(&p->free_msgs, &m))
            return m;
        *err = -EAGAIN;
        return NULL;
    }
    if ((m = malloc(sizeof(pc__pod_msg))) == NULL) {
        atomic_fetch_sub_explicit(&p->msgs_allocated, 1, memory_order_relaxed);
        *err = -ENOMEM;
    }
    return m;
}

static int push_pod_msg(pc_pool *p, const pc_pod_ref *pod, int kind, const char *claim_id)
{
    if (pod == NULL || pod->namespace_ == NULL || pod->name == NULL || pod->name[0] == '\0' ||
        pod->namespace_[0] == '\0')
        return -EINVAL;
    const char *rv = pod->resource_version ? pod->resource_version : "";
    const char *uid = pod->uid ? pod->uid : "";
    if ((kind == POD_MSG_OFFER && rv[0] == '\0') || !fits(pod->namespace_, PC_NAMESPACE_MAX) ||
        !fits(pod->name, PC_NAME_MAX) || !fits(uid, PC_UID_MAX) || !fits(rv, PC_RV_MAX))
        return -EINVAL;
    if (kind == POD_MSG_CLAIMED &&
        (claim_id == NULL || claim_id[0] == '\0' || !fits(claim_id, PC_CLAIM_ID_MAX)))
        return -EINVAL;
    if (atomic_load_explicit(&p->stopping, memory_order_acquire))
        return -ESHUTDOWN;
    /* CLAIMED always takes the message path: it may end a claim, and a callback must not run
     * inside another callback or inside cas_start. */
    if (kind != POD_MSG_CLAIMED && pc__on_scheduler(p) && pc__mpsc_empty(&p->offers)) {
        /* Made on the scheduler thread (a callback recycling a pod, a backend reporting a
         * moved version inside cas_start): the table is ours to change right now, between
         * two steps of the scheduler; no message, no wake-up. Only with no message waiting:
         * offers of one pod must be taken in in the order they were made, or an older
         * version could overwrite a newer one. (A later thread cannot be mistaken for an
         * exited scheduler: it exits only after `stopping`, checked above.) */
        pc__pod_key k = {pc__pod_key_hash(pod->namespace_, pod->name, 0), pod->namespace_,
                         pod->name};
        pc__scheduler_pod_event(p, kind, &k, uid, rv, NULL, pc_now_ns());
        return 0;
    }
    int err = 0;
    pc__pod_msg *m = take_msg(p, &err);
    if (m == NULL) {
        if (err == -EAGAIN)
            pc__count(&p->offers_refused);
        return err;
    }
    m->kind = kind;
    strcpy(m->ns, pod->namespace_);
    strcpy(m->name, pod->name);
    strcpy(m->uid, uid);
    strcpy(m->rv, rv);
    if (kind == POD_MSG_CLAIMED)
        strcpy(m->claim_id, claim_id);
    /* The hash here, on the offering thread: the scheduler's share is one lookup. */
    m->key = (pc__pod_key){pc__pod_key_hash(m->ns, m->name, 0), m->ns, m->name};
    pc__mpsc_push(&p->offers, &m->entry);
    pc__parker_unpark(&p->parker);
    return 0;
}

int pc_pool_offer_idle(pc_pool *p, const pc_pod_ref *pod)
{
    return push_pod_msg(p, pod, POD_MSG_OFFER, NULL);
}

int pc_pool_withdraw(pc_pool *p, const pc_pod_ref *pod)
{
    return push_pod_msg(p, pod, POD_MSG_WITHDRAW, NULL);
}

int pc_pool_observe_claimed(pc_pool *p, const pc_pod_ref *pod, const char *claim_id)
{
    return push_pod_msg(p, pod, POD_MSG_CLAIMED, claim_id);
}

void pc_pool_notify_idle(pc_pool *p)
{
    atomic_store_explicit(&p->resync_now, true, memory_order_release);
    pc__parker_unpark(&p->parker);
}

pc_snapshot pc_pool_snapshot(const pc_pool *p)
{
    int64_t queued = pc__gauge_get(&p->queued);
    pc_snapshot s = {
            .idle_ready = (uint64_t)pc__gauge_get(&p->idle_ready),
            .queue_len = (uint64_t)(queued > 0 ? queued : 0),
            .reserved = (uint64_t)pc__gauge_get(&p->reserved),
            .inflight_cas = (uint64_t)pc__gauge_get(&p->inflight),
            .last_dispatch_at = pc__gauge_get(&p->last_dispatch_at),
    };
    return s;
}

/* ---- the blocking convenience --------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    pc_claim_result *out;
} waiter;

static void waiter_cb(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    *w->out = *r;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int pc_pool_claim(pc_pool *p, const pc_claim_opts *opts, int priority, int64_t timeout_ns,
                  pc_claim_result *out)
{
    if (out == NULL)
        return -EINVAL;
    waiter w = {.done = false, .out = out};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    pc_claim c;
    pc_claim_init(&c, priority, waiter_cb, &w);
    if (opts)
        c.opts = *opts;
    if (timeout_ns > 0)
        c.deadline_ns = pc__add_sat(pc_now_ns(), timeout_ns);
    int err = pc_pool_enqueue(p, &c);
    if (err == 0) {
        /* The claim's deadline bounds this wait: the pool always answers, with DEADLINE
         * at the latest, or when the CAS in flight then reports (the backend bounds it:
         * the kube backend's deadline grace). */
        pthread_mutex_lock(&w.lock);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return err;
}
