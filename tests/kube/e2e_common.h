/* Shared by the end-to-end tests: a pool fed by the informer and served by the kube backend,
 * all against one kapi-sim, and the claim-log check of DESIGN.md §4 invariant 1. */
#ifndef PODCLAIM_TESTS_KUBE_E2E_COMMON_H
#define PODCLAIM_TESTS_KUBE_E2E_COMMON_H

#include "ksim.h"

#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include <stdatomic.h>

typedef struct stack {
    pc_kube_client *client;
    pc_kube_backend *backend;
    pc_informer *informer;
    pc_pool *pool;
} stack;

/* Build client + backend + informer + pool for ns/pool on k (plain http). pool_cfg may be
 * NULL (defaults tuned for tests: short reservation TTL and resync). Starts everything. */
int stack_start(stack *s, ksim *k, const char *ns, const char *pool, const pc_pool_config *pool_cfg,
                pc_informer_observer obs, void *obs_arg);
/* Tear down in the documented order: informer stop, pool shutdown, backend free, pool free,
 * informer free, client free. */
void stack_stop(stack *s);

/* One claim slot of a test run: counts its callbacks. */
typedef struct tclaim {
    pc_claim c;
    _Atomic int calls;
    pc_claim_result r;
    char id[32];
} tclaim;

typedef struct run {
    tclaim *claims;
    size_t n;
    _Atomic size_t done;
} run;

/* Enqueue n claims (ids "<prefix>-<i>") with a deadline; retries -EAGAIN. Returns 0. */
int run_claims(run *r, pc_pool *p, size_t n, const char *prefix, int64_t deadline_ms);

/* Check /sim/claims: no (pod, idleResourceVersion) twice, each of our OK claims logged
 * exactly once with the resourceVersion it reported, and nothing logged for our prefix that
 * did not end OK. Returns the number of log entries seen; asserts (criterion) on violation. */
size_t check_claim_log(ksim *k, run *r, const char *prefix);

#endif
