/* Replicas (cluster-helper processes: elector + pool and claim controllers + scheduler) over
 * one kapi-sim --kubelet-only: SandboxClaims keep being served across kill -9 of the leader and
 * SIGTERM of the next one, each claim wins exactly one pod and no idle period is won twice
 * (the claim log); with one Lease per pool, a dead replica's pools move to the survivor. */
#include "../kube/ksim.h"
#include "common.h"
#include "proc.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE_MS "3000"
#define RENEW_MS "2000"
#define RETRY_MS "200"

static ksim sim;
static proc reps[3];

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner), not one process each as Criterion runs them. */
static void setup(void)
{
    memset(&sim, 0, sizeof(sim));
    memset(reps, 0, sizeof(reps));
}

static void fini(void)
{
    for (int i = 0; i < 3; i++)
        proc_kill(&reps[i]);
    ksim_stop(&sim);
}

static void start_sim(void)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms", "30", "--restart-ms", "30", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
}

static void start_replica(proc *p, const char *id, bool per_pool, const char *const *pools)
{
    const char *argv[32] = {CLUSTER_HELPER_PATH,
                            "--server",
                            sim.url,
                            "--identity",
                            id,
                            "--lease-ms",
                            LEASE_MS,
                            "--renew-ms",
                            RENEW_MS,
                            "--retry-ms",
                            RETRY_MS,
                            "--controllers",
                            "--namespace",
                            "default"};
    int n = 14;
    if (per_pool) {
        argv[n++] = "--per-pool-leases";
    } else {
        argv[n++] = "--lease";
        argv[n++] = "default/podclaimd";
    }
    for (int i = 0; pools[i]; i++) {
        argv[n++] = "--pool";
        argv[n++] = pools[i];
    }
    argv[n] = NULL;
    cr_assert_eq(proc_start(p, argv), 0);
    cr_assert(PC_TEST_WAIT(proc_count(p, "ready") == 1, 10000), "replica %s did not start", id);
}

static void create_pool(const char *name, int replicas)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxPool\","
             "\"metadata\":{\"name\":\"%s\"},\"spec\":{\"replicas\":%d,\"template\":{\"spec\":{"
             "\"containers\":[{\"name\":\"sandbox\",\"image\":\"img:1\"}]}}}}",
             name, replicas);
    json_t *p = ksim_json(&sim, "POST",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxpools", body);
    cr_assert(p);
    json_decref(p);
}

static void create_claims(const char *pool, const char *prefix, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxClaim\","
                 "\"metadata\":{\"name\":\"%s-%d\"},\"spec\":{\"pool\":\"%s\"}}",
                 prefix, i, pool);
        json_t *c = ksim_json(&sim, "POST",
                              "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims", body);
        cr_assert(c);
        json_decref(c);
    }
}

/* Claims Bound, and every Bound one's pod really carries its claim id. */
static int bound(void)
{
    json_t *l = ksim_json(&sim, "GET",
                          "/apis/podclaim.io/v1alpha1/namespaces/default/sandboxclaims", NULL);
    int n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(l, "items"), i, c)
    {
        const char *ph = json_string_value(json_object_get(json_object_get(c, "status"), "phase"));
        n += ph && strcmp(ph, "Bound") == 0;
    }
    json_decref(l);
    return n;
}

/* The claim log: no (pod, idleResourceVersion) twice; every claim id at most once; returns the
 * number of transitions with an sbc- claim id. */
static int check_log(void)
{
    json_t *log = ksim_json(&sim, "GET", "/sim/claims", NULL);
    cr_assert(log);
    json_t *periods = json_object(), *ids = json_object();
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(json_object_get(log, "claims"), i, e)
    {
        char key[400];
        snprintf(key, sizeof(key), "%s@%s", json_string_value(json_object_get(e, "pod")),
                 json_string_value(json_object_get(e, "idleResourceVersion")));
        cr_assert_null(json_object_get(periods, key), "idle period %s won twice", key);
        json_object_set_new(periods, key, json_true());
        const char *id = json_string_value(json_object_get(e, "claimId"));
        if (id && strncmp(id, "sbc-", 4) == 0) {
            cr_assert_null(json_object_get(ids, id), "claim %s won two pods", id);
            json_object_set_new(ids, id, json_true());
            n++;
        }
    }
    json_decref(periods);
    json_decref(ids);
    json_decref(log);
    return n;
}

