/* bench_kube: the Kubernetes side of podclaim against kapi-sim, each figure beside a
 * same-run baseline.
 *
 * Flow measured: kapi-sim -> informer -> pool -> kube CAS backend -> kapi-sim.
 *
 *  1. initial sync: informer LIST of N pods until has_synced, vs the raw paged GETs of the
 *     same pages on the same kind of connection (no parsing): pods/s, MB/s, ratio.
 *  2. claims/s end to end (enqueue -> pool -> PATCH -> callback) for N idle pods, vs a raw
 *     PATCH loop on curl multi with the same client settings, concurrency and connection
 *     limit on N other pods: the ratio is the figure (goal >= 0.9).
 *  3. idle -> claimable: pods cycling Idle -> claimed -> Idle with claims always waiting;
 *     from the arrival of the watch chunk carrying "pod X is Idle at rv R" to the informer's
 *     offer having returned, and to the CAS for (X, R) starting: p50/p99.
 *
 * Usage: bench_kube [--pods N] [--claims-pods N] [--concurrency C] [--connections K]
 *                   [--rounds R] [--latency-s S]
 * Defaults: 10,000 pods to sync, 10,000 pods per side of 2. in 10 interleaved rounds, a 10 s
 * window for 3 (about a minute in all on the 2-core VM). BENCH_KUBE_THREADS=1 adds each
 * thread's CPU and context switches per request to 2.
 */
#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include "ksim.h"
#include "kube_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- kapi-sim launcher -------------------------------------------------------------------
 *
 * The tests' fixture (tests/kube/ksim.c): kapi-sim plays the kubelet only, so for each --pool the
 * fixture's pod-filler makes the pods and recycles claimed ones (--hold-ms, --stop-ms), as
 * kapi-sim's own controller did before issue 13. */

typedef ksim sim;

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int sim_start(sim *s, const char *const *args)
{
    return ksim_start(s, args, false, NULL, NULL);
}

static void sim_stop(sim *s)
{
    ksim_stop(s);
}

static json_t *get_json(pc_kube_conn *k, const char *method, const char *path, const char *body)
{
    pc_kube_response r;
    json_t *j = NULL;
    if (pc_kube_conn_request(k, method, path, body ? "application/json" : NULL, body,
                             body ? strlen(body) : 0, &r) == 0 &&
        r.status < 300)
        j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
    pc_kube_response_fini(&r);
    return j;
}

/* Wait until the pool's pods on the server number n and are all Idle. */
static int wait_idle(pc_kube_conn *k, const char *ns, const char *pool, size_t n)
{
    char path[256];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", ns, pool);
    for (int i = 0; i < 600; i++) {
        json_t *l = get_json(k, "GET", path, NULL);
        size_t idle = 0, j;
        json_t *p;
        json_array_foreach(json_object_get(l, "items"), j, p)
        {
            const char *ph = json_string_value(
                    json_object_get(json_object_get(json_object_get(p, "metadata"), "labels"),
                                    "podclaim.io/phase"));
            idle += ph && strcmp(ph, "Idle") == 0;
        }
        json_decref(l);
        if (idle >= n)
            return 0;
        pause_ms(100);
    }
    return -1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of n sorted values (the mean of the middle two when n is even). */
static double median_sorted(const double *v, int n)
{
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double pct(int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof(*v), cmp_i64);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i];
}

/* ---- 1. initial sync --------------------------------------------------------------------- */

