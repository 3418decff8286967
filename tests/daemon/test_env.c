/* pc_env in process: tag filtering and the three strategies over in-memory pools. */
#include <podclaim/env.h>
#include <podclaim/membackend.h>

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static pc_membackend *mb;
static pc_pool *pools[3];
static pc_env *env;

static void setup_pools(int idle0, int idle1, int idle2)
{
    pc_membackend_config bc = {.seed = 1};
    cr_assert_eq(pc_membackend_new(&bc, &mb), 0);
    const char *names[] = {"a", "b", "c"};
    int idle[] = {idle0, idle1, idle2};
    for (int i = 0; i < 3; i++) {
        pc_pool_config c = {.namespace_ = "ns", .name = names[i], .resync_period_ns = -1};
        cr_assert_eq(pc_pool_new(&c, pc_membackend_backend(mb), &pools[i]), 0);
        cr_assert_eq(pc_pool_start(pools[i]), 0);
        for (int k = 0; k < idle[i]; k++) {
            char pod[32], rv[16];
            snprintf(pod, sizeof(pod), "%s-%d", names[i], k);
            snprintf(rv, sizeof(rv), "%d", k + 1);
            pc_pod_ref ref = {.namespace_ = "ns", .name = pod, .resource_version = rv};
            cr_assert_eq(pc_pool_offer_idle(pools[i], &ref), 0);
        }
    }
    /* offers are taken in by each scheduler thread: wait until the snapshots show them */
    for (int i = 0; i < 3; i++)
        for (int spin = 0; pc_pool_snapshot(pools[i]).idle_ready < (uint64_t)idle[i]; spin++) {
            cr_assert(spin < 5000, "pool %d never showed its idle pods", i);
            usleep(1000);
        }
}

static void teardown(void)
{
    pc_env_free(env);
    env = NULL;
    for (int i = 0; i < 3; i++) {
        pc_pool_free(pools[i]);
        pools[i] = NULL;
    }
    pc_membackend_free(mb);
}

static void make_env(pc_env_strategy s)
{
    cr_assert_eq(pc_env_new("prod", s, &env), 0);
    const char *gpu[] = {"gpu"}, *cpu[] = {"cpu"}, *both[] = {"gpu", "cuda-12"};
    cr_assert_eq(pc_env_add_pool(env, pools[0], gpu, 1), 0);
    cr_assert_eq(pc_env_add_pool(env, pools[1], cpu, 1), 0);
    cr_assert_eq(pc_env_add_pool(env, pools[2], both, 2), 0);
}

Test(env, strategy_names_round_trip)
{
    for (int i = 0; i < PC_ENV_STRATEGY_COUNT; i++) {
        pc_env_strategy s;
        cr_assert_eq(pc_env_strategy_parse(pc_env_strategy_name(i), &s), 0);
        cr_assert_eq((int)s, i);
    }
    pc_env_strategy s = PC_ENV_MOST_IDLE;
    cr_assert_eq(pc_env_strategy_parse("fastest", &s), -EINVAL);
}

Test(env, most_idle_picks_the_pool_with_most_idle_pods_among_those_with_the_tags, .fini = teardown,
     .timeout = 20)
{
    setup_pools(1, 5, 3);
    make_env(PC_ENV_MOST_IDLE);
    pc_pool *out[3];
    cr_assert_eq(pc_env_rank(env, NULL, 0, out, 3), 3);
    cr_assert_eq(out[0], pools[1]);
    cr_assert_eq(out[1], pools[2]);
    cr_assert_eq(out[2], pools[0]);
    const char *gpu[] = {"gpu"};
    cr_assert_eq(pc_env_rank(env, gpu, 1, out, 3), 2);
    cr_assert_eq(out[0], pools[2]);
    const char *cuda[] = {"gpu", "cuda-12"};
    cr_assert_eq(pc_env_rank(env, cuda, 2, out, 3), 1);
    cr_assert_eq(out[0], pools[2]);
    const char *tpu[] = {"tpu"};
    cr_assert_eq(pc_env_rank(env, tpu, 1, out, 3), 0);
}

Test(env, least_loaded_prefers_a_pool_with_idle_pods_and_a_short_queue, .fini = teardown,
     .timeout = 20)
{
    setup_pools(0, 2, 4);
    make_env(PC_ENV_LEAST_LOADED);
    pc_pool *out[3];
    cr_assert_eq(pc_env_rank(env, NULL, 0, out, 3), 3);
    /* all queues empty: 0/2 == 0/4; the tie goes to the member added first; no idle is last */
    cr_assert_eq(out[0], pools[1]);
    cr_assert_eq(out[1], pools[2]);
    cr_assert_eq(out[2], pools[0]);
}

Test(env, round_robin_rotates, .fini = teardown, .timeout = 20)
{
    setup_pools(1, 1, 1);
    make_env(PC_ENV_ROUND_ROBIN);
    pc_pool *seen[6];
    for (int i = 0; i < 6; i++)
        cr_assert_eq(pc_env_rank(env, NULL, 0, &seen[i], 1), 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_neq(seen[i], seen[(i + 1) % 3]);
        cr_assert_eq(seen[i], seen[i + 3]);
    }
}

static void on_done(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)c;
    (void)r;
    (void)arg;
}

Test(env, enqueue_skips_a_pool_that_is_shutting_down_and_says_when_no_pool_fits, .fini = teardown,
     .timeout = 20)
{
    setup_pools(1, 5, 3);
    make_env(PC_ENV_MOST_IDLE);
    pc_pool_shutdown(pools[1]); /* the most idle one refuses: the next one takes the claim */
    pc_claim c;
    pc_claim_init(&c, 1, on_done, NULL);
    pc_pool *chosen = NULL;
    cr_assert_eq(pc_env_enqueue(env, NULL, 0, &c, &chosen), 0);
    cr_assert_eq(chosen, pools[2]);
    pc_claim d;
    pc_claim_init(&d, 1, on_done, NULL);
    const char *tpu[] = {"tpu"};
    cr_assert_eq(pc_env_enqueue(env, tpu, 1, &d, &chosen), -ENOENT);
    const char *cpu[] = {"cpu"};
    cr_assert_eq(pc_env_enqueue(env, cpu, 1, &d, &chosen), -ESHUTDOWN);
    pc_pool_shutdown(pools[2]); /* c ends before the stack frame goes */
}
