/* Tests of src/membackend: the in-memory pod store with resourceVersion CAS that the pool's
 * pool's scheduler calls in place of the API server (scheduler -> [backend] -> result). */
#include "common.h"

#include <podclaim/membackend.h>

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* What one done() call reported. `calls` is written last with release so a waiter that
 * sees it non-zero (acquire) also sees the fields. */
typedef struct result {
    pc_cas_outcome outcome;
    char new_rv[PC_RV_MAX];
    char message[512];
    bool had_new_rv, had_message;
    pthread_t thread;
    int64_t at_ns;
    int order; /* position among the deliveries of one test */
    _Atomic int *next_order;
    _Atomic int calls;
} result;

static void on_done(void *token, pc_cas_outcome outcome, const char *new_rv, const char *message,
                    int64_t retry_after_ns)
{
    (void)retry_after_ns;
    result *r = token;
    r->outcome = outcome;
    r->had_new_rv = new_rv != NULL;
    r->had_message = message != NULL;
    snprintf(r->new_rv, sizeof r->new_rv, "%s", new_rv ? new_rv : "");
    snprintf(r->message, sizeof r->message, "%s", message ? message : "");
    r->thread = pthread_self();
    r->at_ns = mono_ns();
    if (r->next_order)
        r->order = atomic_fetch_add_explicit(r->next_order, 1, memory_order_relaxed);
    /* Release: publishes the fields above to the test thread's acquire load of calls. */
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_release);
}

static int calls(result *r)
{
    /* Acquire: pairs with on_done's release, so the fields are visible once calls > 0. */
    return atomic_load_explicit(&r->calls, memory_order_acquire);
}

/* on_idle recorder. */
typedef struct idle_log {
    pthread_mutex_t mu;
    int n;
    char name[16][PC_NAME_MAX];
    char rv[16][PC_RV_MAX];
    bool had_uid_or_null_ok;
} idle_log;

static void on_idle(const pc_pod_ref *pod, void *arg)
{
    idle_log *l = arg;
    pthread_mutex_lock(&l->mu);
    if (l->n < 16) {
        snprintf(l->name[l->n], sizeof l->name[0], "%s", pod->name);
        snprintf(l->rv[l->n], sizeof l->rv[0], "%s", pod->resource_version);
    }
    l->n++;
    pthread_mutex_unlock(&l->mu);
}

static const char *const one_container[] = {"main"};
static const pc_claim_opts plain_opts = {0};

static pc_membackend *new_backend(const pc_membackend_config *cfg)
{
    pc_membackend *b = NULL;
    int rc = pc_membackend_new(cfg, &b);
    cr_assert_eq(rc, 0, "pc_membackend_new: expected 0, got %d", rc);
    return b;
}

static void add(pc_membackend *b, const char *name)
{
    int rc = pc_membackend_add_pod(b, "ns", name, one_container, 1);
    cr_assert_eq(rc, 0, "add_pod %s: expected 0, got %d", name, rc);
}

static void rv_of(pc_membackend *b, const char *name, char rv[PC_RV_MAX])
{
    cr_assert_eq(pc_membackend_get_pod(b, "ns", name, NULL, rv), 0, "get_pod %s", name);
}

static pc_cas_request request(const char *name, const char *rv, const pc_claim_opts *o,
                              const char *claim_id)
{
    pc_cas_request r = {0};
    r.pod.namespace_ = "ns";
    r.pod.name = name;
    r.pod.resource_version = rv;
    r.opts = o;
    r.target_phase = o->target_phase ? o->target_phase : "Running";
    r.claim_id = claim_id;
    return r;
}

/* Start one CAS and, with an inline backend, check it was answered before returning. */
static void cas(pc_membackend *b, const char *name, const char *rv, const pc_claim_opts *o,
                const char *claim_id, result *out)
{
    pc_cas_request req = request(name, rv, o, claim_id);
    pc_backend *be = pc_membackend_backend(b);
    int rc = be->cas_start(be, &req, on_done, out);
    cr_assert_eq(rc, 0, "cas_start %s@%s: expected 0, got %d", name, rv, rc);
}

