/* podclaimd in a cluster (issue 13): kapi-sim playing the kubelet only, one or two podclaimd
 * processes running the pool controller, the claim controller and leader election. Every test
 * starts its own processes on ephemeral ports and stops them.
 *
 * Leases here are short (3 s, renew deadline 2 s, retry 500 ms) so a kill -9 handover fits a
 * test; the bounds asserted are generous (a loaded 2-core machine), the figures themselves
 * are in docs/cluster.md and bench/. */
#include "pcd_fixture.h"

#include <criterion/criterion.h>

#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Wait for a condition with a deadline, polling (the progress is another process's). */
#define PC_WAIT(expr, ms)                                                                          \
    ({                                                                                             \
        int64_t pc_wait_end_ = pcd_now_ms() + (ms);                                                \
        bool pc_wait_ok_;                                                                          \
        while (!(pc_wait_ok_ = (expr)) && pcd_now_ms() < pc_wait_end_)                             \
            usleep(5000);                                                                          \
        pc_wait_ok_;                                                                               \
    })

static ksim K;
static pcd_proc A, B;

static void fini(void)
{
    pcd_stop(&A, SIGKILL, 2000);
    pcd_stop(&B, SIGKILL, 2000);
    ksim_stop(&K);
}

/* every test: .fini = fini, .timeout = 120 (no TestSuite: the TSan build's runner has none) */
#define HA .fini = fini, .timeout = 120

static void start_sim(const char *const *extra)
{
    const char *args[16] = {"--kubelet-only", "--warmup-ms", "30", "--restart-ms", "30"};
    size_t n = 5;
    for (size_t i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(ksim_start(&K, args, false, NULL, NULL), 0, "kapi-sim did not start");
}

/* A podclaimd config: leader election on with identity `id` (NULL = off), plus `more`. The
 * result is a pcd_start format ("%s" = the API server). */
static const char *config(const char *id, const char *lease_duration, const char *more)
{
    static char buf[2][2048];
    static int which;
    char *b = buf[which++ % 2];
    if (id)
        snprintf(b, 2048,
                 "kube:\n  server: %%s\nlog:\n  level: debug\nshutdown:\n  grace: 200ms\n"
                 "leaderElection:\n  enabled: true\n  identity: %s\n  leaseDuration: %s\n"
                 "  renewDeadline: 2s\n  retryPeriod: 500ms\n%s",
                 id, lease_duration, more ? more : "");
    else
        snprintf(b, 2048,
                 "kube:\n  server: %%s\nlog:\n  level: debug\nshutdown:\n  grace: 200ms\n%s",
                 more ? more : "");
    return b;
}

static json_t *get(const pcd_proc *p, const char *path)
{
    return pcd_get_json(p->url, path);
}

static long pool_idle(const pcd_proc *p, const char *ns, const char *pool)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/pools/%s/%s", ns, pool);
    json_t *j = get(p, path);
    long n = j ? (long)json_integer_value(json_object_get(j, "idleReady")) : -1;
    json_decref(j);
    return n;
}

static bool leads(const pcd_proc *p)
{
    char u[128];
    snprintf(u, sizeof(u), "%s/readyz", p->url);
    pcd_http h;
    return pcd_req("GET", u, NULL, NULL, &h) == 0 && h.status == 200 &&
           strncmp(h.body, "ok leader", 9) == 0;
}

/* Pods of ns with label pool, by phase label ("" = any), not terminating. */
static int pods(const char *ns, const char *pool, const char *phase)
{
    char path[300];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", ns, pool);
    json_t *l = ksim_json(&K, "GET", path, NULL);
    size_t i;
    json_t *p;
    int n = 0;
    json_array_foreach(json_object_get(l, "items"), i, p)
    {
        json_t *md = json_object_get(p, "metadata");
        const char *ph = json_string_value(
                json_object_get(json_object_get(md, "labels"), "podclaim.io/phase"));
        if (!json_object_get(md, "deletionTimestamp") && (!phase[0] || (ph && !strcmp(ph, phase))))
            n++;
    }
    json_decref(l);
    return n;
}

/* POST a claim; returns the HTTP status, the pod and claim id into pod/id (may be NULL). */
static long claim(const pcd_proc *p, const char *ns, const char *pool, const char *body, char *pod,
                  char *id)
{
    char u[256];
    snprintf(u, sizeof(u), "%s/v1/pools/%s/%s/claims", p->url, ns, pool);
    pcd_http h;
    if (pcd_req("POST", u, body ? body : "{\"timeoutSeconds\":20}", NULL, &h) != 0)
        return -1;
    json_t *j = json_loads(h.body, 0, NULL);
    if (pod)
        snprintf(pod, 256, "%s", json_string_value(json_object_get(j, "pod")) ?: "");
    if (id)
        snprintf(id, 64, "%s", json_string_value(json_object_get(j, "claimId")) ?: "");
    json_decref(j);
    return h.status;
}