static int leader_of(proc *p, int n, const char *lease)
{
    char start[128], stop[128];
    snprintf(start, sizeof(start), "start %s ", lease);
    snprintf(stop, sizeof(stop), "stop %s ", lease);
    for (int i = 0; i < n; i++)
        if (p[i].pid > 0 && proc_count(&p[i], start) > proc_count(&p[i], stop))
            return i;
    return -1;
}

Test(failover, claims_are_served_across_kill_9_and_sigterm_of_the_leader, .init = setup,
     .fini = fini, .timeout = 120)
{
    start_sim();
    create_pool("web", 4);
    const char *pools[] = {"web", NULL};
    start_replica(&reps[0], "replica-a", false, pools);
    start_replica(&reps[1], "replica-b", false, pools);
    cr_assert(PC_TEST_WAIT(leader_of(reps, 2, "default/podclaimd") >= 0, 10000), "no leader");
    create_claims("web", "one", 0, 8);
    cr_assert(PC_TEST_WAIT(bound() == 8, 30000), "bound %d of 8", bound());

    /* kill -9 the leader with claims arriving: the follower takes over and serves them */
    int lead = leader_of(reps, 2, "default/podclaimd");
    start_replica(&reps[2], "replica-c", false, pools);
    create_claims("web", "two", 0, 8);
    int64_t killed = proc_now_ms();
    proc_kill(&reps[lead]);
    cr_assert(PC_TEST_WAIT(bound() == 16, 60000), "bound %d of 16 after kill -9", bound());
    int64_t served = proc_now_ms() - killed;
    int lead2 = leader_of(reps, 3, "default/podclaimd");
    cr_assert(lead2 >= 0 && lead2 != lead, "no new leader");
    cr_log_info("kill -9: all claims bound %lld ms after the kill", (long long)served);

    /* SIGTERM the new leader: it releases the lease, the third replica takes over at once */
    create_claims("web", "three", 0, 8);
    cr_assert_eq(proc_stop(&reps[lead2], 10000), 0, "the leader did not exit cleanly");
    cr_assert(PC_TEST_WAIT(bound() == 24, 60000), "bound %d of 24 after SIGTERM", bound());
    cr_assert_eq(check_log(), 24, "claims won in the claim log");
}

Test(failover, with_one_lease_per_pool_a_dead_replicas_pools_move, .init = setup, .fini = fini,
     .timeout = 120)
{
    start_sim();
    create_pool("p1", 2);
    create_pool("p2", 2);
    const char *pools[] = {"p1", "p2", NULL};
    start_replica(&reps[0], "replica-a", true, pools);
    start_replica(&reps[1], "replica-b", true, pools);
    cr_assert(PC_TEST_WAIT(leader_of(reps, 2, "default/podclaimd-pool-p1") >= 0 &&
                                   leader_of(reps, 2, "default/podclaimd-pool-p2") >= 0,
                           10000),
              "pools without a leader");
    create_claims("p1", "a", 0, 3);
    create_claims("p2", "b", 0, 3);
    cr_assert(PC_TEST_WAIT(bound() == 6, 30000), "bound %d of 6", bound());
    /* kill the replica leading p1; whatever it led moves to the other one */
    int dead = leader_of(reps, 2, "default/podclaimd-pool-p1");
    int alive = 1 - dead;
    proc_kill(&reps[dead]);
    cr_assert(PC_TEST_WAIT(leader_of(reps, 2, "default/podclaimd-pool-p1") == alive &&
                                   leader_of(reps, 2, "default/podclaimd-pool-p2") == alive,
                           30000),
              "the dead replica's pools did not move");
    create_claims("p1", "a", 3, 3);
    create_claims("p2", "b", 3, 3);
    cr_assert(PC_TEST_WAIT(bound() == 12, 30000), "bound %d of 12", bound());
    cr_assert_eq(check_log(), 12);
}