Test(membackend, cas_wins_once_and_a_second_cas_at_that_version_conflicts, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    pc_membackend *b = new_backend(&cfg);
    add(b, "p");
    char rv[PC_RV_MAX], phase[32];
    rv_of(b, "p", rv);

    result first = {0}, second = {0};
    cas(b, "p", rv, &plain_opts, "c1", &first);
    cr_assert_eq(calls(&first), 1, "latency 0 answers before cas_start returns");
    cr_assert_eq(first.outcome, PC_CAS_WON, "expected WON, got %d: %s", first.outcome,
                 first.message);
    cr_assert(first.had_new_rv && !first.had_message, "WON: new_rv set, message NULL");
    cr_assert(pthread_equal(first.thread, pthread_self()), "inline: on the caller's thread");

    char phase_now[32], rv_now[PC_RV_MAX];
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase_now, rv_now), 0);
    cr_assert_str_eq(phase_now, "Running");
    cr_assert_str_eq(rv_now, first.new_rv, "the pod is at the version done() reported");
    cr_assert_str_neq(rv_now, rv);

    cas(b, "p", rv, &plain_opts, "c2", &second);
    cr_assert_eq(second.outcome, PC_CAS_CONFLICT, "expected CONFLICT, got %d", second.outcome);
    cr_assert(!second.had_new_rv && second.message[0] != '\0', "conflict: a message, no rv");
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase, NULL), 0);
    cr_assert_str_eq(phase, "Running");

    uint64_t counts[PC_CAS_OUTCOME_COUNT];
    pc_membackend_outcomes(b, counts);
    cr_assert_eq(counts[PC_CAS_WON], 1);
    cr_assert_eq(counts[PC_CAS_CONFLICT], 1);
    pc_membackend_free(b);
}

Test(membackend, cas_at_a_wrong_version_conflicts_and_changes_nothing, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    pc_membackend *b = new_backend(&cfg);
    add(b, "p");
    char rv[PC_RV_MAX], after[PC_RV_MAX], phase[32];
    rv_of(b, "p", rv);
    result r = {0};
    cas(b, "p", "999999", &plain_opts, "c", &r);
    cr_assert_eq(r.outcome, PC_CAS_CONFLICT, "expected CONFLICT, got %d", r.outcome);
    cr_assert_not_null(strstr(r.message, "999999"), "message names the precondition: %s",
                       r.message);
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase, after), 0);
    cr_assert_str_eq(after, rv);
    cr_assert_str_eq(phase, "Idle");
    cr_assert_eq(pc_membackend_transitions(b, NULL, 0), 0);
    pc_membackend_free(b);
}

Test(membackend, cas_on_a_missing_or_deleted_pod_answers_not_found, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    pc_membackend *b = new_backend(&cfg);
    result r = {0};
    cas(b, "ghost", "1", &plain_opts, "c", &r);
    cr_assert_eq(r.outcome, PC_CAS_NOT_FOUND, "expected NOT_FOUND, got %d", r.outcome);

    add(b, "p");
    char rv[PC_RV_MAX];
    rv_of(b, "p", rv);
    cr_assert_eq(pc_membackend_delete_pod(b, "ns", "p"), 0);
    cr_assert_eq(pc_membackend_delete_pod(b, "ns", "p"), -ENOENT);
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", NULL, NULL), -ENOENT);
    result d = {0};
    cas(b, "p", rv, &plain_opts, "c", &d);
    cr_assert_eq(d.outcome, PC_CAS_NOT_FOUND, "deleted pod: expected NOT_FOUND, got %d", d.outcome);

    /* Re-adding the name makes a new pod at a newer version. */
    add(b, "p");
    char rv2[PC_RV_MAX];
    rv_of(b, "p", rv2);
    cr_assert_str_neq(rv2, rv);
    pc_membackend_free(b);
}