static long release(const pcd_proc *p, const char *ns, const char *pool, const char *id)
{
    char u[300];
    snprintf(u, sizeof(u), "%s/v1/pools/%s/%s/claims/%s", p->url, ns, pool, id);
    pcd_http h;
    return pcd_req("DELETE", u, NULL, NULL, &h) == 0 ? h.status : -1;
}

/* /sim/claims: no (pod, idle resourceVersion) twice (DESIGN.md §4, invariant 1). Returns the
 * number of idle periods won. */
static size_t no_double_win(void)
{
    json_t *log = ksim_json(&K, "GET", "/sim/claims", NULL);
    json_t *seen = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        char key[400];
        snprintf(key, sizeof(key), "%s/%s@%s", json_string_value(json_object_get(e, "namespace")),
                 json_string_value(json_object_get(e, "pod")),
                 json_string_value(json_object_get(e, "idleResourceVersion")));
        cr_assert_null(json_object_get(seen, key), "idle period %s won twice", key);
        json_object_set_new(seen, key, json_true());
    }
    size_t n = json_object_size(seen);
    json_decref(seen);
    json_decref(log);
    return n;
}

static void merge_patch(const char *path, const char *body)
{
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(K.admin, &c), 0);
    pc_kube_response r;
    int rc = pc_kube_conn_request(c, "PATCH", path, "application/merge-patch+json", body,
                                  strlen(body), &r);
    cr_assert(rc == 0 && r.status == 200, "PATCH %s: %ld %s", path, r.status, r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
}

static json_t *sandboxpool(const char *ns, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/%s/sandboxpools/%s", ns,
             name);
    return ksim_json(&K, "GET", path, NULL);
}

Test(ha, a_pool_comes_up_from_its_template_and_stays_at_n_idle_while_claims_run, HA)
{
    const char *extra[] = {"--pool", "default/web=4", NULL};
    start_sim(extra);
    /* pools come from the SandboxPool object alone: no pools: list in the file */
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 4, 30000), "the pool never had 4 idle");
    for (int i = 0; i < 6; i++) {
        char pod[256];
        cr_assert_eq(claim(&A, "default", "web", NULL, pod, NULL), 200);
        /* the claimed pod is the caller's: the controller makes another to keep 4 warm */
        cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 4, 30000), "after claim %d: %ld idle",
                  i, pool_idle(&A, "default", "web"));
    }
    cr_assert_eq(pods("default", "web", "Idle"), 4);
    cr_assert_eq(pods("default", "web", "Running"), 6, "the six claimed pods stay the callers'");
    json_t *pool = sandboxpool("default", "web");
    json_t *st = json_object_get(pool, "status");
    cr_assert(PC_WAIT(({
                          json_decref(pool);
                          pool = sandboxpool("default", "web");
                          st = json_object_get(pool, "status");
                          json_integer_value(json_object_get(st, "idleReady")) == 4;
                      }),
                      10000),
              "status.idleReady never 4");
    cr_assert_str_eq(json_string_value(json_object_get(st, "selector")), "podclaim.io/pool=web");
    json_decref(pool);
    cr_assert_eq(no_double_win(), 6);
}

Test(ha, release_recycles_in_place_or_replaces_as_the_pool_says, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    /* InPlace (the default): the same pod comes back Idle with the template's image */
    char pod[256], id[64];
    cr_assert_eq(claim(&A, "default", "web", "{\"images\":{\"sandbox\":\"python:3.12\"}}", pod, id),
                 200);
    cr_assert_eq(release(&A, "default", "web", id), 200);
    char path[400];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", pod);
    cr_assert(PC_WAIT(({
                          json_t *p = ksim_json(&K, "GET", path, NULL);
                          const char *ph = json_string_value(json_object_get(
                                  json_object_get(json_object_get(p, "metadata"), "labels"),
                                  "podclaim.io/phase"));
                          const char *img = json_string_value(json_object_get(
                                  json_array_get(
                                          json_object_get(json_object_get(p, "spec"), "containers"),
                                          0),
                                  "image"));
                          bool ok = ph && !strcmp(ph, "Idle") && img &&
                                    !strcmp(img, "registry.local/podclaim/sandbox:latest");
                          json_decref(p);
                          ok;
                      }),
                      30000),
              "pod %s was not recycled in place", pod);
    /* Replace: the released pod is deleted and a new one made */
    merge_patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web",
                "{\"spec\":{\"recycle\":\"Replace\"}}");
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    cr_assert_eq(claim(&A, "default", "web", NULL, pod, id), 200);
    cr_assert_eq(release(&A, "default", "web", id), 200);
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", pod);
    cr_assert(PC_WAIT(({
                          json_t *p = ksim_json(&K, "GET", path, NULL);
                          bool gone = !p || json_object_get(json_object_get(p, "metadata"),
                                                            "deletionTimestamp");
                          json_decref(p);
                          gone;
                      }),
                      30000),
              "pod %s was not deleted (Replace)", pod);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    no_double_win();
}

