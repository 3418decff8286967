/* The SandboxPool controller against kapi-sim --kubelet-only (the only thing that creates,
 * idles and recycles pool pods here is the controller under test). */
#include "../kube/e2e_common.h"
#include "common.h"
#include "kevents.h"
#include "poolctl.h"
#include "watch.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ksim sim;
static pc_kube_client *kc;
static pc_kevents *kev;
static pc_poolctl *ctl;
static _Atomic bool leader = true;
/* the fake scheduler figures reported for every pool */
static _Atomic uint64_t snap_queue, snap_idle, snap_calls;
static _Atomic bool snap_moving; /* lastDispatchTime changes on every call */
/* on_pool calls: appeared or spec changed (with the object), went away (NULL) */
static _Atomic int pool_seen, pool_gone;
static _Atomic long long pool_replicas;

static void on_pool(void *arg, const char *ns, const char *name, const json_t *pool)
{
    (void)arg, (void)ns, (void)name;
    if (!pool) {
        atomic_fetch_add(&pool_gone, 1);
        return;
    }
    atomic_store(&pool_replicas, (long long)json_integer_value(json_object_get(
                                         json_object_get(pool, "spec"), "replicas")));
    atomic_fetch_add(&pool_seen, 1);
}

static bool may_write(void *arg, const char *ns, const char *pool)
{
    (void)arg, (void)ns, (void)pool;
    return atomic_load(&leader);
}

static bool snapshot(void *arg, const char *ns, const char *pool, pc_snapshot *out)
{
    (void)arg, (void)ns, (void)pool;
    uint64_t n = atomic_fetch_add(&snap_calls, 1);
    out->queue_len = atomic_load(&snap_queue);
    out->idle_ready = atomic_load(&snap_idle);
    out->last_dispatch_at =
            atomic_load(&snap_moving) ? 1700000000000000000LL + (int64_t)n * 1000000 : 0;
    return true;
}

static void start(const char *const *sim_args, int64_t ready_timeout_ms, int64_t status_ms)
{
    const char *def[] = {"--kubelet-only", "--warmup-ms", "30", "--restart-ms", "30", NULL};
    cr_assert_eq(ksim_start(&sim, sim_args ? sim_args : def, false, NULL, NULL), 0);
    char err[256];
    pc_kube_options o = {.server = sim.url};
    cr_assert_eq(pc_kube_client_new(&o, &kc, err, sizeof(err)), 0, "%s", err);
    pc_kevents_config ec = {.instance = "test-replica"};
    cr_assert_eq(pc_kevents_new(&ec, &kev), 0);
    pc_poolctl_config pc = {.client = kc,
                            .namespace_ = "default",
                            .events = kev,
                            .may_write = may_write,
                            .snapshot = snapshot,
                            .on_pool = on_pool,
                            .ready_timeout_ns = ready_timeout_ms * 1000000LL,
                            .status_interval_ns = status_ms * 1000000LL,
                            .empty_grace_ns = 300000000LL};
    cr_assert_eq(pc_poolctl_new(&pc, &ctl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(pc_poolctl_start(ctl), 0);
}

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner), not one process each as Criterion runs them. */
static void setup(void)
{
    memset(&sim, 0, sizeof(sim));
    kc = NULL;
    kev = NULL;
    ctl = NULL;
    atomic_store(&leader, true);
    atomic_store(&snap_queue, 0);
    atomic_store(&snap_idle, 0);
    atomic_store(&snap_calls, 0);
    atomic_store(&snap_moving, false);
    atomic_store(&pool_seen, 0);
    atomic_store(&pool_gone, 0);
    atomic_store(&pool_replicas, -1);
}

static void fini(void)
{
    pc_poolctl_free(ctl);
    ctl = NULL;
    pc_kevents_free(kev);
    kev = NULL;
    pc_kube_client_free(kc);
    kc = NULL;
    ksim_stop(&sim);
}

static void create_pool(const char *name, int replicas, const char *extra_spec,
                        const char *template_annotations)
{
    char body[2048];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxPool\","
             "\"metadata\":{\"name\":\"%s\"},\"spec\":{\"replicas\":%d%s,"
             "\"template\":{\"metadata\":{\"labels\":{\"team\":\"a\"},\"annotations\":%s},"
             "\"spec\":{\"containers\":[{\"name\":\"sandbox\",\"image\":\"img:1\"}]}}}}",
             name, replicas, extra_spec ? extra_spec : "",
             template_annotations ? template_annotations : "{}");
    json_t *p = ksim_json(&sim, "POST",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools", body);
    cr_assert(p, "create pool %s", name);
    json_decref(p);
}

static json_t *pods(const char *pool, const char *phase)
{
    char path[512];
    if (phase)
        snprintf(path, sizeof(path),
                 "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%%2Fpool%%3D%s%%2C"
                 "podclaim.io%%2Fphase%%3D%s",
                 pool, phase);
    else
        snprintf(path, sizeof(path),
                 "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", pool);
    json_t *l = ksim_json(&sim, "GET", path, NULL);
    json_t *items = json_incref(json_object_get(l, "items"));
    json_decref(l);
    return items;
}

static size_t count(const char *pool, const char *phase)
{
    json_t *p = pods(pool, phase);
    size_t n = json_array_size(p);
    json_decref(p);
    return n;
}

static json_t *get_pool(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/%s",
             name);
    return ksim_json(&sim, "GET", path, NULL);
}

