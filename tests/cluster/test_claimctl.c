/* The SandboxClaim controller against kapi-sim --kubelet-only, with the pool controller
 * keeping the pool warm and the real scheduler (informer + kube backend) serving claims. */
#include "../kube/e2e_common.h"
#include "claimctl.h"
#include "common.h"
#include "kevents.h"
#include "poolctl.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ksim sim;
static pc_kube_client *kc;
static pc_kevents *kev;
static pc_poolctl *pctl;
static pc_claimctl *cctl;
static stack stk;
static _Atomic(pc_pool *) served; /* what lookup answers for default/web */
static _Atomic int outcomes;

static pc_pool *lookup(void *arg, const char *ns, const char *pool)
{
    (void)arg;
    if (strcmp(ns, "default") == 0 && strcmp(pool, "web") == 0)
        return atomic_load(&served);
    return NULL;
}

static void on_outcome(void *arg, const pc_claimctl_outcome *o)
{
    (void)arg, (void)o;
    atomic_fetch_add(&outcomes, 1);
}

static void start_claimctl(void)
{
    char err[256];
    pc_claimctl_config cc = {.client = kc,
                             .namespace_ = "default",
                             .lookup = lookup,
                             .on_outcome = on_outcome,
                             .unknown_pool_retry_ns = 100000000LL};
    cr_assert_eq(pc_claimctl_new(&cc, &cctl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(pc_claimctl_start(cctl), 0);
}

static void start_stack(void)
{
    cr_assert_eq(stack_start(&stk, &sim, "default", "web", NULL, NULL, NULL), 0);
    atomic_store(&served, stk.pool);
}

/* The daemon's shutdown order: pools drain (claims still waiting end SHUTDOWN and stay
 * Pending), then the claim controller stops, then the rest. */
static void stop_replica(void)
{
    if (stk.pool)
        pc_pool_shutdown(stk.pool);
    pc_claimctl_free(cctl);
    cctl = NULL;
    atomic_store(&served, NULL);
    if (stk.client)
        stack_stop(&stk);
}

static void start(int replicas)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms", "30", "--restart-ms", "30", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    char err[256];
    pc_kube_options o = {.server = sim.url};
    cr_assert_eq(pc_kube_client_new(&o, &kc, err, sizeof(err)), 0, "%s", err);
    pc_kevents_config ec = {.instance = "test-replica"};
    cr_assert_eq(pc_kevents_new(&ec, &kev), 0);
    pc_poolctl_config pc = {.client = kc, .namespace_ = "default", .events = kev};
    cr_assert_eq(pc_poolctl_new(&pc, &pctl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(pc_poolctl_start(pctl), 0);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxPool\","
             "\"metadata\":{\"name\":\"web\"},\"spec\":{\"replicas\":%d,"
             "\"template\":{\"spec\":{\"containers\":[{\"name\":\"sandbox\",\"image\":"
             "\"img:1\"}]}}}}",
             replicas);
    json_t *p = ksim_json(&sim, "POST",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools", body);
    cr_assert(p);
    json_decref(p);
    start_stack();
    start_claimctl();
}

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner), not one process each as Criterion runs them. */
static void setup(void)
{
    memset(&sim, 0, sizeof(sim));
    memset(&stk, 0, sizeof(stk));
    kc = NULL;
    kev = NULL;
    pctl = NULL;
    cctl = NULL;
    atomic_store(&served, NULL);
    atomic_store(&outcomes, 0);
}

static void fini(void)
{
    stop_replica();
    pc_poolctl_free(pctl);
    pctl = NULL;
    pc_kevents_free(kev);
    kev = NULL;
    pc_kube_client_free(kc);
    kc = NULL;
    ksim_stop(&sim);
}

static void create_claim(const char *name, const char *extra)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxClaim\","
             "\"metadata\":{\"name\":\"%s\"},\"spec\":{\"pool\":\"web\"%s}}",
             name, extra ? extra : "");
    json_t *c = ksim_json(&sim, "POST",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims", body);
    cr_assert(c, "create claim %s", name);
    json_decref(c);
}

static json_t *get_claim(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/%s",
             name);
    return ksim_json(&sim, "GET", path, NULL);
}

static const char *st_field(const json_t *claim, const char *f)
{
    return json_string_value(json_object_get(json_object_get(claim, "status"), f));
}

static bool claim_phase(const char *name, const char *phase)
{
    json_t *c = get_claim(name);
    bool ok = c && strcmp(st_field(c, "phase") ?: "", phase) == 0;
    json_decref(c);
    return ok;
}

static json_t *get_pod(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", name);
    return ksim_json(&sim, "GET", path, NULL);
}

static const char *meta_map(const json_t *o, const char *map, const char *k)
{
    return json_string_value(
            json_object_get(json_object_get(json_object_get(o, "metadata"), map), k));
}

