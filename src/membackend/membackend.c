/* The in-memory backend: a pod store with resourceVersion compare-and-swap that stands in
 * for the Kubernetes API server in the tests, the demo and the benchmarks.
 *
 * Flow: pool scheduler (cas_start) -> [membackend] -> completion -> pool;
 *       add/release/conflict -> on_idle (the informer's role) -> pool offer.
 *
 * Model. One global revision counter, as etcd's, gives every write a new resourceVersion
 * (rendered in decimal). A pod is Idle or in the phase a claim wrote. A CAS wins only if
 * the pod exists, is at the expected version and is Idle; it then moves to the target
 * phase at a new version and the win is appended to the transition log (a ring that keeps
 * the newest log_capacity wins).
 *
 * Decide at start, deliver later. cas_start() takes the decision at once, under the
 * mutex, as a server applying the PATCH the moment it arrives would; with latency the
 * answer then travels back for latency (+ jitter) before done() runs. Deciding when the
 * completion fires instead would model request and response halves separately (decide at
 * latency/2), which only shifts the window in which two claims race; it buys the tests
 * nothing and would keep the request's strings alive until then. Because the decision
 * is taken at start, a pod won by a CAS whose answer has not arrived yet is already
 * claimed: a second CAS at the same version conflicts, as on a real server.
 *
 * Delivery. latency_ns == 0: done() runs inside cas_start(), on the caller's thread,
 * before it returns (jitter is ignored). Otherwise one timer thread owns delivery: a
 * min-heap of pending completions keyed (due, sequence), and a condition variable on
 * CLOCK_MONOTONIC whose timed wait ends at the earliest due time; a start whose
 * completion becomes the new earliest signals it. No polling, no fixed sleep.
 *
 * on_idle runs on the thread that caused the pod to become Idle at a new version
 * (add_pod, release_pod, or an injected conflict inside cas_start) after the mutex is
 * released; for an injected conflict it runs before that CAS's done().
 *
 * Locking: one mutex `mu` guards every field below marked [mu]; it is never held while
 * calling done() or on_idle(), so both may call back into the backend. No lock order:
 * there is only one lock.
 */
#include <podclaim/membackend.h>

#include "util/ckhs.h"
#include "util/sat.h"

#include <ck_hs.h>
#include <ck_malloc.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MB_PHASE_MAX 32     /* pc_membackend_get_pod's phase[32] */
#define MB_CONTAINER_MAX 64 /* a container name is a DNS label: 63 + NUL */
#define MB_MESSAGE_MAX 512  /* room for namespace + name + a sentence */
#define MB_DEFAULT_SEED 0x853c49e6748fea9bULL
#define MB_IDLE "Idle"

typedef struct mb_pod {
    char namespace_[PC_NAMESPACE_MAX];
    char name[PC_NAME_MAX];
    char phase[MB_PHASE_MAX]; /* [mu] "Idle" or the phase the winning claim wrote */
    uint64_t rv;              /* [mu] revision of the last write to this pod */
    size_t n_containers;
    char (*containers)[MB_CONTAINER_MAX];
    unsigned long hash;
    /* [mu] Log records naming this pod. A deleted pod stays allocated (off the map) until
     * the last of them is overwritten, so the log never points at freed memory and deleted
     * pods do not pile up. */
    uint32_t log_refs;
    bool deleted;
    struct mb_pod *all_prev, *all_next; /* [mu] every pod still allocated */
} mb_pod;

typedef struct mb_record {
    const mb_pod *pod;
    uint64_t from_rv, to_rv;
    const char *phase; /* interned, see mb_phase */
    char claim_id[PC_CLAIM_ID_MAX];
} mb_record;

/* Target phases are few ("Running"); the log points at one copy of each. */
typedef struct mb_phase {
    struct mb_phase *next;
    char name[MB_PHASE_MAX];
} mb_phase;

typedef struct mb_completion {
    int64_t due_ns; /* CLOCK_MONOTONIC */
    uint64_t seq;   /* start order: ties on due_ns are delivered FIFO */
    pc_cas_done_fn done;
    void *token;
    pc_cas_outcome outcome;
    char new_rv[PC_RV_MAX];
    char message[MB_MESSAGE_MAX];
} mb_completion;