static const char *cond_field(const json_t *pool, const char *type, const char *field)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(pool, "status"), "conditions"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "type")) ?: "", type) == 0)
            return json_string_value(json_object_get(c, field));
    }
    return NULL;
}

static bool degraded_with(const char *pool, const char *reason)
{
    json_t *p = get_pool(pool);
    bool ok = p && strcmp(cond_field(p, "Degraded", "status") ?: "", "True") == 0 &&
              strcmp(cond_field(p, "Degraded", "reason") ?: "", reason) == 0;
    json_decref(p);
    return ok;
}

static bool event_with(const char *reason)
{
    json_t *l = ksim_json(&sim, "GET", "/apis/events.k8s.io/v1/namespaces/default/events", NULL);
    size_t i;
    json_t *e;
    bool found = false;
    json_array_foreach(json_object_get(l, "items"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "reason")) ?: "", reason) == 0 &&
            strcmp(json_string_value(json_object_get(json_object_get(e, "regarding"), "kind"))
                           ?: "",
                   "SandboxPool") == 0)
            found = true;
    }
    json_decref(l);
    return found;
}

static long patch(const char *path, const char *ctype, const char *body)
{
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    int rc = pc_kube_conn_request(c, "PATCH", path, ctype, body, strlen(body), &r);
    long st = rc ? -1 : r.status;
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
    return st;
}

/* Move a listed pod to `phase` as podclaim does (Running: a claim; Stopping: a release),
 * guarded by its version; a 409 (the kubelet wrote the pod's status meanwhile, e.g.
 * restarting it for the claim's image) means read it again and retry. */
static void set_phase(const json_t *listed, const char *phase)
{
    char path[512], body[256];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s",
             json_string_value(json_object_get(json_object_get(listed, "metadata"), "name")));
    long st = 0;
    for (int attempt = 0; attempt < 20 && st != 200; attempt++) {
        json_t *pod = ksim_json(&sim, "GET", path, NULL);
        cr_assert(pod, "released pod gone");
        snprintf(body, sizeof(body),
                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
                 "\"%s\"}}}",
                 json_string_value(
                         json_object_get(json_object_get(pod, "metadata"), "resourceVersion")),
                 phase);
        json_decref(pod);
        st = patch(path, "application/strategic-merge-patch+json", body);
        cr_assert(st == 200 || st == 409, "%s: %ld", phase, st);
    }
    cr_assert_eq(st, 200, "%s kept conflicting", phase);
}

static void release_pod(const json_t *listed)
{
    set_phase(listed, "Stopping");
}

static const char *label_of(const json_t *pod, const char *k)
{
    return json_string_value(
            json_object_get(json_object_get(json_object_get(pod, "metadata"), "labels"), k));
}

static const char *image_of(const json_t *pod)
{
    return json_string_value(json_object_get(
            json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0),
            "image"));
}

