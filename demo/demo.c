/* podclaim-demo: the claim scheduler under load, end to end.
 *
 * Flow: producer threads -> pool (inbox, ready-queue, pending) -> reservation
 *       -> CAS (backend) -> result.
 *
 * --backend kapi-sim (default): starts kapi-sim on an ephemeral loopback port with one
 *   SandboxPool; the informer lists and watches its pods and offers the idle ones; each
 *   claim is one strategic-merge PATCH with the resourceVersion precondition. kapi-sim plays
 *   the kubelet only (issue 13), so the demo plays the pool controller: it seeds the pods
 *   (--objects) and its recycler thread turns a claimed pod back to Idle --hold-ms after the
 *   claim, with one PATCH guarded by the version the claim left (a GET first only when the
 *   kubelet moved the pod meanwhile). The check for a double win reads kapi-sim's log of
 *   Idle -> claimed transitions (GET /sim/claims).
 * --backend memory: the in-memory backend with a simulated API latency; a won pod is
 *   recycled when its claim ends and offered again by the backend's idle hook.
 *
 * Several threads enqueue claims at full speed, each keeping a window outstanding. At the
 * end it prints claims/s, claim latency percentiles, results, CAS outcomes, the final
 * snapshot, and whether any pod idle period was won twice (exit status 1 if so).
 */
#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/membackend.h>
#include <podclaim/podclaim.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct options {
    bool memory; /* --backend memory */
    long claims;
    int threads;
    int window;
    int pods;
    double latency_ms; /* memory only */
    double jitter_ms;  /* memory only */
    double conflict_rate;
    int hold_ms; /* kapi-sim only */
    int workers;
    const char *kapi_sim; /* path of the kapi-sim binary */
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

/* What the run is made of; only the fields of the chosen backend are set. */
/* A claimed pod for the recycler (kapi-sim backend). */
typedef struct recycle_item {
    struct recycle_item *next;
    int64_t due_ns;
    char pod[PC_NAME_MAX];
    char rv[PC_RV_MAX];
} recycle_item;

typedef struct demo {
    pc_pool *pool;
    pc_membackend *mem;
    pid_t sim_pid;
    char sim_log[64];
    char sim_objects[64];
    /* recycler: FIFO (one fixed delay, so sorted by due time), mu + cv */
    pthread_t recycler;
    bool recycler_started;
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    recycle_item *rhead, *rtail;
    bool rstop;
    int64_t hold_ns;
    _Atomic long recycled, recycle_conflicts;
    char server[64];
    pc_kube_client *client;
    pc_kube_backend *kb;
    pc_informer *informer;
} demo;

static demo D;
static bool use_memory;
static int64_t *latencies; /* per answered claim, ns */
static _Atomic long answered;
static _Atomic long by_status[PC_CLAIM_STATUS_COUNT];

static void on_idle(const pc_pod_ref *pod, void *arg)
{
    (void)arg;
    int err = pc_pool_offer_idle(D.pool, pod);
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
    /* The sandbox is done at once; the demo plays the pool controller and recycles the pod:
     * in memory at once, with kapi-sim --hold-ms later through the recycler thread. */
    if (r->status == PC_CLAIM_OK && use_memory)
        pc_membackend_release_pod(D.mem, r->pod_namespace, r->pod_name);
    else if (r->status == PC_CLAIM_OK) {
        recycle_item *it = calloc(1, sizeof(*it));
        if (it) {
            snprintf(it->pod, sizeof(it->pod), "%s", r->pod_name);
            snprintf(it->rv, sizeof(it->rv), "%s", r->resource_version);
            it->due_ns = pc_now_ns() + D.hold_ns;
            pthread_mutex_lock(&D.rmu); /* a list push: short enough for a pool callback */
            if (D.rtail)
                D.rtail->next = it;
            else
                D.rhead = it;
            D.rtail = it;
            pthread_cond_signal(&D.rcv);
            pthread_mutex_unlock(&D.rmu);
        }
    }
    atomic_store_explicit(&pr->free[s->index], 1, memory_order_release);
    sem_post(&pr->free_slots);
}

