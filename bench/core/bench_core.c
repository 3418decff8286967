/* bench_core: what the lock-free core buys, each figure beside a baseline measured in
 * the same run (these machines are shared and noisy: read the ratios).
 *
 * 1. Inbox hand-off: P producers push N items to one consumer. podclaim's inbox (ck_stack
 *    batch + futex parker) vs a mutex + condition-variable queue.
 * 2. Claims/s, 8 producer threads, zero-latency in-memory backend, pods recycled on
 *    completion. podclaim's pool vs a baseline dispatcher: one thread, a mutex +
 *    condvar inbox and ready list, the same backend, CAS and callback inline. The
 *    baseline does less per claim (one level, no reservation). Baseline A: the same pool
 *    with its producers serialised by a mutex around pc_pool_enqueue (what the lock-free
 *    inbox buys).
 * 3. Dispatch overhead (enqueue -> CAS start), exact per claim: closed loop (4 threads,
 *    one claim outstanding each: the parked-scheduler wake-up path) and saturated (run 2).
 * 4. Snapshot read cost while the 8 producers of run 2 run: pc_pool_snapshot vs reading
 *    the baseline's gauges under its mutex.
 *
 * 5. Producer sweep: claims/s with 1..16 producer threads, pool and B (no collapse).
 * 6. Backlog: ns to take in a claim, and to cancel one (in groups of 16), with 200k claims
 *    waiting against 10k (half stamped out of order, the order that made a sorted level
 *    walk from its head): ~1 = no growth. bench/core/backlog_probe.c measures the same
 *    with the public API only, to build against older versions of the library.
 *
 * Usage: bench_core [--quick] [--only handoff|claims|sweep|closed|backlog] [--claims N]
 *                   [--rounds R]
 *   --quick: smaller counts, for a smoke run; --claims N: claims in the 8-producer run;
 *   --rounds R: interleaved rounds of the claims and closed-loop runs (medians; default 5)
 *   (profiling: callgrind two values of N and divide the difference by the difference of N,
 *   which cancels the set-up cost)
 */
#include "pool/inbox.h"