Test(poolctl, pool_comes_up_from_its_template_and_stays_warm_while_claims_take_pods, .init = setup,
     .fini = fini, .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 5, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 5, 20000), "5 idle pods never came up (%zu)",
              count("web", "Idle"));
    json_t *p = pods("web", "Idle");
    json_t *pod = json_array_get(p, 0);
    cr_assert_str_eq(label_of(pod, "team"), "a", "template label missing");
    cr_assert_str_eq(image_of(pod), "img:1");
    json_t *ref =
            json_array_get(json_object_get(json_object_get(pod, "metadata"), "ownerReferences"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ref, "kind")), "SandboxPool");
    cr_assert_str_eq(json_string_value(json_object_get(ref, "name")), "web");
    cr_assert(json_is_true(json_object_get(ref, "controller")));
    cr_assert_eq(
            strncmp(json_string_value(json_object_get(json_object_get(pod, "metadata"), "name")),
                    "web-", 4),
            0);
    json_decref(p);

    /* the real scheduler takes pods: 12 claims, more than the pool holds at once */
    stack s;
    cr_assert_eq(stack_start(&s, &sim, "default", "web", NULL, NULL, NULL), 0);
    run r;
    cr_assert_eq(run_claims(&r, s.pool, 12, "pc", 30000), 0);
    cr_assert(PC_TEST_WAIT(atomic_load(&r.done) == 12, 30000), "claims did not finish");
    for (size_t i = 0; i < r.n; i++)
        cr_assert_eq(r.claims[i].r.status, PC_CLAIM_OK, "claim %zu: %s", i, r.claims[i].r.error);
    check_claim_log(&sim, &r, "pc");
    /* 12 claimed pods are the callers'; the pool is back at 5 idle */
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 5 && count("web", "Running") == 12, 20000),
              "idle %zu running %zu", count("web", "Idle"), count("web", "Running"));
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 17, 5000), "surplus pods: %zu",
              count("web", NULL));
    /* status: replicas 5, idle 5, Ready, selector for /scale */
    cr_assert(PC_TEST_WAIT(
                      ({
                          json_t *pl = get_pool("web");
                          json_t *st = json_object_get(pl, "status");
                          bool ok = json_integer_value(json_object_get(st, "replicas")) == 5 &&
                                    json_integer_value(json_object_get(st, "idle")) == 5 &&
                                    strcmp(cond_field(pl, "Ready", "status") ?: "", "True") == 0 &&
                                    strcmp(json_string_value(json_object_get(st, "selector")) ?: "",
                                           "podclaim.io/pool=web") == 0;
                          json_decref(pl);
                          ok;
                      }),
                      5000),
              "status not as expected");
    stack_stop(&s);
    free(r.claims);
}

/* A released pod is reset in place (labels, annotations, images back to the template; the
 * kubelet restarts the container) and turns Idle again; it is not replaced. Pods start
 * slowly here (3 s) and restart fast, so the replacement created for the claim is still
 * Starting when the released pod comes back and is the one that goes. */