static void bench_sync(pc_kube_client *c, size_t pods)
{
    pc_kube_conn *k;
    pc_kube_conn_new(c, &k);
    /* baseline: the same paged GETs, bodies fetched and dropped */
    double raw_s = 1e9, raw_mb = 0;
    for (int rep = 0; rep < 3; rep++) {
        int64_t t0 = pc_now_ns();
        char cont[1024] = "", path[2048];
        size_t bytes = 0;
        for (;;) {
            int n = snprintf(
                    path, sizeof(path),
                    "/api/v1/namespaces/bench/pods?labelSelector=podclaim.io%%2Fpool%%3Dsync"
                    "&limit=500");
            if (cont[0])
                snprintf(path + n, sizeof(path) - (size_t)n, "&continue=%s", cont);
            pc_kube_response r;
            if (pc_kube_conn_request(k, "GET", path, NULL, NULL, 0, &r) || r.status != 200) {
                fprintf(stderr, "raw list: %s\n", r.error);
                pc_kube_response_fini(&r);
                break;
            }
            bytes += r.body_len;
            /* the continue token sits in the first few hundred bytes of the body */
            char *ct = strstr(r.body, "\"continue\":\"");
            cont[0] = '\0';
            if (ct) {
                ct += 12;
                size_t l = strcspn(ct, "\"");
                if (l < sizeof(cont))
                    memcpy(cont, ct, l), cont[l] = '\0';
            }
            pc_kube_response_fini(&r);
            if (!cont[0])
                break;
        }
        double s = (double)(pc_now_ns() - t0) / 1e9;
        if (s < raw_s)
            raw_s = s, raw_mb = (double)bytes / 1e6;
    }
    double inf_s = 1e9, inf_mb = 0;
    for (int rep = 0; rep < 3; rep++) {
        pc_informer_config ic = {.client = c, .namespace_ = "bench", .pool = "sync"};
        pc_informer *inf;
        pc_informer_new(&ic, &inf);
        pc_informer_start(inf);
        while (!pc_informer_has_synced(inf))
            pause_ms(1);
        pc_informer_stats st;
        pc_informer_stats_read(inf, &st);
        double s = (double)(st.synced_at_ns - st.started_at_ns) / 1e9;
        if (s < inf_s)
            inf_s = s, inf_mb = (double)st.list_bytes / 1e6;
        pc_informer_free(inf);
    }
    printf("%-44s %12s %12s %10s\n", "initial sync (best of 3)", "pods/s", "MB/s", "seconds");
    printf("%-44s %12.0f %12.1f %10.3f\n", "  raw paged GET (no parsing)", (double)pods / raw_s,
           raw_mb / raw_s, raw_s);
    printf("%-44s %12.0f %12.1f %10.3f\n", "  informer LIST + parse + cache + offers",
           (double)pods / inf_s, inf_mb / inf_s, inf_s);
    printf("%-44s %12.2f\n", "  ratio informer / raw", raw_s / inf_s);
    pc_kube_conn_free(k);
}

/* ---- 2. claims/s vs raw PATCH ------------------------------------------------------------ */

/* What one phase cost, beside its wall time: CPU of this process (the client side: the
 * pool's threads, the informers, the raw loop) and of kapi-sim (the server side), and this
 * process's context switches. Not the figure (the ratio of rates is): they say where the
 * time of a slow side went. This process's CPU comes from getrusage (microseconds);
 * kapi-sim's and the per-thread split from /proc in clock ticks (10 ms), a few us per
 * request either way over 10 rounds of 1,000. */
typedef struct cost {
    double cpu_s, srv_s;
    long csw, icsw;
} cost;

static pid_t srv_pid;

static double srv_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)srv_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* fields 14 and 15 (utime, stime, clock ticks) after the ")" that ends the comm */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* BENCH_KUBE_THREADS=1: also the CPU of each of this process's threads per phase, summed by
 * thread name (a diagnosis aid: which thread a side's cost is in). */
#define TH_MAX 16
typedef struct thcost {
    char name[TH_MAX][20];
    double s[3][TH_MAX];
    double cs[3][TH_MAX]; /* context switches, voluntary + not */
    int n;
} thcost;

static bool th_on;
static thcost th;

/* CPU seconds per thread name now, into out[] (indexes into th.name), then the context
 * switches into out[TH_MAX + i]. */
static void th_now(double out[2 * TH_MAX])
{
    memset(out, 0, sizeof(double) * 2 * TH_MAX);
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *l = strchr(buf, '('), *r = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (!l || !r ||
            sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            continue;
        char name[20];
        snprintf(name, sizeof(name), "%.*s", (int)(r - l - 1), l + 1);
        int i = 0;
        while (i < th.n && strcmp(th.name[i], name) != 0)
            i++;
        if (i == th.n && th.n < TH_MAX)
            snprintf(th.name[th.n++], sizeof(th.name[0]), "%s", name);
        if (i >= TH_MAX)
            continue;
        out[i] += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        if ((f = fopen(path, "r"))) {
            char line[256];
            long v;
            while (fgets(line, sizeof(line), f))
                if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
                    sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1)
                    out[TH_MAX + i] += (double)v;
            fclose(f);
        }
    }
    if (d)
        closedir(d);
}

