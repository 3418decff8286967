/* pc-slowclients: what an HTTP server does with slow and greedy clients, measured.
 *
 * Not a test (the answers are properties of the server under test, recorded in
 * docs/RELIABILITY.md); a probe run by hand:  build/fuzz/pc-slowclients HOST PORT [NS/POD]
 * Each experiment prints one line: what was done, what the server did, how long a normal
 * request (GET /api on a fresh connection) took meanwhile.
 *   idle      200 connections that send nothing, kept 35 s: closed by the server? served?
 *   headers   a request line, then one header byte every 500 ms for 20 s
 *   body      a POST announcing 1000 bytes, one byte every 500 ms for 20 s
 *   stalled   a watch whose client never reads (4 KiB receive buffer), while 2,000 PATCHes
 *             go to NS/POD from another connection: do they still complete?
 *   flood     as many connections as the server accepts, up to 2,100: is a new one served?
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int dial(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send a request, read the status line within ms; returns the status or -1. */
static int request(const char *method, const char *path, const char *ctype, const char *body,
                   int ms)
{
    int fd = dial(0);
    if (fd < 0)
        return -1;
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, ctype, body ? strlen(body) : 0, body ? body : "");
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    char buf[64] = "";
    struct pollfd p = {fd, POLLIN, 0};
    int st = -1;
    if (poll(&p, 1, ms) > 0 && read(fd, buf, sizeof(buf) - 1) > 12)
        sscanf(buf, "HTTP/1.%*d %d", &st);
    close(fd);
    return st;
}

static void probe(const char *when)
{
    int64_t t0 = now_ms();
    int st = request("GET", "/api", "application/json", NULL, 5000);
    printf("    GET /api %s: status %d in %lld ms\n", when, st, (long long)(now_ms() - t0));
}

/* Is fd closed by the peer (EOF or reset) right now? */
static bool closed(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void idle(void)
{
    enum { N = 200 };
    int fds[N], open = 0;
    for (int i = 0; i < N; i++)
        if ((fds[i] = dial(0)) >= 0)
            open++;
    printf("idle: %d connections open, sending nothing\n", open);
    probe("with them open");
    int64_t t0 = now_ms();
    int first_close = -1;
    while (now_ms() - t0 < 35000) {
        pause_ms(500);
        int c = 0;
        for (int i = 0; i < N; i++)
            c += fds[i] >= 0 && closed(fds[i]);
        if (c && first_close < 0)
            first_close = (int)(now_ms() - t0);
        if (c == open)
            break;
    }
    int c = 0;
    for (int i = 0; i < N; i++)
        c += fds[i] >= 0 && closed(fds[i]);
    printf("    after %lld ms: %d of %d closed by the server (first at %d ms)\n",
           (long long)(now_ms() - t0), c, open, first_close);
    probe("after");
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void trickle(const char *name, const char *head, const char *drip)
{
    int fd = dial(0);
    send(fd, head, strlen(head), MSG_NOSIGNAL);
    int64_t t0 = now_ms();
    int sent = 0;
    bool gone = false;
    while (now_ms() - t0 < 20000) {
        if (closed(fd)) {
            gone = true;
            break;
        }
        if (send(fd, drip + (sent % strlen(drip)), 1, MSG_NOSIGNAL) != 1) {
            gone = true;
            break;
        }
        sent++;
        pause_ms(500);
    }
    char buf[128] = "";
    struct pollfd p = {fd, POLLIN, 0};
    if (!gone && poll(&p, 1, 0) > 0)
        read(fd, buf, sizeof(buf) - 1);
    buf[strcspn(buf, "\r\n")] = '\0';
    printf("%s: %d bytes at 2/s: %s after %lld ms %s\n", name, sent,
           gone ? "closed by the server" : "still open", (long long)(now_ms() - t0), buf);
    probe("meanwhile");
    close(fd);
}

static void stalled(const char *ns, const char *pod)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?watch=true", ns);
    int fd = dial(4096);
    char req[1024];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    send(fd, req, (size_t)n, MSG_NOSIGNAL);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, pod);
    int64_t t0 = now_ms(), worst = 0;
    int ok = 0, total = 2000;
    for (int i = 0; i < total; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"metadata\":{\"annotations\":{\"slowclients\":\"%d-%0100d\"}}}", i, 0);
        int64_t t = now_ms();
        int st = request("PATCH", path, "application/merge-patch+json", body, 10000);
        worst = now_ms() - t > worst ? now_ms() - t : worst;
        ok += st == 200;
        if (now_ms() - t0 > 60000) {
            total = i + 1;
            break;
        }
    }
    printf("stalled: a watch that never reads; %d of %d PATCHes 200, in %lld ms, slowest %lld ms;"
           " watch %s\n",
           ok, total, (long long)(now_ms() - t0), (long long)worst,
           closed(fd) ? "closed by the server" : "still open");
    probe("after");
    close(fd);
}

static void flood(void)
{
    struct rlimit rl = {8192, 8192};
    setrlimit(RLIMIT_NOFILE, &rl);
    enum { N = 2100 };
    static int fds[N];
    int open = 0;
    for (int i = 0; i < N; i++)
        if ((fds[i] = dial(0)) >= 0)
            open++;
    pause_ms(1000);
    int c = 0;
    for (int i = 0; i < N; i++)
        c += fds[i] >= 0 && closed(fds[i]);
    printf("flood: %d connections made, %d closed by the server at once\n", open, c);
    probe("with them open");
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pause_ms(1000);
    probe("after closing them");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [NS/POD]\n", argv[0]);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    probe("before");
    idle();
    trickle("headers", "GET /api HTTP/1.1\r\n", "X-Slow: abcdefghij\r\n");
    trickle("body",
            "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
            "{");
    if (argc > 3 && strchr(argv[3], '/')) {
        char ns[128];
        snprintf(ns, sizeof(ns), "%.*s", (int)(strchr(argv[3], '/') - argv[3]), argv[3]);
        stalled(ns, strchr(argv[3], '/') + 1);
    }
    flood();
    return 0;
}