Test(poolctl, release_recycles_in_place, .init = setup, .fini = fini, .timeout = 90)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms", "3000", "--restart-ms", "30", NULL};
    start(args, 60000, 200);
    create_pool("web", 2, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 20000));
    stack s;
    cr_assert_eq(stack_start(&s, &sim, "default", "web", NULL, NULL, NULL), 0);
    run r;
    cr_assert_eq(run_claims(&r, s.pool, 1, "rc", 10000), 0);
    cr_assert(PC_TEST_WAIT(atomic_load(&r.done) == 1, 10000));
    cr_assert_eq(r.claims[0].r.status, PC_CLAIM_OK, "%s", r.claims[0].r.error);
    char name[PC_NAME_MAX];
    snprintf(name, sizeof(name), "%s", r.claims[0].r.pod_name);
    stack_stop(&s);
    json_t *claimed = pods("web", "Running");
    cr_assert_eq(json_array_size(claimed), 1);
    cr_assert_str_eq(image_of(json_array_get(claimed, 0)),
                     "registry.local/podclaim/sandbox:claimed");
    cr_assert(PC_TEST_WAIT(count("web", "Starting") == 1, 5000), "no replacement started");
    release_pod(json_array_get(claimed, 0));
    json_decref(claimed);
    /* the released pod is Idle again, as the template made it */
    cr_assert(PC_TEST_WAIT(({
                               json_t *idle = pods("web", "Idle");
                               bool back = false;
                               size_t i;
                               json_t *p;
                               json_array_foreach(idle, i, p)
                               {
                                   if (strcmp(json_string_value(json_object_get(
                                                      json_object_get(p, "metadata"), "name")),
                                              name) == 0 &&
                                       strcmp(image_of(p), "img:1") == 0 && !label_of(p, "owner") &&
                                       strcmp(label_of(p, "team") ?: "", "a") == 0 &&
                                       !json_object_get(
                                               json_object_get(json_object_get(p, "metadata"),
                                                               "annotations"),
                                               "podclaim.io/claim-id"))
                                       back = true;
                               }
                               json_decref(idle);
                               back;
                           }),
                           10000),
              "the released pod %s was not recycled in place", name);
    /* and the pool is back at 2 warm pods: the replacement that was still starting went */
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 2 && count("web", "Idle") == 2, 10000),
              "pods %zu idle %zu", count("web", NULL), count("web", "Idle"));
    pc_poolctl_stats stats;
    pc_poolctl_stats_read(ctl, &stats);
    cr_expect_geq(stats.resets, 1);
    free(r.claims);
}

/* kapi-sim's count of PATCHes it answered 429 */
/* kapi-sim's count of `verb` requests answered 429 */
static long throttled_requests(const char *verb)
{
    json_t *st = ksim_json(&sim, "GET", "/sim/stats", NULL);
    long n = (long)json_integer_value(
            json_object_get(json_object_get(json_object_get(st, "requests"), verb), "429"));
    json_decref(st);
    return n;
}

static long patches_throttled(void)
{
    return throttled_requests("patch");
}

static void put_faults(const char *faults)
{
    json_t *f = ksim_json(&sim, "PUT", "/sim/faults", faults);
    cr_assert(f, "PUT /sim/faults %s", faults);
    json_decref(f);
}

/* A 429 on one pod's write puts that pod aside for its Retry-After; the controller goes on
 * recycling the others. It used to sleep the Retry-After on its one thread (the kube
 * client's 429 retry: up to 3 x 10 s), so every pod of every pool waited for the one. */
Test(poolctl, a_429_on_one_pods_write_holds_back_only_that_pod, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 3, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
    json_t *idle = pods("web", "Idle");
    char a[PC_NAME_MAX];
    snprintf(a, sizeof(a), "%s",
             json_string_value(json_object_get(json_object_get(json_array_get(idle, 0), "metadata"),
                                               "name")));
    /* released while the controller may not write, so it finds it Stopping afterwards */
    atomic_store(&leader, false);
    release_pod(json_array_get(idle, 0));
    /* every request naming pod a is answered 429, Retry-After an hour */
    char faults[512];
    snprintf(faults, sizeof(faults),
             "{\"throttleRate\":1,\"throttleName\":\"%s\",\"retryAfterSeconds\":3600}", a);
    json_t *f = ksim_json(&sim, "PUT", "/sim/faults", faults);
    cr_assert(f, "PUT /sim/faults");
    json_decref(f);
    atomic_store(&leader, true);
    pc_poolctl_resync(ctl);
    cr_assert(PC_TEST_WAIT(patches_throttled() >= 1, 20000), "the controller never wrote pod %s",
              a);
    /* with pod a's write answered 429, another pod is released: it is recycled at once */
    release_pod(json_array_get(idle, 1));
    json_decref(idle);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 15000),
              "the other pod waited for pod %s's Retry-After (idle %zu, stopping %zu)", a,
              count("web", "Idle"), count("web", "Stopping"));
    /* pod a is still put aside: no write to it for its Retry-After */
    cr_expect_eq(count("web", "Stopping"), 1);
    cr_expect_leq(patches_throttled(), 2, "pod %s written again before its Retry-After", a);
}