struct pc_membackend {
    pc_backend iface;
    pc_membackend_config cfg; /* fixed after new */
    struct ck_malloc alloc;

    pthread_mutex_t mu;
    ck_hs_t pods;      /* [mu] live pods keyed namespace/name */
    mb_pod *all;       /* [mu] */
    mb_phase *phases;  /* [mu] */
    uint64_t revision; /* [mu] the last resourceVersion handed out */
    uint64_t prng;     /* [mu] splitmix64 state */
    /* [mu] Transitions: a ring of at most log_max records. Grown by doubling until full,
     * then the oldest (at log_head) is overwritten. */
    mb_record *log;
    size_t log_len, log_cap, log_max, log_head;
    uint64_t log_total;                              /* [mu] transitions ever */
    uint64_t outcomes[PC_CAS_OUTCOME_COUNT];         /* [mu] counted when decided */
    uint64_t injected_conflicts, injected_retryable; /* [mu] */

    /* Timer thread, only when cfg.latency_ns > 0. */
    bool has_timer;
    pthread_t timer;
    pthread_cond_t cond;  /* CLOCK_MONOTONIC; signalled on a new earliest due and on stop */
    mb_completion **heap; /* [mu] min-heap by (due_ns, seq) */
    size_t heap_len, heap_cap;
    uint64_t next_seq; /* [mu] */
    bool stopping;     /* [mu] free() asked the timer thread to drain and exit */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- PRNG: splitmix64 (no rand(): it has hidden global state) -------------------------- */

static uint64_t prng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* true with probability rate; rate 0 never draws, so it costs nothing and never fires. */
static bool prng_roll(uint64_t *s, double rate)
{
    if (rate <= 0)
        return false;
    double u = (double)(prng_next(s) >> 11) * 0x1.0p-53; /* [0, 1) */
    return u < rate;
}

/* ---- pod map (ck_hs, single writer: every access is under mu) --------------------------- */

static unsigned long hs_hash(const void *obj, unsigned long seed)
{
    (void)seed;
    return ((const mb_pod *)obj)->hash;
}

static bool hs_compare(const void *a, const void *b)
{
    const mb_pod *x = a, *y = b;
    return x->hash == y->hash && strcmp(x->name, y->name) == 0 &&
           strcmp(x->namespace_, y->namespace_) == 0;
}

static bool fits(const char *s, size_t cap)
{
    return s != NULL && s[0] != '\0' && strnlen(s, cap) < cap;
}

/* Caller holds mu. NULL when absent or when ns/name cannot be a key. */
static mb_pod *find_locked(pc_membackend *b, const char *ns, const char *name)
{
    mb_pod key;
    if (!fits(ns, sizeof key.namespace_) || !fits(name, sizeof key.name))
        return NULL;
    strcpy(key.namespace_, ns);
    strcpy(key.name, name);
    key.hash = pc__pod_key_hash(ns, name, 0);
    return ck_hs_get(&b->pods, key.hash, &key);
}

/* Decimal, by hand: this runs for every CAS and every recycle, and snprintf's format
 * machinery cost more than the rest of the CAS together (callgrind, bench_core). */
static void render_rv(char out[PC_RV_MAX], uint64_t rv)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + rv % 10);
        rv /= 10;
    } while (rv);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* Bounded copy (truncates; always NUL-terminates). */
static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- completion heap ([mu]) ------------------------------------------------------------- */

static bool before(const mb_completion *a, const mb_completion *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static bool heap_reserve_locked(pc_membackend *b)
{
    if (b->heap_len < b->heap_cap)
        return true;
    size_t cap = b->heap_cap ? b->heap_cap * 2 : 64;
    mb_completion **h = realloc(b->heap, cap * sizeof *h);
    if (h == NULL)
        return false;
    b->heap = h;
    b->heap_cap = cap;
    return true;
}

/* Room must have been reserved. Returns true if c became the earliest. */
static bool heap_push_locked(pc_membackend *b, mb_completion *c)
{
    size_t i = b->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(c, b->heap[parent]))
            break;
        b->heap[i] = b->heap[parent];
        i = parent;
    }
    b->heap[i] = c;
    return i == 0;
}

