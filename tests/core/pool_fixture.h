/* The fixture the pool tests share: one pool on the controllable fake backend, claims in a
 * static array whose callbacks are recorded, and helpers that wait with a deadline.
 * Each Criterion test runs in its own process, so the globals start fresh per test. */
#ifndef PODCLAIM_TESTS_POOL_FIXTURE_H
#define PODCLAIM_TESTS_POOL_FIXTURE_H

#include "common.h"
#include "fake_backend.h"

#include <podclaim/podclaim.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MAXC 256

typedef struct rec {
    pthread_mutex_t mu;
    int order[MAXC]; /* claim index, in callback order */
    int n;
    int calls[MAXC];
    pc_claim_result res[MAXC];
} rec;

extern rec R;
extern pc_claim C[MAXC];
extern char ids[MAXC][16];
extern fake_backend F;
extern pc_pool *P;

/* The callback of every claim in C: records its result under R.mu. */
void on_result(pc_claim *c, const pc_claim_result *r, void *arg);
int results(void); /* callbacks so far */

/* New pool "ns/pool" on F (manual: CAS held until fake_complete). A reservation TTL of an
 * hour unless cfg says otherwise. Not started. */
void setup_pool(bool manual, pc_pool_config cfg);
void start(void);
void teardown_pool(void); /* .fini of every pool test */

/* Claim i with id "c<i>" and priority prio; asserts that enqueue accepts it. */
void enqueue(int i, int prio);
void offer(const char *name, const char *rv);

void wait_queue_len(uint64_t n);
void wait_results(int n);
void wait_started(int n); /* CAS calls started on F */
void serve_all(int n);    /* offer pod-0..pod-<n-1> at "1", wait for n results */

/* The value of an unlabelled-suffix metric sample "name{...} value". */
uint64_t metric(const char *name);

/* Process CPU time used while the calling thread sleeps for window_ms: what the pool's own
 * threads burn when nothing is asked of them. */
int64_t cpu_ns_during_sleep(int window_ms);

#endif