Test(ha, kubectl_scale_resizes_the_pool, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "kubectl --server %s scale sandboxpool web --replicas=5 >/dev/null 2>&1 || "
             "curl -sf -X PATCH -H 'Content-Type: application/merge-patch+json' -d "
             "'{\"spec\":{\"replicas\":5}}' %s/apis/podclaim.io/v1alpha1/namespaces/default/"
             "sandboxpools/web/scale >/dev/null",
             K.url, K.url);
    cr_assert_eq(system(cmd), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 5, 30000), "idle %ld after scale to 5",
              pool_idle(&A, "default", "web"));
    snprintf(cmd, sizeof(cmd),
             "kubectl --server %s scale sandboxpool web --replicas=1 >/dev/null 2>&1 || "
             "curl -sf -X PATCH -H 'Content-Type: application/merge-patch+json' -d "
             "'{\"spec\":{\"replicas\":1}}' %s/apis/podclaim.io/v1alpha1/namespaces/default/"
             "sandboxpools/web/scale >/dev/null",
             K.url, K.url);
    cr_assert_eq(system(cmd), 0);
    cr_assert(
            PC_WAIT(pods("default", "web", "") == 1 && pool_idle(&A, "default", "web") == 1, 30000),
            "%d pods after scale to 1", pods("default", "web", ""));
}

Test(ha, a_follower_answers_503_naming_the_leader_and_readyz_says_which, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config("replica-a", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(leads(&A), 20000), "a never led");
    cr_assert_eq(pcd_start(&B, config("replica-b", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&B, "default", "web") == 2, 30000),
              "the follower's informer is warm too");
    char u[256];
    snprintf(u, sizeof(u), "%s/readyz", B.url);
    pcd_http h;
    cr_assert_eq(pcd_req("GET", u, NULL, NULL, &h), 0);
    cr_assert_eq(h.status, 200);
    cr_assert(strstr(h.body, "follower; leader: replica-a"), "%s", h.body);
    snprintf(u, sizeof(u), "%s/v1/pools/default/web/claims", B.url);
    cr_assert_eq(pcd_req("POST", u, "{}", NULL, &h), 0);
    cr_assert_eq(h.status, 503, "%s", h.body);
    cr_assert_str_eq(h.retry_after, "1");
    json_t *j = json_loads(h.body, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(j, "leader")), "replica-a", "%s", h.body);
    json_decref(j);
    cr_assert_eq(claim(&A, "default", "web", NULL, NULL, NULL), 200);
    cr_assert_eq(pcd_metric(&A, "podclaimd_leader", NULL), 1);
    cr_assert_eq(pcd_metric(&B, "podclaimd_leader", NULL), 0);
}

