/* The informer against a scripted fake API server that misbehaves: a malformed LIST, a garbage
 * watch line, a watch cut inside an event, a 410 ERROR event. The informer must survive each,
 * resume from the right resourceVersion, and report exactly the true transitions.
 * (kapi-sim never sends broken JSON, hence this fixture; it serves canned answers only.) */
#include <podclaim/informer.h>
#include <podclaim/kube.h>

#include "../core/common.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define POD(name, rv, phase)                                                                       \
    "{\"metadata\":{\"name\":\"" name "\",\"namespace\":\"g\",\"uid\":\"u-" name "\","             \
    "\"resourceVersion\":\"" rv "\",\"labels\":{\"podclaim.io/pool\":\"p\","                       \
    "\"podclaim.io/phase\":\"" phase "\"}},\"spec\":{\"containers\":[{\"name\":\"c\"}]},"          \
    "\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}" \
    "}"

/* The script: answers in request order (the last one repeats, and is held open). */
static const char s1[] = /* LIST: cut short, not JSON */
        "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[{\"meta";
static const char s2[] = /* LIST: a, Idle; b, Starting */
        "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[" //
        POD("a", "9", "Idle") "," POD("b", "10", "Starting") "]}";
static const char s3[] = /* WATCH from 10: a garbage line */
        "this is not json\n";
static const char s4[] = /* WATCH from 10: b turns Idle at 11, then it ends inside an event */
        "{\"type\":\"MODIFIED\",\"object\":" POD(
                "b", "11", "Idle") "}\n" //
                                   "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"na";
static const char s4p[] = /* LIST of one pod at 11, NotOlderThan: the server still has 11 */
        "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"11\"},\"items\":[]}";
static const char s5[] = /* WATCH from 11: a replay of b@11, a deleted at 12, then 410 */
        "{\"type\":\"MODIFIED\",\"object\":" POD(
                "b", "11", "Idle") "}\n" //
                                   "{\"type\":\"DELETED\",\"object\":" POD(
                                           "a", "12",
                                           "Idle") "}\n" //
                                                   "{\"type\":\"ERROR\",\"object\":{\"kind\":"
                                                   "\"Status\",\"status\":\"Failure\","
                                                   "\"message\":\"too old resource version: 11 "
                                                   "(13)\",\"reason\":\"Expired\",\"code\":410}}\n";
static const char s6[] = /* LIST: b Idle at 13, c Idle at 13 (a stays gone) */
        "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"13\"},\"items\":[" //
        POD("b", "13", "Idle") "," POD("c", "13", "Idle") "]}";
static const char s7[] = /* WATCH from 13: a bookmark, then held open */
        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":"
        "\"14\"}}}\n";
static const char *const script[] = {s1, s2, s3, s4, s4p, s5, s6, s7};
#define NSCRIPT (sizeof(script) / sizeof(script[0]))

typedef struct fake {
    int lfd;
    int port;
    pthread_t th;
    _Atomic bool stop;
    pthread_mutex_t mu;
    char paths[32][512]; /* request targets, in order */
    _Atomic size_t n;
} fake;

static fake fk;