/* The same for a DELETE (recycle Replace): a 429 on one pod's delete holds back only that pod. */
Test(poolctl, a_429_on_one_pods_delete_holds_back_only_that_pod, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 3, ",\"recycle\":\"Replace\"", NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
    json_t *idle = pods("web", "Idle");
    char a[PC_NAME_MAX], b[PC_NAME_MAX], path_b[512];
    snprintf(a, sizeof(a), "%s",
             json_string_value(json_object_get(json_object_get(json_array_get(idle, 0), "metadata"),
                                               "name")));
    snprintf(b, sizeof(b), "%s",
             json_string_value(json_object_get(json_object_get(json_array_get(idle, 1), "metadata"),
                                               "name")));
    snprintf(path_b, sizeof(path_b), "/api/v1/namespaces/default/pods/%s", b);
    atomic_store(&leader, false);
    release_pod(json_array_get(idle, 0));
    char faults[512];
    snprintf(faults, sizeof(faults),
             "{\"throttleRate\":1,\"throttleName\":\"%s\",\"retryAfterSeconds\":3600}", a);
    json_t *f = ksim_json(&sim, "PUT", "/sim/faults", faults);
    cr_assert(f, "PUT /sim/faults");
    json_decref(f);
    atomic_store(&leader, true);
    pc_poolctl_resync(ctl);
    cr_assert(PC_TEST_WAIT(({
                               json_t *st = ksim_json(&sim, "GET", "/sim/stats", NULL);
                               long n = (long)json_integer_value(json_object_get(
                                       json_object_get(json_object_get(st, "requests"), "delete"),
                                       "429"));
                               json_decref(st);
                               n >= 1;
                           }),
                           20000),
              "the controller never deleted pod %s", a);
    /* with pod a's delete answered 429, pod b is released: it goes at once */
    release_pod(json_array_get(idle, 1));
    json_decref(idle);
    cr_assert(PC_TEST_WAIT(({
                               json_t *gone = ksim_json(&sim, "GET", path_b, NULL);
                               json_decref(gone);
                               gone == NULL;
                           }),
                           15000),
              "pod %s waited for pod %s's Retry-After", b, a);
    /* pod a is still there, put aside (a LIST: a GET naming it would be answered 429) */
    cr_expect_eq(count("web", "Stopping"), 1, "pod %s deleted through a 429", a);
}

/* A 429 on a create holds back that pool's creates for the Retry-After, not the controller:
 * it used to sleep the Retry-After in the kube client's retry (up to 3 x 10 s) on the one
 * thread that recycles every pod of every pool. */
Test(poolctl, a_429_on_a_create_holds_back_only_that_pools_creates, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 2, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 20000));
    create_pool("api", 0, NULL, NULL);
    json_t *idle = pods("web", "Idle");
    put_faults("{\"throttleRate\":1,\"throttleVerb\":\"create\",\"retryAfterSeconds\":3600}");
    cr_assert_eq(patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/api",
                       "application/merge-patch+json", "{\"spec\":{\"replicas\":1}}"),
                 200);
    cr_assert(PC_TEST_WAIT(throttled_requests("create") >= 1, 20000),
              "the controller never created pool api's pod");
    /* with api's create answered 429, a pod of web is released: it is recycled at once */
    release_pod(json_array_get(idle, 0));
    json_decref(idle);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 15000),
              "web's recycle waited for api's Retry-After (idle %zu, stopping %zu)",
              count("web", "Idle"), count("web", "Stopping"));
    cr_expect_eq(count("api", NULL), 0);
    cr_expect_eq(throttled_requests("create"), 1, "api's create retried before its Retry-After");
}