/* podclaimctl load against one replica in the background, releasing every claim at once. */
static pid_t load(const pcd_proc *p, const char *seconds, const char *out)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(PODCLAIMCTL_PATH, PODCLAIMCTL_PATH, "--server", p->url, "load", "default/web",
              "--rate", "200", "--connections", "4", "--duration", seconds, "--release-after", "0",
              "--timeout", "5s", "--json", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static json_t *load_result(pid_t pid, const char *out)
{
    int st;
    waitpid(pid, &st, 0);
    FILE *f = fopen(out, "r");
    char buf[4096] = "";
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    char *brace = strrchr(buf, '{');
    return brace ? json_loads(brace, 0, NULL) : NULL;
}

Test(ha, kill_9_of_the_leader_hands_over_within_the_lease_and_no_idle_period_is_won_twice, HA)
{
    const char *extra[] = {"--pool", "default/web=4", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config("replica-a", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(leads(&A), 20000));
    cr_assert_eq(pcd_start(&B, config("replica-b", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 4, 30000));
    /* claims on both replicas (the follower's are 503 until it leads), each released at once */
    char oa[128], ob[128];
    snprintf(oa, sizeof(oa), "%s/load-a", A.dir);
    snprintf(ob, sizeof(ob), "%s/load-b", B.dir);
    pid_t la = load(&A, "3s", oa), lb = load(&B, "9s", ob);
    cr_assert(pcd_wait_metric(&A, "podclaimd_releases_total", "result=\"released\"", 20, 20000),
              "the leader served no claims");
    int64_t t0 = pcd_now_ms();
    pcd_stop(&A, SIGKILL, 2000);
    cr_assert(PC_WAIT(leads(&B), 20000), "the follower never took over");
    int64_t took = pcd_now_ms() - t0;
    /* the lease (3 s) must pass since the follower last saw it renewed, plus one retry (500 ms
     * jittered up to 2.2x); the rest is slack for a loaded machine */
    cr_assert_leq(took, 3000 + 1100 + 4000, "handover took %lld ms", (long long)took);
    cr_assert_geq(took, 1000, "took over after %lld ms: before the lease could expire",
                  (long long)took);
    cr_assert(pcd_wait_metric(&B, "podclaimd_releases_total", "result=\"released\"", 10, 20000),
              "the new leader served no claims");
    json_t *ra = load_result(la, oa), *rb = load_result(lb, ob);
    cr_log_info("handover %lld ms; follower's load: %lld won, %lld answered 503", (long long)took,
                (long long)json_integer_value(json_object_get(rb, "ok")),
                (long long)json_integer_value(json_object_get(rb, "503")));
    cr_assert_gt(json_integer_value(json_object_get(rb, "503")), 0,
                 "the follower answered 503 before it led");
    cr_assert_gt(json_integer_value(json_object_get(rb, "ok")), 0);
    json_decref(ra);
    json_decref(rb);
    size_t won = no_double_win();
    cr_assert_gt(won, 30u);
}

Test(ha, sigterm_of_the_leader_hands_over_at_once, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    /* client-go's default lease (15 s): without the release the follower would wait for it */
    cr_assert_eq(pcd_start(&A, config("replica-a", "15s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(leads(&A), 20000));
    cr_assert_eq(pcd_start(&B, config("replica-b", "15s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&B, "default", "web") == 2, 30000));
    cr_assert(!leads(&B));
    int64_t t0 = pcd_now_ms();
    cr_assert_eq(pcd_stop(&A, SIGTERM, 10000), 0, "exit status after SIGTERM");
    cr_assert(PC_WAIT(leads(&B), 20000));
    int64_t took = pcd_now_ms() - t0;
    cr_assert_lt(took, 7500, "handover took %lld ms (the lease is 15 s)", (long long)took);
    cr_assert_eq(claim(&B, "default", "web", NULL, NULL, NULL), 200);
}

static json_t *sandboxclaim(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/%s",
             name);
    return ksim_json(&K, "GET", path, NULL);
}

static const char *claim_phase(const char *name, char *buf)
{
    json_t *c = sandboxclaim(name);
    snprintf(buf, 64, "%s",
             json_string_value(json_object_get(json_object_get(c, "status"), "phase")) ?: "");
    json_decref(c);
    return buf;
}

static void make_claim(const char *name, const char *pool)
{
    char body[400];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxClaim\",\"metadata\":"
             "{\"name\":\"%s\"},\"spec\":{\"pool\":\"%s\",\"labels\":{\"owner\":\"%s\"}}}",
             name, pool, name);
    json_t *r = ksim_json(&K, "POST", "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims",
                          body);
    cr_assert_not_null(r, "SandboxClaim %s not created", name);
    json_decref(r);
}

static int pods_owned_by(const char *owner)
{
    char path[300];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods?labelSelector=owner%%3D%s",
             owner);
    json_t *l = ksim_json(&K, "GET", path, NULL);
    int n = (int)json_array_size(json_object_get(l, "items"));
    json_decref(l);
    return n;
}

Test(ha, sandboxclaims_bind_survive_a_restart_and_deleting_one_cancels_it, HA)
{
    const char *extra[] = {"--pool", "default/web=2", "--pool", "default/empty=0", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    char ph[64];
    make_claim("first", "web");
    cr_assert(PC_WAIT(!strcmp(claim_phase("first", ph), "Bound"), 20000), "first: %s", ph);
    json_t *c = sandboxclaim("first");
    char pod[256];
    snprintf(pod, sizeof(pod), "%s",
             json_string_value(json_object_get(json_object_get(c, "status"), "pod")));
    json_decref(c);
    cr_assert_eq(pods_owned_by("first"), 1);

    /* restart: a Bound claim is never served again; a claim made while no daemon ran is */
    cr_assert_eq(pcd_stop(&A, SIGTERM, 10000), 0);
    make_claim("second", "web");
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(!strcmp(claim_phase("second", ph), "Bound"), 20000), "second: %s", ph);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    cr_assert_eq(pods_owned_by("first"), 1, "the Bound claim was served again");
    cr_assert_eq(pods_owned_by("second"), 1);
    c = sandboxclaim("first");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c, "status"), "pod")), pod);
    json_decref(c);

    /* a claim on a pool with no pod waits Pending; deleting it cancels it */
    make_claim("waiting", "empty");
    cr_assert(PC_WAIT(!strcmp(claim_phase("waiting", ph), "Pending"), 20000), "waiting: %s", ph);
    cr_assert(pcd_wait_metric(&A, "podclaim_queue_length", "pool=\"empty\"", 1, 20000));
    json_decref(ksim_json(&K, "DELETE",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/waiting",
                          NULL));
    cr_assert(pcd_wait_metric(&A, "podclaimd_claim_controller_total", "result=\"cancelled\"", 1,
                              20000));
    cr_assert(pcd_wait_metric_at_most(&A, "podclaim_queue_length", "pool=\"empty\"", 0, 20000));
    no_double_win();
}

static json_t *pod_get(const char *name)
{
    char path[300];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", name);
    return ksim_json(&K, "GET", path, NULL);
}

static const char *pod_phase_label(const char *name, char *buf)
{
    json_t *p = pod_get(name);
    const char *v = json_string_value(json_object_get(
            json_object_get(json_object_get(p, "metadata"), "labels"), "podclaim.io/phase"));
    snprintf(buf, 64, "%s", p ? (v ? v : "") : "(gone)");
    json_decref(p);
    return buf;
}

/* A claim deleted while no replica runs: its finalizer keeps it, terminating, until a replica
 * is back, releases the pod it won and removes the finalizer. Without the finalizer the claim
 * vanished and its pod stayed claimed for good. */
Test(ha, a_claim_deleted_while_no_replica_runs_is_released_when_one_returns, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    char ph[64];
    make_claim("gone", "web");
    cr_assert(PC_WAIT(!strcmp(claim_phase("gone", ph), "Bound"), 20000), "gone: %s", ph);
    json_t *c = sandboxclaim("gone");
    char pod[256];
    snprintf(pod, sizeof(pod), "%s",
             json_string_value(json_object_get(json_object_get(c, "status"), "pod")));
    json_t *fin = json_object_get(json_object_get(c, "metadata"), "finalizers");
    cr_assert(json_array_size(fin) == 1 &&
                      !strcmp(json_string_value(json_array_get(fin, 0)), "podclaim.io/release"),
              "no finalizer on a served claim");
    json_decref(c);
    cr_assert_str_eq(pod_phase_label(pod, ph), "Running");

    cr_assert_eq(pcd_stop(&A, SIGTERM, 10000), 0);
    json_decref(ksim_json(&K, "DELETE",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims/gone",
                          NULL));
    c = sandboxclaim("gone");
    cr_assert_not_null(c, "the claim went at once: no finalizer held it");
    cr_assert_not_null(json_object_get(json_object_get(c, "metadata"), "deletionTimestamp"));
    json_decref(c);
    cr_assert_str_eq(pod_phase_label(pod, ph), "Running");

    cr_assert_eq(pcd_start(&A, config(NULL, NULL, NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(strcmp(pod_phase_label(pod, ph), "Running") != 0, 20000),
              "the pod of the deleted claim was not released: %s", ph);
    int64_t end = pcd_now_ms() + 20000;
    json_t *left;
    while ((left = sandboxclaim("gone")) != NULL && pcd_now_ms() < end) {
        json_decref(left);
        usleep(50000);
    }
    cr_assert_null(left, "the finalizer was not removed");
    /* the pool recycles it: two idle again */
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    no_double_win();
}

/* A DELETE may reach a replica that did not win the claim: the winner was killed before the
 * caller could release (or before it answered), and the caller retries on the other replica.
 * Each replica learns every claim from its informer, also one first seen in its LIST after a
 * restart, so the release works anywhere (and nothing is left claimed by nobody). */
Test(ha, a_claim_won_through_a_killed_replica_is_released_through_the_other, HA)
{
    const char *extra[] = {"--pool", "default/web=2", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config("replica-a", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(leads(&A), 20000));
    cr_assert_eq(pcd_start(&B, config("replica-b", "3s", NULL), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 2, 30000));
    char pod[256], ph[64];
    cr_assert_eq(
            claim(&A, "default", "web", "{\"claimId\":\"on-a\",\"timeoutSeconds\":20}", pod, NULL),
            200);
    /* the follower's informer shows the pod held by on-a: it knows the claim */
    cr_assert(pcd_wait_metric(&B, "podclaimd_claims_adopted_total", NULL, 1, 20000),
              "the follower never registered the claim won through the leader");
    pcd_stop(&A, SIGKILL, 2000);
    cr_assert_eq(release(&B, "default", "web", "on-a"), 200,
                 "the survivor does not know the claim won through the killed replica");
    cr_assert(PC_WAIT(strcmp(pod_phase_label(pod, ph), "Running") != 0, 20000),
              "the pod was not released: %s", ph);

    /* the other way round, after a restart: the claim is won through B while A is down, so A
     * first sees the pod held in its LIST */
    cr_assert(PC_WAIT(leads(&B), 20000), "the follower never took over");
    cr_assert(PC_WAIT(pool_idle(&B, "default", "web") == 2, 30000));
    cr_assert_eq(
            claim(&B, "default", "web", "{\"claimId\":\"on-b\",\"timeoutSeconds\":20}", pod, NULL),
            200);
    cr_assert_eq(pcd_start(&A, config("replica-a", "3s", NULL), K.url, NULL, true), 0);
    int64_t end = pcd_now_ms() + 20000;
    long st;
    /* 404 until A's informer has listed (A answers before its first LIST is in) */
    while ((st = release(&A, "default", "web", "on-b")) == 404 && pcd_now_ms() < end)
        usleep(50000);
    cr_assert_eq(st, 200, "the restarted replica does not know the claim won through the other");
    cr_assert(PC_WAIT(strcmp(pod_phase_label(pod, ph), "Running") != 0, 20000),
              "the pod was not released: %s", ph);
    cr_assert_eq(release(&B, "default", "web", "unknown-claim"), 404);
    cr_assert(PC_WAIT(pool_idle(&B, "default", "web") == 2, 30000));
    no_double_win();
}

Test(ha, a_pod_that_never_becomes_ready_makes_an_event_and_a_degraded_condition, HA)
{
    const char *extra[] = {"--pool", "default/web=1", "--kubelet-never-ready", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, "controllers:\n  readyTimeout: 300ms\n"), K.url,
                           NULL, true),
                 0);
    json_t *pool = NULL;
    cr_assert(PC_WAIT(({
                          json_decref(pool);
                          pool = sandboxpool("default", "web");
                          bool degraded = false;
                          size_t i;
                          json_t *cd;
                          json_array_foreach(
                                  json_object_get(json_object_get(pool, "status"), "conditions"), i,
                                  cd)
                          {
                              const char *t = json_string_value(json_object_get(cd, "type"));
                              const char *s = json_string_value(json_object_get(cd, "status"));
                              const char *r = json_string_value(json_object_get(cd, "reason"));
                              degraded |= t && !strcmp(t, "Degraded") && s && !strcmp(s, "True") &&
                                          r && !strcmp(r, "PodsNotReady");
                          }
                          degraded;
                      }),
                      20000),
              "no Degraded=True PodsNotReady condition: %s",
              json_dumps(json_object_get(pool, "status"), 0));
    json_decref(pool);
    json_t *ev = NULL;
    cr_assert(PC_WAIT(({
                          json_decref(ev);
                          ev = ksim_json(&K, "GET",
                                         "/apis/events.k8s.io/v1/namespaces/default/events", NULL);
                          bool found = false;
                          size_t i;
                          json_t *e;
                          json_array_foreach(json_object_get(ev, "items"), i, e)
                          {
                              const char *r = json_string_value(json_object_get(e, "reason"));
                              found |= r && !strcmp(r, "PodNotReady");
                          }
                          found;
                      }),
                      20000),
              "no PodNotReady Event");
    json_decref(ev);
}

Test(ha, status_writes_stay_within_the_rate_limit_under_load, HA)
{
    const char *extra[] = {"--pool", "default/web=8", NULL};
    start_sim(extra);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, "controllers:\n  statusInterval: 1s\n"), K.url,
                           NULL, true),
                 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 8, 30000));
    double w0 = pcd_metric(&A, "podclaimd_pool_status_writes_total", NULL);
    int64_t t0 = pcd_now_ms();
    char out[128];
    snprintf(out, sizeof(out), "%s/load", A.dir);
    pid_t l = load(&A, "4s", out); /* idle, pending and dispatch figures change all the time */
    json_t *r = load_result(l, out);
    double secs = (double)(pcd_now_ms() - t0) / 1000.0;
    double w1 = pcd_metric(&A, "podclaimd_pool_status_writes_total", NULL);
    cr_assert_gt(json_integer_value(json_object_get(r, "ok")), 50);
    json_decref(r);
    cr_log_info("%.0f status writes in %.1f s", w1 - w0, secs);
    /* one pool, at most one write per second (plus the one at either edge) */
    cr_assert_leq(w1 - w0, secs + 2, "%.0f status writes in %.1f s", w1 - w0, secs);
    cr_assert_geq(w1 - w0, 1, "the status was never written while it changed");
}

