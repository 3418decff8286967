/* A test backend whose CAS outcomes the test controls.
 * auto mode: every CAS completes inline with decide() (default: WON).
 * manual mode: every CAS is held until the test calls fake_complete(). */
#ifndef PODCLAIM_TESTS_FAKE_BACKEND_H
#define PODCLAIM_TESTS_FAKE_BACKEND_H

#include <podclaim/backend.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define FAKE_MAX 4096

typedef struct fake_cas {
    char pod[PC_NAME_MAX];
    char rv[PC_RV_MAX];
    char claim_id[PC_CLAIM_ID_MAX];
    pc_cas_done_fn done;
    void *token;
    bool completed;
} fake_cas;

typedef struct fake_backend {
    pc_backend base;
    pthread_mutex_t mu;
    bool manual;
    /* auto mode: outcome for a request; NULL = WON */
    pc_cas_outcome (*decide)(const pc_cas_request *req, void *arg);
    void *decide_arg;
    fake_cas log[FAKE_MAX]; /* every CAS started, in order */
    int n;
    unsigned long next_rv;
} fake_backend;

void fake_init(fake_backend *f, bool manual);
void fake_fini(fake_backend *f);
int fake_started(fake_backend *f); /* how many CAS were started */
/* Copy of started CAS i (0-based). */
fake_cas fake_get(fake_backend *f, int i);
/* Manual mode: complete CAS i with outcome; WON gets a fresh resourceVersion. */
void fake_complete(fake_backend *f, int i, pc_cas_outcome o);
/* Manual mode: complete CAS i as RETRYABLE with the server's Retry-After. */
void fake_complete_retry(fake_backend *f, int i, int64_t retry_after_ns);

#endif
