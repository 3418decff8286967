/* podclaim environments: route a claim to one of several pools.
 *
 * Flow: caller -> [env: filter pools by tags, rank their snapshots] -> pool (inbox, ready-queue,
 *       pending) -> reservation -> scheduler starts the CAS -> backend -> result.
 *
 * An environment (e.g. "prod") groups pools that can serve the same claims. A claim names the
 * tags it needs (e.g. "gpu", "cuda-12"); the env keeps the member pools that carry every one of
 * them and ranks those by a strategy, reading each pool's snapshot (lock-free, tens of ns):
 *
 *   most-idle     the pool with the most idle pods ready now
 *   least-loaded  the lowest queue length / idle pods (a pool with no idle pod ranks after every
 *                 pool that has one; among those, the shortest queue)
 *   round-robin   members in turn (among the ones that fit)
 *
 * Ties go to the member added first. pc_env_enqueue tries the ranked pools in order until one
 * accepts the claim, so a full inbox sends the claim to the next best pool.
 *
 * Thread-safety: pc_env_new/add_pool/free from one thread before/after use; pick and enqueue
 * from any thread, concurrently. The env borrows its pools: they must outlive it.
 */
#ifndef PODCLAIM_ENV_H
#define PODCLAIM_ENV_H

#include <podclaim/podclaim.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PC_ENV_STRATEGY_MAP(XX)                                                                    \
    XX(MOST_IDLE, "most-idle")                                                                     \
    XX(LEAST_LOADED, "least-loaded")                                                               \
    XX(ROUND_ROBIN, "round-robin")

typedef enum pc_env_strategy {
#define PC_XX_ENUM(name, str) PC_ENV_##name,
    PC_ENV_STRATEGY_MAP(PC_XX_ENUM)
#undef PC_XX_ENUM
            PC_ENV_STRATEGY_COUNT
} pc_env_strategy;

/* "most-idle", "least-loaded", "round-robin"; "unknown" out of range. Static storage. */
const char *pc_env_strategy_name(pc_env_strategy s);

/* Parse a strategy name. Returns 0 and *out, or -EINVAL (*out unchanged). */
int pc_env_strategy_parse(const char *name, pc_env_strategy *out);

/* Members of one env; ranking works on the stack, so it needs a bound. */
#define PC_ENV_MAX_POOLS 64

typedef struct pc_env pc_env;

/* Create an empty env. Copies `name`. Returns 0 and *out, -EINVAL (no name, strategy out of
 * range), -ENOMEM. */
int pc_env_new(const char *name, pc_env_strategy strategy, pc_env **out);

/* Add a member pool with its tags (copied; the pool is borrowed). Not concurrent with rank or
 * enqueue. Returns 0, -EINVAL (NULL pool, n_tags without tags), -ENOSPC (PC_ENV_MAX_POOLS
 * members already), -ENOMEM; the env is unchanged on failure. */
int pc_env_add_pool(pc_env *e, pc_pool *pool, const char *const *tags, size_t n_tags);

/* The env's name and member count. Thread: any. */
const char *pc_env_name(const pc_env *e);
size_t pc_env_size(const pc_env *e);

/* Rank the members that carry every required tag (n_required 0 = all members), best first,
 * into out[0..max). Returns how many fit (may exceed max; only max are written), 0 when no
 * member has the tags. Thread: any. Blocking: no (snapshot reads; round-robin: one atomic
 * increment). */
size_t pc_env_rank(pc_env *e, const char *const *required, size_t n_required, pc_pool **out,
                   size_t max);

/* Enqueue `c` on the best member that fits and accepts it (pc_pool_enqueue), trying the next
 * ranked member when an inbox is full or a pool is shutting down. On 0, *chosen (if not NULL)
 * is the pool that took the claim and the callback will run exactly once. Otherwise the
 * callback is never called: -ENOENT no member has the tags, -EAGAIN every fitting inbox is
 * full, -ESHUTDOWN every fitting pool is shutting down, -EINVAL as pc_pool_enqueue.
 * Thread: any. Blocking: no. */
int pc_env_enqueue(pc_env *e, const char *const *required, size_t n_required, pc_claim *c,
                   pc_pool **chosen);

/* Free the env (not its pools). NULL is a no-op. */
void pc_env_free(pc_env *e);

#ifdef __cplusplus
}
#endif
#endif /* PODCLAIM_ENV_H */