/* ---- webhooks: a receiver in the test process ------------------------------------------- */

typedef struct hook_rx {
    pthread_mutex_t mu;
    json_t *got; /* array of the JSON bodies received */
} hook_rx;

typedef struct hook_req {
    char body[4096];
    size_t len;
} hook_req;

static enum MHD_Result hook(void *cls, struct MHD_Connection *conn, const char *url,
                            const char *method, const char *version, const char *data, size_t *size,
                            void **ctx)
{
    (void)url;
    (void)method;
    (void)version;
    hook_rx *rx = cls;
    hook_req *r = *ctx;
    if (!r) {
        *ctx = calloc(1, sizeof(hook_req));
        return MHD_YES;
    }
    if (*size) {
        size_t n = *size < sizeof(r->body) - 1 - r->len ? *size : sizeof(r->body) - 1 - r->len;
        memcpy(r->body + r->len, data, n);
        r->len += n;
        *size = 0;
        return MHD_YES;
    }
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    pthread_mutex_lock(&rx->mu);
    if (j)
        json_array_append_new(rx->got, j);
    pthread_mutex_unlock(&rx->mu);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void hook_done(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    free(*ctx);
    *ctx = NULL;
}

/* The outcome of claim id received, or NULL (a new reference). */
static json_t *hook_find(hook_rx *rx, const char *id)
{
    json_t *found = NULL;
    pthread_mutex_lock(&rx->mu);
    size_t i;
    json_t *e;
    json_array_foreach(rx->got, i, e)
    {
        const char *c = json_string_value(json_object_get(e, "claimId"));
        if (c && !strcmp(c, id))
            found = json_incref(e);
    }
    pthread_mutex_unlock(&rx->mu);
    return found;
}

Test(ha, claim_outcomes_are_posted_to_the_pools_webhook, HA)
{
    hook_rx rx = {.got = json_array()};
    pthread_mutex_init(&rx.mu, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, hook,
            &rx, MHD_OPTION_NOTIFY_COMPLETED, hook_done, NULL, MHD_OPTION_END);
    cr_assert_not_null(d);
    int port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    const char *extra[] = {"--pool", "default/web=1", "--pool", "default/obj=1", NULL};
    start_sim(extra);
    /* web: the URL from the file; obj: from the SandboxPool's spec.webhook.url */
    char more[512], patch[256];
    snprintf(more, sizeof(more),
             "pools:\n  - namespace: default\n    name: web\n"
             "    webhookUrl: http://127.0.0.1:%d/web\n",
             port);
    snprintf(patch, sizeof(patch), "{\"spec\":{\"webhook\":{\"url\":\"http://127.0.0.1:%d/obj\"}}}",
             port);
    merge_patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/obj", patch);
    cr_assert_eq(pcd_start(&A, config(NULL, NULL, more), K.url, NULL, true), 0);
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 1 && pool_idle(&A, "default", "obj") == 1,
                      30000));
    /* web is in the file and a SandboxPool; obj only a SandboxPool */
    json_t *src = get(&A, "/v1/pools/default/web");
    cr_assert_str_eq(json_string_value(json_object_get(src, "source")), "file+object");
    json_decref(src);
    src = get(&A, "/v1/pools/default/obj");
    cr_assert_str_eq(json_string_value(json_object_get(src, "source")), "object");
    json_decref(src);
    char pod[256], id[64], id2[64];
    cr_assert_eq(claim(&A, "default", "web", NULL, pod, id), 200);
    json_t *e = NULL;
    cr_assert(PC_WAIT((e = hook_find(&rx, id)) != NULL, 20000), "no webhook for %s", id);
    cr_assert_str_eq(json_string_value(json_object_get(e, "result")), "ok");
    cr_assert_str_eq(json_string_value(json_object_get(e, "pod")), pod);
    cr_assert_str_eq(json_string_value(json_object_get(e, "pool")), "web");
    cr_assert(json_is_number(json_object_get(e, "latencyMs")));
    json_decref(e);
    cr_assert_eq(claim(&A, "default", "obj", NULL, NULL, id2), 200);
    cr_assert(PC_WAIT((e = hook_find(&rx, id2)) != NULL, 20000), "no webhook for %s", id2);
    json_decref(e);
    /* a claim that fails is an outcome too (no pod: its deadline passes) */
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 1, 30000));
    merge_patch("/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools/web",
                "{\"spec\":{\"replicas\":0}}");
    cr_assert(PC_WAIT(pool_idle(&A, "default", "web") == 0, 30000));
    cr_assert_eq(
            claim(&A, "default", "web", "{\"timeoutSeconds\":1,\"claimId\":\"late\"}", NULL, NULL),
            504);
    cr_assert(PC_WAIT((e = hook_find(&rx, "late")) != NULL, 20000), "no webhook for a 504");
    cr_assert_str_eq(json_string_value(json_object_get(e, "result")), "deadline");
    json_decref(e);
    cr_assert(pcd_wait_metric(&A, "podclaimd_webhook_total", "result=\"delivered\"", 3, 20000));
    pcd_stop(&A, SIGTERM, 10000);
    MHD_stop_daemon(d);
    json_decref(rx.got);
    pthread_mutex_destroy(&rx.mu);
}

