/* A test backend whose CAS outcomes the test controls. See fake_backend.h. */
#include "fake_backend.h"

#include <stdio.h>
#include <string.h>

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
}

void fake_fini(fake_backend *f)
{
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
    c->completed = true;
    char rv[32];
    snprintf(rv, sizeof(rv), "%lu", ++f->next_rv);
    pc_cas_done_fn done = c->done;
    void *token = c->token;
    pthread_mutex_unlock(&f->mu);
    done(token, o, o == PC_CAS_WON ? rv : NULL, o == PC_CAS_WON ? NULL : "completed by the test",
         retry_after_ns);
}