static mb_completion *heap_pop_locked(pc_membackend *b)
{
    mb_completion *top = b->heap[0];
    mb_completion *last = b->heap[--b->heap_len];
    size_t i = 0, n = b->heap_len;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const mb_completion *best = last;
        if (l < n && before(b->heap[l], best)) {
            m = l;
            best = b->heap[l];
        }
        if (r < n && before(b->heap[r], best))
            m = r;
        if (m == i)
            break;
        b->heap[i] = b->heap[m];
        i = m;
    }
    if (n > 0)
        b->heap[i] = last;
    return top;
}

static void deliver(const mb_completion *c)
{
    bool won = c->outcome == PC_CAS_WON;
    c->done(c->token, c->outcome, won ? c->new_rv : NULL, won ? NULL : c->message, 0);
}

static void *timer_main(void *arg)
{
    pc_membackend *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->heap_len == 0) {
            if (b->stopping)
                break;
            pthread_cond_wait(&b->cond, &b->mu);
            continue;
        }
        /* Once stopping, everything pending is delivered now, in due order. */
        if (!b->stopping) {
            int64_t due = b->heap[0]->due_ns;
            if (due > now_ns()) {
                struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
                pthread_cond_timedwait(&b->cond, &b->mu, &ts);
                continue; /* re-check: woken early by an earlier start, by stop, or spuriously */
            }
        }
        mb_completion *c = heap_pop_locked(b);
        pthread_mutex_unlock(&b->mu);
        deliver(c);
        free(c);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- CAS ------------------------------------------------------------------------------ */

#define SET_OUTCOME(c, o, ...)                                                                     \
    do {                                                                                           \
        (c)->outcome = (o);                                                                        \
        snprintf((c)->message, sizeof(c)->message, __VA_ARGS__);                                   \
    } while (0)

/* Checks that need no store access; false with c->outcome = INVALID and a message. */
static bool validate_request(const pc_cas_request *req, mb_completion *c, const char **phase,
                             const char **claim_id)
{
    const pc_pod_ref *pod = &req->pod;
    if (!fits(pod->namespace_, PC_NAMESPACE_MAX) || !fits(pod->name, PC_NAME_MAX) ||
        !fits(pod->resource_version, PC_RV_MAX)) {
        SET_OUTCOME(c, PC_CAS_INVALID,
                    "pod reference %s/%s@%s: namespace, name and resourceVersion are required "
                    "and bounded",
                    pod->namespace_ ? pod->namespace_ : "(null)", pod->name ? pod->name : "(null)",
                    pod->resource_version ? pod->resource_version : "(null)");
        return false;
    }
    const pc_claim_opts *o = req->opts;
    for (size_t i = 0; i < o->n_images; i++) {
        const pc_kv *kv = &o->images[i];
        if (kv->key == NULL || kv->key[0] == '\0') {
            SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s: image %zu has no container name",
                        pod->namespace_, pod->name, i);
            return false;
        }
        if (kv->value == NULL || kv->value[0] == '\0') {
            SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s: container %.63s: empty image",
                        pod->namespace_, pod->name, kv->key);
            return false;
        }
    }
    const pc_kv *maps[2] = {o->labels, o->annotations};
    size_t lens[2] = {o->n_labels, o->n_annotations};
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < lens[m]; i++)
            if (maps[m][i].key == NULL || maps[m][i].key[0] == '\0' || maps[m][i].value == NULL) {
                SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s: %s %zu without key or value",
                            pod->namespace_, pod->name, m == 0 ? "label" : "annotation", i);
                return false;
            }
    *phase = req->target_phase ? req->target_phase : o->target_phase ? o->target_phase : "Running";
    if (!fits(*phase, MB_PHASE_MAX) || strcmp(*phase, MB_IDLE) == 0) {
        SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s: target phase \"%.40s\" is not a claimed phase",
                    pod->namespace_, pod->name, *phase);
        return false;
    }
    *claim_id = req->claim_id ? req->claim_id : "";
    if (strnlen(*claim_id, PC_CLAIM_ID_MAX) >= PC_CLAIM_ID_MAX) {
        SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s: claim id longer than %d bytes", pod->namespace_,
                    pod->name, PC_CLAIM_ID_MAX - 1);
        return false;
    }
    return true;
}