#include <podclaim/membackend.h>
#include <podclaim/podclaim.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void)
{
    return pc_now_ns();
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void row(const char *figure, double mine, double base, const char *unit)
{
    printf("%-46s %12.2f %12.2f %8.2fx  %s\n", figure, mine, base, base > 0 ? mine / base : 0,
           unit);
}

/* ---- 1. inbox hand-off ------------------------------------------------------------------ */

typedef struct item {
    ck_stack_entry_t entry;
    struct item *next; /* baseline queue link */
} item;

typedef struct mq {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    item *head, *tail;
    bool waiting;
} mq;

typedef struct handoff {
    pc__mpsc q;
    pc__parker parker;
    mq m;
    item *items;
    long per_producer;
    int producers;
    bool lockfree;
    pthread_barrier_t start;
} handoff;

typedef struct hp_arg {
    handoff *h;
    int index;
} hp_arg;

static bool hq_has_work(void *arg)
{
    return !pc__mpsc_empty(arg);
}

static void *hand_producer(void *arg)
{
    hp_arg *a = arg;
    handoff *h = a->h;
    item *mine = h->items + (long)a->index * h->per_producer;
    pthread_barrier_wait(&h->start);
    for (long i = 0; i < h->per_producer; i++) {
        if (h->lockfree) {
            pc__mpsc_push(&h->q, &mine[i].entry);
            pc__parker_unpark(&h->parker);
        } else {
            pthread_mutex_lock(&h->m.mu);
            mine[i].next = NULL;
            if (h->m.tail)
                h->m.tail->next = &mine[i];
            else
                h->m.head = &mine[i];
            h->m.tail = &mine[i];
            if (h->m.waiting)
                pthread_cond_signal(&h->m.cond);
            pthread_mutex_unlock(&h->m.mu);
        }
    }
    return NULL;
}

static double handoff_run(int producers, long total, bool lockfree)
{
    handoff h = {.producers = producers, .per_producer = total / producers, .lockfree = lockfree};
    h.items = calloc((size_t)total, sizeof(item));
    pc__mpsc_init(&h.q);
    pc__parker_init(&h.parker);
    pthread_mutex_init(&h.m.mu, NULL);
    pthread_cond_init(&h.m.cond, NULL);
    pthread_barrier_init(&h.start, NULL, (unsigned)producers + 1);
    pthread_t t[16];
    hp_arg args[16];
    for (int i = 0; i < producers; i++) {
        args[i] = (hp_arg){&h, i};
        pthread_create(&t[i], NULL, hand_producer, &args[i]);
    }
    long want = h.per_producer * producers, got = 0;
    pthread_barrier_wait(&h.start);
    int64_t t0 = now_ns();
    while (got < want) {
        if (lockfree) {
            if (pc__mpsc_pop(&h.q))
                got++;
            else
                pc__parker_park(&h.parker, 0, hq_has_work, &h.q);
        } else {
            pthread_mutex_lock(&h.m.mu);
            while (h.m.head == NULL) {
                h.m.waiting = true;
                pthread_cond_wait(&h.m.cond, &h.m.mu);
                h.m.waiting = false;
            }
            h.m.head = h.m.head->next;
            if (h.m.head == NULL)
                h.m.tail = NULL;
            pthread_mutex_unlock(&h.m.mu);
            got++;
        }
    }
    int64_t dt = now_ns() - t0;
    for (int i = 0; i < producers; i++)
        pthread_join(t[i], NULL);
    free(h.items);
    return (double)got / ((double)dt / 1e9) / 1e6;
}

/* ---- 2-4. claims through a pool, and the baseline dispatcher ----------------------------- */

#define PRODUCERS 8
#define WINDOW 512
#define PODS 4096

typedef struct bclaim { /* the baseline's claim */
    struct bclaim *next;
    char id[24];
    int64_t enqueued_at;
    struct pslot *owner;
} bclaim;

typedef struct bpod {
    struct bpod *next;
    char name[32];
    char rv[PC_RV_MAX];
} bpod;

/* The baseline: everything under one mutex, one dispatcher thread. */
typedef struct mpool {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bclaim *ch, *ct;
    bpod *ph, *pt;
    bpod *free_pods;
    long queue_len, idle_ready, inflight;
    int64_t last_dispatch_at;
    bool stop, waiting;
} mpool;

typedef struct run {
    bool use_pool;
    bool mutex_inbox; /* baseline A: the real pool, producers serialised by a mutex */
    pthread_mutex_t enqueue_lock;
    pc_pool *pool;
    mpool mp;
    pc_membackend *backend;
    pc_backend timed; /* wraps the backend's cas_start to time dispatch */
    pc_backend *inner;
    int64_t *enq_at;   /* by claim number */
    int64_t *dispatch; /* by claim number: CAS start - enqueue */
    long claims;
    _Atomic long next_claim;
    _Atomic long answered;
    _Atomic bool producers_done;
    int window;
    int producers;
    int64_t pace_ns; /* > 0: a producer starts a claim at most every pace_ns (see closed) */
} run;

/* The pace of the next claims_run (0 = none). */
static int64_t next_pace_ns;

static run *R;

static long claim_no(const char *id)
{
    return strtol(id + 2, NULL, 10);
}

static int timed_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                           void *token)
{
    (void)b;
    long n = claim_no(req->claim_id);
    R->dispatch[n] = now_ns() - R->enq_at[n];
    return R->inner->cas_start(R->inner, req, done, token);
}