static size_t idle_count(void)
{
    json_t *l = ksim_json(
            &sim, "GET", "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%2Fphase%3DIdle",
            NULL);
    size_t n = json_array_size(json_object_get(l, "items"));
    json_decref(l);
    return n;
}

static void set_replicas(int n)
{
    char body[64];
    snprintf(body, sizeof(body), "{\"spec\":{\"replicas\":%d}}", n);
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    cr_assert_eq(
            pc_kube_conn_request(c, "PATCH",
                                 "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web",
                                 "application/merge-patch+json", body, strlen(body), &r),
            0);
    cr_assert_eq(r.status, 200);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
}

/* The claim log: how many transitions carry this claim id. */
static int logged(const char *claim_id)
{
    json_t *log = ksim_json(&sim, "GET", "/sim/claims", NULL);
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        const char *id = json_string_value(json_object_get(e, "claimId"));
        n += id && strcmp(id, claim_id) == 0;
    }
    json_decref(log);
    return n;
}

static void claim_id_of(const char *name, char *buf, size_t len)
{
    json_t *c = get_claim(name);
    snprintf(buf, len, "sbc-%s",
             json_string_value(json_object_get(json_object_get(c, "metadata"), "uid")) ?: "");
    json_decref(c);
}

Test(claimctl, a_claim_is_bound_to_a_pod_that_carries_its_options, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(2);
    create_claim("c1", ",\"priority\":0,\"images\":{\"sandbox\":\"img:9\"},"
                       "\"labels\":{\"app\":\"x\"},\"annotations\":{\"note\":\"y\"}");
    cr_assert(PC_TEST_WAIT(claim_phase("c1", "Bound"), 20000), "c1 not Bound");
    json_t *c = get_claim("c1");
    char id[80];
    claim_id_of("c1", id, sizeof(id));
    cr_assert_str_eq(st_field(c, "claimId"), id);
    json_t *pod = get_pod(st_field(c, "pod"));
    cr_assert(pod, "bound pod missing");
    cr_assert_str_eq(meta_map(pod, "labels", "app"), "x");
    cr_assert_str_eq(meta_map(pod, "labels", "podclaim.io/phase"), "Running");
    cr_assert_str_eq(meta_map(pod, "annotations", "note"), "y");
    cr_assert_str_eq(meta_map(pod, "annotations", "podclaim.io/claim-id"), id);
    cr_assert_str_eq(
            json_string_value(json_object_get(
                    json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0),
                    "image")),
            "img:9");
    json_decref(pod);
    json_decref(c);
    cr_assert_eq(logged(id), 1, "claimed %d times", logged(id));
    cr_assert(PC_TEST_WAIT(atomic_load(&outcomes) == 1, 5000));
}

Test(claimctl, deleting_a_pending_claim_cancels_it, .init = setup, .fini = fini, .timeout = 90)
{
    start(0);
    create_claim("waits", NULL);
    cr_assert(PC_TEST_WAIT(claim_phase("waits", "Pending"), 10000), "not Pending");
    char id[80];
    claim_id_of("waits", id, sizeof(id));
    json_t *d =
            ksim_json(&sim, "DELETE",
                      "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/waits", NULL);
    json_decref(d);
    pc_claimctl_stats st;
    cr_assert(PC_TEST_WAIT(({
                               pc_claimctl_stats_read(cctl, &st);
                               st.cancelled == 1;
                           }),
                           10000),
              "the claim was not cancelled");
    /* a pod appears: the cancelled claim does not take it, a new claim does */
    set_replicas(1);
    cr_assert(PC_TEST_WAIT(idle_count() == 1, 10000));
    pc_claim_result r;
    cr_assert_eq(pc_pool_claim(stk.pool, &(pc_claim_opts){0}, 0, 10000000000LL, &r), 0);
    cr_assert_eq(r.status, PC_CLAIM_OK, "%s", r.error);
    cr_assert_eq(logged(id), 0, "the cancelled claim won a pod");
}