/* Caller holds mu. NULL on allocation failure. */
static const char *intern_phase_locked(pc_membackend *b, const char *phase)
{
    for (mb_phase *p = b->phases; p != NULL; p = p->next)
        if (strcmp(p->name, phase) == 0)
            return p->name;
    mb_phase *p = malloc(sizeof *p);
    if (p == NULL)
        return NULL;
    snprintf(p->name, sizeof p->name, "%s", phase);
    p->next = b->phases;
    b->phases = p;
    return p->name;
}

static bool log_reserve_locked(pc_membackend *b)
{
    if (b->log_len < b->log_cap || b->log_len == b->log_max)
        return true; /* room, or full: the next record overwrites the oldest */
    size_t cap = b->log_cap ? b->log_cap * 2 : 1024;
    if (cap > b->log_max)
        cap = b->log_max;
    mb_record *l = realloc(b->log, cap * sizeof *l);
    if (l == NULL)
        return false;
    b->log = l;
    b->log_cap = cap;
    return true;
}

static void pod_free(pc_membackend *b, mb_pod *p)
{
    if (p->all_prev)
        p->all_prev->all_next = p->all_next;
    else
        b->all = p->all_next;
    if (p->all_next)
        p->all_next->all_prev = p->all_prev;
    free(p->containers);
    free(p);
}

/* Caller holds mu and has reserved room. The record to fill: the next free one, or the
 * oldest, whose pod reference is let go first. */
static mb_record *log_append_locked(pc_membackend *b)
{
    b->log_total++;
    if (b->log_len < b->log_max)
        return &b->log[b->log_len++];
    mb_record *r = &b->log[b->log_head];
    b->log_head = (b->log_head + 1) % b->log_max;
    mb_pod *old = (mb_pod *)r->pod;
    if (--old->log_refs == 0 && old->deleted)
        pod_free(b, old);
    return r;
}

/* Caller holds mu, has checked the request and reserved a log slot and the phase. Decides
 * c's outcome; when an injected conflict moved an Idle pod, sets *notify and renders the
 * pod's new version into idle_rv for on_idle. */
static void decide_locked(pc_membackend *b, const pc_cas_request *req, const char *phase,
                          const char *claim_id, mb_completion *c, bool *notify,
                          char idle_rv[PC_RV_MAX])
{
    const pc_pod_ref *ref = &req->pod;
    mb_pod *pod = find_locked(b, ref->namespace_, ref->name);
    if (pod == NULL) {
        SET_OUTCOME(c, PC_CAS_NOT_FOUND, "pods \"%s\" not found in namespace %s", ref->name,
                    ref->namespace_);
        return;
    }
    const pc_claim_opts *o = req->opts;
    for (size_t i = 0; i < o->n_images; i++) {
        size_t k = 0;
        while (k < pod->n_containers && strcmp(pod->containers[k], o->images[i].key) != 0)
            k++;
        if (k == pod->n_containers) {
            SET_OUTCOME(c, PC_CAS_INVALID, "pod %s/%s has no container \"%.63s\"", pod->namespace_,
                        pod->name, o->images[i].key);
            return;
        }
    }
    /* Draw both in a fixed order so a seed replays the same sequence of injections. */
    bool inject_conflict = prng_roll(&b->prng, b->cfg.conflict_rate);
    bool inject_retry = prng_roll(&b->prng, b->cfg.retryable_rate);
    char cur[PC_RV_MAX];
    if (inject_conflict) {
        b->injected_conflicts++;
        /* Another writer touched the pod. Only an Idle pod's move matters to the pool (it
         * becomes claimable at the new version); a claimed pod just answers CONFLICT. */
        if (strcmp(pod->phase, MB_IDLE) == 0) {
            pod->rv = ++b->revision;
            render_rv(idle_rv, pod->rv);
            *notify = true;
        }
        render_rv(cur, pod->rv);
        SET_OUTCOME(c, PC_CAS_CONFLICT,
                    "pod %s/%s: injected conflict, the object has been modified (now at %s)",
                    pod->namespace_, pod->name, cur);
        return;
    }
    if (inject_retry) {
        b->injected_retryable++;
        SET_OUTCOME(c, PC_CAS_RETRYABLE, "pod %s/%s: injected retryable error (503)",
                    pod->namespace_, pod->name);
        return;
    }
    render_rv(cur, pod->rv);
    if (strcmp(cur, ref->resource_version) != 0) {
        SET_OUTCOME(
                c, PC_CAS_CONFLICT,
                "pod %s/%s: the object has been modified (resourceVersion %s, precondition %.31s)",
                pod->namespace_, pod->name, cur, ref->resource_version);
        return;
    }
    if (strcmp(pod->phase, MB_IDLE) != 0) {
        SET_OUTCOME(c, PC_CAS_CONFLICT, "pod %s/%s is %s, not Idle", pod->namespace_, pod->name,
                    pod->phase);
        return;
    }
    mb_record *r = log_append_locked(b); /* room reserved by the caller */
    r->pod = pod;
    pod->log_refs++;
    r->from_rv = pod->rv;
    r->to_rv = pod->rv = ++b->revision;
    r->phase = intern_phase_locked(b, phase); /* already interned by the caller: no alloc */
    copy_bounded(r->claim_id, sizeof r->claim_id, claim_id);
    copy_bounded(pod->phase, sizeof pod->phase, phase);
    c->outcome = PC_CAS_WON;
    render_rv(c->new_rv, pod->rv);
    c->message[0] = '\0';
}