static void th_add(int phase, const double *a, const double *b)
{
    for (int i = 0; i < TH_MAX; i++) {
        th.s[phase][i] += b[i] - a[i];
        th.cs[phase][i] += b[TH_MAX + i] - a[TH_MAX + i];
    }
}

static cost cost_now(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (cost){(double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
                          (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6,
                  srv_cpu_s(), u.ru_nvcsw, u.ru_nivcsw};
}

static void cost_add(cost *sum, cost a, cost b)
{
    sum->cpu_s += b.cpu_s - a.cpu_s;
    sum->srv_s += b.srv_s - a.srv_s;
    sum->csw += b.csw - a.csw;
    sum->icsw += b.icsw - a.icsw;
}

typedef struct rawx {
    CURL *e;
    struct curl_slist *h;
    char url[512];
    char body[1024];
    char err[CURL_ERROR_SIZE];
} rawx;

/* What claims write (bench_claims uses the same): labels, annotations, image. */
static const pc_kv claim_labels[] = {{"owner", "bench"}};
static const pc_kv claim_ann[] = {{"bench", "e2e"}};
static const pc_kv claim_images[] = {{"sandbox", "registry.local/podclaim/sandbox:latest"}};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Point handle r at pod names[i] ("name@rv"). claimlike: the very body a claim sends
 * (pc_kube_patch_body: phase -> Running, precondition on rv), so the server does the same work
 * as for a claim (precondition check, claim log, watch fan-out). Otherwise a body of the same
 * shape that keeps the phase Idle, so the simulated controller has nothing to do. */
static void raw_submit(CURLM *m, pc_kube_client *c, rawx *r, char **names, size_t i, bool claimlike)
{
    char name[PC_NAME_MAX];
    const char *at = strchr(names[i], '@');
    snprintf(name, sizeof(name), "%.*s", (int)(at - names[i]), names[i]);
    snprintf(r->url, sizeof(r->url), "%s/api/v1/namespaces/bench/pods/%s", pc_kube_client_server(c),
             name);
    if (claimlike) {
        char id[32], err[128];
        snprintf(id, sizeof(id), "raw-%zu", i);
        pc_claim_opts o = {claim_images, 1, claim_labels, 1, claim_ann, 1, NULL};
        pc_cas_request req = {.pod = {"bench", name, NULL, at + 1},
                              .opts = &o,
                              .target_phase = "Running",
                              .claim_id = id,
                              .claimed_at_unix_ns = pc__kube_real_ns()};
        if (pc_kube_patch_body(&req, r->body, sizeof(r->body), err, sizeof(err)) < 0)
            fprintf(stderr, "raw body: %s\n", err);
    } else {
        snprintf(r->body, sizeof(r->body),
                 "{\"metadata\":{\"labels\":{\"podclaim.io/phase\":\"Idle\",\"owner\":\"bench\"},"
                 "\"annotations\":{\"podclaim.io/raw-id\":\"raw-%zu\",\"bench\":\"raw\"}},"
                 "\"spec\":{\"containers\":[{\"name\":\"sandbox\",\"image\":"
                 "\"registry.local/podclaim/sandbox:latest\"}]}}",
                 i);
    }
    curl_easy_setopt(r->e, CURLOPT_URL, r->url);
    curl_easy_setopt(r->e, CURLOPT_POSTFIELDS, r->body);
    curl_multi_add_handle(m, r->e);
}

/* N PATCHes on the pods of `names`, `conc` in flight, through one multi with `conns`
 * connections, every handle set up by the client's own pc__kube_easy_setup. */
static double raw_patch(pc_kube_client *c, char **names, size_t n, uint32_t conc, uint32_t conns,
                        bool claimlike, size_t *fails)
{
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns);
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)conns);
    rawx *x = calloc(conc, sizeof(*x));
    for (uint32_t i = 0; i < conc; i++) {
        x[i].e = curl_easy_init();
        pc__kube_easy_setup(c, x[i].e, x[i].err);
        x[i].h = pc__kube_headers(c, "application/strategic-merge-patch+json", NULL);
        curl_easy_setopt(x[i].e, CURLOPT_HTTPHEADER, x[i].h);
        curl_easy_setopt(x[i].e, CURLOPT_CUSTOMREQUEST, "PATCH");
        curl_easy_setopt(x[i].e, CURLOPT_PRIVATE, (char *)&x[i]);
        curl_easy_setopt(x[i].e, CURLOPT_PIPEWAIT, 1L);
        curl_easy_setopt(x[i].e, CURLOPT_WRITEFUNCTION, discard);
    }
    size_t next = 0, done = 0;
    *fails = 0;
    int64_t t0 = pc_now_ns();
    for (uint32_t i = 0; i < conc && next < n; i++)
        raw_submit(m, c, &x[i], names, next++, claimlike);
    while (done < n) {
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            rawx *r;
            long st = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &st);
            if (msg->data.result != CURLE_OK || st != 200)
                (*fails)++;
            curl_multi_remove_handle(m, r->e);
            done++;
            if (next < n)
                raw_submit(m, c, r, names, next++, claimlike);
        }
        if (done < n)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double s = (double)(pc_now_ns() - t0) / 1e9;
    for (uint32_t i = 0; i < conc; i++) {
        curl_easy_cleanup(x[i].e);
        curl_slist_free_all(x[i].h);
    }
    free(x);
    curl_multi_cleanup(m);
    return s;
}

