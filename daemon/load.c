/* podclaimctl load: fire claims at podclaimd over many keep-alive connections and print a
 * wrk-style summary (claims/s, p50/p90/p99/max, outcomes).
 *
 * One thread, one epoll loop, non-blocking sockets, one request outstanding per connection
 * (HTTP/1.1 without pipelining, as ordinary clients do). Two modes:
 *   --rate max   closed loop: each connection sends its next claim as soon as the answer came.
 *   --rate R     open loop at R claims/s: claim k is due at t0 + k/R. When every connection is
 *                busy the due claims wait, and their latency is counted from when they were
 *                due, not from when they could be sent: otherwise a stalled server would hide
 *                its stall in the client's queue (coordinated omission, as wrk2 corrects it).
 * --release-after D: every won claim is released (DELETE) D after its answer, over the same
 * connections (a due release goes before the next claim), so the pool recycles its pods and a
 * long run does not drain it; the releases still owed when the run ends are sent at once.
 */
#include "ctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct conn {
    int fd;
    bool busy, connected;
    bool releasing; /* the request in flight is a release (rel), not a claim */
    char rel[1024];
    size_t rel_len;
    size_t sent;    /* bytes of the request written */
    int64_t due_ns; /* when this claim was due (open loop) or sent (closed loop) */
    char in[65536];
    size_t in_len;
} conn;

typedef struct rel_item {
    struct rel_item *next;
    int64_t due_ns;
    char path[600];
} rel_item;

typedef struct load {
    struct sockaddr_in sa;
    int ep;
    char *req;
    size_t req_len;
    char hosthdr[300];             /* "Host: ...\r\n" + auth, for releases */
    int64_t release_after_ns;      /* < 0: no releases */
    rel_item *rel_head, *rel_tail; /* FIFO; one fixed delay, so sorted by due */
    uint64_t released, release_failed;
    conn *c;
    int n;
    int64_t *lat;
    size_t nlat, caplat;
    uint64_t ok, c503, c504, c4xx, other, errors;
    int64_t last_done_ns;
} load;

static int conn_open(load *L, conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&L->sa, sizeof(L->sa)) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->connected = false;
    c->busy = false;
    c->in_len = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void conn_reset(load *L, conn *c, bool count_error)
{
    if (c->busy && count_error)
        L->errors++;
    epoll_ctl(L->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conn_open(L, c);
}

static void conn_send(load *L, conn *c)
{
    const char *buf = c->releasing ? c->rel : L->req;
    size_t len = c->releasing ? c->rel_len : L->req_len;
    while (c->sent < len) {
        ssize_t w = send(c->fd, buf + c->sent, len - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN)
                conn_reset(L, c, true);
            return;
        }
        c->sent += (size_t)w;
    }
}

static void start(load *L, conn *c, int64_t due)
{
    c->releasing = false;
    c->busy = true;
    c->sent = 0;
    c->due_ns = due;
    c->in_len = 0;
    if (c->connected)
        conn_send(L, c);
}

/* The next due release onto idle connection c; false when none is due. */
static bool start_release(load *L, conn *c, int64_t now)
{
    rel_item *r = L->rel_head;
    if (!r || r->due_ns > now)
        return false;
    L->rel_head = r->next;
    if (!L->rel_head)
        L->rel_tail = NULL;
    int n = snprintf(c->rel, sizeof(c->rel), "DELETE %s HTTP/1.1\r\n%s\r\n", r->path, L->hosthdr);
    free(r);
    if (n <= 0 || (size_t)n >= sizeof(c->rel)) {
        L->release_failed++;
        return false;
    }
    c->rel_len = (size_t)n;
    c->releasing = true;
    c->busy = true;
    c->sent = 0;
    c->due_ns = now;
    c->in_len = 0;
    if (c->connected)
        conn_send(L, c);
    return true;
}