static int mb_cas_start(pc_backend *iface, const pc_cas_request *req, pc_cas_done_fn done,
                        void *token)
{
    if (iface == NULL || req == NULL || req->opts == NULL || done == NULL)
        return -EINVAL;
    pc_membackend *b = iface->impl;
    mb_completion local, *c = &local;
    if (b->has_timer && (c = malloc(sizeof *c)) == NULL)
        return -ENOMEM;
    c->done = done;
    c->token = token;
    c->new_rv[0] = '\0';

    const char *phase = NULL, *claim_id = NULL;
    bool valid = validate_request(req, c, &phase, &claim_id);
    bool notify = false;
    char idle_rv[PC_RV_MAX];

    pthread_mutex_lock(&b->mu);
    /* Everything that can fail is done before the decision, so -ENOMEM changes nothing. */
    if ((b->has_timer && !heap_reserve_locked(b)) ||
        (valid && (!log_reserve_locked(b) || intern_phase_locked(b, phase) == NULL))) {
        pthread_mutex_unlock(&b->mu);
        if (c != &local)
            free(c);
        return -ENOMEM;
    }
    if (valid)
        decide_locked(b, req, phase, claim_id, c, &notify, idle_rv);
    b->outcomes[c->outcome]++;
    if (b->has_timer) {
        int64_t delay = b->cfg.latency_ns;
        if (b->cfg.jitter_ns > 0)
            delay = pc__add_sat(delay, (int64_t)(prng_next(&b->prng) % (uint64_t)b->cfg.jitter_ns));
        /* saturate: a huge latency is "much later", not the past */
        c->due_ns = pc__add_sat(now_ns(), delay);
        c->seq = b->next_seq++;
        if (heap_push_locked(b, c))
            pthread_cond_signal(&b->cond); /* a new earliest due: shorten the timed wait */
    }
    pthread_mutex_unlock(&b->mu);

    if (notify && b->cfg.on_idle) {
        pc_pod_ref idle = {req->pod.namespace_, req->pod.name, req->pod.uid, idle_rv};
        b->cfg.on_idle(&idle, b->cfg.on_idle_arg);
    }
    if (!b->has_timer)
        deliver(c);
    return 0;
}

/* ---- lifecycle and store ---------------------------------------------------------------- */

