/* rawpatch: the baseline of bench_daemon.sh. PATCH pods on an API server as fast as it answers,
 * over C keep-alive connections, one request outstanding per connection, each connection on its
 * own pod with the resourceVersion precondition (the version from its previous answer), the
 * claim-shaped strategic-merge body without the phase change (so the pool controller leaves
 * the pods alone). The same minimal epoll HTTP/1.1 client style as `podclaimctl load`, so both
 * sides of the ratio pay the same client cost.
 *
 * usage: rawpatch URL NAMESPACE POOL CONNECTIONS SECONDS [RATE]   -> one JSON line on stdout
 *   RATE: an open loop at RATE PATCHes/s instead of the closed loop, timed as `podclaimctl load
 *   --rate` times claims: PATCH k is due at t0 + k/RATE and its latency runs from then (the
 *   baseline of the tail at a given offered load).
 *        rawpatch --reset URL NAMESPACE POOL CONNECTIONS
 *   --reset: between bench_daemon's claim-path rows, turn every claimed pod of the pool back to
 *   Idle (phase label, the claim's label `bench` and annotations removed), each with its
 *   resourceVersion precondition, over CONNECTIONS connections; prints {"reset":N,"failed":F}.
 *   It plays the pool controller's recycle outside the measured window, so each row starts
 *   from a full pool and claims nothing but one CAS PATCH per claim.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    bool reset; /* --reset: the next pod comes from the shared list, not this connection's */
    char pod[256];
    char rv[32];
    char in[65536];
    size_t in_len;
    int64_t sent_ns; /* when sent (closed loop) or due (open loop) */
    bool busy;
    long n;
} conn;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

/* Linear growth bookkeeping: a 40,000-pod list is tens of MB. */
static size_t on_data(char *p, size_t s, size_t n, void *arg)
{
    buf *b = arg;
    if (b->len + s * n + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 65536) + s * n;
        char *np = realloc(b->p, nc);
        if (!np)
            return 0;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, p, s * n);
    b->len += s * n;
    b->p[b->len] = '\0';
    return s * n;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static char host[64];
static int port;

