/* podclaimd configuration: defaults < YAML file < PODCLAIM_* environment < flags.
 *
 * Flow: [config] -> podclaimd (kube client, informers, pools, envs, HTTP API).
 *
 * Every key, its type, default and help live in one table (config.c), so --help, the
 * validation messages and the environment/flag names cannot drift. A bad value is one line
 * naming where it came from, the key, the value and what is allowed.
 */
#ifndef PODCLAIM_DAEMON_CONFIG_H
#define PODCLAIM_DAEMON_CONFIG_H

#include <podclaim/env.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pcd_pool_cfg {
    char *namespace_, *name, *team, *user, *env;
    char **tags;
    size_t n_tags;
    char **containers; /* known container names (422 for others); NULL = learn from a pod */
    size_t n_containers;
    uint64_t inbox_capacity, max_inflight, cas_workers, retry_limit;
    int64_t promote_after_ns, retry_backoff_ns, reservation_ttl_ns;
    int64_t resync_period_ns; /* 0 = never */
    int64_t claim_timeout_ns; /* deadline of a claim that names no timeoutSeconds */
    uint64_t max_waiting;     /* claims waiting in the pool before new ones get 503; 0 = no bound */
} pcd_pool_cfg;

typedef struct pcd_env_cfg {
    char *name;
    char *strategy_name;
    pc_env_strategy strategy;
} pcd_env_cfg;

typedef struct pcd_config {
    char *listen; /* HOST:PORT */
    char *token;  /* API bearer token; "" = none. Never logged */
    char *token_file;
    char *log_level, *log_format;
    int log_level_num; /* PC_KUBE_LOG_* */
    bool log_json;

    char *kubeconfig, *context, *server, *kube_token, *kube_token_file, *ca_file;
    bool in_cluster, insecure;
    uint64_t kube_max_connections, kube_max_inflight;
    int64_t kube_timeout_ns;

    uint64_t http_threads, http_max_connections, http_max_body, retry_after_s;
    int64_t http_idle_timeout_ns;
    int64_t shutdown_grace_ns, shutdown_timeout_ns;
    uint64_t max_tracked;

    pcd_pool_cfg *pools;
    size_t n_pools;
    pcd_env_cfg *envs;
    size_t n_envs;
} pcd_config;

/* What main should do after pcd_config_load. */
enum { PCD_RUN, PCD_EXIT_OK, PCD_EXIT_BAD };

/* Parse argv (and PODCLAIM_* from `env`, the config file of --config or PODCLAIM_CONFIG).
 * Returns PCD_RUN with *cfg filled, PCD_EXIT_OK (--help printed, or --check-config passed),
 * or PCD_EXIT_BAD with one line on `err_out` (exit status 2). */
int pcd_config_load(int argc, char **argv, char **env, pcd_config *cfg, FILE *err_out);

void pcd_config_fini(pcd_config *cfg);

/* --help text: usage and every key with its default. */
void pcd_config_usage(FILE *out);

#endif
