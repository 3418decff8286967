/* kapi-sim benchmark: keep-alive PATCH throughput and watch fan-out, against a same-run
 * baseline (GET /version round trips on the same connections), all on loopback.
 *
 * The server runs in this process (kapi_sim_core, the same code as the binary) and the load
 * generator is a minimal blocking HTTP/1.1 client on raw sockets, one thread per connection, so
 * that the client costs as little CPU as possible: on 2 shared cores every cycle the client
 * spends is one the server does not get, exactly as for podclaim's own clients.
 *
 * Usage: bench_kapi_sim [seconds-per-row (2)] [connections (4)] [watchers (8)]
 */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int port;

/* Same as kapi-sim's main.c: jansson's benign plain refcount read under ThreadSanitizer. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:json_decref\nrace:json_incref\n";
}

static double now_s(void)
{
    return (double)ks_now_ns() / 1e9;
}

/* CPU seconds used by this process (server + load generator): on a shared machine the CPU cost
 * per operation is steadier than the wall-clock rate, which other tenants' load moves. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) {
            perror("send");
            exit(1);
        }
        b += w;
        n -= (size_t)w;
    }
}

typedef struct conn {
    int fd;
    char buf[1 << 16];
    size_t len; /* bytes in buf */
} conn;

/* Read one response with Content-Length; returns the status, body in c->buf[hdr..]. */
static int read_response(conn *c, const char **body, size_t *blen)
{
    size_t need = 0, hdr = 0;
    for (;;) {
        if (!hdr) {
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (e) {
                hdr = (size_t)(e - c->buf) + 4;
                char *cl = strcasestr(c->buf, "\r\nContent-Length:");
                if (!cl || cl > e) {
                    fprintf(stderr, "response without Content-Length\n");
                    exit(1);
                }
                need = hdr + strtoul(cl + 17, NULL, 10);
            }
        }
        if (hdr && c->len >= need)
            break;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0) {
            fprintf(stderr, "recv: connection closed\n");
            exit(1);
        }
        c->len += (size_t)r;
    }
    int status = atoi(c->buf + 9);
    *body = c->buf + hdr;
    *blen = need - hdr;
    /* keep-alive, one request in flight: nothing follows the body */
    c->len = 0;
    return status;
}

typedef struct worker {
    pthread_t th;
    int id;
    int mode; /* 0 = GET /version, 1 = PATCH */
    double until;
    uint64_t ops, errors;
    char pod[64];
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    conn *c = calloc(1, sizeof *c);
    c->fd = dial();
    char req[1024], body[256], rv[32] = "";
    const char *rb;
    size_t rl;
    while (now_s() < w->until) {
        for (int i = 0; i < 64; i++) { /* check the clock every 64 requests */
            int n;
            if (w->mode == 0) {
                n = snprintf(req, sizeof req,
                             "GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: "
                             "application/json\r\n\r\n");
            } else {
                /* A claim-shaped write: labels + annotation, resourceVersion precondition. */
                int bl = snprintf(body, sizeof body,
                                  "{\"metadata\":{%s%s%s\"labels\":{\"n\":\"%" PRIu64
                                  "\"},\"annotations\":{\"podclaim.io/claim-id\":\"c%" PRIu64
                                  "\"}}}",
                                  rv[0] ? "\"resourceVersion\":\"" : "", rv, rv[0] ? "\"," : "",
                                  w->ops, w->ops);
                n = snprintf(req, sizeof req,
                             "PATCH /api/v1/namespaces/default/pods/%s HTTP/1.1\r\nHost: "
                             "127.0.0.1\r\nContent-Type: application/strategic-merge-patch+json\r\n"
                             "Content-Length: %d\r\n\r\n%s",
                             w->pod, bl, body);
            }
            send_all(c->fd, req, (size_t)n);
            int st = read_response(c, &rb, &rl);
            if (st != 200) {
                w->errors++;
                rv[0] = '\0';
                continue;
            }
            w->ops++;
            if (w->mode == 1) {
                const char *p = memmem(rb, rl, "\"resourceVersion\":\"", 19);
                if (p) {
                    p += 19;
                    size_t k = 0;
                    while (k < sizeof rv - 1 && p[k] != '"')
                        rv[k] = p[k], k++;
                    rv[k] = '\0';
                }
            }
        }
    }
    close(c->fd);
    free(c);
    return NULL;
}

