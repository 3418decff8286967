/* pc_env: route a claim to one member pool by tags and a ranking strategy (podclaim/env.h).
 *
 * Flow: caller -> [env] -> pool (inbox, ready-queue, pending) -> ... -> result.
 *
 * Uses the public pool API only (pc_pool_snapshot, pc_pool_enqueue). Members are fixed before
 * use, so rank/enqueue read them without a lock; the round-robin cursor is the one mutable
 * field, a relaxed atomic counter (it orders nothing: any interleaving of increments is a
 * fair rotation).
 */
#include <podclaim/env.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Rank key of a pool without an idle pod under least-loaded: after every finite ratio. */
#define INFINITY_KEY 1e300

typedef struct member {
    pc_pool *pool;
    char **tags;
    size_t n_tags;
} member;

struct pc_env {
    char *name;
    pc_env_strategy strategy;
    member members[PC_ENV_MAX_POOLS];
    size_t n;
    _Atomic uint64_t rr; /* round-robin cursor; relaxed */
};

static const char *const strategy_names[] = {
#define PC_XX_STR(name, str) str,
        PC_ENV_STRATEGY_MAP(PC_XX_STR)
#undef PC_XX_STR
};

const char *pc_env_strategy_name(pc_env_strategy s)
{
    return (unsigned)s < PC_ENV_STRATEGY_COUNT ? strategy_names[s] : "unknown";
}

int pc_env_strategy_parse(const char *name, pc_env_strategy *out)
{
    for (int i = 0; name && i < PC_ENV_STRATEGY_COUNT; i++)
        if (strcmp(name, strategy_names[i]) == 0) {
            *out = (pc_env_strategy)i;
            return 0;
        }
    return -EINVAL;
}

int pc_env_new(const char *name, pc_env_strategy strategy, pc_env **out)
{
    if (name == NULL || name[0] == '\0' || (unsigned)strategy >= PC_ENV_STRATEGY_COUNT ||
        out == NULL)
        return -EINVAL;
    pc_env *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = strdup(name)) == NULL) {
        free(e);
        return -ENOMEM;
    }
    e->strategy = strategy;
    atomic_init(&e->rr, 0);
    *out = e;
    return 0;
}

static void free_tags(char **tags, size_t n)
{
    for (size_t i = 0; tags && i < n; i++)
        free(tags[i]);
    free(tags);
}

int pc_env_add_pool(pc_env *e, pc_pool *pool, const char *const *tags, size_t n_tags)
{
    if (e == NULL || pool == NULL || (n_tags && tags == NULL))
        return -EINVAL;
    if (e->n == PC_ENV_MAX_POOLS)
        return -ENOSPC;
    char **copy = n_tags ? calloc(n_tags, sizeof(char *)) : NULL;
    if (n_tags && copy == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n_tags; i++)
        if (tags[i] == NULL || (copy[i] = strdup(tags[i])) == NULL) {
            free_tags(copy, n_tags);
            return tags[i] == NULL ? -EINVAL : -ENOMEM;
        }
    e->members[e->n++] = (member){.pool = pool, .tags = copy, .n_tags = n_tags};
    return 0;
}

const char *pc_env_name(const pc_env *e)
{
    return e->name;
}

size_t pc_env_size(const pc_env *e)
{
    return e->n;
}

static bool has_tags(const member *m, const char *const *required, size_t n_required)
{
    for (size_t i = 0; i < n_required; i++) {
        bool found = false;
        for (size_t k = 0; k < m->n_tags && !found; k++)
            found = strcmp(m->tags[k], required[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

typedef struct ranked {
    size_t index; /* member index: the tie-breaker */
    double key;   /* lower ranks first */
    uint64_t queue;
} ranked;

static bool before(const ranked *a, const ranked *b)
{
    if (a->key != b->key)
        return a->key < b->key;
    if (a->queue != b->queue)
        return a->queue < b->queue;
    return a->index < b->index;
}

size_t pc_env_rank(pc_env *e, const char *const *required, size_t n_required, pc_pool **out,
                   size_t max)
{
    ranked r[PC_ENV_MAX_POOLS];
    size_t n = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (!has_tags(&e->members[i], required, n_required))
            continue;
        pc_snapshot s = pc_pool_snapshot(e->members[i].pool);
        ranked x = {.index = i, .queue = s.queue_len};
        switch (e->strategy) {
        case PC_ENV_MOST_IDLE:
            x.key = -(double)s.idle_ready;
            break;
        case PC_ENV_LEAST_LOADED:
            /* queue / idle; no idle pod at all ranks after any pool with one, and among
             * those the shortest queue wins (the tie-breaker below). */
            x.key = s.idle_ready ? (double)s.queue_len / (double)s.idle_ready : INFINITY_KEY;
            break;
        default:
            x.key = 0; /* rotated below */
            break;
        }
        r[n++] = x;
    }
    if (n == 0)
        return 0;
    if (e->strategy == PC_ENV_ROUND_ROBIN) {
        /* relaxed: the cursor only spreads consecutive claims, it guards no data */
        size_t start = (size_t)(atomic_fetch_add_explicit(&e->rr, 1, memory_order_relaxed) % n);
        for (size_t i = 0; i < n && i < max; i++)
            out[i] = e->members[r[(start + i) % n].index].pool;
        return n;
    }
    /* insertion sort: at most PC_ENV_MAX_POOLS members, usually a handful */
    for (size_t i = 1; i < n; i++) {
        ranked x = r[i];
        size_t k = i;
        while (k > 0 && before(&x, &r[k - 1])) {
            r[k] = r[k - 1];
            k--;
        }
        r[k] = x;
    }
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = e->members[r[i].index].pool;
    return n;
}

int pc_env_enqueue(pc_env *e, const char *const *required, size_t n_required, pc_claim *c,
                   pc_pool **chosen)
{
    pc_pool *order[PC_ENV_MAX_POOLS];
    size_t n = pc_env_rank(e, required, n_required, order, PC_ENV_MAX_POOLS);
    if (n == 0)
        return -ENOENT;
    int err = -ESHUTDOWN;
    bool full = false;
    for (size_t i = 0; i < n; i++) {
        err = pc_pool_enqueue(order[i], c);
        if (err == 0) {
            if (chosen)
                *chosen = order[i];
            return 0;
        }
        if (err == -EINVAL)
            return err; /* the claim itself is bad: every pool would say so */
        full |= err == -EAGAIN;
    }
    return full ? -EAGAIN : err;
}

void pc_env_free(pc_env *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++)
        free_tags(e->members[i].tags, e->members[i].n_tags);
    free(e->name);
    free(e);
}
