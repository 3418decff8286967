/* Fuzz target: kapi-sim's request handling (kapi-sim/http.c routing, auth, api.c verbs, the
 * store, watch start, discovery, /sim endpoints), through a real loopback connection to a
 * kapi-sim server running in this process. kapi-sim's code is linked, not changed here.
 *
 * Input: line 1 the method, line 2 the request target (path and query), line 3 the
 * Content-Type, the rest the body; the harness frames a well-formed HTTP/1.1 request
 * ("Connection: close", Content-Length) so the fuzzer spends its time in kapi-sim, not in
 * libmicrohttpd's parser. Faults are reset before every input (a fuzzed PUT /sim/faults could
 * otherwise slow every later request). A response is read until the server closes, or 150 ms
 * for a watch that stays open. Oracle: no crash and no sanitizer report in kapi-sim; an answer
 * (a status line) to every request that is not a watch.
 */
#include "fuzz.h"
#include "sim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static ks_store store;
static ks_faults faults;
static ks_fault_cfg clean;
static ks_controller *ctl;
static ks_server *srv;
static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (ks_store_init(&store, 2000))
        abort();
    ks_faults_init(&faults);
    clean = ks_faults_get(&faults);
    ks_controller_opts co = {.warmup_ms = 0, .stop_ms = 1};
    if (!(ctl = ks_controller_new(&store, &co)))
        abort();
    ks_ensure_namespace(&store, "default");
    ks_ensure_namespace(&store, "f");
    json_t *pool = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:i}}", "apiVersion", "podclaim.io/v1alpha1",
                             "kind", "SandboxPool", "metadata", "name", "p", "namespace", "f",
                             "spec", "replicas", 3);
    ks_err err = {0};
    json_decref(
            ks_api_create(&store, &ks_resources[KS_RES_SANDBOXPOOL], "f", pool, &err, NULL, false));
    json_decref(pool);
    if (ks_controller_start(ctl))
        abort();
    char e[256];
    ks_server_opts so = {.listen = "127.0.0.1:0", .bookmark_ms = 20, .watch_batch_us = 0};
    if (!(srv = ks_server_start(&so, &store, &faults, ctl, e, sizeof(e)))) {
        fprintf(stderr, "kapi-sim: %s\n", e);
        abort();
    }
    port = ks_server_port(srv);
    return 0;
}

__attribute__((destructor)) static void stop(void)
{
    if (srv) {
        ks_server_stop(srv);
        ks_controller_free(ctl);
        ks_store_fini(&store);
        ks_faults_fini(&faults);
    }
}

static const char *line(const char **p, const char *end, size_t *len)
{
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl)
        return NULL;
    *len = (size_t)(nl - s);
    *p = nl + 1;
    return s;
}

static bool token_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return false;
    return n > 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    size_t ml, tl, cl;
    const char *m = line(&p, end, &ml), *t = m ? line(&p, end, &tl) : NULL;
    const char *ct = t ? line(&p, end, &cl) : NULL;
    if (!ct || !token_ok(m, ml) || !token_ok(t, tl) || t[0] != '/' || ml > 16 || tl > 4096)
        return 0;
    for (size_t i = 0; i < cl; i++)
        if (ct[i] == '\r' || ct[i] == '\0')
            return 0;
    size_t blen = (size_t)(end - p);
    ks_faults_set(&faults, &clean);

    char *req = malloc(ml + tl + cl + 256 + blen);
    int hl = sprintf(req,
                     "%.*s %.*s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: %.*s\r\nContent-Length: %zu\r\n\r\n",
                     (int)ml, m, (int)tl, t, (int)cl, ct, blen);
    memcpy(req + hl, p, blen);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        abort(); /* the server is gone: it crashed or stopped listening */
    size_t len = (size_t)hl + blen, off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* it may answer (413, 400) and close before reading everything */
        off += (size_t)w;
    }
    free(req);
    bool watch = memmem(t, tl, "watch", 5) != NULL;
    char head[16] = "";
    size_t got = 0;
    int64_t deadline = now_ms() + (watch ? 150 : 10000);
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            break;
        char buf[65536];
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0)
            break;
        if (got < sizeof(head) - 1) {
            size_t k = sizeof(head) - 1 - got < (size_t)r ? sizeof(head) - 1 - got : (size_t)r;
            memcpy(head + got, buf, k);
        }
        got += (size_t)r;
    }
    close(fd);
    if (!watch)
        FUZZ_CHECK(!strncmp(head, "HTTP/1.1 ", 9), "no answer to %.*s %.*s", (int)ml, m,
                   (int)(tl > 200 ? 200 : tl), t);
    return 0;
}
