/* podclaim-demo: the claim scheduler under load, end to end in one process.
 *
 * Flow: producer threads -> pool (inbox, ready-queue, pending) -> reservation
 *       -> CAS workers -> in-memory backend (simulated API latency) -> result.
 *
 * Several threads enqueue claims at full speed, each keeping a window of claims
 * outstanding; the in-memory backend answers every CAS after a simulated API round
 * trip and injects conflicts; a won pod is recycled to Idle at a new version when its
 * claim ends (the pool controller's job), and the backend's idle hook offers it to the
 * pool (the informer's job). At the end it prints claims/s, latency percentiles,
 * outcomes, CAS outcomes and the pool's final snapshot, and checks the backend's log
 * for a pod idle period won twice.
 */
#include <podclaim/membackend.h>
#include <podclaim/podclaim.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
    long claims;
    int threads;
    int window;
    int pods;
    double latency_ms;
    double jitter_ms;
    double conflict_rate;
    int workers;
} options;

typedef struct slot {
    pc_claim claim;
    struct producer *owner;
    int index;
} slot;

typedef struct producer {
    slot *slots;
    _Atomic int *free;
    sem_t free_slots;
    long todo;
    int window;
} producer;

static pc_pool *pool;
static pc_membackend *backend;
static int64_t *latencies; /* per answered claim, ns */
static _Atomic long answered;
static _Atomic long by_status[PC_CLAIM_STATUS_COUNT];

static void on_idle(const pc_pod_ref *pod, void *arg)
{
    (void)arg;
    int err = pc_pool_offer_idle(pool, pod);
    if (err && err != -ESHUTDOWN)
        fprintf(stderr, "level=warn msg=\"offer %s: %s\"\n", pod->name, pc_strerror(err));
}

static void on_result(pc_claim *c, const pc_claim_result *r, void *arg)
{
    producer *pr = arg;
    slot *s = (slot *)c;
    long n = atomic_fetch_add_explicit(&answered, 1, memory_order_relaxed);
    latencies[n] = r->latency_ns;
    atomic_fetch_add_explicit(&by_status[r->status], 1, memory_order_relaxed);
    if (r->status == PC_CLAIM_OK) /* the sandbox is done: recycle the pod */
        pc_membackend_release_pod(backend, r->pod_namespace, r->pod_name);
    atomic_store_explicit(&pr->free[s->index], 1, memory_order_release);
    sem_post(&pr->free_slots);
}