Test(membackend, bad_claim_options_are_invalid_with_a_message_naming_the_culprit, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    pc_membackend *b = new_backend(&cfg);
    static const char *const containers[] = {"main", "sidecar"};
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", containers, 2), 0);
    char rv[PC_RV_MAX];
    rv_of(b, "p", rv);

    pc_kv unknown[] = {{"main", "img:1"}, {"gpu-worker", "img:2"}};
    pc_claim_opts o = {.images = unknown, .n_images = 2};
    result r = {0};
    cas(b, "p", rv, &o, "c", &r);
    cr_assert_eq(r.outcome, PC_CAS_INVALID, "unknown container: got %d", r.outcome);
    cr_assert_not_null(strstr(r.message, "gpu-worker"), "message: %s", r.message);

    pc_kv empty[] = {{"sidecar", ""}};
    o = (pc_claim_opts){.images = empty, .n_images = 1};
    result e = {0};
    cas(b, "p", rv, &o, "c", &e);
    cr_assert_eq(e.outcome, PC_CAS_INVALID, "empty image: got %d", e.outcome);
    cr_assert_not_null(strstr(e.message, "sidecar"), "message: %s", e.message);

    result m = {0};
    pc_cas_request req = request("p", NULL, &plain_opts, "c");
    pc_backend *be = pc_membackend_backend(b);
    cr_assert_eq(be->cas_start(be, &req, on_done, &m), 0);
    cr_assert_eq(m.outcome, PC_CAS_INVALID, "missing resourceVersion: got %d", m.outcome);

    /* Nothing above touched the pod; valid images for both containers win. */
    char after[PC_RV_MAX];
    rv_of(b, "p", after);
    cr_assert_str_eq(after, rv);
    pc_kv good[] = {{"main", "img:1"}, {"sidecar", "img:2"}};
    o = (pc_claim_opts){.images = good, .n_images = 2};
    result w = {0};
    cas(b, "p", rv, &o, "c", &w);
    cr_assert_eq(w.outcome, PC_CAS_WON, "got %d: %s", w.outcome, w.message);

    /* Bad calls are refused without a completion. */
    result never = {0};
    cr_assert_eq(be->cas_start(be, &req, NULL, &never), -EINVAL);
    cr_assert_eq(be->cas_start(be, NULL, on_done, &never), -EINVAL);
    cr_assert_eq(calls(&never), 0);

    uint64_t counts[PC_CAS_OUTCOME_COUNT];
    pc_membackend_outcomes(b, counts);
    cr_assert_eq(counts[PC_CAS_INVALID], 3, "INVALID counted: %llu",
                 (unsigned long long)counts[PC_CAS_INVALID]);
    pc_membackend_free(b);
}

Test(membackend, injected_conflict_moves_the_version_and_reports_the_pod_idle, .timeout = 10)
{
    idle_log idle = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pc_membackend_config cfg = {.conflict_rate = 1.0, .on_idle = on_idle, .on_idle_arg = &idle};
    pc_membackend *b = new_backend(&cfg);
    add(b, "p");
    cr_assert_eq(idle.n, 1, "add_pod calls on_idle");
    char rv[PC_RV_MAX];
    rv_of(b, "p", rv);
    cr_assert_str_eq(idle.rv[0], rv);

    result r = {0};
    cas(b, "p", rv, &plain_opts, "c", &r);
    cr_assert_eq(r.outcome, PC_CAS_CONFLICT, "got %d", r.outcome);
    char phase[32], moved[PC_RV_MAX];
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase, moved), 0);
    cr_assert_str_eq(phase, "Idle", "an injected conflict leaves the pod idle");
    cr_assert_str_neq(moved, rv, "the version moved");
    cr_assert_eq(idle.n, 2, "on_idle called for the new version (%d calls)", idle.n);
    cr_assert_str_eq(idle.name[1], "p");
    cr_assert_str_eq(idle.rv[1], moved);
    cr_assert_eq(pc_membackend_transitions(b, NULL, 0), 0);
    pc_membackend_free(b);
}

Test(membackend, injected_retryable_error_changes_nothing, .timeout = 10)
{
    idle_log idle = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pc_membackend_config cfg = {.retryable_rate = 1.0, .on_idle = on_idle, .on_idle_arg = &idle};
    pc_membackend *b = new_backend(&cfg);
    add(b, "p");
    char rv[PC_RV_MAX], after[PC_RV_MAX], phase[32];
    rv_of(b, "p", rv);
    for (int i = 0; i < 3; i++) {
        result r = {0};
        cas(b, "p", rv, &plain_opts, "c", &r);
        cr_assert_eq(r.outcome, PC_CAS_RETRYABLE, "attempt %d: got %d", i, r.outcome);
    }
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase, after), 0);
    cr_assert_str_eq(after, rv);
    cr_assert_str_eq(phase, "Idle");
    cr_assert_eq(idle.n, 1, "only add_pod's on_idle");
    uint64_t counts[PC_CAS_OUTCOME_COUNT];
    pc_membackend_outcomes(b, counts);
    cr_assert_eq(counts[PC_CAS_RETRYABLE], 3);
    pc_membackend_free(b);
}

