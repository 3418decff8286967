/* A test backend whose CAS outcomes the test controls. See fake_backend.h. */
#include "fake_backend.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Driven and attached: the CAS is decided now and reported by the attached thread's wait.
 * Called with mu held. */
static bool defer_locked(fake_backend *f, fake_cas *c, pc_cas_outcome o, int64_t retry_after_ns)
{
    if (!f->driven || !f->attached)
        return false;
    c->ready = true;
    c->completed = true;
    c->outcome = o;
    c->retry_after_ns = retry_after_ns;
    snprintf(c->new_rv, sizeof(c->new_rv), "%lu", ++f->next_rv);
    f->n_ready++;
    /* The attached thread itself needs no wake: it waits before it sleeps. */
    if (!pthread_equal(pthread_self(), f->driver)) {
        f->woken = true;
        pthread_cond_broadcast(&f->cv);
    }
    return true;
}

static int fake_cas_start(pc_backend *b, const pc_cas_request *req, pc_cas_done_fn done,
                          void *token)
{
    fake_backend *f = b->impl;
    pthread_mutex_lock(&f->mu);
    if (f->n >= FAKE_MAX) {
        pthread_mutex_unlock(&f->mu);
        return -12; /* -ENOMEM */
    }
    fake_cas *c = &f->log[f->n++];
    snprintf(c->pod, sizeof(c->pod), "%s", req->pod.name);
    snprintf(c->rv, sizeof(c->rv), "%s", req->pod.resource_version);
    snprintf(c->claim_id, sizeof(c->claim_id), "%s", req->claim_id);
    c->done = done;
    c->token = token;
    c->completed = false;
    if (f->manual) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    pc_cas_outcome o = f->decide ? f->decide(req, f->decide_arg) : PC_CAS_WON;
    if (defer_locked(f, c, o, 0)) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    char rv[32];
    snprintf(rv, sizeof(rv), "%lu", ++f->next_rv);
    c->completed = true;
    pthread_mutex_unlock(&f->mu);
    done(token, o, o == PC_CAS_WON ? rv : NULL, o == PC_CAS_WON ? NULL : "injected by the test", 0);
    return 0;
}

void fake_init(fake_backend *f, bool manual)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->manual = manual;
    f->next_rv = 1000000;
    f->base.cas_start = fake_cas_start;
    f->base.impl = f;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
#ifdef FAKE_DRIVEN
    fake_drive(f);
#endif
}

void fake_fini(fake_backend *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

int fake_started(fake_backend *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

fake_cas fake_get(fake_backend *f, int i)
{
    pthread_mutex_lock(&f->mu);
    fake_cas c = f->log[i];
    pthread_mutex_unlock(&f->mu);
    return c;
}

static void complete(fake_backend *f, int i, pc_cas_outcome o, int64_t retry_after_ns);

void fake_complete(fake_backend *f, int i, pc_cas_outcome o)
{
    complete(f, i, o, 0);
}

void fake_complete_retry(fake_backend *f, int i, int64_t retry_after_ns)
{
    complete(f, i, PC_CAS_RETRYABLE, retry_after_ns);
}

static void complete(fake_backend *f, int i, pc_cas_outcome o, int64_t retry_after_ns)
{
    pthread_mutex_lock(&f->mu);
    fake_cas *c = &f->log[i];
    if (c->completed) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    if (defer_locked(f, c, o, retry_after_ns)) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    c->completed = true;
    char rv[32];
    snprintf(rv, sizeof(rv), "%lu", ++f->next_rv);
    pc_cas_done_fn done = c->done;
    void *token = c->token;
    pthread_mutex_unlock(&f->mu);
    done(token, o, o == PC_CAS_WON ? rv : NULL, o == PC_CAS_WON ? NULL : "completed by the test",
         retry_after_ns);
}

/* ---- driven mode: backend.h's attach / wait / wake / detach ------------------------------ */

static int drv_attach(pc_backend *b)
{
    fake_backend *f = b->impl;
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    if (f->attached) {
        f->refused++;
        rc = -EBUSY;
    } else {
        f->attached = true;
        f->driver = pthread_self();
        f->attaches++;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Report every decided CAS (done() without the lock: it may start another CAS). */
static int report_ready(fake_backend *f)
{
    int n = 0;
    while (f->n_ready > 0) {
        fake_cas *c = NULL;
        for (int i = 0; i < f->n; i++)
            if (f->log[i].ready) {
                c = &f->log[i];
                break;
            }
        c->ready = false;
        f->n_ready--;
        f->reported++;
        if (!pthread_equal(pthread_self(), f->driver))
            f->off_driver++;
        pc_cas_outcome o = c->outcome;
        char rv[32];
        snprintf(rv, sizeof(rv), "%s", c->new_rv);
        pc_cas_done_fn done = c->done;
        void *token = c->token;
        int64_t ra = c->retry_after_ns;
        pthread_mutex_unlock(&f->mu);
        done(token, o, o == PC_CAS_WON ? rv : NULL,
             o == PC_CAS_WON ? NULL : "completed by the test (driven)", ra);
        pthread_mutex_lock(&f->mu);
        n++;
    }
    return n;
}

static void drv_wait(pc_backend *b, int64_t deadline_ns)
{
    fake_backend *f = b->impl;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        if (report_ready(f) > 0 || deadline_ns < 0)
            break;
        if (f->woken)
            break;
        struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
        f->sleeping++;
        int rc = deadline_ns > 0 ? pthread_cond_timedwait(&f->cv, &f->mu, &ts)
                                 : pthread_cond_wait(&f->cv, &f->mu);
        f->sleeping--;
        if (rc == ETIMEDOUT) {
            report_ready(f);
            break;
        }
    }
    f->woken = false;
    pthread_mutex_unlock(&f->mu);
}

static void drv_wake(pc_backend *b)
{
    fake_backend *f = b->impl;
    pthread_mutex_lock(&f->mu);
    f->woken = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void drv_detach(pc_backend *b)
{
    fake_backend *f = b->impl;
    pthread_mutex_lock(&f->mu);
    /* Nothing decided may be left for a wait that will not come: report it inline. */
    report_ready(f);
    f->attached = false;
    f->detaches++;
    pthread_mutex_unlock(&f->mu);
}

void fake_drive(fake_backend *f)
{
    f->driven = true;
    f->base.attach = drv_attach;
    f->base.wait = drv_wait;
    f->base.wake = drv_wake;
    f->base.detach = drv_detach;
}

fake_drive_stats fake_drive_stats_get(fake_backend *f)
{
    pthread_mutex_lock(&f->mu);
    fake_drive_stats s = {.attached = f->attached,
                          .attaches = f->attaches,
                          .refused = f->refused,
                          .detaches = f->detaches,
                          .sleeping = f->sleeping,
                          .reported = f->reported,
                          .off_driver = f->off_driver};
    pthread_mutex_unlock(&f->mu);
    return s;
}
