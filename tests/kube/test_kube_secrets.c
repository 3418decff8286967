/* No copy of a bearer token is freed without being wiped first: freed memory is handed out
 * again, to this process's other code, and shows up in core dumps.
 *
 * How it is seen: this binary is linked with -Wl,--wrap=free,--wrap=realloc, so every free()
 * and moving realloc() of our objects (libpodclaim_kube and this file) passes a check that
 * the block holds no token; libcurl's own allocations go through curl_global_init_mem with
 * the same check, and are tracked while live so that the copies the backend keeps can be
 * counted. Not seen: libyaml's and libc's internal buffers (no hook), which is why the
 * tokens here come from files and options, not from an inline kubeconfig token. */
#include <podclaim/kube.h>

#include "../core/common.h"
#include "kube_internal.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OLD_TOKEN "old-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0"

static char new_token[3001]; /* long: reading it grows the file buffer */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int leaked; /* freed blocks that still held a token */
static char leak_where[64];

static bool holds_secret(const void *p, size_t n)
{
    return memmem(p, n, OLD_TOKEN, strlen(OLD_TOKEN)) ||
           (new_token[0] && memmem(p, n, new_token, 64));
}

static void freed(const void *p, size_t n, const char *where)
{
    if (!holds_secret(p, n))
        return;
    pthread_mutex_lock(&mu);
    if (!leaked++)
        snprintf(leak_where, sizeof(leak_where), "%s", where);
    pthread_mutex_unlock(&mu);
}

/* ---- our allocations: the linker routes free/realloc here ---- */

void __real_free(void *p);
void *__real_realloc(void *p, size_t n);

void __wrap_free(void *p)
{
    if (p)
        freed(p, malloc_usable_size(p), "free");
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n)
{
    bool had = p && holds_secret(p, malloc_usable_size(p));
    void *q = __real_realloc(p, n);
    if (had && q && q != p)
        freed(OLD_TOKEN, strlen(OLD_TOKEN), "realloc"); /* the old block went as it was */
    return q;
}

/* ---- curl's allocations: tracked while live ---- */

typedef struct blk {
    struct blk *prev, *next;
    size_t n;
    size_t pad; /* keeps the user block 16-byte aligned */
} blk;

static blk live = {&live, &live, 0, 0};

static void *c_malloc(size_t n)
{
    blk *b = malloc(sizeof(blk) + n);
    if (!b)
        return NULL;
    b->n = n;
    pthread_mutex_lock(&mu);
    b->next = live.next;
    b->prev = &live;
    live.next->prev = b;
    live.next = b;
    pthread_mutex_unlock(&mu);
    return b + 1;
}

static void c_free(void *p)
{
    if (!p)
        return;
    blk *b = (blk *)p - 1;
    pthread_mutex_lock(&mu);
    b->prev->next = b->next;
    b->next->prev = b->prev;
    pthread_mutex_unlock(&mu);
    freed(p, b->n, "curl free");
    __real_free(b);
}

static void *c_realloc(void *p, size_t n)
{
    void *q = c_malloc(n);
    if (q && p) {
        blk *b = (blk *)p - 1;
        memcpy(q, p, b->n < n ? b->n : n);
        c_free(p);
    }
    return q;
}

static char *c_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = c_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void *c_calloc(size_t m, size_t n)
{
    void *p = c_malloc(m * n);
    if (p)
        memset(p, 0, m * n);
    return p;
}

static size_t live_copies(const char *token)
{
    size_t n = 0;
    pthread_mutex_lock(&mu);
    for (blk *b = live.next; b != &live; b = b->next)
        n += memmem(b + 1, b->n, token, strlen(token)) != NULL;
    pthread_mutex_unlock(&mu);
    return n;
}

static void setup(void)
{
    /* before any other curl call: the client's curl_global_init then only counts up */
    cr_assert_eq(curl_global_init_mem(CURL_GLOBAL_DEFAULT, c_malloc, c_free, c_realloc, c_strdup,
                                      c_calloc),
                 CURLE_OK);
}

static void teardown(void)
{
    curl_global_cleanup();
}

static void write_token(const char *path, const char *tok)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer of ours holding it either */
    fprintf(f, "%s\n", tok);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
}

Test(secrets, a_rotated_token_and_the_client_leave_no_copy_behind, .init = setup, .fini = teardown,
     .timeout = 30)
{
    memset(new_token, 'n', sizeof(new_token) - 1);
    memcpy(new_token, "new-token-", 10);
    char dir[] = "/tmp/pc-secrets-XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    write_token(path, OLD_TOKEN);
    pc_kube_options o = {.server = "http://127.0.0.1:9", .token_file = path};
    pc_kube_client *c;
    char err[256];
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), 0, "%s", err);
    pc__kube_headers_free(pc__kube_headers(c, NULL, NULL));
    write_token(path, new_token);
    /* the file is checked at most once a second */
    cr_assert(PC_TEST_WAIT_UNTIL(pc__kube_token_gen(c) == 2, 5000), "rotation not seen");
    pc__kube_headers_free(pc__kube_headers(c, NULL, NULL));
    pc_kube_client_free(c);
    unlink(path);
    rmdir(dir);
    cr_assert_eq(leaked, 0, "%d freed blocks held a token (first: %s)", leaked, leak_where);
}

/* A loopback port nothing listens on: transfers fail at connect, before curl writes a request
 * (whose buffer, curl's own, would hold the header too). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static _Atomic int done_calls;

static void on_done(void *token, pc_cas_outcome oc, const char *rv, const char *msg, int64_t ra)
{
    (void)token, (void)oc, (void)rv, (void)msg, (void)ra;
    atomic_fetch_add(&done_calls, 1);
}

Test(secrets, the_backend_keeps_one_header_list_and_wipes_it, .init = setup, .fini = teardown,
     .timeout = 30)
{
    char url[64], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    pc_kube_options o = {.server = url, .token = OLD_TOKEN};
    pc_kube_client *c;
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), 0, "%s", err);
    pc_kube_backend *kb;
    pc_kube_backend_options bo = {.max_inflight = 8};
    cr_assert_eq(pc_kube_backend_new(c, &bo, &kb, err, sizeof(err)), 0, "%s", err);
    pc_backend *b = pc_kube_backend_iface(kb);
    pc_claim_opts none = {0};
    pc_cas_request req = {.pod = {"g", "a", NULL, "1"},
                          .opts = &none,
                          .target_phase = "Running",
                          .claim_id = "x"};
    /* started together: each takes its own slot */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(b->cas_start(b, &req, on_done, NULL), 0);
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load(&done_calls) == 4, 10000));
    size_t copies = live_copies(OLD_TOKEN);
    cr_assert_leq(copies, 1u, "%zu copies of the token in curl header lists", copies);
    pc_kube_backend_free(kb);
    pc_kube_client_free(c);
    cr_assert_eq(leaked, 0, "%d freed blocks held a token (first: %s)", leaked, leak_where);
}