/* The same for the pool's status write: a 429 on it holds back only that status. */
Test(poolctl, a_429_on_a_status_write_holds_back_only_that_status, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 2, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 20000));
    json_t *idle = pods("web", "Idle");
    /* requests naming the SandboxPool web: its status PATCHes (pods are named web-…) */
    put_faults("{\"throttleRate\":1,\"throttleName\":\"web\",\"throttleVerb\":\"patch\","
               "\"retryAfterSeconds\":3600}");
    /* a claim changes the pool's status (idle 2 -> 1) for good, so the controller writes it
     * (a release changed it only until the pod was recycled: when that came before the
     * status interval since the last write had passed, nothing was left to write) */
    set_phase(json_array_get(idle, 0), "Running");
    cr_assert(PC_TEST_WAIT(patches_throttled() >= 1, 20000),
              "the controller never wrote web's status");
    release_pod(json_array_get(idle, 0));
    json_decref(idle);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 15000),
              "the recycle waited for the status write's Retry-After (idle %zu, stopping %zu)",
              count("web", "Idle"), count("web", "Stopping"));
    cr_expect_eq(patches_throttled(), 1, "web's status written again before its Retry-After");
}

/* recycle: Replace deletes the released pod; a new one takes its place. */
Test(poolctl, release_with_replace_deletes_and_replaces, .init = setup, .fini = fini, .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 2, ",\"recycle\":\"Replace\"", NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 20000));
    json_t *idle = pods("web", "Idle");
    json_t *victim = json_incref(json_array_get(idle, 0));
    json_decref(idle);
    char path[512], body[256], name[PC_NAME_MAX];
    snprintf(name, sizeof(name), "%s",
             json_string_value(json_object_get(json_object_get(victim, "metadata"), "name")));
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", name);
    snprintf(body, sizeof(body),
             "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
             "\"Running\"}}}",
             json_string_value(
                     json_object_get(json_object_get(victim, "metadata"), "resourceVersion")));
    cr_assert_eq(patch(path, "application/strategic-merge-patch+json", body), 200);
    json_decref(victim);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2 && count("web", NULL) == 3, 10000));
    json_t *claimed = pods("web", "Running");
    release_pod(json_array_get(claimed, 0));
    json_decref(claimed);
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 2 && count("web", "Idle") == 2, 10000), "pods %zu",
              count("web", NULL));
    json_t *gone = ksim_json(&sim, "GET", path, NULL);
    cr_assert_null(gone, "the released pod was not deleted");
}

/* spec.replicas up and down (what kubectl scale and an HPA write). */
Test(poolctl, replicas_change_resizes_the_pool, .init = setup, .fini = fini, .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 3, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
    const char *path = "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web";
    cr_assert_eq(patch(path, "application/merge-patch+json", "{\"spec\":{\"replicas\":7}}"), 200);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 7, 20000), "idle %zu", count("web", "Idle"));
    cr_assert_eq(patch(path, "application/merge-patch+json", "{\"spec\":{\"replicas\":2}}"), 200);
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 2 && count("web", "Idle") == 2, 20000), "pods %zu",
              count("web", NULL));
    cr_assert_eq(patch(path, "application/merge-patch+json", "{\"spec\":{\"replicas\":0}}"), 200);
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 0, 20000), "pods %zu", count("web", NULL));
}

/* A template whose pods never become Ready: an Event and Degraded=True PodsNotReady. */
Test(poolctl, never_ready_pod_gives_an_event_and_degraded, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 300, 200);
    create_pool("stuck", 2, NULL, "{\"kapi-sim.podclaim.io/never-ready\":\"true\"}");
    cr_assert(PC_TEST_WAIT(count("stuck", "Starting") == 2, 10000));
    cr_assert(PC_TEST_WAIT(event_with("PodNotReady"), 10000), "no PodNotReady event");
    cr_assert(PC_TEST_WAIT(degraded_with("stuck", "PodsNotReady"), 10000), "no Degraded condition");
    /* they stay: 2 pods, none idle, no churn */
    cr_assert_eq(count("stuck", NULL), 2);
    cr_assert_eq(count("stuck", "Idle"), 0);
}