Test(claimctl, deleting_a_bound_claim_releases_its_pod, .init = setup, .fini = fini, .timeout = 90)
{
    start(1);
    create_claim("c1", NULL);
    cr_assert(PC_TEST_WAIT(claim_phase("c1", "Bound"), 20000));
    json_t *c = get_claim("c1");
    char pod[PC_NAME_MAX];
    snprintf(pod, sizeof(pod), "%s", st_field(c, "pod"));
    json_decref(c);
    json_t *d = ksim_json(&sim, "DELETE",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/c1", NULL);
    json_decref(d);
    /* released (Stopping), then recycled by the pool controller or deleted as surplus */
    cr_assert(PC_TEST_WAIT(({
                               json_t *p = get_pod(pod);
                               const char *ph =
                                       p ? meta_map(p, "labels", "podclaim.io/phase") : NULL;
                               bool released = !p || (ph && strcmp(ph, "Running") != 0);
                               json_decref(p);
                               released;
                           }),
                           10000),
              "pod %s still Running after its claim was deleted", pod);
    /* the controller counts the release after the server answered it */
    pc_claimctl_stats st;
    cr_assert(PC_TEST_WAIT(({
                               pc_claimctl_stats_read(cctl, &st);
                               st.released == 1;
                           }),
                           5000),
              "released %llu", (unsigned long long)st.released);
}

/* Bound and Pending claims across a restart of the replica: the Bound one is not served again,
 * the Pending ones are served once a pod is there, each claim wins exactly one pod. */
Test(claimctl, restart_keeps_bound_claims_and_serves_pending_ones, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(1);
    create_claim("a", NULL);
    cr_assert(PC_TEST_WAIT(claim_phase("a", "Bound"), 20000));
    json_t *ca = get_claim("a");
    char pod_a[PC_NAME_MAX];
    snprintf(pod_a, sizeof(pod_a), "%s", st_field(ca, "pod"));
    json_decref(ca);
    set_replicas(0);
    cr_assert(PC_TEST_WAIT(idle_count() == 0, 10000));
    create_claim("b", NULL);
    create_claim("c", NULL);
    cr_assert(PC_TEST_WAIT(claim_phase("b", "Pending") && claim_phase("c", "Pending"), 10000));

    stop_replica(); /* "restart": a new claim controller and scheduler, nothing in memory */
    start_stack();
    start_claimctl();
    set_replicas(2);
    cr_assert(PC_TEST_WAIT(claim_phase("b", "Bound") && claim_phase("c", "Bound"), 20000),
              "pending claims not served after the restart");
    cr_assert(claim_phase("a", "Bound"));
    ca = get_claim("a");
    cr_assert_str_eq(st_field(ca, "pod"), pod_a, "the bound claim was served again");
    json_decref(ca);
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        char id[80];
        claim_id_of(names[i], id, sizeof(id));
        cr_assert_eq(logged(id), 1, "claim %s won %d pods", names[i], logged(id));
    }
    pc_claimctl_stats st;
    pc_claimctl_stats_read(cctl, &st);
    cr_assert_eq(st.enqueued, 2, "the new replica enqueued %llu claims",
                 (unsigned long long)st.enqueued);
}

/* A replica won a pod for a claim and died before writing Bound: the next one binds the claim
 * to that pod instead of claiming a second one. */
Test(claimctl, a_claim_won_before_a_crash_is_bound_not_served_twice, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(2);
    stop_replica(); /* no claim controller for now */
    cr_assert(PC_TEST_WAIT(idle_count() == 2, 10000));
    create_claim("lost", NULL);
    json_t *c = get_claim("lost");
    const char *uid = json_string_value(json_object_get(json_object_get(c, "metadata"), "uid"));
    char id[80];
    snprintf(id, sizeof(id), "sbc-%s", uid);
    /* the claim's PATCH as the dead replica sent it */
    json_t *l = ksim_json(
            &sim, "GET", "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%2Fphase%3DIdle",
            NULL);
    json_t *pod = json_array_get(json_object_get(l, "items"), 0);
    char path[300], body[512], pod_name[PC_NAME_MAX];
    snprintf(pod_name, sizeof(pod_name), "%s",
             json_string_value(json_object_get(json_object_get(pod, "metadata"), "name")));
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", pod_name);
    snprintf(
            body, sizeof(body),
            "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
            "\"Running\",\"podclaim.io/sandboxclaim-uid\":\"%s\"},\"annotations\":{"
            "\"podclaim.io/claim-id\":\"%s\"}}}",
            json_string_value(json_object_get(json_object_get(pod, "metadata"), "resourceVersion")),
            uid, id);
    json_decref(l);
    json_decref(c);
    pc_kube_conn *k;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &k), 0);
    pc_kube_response r;
    cr_assert_eq(pc_kube_conn_request(k, "PATCH", path, "application/strategic-merge-patch+json",
                                      body, strlen(body), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(k);

    start_stack();
    start_claimctl();
    cr_assert(PC_TEST_WAIT(claim_phase("lost", "Bound"), 20000));
    c = get_claim("lost");
    cr_assert_str_eq(st_field(c, "pod"), pod_name, "bound to another pod");
    json_decref(c);
    cr_assert_eq(logged(id), 1, "the claim won %d pods", logged(id));
    pc_claimctl_stats st;
    pc_claimctl_stats_read(cctl, &st);
    cr_assert_eq(st.recovered, 1);
    cr_assert_eq(st.enqueued, 0);
}

/* timeoutSeconds counts from creation: a claim that cannot be served in time fails. */
Test(claimctl, a_claim_that_times_out_fails, .init = setup, .fini = fini, .timeout = 90)
{
    start(0);
    create_claim("late", ",\"timeoutSeconds\":1");
    cr_assert(PC_TEST_WAIT(claim_phase("late", "Failed"), 15000), "not Failed");
    json_t *c = get_claim("late");
    cr_assert_str_eq(st_field(c, "reason"), "Timeout");
    json_decref(c);
}
