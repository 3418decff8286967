/* Scripted fake API server (see fakeapi.h). */
#include "fakeapi.h"

#include "../core/common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *serve(void *arg)
{
    fakeapi *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {f->lfd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0)
            continue;
        char req[8192];
        size_t len = 0;
        while (len < sizeof(req) - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
            ssize_t r = read(c, req + len, sizeof(req) - 1 - len);
            if (r <= 0)
                break;
            len += (size_t)r;
        }
        req[len] = '\0';
        size_t i = atomic_load(&f->n);
        if (i < FAKEAPI_MAX_REQ) {
            char *sp = strchr(req, ' ');
            char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
            pthread_mutex_lock(&f->mu);
            if (sp && sp2)
                snprintf(f->paths[i], sizeof(f->paths[i]), "%.*s", (int)(sp2 - sp - 1), sp + 1);
            f->at_ms[i] = pc_test_now_ms();
            pthread_mutex_unlock(&f->mu);
        }
        const fake_resp *r = &f->script[i < f->n_script ? i : f->n_script - 1];
        char head[1024];
        int hl = snprintf(head, sizeof(head),
                          "HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\n"
                          "Connection: close\r\n%s\r\n",
                          r->status ? r->status : 200, r->headers ? r->headers : "");
        /* counted only now: a test that saw n requests also sees their answers on the way */
        atomic_store(&f->n, i + 1);
        bool ok = write_all(c, head, (size_t)hl) &&
                  (!r->body || write_all(c, r->body, strlen(r->body)));
        while (ok && r->hold && !atomic_load(&f->stop)) {
            struct pollfd q = {c, POLLIN, 0};
            if (poll(&q, 1, 20) > 0) {
                char b[256];
                if (read(c, b, sizeof(b)) <= 0)
                    break; /* the client went away */
            }
        }
        close(c);
    }
    return NULL;
}

int fakeapi_start(fakeapi *f, const fake_resp *script, size_t n_script)
{
    memset(f, 0, sizeof(*f));
    /* a copy: scripts are often arrays on the test's stack, gone before the fini stops us */
    fake_resp *copy = calloc(n_script, sizeof(*copy));
    if (!copy)
        return -1;
    memcpy(copy, script, n_script * sizeof(*copy));
    f->script = copy;
    f->n_script = n_script;
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(f->lfd, 16) != 0 || getsockname(f->lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    f->port = ntohs(a.sin_port);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
    return pthread_create(&f->th, NULL, serve, f) == 0 ? 0 : -1;
}

void fakeapi_stop(fakeapi *f)
{
    if (f->lfd <= 0)
        return;
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    close(f->lfd);
    f->lfd = 0;
    free((void *)f->script);
    f->script = NULL;
    pthread_mutex_destroy(&f->mu);
}

size_t fakeapi_requests(fakeapi *f)
{
    return atomic_load(&f->n);
}

void fakeapi_path(fakeapi *f, size_t i, char *out, size_t len)
{
    pthread_mutex_lock(&f->mu);
    snprintf(out, len, "%s", i < FAKEAPI_MAX_REQ ? f->paths[i] : "");
    pthread_mutex_unlock(&f->mu);
}

int64_t fakeapi_at_ms(fakeapi *f, size_t i)
{
    pthread_mutex_lock(&f->mu);
    int64_t t = i < FAKEAPI_MAX_REQ ? f->at_ms[i] : 0;
    pthread_mutex_unlock(&f->mu);
    return t;
}

bool fakeapi_is_watch(fakeapi *f, size_t i)
{
    char p[512];
    fakeapi_path(f, i, p, sizeof(p));
    return strstr(p, "watch=true") != NULL;
}