int pc_membackend_new(const pc_membackend_config *cfg, pc_membackend **out)
{
    if (cfg == NULL || out == NULL || cfg->latency_ns < 0 || cfg->jitter_ns < 0 ||
        !(cfg->conflict_rate >= 0 && cfg->conflict_rate <= 1) ||
        !(cfg->retryable_rate >= 0 && cfg->retryable_rate <= 1))
        return -EINVAL; /* the negated comparisons also refuse NaN rates */
    pc_membackend *b = calloc(1, sizeof *b);
    if (b == NULL)
        return -ENOMEM;
    int rc = -ENOMEM;
    b->cfg = *cfg;
    b->prng = cfg->seed ? cfg->seed : MB_DEFAULT_SEED;
    b->log_max = cfg->log_capacity ? cfg->log_capacity : 65536;
    b->iface.cas_start = mb_cas_start;
    b->iface.impl = b;
    b->alloc = pc__ck_allocator;
    if (!ck_hs_init(&b->pods, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE, hs_hash,
                    hs_compare, &b->alloc, 64, 0))
        goto fail_hs;
    if ((rc = -pthread_mutex_init(&b->mu, NULL)) != 0)
        goto fail_mutex;
    if (cfg->latency_ns > 0) {
        pthread_condattr_t ca;
        if ((rc = -pthread_condattr_init(&ca)) != 0)
            goto fail_cond;
        rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = -pthread_cond_init(&b->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (rc != 0)
            goto fail_cond;
        b->has_timer = true;
        if ((rc = -pthread_create(&b->timer, NULL, timer_main, b)) != 0)
            goto fail_thread;
    }
    *out = b;
    return 0;

fail_thread:
    pthread_cond_destroy(&b->cond);
fail_cond:
    pthread_mutex_destroy(&b->mu);
fail_mutex:
    ck_hs_destroy(&b->pods);
fail_hs:
    free(b);
    return rc;
}

pc_backend *pc_membackend_backend(pc_membackend *b)
{
    return &b->iface;
}

void pc_membackend_free(pc_membackend *b)
{
    if (b == NULL)
        return;
    if (b->has_timer) {
        pthread_mutex_lock(&b->mu);
        b->stopping = true;
        pthread_cond_signal(&b->cond);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->timer, NULL); /* it delivers every pending completion first */
        pthread_cond_destroy(&b->cond);
    }
    while (b->all != NULL)
        pod_free(b, b->all);
    for (mb_phase *p = b->phases, *next; p != NULL; p = next) {
        next = p->next;
        free(p);
    }
    ck_hs_destroy(&b->pods);
    pthread_mutex_destroy(&b->mu);
    free(b->heap);
    free(b->log);
    free(b);
}

static void notify_idle(pc_membackend *b, const char *ns, const char *name, uint64_t rv)
{
    if (b->cfg.on_idle == NULL)
        return;
    char rvs[PC_RV_MAX];
    render_rv(rvs, rv);
    pc_pod_ref ref = {ns, name, NULL, rvs};
    b->cfg.on_idle(&ref, b->cfg.on_idle_arg);
}

int pc_membackend_add_pod(pc_membackend *b, const char *namespace_, const char *name,
                          const char *const *containers, size_t n_containers)
{
    if (b == NULL || !fits(namespace_, PC_NAMESPACE_MAX) || !fits(name, PC_NAME_MAX) ||
        (n_containers > 0 && containers == NULL))
        return -EINVAL;
    for (size_t i = 0; i < n_containers; i++) {
        if (!fits(containers[i], MB_CONTAINER_MAX))
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(containers[i], containers[j]) == 0)
                return -EINVAL; /* container names are unique within a pod */
    }
    mb_pod *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    if (n_containers > 0 && (p->containers = calloc(n_containers, MB_CONTAINER_MAX)) == NULL) {
        free(p);
        return -ENOMEM;
    }
    strcpy(p->namespace_, namespace_);
    strcpy(p->name, name);
    strcpy(p->phase, MB_IDLE);
    p->n_containers = n_containers;
    for (size_t i = 0; i < n_containers; i++)
        strcpy(p->containers[i], containers[i]);
    p->hash = pc__pod_key_hash(namespace_, name, 0);

    int rc = 0;
    uint64_t rv = 0;
    pthread_mutex_lock(&b->mu);
    if (ck_hs_get(&b->pods, p->hash, p) != NULL)
        rc = -EEXIST;
    else if (!ck_hs_put_unique(&b->pods, p->hash, p))
        rc = -ENOMEM;
    else {
        rv = p->rv = ++b->revision;
        p->all_prev = NULL;
        p->all_next = b->all;
        if (b->all)
            b->all->all_prev = p;
        b->all = p;
    }
    pthread_mutex_unlock(&b->mu);
    if (rc != 0) {
        free(p->containers);
        free(p);
        return rc;
    }
    notify_idle(b, namespace_, name, rv);
    return 0;
}