#define LAT_NS 20000000 /* 20 ms */

Test(membackend, latency_delivers_from_the_timer_thread_after_the_latency_in_due_order,
     .timeout = 10)
{
    pc_membackend_config cfg = {.latency_ns = LAT_NS};
    pc_membackend *b = new_backend(&cfg);
    enum { N = 5 };
    result r[N] = {0};
    _Atomic int order = 0;
    int64_t started[N];
    char name[16], rv[PC_RV_MAX];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add(b, name);
        rv_of(b, name, rv);
        r[i].next_order = &order;
        started[i] = mono_ns();
        cas(b, name, rv, &plain_opts, "c", &r[i]);
    }
    /* The decision is taken at start: the pods are already claimed. */
    char phase[32];
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p0", phase, NULL), 0);
    cr_assert_str_eq(phase, "Running");

    for (int i = 0; i < N; i++)
        cr_assert(PC_TEST_WAIT_UNTIL(calls(&r[i]) == 1, 5000), "completion %d never came", i);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].outcome, PC_CAS_WON, "%d: %s", i, r[i].message);
        cr_assert(!pthread_equal(r[i].thread, pthread_self()), "delivered by the timer thread");
        cr_assert_geq(r[i].at_ns - started[i], LAT_NS, "%d arrived after %lld ns < latency", i,
                      (long long)(r[i].at_ns - started[i]));
        cr_assert_eq(r[i].order, i, "started %d-th, delivered %d-th", i, r[i].order);
    }
    pc_membackend_free(b);
}

Test(membackend, jittered_completions_never_arrive_before_the_latency, .timeout = 10)
{
    pc_membackend_config cfg = {.latency_ns = 2000000, .jitter_ns = 20000000, .seed = 42};
    pc_membackend *b = new_backend(&cfg);
    enum { N = 20 };
    result r[N] = {0};
    _Atomic int order = 0;
    int64_t started[N];
    char name[16], rv[PC_RV_MAX];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add(b, name);
        rv_of(b, name, rv);
        r[i].next_order = &order;
        started[i] = mono_ns();
        cas(b, name, rv, &plain_opts, "c", &r[i]);
    }
    for (int i = 0; i < N; i++)
        cr_assert(PC_TEST_WAIT_UNTIL(calls(&r[i]) == 1, 5000), "completion %d never came", i);
    bool reordered = false;
    for (int i = 0; i < N; i++) {
        cr_assert_geq(r[i].at_ns - started[i], 2000000, "%d early", i);
        cr_assert_eq(calls(&r[i]), 1, "%d delivered %d times", i, calls(&r[i]));
        reordered |= r[i].order != i;
        /* Delivery order follows delivery time (the heap hands out the earliest due). */
        for (int j = 0; j < N; j++)
            if (r[j].order < r[i].order)
                cr_assert_leq(r[j].at_ns, r[i].at_ns);
    }
    /* 20 jitters drawn from [0, 20 ms) while starts take microseconds: all in start order
     * would mean the jitter is not applied. */
    cr_assert(reordered, "jitter should reorder some completions");
    pc_membackend_free(b);
}

Test(membackend, transition_log_records_every_win_in_order, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    pc_membackend *b = new_backend(&cfg);
    add(b, "a");
    add(b, "b");
    char rva[PC_RV_MAX], rvb[PC_RV_MAX];
    rv_of(b, "a", rva);
    rv_of(b, "b", rvb);
    result ra = {0}, rb = {0}, lost = {0}, again = {0};
    pc_claim_opts starting = {.target_phase = "Starting"};
    cas(b, "b", rvb, &plain_opts, "claim-b", &rb);
    cas(b, "a", rva, &starting, "claim-a", &ra);
    cas(b, "a", rva, &plain_opts, "claim-lost", &lost);
    cr_assert_eq(lost.outcome, PC_CAS_CONFLICT);

    /* Released, the pod has a new idle period that can be won again. */
    cr_assert_eq(pc_membackend_release_pod(b, "ns", "a"), 0);
    char rva2[PC_RV_MAX];
    rv_of(b, "a", rva2);
    cas(b, "a", rva2, &plain_opts, "claim-a2", &again);
    cr_assert_eq(again.outcome, PC_CAS_WON);

    pc_membackend_transition t[8];
    size_t n = pc_membackend_transitions(b, t, 8);
    cr_assert_eq(n, 3, "expected 3 transitions, got %zu", n);
    cr_assert_str_eq(t[0].name, "b");
    cr_assert_str_eq(t[0].namespace_, "ns");
    cr_assert_str_eq(t[0].from_rv, rvb);
    cr_assert_str_eq(t[0].to_rv, rb.new_rv);
    cr_assert_str_eq(t[0].claim_id, "claim-b");
    cr_assert_str_eq(t[0].phase, "Running");
    cr_assert_str_eq(t[1].name, "a");
    cr_assert_str_eq(t[1].from_rv, rva);
    cr_assert_str_eq(t[1].to_rv, ra.new_rv);
    cr_assert_str_eq(t[1].claim_id, "claim-a");
    cr_assert_str_eq(t[1].phase, "Starting");
    cr_assert_str_eq(t[2].from_rv, rva2);
    cr_assert_str_eq(t[2].claim_id, "claim-a2");

    /* cap smaller than the log: copies cap, returns the total. */
    memset(t, 0, sizeof t);
    cr_assert_eq(pc_membackend_transitions(b, t, 1), 3);
    cr_assert_str_eq(t[0].claim_id, "claim-b");
    cr_assert_str_eq(t[1].claim_id, "", "nothing copied beyond cap");
    pc_membackend_free(b);
}