/* A claim was won: queue its release (the answer names pool, namespace and claim id). */
static void queue_release(load *L, const char *body, size_t len, int64_t now)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *ns = json_string_value(json_object_get(j, "namespace"));
    const char *pool = json_string_value(json_object_get(j, "pool"));
    const char *id = json_string_value(json_object_get(j, "claimId"));
    rel_item *r = ns && pool && id ? calloc(1, sizeof(*r)) : NULL;
    if (r) {
        snprintf(r->path, sizeof(r->path), "/v1/pools/%s/%s/claims/%s", ns, pool, id);
        r->due_ns = now + L->release_after_ns;
        if (L->rel_tail)
            L->rel_tail->next = r;
        else
            L->rel_head = r;
        L->rel_tail = r;
    } else {
        L->release_failed++;
    }
    json_decref(j);
}

static void record(load *L, int status, int64_t lat)
{
    if (L->nlat == L->caplat) {
        size_t cap = L->caplat ? L->caplat * 2 : 65536;
        int64_t *n = realloc(L->lat, cap * sizeof(*n));
        if (!n)
            return;
        L->lat = n;
        L->caplat = cap;
    }
    L->lat[L->nlat++] = lat;
    if (status == 200)
        L->ok++;
    else if (status == 503)
        L->c503++;
    else if (status == 504)
        L->c504++;
    else if (status >= 400 && status < 500)
        L->c4xx++;
    else
        L->other++;
}

/* Read what is there; returns true when a whole answer arrived (the connection is then idle). */
static bool conn_read(load *L, conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            conn_reset(L, c, true);
            return false;
        }
        if (r < 0)
            break;
        c->in_len += (size_t)r;
        c->in[c->in_len] = '\0';
        if (c->in_len == sizeof(c->in) - 1)
            break;
    }
    char *hend = strstr(c->in, "\r\n\r\n");
    if (!hend || !c->busy)
        return false;
    size_t clen = 0;
    char *cl = strcasestr(c->in, "\r\ncontent-length:");
    if (cl && cl < hend)
        clen = strtoul(cl + 17, NULL, 10);
    if ((size_t)(hend + 4 - c->in) + clen > c->in_len)
        return false;
    int status = atoi(c->in + 9);
    int64_t t = now_ns();
    if (c->releasing) {
        if (status == 200)
            L->released++;
        else
            L->release_failed++;
    } else {
        record(L, status, t - c->due_ns);
        L->last_done_ns = t;
        if (status == 200 && L->release_after_ns >= 0)
            queue_release(L, hend + 4, clen, t);
    }
    bool close_after = strcasestr(c->in, "\r\nconnection: close") != NULL;
    c->busy = false;
    c->in_len = 0;
    if (close_after)
        conn_reset(L, c, false);
    return true;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double q_ms(const load *L, double q)
{
    if (!L->nlat)
        return 0;
    size_t i = (size_t)(q * (double)(L->nlat - 1) + 0.5);
    return (double)L->lat[i] / 1e6;
}