static void *produce(void *arg)
{
    producer *pr = arg;
    static const pc_kv images[] = {{"main", "python:3.12-slim"}};
    static const pc_kv labels[] = {{"sandbox.example/owner", "demo"}};
    pc_claim_opts opts = {.images = images, .n_images = 1, .labels = labels, .n_labels = 1};
    int next = 0;
    for (long k = 0; k < pr->todo; k++) {
        sem_wait(&pr->free_slots);
        while (!atomic_load_explicit(&pr->free[next], memory_order_acquire))
            next = (next + 1) % pr->window;
        atomic_store_explicit(&pr->free[next], 0, memory_order_relaxed);
        slot *s = &pr->slots[next];
        pc_claim_init(&s->claim, (int)(k % PC_PRIORITY_LEVELS), on_result, pr);
        s->claim.opts = opts;
        s->claim.deadline_ns = pc_now_ns() + 30 * (int64_t)1000000000;
        int err;
        while ((err = pc_pool_enqueue(pool, &s->claim)) == -EAGAIN)
            sched_yield(); /* backpressure */
        if (err) {
            fprintf(stderr, "level=error msg=\"enqueue: %s\"\n", pc_strerror(err));
            exit(1);
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: podclaim-demo [options]\n"
               "Runs the podclaim scheduler in-process against the in-memory backend.\n\n"
               "  --claims N         claims in total (default 200000)\n"
               "  --threads T        producer threads (default 8)\n"
               "  --window W         claims each producer keeps outstanding (default 256)\n"
               "  --pods P           warm pods in the pool (default 512)\n"
               "  --latency-ms L     simulated API latency per CAS (default 1.0)\n"
               "  --jitter-ms J      + uniform jitter (default 1.0)\n"
               "  --conflict-rate R  injected CAS conflicts, 0..1 (default 0.05)\n"
               "  --workers N        CAS worker threads (default 2)\n"
               "  --help\n");
}

static int parse(int argc, char **argv, options *o)
{
    static const struct option longs[] = {{"claims", 1, 0, 'c'},        {"threads", 1, 0, 't'},
                                          {"window", 1, 0, 'w'},        {"pods", 1, 0, 'p'},
                                          {"latency-ms", 1, 0, 'l'},    {"jitter-ms", 1, 0, 'j'},
                                          {"conflict-rate", 1, 0, 'r'}, {"workers", 1, 0, 'W'},
                                          {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
    int ch, idx = 0;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", longs, &idx)) != -1) {
        double v = optarg ? strtod(optarg, &end) : 0;
        if (optarg && (*end || end == optarg)) {
            fprintf(stderr, "podclaim-demo: --%s: not a number: %s\n", longs[idx].name, optarg);
            return -1;
        }
        switch (ch) {
        case 'c':
            o->claims = (long)v;
            break;
        case 't':
            o->threads = (int)v;
            break;
        case 'w':
            o->window = (int)v;
            break;
        case 'p':
            o->pods = (int)v;
            break;
        case 'l':
            o->latency_ms = v;
            break;
        case 'j':
            o->jitter_ms = v;
            break;
        case 'r':
            o->conflict_rate = v;
            break;
        case 'W':
            o->workers = (int)v;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (o->claims < 1 || o->threads < 1 || o->window < 1 || o->pods < 1 || o->latency_ms < 0 ||
        o->jitter_ms < 0 || o->conflict_rate < 0 || o->conflict_rate > 1 || o->workers < 1) {
        fprintf(stderr, "podclaim-demo: a value is out of range (see --help)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.claims = 200000,
                 .threads = 8,
                 .window = 256,
                 .pods = 512,
                 .latency_ms = 1.0,
                 .jitter_ms = 1.0,
                 .conflict_rate = 0.05,
                 .workers = 2};
    if (parse(argc, argv, &o) != 0)
        return 2;

    pc_membackend_config bc = {.latency_ns = (int64_t)(o.latency_ms * 1e6),
                               .jitter_ns = (int64_t)(o.jitter_ms * 1e6),
                               .conflict_rate = o.conflict_rate,
                               .seed = 7,
                               .on_idle = on_idle};
    int err = pc_membackend_new(&bc, &backend);
    if (err) {
        fprintf(stderr, "podclaim-demo: backend: %s\n", pc_strerror(err));
        return 1;
    }
    pc_pool_config pc = {.namespace_ = "demo",
                         .name = "sandboxes",
                         .team = "platform",
                         .user = "demo",
                         .env = "local",
                         .max_inflight = 1024,
                         .cas_workers = (uint32_t)o.workers};
    if ((err = pc_pool_new(&pc, pc_membackend_backend(backend), &pool)) != 0 ||
        (err = pc_pool_start(pool)) != 0) {
        fprintf(stderr, "podclaim-demo: pool: %s\n", pc_strerror(err));
        return 1;
    }
    latencies = calloc((size_t)o.claims, sizeof(*latencies));
    const char *containers[] = {"main"};
    char name[32];
    for (int i = 0; i < o.pods; i++) {
        snprintf(name, sizeof(name), "sandbox-%05d", i);
        pc_membackend_add_pod(backend, "demo", name, containers, 1);
    }
    printf("podclaim demo: %ld claims from %d threads (window %d each), %d warm pods,\n"
           "in-memory API with %.1f ms + up to %.1f ms latency per CAS, %.0f%% injected "
           "conflicts, %d CAS workers\n\n",
           o.claims, o.threads, o.window, o.pods, o.latency_ms, o.jitter_ms, o.conflict_rate * 100,
           o.workers);

    producer *prods = calloc((size_t)o.threads, sizeof(*prods));
    pthread_t *tids = calloc((size_t)o.threads, sizeof(*tids));
    int64_t t0 = pc_now_ns();
    for (int i = 0; i < o.threads; i++) {
        producer *pr = &prods[i];
        pr->window = o.window;
        pr->todo = o.claims / o.threads + (i < o.claims % o.threads);
        pr->slots = calloc((size_t)o.window, sizeof(slot));
        pr->free = calloc((size_t)o.window, sizeof(*pr->free));
        sem_init(&pr->free_slots, 0, (unsigned)o.window);
        for (int k = 0; k < o.window; k++) {
            pr->slots[k].index = k;
            atomic_init(&pr->free[k], 1);
        }
        pthread_create(&tids[i], NULL, produce, pr);
    }
    for (int i = 0; i < o.threads; i++)
        pthread_join(tids[i], NULL);
    /* Each producer returns once its last claim is enqueued; wait for the last results by
     * taking back every producer's whole window. */
    for (int i = 0; i < o.threads; i++)
        for (int k = 0; k < o.window; k++)
            sem_wait(&prods[i].free_slots);
    int64_t elapsed = pc_now_ns() - t0;

    long n = atomic_load(&answered);
    qsort(latencies, (size_t)n, sizeof(*latencies), cmp_i64);
    printf("%-28s %12.0f\n", "claims/s", (double)n / ((double)elapsed / 1e9));
    printf("%-28s %12.3f\n", "elapsed s", (double)elapsed / 1e9);
    printf("%-28s %12.3f\n", "claim latency p50 ms", (double)latencies[n / 2] / 1e6);
    printf("%-28s %12.3f\n", "claim latency p90 ms", (double)latencies[n * 9 / 10] / 1e6);
    printf("%-28s %12.3f\n", "claim latency p99 ms", (double)latencies[n * 99 / 100] / 1e6);
    printf("%-28s %12.3f\n", "claim latency max ms", (double)latencies[n - 1] / 1e6);
    printf("\nresults:");
    for (int s = 0; s < PC_CLAIM_STATUS_COUNT; s++)
        printf(" %s=%ld", pc_claim_status_name(s), atomic_load(&by_status[s]));
    uint64_t cas[PC_CAS_OUTCOME_COUNT];
    pc_membackend_outcomes(backend, cas);
    printf("\nCAS outcomes:");
    for (int k = 0; k < PC_CAS_OUTCOME_COUNT; k++)
        printf(" %s=%llu", pc_cas_outcome_name(k), (unsigned long long)cas[k]);
    printf("\n");

    /* Invariant 1, checked on the backend's log: no (pod, idle version) won twice. */
    size_t nt = pc_membackend_transitions(backend, NULL, 0);
    pc_membackend_transition *log = calloc(nt ? nt : 1, sizeof(*log));
    pc_membackend_transitions(backend, log, nt);
    size_t dup = 0;
    char(*keys)[PC_NAME_MAX + PC_RV_MAX] = calloc(nt ? nt : 1, sizeof(*keys));
    for (size_t i = 0; i < nt; i++)
        snprintf(keys[i], sizeof(keys[i]), "%s@%s", log[i].name, log[i].from_rv);
    qsort(keys, nt, sizeof(*keys), (int (*)(const void *, const void *))strcmp);
    for (size_t i = 1; i < nt; i++)
        dup += strcmp(keys[i - 1], keys[i]) == 0;
    printf("idle periods won: %zu, won twice: %zu\n", nt, dup);

    pc_snapshot s = pc_pool_snapshot(pool);
    printf("final snapshot: idle_ready=%llu queue_len=%llu reserved=%llu inflight_cas=%llu\n",
           (unsigned long long)s.idle_ready, (unsigned long long)s.queue_len,
           (unsigned long long)s.reserved, (unsigned long long)s.inflight_cas);

    pc_pool_free(pool);
    pc_membackend_free(backend);
    for (int i = 0; i < o.threads; i++) {
        free(prods[i].slots);
        free(prods[i].free);
        sem_destroy(&prods[i].free_slots);
    }
    free(prods);
    free(tids);
    free(keys);
    free(log);
    free(latencies);
    return dup ? 1 : 0;
}
