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
    int64_t promote_after_ns, retry_backoff_ns, reservation_ttl_ns, conflict_hold_ns;
    int64_t resync_period_ns; /* 0 = never */
    int64_t claim_timeout_ns; /* deadline of a claim that names no timeoutSeconds */
    uint64_t max_waiting;     /* claims waiting in the pool before new ones get 503; 0 = no bound */
    char *webhook_url;        /* claim outcomes POSTed here; "" = none */
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
    int64_t kube_deadline_grace_ns; /* 0 = none */

    uint64_t http_threads, http_max_connections, http_max_body, retry_after_s;
    int64_t http_idle_timeout_ns;
    int64_t shutdown_grace_ns, shutdown_timeout_ns;
    uint64_t max_tracked;

    /* leader election (one Lease, or one per pool) and the cluster controllers */
    bool le_enabled, le_per_pool;
    char *le_lease_name, *le_lease_namespace, *le_identity; /* "" = from the environment */
    int64_t le_lease_ns, le_renew_ns, le_retry_ns;
    bool ctl_pools, ctl_claims;
    char *ctl_namespace; /* SandboxPools/SandboxClaims of this namespace; "" = all */
    int64_t ctl_status_interval_ns, ctl_ready_timeout_ns, ctl_empty_grace_ns;
    uint64_t wh_queue, wh_attempts;
    int64_t wh_timeout_ns;

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

/* A pool's settings at their defaults (a pool defined by a SandboxPool object and not in the
 * file). Cannot fail but for memory (-ENOMEM). */
int pcd_pool_cfg_defaults(pcd_pool_cfg *p);
/* Deep copy of src into dst (dst's old contents are not freed). Returns 0 or -ENOMEM. */
int pcd_pool_cfg_copy(pcd_pool_cfg *dst, const pcd_pool_cfg *src);
/* Free the strings and lists of p (not p). */
void pcd_pool_cfg_fini(pcd_pool_cfg *p);
/* Whether s is a DNS-1123 label / a label value (the checks the file gets). */
bool pcd_dns_label(const char *s);
bool pcd_label_value(const char *s);

/* --help text: usage and every key with its default. */
void pcd_config_usage(FILE *out);

#endif
