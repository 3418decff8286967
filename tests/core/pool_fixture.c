/* The pool tests' shared fixture. See pool_fixture.h. */
#include "pool_fixture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

rec R;
pc_claim C[MAXC];
char ids[MAXC][16];
fake_backend F;
pc_pool *P;

void on_result(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)arg;
    int i = (int)(c - C);
    pthread_mutex_lock(&R.mu);
    R.calls[i]++;
    R.res[i] = *r;
    R.order[R.n++] = i;
    pthread_mutex_unlock(&R.mu);
}

int results(void)
{
    pthread_mutex_lock(&R.mu);
    int n = R.n;
    pthread_mutex_unlock(&R.mu);
    return n;
}

void setup_pool(bool manual, pc_pool_config cfg)
{
    memset(&R, 0, sizeof(R));
    pthread_mutex_init(&R.mu, NULL);
    memset(C, 0, sizeof(C));
    fake_init(&F, manual);
    if (!cfg.namespace_)
        cfg.namespace_ = "ns";
    if (!cfg.name)
        cfg.name = "pool";
    /* Reservations hold for the whole test unless the test says otherwise: the default TTL
     * (5 s) could lapse mid-test on a slow run and let a reserved pod be dispatched again. */
    if (!cfg.reservation_ttl_ns)
        cfg.reservation_ttl_ns = 3600 * 1000000000LL;
    int err = pc_pool_new(&cfg, &F.base, &P);
    cr_assert_eq(err, 0, "pc_pool_new: %s", pc_strerror(err));
}

void start(void)
{
    int err = pc_pool_start(P);
    cr_assert_eq(err, 0, "pc_pool_start: %s", pc_strerror(err));
}

static void *shutdown_thread(void *arg)
{
    pc_pool_shutdown(arg);
    return NULL;
}

void teardown_pool(void)
{
    if (P && F.manual) {
        /* A failed test may leave CAS calls held; answer them so the drain can end. */
        pthread_t t;
        pthread_create(&t, NULL, shutdown_thread, P);
        while (pthread_tryjoin_np(t, NULL) != 0) {
            for (int i = 0, n = fake_started(&F); i < n; i++)
                fake_complete(&F, i, PC_CAS_CONFLICT);
            pc_test_pause();
        }
    }
    pc_pool_free(P);
    P = NULL;
    fake_fini(&F);
}

void enqueue(int i, int prio)
{
    pc_claim_init(&C[i], prio, on_result, NULL);
    snprintf(ids[i], sizeof(ids[i]), "c%d", i);
    C[i].id = ids[i];
    int err = pc_pool_enqueue(P, &C[i]);
    cr_assert_eq(err, 0, "enqueue claim %d: %s", i, pc_strerror(err));
}

void offer(const char *name, const char *rv)
{
    pc_pod_ref pod = {.namespace_ = "ns", .name = name, .uid = "u", .resource_version = rv};
    cr_assert_eq(pc_pool_offer_idle(P, &pod), 0);
}

void wait_queue_len(uint64_t n)
{
    cr_assert(PC_TEST_WAIT_UNTIL(pc_pool_snapshot(P).queue_len == n, 5000),
              "queue_len: expected %lu, got %lu", (unsigned long)n,
              (unsigned long)pc_pool_snapshot(P).queue_len);
}

void wait_results(int n)
{
    cr_assert(PC_TEST_WAIT_UNTIL(results() >= n, 5000), "results: expected %d, got %d", n,
              results());
}

void wait_started(int n)
{
    cr_assert(PC_TEST_WAIT_UNTIL(fake_started(&F) >= n, 5000), "CAS started: expected %d, got %d",
              n, fake_started(&F));
}

void serve_all(int n)
{
    char name[16];
    for (int k = 0; k < n; k++) {
        snprintf(name, sizeof(name), "pod-%d", k);
        offer(name, "1");
    }
    wait_results(n);
}

uint64_t metric(const char *name)
{
    static char buf[16384];
    pc_pool_metrics_render(P, buf, sizeof(buf));
    char *line = strstr(buf, name);
    while (line && (line[strlen(name)] != '{' || line[-1] != '\n'))
        line = strstr(line + 1, name);
    cr_assert_not_null(line, "metric %s not rendered", name);
    return strtoull(strchr(line, '}') + 2, NULL, 10);
}

int64_t cpu_ns_during_sleep(int window_ms)
{
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    /* A measurement window, not synchronisation: nothing is waited for here. */
    struct timespec ts = {window_ms / 1000, (long)(window_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    return (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
}