/* The server refuses the template's pods: an Event FailedCreate and Degraded TemplateRejected. */
Test(poolctl, rejected_template_gives_an_event_and_degraded, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    /* a numeric label value: the API server answers 400 to the pod create */
    const char *body = "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxPool\","
                       "\"metadata\":{\"name\":\"bad\"},\"spec\":{\"replicas\":1,"
                       "\"template\":{\"metadata\":{\"labels\":{\"team\":5}},"
                       "\"spec\":{\"containers\":[{\"name\":\"sandbox\",\"image\":\"i\"}]}}}}";
    json_t *p = ksim_json(&sim, "POST",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools", body);
    cr_assert(p);
    json_decref(p);
    cr_assert(PC_TEST_WAIT(event_with("FailedCreate"), 10000), "no FailedCreate event");
    cr_assert(PC_TEST_WAIT(degraded_with("bad", "TemplateRejected"), 10000));
    cr_assert_eq(count("bad", NULL), 0);
}

/* Claims wait and nothing is idle for longer than the grace: Event PoolEmpty, Degraded. */
Test(poolctl, empty_pool_with_waiting_claims_gives_an_event_and_degraded, .init = setup,
     .fini = fini, .timeout = 90)
{
    atomic_store(&snap_queue, 4);
    atomic_store(&snap_idle, 0);
    start(NULL, 60000, 200);
    create_pool("web", 1, NULL, NULL);
    cr_assert(PC_TEST_WAIT(event_with("PoolEmpty"), 10000), "no PoolEmpty event");
    cr_assert(PC_TEST_WAIT(degraded_with("web", "EmptyWithWaitingClaims"), 10000));
    json_t *pl = get_pool("web");
    cr_assert_eq(
            json_integer_value(json_object_get(json_object_get(pl, "status"), "pendingRequests")),
            4);
    json_decref(pl);
    atomic_store(&snap_queue, 0);
    cr_assert(PC_TEST_WAIT(!degraded_with("web", "EmptyWithWaitingClaims"), 10000),
              "Degraded did not clear");
}

typedef struct writes {
    _Atomic int n;
    int64_t at[256];
} writes;

static void count_status(void *arg, pc_watch_change ch, const json_t *obj, const json_t *old)
{
    writes *w = arg;
    if (ch != PC_WATCH_MODIFIED ||
        json_equal(json_object_get(obj, "status"), json_object_get(old, "status")))
        return;
    int i = atomic_load(&w->n);
    if (i < 256)
        w->at[i] = pc_test_now_ms();
    atomic_store(&w->n, i + 1);
}

/* Status writes while the scheduler's figures change all the time: at most one per interval
 * (400 ms), measured where the watch delivers them, and written (they follow the figures).
 * faults: kapi-sim faults to set first, or NULL; min_writes: how many to watch. */
static void status_writes_within(const char *faults, int min_writes)
{
    atomic_store(&snap_moving, true);
    start(NULL, 60000, 400);
    if (faults)
        put_faults(faults);
    create_pool("web", 1, NULL, NULL);
    static writes w;
    memset(&w, 0, sizeof(w));
    pc_watch *watch;
    pc_watch_config wc = {.client = kc,
                          .path = "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools",
                          .on_change = count_status,
                          .arg = &w};
    cr_assert_eq(pc_watch_new(&wc, &watch), 0);
    cr_assert_eq(pc_watch_start(watch), 0);
    cr_assert(PC_TEST_WAIT(pc_watch_synced(watch), 5000));
    int64_t t0 = pc_test_now_ms();
    cr_assert(PC_TEST_WAIT(atomic_load(&w.n) >= min_writes, 30000),
              "status stopped following the figures");
    int64_t took = pc_test_now_ms() - t0;
    pc_watch_free(watch);
    int n = atomic_load(&w.n);
    for (int i = 1; i < n && i < 256; i++)
        /* measured where the watch delivers them: allow half an interval of delivery jitter */
        cr_assert_geq(w.at[i] - w.at[i - 1], 200,
                      "status writes %d and %d only %lld ms apart (limit: one per 400 ms)", i - 1,
                      i, (long long)(w.at[i] - w.at[i - 1]));
    cr_assert_geq(took, (n - 2) * 200);
}

Test(poolctl, status_writes_stay_within_the_rate_limit, .init = setup, .fini = fini, .timeout = 90)
{
    status_writes_within(NULL, 6);
}

/* The same when the server takes a varying time to store a write (every PATCH delayed 0-1 s):
 * the interval counts from the answer to the last write. It counted from before its request,
 * so a slow write followed by a fast one came out closer than the interval (seen under TSan:
 * 184 ms apart at 400 ms). */
Test(poolctl, status_writes_stay_within_the_rate_limit_when_writes_are_slow, .init = setup,
     .fini = fini, .timeout = 90)
{
    status_writes_within("{\"latency\":{\"patch\":{\"fixedMs\":0,\"jitterMs\":1000}}}", 12);
}

/* A follower writes nothing; when it starts leading (resync) it takes over the work. */
Test(poolctl, follower_writes_nothing_until_it_leads, .init = setup, .fini = fini, .timeout = 90)
{
    atomic_store(&leader, false);
    start(NULL, 60000, 200);
    create_pool("web", 3, NULL, NULL);
    cr_assert(PC_TEST_WAIT(pc_poolctl_synced(ctl), 5000));
    pc_poolctl_stats st;
    cr_assert(PC_TEST_WAIT(({
                               pc_poolctl_stats_read(ctl, &st);
                               st.reconciles >= 5;
                           }),
                           10000));
    cr_assert_eq(count("web", NULL), 0, "a follower created pods");
    json_t *pl = get_pool("web");
    cr_assert_null(json_object_get(pl, "status"), "a follower wrote status");
    json_decref(pl);
    atomic_store(&leader, true);
    pc_poolctl_resync(ctl);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
}

/* A deleted pool's pods go too (as the garbage collector would delete them). */
Test(poolctl, deleting_the_pool_deletes_its_pods, .init = setup, .fini = fini, .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 3, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
    json_t *d = ksim_json(&sim, "DELETE",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web", NULL);
    json_decref(d);
    cr_assert(PC_TEST_WAIT(count("web", NULL) == 0, 10000), "pods %zu", count("web", NULL));
}

/* A template change rolls the warm pods to the new template. */
Test(poolctl, template_change_rolls_the_idle_pods, .init = setup, .fini = fini, .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 3, NULL, NULL);
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 3, 20000));
    cr_assert_eq(patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web",
                       "application/merge-patch+json",
                       "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"sandbox\","
                       "\"image\":\"img:2\"}]}}}}"),
                 200);
    cr_assert(PC_TEST_WAIT(({
                               json_t *idle = pods("web", "Idle");
                               size_t n2 = 0, i;
                               json_t *p;
                               json_array_foreach(idle, i, p) n2 +=
                                       strcmp(image_of(p), "img:2") == 0;
                               bool done = n2 == 3 && json_array_size(idle) == 3;
                               json_decref(idle);
                               done &&count("web", NULL) == 3;
                           }),
                           20000),
              "pods not rolled to the new template");
}