static double run_workers(int mode, int nconn, double secs, uint64_t *errors, double *cpu_us)
{
    worker *ws = calloc((size_t)nconn, sizeof *ws);
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < nconn; i++) {
        ws[i].id = i;
        ws[i].mode = mode;
        ws[i].until = t0 + secs;
        snprintf(ws[i].pod, sizeof ws[i].pod, "bench-%d", i);
        pthread_create(&ws[i].th, NULL, work, &ws[i]);
    }
    uint64_t ops = 0;
    *errors = 0;
    for (int i = 0; i < nconn; i++) {
        pthread_join(ws[i].th, NULL);
        ops += ws[i].ops;
        *errors += ws[i].errors;
    }
    double el = now_s() - t0;
    *cpu_us = (cpu_s() - c0) * 1e6 / (double)(ops ? ops : 1);
    free(ws);
    return (double)ops / el;
}

/* ---- watchers --------------------------------------------------------------------------------- */

typedef struct watcher {
    pthread_t th;
    char rv[32];
    uint64_t want; /* stop after this many events */
    double deadline;
    _Atomic uint64_t got;
    double done_at;
} watcher;

static void *watch_run(void *arg)
{
    watcher *w = arg;
    int fd = dial();
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/namespaces/default/pods?watch=1&resourceVersion=%s HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n\r\n",
                     w->rv);
    send_all(fd, req, (size_t)n);
    static __thread char buf[1 << 18];
    char prev = 0;
    bool body = false;
    uint64_t got = 0;
    while (got < w->want && now_s() < w->deadline) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            break;
        }
        size_t i = 0;
        if (!body) { /* skip the response headers */
            char *e = memmem(buf, (size_t)r, "\r\n\r\n", 4);
            if (!e)
                continue;
            i = (size_t)(e - buf) + 4;
            body = true;
        }
        /* Event lines end in "\n" not preceded by "\r"; chunk framing lines end in "\r\n". */
        for (; i < (size_t)r; i++) {
            if (buf[i] == '\n' && prev != '\r')
                got++;
            prev = buf[i];
        }
        atomic_store_explicit(&w->got, got, memory_order_relaxed);
    }
    w->done_at = now_s();
    close(fd);
    return NULL;
}

static ks_store st;
static ks_faults fl;