int ctl_load(const char *server, const char *token, int argc, char **argv)
{
    const char *env = NULL, *pool = NULL, *label = NULL, *body_arg = NULL;
    double rate = 0, duration = 10, release_after = -1;
    int nconn = 64;
    bool as_json = false;
    json_t *body = json_object();
    for (int i = 0; i < argc;) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--rate") && v) {
            rate = !strcmp(v, "max") ? 0 : atof(v);
            i += 2;
        } else if (!strcmp(a, "--duration") && v) {
            duration = ctl_parse_duration(v);
            i += 2;
        } else if (!strcmp(a, "--release-after") && v) {
            release_after = ctl_parse_duration(v);
            if (release_after < 0) {
                fprintf(stderr, "podclaimctl load: --release-after %s: want a duration\n", v);
                return 2;
            }
            i += 2;
        } else if (!strcmp(a, "--connections") && v) {
            nconn = atoi(v);
            i += 2;
        } else if (!strcmp(a, "--body") && v) {
            body_arg = v;
            i += 2;
        } else if (!strcmp(a, "--name") && v) {
            label = v;
            i += 2;
        } else if (!strcmp(a, "--json")) {
            as_json = true;
            i++;
        } else {
            json_decref(body);
            int before = i;
            body = ctl_claim_body(argc, argv, &i, &env, &pool, true);
            if (!body)
                return 2;
            if (i == before) {
                fprintf(stderr, "podclaimctl load: unexpected %s\n", a);
                json_decref(body);
                return 2;
            }
        }
    }
    char path[512];
    if (ctl_claim_path(pool, env, path, sizeof(path)) || duration <= 0 || nconn < 1 ||
        nconn > 100000 || rate < 0) {
        fprintf(stderr, "podclaimctl load: bad arguments (podclaimctl --help)\n");
        json_decref(body);
        return 2;
    }
    char *bodys = body_arg ? strdup(body_arg) : json_dumps(body, JSON_COMPACT);
    json_decref(body);

    load L = {0};
    char host[256];
    int port = 80;
    if (sscanf(server, "http://%255[^:/]:%d", host, &port) < 1) {
        fprintf(stderr, "podclaimctl load: want --server http://HOST:PORT, got %s\n", server);
        return 2;
    }
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof(host), "127.0.0.1");
    L.sa.sin_family = AF_INET;
    L.sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &L.sa.sin_addr) != 1) {
        fprintf(stderr, "podclaimctl load: %s is not an IPv4 address\n", host);
        return 2;
    }
    char auth[600] = "";
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    size_t cap = strlen(bodys) + strlen(path) + 1024;
    L.req = malloc(cap);
    L.release_after_ns = release_after < 0 ? -1 : (int64_t)(release_after * 1e9);
    snprintf(L.hosthdr, sizeof(L.hosthdr), "Host: %s:%d\r\n%s", host, port, auth);
    L.req_len = (size_t)snprintf(L.req, cap,
                                 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                                 "application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
                                 path, host, port, strlen(bodys), auth, bodys);
    /* one descriptor per connection: lift the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    L.n = nconn;
    L.c = calloc((size_t)nconn, sizeof(conn));
    for (int i = 0; i < nconn; i++)
        if (conn_open(&L, &L.c[i]) != 0) {
            fprintf(stderr, "podclaimctl load: connect: %s\n", strerror(errno));
            return 1;
        }
    int64_t t0 = now_ns(), end = t0 + (int64_t)(duration * 1e9), next_due = t0;
    int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    int idle_hint = 0;
    struct epoll_event evs[512];
    bool stopping = false;
    int64_t drain_until = 0;
    for (;;) {
        int64_t now = now_ns();
        if (!stopping && now >= end) {
            stopping = true;
            drain_until = now + 10 * (int64_t)1000000000; /* answers still owed */
        }
        int busy = 0;
        for (int i = 0; i < L.n; i++)
            busy += L.c[i].busy;
        if (stopping && ((busy == 0 && !L.rel_head) || now >= drain_until))
            break;
        /* releases first: the due ones, and when stopping all that are owed */
        for (int i = 0; i < L.n && L.rel_head; i++) {
            conn *c = &L.c[i];
            if (!c->busy && c->fd >= 0)
                start_release(&L, c, stopping ? INT64_MAX : now);
        }
        if (!stopping) {
            /* hand due claims (open loop) or every idle connection (closed loop) a request */
            for (int k = 0; k < L.n; k++) {
                int i = (idle_hint + k) % L.n;
                conn *c = &L.c[i];
                if (c->busy || c->fd < 0)
                    continue;
                if (interval) {
                    if (next_due > now)
                        break;
                    start(&L, c, next_due);
                    next_due += interval;
                } else {
                    start(&L, c, now);
                }
                idle_hint = i + 1;
            }
        }
        /* sleep until the next claim is due, to the microsecond: a millisecond timeout would
         * spin (0 ms) on the cores the server needs */
        struct timespec ts = {0, 100000000};
        int64_t wake = INT64_MAX;
        if (!stopping && interval && next_due > now)
            wake = next_due;
        if (L.rel_head && L.rel_head->due_ns > now && L.rel_head->due_ns < wake)
            wake = L.rel_head->due_ns; /* a release falls due (one already due waits for a
                                        * connection: an answer wakes us) */
        if (wake != INT64_MAX && wake - now < 100000000)
            ts = (struct timespec){(wake - now) / 1000000000, (wake - now) % 1000000000};
        int n = epoll_pwait2(L.ep, evs, 512, &ts, NULL);
        for (int e = 0; e < n; e++) {
            conn *c = evs[e].data.ptr;
            if (!c->connected && (evs[e].events & EPOLLOUT)) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    L.errors++;
                    conn_reset(&L, c, false);
                    continue;
                }
                c->connected = true;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (c->busy)
                    conn_send(&L, c);
                continue;
            }
            if (evs[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                conn_read(&L, c);
        }
    }
    int64_t elapsed = (L.last_done_ns > t0 ? L.last_done_ns : now_ns()) - t0;
    qsort(L.lat, L.nlat, sizeof(*L.lat), cmp);
    double secs = (double)elapsed / 1e9, cps = (double)L.ok / secs;
    double all_ps = (double)L.nlat / secs;
    if (as_json) {
        printf("{\"label\":\"%s\",\"targetRate\":%.1f,\"connections\":%d,\"seconds\":%.3f,"
               "\"claimsPerSecond\":%.1f,\"answersPerSecond\":%.1f,\"p50Ms\":%.3f,\"p90Ms\":%.3f,"
               "\"p99Ms\":%.3f,\"maxMs\":%.3f,\"ok\":%llu,\"503\":%llu,\"504\":%llu,"
               "\"4xx\":%llu,\"other\":%llu,\"errors\":%llu,\"released\":%llu,"
               "\"releaseFailed\":%llu}\n",
               label ? label : "", rate, nconn, secs, cps, all_ps, q_ms(&L, 0.5), q_ms(&L, 0.9),
               q_ms(&L, 0.99), L.nlat ? (double)L.lat[L.nlat - 1] / 1e6 : 0,
               (unsigned long long)L.ok, (unsigned long long)L.c503, (unsigned long long)L.c504,
               (unsigned long long)L.c4xx, (unsigned long long)L.other,
               (unsigned long long)L.errors, (unsigned long long)L.released,
               (unsigned long long)L.release_failed);
    } else {
        printf("load%s%s%s: POST %s%s, %d connections, %.1f s, %s", label ? " [" : "",
               label ? label : "", label ? "]" : "", server, path, nconn, duration,
               rate > 0 ? "open loop at " : "closed loop, as fast as answers come");
        if (rate > 0)
            printf("%.0f claims/s offered", rate);
        printf("\n  claims/s   %10.1f   (%llu won in %.2f s)\n", cps, (unsigned long long)L.ok,
               secs);
        printf("  latency    p50 %.3fms   p90 %.3fms   p99 %.3fms   max %.3fms%s\n", q_ms(&L, 0.5),
               q_ms(&L, 0.9), q_ms(&L, 0.99), L.nlat ? (double)L.lat[L.nlat - 1] / 1e6 : 0,
               rate > 0 ? "   (from when each claim was due)" : "");
        printf("  outcomes   200=%llu  503=%llu  504=%llu  4xx=%llu  other=%llu  errors=%llu\n",
               (unsigned long long)L.ok, (unsigned long long)L.c503, (unsigned long long)L.c504,
               (unsigned long long)L.c4xx, (unsigned long long)L.other,
               (unsigned long long)L.errors);
        if (L.release_after_ns >= 0)
            printf("  releases   %llu released %.0f ms after their claim, %llu failed\n",
                   (unsigned long long)L.released, (double)L.release_after_ns / 1e6,
                   (unsigned long long)L.release_failed);
    }
    while (L.rel_head) {
        rel_item *r = L.rel_head;
        L.rel_head = r->next;
        free(r);
    }
    for (int i = 0; i < L.n; i++)
        if (L.c[i].fd >= 0)
            close(L.c[i].fd);
    close(L.ep);
    free(L.c);
    free(L.lat);
    free(L.req);
    free(bodys);
    return L.errors || L.other || L.release_failed ? 1 : 0;
}