typedef struct crun {
    pc_claim *claims;
    size_t n;
    _Atomic size_t done;
    _Atomic size_t ok;
    /* The round's end: the callback that makes done reach `target` signals `cv`, so the
     * bench's main thread sleeps through the round instead of polling every millisecond
     * (a wake-up per ms on the claims side only: B's loop does not poll). */
    _Atomic size_t target;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} crun;

static void on_claim(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    crun *cr = arg;
    if (r->status == PC_CLAIM_OK)
        atomic_fetch_add_explicit(&cr->ok, 1, memory_order_relaxed);
    /* release: main reads nothing else, but keeps the count honest across threads */
    size_t d = atomic_fetch_add_explicit(&cr->done, 1, memory_order_release) + 1;
    if (d == atomic_load_explicit(&cr->target, memory_order_acquire)) {
        pthread_mutex_lock(&cr->mu);
        pthread_cond_signal(&cr->cv);
        pthread_mutex_unlock(&cr->mu);
    }
}

static char **pod_names(pc_kube_conn *k, const char *pool, size_t *n)
{
    char path[256];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/bench/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", pool);
    json_t *l = get_json(k, "GET", path, NULL);
    json_t *items = json_object_get(l, "items");
    char **names = calloc(json_array_size(items) + 1, sizeof(char *));
    size_t i;
    json_t *p;
    json_array_foreach(items, i, p)
    {
        json_t *md = json_object_get(p, "metadata");
        char nrv[PC_NAME_MAX + PC_RV_MAX + 2];
        snprintf(nrv, sizeof(nrv), "%s@%s", json_string_value(json_object_get(md, "name")),
                 json_string_value(json_object_get(md, "resourceVersion")));
        names[i] = strdup(nrv);
    }
    *n = json_array_size(items);
    json_decref(l);
    return names;
}