static void send_patch(conn *c, int64_t due_ns)
{
    char body[512], req[1024];
    int bl = c->reset ? snprintf(body, sizeof(body),
                                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{"
                                 "\"podclaim.io/phase\":\"Idle\",\"bench\":null},"
                                 "\"annotations\":{\"podclaim.io/claim-id\":null,"
                                 "\"podclaim.io/claimed-at\":null}}}",
                                 c->rv)
                      : snprintf(body, sizeof(body),
                                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{"
                                 "\"bench\":\"raw\"},\"annotations\":{\"podclaim.io/"
                                 "claim-id\":\"raw-%ld\"}}}",
                                 c->rv, c->n++);
    int rl = snprintf(req, sizeof(req),
                      "PATCH /api/v1/namespaces/%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                      "application/strategic-merge-patch+json\r\nContent-Length: %d\r\n\r\n%s",
                      c->pod, host, port, bl, body);
    c->sent_ns = due_ns;
    c->busy = true;
    c->in_len = 0;
    if (send(c->fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        fprintf(stderr, "rawpatch: send: %s\n", strerror(errno));
        exit(1);
    }
}

/* --reset: the claimed pods still to turn Idle, shared by every connection. */
static json_t *todo;
static size_t todo_next;

/* Give c the next claimed pod to reset; false when none is left. */
static bool next_reset(conn *c, const char *ns)
{
    json_t *md = json_object_get(json_array_get(todo, todo_next), "metadata");
    if (!md)
        return false;
    todo_next++;
    snprintf(c->pod, sizeof(c->pod), "%s/pods/%s", ns,
             json_string_value(json_object_get(md, "name")));
    snprintf(c->rv, sizeof(c->rv), "%s", json_string_value(json_object_get(md, "resourceVersion")));
    return true;
}

int main(int argc, char **argv)
{
    bool reset = argc == 6 && strcmp(argv[1], "--reset") == 0;
    double rate = argc == 7 && !reset ? atof(argv[6]) : 0;
    if (argc != 6 && !(argc == 7 && !reset && rate > 0)) {
        fprintf(stderr, "usage: rawpatch URL NAMESPACE POOL CONNECTIONS SECONDS [RATE]\n"
                        "       rawpatch --reset URL NAMESPACE POOL CONNECTIONS\n");
        return 2;
    }
    if (reset)
        argv++;
    const char *url = argv[1], *ns = argv[2], *pool = argv[3];
    int nconn = atoi(argv[4]);
    double secs = reset ? 0 : atof(argv[5]);
    if (sscanf(url, "http://%63[^:]:%d", host, &port) != 2)
        return 2;
    char list[512];
    /* --reset: only the pods not Idle (the claimed ones) */
    snprintf(list, sizeof(list),
             "%s/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s%s", url, ns,
             pool, reset ? "%2Cpodclaim.io%2Fphase%21%3DIdle" : "");
    CURL *cu = curl_easy_init();
    buf body = {0};
    curl_easy_setopt(cu, CURLOPT_URL, list);
    curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(cu, CURLOPT_WRITEDATA, &body);
    if (curl_easy_perform(cu) != CURLE_OK || !body.p)
        return 1;
    curl_easy_cleanup(cu);
    json_t *doc = json_loadb(body.p, body.len, 0, NULL);
    free(body.p);
    json_t *items = json_object_get(doc, "items");
    if (reset) {
        todo = items;
        if (nconn > (int)json_array_size(items))
            nconn = (int)json_array_size(items);
        if (nconn == 0) {
            printf("{\"reset\":0,\"failed\":0}\n");
            return 0;
        }
    } else if ((int)json_array_size(items) < nconn) {
        fprintf(stderr, "rawpatch: %zu pods, want %d\n", json_array_size(items), nconn);
        return 1;
    }
    conn *cs = calloc((size_t)nconn, sizeof(conn));
    int ep = epoll_create1(0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    for (int i = 0; i < nconn; i++) {
        cs[i].reset = reset;
        if (reset) {
            next_reset(&cs[i], ns);
        } else {
            json_t *md = json_object_get(json_array_get(items, (size_t)i), "metadata");
            snprintf(cs[i].pod, sizeof(cs[i].pod), "%s/pods/%s", ns,
                     json_string_value(json_object_get(md, "name")));
            snprintf(cs[i].rv, sizeof(cs[i].rv), "%s",
                     json_string_value(json_object_get(md, "resourceVersion")));
        }
        cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(cs[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            return 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    size_t cap = 1 << 20, nlat = 0;
    int64_t *lat = malloc(cap * sizeof(int64_t));
    long ok = 0, failed = 0;
    int64_t t0 = now_ns(), end = t0 + (int64_t)(secs * 1e9), next_due = t0;
    int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    int busy = 0;
    if (!interval) {
        for (int i = 0; i < nconn; i++)
            send_patch(&cs[i], now_ns());
        busy = nconn;
    }
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = now_ns();
        if (interval && now < end) {
            for (int i = 0; i < nconn && next_due <= now; i++) {
                if (cs[i].busy)
                    continue;
                send_patch(&cs[i], next_due);
                next_due += interval;
                busy++;
            }
        }
        if (busy == 0 && (!interval || now >= end))
            break;
        /* sleep until the next PATCH is due, to the microsecond (as podclaimctl load) */
        struct timespec ts = {1, 0};
        if (interval && now < end && next_due > now && next_due - now < 1000000000)
            ts = (struct timespec){0, next_due - now};
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        for (int e = 0; e < n; e++) {
            conn *c = evs[e].data.ptr;
            ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, 0);
            if (r <= 0) {
                fprintf(stderr, "rawpatch: connection lost\n");
                return 1;
            }
            c->in_len += (size_t)r;
            c->in[c->in_len] = '\0';
            char *h = strstr(c->in, "\r\n\r\n");
            if (!h)
                continue;
            char *cl = strcasestr(c->in, "\r\ncontent-length:");
            size_t clen = cl ? strtoul(cl + 17, NULL, 10) : 0;
            if ((size_t)(h + 4 - c->in) + clen > c->in_len)
                continue;
            int status = atoi(c->in + 9);
            if (status == 200) {
                ok++;
                char *rv = strstr(h, "\"resourceVersion\":\"");
                if (rv)
                    snprintf(c->rv, sizeof(c->rv), "%.*s", (int)strcspn(rv + 19, "\""), rv + 19);
            } else {
                failed++;
            }
            if (nlat < cap)
                lat[nlat++] = now_ns() - c->sent_ns;
            c->busy = false;
            busy--;
            if (reset ? next_reset(c, ns) : !interval && now_ns() < end) {
                send_patch(c, now_ns());
                busy++;
            }
        }
    }
    if (reset) {
        printf("{\"reset\":%ld,\"failed\":%ld}\n", ok, failed);
        return failed ? 1 : 0;
    }
    double el = (double)(now_ns() - t0) / 1e9;
    qsort(lat, nlat, sizeof(*lat), cmp);
    if (interval) /* the rate of the window, not of the drain after it */
        el = secs > 0 ? secs : el;
    printf("{\"patchesPerSecond\":%.1f,\"ok\":%ld,\"failed\":%ld,\"p50Ms\":%.3f,\"p90Ms\":%.3f,"
           "\"p99Ms\":%.3f}\n",
           (double)ok / el, ok, failed, nlat ? (double)lat[nlat / 2] / 1e6 : 0,
           nlat ? (double)lat[nlat * 9 / 10] / 1e6 : 0,
           nlat ? (double)lat[nlat * 99 / 100] / 1e6 : 0);
    return failed ? 1 : 0;
}