Test(membackend, release_returns_a_claimed_pod_to_idle_at_a_new_version, .timeout = 10)
{
    idle_log idle = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pc_membackend_config cfg = {.on_idle = on_idle, .on_idle_arg = &idle};
    pc_membackend *b = new_backend(&cfg);
    add(b, "p");
    cr_assert_eq(pc_membackend_release_pod(b, "ns", "p"), -EBUSY, "already idle");
    cr_assert_eq(pc_membackend_release_pod(b, "ns", "nope"), -ENOENT);
    char rv[PC_RV_MAX];
    rv_of(b, "p", rv);
    result r = {0};
    cas(b, "p", rv, &plain_opts, "c", &r);
    cr_assert_eq(pc_membackend_release_pod(b, "ns", "p"), 0);
    char phase[32], now[PC_RV_MAX];
    cr_assert_eq(pc_membackend_get_pod(b, "ns", "p", phase, now), 0);
    cr_assert_str_eq(phase, "Idle");
    cr_assert_str_neq(now, r.new_rv, "release writes a new version");
    cr_assert_eq(idle.n, 2, "add and release call on_idle");
    cr_assert_str_eq(idle.rv[1], now);
    pc_membackend_free(b);
}

Test(membackend, bad_configuration_and_pods_are_refused, .timeout = 10)
{
    pc_membackend *b = NULL;
    pc_membackend_config bad[] = {
            {.latency_ns = -1},
            {.jitter_ns = -1},
            {.conflict_rate = 1.5},
            {.retryable_rate = -0.1},
            {.conflict_rate = __builtin_nan("")},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(pc_membackend_new(&bad[i], &b), -EINVAL, "config %zu accepted", i);
    cr_assert_eq(pc_membackend_new(NULL, &b), -EINVAL);
    cr_assert_null(b);

    pc_membackend_config cfg = {0};
    b = new_backend(&cfg);
    static const char *const dup[] = {"a", "a"};
    static const char *const empty[] = {""};
    char long_name[PC_NAME_MAX + 1];
    memset(long_name, 'x', PC_NAME_MAX);
    long_name[PC_NAME_MAX] = '\0';
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", dup, 2), -EINVAL, "duplicate containers");
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", empty, 1), -EINVAL, "empty container");
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", NULL, 1), -EINVAL);
    cr_assert_eq(pc_membackend_add_pod(b, "", "p", NULL, 0), -EINVAL);
    cr_assert_eq(pc_membackend_add_pod(b, "ns", NULL, NULL, 0), -EINVAL);
    cr_assert_eq(pc_membackend_add_pod(b, "ns", long_name, NULL, 0), -EINVAL);
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", NULL, 0), 0, "no containers is fine");
    cr_assert_eq(pc_membackend_add_pod(b, "ns", "p", NULL, 0), -EEXIST);
    pc_membackend_free(b);
    pc_membackend_free(NULL);
}

Test(membackend, free_with_pending_completions_delivers_them_all, .timeout = 10)
{
    /* Latency far beyond the test's timeout: only free() can deliver these. */
    pc_membackend_config cfg = {.latency_ns = 60LL * 1000000000};
    pc_membackend *b = new_backend(&cfg);
    enum { N = 5 };
    result r[N] = {0};
    char name[16], rv[PC_RV_MAX];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add(b, name);
        rv_of(b, name, rv);
        cas(b, name, rv, &plain_opts, "c", &r[i]);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(calls(&r[i]), 0, "%d delivered before its due time", i);
    pc_membackend_free(b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(calls(&r[i]), 1, "%d: %d deliveries", i, calls(&r[i]));
        cr_assert_eq(r[i].outcome, PC_CAS_WON);
        cr_assert(!pthread_equal(r[i].thread, pthread_self()), "delivered by the timer thread");
    }
}

/* ---- concurrency ----------------------------------------------------------------------- */

#define PODS 100
#define THREADS 4
#define ROUNDS 3

typedef struct race {
    pc_membackend *b;
    pthread_barrier_t *start;
    char (*rv)[PC_RV_MAX]; /* the version of each pod this round */
    _Atomic int *wins;     /* per pod, this round */
    _Atomic int *answered;
    struct race_token *tokens; /* PODS of them, alive until every answer has arrived */
    int thread;
} race;

typedef struct race_token {
    _Atomic int *wins;
    _Atomic int *answered;
} race_token;

static void race_done(void *token, pc_cas_outcome outcome, const char *new_rv, const char *message,
                      int64_t retry_after_ns)
{
    (void)new_rv;
    (void)message;
    (void)retry_after_ns;
    race_token *t = token;
    if (outcome == PC_CAS_WON)
        atomic_fetch_add_explicit(t->wins, 1, memory_order_relaxed);
    /* Release: the win above is visible to whoever sees this answer counted (acquire). */
    atomic_fetch_add_explicit(t->answered, 1, memory_order_release);
}

static void *race_main(void *arg)
{
    race *r = arg;
    pc_backend *be = pc_membackend_backend(r->b);
    char name[16];
    pthread_barrier_wait(r->start);
    for (int k = 0; k < PODS; k++) {
        int i = (k + r->thread * (PODS / THREADS)) % PODS; /* each thread starts elsewhere */
        snprintf(name, sizeof name, "p%d", i);
        r->tokens[i] = (race_token){&r->wins[i], r->answered};
        pc_cas_request req = request(name, r->rv[i], &plain_opts, "c");
        if (be->cas_start(be, &req, race_done, &r->tokens[i]) != 0)
            abort();
    }
    return NULL;
}

static void race_rounds(const pc_membackend_config *cfg)
{
    pc_membackend *b = new_backend(cfg);
    char name[16];
    for (int i = 0; i < PODS; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add(b, name);
    }
    static char rv[PODS][PC_RV_MAX];
    static race_token tokens[THREADS][PODS];
    for (int round = 0; round < ROUNDS; round++) {
        _Atomic int wins[PODS] = {0};
        _Atomic int answered = 0;
        for (int i = 0; i < PODS; i++) {
            snprintf(name, sizeof name, "p%d", i);
            rv_of(b, name, rv[i]);
        }
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        pthread_t th[THREADS];
        race args[THREADS];
        for (int t = 0; t < THREADS; t++) {
            args[t] = (race){b, &start, rv, wins, &answered, tokens[t], t};
            cr_assert_eq(pthread_create(&th[t], NULL, race_main, &args[t]), 0);
        }
        for (int t = 0; t < THREADS; t++)
            pthread_join(th[t], NULL);
        pthread_barrier_destroy(&start);
        /* Acquire: pairs with race_done's release, making the wins counted before visible. */
        cr_assert(PC_TEST_WAIT_UNTIL(atomic_load_explicit(&answered, memory_order_acquire) ==
                                             PODS * THREADS,
                                     5000),
                  "round %d: %d of %d answered", round, atomic_load(&answered), PODS * THREADS);
        for (int i = 0; i < PODS; i++) {
            cr_assert_eq(atomic_load(&wins[i]), 1, "round %d pod %d won %d times", round, i,
                         atomic_load(&wins[i]));
            snprintf(name, sizeof name, "p%d", i);
            cr_assert_eq(pc_membackend_release_pod(b, "ns", name), 0);
        }
    }

    static pc_membackend_transition t[PODS * ROUNDS + 1];
    size_t n = pc_membackend_transitions(b, t, PODS * ROUNDS + 1);
    cr_assert_eq(n, PODS * ROUNDS, "transitions: %zu", n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert(strcmp(t[i].name, t[j].name) != 0 || strcmp(t[i].from_rv, t[j].from_rv) != 0,
                      "idle period %s@%s won twice", t[i].name, t[i].from_rv);
    uint64_t counts[PC_CAS_OUTCOME_COUNT];
    pc_membackend_outcomes(b, counts);
    cr_assert_eq(counts[PC_CAS_WON], PODS * ROUNDS);
    cr_assert_eq(counts[PC_CAS_CONFLICT], (THREADS - 1) * PODS * ROUNDS);
    pc_membackend_free(b);
}

Test(membackend, concurrent_cas_from_four_threads_wins_each_version_exactly_once, .timeout = 10)
{
    pc_membackend_config cfg = {0};
    race_rounds(&cfg);
}

Test(membackend, concurrent_cas_with_latency_wins_each_version_exactly_once, .timeout = 10)
{
    pc_membackend_config cfg = {.latency_ns = 100000, .jitter_ns = 200000, .seed = 7};
    race_rounds(&cfg);
}

/* The transition log is bounded: it keeps the newest log_capacity wins, counts the rest as
 * dropped, and a deleted pod the log still names stays readable until its last record goes. */
Test(membackend, transition_log_keeps_the_newest_wins_within_its_capacity, .timeout = 10)
{
    pc_membackend_config cfg = {.log_capacity = 4};
    pc_membackend *b = new_backend(&cfg);
    char name[16], rv[PC_RV_MAX], id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add(b, name);
        rv_of(b, name, rv);
        snprintf(id, sizeof id, "claim-%d", i);
        result r = {0};
        cas(b, name, rv, &plain_opts, id, &r);
        cr_assert_eq(r.outcome, PC_CAS_WON);
        if (i == 7)
            cr_assert_eq(pc_membackend_delete_pod(b, "ns", name), 0); /* still in the log */
        if (i == 1)
            cr_assert_eq(pc_membackend_delete_pod(b, "ns", name), 0); /* dropped from it */
    }
    pc_membackend_transition t[10];
    size_t n = pc_membackend_transitions(b, t, 10);
    cr_assert_eq(n, 4, "kept %zu transitions, capacity 4", n);
    for (int k = 0; k < 4; k++) {
        snprintf(id, sizeof id, "claim-%d", 6 + k);
        cr_assert_str_eq(t[k].claim_id, id, "oldest kept first");
        snprintf(name, sizeof name, "p%d", 6 + k);
        cr_assert_str_eq(t[k].name, name);
    }
    pc_membackend_stats st;
    pc_membackend_stats_read(b, &st);
    cr_assert_eq(st.transitions_total, 10);
    cr_assert_eq(st.transitions_dropped, 6);
    cr_assert_eq(st.outcomes[PC_CAS_WON], 10);
    pc_membackend_free(b);
}

Test(membackend, stats_count_injected_conflicts_apart_from_real_ones, .timeout = 10)
{
    pc_membackend_config cfg = {.conflict_rate = 1.0};
    pc_membackend *b = new_backend(&cfg);
    add(b, "a");
    char rv[PC_RV_MAX];
    rv_of(b, "a", rv);
    result r = {0};
    cas(b, "a", rv, &plain_opts, "c1", &r);
    cr_assert_eq(r.outcome, PC_CAS_CONFLICT);
    pc_membackend_free(b);

    pc_membackend_config plain = {0};
    b = new_backend(&plain);
    add(b, "a");
    result stale = {0};
    cas(b, "a", "999999", &plain_opts, "c2", &stale); /* a real conflict: wrong version */
    cr_assert_eq(stale.outcome, PC_CAS_CONFLICT);
    pc_membackend_stats st;
    pc_membackend_stats_read(b, &st);
    cr_assert_eq(st.outcomes[PC_CAS_CONFLICT], 1);
    cr_assert_eq(st.injected_conflicts, 0);
    pc_membackend_free(b);

    b = new_backend(&cfg);
    add(b, "a");
    rv_of(b, "a", rv);
    cas(b, "a", rv, &plain_opts, "c3", &r);
    pc_membackend_stats_read(b, &st);
    cr_assert_eq(st.outcomes[PC_CAS_CONFLICT], 1);
    cr_assert_eq(st.injected_conflicts, 1);
    pc_membackend_free(b);
}
