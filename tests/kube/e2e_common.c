/* Shared end-to-end helpers (see e2e_common.h). */
#include "e2e_common.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int stack_start(stack *s, ksim *k, const char *ns, const char *pool, const pc_pool_config *pool_cfg,
                pc_informer_observer obs, void *obs_arg)
{
    memset(s, 0, sizeof(*s));
    char err[256];
    pc_kube_options o = {.server = k->url, .request_timeout_ns = 5000000000LL};
    int rc = pc_kube_client_new(&o, &s->client, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "client: %s\n", err);
        return rc;
    }
    pc_kube_backend_options bo = {.max_inflight = 256, .max_connections = 8};
    rc = pc_kube_backend_new(s->client, &bo, &s->backend, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "backend: %s\n", err);
        return rc;
    }
    pc_informer_config ic = {.client = s->client,
                             .namespace_ = ns,
                             .pool = pool,
                             .backoff_initial_ns = 10000000LL,
                             .backoff_max_ns = 200000000LL,
                             .observer = obs,
                             .observer_arg = obs_arg};
    rc = pc_informer_new(&ic, &s->informer);
    if (rc)
        return rc;
    pc_pool_config pc;
    if (pool_cfg) {
        pc = *pool_cfg;
    } else {
        memset(&pc, 0, sizeof(pc));
        pc.reservation_ttl_ns = 300000000LL; /* injected 409s leave pods reserved: retry soon */
        pc.resync_period_ns = 200000000LL;
        pc.retry_backoff_ns = 5000000LL;
        pc.retry_limit = 10;
    }
    pc.namespace_ = ns;
    pc.name = pool;
    pc.resync = pc_informer_resync_hook;
    pc.resync_arg = s->informer;
    rc = pc_pool_new(&pc, pc_kube_backend_iface(s->backend), &s->pool);
    if (rc)
        return rc;
    pc_informer_set_pool(s->informer, s->pool);
    if ((rc = pc_pool_start(s->pool)) || (rc = pc_informer_start(s->informer)))
        return rc;
    return 0;
}

void stack_stop(stack *s)
{
    if (s->informer)
        pc_informer_stop(s->informer);
    /* Drain the pool, then join the backend thread (so that no completion is still running
     * inside the pool), then free the pool. */
    if (s->pool)
        pc_pool_shutdown(s->pool);
    pc_kube_backend_free(s->backend);
    pc_pool_free(s->pool);
    pc_informer_free(s->informer);
    pc_kube_client_free(s->client);
    memset(s, 0, sizeof(*s));
}

static void on_result(pc_claim *c, const pc_claim_result *res, void *arg)
{
    run *r = arg;
    tclaim *t = (tclaim *)c; /* c is the first member */
    if (atomic_fetch_add_explicit(&t->calls, 1, memory_order_relaxed) == 0)
        t->r = *res;
    /* release: the waiting test thread reads t->r after seeing done */
    atomic_fetch_add_explicit(&r->done, 1, memory_order_release);
}

int run_claims(run *r, pc_pool *p, size_t n, const char *prefix, int64_t deadline_ms)
{
    r->claims = calloc(n, sizeof(tclaim));
    r->n = n;
    atomic_store(&r->done, 0);
    static pc_kv ann[] = {{"test", "e2e"}};
    static pc_kv labels[] = {{"owner", "tests"}};
    static pc_kv images[] = {{"sandbox", "registry.local/podclaim/sandbox:claimed"}};
    static const pc_claim_opts opts = {images, 1, labels, 1, ann, 1, NULL};
    for (size_t i = 0; i < n; i++) {
        tclaim *t = &r->claims[i];
        pc_claim_init(&t->c, (int)(i % PC_PRIORITY_LEVELS), on_result, r);
        snprintf(t->id, sizeof(t->id), "%s-%zu", prefix, i);
        t->c.id = t->id;
        t->c.opts = opts;
        t->c.deadline_ns = pc_now_ns() + deadline_ms * 1000000LL;
        int rc;
        while ((rc = pc_pool_enqueue(p, &t->c)) == -EAGAIN) {
            struct timespec ts = {0, 1000000}; /* backpressure: the inbox drains in us */
            nanosleep(&ts, NULL);
        }
        if (rc)
            return rc;
    }
    return 0;
}

size_t check_claim_log(ksim *k, run *r, const char *prefix)
{
    json_t *log = ksim_json(k, "GET", "/sim/claims", NULL);
    cr_assert_not_null(log, "GET /sim/claims failed");
    json_t *arr = json_object_get(log, "claims");
    cr_assert_eq(json_integer_value(json_object_get(log, "dropped")), 0);
    json_t *periods = json_object(); /* "pod@idleRV" -> claimId */
    json_t *ours = json_object();    /* claimId -> resourceVersion */
    size_t i;
    json_t *e;
    size_t plen = strlen(prefix);
    json_array_foreach(arr, i, e)
    {
        const char *pod = json_string_value(json_object_get(e, "pod"));
        const char *irv = json_string_value(json_object_get(e, "idleResourceVersion"));
        const char *id = json_string_value(json_object_get(e, "claimId"));
        char key[400];
        snprintf(key, sizeof(key), "%s@%s", pod, irv);
        cr_assert_null(json_object_get(periods, key), "idle period %s won twice: by %s and by %s",
                       key, json_string_value(json_object_get(periods, key)), id ? id : "(none)");
        json_object_set_new(periods, key, json_string(id ? id : ""));
        if (id && strncmp(id, prefix, plen) == 0 && id[plen] == '-') {
            cr_assert_null(json_object_get(ours, id), "claim %s logged twice", id);
            json_object_set(ours, id, json_object_get(e, "resourceVersion"));
        }
    }
    size_t ok = 0;
    for (size_t c = 0; c < r->n; c++) {
        tclaim *t = &r->claims[c];
        json_t *rv = json_object_get(ours, t->id);
        if (t->r.status == PC_CLAIM_OK) {
            ok++;
            cr_assert_not_null(rv, "claim %s OK on %s but not in the claim log", t->id,
                               t->r.pod_name);
            cr_assert_str_eq(json_string_value(rv), t->r.resource_version,
                             "claim %s: reported rv %s, log says %s", t->id, t->r.resource_version,
                             json_string_value(rv));
        } else {
            cr_assert_null(rv, "claim %s ended %s but won pod in the log", t->id,
                           pc_claim_status_name(t->r.status));
        }
    }
    cr_assert_eq(json_object_size(ours), ok, "log has %zu of our claims, %zu OK",
                 json_object_size(ours), ok);
    size_t n = json_array_size(arr);
    json_decref(periods);
    json_decref(ours);
    json_decref(log);
    return n;
}