static void *produce(void *arg)
{
    producer *pr = arg;
    /* kapi-sim's pool pods have one container named "sandbox"; the in-memory pods too. */
    static const pc_kv images[] = {{"sandbox", "python:3.12-slim"}};
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
        s->claim.deadline_ns = pc_now_ns() + 60 * (int64_t)1000000000;
        int err;
        while ((err = pc_pool_enqueue(D.pool, &s->claim)) == -EAGAIN)
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

/* Sort "pod@version" keys and count the ones that appear more than once. */
static size_t count_duplicates(char (*keys)[PC_NAME_MAX + PC_RV_MAX], size_t n)
{
    qsort(keys, n, sizeof(*keys), (int (*)(const void *, const void *))strcmp);
    size_t dup = 0;
    for (size_t i = 1; i < n; i++)
        dup += strcmp(keys[i - 1], keys[i]) == 0;
    return dup;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- the in-memory backend ----------------------------------------------------------------- */

static int setup_memory(const options *o, pc_pool_config *pc)
{
    pc_membackend_config bc = {.latency_ns = (int64_t)(o->latency_ms * 1e6),
                               .jitter_ns = (int64_t)(o->jitter_ms * 1e6),
                               .conflict_rate = o->conflict_rate,
                               .seed = 7,
                               .on_idle = on_idle,
                               .log_capacity = (size_t)o->claims}; /* every win, for the check */
    int err = pc_membackend_new(&bc, &D.mem);
    if (err) {
        fprintf(stderr, "podclaim-demo: in-memory backend: %s\n", pc_strerror(err));
        return err;
    }
    if ((err = pc_pool_new(pc, pc_membackend_backend(D.mem), &D.pool)) != 0 ||
        (err = pc_pool_start(D.pool)) != 0) {
        fprintf(stderr, "podclaim-demo: pool: %s\n", pc_strerror(err));
        return err;
    }
    const char *containers[] = {"sandbox"};
    char name[32];
    for (int i = 0; i < o->pods; i++) {
        snprintf(name, sizeof(name), "sandbox-%05d", i);
        pc_membackend_add_pod(D.mem, "demo", name, containers, 1);
    }
    printf("podclaim demo: %ld claims from %d threads (window %d each), %d warm pods,\n"
           "in-memory API with %.1f ms + up to %.1f ms latency per CAS, %.0f%% injected "
           "conflicts\n\n",
           o->claims, o->threads, o->window, o->pods, o->latency_ms, o->jitter_ms,
           o->conflict_rate * 100);
    return 0;
}

static size_t verify_memory(size_t *won)
{
    size_t nt = pc_membackend_transitions(D.mem, NULL, 0);
    pc_membackend_transition *log = calloc(nt ? nt : 1, sizeof(*log));
    char(*keys)[PC_NAME_MAX + PC_RV_MAX] = calloc(nt ? nt : 1, sizeof(*keys));
    pc_membackend_transitions(D.mem, log, nt);
    for (size_t i = 0; i < nt; i++)
        snprintf(keys[i], sizeof(keys[i]), "%s@%s", log[i].name, log[i].from_rv);
    size_t dup = count_duplicates(keys, nt);
    free(keys);
    free(log);
    *won = nt;
    return dup;
}

/* ---- the recycler (kapi-sim backend): the pool controller's part ----------------------------- */

/* Running, and every container Ready on its spec's image (the kubelet's restart for the image
 * a claim set is over): only then is Idle true. */
static bool settled(const json_t *p)
{
    const json_t *st = json_object_get(p, "status");
    const char *ph = json_string_value(json_object_get(st, "phase"));
    if (!ph || strcmp(ph, "Running") != 0)
        return false;
    size_t i, j;
    json_t *ct, *cs;
    json_array_foreach(json_object_get(json_object_get(p, "spec"), "containers"), i, ct)
    {
        bool ok = false;
        json_array_foreach(json_object_get(st, "containerStatuses"), j, cs)
        {
            if (json_equal(json_object_get(cs, "name"), json_object_get(ct, "name")))
                ok = json_is_true(json_object_get(cs, "ready")) &&
                     json_equal(json_object_get(cs, "image"), json_object_get(ct, "image"));
        }
        if (!ok)
            return false;
    }
    return true;
}

/* One PATCH back to Idle at it->rv; on 409 (the kubelet restarted the container for the claim's
 * image) read the pod and, once settled, try at its version. Returns false to retry later. */
static bool recycle_one(pc_kube_conn *k, recycle_item *it)
{
    char path[400], body[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/demo/pods/%s", it->pod);
    if (it->rv[0]) {
        snprintf(body, sizeof(body),
                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
                 "\"Idle\"},\"annotations\":{\"podclaim.io/claim-id\":null}}}",
                 it->rv);
        pc_kube_response r;
        int rc = pc_kube_conn_request(k, "PATCH", path, "application/strategic-merge-patch+json",
                                      body, strlen(body), &r);
        long st = r.status;
        pc_kube_response_fini(&r);
        if (rc == 0 && (st == 200 || st == 404))
            return true;
        atomic_fetch_add_explicit(&D.recycle_conflicts, rc == 0 && st == 409, memory_order_relaxed);
        it->rv[0] = '\0';
    }
    pc_kube_response r;
    if (pc_kube_conn_request(k, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200) {
        bool gone = r.status == 404;
        pc_kube_response_fini(&r);
        return gone;
    }
    json_t *p = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
    pc_kube_response_fini(&r);
    if (p && settled(p))
        snprintf(it->rv, sizeof(it->rv), "%s",
                 json_string_value(
                         json_object_get(json_object_get(p, "metadata"), "resourceVersion"))
                         ?: "");
    json_decref(p);
    return false;
}

static void *recycler_main(void *arg)
{
    (void)arg;
    pc_kube_conn *k;
    if (pc_kube_conn_new(D.client, &k) != 0)
        return NULL;
    pthread_mutex_lock(&D.rmu);
    while (!D.rstop) {
        int64_t now = pc_now_ns();
        recycle_item *it = D.rhead;
        if (!it || it->due_ns > now) {
            if (it) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (it->due_ns - now);
                ts = (struct timespec){at / 1000000000, at % 1000000000};
                pthread_cond_timedwait(&D.rcv, &D.rmu, &ts);
            } else {
                pthread_cond_wait(&D.rcv, &D.rmu);
            }
            continue;
        }
        D.rhead = it->next;
        if (!D.rhead)
            D.rtail = NULL;
        pthread_mutex_unlock(&D.rmu);
        it->next = NULL;
        bool done = recycle_one(k, it);
        pthread_mutex_lock(&D.rmu);
        if (done) {
            atomic_fetch_add_explicit(&D.recycled, 1, memory_order_relaxed);
            free(it);
        } else { /* not settled yet: again in 2 ms, at the back (the order is not a promise) */
            it->due_ns = pc_now_ns() + 2000000;
            if (D.rtail)
                D.rtail->next = it;
            else
                D.rhead = it;
            D.rtail = it;
        }
    }
    pthread_mutex_unlock(&D.rmu);
    pc_kube_conn_free(k);
    return NULL;
}

static void stop_recycler(void)
{
    if (!D.recycler_started)
        return;
    pthread_mutex_lock(&D.rmu);
    D.rstop = true;
    pthread_cond_signal(&D.rcv);
    pthread_mutex_unlock(&D.rmu);
    pthread_join(D.recycler, NULL);
    D.recycler_started = false;
    while (D.rhead) {
        recycle_item *it = D.rhead;
        D.rhead = it->next;
        free(it);
    }
}

/* ---- kapi-sim ------------------------------------------------------------------------------ */

/* The pool's pods, loaded by kapi-sim at start: Idle from the start (the kubelet makes them
 * Running and Ready after its warm-up), one container "sandbox". */
static int write_pods(const char *path, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs("[{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"demo\"}}", f);
    for (int i = 0; i < n; i++)
        fprintf(f,
                ",{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"sandboxes-%d\","
                "\"namespace\":\"demo\",\"labels\":{\"podclaim.io/pool\":\"sandboxes\","
                "\"podclaim.io/phase\":\"Idle\"}},\"spec\":{\"containers\":[{\"name\":\"sandbox\","
                "\"image\":\"registry.local/podclaim/sandbox:latest\"}]}}",
                i);
    fputs("]", f);
    return fclose(f) == 0 ? 0 : -EIO;
}

static int start_kapi_sim(const options *o)
{
    char port_file[64], conflict[32];
    snprintf(port_file, sizeof(port_file), "/tmp/podclaim-demo.%d.port", (int)getpid());
    snprintf(D.sim_log, sizeof(D.sim_log), "/tmp/podclaim-demo.%d.kapi-sim.log", (int)getpid());
    snprintf(D.sim_objects, sizeof(D.sim_objects), "/tmp/podclaim-demo.%d.pods.json",
             (int)getpid());
    snprintf(conflict, sizeof(conflict), "%g", o->conflict_rate);
    unlink(port_file);
    int werr = write_pods(D.sim_objects, o->pods);
    if (werr) {
        fprintf(stderr, "podclaim-demo: %s: %s\n", D.sim_objects, strerror(-werr));
        return werr;
    }
    char *argv[] = {(char *)o->kapi_sim,
                    "--listen",
                    "127.0.0.1:0",
                    "--port-file",
                    port_file,
                    "--objects",
                    D.sim_objects,
                    "--warmup-ms",
                    "100",
                    "--restart-ms",
                    "20",
                    "--conflict-rate",
                    conflict,
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, D.sim_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int err = posix_spawn(&D.sim_pid, o->kapi_sim, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        fprintf(stderr, "podclaim-demo: cannot start %s: %s (build it, or pass --kapi-sim PATH)\n",
                o->kapi_sim, strerror(err));
        D.sim_pid = 0;
        return -err;
    }
    /* kapi-sim renames the port file into place once it is complete. Poll it: the only
     * thing to wait on here is another process starting up. */
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(port_file, "r");
        int port = 0;
        if (f && fscanf(f, "%d", &port) == 1 && port > 0) {
            fclose(f);
            unlink(port_file);
            snprintf(D.server, sizeof(D.server), "http://127.0.0.1:%d", port);
            return 0;
        }
        if (f)
            fclose(f);
        if (waitpid(D.sim_pid, NULL, WNOHANG) == D.sim_pid) {
            fprintf(stderr, "podclaim-demo: kapi-sim exited at start; see %s\n", D.sim_log);
            D.sim_pid = 0;
            return -ECHILD;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "podclaim-demo: kapi-sim did not report its port within 10 s\n");
    return -ETIMEDOUT;
}

static void stop_kapi_sim(void)
{
    if (D.sim_pid > 0) {
        kill(D.sim_pid, SIGTERM);
        waitpid(D.sim_pid, NULL, 0);
        D.sim_pid = 0;
    }
    if (D.sim_objects[0])
        unlink(D.sim_objects);
}

static int setup_kapi(const options *o, pc_pool_config *pc)
{
    char err_msg[512];
    int err = start_kapi_sim(o);
    if (err)
        return err;
    pc_kube_options ko = {.server = D.server, .default_namespace = "demo"};
    if ((err = pc_kube_client_new(&ko, &D.client, err_msg, sizeof(err_msg))) != 0 ||
        (err = pc_kube_client_check(D.client, err_msg, sizeof(err_msg))) != 0) {
        fprintf(stderr, "podclaim-demo: API client for %s: %s\n", D.server, err_msg);
        return err;
    }
    pc_kube_backend_options bo = {.max_inflight = 1024};
    if ((err = pc_kube_backend_new(D.client, &bo, &D.kb, err_msg, sizeof(err_msg))) != 0) {
        fprintf(stderr, "podclaim-demo: CAS backend: %s\n", err_msg);
        return err;
    }
    pc_informer_config ic = {.client = D.client, .namespace_ = "demo", .pool = "sandboxes"};
    if ((err = pc_informer_new(&ic, &D.informer)) != 0) {
        fprintf(stderr, "podclaim-demo: informer: %s\n", pc_strerror(err));
        return err;
    }
    pc->resync = pc_informer_resync_hook;
    pc->resync_arg = D.informer;
    /* kapi-sim's injected 409s write nothing, so no new version releases the reservation:
     * the pod comes back when it expires. Informer lag here is milliseconds; 1 s is ample. */
    pc->reservation_ttl_ns = 1000000000;
    if ((err = pc_pool_new(pc, pc_kube_backend_iface(D.kb), &D.pool)) != 0 ||
        (err = pc_pool_start(D.pool)) != 0) {
        fprintf(stderr, "podclaim-demo: pool: %s\n", pc_strerror(err));
        return err;
    }
    pc_informer_set_pool(D.informer, D.pool);
    if ((err = pc_informer_start(D.informer)) != 0) {
        fprintf(stderr, "podclaim-demo: informer start: %s\n", pc_strerror(err));
        return err;
    }
    D.hold_ns = (int64_t)o->hold_ms * 1000000;
    pthread_mutex_init(&D.rmu, NULL);
    pthread_cond_init(&D.rcv, NULL);
    if ((err = pthread_create(&D.recycler, NULL, recycler_main, NULL)) != 0) {
        fprintf(stderr, "podclaim-demo: recycler thread: %s\n", strerror(err));
        return -err;
    }
    D.recycler_started = true;
    printf("podclaim demo: kapi-sim at %s (log %s), SandboxPool demo/sandboxes with %d pods\n",
           D.server, D.sim_log, o->pods);
    /* The pool's pods turn Ready after kapi-sim's kubelet warm-up. */
    int64_t until = pc_now_ns() + 30 * (int64_t)1000000000;
    while (pc_pool_snapshot(D.pool).idle_ready < (uint64_t)o->pods && pc_now_ns() < until)
        sleep_ms(10);
    pc_snapshot s = pc_pool_snapshot(D.pool);
    if (!pc_informer_has_synced(D.informer) || s.idle_ready < (uint64_t)o->pods) {
        fprintf(stderr, "podclaim-demo: only %llu of %d pods became idle within 30 s\n",
                (unsigned long long)s.idle_ready, o->pods);
        return -ETIMEDOUT;
    }
    printf("informer synced; %llu idle pods in the ready-queue\n"
           "%ld claims from %d threads (window %d each), pods recycled %d ms after a claim, "
           "%.0f%% injected conflicts\n\n",
           (unsigned long long)s.idle_ready, o->claims, o->threads, o->window, o->hold_ms,
           o->conflict_rate * 100);
    return 0;
}

/* kapi-sim's log of every Idle -> other transition: (pod, idle version) must be unique. */
static size_t verify_kapi(size_t *won, long *ours)
{
    *won = 0;
    *ours = 0;
    pc_kube_conn *conn;
    if (pc_kube_conn_new(D.client, &conn) != 0)
        return 0;
    pc_kube_response r = {0};
    size_t dup = 0;
    if (pc_kube_conn_request(conn, "GET", "/sim/claims", NULL, NULL, 0, &r) != 0 ||
        r.status != 200) {
        fprintf(stderr, "podclaim-demo: GET /sim/claims: %s\n", r.error);
        goto out;
    }
    json_error_t je;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &je);
    json_t *claims = json_object_get(doc, "claims");
    if (!json_is_array(claims)) {
        fprintf(stderr, "podclaim-demo: /sim/claims: unexpected answer (%s)\n", je.text);
        json_decref(doc);
        goto out;
    }
    size_t n = json_array_size(claims);
    char(*keys)[PC_NAME_MAX + PC_RV_MAX] = calloc(n ? n : 1, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(claims, i);
        snprintf(keys[i], sizeof(keys[i]), "%s@%s",
                 json_string_value(json_object_get(c, "pod")) ?: "?",
                 json_string_value(json_object_get(c, "idleResourceVersion")) ?: "?");
        const char *id = json_string_value(json_object_get(c, "claimId"));
        *ours += id && strncmp(id, "sandboxes-", 10) == 0;
    }
    dup = count_duplicates(keys, n);
    *won = n;
    free(keys);
    json_decref(doc);
out:
    pc_kube_response_fini(&r);
    pc_kube_conn_free(conn);
    return dup;
}

static void teardown(void)
{
    if (D.informer)
        pc_informer_stop(D.informer);
    pc_pool_free(D.pool); /* drains: every claim answered, every CAS reported */
    stop_recycler();      /* after the pool: no callback queues a pod any more */
    pc_informer_free(D.informer);
    if (D.kb)
        pc_kube_backend_free(D.kb);
    pc_kube_client_free(D.client);
    stop_kapi_sim();
    pc_membackend_free(D.mem);
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: podclaim-demo [options]\n"
               "Runs the podclaim scheduler under load and reports what it did.\n\n"
               "  --backend B        kapi-sim (default: start kapi-sim, claim its pods over HTTP)\n"
               "                     or memory (the in-memory backend, simulated latency)\n"
               "  --claims N         claims in total (default 20000 kapi-sim, 200000 memory)\n"
               "  --threads T        producer threads (default 8)\n"
               "  --window W         claims each producer keeps outstanding (default 64 kapi-sim,\n"
               "                     256 memory)\n"
               "  --pods P           warm pods in the pool (default 256 kapi-sim, 512 memory)\n"
               "  --conflict-rate R  injected CAS conflicts, 0..1 (default 0.01 kapi-sim, 0.05 "
               "memory)\n"
               "  --workers N        ignored (the pool's scheduler starts every CAS itself)\n"
               "  --hold-ms H        kapi-sim: the demo's recycler (the pool controller's part)\n"
               "                     turns a claimed pod Idle again H ms later (default 20)\n"
               "  --kapi-sim PATH    kapi-sim: the binary (default: the one built with this demo)\n"
               "  --latency-ms L     memory: simulated API latency per CAS (default 1.0)\n"
               "  --jitter-ms J      memory: + uniform jitter (default 1.0)\n"
               "  --help\n");
}

static int parse(int argc, char **argv, options *o)
{
    static const struct option longs[] = {{"claims", 1, 0, 'c'},
                                          {"threads", 1, 0, 't'},
                                          {"window", 1, 0, 'w'},
                                          {"pods", 1, 0, 'p'},
                                          {"latency-ms", 1, 0, 'l'},
                                          {"jitter-ms", 1, 0, 'j'},
                                          {"conflict-rate", 1, 0, 'r'},
                                          {"workers", 1, 0, 'W'},
                                          {"hold-ms", 1, 0, 'H'},
                                          {"backend", 1, 0, 'b'},
                                          {"kapi-sim", 1, 0, 'k'},
                                          {"help", 0, 0, 'h'},
                                          {0, 0, 0, 0}};
    int ch, idx = 0;
    bool set_claims = false, set_window = false, set_pods = false, set_conflicts = false;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", longs, &idx)) != -1) {
        if (ch == 'b') {
            if (strcmp(optarg, "memory") != 0 && strcmp(optarg, "kapi-sim") != 0) {
                fprintf(stderr, "podclaim-demo: --backend: memory or kapi-sim, not %s\n", optarg);
                return -1;
            }
            o->memory = strcmp(optarg, "memory") == 0;
            continue;
        }
        if (ch == 'k') {
            o->kapi_sim = optarg;
            continue;
        }
        double v = optarg ? strtod(optarg, &end) : 0;
        if (optarg && (*end || end == optarg)) {
            fprintf(stderr, "podclaim-demo: --%s: not a number: %s\n", longs[idx].name, optarg);
            return -1;
        }
        switch (ch) {
        case 'c':
            o->claims = (long)v;
            set_claims = true;
            break;
        case 't':
            o->threads = (int)v;
            break;
        case 'w':
            o->window = (int)v;
            set_window = true;
            break;
        case 'p':
            o->pods = (int)v;
            set_pods = true;
            break;
        case 'l':
            o->latency_ms = v;
            break;
        case 'j':
            o->jitter_ms = v;
            break;
        case 'r':
            o->conflict_rate = v;
            set_conflicts = true;
            break;
        case 'W':
            o->workers = (int)v;
            break;
        case 'H':
            o->hold_ms = (int)v;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "podclaim-demo: unexpected argument: %s\n", argv[optind]);
        return -1;
    }
    if (!set_conflicts)
        o->conflict_rate = o->memory ? 0.05 : 0.01;
    if (o->memory) {
        o->claims = set_claims ? o->claims : 200000;
        o->window = set_window ? o->window : 256;
        o->pods = set_pods ? o->pods : 512;
    }
    if (o->claims < 1 || o->threads < 1 || o->window < 1 || o->pods < 1 || o->latency_ms < 0 ||
        o->jitter_ms < 0 || o->conflict_rate < 0 || o->conflict_rate > 1 || o->workers < 1 ||
        o->hold_ms < 0) {
        fprintf(stderr, "podclaim-demo: a value is out of range (see --help)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.claims = 20000,
                 .threads = 8,
                 .window = 64,
                 .pods = 256,
                 .latency_ms = 1.0,
                 .jitter_ms = 1.0,
                 .conflict_rate = 0.05,
                 .hold_ms = 20,
                 .workers = 2,
                 .kapi_sim = PODCLAIM_KAPI_SIM_PATH};
    if (parse(argc, argv, &o) != 0)
        return 2;
    use_memory = o.memory;
    signal(SIGPIPE, SIG_IGN);

    pc_pool_config pc = {.namespace_ = "demo",
                         .name = "sandboxes",
                         .team = "platform",
                         .user = "demo",
                         .env = "local",
                         .max_inflight = 1024,
                         .cas_workers = (uint32_t)o.workers};
    latencies = calloc((size_t)o.claims, sizeof(*latencies));
    if ((o.memory ? setup_memory(&o, &pc) : setup_kapi(&o, &pc)) != 0) {
        teardown();
        return 1;
    }

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
    uint64_t cas[PC_CAS_OUTCOME_COUNT] = {0};
    if (o.memory) {
        pc_membackend_outcomes(D.mem, cas);
    } else {
        /* The pool counts the outcomes its CAS calls reported; read them from its metrics. */
        static char text[65536];
        pc_pool_metrics_render(D.pool, text, sizeof(text));
        for (int k = 0; k < PC_CAS_OUTCOME_COUNT; k++) {
            char needle[64];
            snprintf(needle, sizeof(needle), "outcome=\"%s\"} ", pc_cas_outcome_name(k));
            char *at = strstr(text, needle);
            cas[k] = at ? strtoull(at + strlen(needle), NULL, 10) : 0;
        }
    }
    printf("\nCAS outcomes:");
    for (int k = 0; k < PC_CAS_OUTCOME_COUNT; k++)
        printf(" %s=%llu", pc_cas_outcome_name(k), (unsigned long long)cas[k]);
    printf("\n");

    size_t won = 0, dup;
    long ours = 0;
    if (o.memory) {
        dup = verify_memory(&won);
        printf("idle periods won (backend log): %zu, won twice: %zu\n", won, dup);
    } else {
        dup = verify_kapi(&won, &ours);
        printf("idle periods won (kapi-sim /sim/claims): %zu (by this demo's claims: %ld), "
               "won twice: %zu\n",
               won, ours, dup);
        printf("pods recycled by the demo's recycler: %ld (409s from the kubelet's restarts: "
               "%ld)\n",
               atomic_load(&D.recycled), atomic_load(&D.recycle_conflicts));
    }
    pc_snapshot s = pc_pool_snapshot(D.pool);
    printf("final snapshot: idle_ready=%llu queue_len=%llu reserved=%llu inflight_cas=%llu\n",
           (unsigned long long)s.idle_ready, (unsigned long long)s.queue_len,
           (unsigned long long)s.reserved, (unsigned long long)s.inflight_cas);

    teardown();
    for (int i = 0; i < o.threads; i++) {
        free(prods[i].slots);
        free(prods[i].free);
        sem_destroy(&prods[i].free_slots);
    }
    free(prods);
    free(tids);
    free(latencies);
    return dup ? 1 : 0;
}