static void on_idle(const pc_pod_ref *pod, void *arg)
{
    (void)arg;
    if (R->use_pool) {
        pc_pool_offer_idle(R->pool, pod);
        return;
    }
    mpool *m = &R->mp;
    pthread_mutex_lock(&m->mu);
    bpod *p = m->free_pods;
    if (p)
        m->free_pods = p->next;
    else
        p = malloc(sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", pod->name);
    snprintf(p->rv, sizeof(p->rv), "%s", pod->resource_version);
    p->next = NULL;
    if (m->pt)
        m->pt->next = p;
    else
        m->ph = p;
    m->pt = p;
    m->idle_ready++;
    if (m->waiting)
        pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

/* A producer keeps `window` claims outstanding and refills in batches: its free slots
 * come back through a lock-free stack, and it sleeps until half the window is free, so
 * the harness costs one wake-up per window/2 claims, not one per claim (which would
 * measure the kernel's wake-up path instead of the scheduler). */
typedef struct pslot {
    pc_claim c;
    bclaim b;
    char id[24];
    ck_stack_entry_t free_entry;
    struct pprod *owner;
} pslot;

typedef struct pprod {
    pc__mpsc free_slots;
    pc__parker parker;
    _Atomic int n_free;
    int refill_at;
} pprod;

static void slot_done(pslot *s)
{
    pprod *pr = s->owner;
    atomic_fetch_add_explicit(&R->answered, 1, memory_order_relaxed);
    pc__mpsc_push(&pr->free_slots, &s->free_entry);
    if (atomic_fetch_add_explicit(&pr->n_free, 1, memory_order_relaxed) + 1 == pr->refill_at)
        pc__parker_unpark(&pr->parker);
}

static bool refill_ready(void *arg)
{
    pprod *pr = arg;
    return atomic_load_explicit(&pr->n_free, memory_order_relaxed) >= pr->refill_at;
}

static pslot *take_slot(pprod *pr)
{
    ck_stack_entry_t *e;
    while ((e = pc__mpsc_pop(&pr->free_slots)) == NULL)
        pc__parker_park(&pr->parker, 0, refill_ready, pr);
    atomic_fetch_sub_explicit(&pr->n_free, 1, memory_order_relaxed);
    return (pslot *)((char *)e - offsetof(pslot, free_entry));
}

static void pool_cb(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    if (r->status == PC_CLAIM_OK)
        pc_membackend_release_pod(R->backend, r->pod_namespace, r->pod_name);
    else
        fprintf(stderr, "bench: claim ended %s: %s\n", pc_claim_status_name(r->status), r->error);
    slot_done(arg);
}

static void mpool_push_claim(mpool *m, bclaim *c, bool front)
{
    pthread_mutex_lock(&m->mu);
    if (front) {
        c->next = m->ch;
        m->ch = c;
        if (!m->ct)
            m->ct = c;
    } else {
        c->next = NULL;
        if (m->ct)
            m->ct->next = c;
        else
            m->ch = c;
        m->ct = c;
    }
    m->queue_len++;
    if (m->waiting)
        pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

typedef struct bdone {
    pc_cas_outcome o;
    char rv[PC_RV_MAX];
} bdone;

static void mpool_done(void *token, pc_cas_outcome o, const char *rv, const char *msg, int64_t ra)
{
    (void)msg;
    (void)ra;
    bdone *d = token;
    d->o = o;
    snprintf(d->rv, sizeof(d->rv), "%s", rv ? rv : "");
}

static void *mpool_dispatcher(void *arg)
{
    (void)arg;
    mpool *m = &R->mp;
    static const pc_kv images[] = {{"main", "python:3.12"}};
    pc_claim_opts opts = {.images = images, .n_images = 1};
    for (;;) {
        pthread_mutex_lock(&m->mu);
        while (!m->stop && (m->ch == NULL || m->ph == NULL)) {
            m->waiting = true;
            pthread_cond_wait(&m->cond, &m->mu);
            m->waiting = false;
        }
        if (m->stop) {
            pthread_mutex_unlock(&m->mu);
            return NULL;
        }
        bclaim *c = m->ch;
        m->ch = c->next;
        if (!m->ch)
            m->ct = NULL;
        bpod *p = m->ph;
        m->ph = p->next;
        if (!m->ph)
            m->pt = NULL;
        m->queue_len--;
        m->idle_ready--;
        m->inflight++;
        m->last_dispatch_at = now_ns();
        pthread_mutex_unlock(&m->mu);

        pc_cas_request req = {
                .pod = {.namespace_ = "bench", .name = p->name, .resource_version = p->rv},
                .opts = &opts,
                .target_phase = "Running",
                .claim_id = c->id};
        bdone d;
        R->timed.cas_start(&R->timed, &req, mpool_done, &d); /* zero latency: inline */
        char won[sizeof(p->name)];
        memcpy(won, p->name, sizeof(won)); /* p is recycled below; on_idle may reuse it */
        pthread_mutex_lock(&m->mu);
        m->inflight--;
        p->next = m->free_pods;
        m->free_pods = p;
        pthread_mutex_unlock(&m->mu);
        if (d.o == PC_CAS_WON) {
            pc_membackend_release_pod(R->backend, "bench", won);
            slot_done(c->owner);
        } else {
            mpool_push_claim(m, c, true);
        }
    }
}

static void *producer(void *arg)
{
    (void)arg;
    pprod pr;
    pc__mpsc_init(&pr.free_slots);
    pc__parker_init(&pr.parker);
    atomic_init(&pr.n_free, R->window);
    pr.refill_at = R->window > 1 ? R->window / 2 : 1;
    pslot *slots = calloc((size_t)R->window, sizeof(*slots));
    for (int i = 0; i < R->window; i++) {
        slots[i].owner = &pr;
        pc__mpsc_push(&pr.free_slots, &slots[i].free_entry);
    }
    static const pc_kv images[] = {{"main", "python:3.12"}};
    for (;;) {
        long n = atomic_fetch_add_explicit(&R->next_claim, 1, memory_order_relaxed);
        if (n >= R->claims)
            break;
        pslot *s = take_slot(&pr);
        if (R->pace_ns > 0) {
            /* Paced: the claim arrives when the dispatcher has long gone to sleep, so every
             * claim measures the wake-up of a parked dispatcher (not a callback's tail). */
            int64_t at = now_ns() + R->pace_ns;
            struct timespec ts = {at / 1000000000, at % 1000000000};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        snprintf(s->id, sizeof(s->id), "b-%ld", n);
        R->enq_at[n] = now_ns();
        if (R->use_pool) {
            pc_claim_init(&s->c, 2, pool_cb, s);
            s->c.opts = (pc_claim_opts){.images = images, .n_images = 1};
            s->c.id = s->id;
            s->c.enqueued_at_ns = R->enq_at[n];
            if (R->mutex_inbox) /* baseline A: one producer at a time, as a mutex inbox */
                pthread_mutex_lock(&R->enqueue_lock);
            while (pc_pool_enqueue(R->pool, &s->c) == -EAGAIN)
                sched_yield();
            if (R->mutex_inbox)
                pthread_mutex_unlock(&R->enqueue_lock);
        } else {
            memcpy(s->b.id, s->id, sizeof(s->id));
            s->b.enqueued_at = R->enq_at[n];
            s->b.owner = s;
            mpool_push_claim(&R->mp, &s->b, false);
        }
    }
    /* Wait for this thread's outstanding claims before its slots go away. */
    pr.refill_at = R->window;
    while (atomic_load_explicit(&pr.n_free, memory_order_relaxed) < R->window)
        pc__parker_park(&pr.parker, 0, refill_ready, &pr);
    free(slots);
    return NULL;
}

typedef struct snap_arg {
    double median_ns;
} snap_arg;

static void *snapshot_reader(void *arg)
{
    snap_arg *a = arg;
    /* 2000 batches of 1000 reads: a few ms of measurement, so the reader does not take a
     * core's share from the run whose throughput is measured alongside. */
    enum { BATCH = 1000, MAXB = 2000 };
    static double per[MAXB];
    int nb = 0;
    volatile uint64_t sink = 0;
    while (!atomic_load_explicit(&R->producers_done, memory_order_relaxed) && nb < MAXB) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++) {
            if (R->use_pool) {
                pc_snapshot s = pc_pool_snapshot(R->pool);
                sink += s.queue_len + s.idle_ready;
            } else {
                pthread_mutex_lock(&R->mp.mu);
                sink += (uint64_t)(R->mp.queue_len + R->mp.idle_ready + R->mp.inflight);
                pthread_mutex_unlock(&R->mp.mu);
            }
        }
        per[nb++] = (double)(now_ns() - t0) / BATCH;
    }
    (void)sink;
    /* median of batch means: robust to the reader being descheduled mid-batch */
    for (int i = 1; i < nb; i++) {
        double v = per[i];
        int j = i - 1;
        while (j >= 0 && per[j] > v) {
            per[j + 1] = per[j];
            j--;
        }
        per[j + 1] = v;
    }
    a->median_ns = nb ? per[nb / 2] : 0;
    return NULL;
}

typedef struct result {
    double claims_per_s;
    double p50_us, p99_us;
    double snapshot_ns;
} result;

enum mode { POOL, POOL_MUTEX_INBOX, MUTEX_DISPATCHER };

static result claims_run(enum mode mode, long claims, int producers, int window, bool snap)
{
    run r = {.use_pool = mode != MUTEX_DISPATCHER,
             .mutex_inbox = mode == POOL_MUTEX_INBOX,
             .claims = claims,
             .window = window,
             .producers = producers,
             .pace_ns = next_pace_ns};
    R = &r;
    pthread_mutex_init(&r.enqueue_lock, NULL);
    r.enq_at = calloc((size_t)claims, sizeof(int64_t));
    r.dispatch = calloc((size_t)claims, sizeof(int64_t));
    pc_membackend_config bc = {.seed = 1, .on_idle = on_idle};
    if (pc_membackend_new(&bc, &r.backend) != 0)
        exit(1);
    r.inner = pc_membackend_backend(r.backend);
    r.timed.cas_start = timed_cas_start;
    pthread_t disp;
    if (r.use_pool) {
        pc_pool_config pc = {
                .namespace_ = "bench",
                .name = "bench",
                .max_inflight = 4096,
        };
        if (pc_pool_new(&pc, &r.timed, &r.pool) != 0)
            exit(1);
        if (pc_pool_start(r.pool) != 0)
            exit(1);
    } else {
        pthread_mutex_init(&r.mp.mu, NULL);
        pthread_cond_init(&r.mp.cond, NULL);
        pthread_create(&disp, NULL, mpool_dispatcher, NULL);
    }
    const char *containers[] = {"main"};
    char name[32];
    for (int i = 0; i < PODS; i++) {
        snprintf(name, sizeof(name), "pod-%d", i);
        pc_membackend_add_pod(r.backend, "bench", name, containers, 1);
    }
    pthread_t t[16], st;
    snap_arg sa = {0};
    int64_t t0 = now_ns();
    for (int i = 0; i < producers; i++)
        pthread_create(&t[i], NULL, producer, NULL);
    if (snap)
        pthread_create(&st, NULL, snapshot_reader, &sa);
    for (int i = 0; i < producers; i++)
        pthread_join(t[i], NULL);
    atomic_store(&r.producers_done, true);
    int64_t dt = now_ns() - t0;
    if (snap)
        pthread_join(st, NULL);

    result res = {.claims_per_s = (double)atomic_load(&r.answered) / ((double)dt / 1e9),
                  .snapshot_ns = sa.median_ns};
    qsort(r.dispatch, (size_t)claims, sizeof(int64_t), cmp_i64);
    res.p50_us = (double)r.dispatch[claims / 2] / 1e3;
    res.p99_us = (double)r.dispatch[claims * 99 / 100] / 1e3;

    if (r.use_pool) {
        pc_pool_free(r.pool);
    } else {
        pthread_mutex_lock(&r.mp.mu);
        r.mp.stop = true;
        pthread_cond_signal(&r.mp.cond);
        pthread_mutex_unlock(&r.mp.mu);
        pthread_join(disp, NULL);
        for (bpod *p = r.mp.ph, *n; p; p = n) {
            n = p->next;
            free(p);
        }
        for (bpod *p = r.mp.free_pods, *n; p; p = n) {
            n = p->next;
            free(p);
        }
    }
    pc_membackend_free(r.backend);
    free(r.enq_at);
    free(r.dispatch);
    return res;
}

/* ---- 5. backlog: taking in and cancelling claims while many wait ------------------------- */

typedef struct backlog {
    _Atomic long answered;
} backlog;

static void backlog_cb(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    (void)r;
    atomic_fetch_add_explicit(&((backlog *)arg)->answered, 1, memory_order_relaxed);
}

static int never_called_cas(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                            void *token)
{
    (void)b, (void)req, (void)done, (void)token;
    return -ENOTSUP; /* no pod is ever offered */
}

/* n claims into a started pool with no pods, every other one stamped just before the claim
 * before it (two producers racing, one preempted between stamping and pushing): the order
 * that made a level kept as a sorted list walk from its head for half the claims. Then
 * ns per claim to take in all n (the last one is cancelled at once and answered when the
 * scheduler reaches it), and ns per cancel when claims are cancelled in small groups, each
 * waiting for its answers (a trickle of cancels: the case a scan per wake-up paid O(n) for). */
static void backlog_run(long n, double *take_in_ns, double *cancel_ns)
{
    static pc_backend none = {.cas_start = never_called_cas};
    pc_pool_config pc = {.namespace_ = "bench", .name = "backlog", .inbox_capacity = (uint32_t)n};
    pc_pool *pool;
    if (pc_pool_new(&pc, &none, &pool) != 0 || pc_pool_start(pool) != 0)
        exit(1);
    pc_claim *cl = calloc((size_t)n, sizeof(pc_claim));
    backlog b = {0};
    int64_t base = now_ns();
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pc_claim_init(&cl[i], 2, backlog_cb, &b);
        cl[i].enqueued_at_ns = base + (i / 2) * 1000 - (i % 2);
        if (pc_pool_enqueue(pool, &cl[i]) != 0)
            exit(1);
    }
    pc_claim_cancel(&cl[n - 1]);
    while (atomic_load_explicit(&b.answered, memory_order_relaxed) < 1)
        sched_yield();
    *take_in_ns = (double)(now_ns() - t0) / (double)n;
    /* 2000 cancels in groups of 16, each group waiting for its answers: a trickle (a wake-up
     * per group, not one for the lot), with the wake-up shared by 16. */
    enum { CANCELS = 2000, GROUP = 16 };
    t0 = now_ns();
    for (long k = 0; k < CANCELS; k++) { /* a stride coprime with n - 1: scattered claims */
        pc_claim_cancel(&cl[(k * 7919) % (n - 1)]);
        if ((k + 1) % GROUP == 0)
            while (atomic_load_explicit(&b.answered, memory_order_relaxed) < k + 2)
                sched_yield();
    }
    *cancel_ns = (double)(now_ns() - t0) / CANCELS;
    pc_pool_free(pool); /* answers the rest SHUTDOWN */
    free(cl);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_ROUNDS 9

int main(int argc, char **argv)
{
    bool quick = false;
    const char *only = NULL; /* --only handoff|claims|sweep|closed|backlog: one section */
    long claims_arg = 0;
    int rounds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--claims") == 0 && i + 1 < argc)
            claims_arg = atol(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_core [--quick] [--only handoff|claims|sweep|closed|"
                            "backlog] [--claims N] [--rounds R]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = rounds < 1 ? 1 : MAX_ROUNDS;
    if (quick)
        rounds = rounds > 3 ? 3 : rounds;
    long handoff_n = quick ? 1000000 : 8000000;
    long claims = claims_arg > 0 ? claims_arg : quick ? 100000 : 1000000;
    long closed = quick ? 20000 : 100000;
#define SECTION(name) (!only || strcmp(only, name) == 0)

    if (getenv("BENCH_POOL_ONLY")) { /* profiling aid: callgrind the pool path alone */
        result p1 = claims_run(POOL, claims, PRODUCERS, WINDOW, false);
        printf("pool only: %.0f claims/s\n", p1.claims_per_s);
        return 0;
    }
    if (getenv("BENCH_BASE_ONLY")) { /* the same for baseline B (same harness and backend) */
        result b1 = claims_run(MUTEX_DISPATCHER, claims, PRODUCERS, WINDOW, false);
        printf("baseline B only: %.0f claims/s\n", b1.claims_per_s);
        return 0;
    }

    printf("%-46s %12s %12s %9s  %s\n", "figure", "podclaim", "baseline", "ratio", "unit");
    if (SECTION("handoff")) {
        printf("-- inbox hand-off to one consumer; baseline: a mutex+condvar queue\n");
        int ps[] = {1, 2, 4, 8};
        for (int i = 0; i < 4; i++) {
            char f[64];
            snprintf(f, sizeof(f), "inbox hand-off, %d producer%s", ps[i], ps[i] > 1 ? "s" : "");
            double mine = handoff_run(ps[i], handoff_n, true);
            double base = handoff_run(ps[i], handoff_n, false);
            row(f, mine, base, "M items/s");
        }
    }

    if (SECTION("claims")) {
        /* Rounds interleave the three (pool, A, B): a burst of other load on the shared
         * machine hits all three, and the medians drop the outliers. */
        double pr[MAX_ROUNDS], ar[MAX_ROUNDS], br[MAX_ROUNDS], ratio_a[MAX_ROUNDS],
                ratio_b[MAX_ROUNDS], p50[MAX_ROUNDS], p99[MAX_ROUNDS], bp50[MAX_ROUNDS],
                bp99[MAX_ROUNDS], ap50[MAX_ROUNDS], ap99[MAX_ROUNDS], snap[MAX_ROUNDS],
                bsnap[MAX_ROUNDS];
        for (int k = 0; k < rounds; k++) {
            result pool = claims_run(POOL, claims, PRODUCERS, WINDOW, true);
            result same = claims_run(POOL_MUTEX_INBOX, claims, PRODUCERS, WINDOW, false);
            result base = claims_run(MUTEX_DISPATCHER, claims, PRODUCERS, WINDOW, true);
            pr[k] = pool.claims_per_s;
            ar[k] = same.claims_per_s;
            br[k] = base.claims_per_s;
            ratio_a[k] = pool.claims_per_s / same.claims_per_s;
            ratio_b[k] = pool.claims_per_s / base.claims_per_s;
            p50[k] = pool.p50_us;
            p99[k] = pool.p99_us;
            ap50[k] = same.p50_us;
            ap99[k] = same.p99_us;
            bp50[k] = base.p50_us;
            bp99[k] = base.p99_us;
            snap[k] = pool.snapshot_ns;
            bsnap[k] = base.snapshot_ns;
        }
        printf("-- 8 producers, zero-latency backend, median of %d interleaved rounds\n", rounds);
        printf("-- baseline A: the same pool, producers serialised by a mutex around enqueue\n");
        row("claims/s", median(pr, rounds) / 1e3, median(ar, rounds) / 1e3, "k claims/s");
        printf("%-46s %12s %12s %8.2fx  (rounds %.2f .. %.2f)\n",
               "  median of the per-round ratios", "", "", median(ratio_a, rounds), ratio_a[0],
               ratio_a[rounds - 1]);
        row("dispatch p50, saturated (enqueue->CAS)", median(p50, rounds), median(ap50, rounds),
            "us (lower is better)");
        row("dispatch p99, saturated (enqueue->CAS)", median(p99, rounds), median(ap99, rounds),
            "us (lower is better)");
        printf("-- baseline B: a one-thread mutex+condvar dispatcher (no levels, reservations, "
               "metrics)\n");
        row("claims/s", median(pr, rounds) / 1e3, median(br, rounds) / 1e3, "k claims/s");
        printf("%-46s %12s %12s %8.2fx  (rounds %.2f .. %.2f)\n",
               "  median of the per-round ratios", "", "", median(ratio_b, rounds), ratio_b[0],
               ratio_b[rounds - 1]);
        row("dispatch p50, saturated (enqueue->CAS)", median(p50, rounds), median(bp50, rounds),
            "us (lower is better)");
        row("dispatch p99, saturated (enqueue->CAS)", median(p99, rounds), median(bp99, rounds),
            "us (lower is better)");
        row("snapshot median while 8 producers run", median(snap, rounds), median(bsnap, rounds),
            "ns (lower is better; B's gauges under its mutex)");
    }

    if (SECTION("sweep")) {
        printf("-- claims/s by producer threads (2 cores); baseline B\n");
        int ps[] = {1, 2, 4, 8, 16};
        for (int i = 0; i < 5; i++) {
            char f[64];
            snprintf(f, sizeof(f), "claims/s, %d producer%s", ps[i], ps[i] > 1 ? "s" : "");
            result pool = claims_run(POOL, claims / 4, ps[i], WINDOW, false);
            result base = claims_run(MUTEX_DISPATCHER, claims / 4, ps[i], WINDOW, false);
            row(f, pool.claims_per_s / 1e3, base.claims_per_s / 1e3, "k claims/s");
        }
    }

    if (SECTION("closed")) {
        /* Three shapes of "one claim outstanding":
         * - 4 threads, back to back: a claim often finds the scheduler awake (another
         *   thread's claim), or waits for a round's callbacks;
         * - 1 thread, back to back: the next claim is made while the scheduler is still in
         *   the callback that woke its thread (the tail of that FUTEX_WAKE), so the figure
         *   is the path length from push to CAS start, with no sleep on either side;
         * - 1 thread, paced (a claim every 50 us): each claim finds the scheduler asleep;
         *   the wake-up of a parked scheduler (dispatcher) proper. */
        struct {
            int threads;
            int64_t pace_ns;
            const char *title;
        } shapes[] = {
                {4, 0, "4 threads, one claim outstanding each, back to back"},
                {1, 0, "1 thread, one claim in the system, back to back"},
                {1, 50000, "1 thread, a claim every 50 us (the scheduler parked)"},
        };
        for (int v = 0; v < 3; v++) {
            double p50[MAX_ROUNDS], p99[MAX_ROUNDS], bp50[MAX_ROUNDS], bp99[MAX_ROUNDS],
                    cps[MAX_ROUNDS], bcps[MAX_ROUNDS];
            long n = shapes[v].pace_ns ? closed / 10 : shapes[v].threads == 1 ? closed / 2 : closed;
            next_pace_ns = shapes[v].pace_ns;
            for (int k = 0; k < rounds; k++) {
                result pc = claims_run(POOL, n, shapes[v].threads, 1, false);
                result bc = claims_run(MUTEX_DISPATCHER, n, shapes[v].threads, 1, false);
                p50[k] = pc.p50_us;
                p99[k] = pc.p99_us;
                bp50[k] = bc.p50_us;
                bp99[k] = bc.p99_us;
                cps[k] = pc.claims_per_s;
                bcps[k] = bc.claims_per_s;
            }
            next_pace_ns = 0;
            printf("-- closed loop: %s; baseline B; median of %d\n", shapes[v].title, rounds);
            row("dispatch p50 (wake-up path)", median(p50, rounds), median(bp50, rounds),
                "us (lower is better)");
            row("dispatch p99 (wake-up path)", median(p99, rounds), median(bp99, rounds),
                "us (lower is better)");
            if (!shapes[v].pace_ns)
                row("claims/s", median(cps, rounds) / 1e3, median(bcps, rounds) / 1e3,
                    "k claims/s");
        }
    }

    if (SECTION("backlog")) {
        long big = quick ? 40000 : 200000, small = quick ? 2000 : 10000;
        double tin_big, can_big, tin_small, can_small;
        backlog_run(small, &tin_small, &can_small);
        backlog_run(big, &tin_big, &can_big);
        printf("-- a backlog of waiting claims, half stamped out of order (no pods); baseline: "
               "%ld waiting\n",
               small);
        char f[64];
        snprintf(f, sizeof(f), "take a claim in, %ld waiting", big);
        row(f, tin_big, tin_small, "ns per claim (~1: no growth with the backlog)");
        snprintf(f, sizeof(f), "cancel a claim, %ld waiting", big);
        row(f, can_big, can_small, "ns per cancel, in groups of 16 (~1: no growth)");
    }
    return 0;
}