static void *serve(void *arg)
{
    (void)arg;
    while (!atomic_load(&fk.stop)) {
        struct pollfd p = {fk.lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(fk.lfd, NULL, NULL);
        if (c < 0)
            continue;
        char req[4096];
        size_t len = 0;
        while (len < sizeof(req) - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
            ssize_t r = read(c, req + len, sizeof(req) - 1 - len);
            if (r <= 0)
                break;
            len += (size_t)r;
        }
        req[len] = '\0';
        size_t i = atomic_load(&fk.n);
        if (i < 32) {
            char *sp = strchr(req, ' ');
            char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
            if (sp && sp2)
                snprintf(fk.paths[i], sizeof(fk.paths[i]), "%.*s", (int)(sp2 - sp - 1), sp + 1);
            atomic_store(&fk.n, i + 1);
        }
        const char *body = script[i < NSCRIPT ? i : NSCRIPT - 1];
        char head[256];
        int hl = snprintf(
                head, sizeof(head),
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
        if (write(c, head, (size_t)hl) < 0 || write(c, body, strlen(body)) < 0)
            cr_log_warn("fake server: write failed");
        if (i >= NSCRIPT - 1) {
            /* the last watch stays open until the test ends */
            while (!atomic_load(&fk.stop)) {
                struct pollfd q = {c, POLLIN, 0};
                if (poll(&q, 1, 50) > 0) {
                    char b[64];
                    if (read(c, b, sizeof(b)) <= 0)
                        break;
                }
            }
        }
        close(c);
    }
    return NULL;
}

typedef struct evlog {
    pthread_mutex_t mu;
    char lines[64][128];
    size_t n;
} evlog;

static evlog ev = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void observe(void *arg, pc_informer_change ch, const pc_pod_ref *pod, int64_t recv)
{
    (void)arg;
    (void)recv;
    pthread_mutex_lock(&ev.mu);
    if (ev.n < 64)
        snprintf(ev.lines[ev.n++], 128, "%s %s@%s", pc_informer_change_name(ch), pod->name,
                 pod->resource_version);
    pthread_mutex_unlock(&ev.mu);
}

static size_t n_events(void)
{
    pthread_mutex_lock(&ev.mu);
    size_t n = ev.n;
    pthread_mutex_unlock(&ev.mu);
    return n;
}

Test(informer_garbage, survives_malformed_list_garbage_line_truncation_and_410, .timeout = 30)
{
    fk.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fk.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fk.lfd, 16), 0);
    socklen_t al = sizeof(a);
    getsockname(fk.lfd, (struct sockaddr *)&a, &al);
    fk.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&fk.th, NULL, serve, NULL), 0);

    char url[64], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", fk.port);
    pc_kube_options o = {.server = url, .log_level = PC_KUBE_LOG_INFO, .log_level_set = true};
    pc_kube_client *c;
    cr_assert_eq(pc_kube_client_new(&o, &c, err, sizeof(err)), 0, "%s", err);
    pc_informer_config ic = {.client = c,
                             .namespace_ = "g",
                             .pool = "p",
                             .backoff_initial_ns = 5000000LL,
                             .backoff_max_ns = 20000000LL,
                             .observer = observe};
    pc_informer *inf;
    cr_assert_eq(pc_informer_new(&ic, &inf), 0);
    cr_assert_eq(pc_informer_start(inf), 0);
    /* wait for the held-open watch and the bookmark, which come after every other event */
    cr_assert(PC_TEST_WAIT_UNTIL(atomic_load(&fk.n) >= NSCRIPT && n_events() >= 5, 10000),
              "requests=%zu events=%zu", atomic_load(&fk.n), n_events());
    cr_assert(PC_TEST_WAIT_UNTIL(({
                                     pc_informer_stats s;
                                     pc_informer_stats_read(inf, &s);
                                     s.bookmarks == 1;
                                 }),
                                 5000));
    pc_informer_stats s;
    pc_informer_stats_read(inf, &s);
    pc_informer_free(inf);
    atomic_store(&fk.stop, true);
    pthread_join(fk.th, NULL);
    close(fk.lfd);
    pc_kube_client_free(c);

    const char *want[] = {
            "offer a@9",    /* LIST 2: a idle */
            "offer b@11",   /* watch 4: b idle; the truncated event after it is dropped */
            "withdraw a@9", /* watch 5: the replayed b@11 changes nothing; a deleted (as cached) */
            "offer b@13",   /* relist after 410: b idle at a new version, c new */
            "offer c@13",
    };
    cr_assert_eq(ev.n, 5u, "events: %zu", ev.n);
    for (size_t i = 0; i < 5; i++) {
        /* b and c of the relist may come in either order (hash order) */
        bool found = false;
        for (size_t j = 0; j < ev.n; j++)
            found |= strcmp(ev.lines[j], want[i]) == 0;
        cr_assert(found, "missing \"%s\"", want[i]);
    }
    cr_assert_str_eq(ev.lines[0], want[0]);
    cr_assert_str_eq(ev.lines[1], want[1]);
    cr_assert_str_eq(ev.lines[2], want[2]);
    /* the requests: list, list, then watches resuming from the right versions (after the
     * truncated one, a cut, the check that the server still has 11), relist, watch */
    const char *rvs[] = {NULL,
                         NULL,
                         "resourceVersion=10&",
                         "resourceVersion=10&",
                         "limit=1&resourceVersion=11&resourceVersionMatch=NotOlderThan",
                         "resourceVersion=11&",
                         NULL,
                         "resourceVersion=13&"};
    for (size_t i = 0; i < NSCRIPT; i++) {
        bool watch = strstr(fk.paths[i], "watch=true") != NULL;
        cr_assert_eq(watch, rvs[i] != NULL && strncmp(rvs[i], "limit=", 6) != 0, "request %zu: %s",
                     i + 1, fk.paths[i]);
        if (rvs[i])
            cr_assert(strstr(fk.paths[i], rvs[i]), "request %zu resumes wrong: %s", i + 1,
                      fk.paths[i]);
        cr_assert(strstr(fk.paths[i], "labelSelector=podclaim.io%2Fpool%3Dp"), "request %zu: %s",
                  i + 1, fk.paths[i]);
    }
    cr_assert_geq(s.errors, 3u, "malformed list, garbage line, truncation: %llu",
                  (unsigned long long)s.errors);
    cr_assert_eq(s.relists, 1u);
    cr_assert_eq(s.pods, 2u);
    cr_assert_eq(s.idle, 2u);
}