int pc_membackend_release_pod(pc_membackend *b, const char *namespace_, const char *name)
{
    if (b == NULL)
        return -EINVAL;
    int rc = 0;
    uint64_t rv = 0;
    pthread_mutex_lock(&b->mu);
    mb_pod *p = find_locked(b, namespace_, name);
    if (p == NULL)
        rc = -ENOENT;
    else if (strcmp(p->phase, MB_IDLE) == 0)
        rc = -EBUSY;
    else {
        strcpy(p->phase, MB_IDLE);
        rv = p->rv = ++b->revision;
    }
    pthread_mutex_unlock(&b->mu);
    if (rc == 0)
        notify_idle(b, namespace_, name, rv);
    return rc;
}

int pc_membackend_delete_pod(pc_membackend *b, const char *namespace_, const char *name)
{
    if (b == NULL)
        return -EINVAL;
    int rc = -ENOENT;
    pthread_mutex_lock(&b->mu);
    mb_pod *p = find_locked(b, namespace_, name);
    if (p != NULL) {
        ck_hs_remove(&b->pods, p->hash, p);
        p->deleted = true;
        if (p->log_refs == 0) /* else the log still names it: freed with its last record */
            pod_free(b, p);
        rc = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int pc_membackend_get_pod(pc_membackend *b, const char *namespace_, const char *name,
                          char phase[32], char rv[PC_RV_MAX])
{
    if (b == NULL)
        return -EINVAL;
    int rc = -ENOENT;
    pthread_mutex_lock(&b->mu);
    mb_pod *p = find_locked(b, namespace_, name);
    if (p != NULL) {
        if (phase)
            snprintf(phase, MB_PHASE_MAX, "%s", p->phase);
        if (rv)
            render_rv(rv, p->rv);
        rc = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

size_t pc_membackend_transitions(pc_membackend *b, pc_membackend_transition *out, size_t cap)
{
    if (b == NULL)
        return 0;
    pthread_mutex_lock(&b->mu);
    size_t n = b->log_len;
    for (size_t i = 0; out != NULL && i < n && i < cap; i++) {
        const mb_record *r = &b->log[(b->log_head + i) % b->log_max];
        pc_membackend_transition *t = &out[i];
        memcpy(t->namespace_, r->pod->namespace_, sizeof t->namespace_);
        memcpy(t->name, r->pod->name, sizeof t->name);
        render_rv(t->from_rv, r->from_rv);
        render_rv(t->to_rv, r->to_rv);
        memcpy(t->claim_id, r->claim_id, sizeof t->claim_id);
        snprintf(t->phase, sizeof t->phase, "%s", r->phase);
    }
    pthread_mutex_unlock(&b->mu);
    return n;
}

void pc_membackend_outcomes(pc_membackend *b, uint64_t counts[PC_CAS_OUTCOME_COUNT])
{
    if (b == NULL) {
        memset(counts, 0, sizeof(uint64_t) * PC_CAS_OUTCOME_COUNT);
        return;
    }
    pthread_mutex_lock(&b->mu);
    memcpy(counts, b->outcomes, sizeof b->outcomes);
    pthread_mutex_unlock(&b->mu);
}

void pc_membackend_stats_read(pc_membackend *b, pc_membackend_stats *out)
{
    memset(out, 0, sizeof *out);
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    memcpy(out->outcomes, b->outcomes, sizeof b->outcomes);
    out->injected_conflicts = b->injected_conflicts;
    out->injected_retryable = b->injected_retryable;
    out->transitions_total = b->log_total;
    out->transitions_dropped = b->log_total - b->log_len;
    pthread_mutex_unlock(&b->mu);
}