static void bench_claims(pc_kube_client *c, uint32_t conc, uint32_t conns, int rounds)
{
    pc_kube_conn *k;
    pc_kube_conn_new(c, &k);
    size_t nraw, nrawa, ne2e;
    char **raw = pod_names(k, "raw", &nraw);
    char **rawa = pod_names(k, "rawa", &nrawa);
    char **e2e = pod_names(k, "e2e", &ne2e);

    pc_kube_backend_options bo = {.max_inflight = conc, .max_connections = conns};
    pc_kube_backend *kb;
    char err[256];
    if (pc_kube_backend_new(c, &bo, &kb, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    pc_informer_config ic = {.client = c, .namespace_ = "bench", .pool = "e2e"};
    pc_informer *inf;
    pc_informer_new(&ic, &inf);
    pc_pool_config pc = {.namespace_ = "bench",
                         .name = "e2e",
                         .max_inflight = conc,
                         .resync = pc_informer_resync_hook,
                         .resync_arg = inf};
    pc_pool *pool;
    pc_pool_new(&pc, pc_kube_backend_iface(kb), &pool);
    pc_informer_set_pool(inf, pool);
    pc_pool_start(pool);
    pc_informer_start(inf);
    while (pc_pool_snapshot(pool).idle_ready < ne2e)
        pause_ms(5);

    /* Baseline A: raw PATCHes on pods nobody watches, phase kept Idle (cheapest request).
     * Baseline B: the very PATCH a claim sends (precondition, phase -> Running) on pods an
     * informer watches, so the server does for each request exactly what it does for a claim
     * (claim log, watch fan-out): B is the figure's denominator. The machine is shared, so
     * the three run interleaved in `rounds` rounds and the median of the per-round ratios is
     * the figure (one burst of someone else's build then spoils one round, not the result). */
    pc_informer_config wc = {.client = c, .namespace_ = "bench", .pool = "raw"};
    pc_informer *watcher;
    pc_informer_new(&wc, &watcher);
    pc_informer_start(watcher);
    while (!pc_informer_has_synced(watcher))
        pause_ms(1);
    crun cr = {.claims = calloc(ne2e, sizeof(pc_claim)),
               .n = ne2e,
               .target = SIZE_MAX,
               .mu = PTHREAD_MUTEX_INITIALIZER,
               .cv = PTHREAD_COND_INITIALIZER};
    double t_a = 0, t_b = 0, t_e = 0, *ra = calloc((size_t)rounds, sizeof(double)),
           *rb = calloc((size_t)rounds, sizeof(double));
    size_t fa = 0, fb = 0, done_a = 0, done_b = 0, done_e = 0;
    cost ca = {0}, cb = {0}, ce = {0};
    for (int round = 0; round < rounds; round++) {
        size_t na = nrawa / (size_t)rounds, nb = nraw / (size_t)rounds, ne = ne2e / (size_t)rounds,
               f;
        double h0[2 * TH_MAX], h1[2 * TH_MAX], h2[2 * TH_MAX], h3[2 * TH_MAX];
        if (th_on)
            th_now(h0);
        cost c0 = cost_now();
        double sa = raw_patch(c, rawa + done_a, na, conc, conns, false, &f);
        cost c1 = cost_now();
        if (th_on)
            th_now(h1);
        fa += f;
        double sb = raw_patch(c, raw + done_b, nb, conc, conns, true, &f);
        cost c2 = cost_now();
        if (th_on)
            th_now(h2);
        fb += f;
        atomic_store_explicit(&cr.target, done_e + ne, memory_order_release);
        int64_t t0 = pc_now_ns();
        for (size_t i = done_e; i < done_e + ne; i++) {
            pc_claim_init(&cr.claims[i], 0, on_claim, &cr);
            cr.claims[i].opts =
                    (pc_claim_opts){claim_images, 1, claim_labels, 1, claim_ann, 1, NULL};
            while (pc_pool_enqueue(pool, &cr.claims[i]) == -EAGAIN)
                pause_ms(1);
        }
        pthread_mutex_lock(&cr.mu);
        while (atomic_load_explicit(&cr.done, memory_order_acquire) < done_e + ne)
            pthread_cond_wait(&cr.cv, &cr.mu);
        pthread_mutex_unlock(&cr.mu);
        double se = (double)(pc_now_ns() - t0) / 1e9;
        cost c3 = cost_now();
        if (th_on) {
            th_now(h3);
            th_add(0, h0, h1);
            th_add(1, h1, h2);
            th_add(2, h2, h3);
        }
        cost_add(&ca, c0, c1);
        cost_add(&cb, c1, c2);
        cost_add(&ce, c2, c3);
        ra[round] = ((double)ne / se) / ((double)na / sa);
        rb[round] = ((double)ne / se) / ((double)nb / sb);
        t_a += sa, t_b += sb, t_e += se;
        done_a += na, done_b += nb, done_e += ne;
    }
    pc_informer_free(watcher);
    pc_kube_backend_stats bs;
    pc_kube_backend_stats_read(kb, &bs);

    char title[64];
    snprintf(title, sizeof(title), "claims vs raw PATCH (%d interleaved rounds)", rounds);
    printf("\n%-44s %12s %12s %10s\n", title, "per second", "requests", "failures");
    printf("%-44s %12.0f %12zu %10zu\n", "  A raw PATCH loop, unwatched, phase kept",
           (double)done_a / t_a, done_a, fa);
    printf("%-44s %12.0f %12zu %10zu\n", "  B raw claim PATCHes, watched, same body",
           (double)done_b / t_b, done_b, fb);
    printf("%-44s %12.0f %12zu %10zu\n", "  claims end to end (pool + informer + CAS)",
           (double)done_e / t_e, done_e, done_e - atomic_load(&cr.ok));
    qsort(ra, (size_t)rounds, sizeof(double), cmp_dbl);
    qsort(rb, (size_t)rounds, sizeof(double), cmp_dbl);
    printf("%-44s %12.2f   (rounds %.2f .. %.2f)\n", "  ratio claims / A, median",
           median_sorted(ra, rounds), ra[0], ra[rounds - 1]);
    printf("%-44s %12.2f   (rounds %.2f .. %.2f)\n", "  ratio claims / B, median",
           median_sorted(rb, rounds), rb[0], rb[rounds - 1]);
    int ge = 0;
    for (int i = 0; i < rounds; i++)
        ge += rb[i] >= 0.9;
    printf("%-44s %12d   (of %d)\n", "  rounds with claims / B >= 0.90", ge, rounds);
    printf("%-44s %12.2f   (concurrency %u, max connections %u)\n",
           "  API writes (CAS started) per claim",
           (double)bs.started / (double)(done_e ? done_e : 1), conc, conns);

    printf("\n%-44s %12s %12s %10s\n", "cost per request (all rounds)", "client us", "server us",
           "ctx sw");
    const struct {
        const char *what;
        cost *k;
        size_t n;
    } rows[] = {{"  A raw PATCH loop", &ca, done_a},
                {"  B raw claim PATCHes", &cb, done_b},
                {"  claims end to end", &ce, done_e}};
    for (int i = 0; i < 3; i++) {
        double n = (double)(rows[i].n ? rows[i].n : 1);
        printf("%-44s %12.1f %12.1f %10.2f\n", rows[i].what, rows[i].k->cpu_s * 1e6 / n,
               rows[i].k->srv_s * 1e6 / n, (double)(rows[i].k->csw + rows[i].k->icsw) / n);
    }
    for (int i = 0; th_on && i < th.n; i++)
        printf("    thread %-16s us/req A %5.1f B %5.1f claims %5.1f; ctx sw/req A %4.2f B %4.2f "
               "claims %4.2f\n",
               th.name[i], th.s[0][i] * 1e6 / (double)(done_a ? done_a : 1),
               th.s[1][i] * 1e6 / (double)(done_b ? done_b : 1),
               th.s[2][i] * 1e6 / (double)(done_e ? done_e : 1),
               th.cs[0][i] / (double)(done_a ? done_a : 1),
               th.cs[1][i] / (double)(done_b ? done_b : 1),
               th.cs[2][i] / (double)(done_e ? done_e : 1));
    free(ra);
    free(rb);

    pc_informer_stop(inf);
    pc_pool_shutdown(pool);
    pc_kube_backend_free(kb);
    pc_pool_free(pool);
    pc_informer_free(inf);
    for (size_t i = 0; i < nraw; i++)
        free(raw[i]);
    for (size_t i = 0; i < nrawa; i++)
        free(rawa[i]);
    free(rawa);
    for (size_t i = 0; i < ne2e; i++)
        free(e2e[i]);
    free(raw);
    free(e2e);
    free(cr.claims);
    pc_kube_conn_free(k);
}

/* ---- 3. idle -> claimable ---------------------------------------------------------------- */

#define LAT_MAX 200000

typedef struct lat {
    pthread_mutex_t mu;
    json_t *recv; /* "pod@rv" -> received_at_ns (offers seen, waiting for their CAS) */
    int64_t *offer_lat;
    size_t n_offer;
    int64_t *cas_lat;
    size_t n_cas;
    pc_backend_wrapper be; /* the kube backend, its loop hooks passed through */
} lat;

static void lat_observe(void *arg, pc_informer_change ch, const pc_pod_ref *pod, int64_t recv)
{
    lat *l = arg;
    if (ch != PC_INFORMER_OFFER)
        return;
    int64_t now = pc_now_ns();
    char key[400];
    snprintf(key, sizeof(key), "%s@%s", pod->name, pod->resource_version);
    pthread_mutex_lock(&l->mu);
    if (l->n_offer < LAT_MAX)
        l->offer_lat[l->n_offer++] = now - recv;
    json_object_set_new(l->recv, key, json_integer(recv));
    pthread_mutex_unlock(&l->mu);
}

/* A pass-through backend that notes when the CAS of (pod, rv) starts. */
static int lat_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done, void *token)
{
    lat *l = b->impl;
    int64_t now = pc_now_ns();
    char key[400];
    snprintf(key, sizeof(key), "%s@%s", req->pod.name, req->pod.resource_version);
    pthread_mutex_lock(&l->mu);
    json_t *r = json_object_get(l->recv, key);
    if (r && l->n_cas < LAT_MAX) {
        l->cas_lat[l->n_cas++] = now - (int64_t)json_integer_value(r);
        json_object_del(l->recv, key);
    }
    pthread_mutex_unlock(&l->mu);
    return l->be.inner->cas_start(l->be.inner, req, done, token);
}

/* 3.'s claims: each callback enqueues the next one while the window lasts. */
typedef struct lrun {
    pc_pool *pool;
    pc_claim *claims;
    size_t cap;
    _Atomic size_t next;
    _Atomic size_t ok;
    _Atomic bool stop;
} lrun;

static void on_lat_claim(pc_claim *c, const pc_claim_result *r, void *arg);

static void lat_enqueue_next(lrun *r)
{
    if (atomic_load(&r->stop))
        return;
    size_t i = atomic_fetch_add(&r->next, 1);
    if (i >= r->cap)
        return;
    pc_claim_init(&r->claims[i], 0, on_lat_claim, r);
    r->claims[i].deadline_ns = pc_now_ns() + 30000000000LL;
    (void)pc_pool_enqueue(r->pool, &r->claims[i]); /* refused only once shutting down */
}

static void on_lat_claim(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    lrun *lr = arg;
    if (r->status == PC_CLAIM_OK)
        atomic_fetch_add_explicit(&lr->ok, 1, memory_order_relaxed);
    lat_enqueue_next(lr);
}

static void bench_latency(pc_kube_client *c, double seconds)
{
    lat l = {.mu = PTHREAD_MUTEX_INITIALIZER,
             .recv = json_object(),
             .offer_lat = calloc(LAT_MAX, sizeof(int64_t)),
             .cas_lat = calloc(LAT_MAX, sizeof(int64_t))};
    pc_kube_backend *kb;
    char err[256];
    pc_kube_backend_options bo = {.max_inflight = 64};
    pc_kube_backend_new(c, &bo, &kb, err, sizeof(err));
    /* the pool runs the kube backend's loop on its scheduler thread, as without the wrapper */
    l.be.iface = (pc_backend){.cas_start = lat_cas_start, .impl = &l};
    pc_backend_wrap(&l.be, pc_kube_backend_iface(kb));
    pc_informer_config ic = {.client = c,
                             .namespace_ = "bench",
                             .pool = "lat",
                             .observer = lat_observe,
                             .observer_arg = &l};
    pc_informer *inf;
    pc_informer_new(&ic, &inf);
    pc_pool_config pc = {.namespace_ = "bench",
                         .name = "lat",
                         .resync = pc_informer_resync_hook,
                         .resync_arg = inf};
    pc_pool *pool;
    pc_pool_new(&pc, &l.be.iface, &pool);
    pc_informer_set_pool(inf, pool);
    pc_pool_start(pool);
    pc_informer_start(inf);
    while (!pc_informer_has_synced(inf))
        pause_ms(1);

    /* Keep claims waiting: every pod that turns Idle meets a pending claim at once. 64
     * claims out at all times (twice the pods): each callback enqueues the next one, so the
     * bench's main thread sleeps through the window instead of waking every 2 ms to top
     * the queue up (a wake-up that competed with the pool's threads for the 2 cores). */
    lrun lr = {.pool = pool, .claims = calloc(200000, sizeof(pc_claim)), .cap = 200000};
    for (int i = 0; i < 64; i++)
        lat_enqueue_next(&lr);
    pause_ms((int)(seconds * 1000));
    atomic_store(&lr.stop, true);
    pc_informer_stop(inf);
    pc_pool_shutdown(pool);
    pc_kube_backend_free(kb);
    pc_pool_free(pool);
    pc_informer_free(inf);

    pthread_mutex_lock(&l.mu);
    printf("\n%-44s %12s %12s %10s\n", "idle -> claimable (watch chunk arrival ->)", "p50 us",
           "p99 us", "samples");
    size_t no = l.n_offer, nc = l.n_cas;
    double o50 = pct(l.offer_lat, no, 0.50), o99 = pct(l.offer_lat, no, 0.99);
    double c50 = pct(l.cas_lat, nc, 0.50), c99 = pct(l.cas_lat, nc, 0.99);
    printf("%-44s %12.1f %12.1f %10zu\n", "  offer_idle returned (informer)", o50 / 1e3, o99 / 1e3,
           no);
    printf("%-44s %12.1f %12.1f %10zu\n", "  CAS of that pod started (claim waiting)", c50 / 1e3,
           c99 / 1e3, nc);
    printf("%-44s %12zu\n", "  claims served in the window", atomic_load(&lr.ok));
    pthread_mutex_unlock(&l.mu);
    json_decref(l.recv);
    free(l.offer_lat);
    free(l.cas_lat);
    free(lr.claims);
}

int main(int argc, char **argv)
{
    size_t pods = 10000, cpods = 10000; /* kapi-sim takes at most 10,000 per --pool */
    uint32_t conc = 64, conns = 8;
    /* 10 rounds of 1,000 requests per side (the round size of the figures before; twice the
     * rounds, so that a round spoilt by a scheduler hiccup or someone else's burst moves the
     * median less), and a 10 s window for the p99 (~10,000 offers instead of ~3,000). */
    int rounds = 10;
    th_on = getenv("BENCH_KUBE_THREADS") != NULL;
    double lat_s = 10.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pods"))
            pods = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--claims-pods"))
            cpods = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--concurrency"))
            conc = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--connections"))
            conns = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--latency-s"))
            lat_s = atof(argv[i + 1]);
    }
    if (rounds < 1 || (size_t)rounds > cpods) {
        fprintf(stderr, "--rounds: 1 .. --claims-pods\n");
        return 2;
    }
    char p1[64], p2[64], p3[64], p4[64];
    snprintf(p1, sizeof(p1), "bench/sync=%zu", pods);
    snprintf(p2, sizeof(p2), "bench/raw=%zu", cpods);
    snprintf(p4, sizeof(p4), "bench/rawa=%zu", cpods);
    snprintf(p3, sizeof(p3), "bench/e2e=%zu", cpods);
    const char *args[] = {"--pool",      p1,  "--pool",    p2,       "--pool", p3, "--pool", p4,
                          "--warmup-ms", "0", "--hold-ms", "600000", NULL};
    sim s;
    if (sim_start(&s, args)) {
        fprintf(stderr, "kapi-sim did not start\n");
        return 1;
    }
    pc_kube_options o = {.server = s.url};
    pc_kube_client *c;
    char err[256];
    if (pc_kube_client_new(&o, &c, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    pc_kube_conn *k;
    pc_kube_conn_new(c, &k);
    if (wait_idle(k, "bench", "sync", pods) || wait_idle(k, "bench", "e2e", cpods) ||
        wait_idle(k, "bench", "raw", cpods) || wait_idle(k, "bench", "rawa", cpods)) {
        fprintf(stderr, "pods did not become idle\n");
        return 1;
    }
    pc_kube_conn_free(k);
    /* The pods never recycle here (hold 600 s): from now on the fixture's pod-filler would
     * only LIST the 25,000 pods every 100 ms and poll the claim log, loading the machine
     * under both sides of every ratio. */
    ksim_filler_stop(&s);
    srv_pid = s.pid;
    printf("bench_kube: kapi-sim %s, %zu pods to sync, 3 x %zu pods to PATCH\n\n", s.url, pods,
           cpods);
    bench_sync(c, pods);
    bench_claims(c, conc, conns, rounds);
    pc_kube_client_free(c);
    sim_stop(&s);

    /* 3 on its own kapi-sim: pods recycle quickly (hold 2 ms, stop 2 ms) */
    const char *args3[] = {"--pool", "bench/lat=32", "--warmup-ms", "0", "--hold-ms",
                           "2",      "--stop-ms",    "2",           NULL};
    if (sim_start(&s, args3))
        return 1;
    pc_kube_options o3 = {.server = s.url};
    pc_kube_client_new(&o3, &c, err, sizeof(err));
    bench_latency(c, lat_s);
    pc_kube_client_free(c);
    sim_stop(&s);
    return 0;
}