/* perPool: one Lease per pool, so two replicas share the pools; a dead replica's pools move. */
static bool leads_pool(const pcd_proc *p, const char *pool)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/pools/default/%s", pool);
    json_t *j = get(p, path);
    bool l = j && json_is_true(json_object_get(j, "leading"));
    json_decref(j);
    return l;
}

Test(ha, per_pool_leases_share_the_pools_and_a_dead_replicas_pools_move, HA)
{
    const char *extra[] = {"--pool", "default/p1=1", "--pool", "default/p2=1",
                           "--pool", "default/p3=1", NULL};
    start_sim(extra);
    /* config() ends inside the leaderElection mapping: perPool joins it */
    char ca[2048], cb[2048];
    snprintf(ca, sizeof(ca), "%s", config("replica-a", "3s", NULL));
    snprintf(cb, sizeof(cb), "%s", config("replica-b", "3s", NULL));
    strcat(ca, "  perPool: true\n");
    strcat(cb, "  perPool: true\n");
    cr_assert_eq(pcd_start(&A, ca, K.url, NULL, true), 0);
    cr_assert_eq(pcd_start(&B, cb, K.url, NULL, true), 0);
    const char *pools[] = {"p1", "p2", "p3"};
    /* every pool has exactly one leader */
    cr_assert(PC_WAIT(({
                          bool ok = true;
                          for (int i = 0; i < 3; i++)
                              ok &= leads_pool(&A, pools[i]) != leads_pool(&B, pools[i]);
                          ok;
                      }),
                      20000),
              "a pool without exactly one leader");
    for (int i = 0; i < 3; i++) {
        pcd_proc *l = leads_pool(&A, pools[i]) ? &A : &B, *f = l == &A ? &B : &A;
        cr_assert(PC_WAIT(pool_idle(l, "default", pools[i]) == 1, 30000));
        char u[256];
        snprintf(u, sizeof(u), "%s/v1/pools/default/%s/claims", f->url, pools[i]);
        pcd_http h;
        cr_assert_eq(pcd_req("POST", u, "{}", NULL, &h), 0);
        cr_assert_eq(h.status, 503, "the follower of %s: %s", pools[i], h.body);
        cr_assert_eq(claim(l, "default", pools[i], NULL, NULL, NULL), 200);
    }
    /* kill -9 of A: its pools move to B within the lease duration (+ slack) */
    pcd_stop(&A, SIGKILL, 2000);
    cr_assert(PC_WAIT(leads_pool(&B, "p1") && leads_pool(&B, "p2") && leads_pool(&B, "p3"), 20000),
              "B does not lead every pool");
    char u[256];
    snprintf(u, sizeof(u), "%s/readyz", B.url);
    pcd_http h;
    cr_assert_eq(pcd_req("GET", u, NULL, NULL, &h), 0);
    cr_assert(strstr(h.body, "leader of 3/3 pools"), "%s", h.body);
    no_double_win();
}