static void make_pods(int n)
{
    for (int i = 0; i < n; i++) {
        char b[512];
        snprintf(b, sizeof b,
                 "{\"metadata\":{\"name\":\"bench-%d\",\"labels\":{\"podclaim.io/pool\":\"bench\","
                 "\"podclaim.io/phase\":\"Idle\"}},\"spec\":{\"containers\":[{\"name\":\"sandbox\","
                 "\"image\":\"registry.local/podclaim/sandbox:latest\"}]}}",
                 i);
        json_t *j = json_loads(b, 0, NULL);
        ks_err err = {0};
        json_t *r = ks_api_create(&st, &ks_resources[KS_RES_POD], "default", j, &err, NULL, false);
        if (!r) {
            fprintf(stderr, "create: %s\n", err.message);
            exit(1);
        }
        json_decref(r);
        json_decref(j);
    }
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int nconn = argc > 2 ? atoi(argv[2]) : 4;
    int nwatch = argc > 3 ? atoi(argv[3]) : 8;
    if (secs <= 0 || nconn < 1 || nconn > 64 || nwatch < 1 || nwatch > 256) {
        fprintf(stderr,
                "usage: bench_kapi_sim [seconds>0] [connections 1..64] [watchers 1..256]\n");
        return 2;
    }
    const uint64_t replay = 50000;
    ks_tune_malloc();
    /* The history (kapi-sim's default size) is full before anything is measured, so every write
     * recycles an old event, as in a long run; the replay rows read its newest `replay`. */
    if (ks_store_init(&st, 20000 + replay))
        return 1;
    ks_faults_init(&fl);
    ks_controller_opts co = {.warmup_ms = 100, .stop_ms = 20};
    ks_controller *ctl = ks_controller_new(&st, &co);
    ks_ensure_namespace(&st, "default");
    make_pods(nconn);
    /* KS_BATCH_US: the --watch-batch-us to bench with (default 500, as kapi-sim) */
    ks_server_opts so = {.listen = "127.0.0.1:0",
                         .bookmark_ms = 1000,
                         .watch_batch_us =
                                 getenv("KS_BATCH_US") ? atoi(getenv("KS_BATCH_US")) : 500};
    char err[256];
    ks_server *srv = ks_server_start(&so, &st, &fl, ctl, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    port = ks_server_port(srv);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    uint64_t e1 = 0, e2 = 0;
    double base_cpu, patch_cpu, inproc_cpu, replay_cpu, live_cpu, live_patch_cpu;

    /* Fill the history, then time `replay` more writes made in process (no HTTP): the cost of
     * the store itself. Those writes are what the replay rows read back. */
    uint64_t from = 0;
    double g0 = 0, gc0 = 0;
    for (uint64_t i = 0; i < 20000 + 2 * replay; i++) {
        if (i == 20000 + replay) {
            pthread_mutex_lock(&st.mu);
            from = st.rev;
            pthread_mutex_unlock(&st.mu);
            g0 = now_s();
            gc0 = cpu_s();
        }
        char b[160];
        snprintf(b, sizeof b, "{\"metadata\":{\"labels\":{\"n\":\"r%" PRIu64 "\"}}}", i);
        json_t *j = json_loads(b, 0, NULL);
        ks_err e = {0};
        char name[32];
        snprintf(name, sizeof name, "bench-%d", (int)(i % (uint64_t)nconn));
        json_decref(ks_api_patch(&st, &ks_resources[KS_RES_POD], "default", name, NULL,
                                 KS_PATCH_STRATEGIC, j, &e, NULL, false));
        json_decref(j);
    }
    double inproc = (double)replay / (now_s() - g0);
    inproc_cpu = (cpu_s() - gc0) * 1e6 / (double)replay;
    if (argc > 4 && strcmp(argv[4], "patch-only") == 0) { /* for profiling */
        double b = run_workers(0, nconn, secs, &e1, &base_cpu);
        double p = run_workers(1, nconn, secs, &e2, &patch_cpu);
        printf("PATCH %.0f/s, %.2f CPU us/op (baseline %.0f/s, %.2f)\n", p, patch_cpu, b, base_cpu);
        return 0;
    }

    watcher *ws = calloc((size_t)nwatch, sizeof *ws);
    double t0 = now_s(), rc0 = cpu_s();
    for (int i = 0; i < nwatch; i++) {
        snprintf(ws[i].rv, sizeof ws[i].rv, "%" PRIu64, from);
        ws[i].want = replay;
        ws[i].deadline = t0 + 60;
        pthread_create(&ws[i].th, NULL, watch_run, &ws[i]);
    }
    uint64_t rgot = 0;
    double rend = t0;
    for (int i = 0; i < nwatch; i++) {
        pthread_join(ws[i].th, NULL);
        rgot += ws[i].got;
        if (ws[i].done_at > rend)
            rend = ws[i].done_at;
    }
    double replay_rate = (double)rgot / (rend - t0);
    replay_cpu = (cpu_s() - rc0) * 1e6 / (double)(rgot ? rgot : 1);

    /* Let the server end the replay watches (their clients are gone) before timing more. */
    for (double end = now_s() + 5;
         atomic_load_explicit(&fl.watches_open, memory_order_relaxed) > 0 && now_s() < end;) {
        struct timespec ts = {0, 1000000}; /* polling a counter between rows, 1 ms */
        nanosleep(&ts, NULL);
    }
    /* Baseline and PATCH alternate, best of 3 each: other tenants of the 2 cores come and go
     * within seconds, and interleaving exposes both rows to the same conditions. */
    double base = 0, patch = 0;
    for (int r = 0; r < 3; r++) {
        uint64_t e;
        double cpu, rate = run_workers(0, nconn, secs, &e, &cpu);
        e1 += e;
        if (rate > base)
            base = rate, base_cpu = cpu;
        rate = run_workers(1, nconn, secs, &e, &cpu);
        e2 += e;
        if (rate > patch)
            patch = rate, patch_cpu = cpu;
    }

    /* Live fan-out: nwatch watchers follow while nconn connections PATCH. */
    pthread_mutex_lock(&st.mu);
    from = st.rev;
    pthread_mutex_unlock(&st.mu);
    memset(ws, 0, (size_t)nwatch * sizeof *ws);
    t0 = now_s();
    double lc0 = cpu_s();
    for (int i = 0; i < nwatch; i++) {
        snprintf(ws[i].rv, sizeof ws[i].rv, "%" PRIu64, from);
        ws[i].want = UINT64_MAX;
        ws[i].deadline = t0 + secs + 5;
        pthread_create(&ws[i].th, NULL, watch_run, &ws[i]);
    }
    uint64_t e3;
    double live_patch = run_workers(1, nconn, secs, &e3, &live_patch_cpu);
    pthread_mutex_lock(&st.mu);
    uint64_t produced = st.rev - from;
    pthread_mutex_unlock(&st.mu);
    /* Wait (bounded) for the watchers to drain what was written, then stop them. */
    double drain_end = now_s() + 5;
    uint64_t lgot = 0;
    for (;;) {
        lgot = 0;
        for (int i = 0; i < nwatch; i++)
            lgot += atomic_load_explicit(&ws[i].got, memory_order_relaxed);
        if (lgot >= produced * (uint64_t)nwatch || now_s() > drain_end)
            break;
        struct timespec ts = {0, 1000000}; /* polling a counter for the bench's end, 1 ms */
        nanosleep(&ts, NULL);
    }
    double lend = now_s();
    live_cpu = (cpu_s() - lc0) * 1e6 / (double)(lgot ? lgot : 1);
    for (int i = 0; i < nwatch; i++)
        ws[i].deadline = 0;
    ks_server_stop(srv); /* ends the watch streams */
    for (int i = 0; i < nwatch; i++)
        pthread_join(ws[i].th, NULL);
    double live_rate = (double)lgot / (lend - t0);

    printf("kapi-sim bench: %ld CPUs online, loopback, keep-alive, %d client connections, "
           "%.1f s per row (base/PATCH: best of 3, interleaved), watch batch %lld us\n",
           cpus, nconn, secs, (long long)so.watch_batch_us);
    printf("%-46s %14s %8s %12s\n", "row", "rate", "vs base", "CPU us/op");
    printf("%-46s %12.0f/s %8s %12.2f\n", "baseline: GET /version round trips", base, "1.00",
           base_cpu);
    printf("%-46s %12.0f/s %8.2f %12.2f\n", "PATCH pod, strategic merge + rv precondition", patch,
           patch / base, patch_cpu);
    printf("%-46s %12.0f/s %8.2f %12.2f\n", "  same patches in process, no HTTP (1 thread)", inproc,
           inproc / base, inproc_cpu);
    char label[80];
    snprintf(label, sizeof label, "watch fan-out, replay %" PRIu64 " events x %d", replay, nwatch);
    printf("%-46s %12.0f/s %8.2f %12.2f\n", label, replay_rate, replay_rate / base, replay_cpu);
    snprintf(label, sizeof label, "watch fan-out, live, %d watchers (events)", nwatch);
    printf("%-46s %12.0f/s %8.2f %12.2f\n", label, live_rate, live_rate / base, live_cpu);
    snprintf(label, sizeof label, "  PATCH while %d watchers follow", nwatch);
    printf("%-46s %12.0f/s %8.2f %12s\n", label, live_patch, live_patch / base, "-");
    (void)live_patch_cpu;
    printf("errors: base %" PRIu64 " patch %" PRIu64 " live %" PRIu64 "; replay delivered %" PRIu64
           "/%" PRIu64 "; live delivered %" PRIu64 "/%" PRIu64 "\n",
           e1, e2, e3, rgot, replay * (uint64_t)nwatch, lgot, produced * (uint64_t)nwatch);
    free(ws);
    ks_controller_free(ctl);
    ks_store_fini(&st);
    ks_faults_fini(&fl);
    return 0;
}
