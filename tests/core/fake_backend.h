/* A test backend whose CAS outcomes the test controls.
 * auto mode: every CAS completes inline with decide() (default: WON).
 * manual mode: every CAS is held until the test calls fake_complete().
 * driven (fake_drive, or every fake of a build with FAKE_DRIVEN defined): the backend also
 * has backend.h's loop hooks. While a pool's scheduler is attached, no done() is called by
 * cas_start or fake_complete: they mark the CAS decided and wake the attached thread, whose
 * wait reports it (the Kubernetes backend's shape). Not attached: as above. */
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
    /* driven: decided, to be reported by the attached thread's wait */
    bool ready;
    pc_cas_outcome outcome;
    int64_t retry_after_ns;
    char new_rv[32];
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
    /* driven mode; all under mu */
    bool driven;
    pthread_cond_t cv; /* woken or a CAS decided (CLOCK_MONOTONIC) */
    bool attached;
    pthread_t driver;
    int attaches, refused, detaches;
    bool woken;     /* a wake not yet consumed by a wait */
    int sleeping;   /* the attached thread sleeps in wait */
    int n_ready;    /* CASes decided, not yet reported */
    int reported;   /* reported by wait */
    int off_driver; /* reported by wait, but wait ran on another thread than attach's */
} fake_backend;

void fake_init(fake_backend *f, bool manual);
/* Give f backend.h's attach/wait/wake/detach (before the pool starts). */
void fake_drive(fake_backend *f);
/* Copies of the driven-mode counters, under the lock. */
typedef struct fake_drive_stats {
    bool attached;
    int attaches, refused, detaches, sleeping, reported, off_driver;
} fake_drive_stats;
fake_drive_stats fake_drive_stats_get(fake_backend *f);
void fake_fini(fake_backend *f);
int fake_started(fake_backend *f); /* how many CAS were started */
/* Copy of started CAS i (0-based). */
fake_cas fake_get(fake_backend *f, int i);
/* Manual mode: complete CAS i with outcome; WON gets a fresh resourceVersion. */
void fake_complete(fake_backend *f, int i, pc_cas_outcome o);
/* Manual mode: complete CAS i as RETRYABLE with the server's Retry-After. */
void fake_complete_retry(fake_backend *f, int i, int64_t retry_after_ns);

#endif