/* The daemon learns of pools through on_pool: created, spec changed, deleted; never for the
 * controller's own status writes. */
Test(poolctl, on_pool_tells_the_daemon_of_pool_spec_changes_only, .init = setup, .fini = fini,
     .timeout = 90)
{
    start(NULL, 60000, 200);
    create_pool("web", 2, NULL, NULL);
    cr_assert(
            PC_TEST_WAIT(atomic_load(&pool_seen) == 1 && atomic_load(&pool_replicas) == 2, 10000));
    /* the controller writes status (several times as pods come up): no call */
    cr_assert(PC_TEST_WAIT(count("web", "Idle") == 2, 20000));
    cr_assert(PC_TEST_WAIT(({
                               json_t *pl = get_pool("web");
                               bool ok = json_integer_value(json_object_get(
                                                 json_object_get(pl, "status"), "idle")) == 2;
                               json_decref(pl);
                               ok;
                           }),
                           10000));
    cr_assert_eq(atomic_load(&pool_seen), 1, "on_pool called for a status write");
    cr_assert_eq(patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web",
                       "application/merge-patch+json", "{\"spec\":{\"replicas\":4}}"),
                 200);
    cr_assert(
            PC_TEST_WAIT(atomic_load(&pool_seen) == 2 && atomic_load(&pool_replicas) == 4, 10000));
    json_decref(ksim_json(&sim, "DELETE",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web", NULL));
    cr_assert(PC_TEST_WAIT(atomic_load(&pool_gone) == 1, 10000));
}
