/* podclaimd configuration (config.h): one table of keys drives the YAML file, the PODCLAIM_*
 * environment, the flags, --help and every error message.
 *
 * Flow: [config] -> podclaimd.
 *
 * Precedence: built-in defaults < the file (--config FILE or PODCLAIM_CONFIG) < environment
 * < flags. Pools come from the file's `pools:` list, plus PODCLAIM_POOLS=NS/NAME,... and
 * --pool NS/NAME (scheduler knobs at their defaults). libyaml's document API parses the file,
 * so a message can name the line.
 */
#include "config.h"

#include <podclaim/kube.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define CONFIG_MAX_BYTES (4 << 20)
#define CONFIG_MAX_DEPTH 32

typedef enum ktype { K_STR, K_BOOL, K_UINT, K_DUR, K_ENUM, K_ADDR, K_LIST } ktype;

typedef struct keydef {
    const char *key; /* as in the file: "kube.inCluster", "maxInflight" */
    ktype type;
    const char *def;     /* default, parsed like any other value ("" = empty) */
    size_t off;          /* field offset in pcd_config / pcd_pool_cfg / pcd_env_cfg */
    uint64_t lo, hi;     /* K_UINT range; K_DUR range in ms */
    const char *choices; /* K_ENUM: "a|b|c" */
    const char *help;
} keydef;

#define G(f) offsetof(pcd_config, f)
#define P(f) offsetof(pcd_pool_cfg, f)
#define E(f) offsetof(pcd_env_cfg, f)
#define MS_DAY (86400ull * 1000)

static const keydef global_keys[] = {
        {"listen", K_ADDR, "127.0.0.1:8080", G(listen), 0, 0, NULL,
         "HTTP API address, IPv4 HOST:PORT (port 0 = any free port)"},
        {"token", K_STR, "", G(token), 0, 0, NULL,
         "bearer token every API call must carry (\"\" = no auth; /healthz /readyz /metrics "
         "stay open)"},
        {"tokenFile", K_STR, "", G(token_file), 0, 0, NULL, "read the API token from this file"},
        {"log.level", K_ENUM, "info", G(log_level), 0, 0, "error|warn|info|debug", "log level"},
        {"log.format", K_ENUM, "logfmt", G(log_format), 0, 0, "logfmt|json",
         "log line format on stderr"},
        {"kube.kubeconfig", K_STR, "", G(kubeconfig), 0, 0, NULL,
         "kubeconfig file (\"\" = $KUBECONFIG or ~/.kube/config)"},
        {"kube.context", K_STR, "", G(context), 0, 0, NULL,
         "kubeconfig context (\"\" = current-context)"},
        {"kube.inCluster", K_BOOL, "false", G(in_cluster), 0, 0, NULL,
         "use the pod's service account (KUBERNETES_SERVICE_HOST, token, ca.crt)"},
        {"kube.server", K_STR, "", G(server), 0, 0, NULL,
         "API server URL; set: use server + token + CA instead of a kubeconfig"},
        {"kube.token", K_STR, "", G(kube_token), 0, 0, NULL, "API server bearer token"},
        {"kube.tokenFile", K_STR, "", G(kube_token_file), 0, 0, NULL,
         "API server token file (re-read when it changes)"},
        {"kube.caFile", K_STR, "", G(ca_file), 0, 0, NULL, "CA bundle (PEM) of the API server"},
        {"kube.insecureSkipTlsVerify", K_BOOL, "false", G(insecure), 0, 0, NULL,
         "do not verify the server's certificate (logs a warning)"},
        {"kube.maxConnections", K_UINT, "8", G(kube_max_connections), 1, 1024, NULL,
         "connections the CAS backend keeps to the API server"},
        {"kube.maxInflight", K_UINT, "256", G(kube_max_inflight), 1, 65536, NULL,
         "PATCHes in flight at once, all pools (each slot keeps a 64 KiB request buffer)"},
        {"kube.timeout", K_DUR, "10s", G(kube_timeout_ns), 1, MS_DAY, NULL,
         "timeout of one PATCH (also the cap of kube.deadlineGrace)"},
        {"kube.deadlineGrace", K_DUR, "1s", G(kube_deadline_grace_ns), 0, 60000, NULL,
         "a claim's PATCH in flight at its deadline is waited for this long more: its answer "
         "decides the claim (a pod won is answered 200); 0 = abandoned at the deadline, where "
         "a PATCH the server applies anyway leaves a late win to give back"},
        {"http.threads", K_UINT, "2", G(http_threads), 1, 64, NULL,
         "HTTP event-loop threads (a waiting claim holds none)"},
        {"http.maxConnections", K_UINT, "16384", G(http_max_connections), 16, 1000000, NULL,
         "open client connections (waiting claims included)"},
        {"http.maxBody", K_UINT, "65536", G(http_max_body), 256, 16777216, NULL,
         "request body limit in bytes (413 above)"},
        {"http.idleTimeout", K_DUR, "120s", G(http_idle_timeout_ns), 1000, MS_DAY, NULL,
         "close a keep-alive connection idle this long"},
        {"http.retryAfterSeconds", K_UINT, "1", G(retry_after_s), 0, 3600, NULL,
         "Retry-After of a 503"},
        {"shutdown.grace", K_DUR, "5s", G(shutdown_grace_ns), 0, MS_DAY, NULL,
         "on SIGTERM, waiting claims may still win a pod this long, then get 503"},
        {"shutdown.timeout", K_DUR, "15s", G(shutdown_timeout_ns), 100, MS_DAY, NULL,
         "exit after this long whatever is left (exit status 1)"},
        {"claims.maxTracked", K_UINT, "1048576", G(max_tracked), 16, 1ull << 30, NULL,
         "claims remembered for DELETE (oldest forgotten first)"},
        {"leaderElection.enabled", K_BOOL, "false", G(le_enabled), 0, 0, NULL,
         "elect a leader on a coordination.k8s.io Lease: only the leader dispatches and writes "
         "(run 2 replicas); false = this process always leads"},
        {"leaderElection.leaseName", K_STR, "podclaimd", G(le_lease_name), 0, 0, NULL,
         "the Lease's name (per-pool Leases: NAME-NAMESPACE-POOL)"},
        {"leaderElection.leaseNamespace", K_STR, "", G(le_lease_namespace), 0, 0, NULL,
         "the Lease's namespace (\"\" = $POD_NAMESPACE, else default)"},
        {"leaderElection.identity", K_STR, "", G(le_identity), 0, 0, NULL,
         "this replica's holderIdentity (\"\" = $POD_NAME, else HOSTNAME-PID)"},
        {"leaderElection.leaseDuration", K_DUR, "15s", G(le_lease_ns), 1000, 3600000, NULL,
         "a follower takes a lease not renewed for this long (client-go's default)"},
        {"leaderElection.renewDeadline", K_DUR, "10s", G(le_renew_ns), 100, 3600000, NULL,
         "the leader stops dispatching when it could not renew for this long (< leaseDuration)"},
        {"leaderElection.retryPeriod", K_DUR, "2s", G(le_retry_ns), 50, 3600000, NULL,
         "renew / acquire attempts this often (1.2x < renewDeadline)"},
        {"leaderElection.perPool", K_BOOL, "false", G(le_per_pool), 0, 0, NULL,
         "one Lease per pool instead of one for everything: replicas share the pools"},
        {"controllers.pools", K_BOOL, "true", G(ctl_pools), 0, 0, NULL,
         "run the SandboxPool controller: serve every SandboxPool, create its pods from the "
         "template, Idle when Ready, recycle released pods, write status"},
        {"controllers.claims", K_BOOL, "true", G(ctl_claims), 0, 0, NULL,
         "run the SandboxClaim controller (declarative claims)"},
        {"controllers.namespace", K_STR, "", G(ctl_namespace), 0, 0, NULL,
         "watch SandboxPools and SandboxClaims of this namespace (\"\" = all namespaces)"},
        {"controllers.statusInterval", K_DUR, "1s", G(ctl_status_interval_ns), 100, 3600000, NULL,
         "at most one SandboxPool status write per pool per interval (only when changed)"},
        {"controllers.readyTimeout", K_DUR, "5m", G(ctl_ready_timeout_ns), 100, MS_DAY, NULL,
         "a pod not Ready this long after start or recycle: Event PodNotReady + Degraded"},
        {"controllers.emptyGrace", K_DUR, "10s", G(ctl_empty_grace_ns), 100, MS_DAY, NULL,
         "claims waiting with no idle pod this long: Event PoolEmpty + Degraded"},
        {"webhook.queueCapacity", K_UINT, "4096", G(wh_queue), 1, 1u << 24, NULL,
         "claim outcomes waiting to be POSTed (more are dropped and counted)"},
        {"webhook.maxAttempts", K_UINT, "5", G(wh_attempts), 1, 100, NULL,
         "POST attempts per outcome (jittered backoff 200ms doubling to 10s)"},
        {"webhook.timeout", K_DUR, "5s", G(wh_timeout_ns), 10, 600000, NULL,
         "timeout of one webhook POST"},
};

static const keydef pool_keys[] = {
        {"namespace", K_STR, "", P(namespace_), 0, 0, NULL, "namespace of the pool (required)"},
        {"name", K_STR, "", P(name), 0, 0, NULL,
         "pool name = label podclaim.io/pool of its pods (required)"},
        {"team", K_STR, "", P(team), 0, 0, NULL, "metrics label"},
        {"user", K_STR, "", P(user), 0, 0, NULL, "metrics label"},
        {"env", K_STR, "", P(env), 0, 0, NULL,
         "environment the pool serves (POST /v1/envs/{env}/claims); also a metrics label"},
        {"tags", K_LIST, "", P(tags), 0, 0, NULL, "tags a claim to the env can require"},
        {"containers", K_LIST, "", P(containers), 0, 0, NULL,
         "container names images may name ([] = learn from a pod of the pool)"},
        {"inboxCapacity", K_UINT, "65536", P(inbox_capacity), 1, 1u << 24, NULL,
         "claims accepted and not yet taken in by the scheduler (503 when full)"},
        {"maxInflight", K_UINT, "256", P(max_inflight), 1, 65536, NULL,
         "concurrent CAS calls of the pool"},
        {"casWorkers", K_UINT, "2", P(cas_workers), 1, 64, NULL,
         "ignored: the pool's scheduler starts every CAS itself"},
        {"promoteAfter", K_DUR, "30s", P(promote_after_ns), 1, MS_DAY, NULL,
         "aging: a waiting claim moves up one priority level per period"},
        {"retryLimit", K_UINT, "5", P(retry_limit), 1, 1000, NULL,
         "retryable CAS failures (429/5xx/timeout) before a claim fails"},
        {"retryBackoff", K_DUR, "50ms", P(retry_backoff_ns), 1, 60000, NULL,
         "first retry backoff, doubled per retry"},
        {"reservationTtl", K_DUR, "5s", P(reservation_ttl_ns), 1, MS_DAY, NULL,
         "a dispatched pod stays unselectable this long unless seen at a new version"},
        {"conflictHold", K_DUR, "1s", P(conflict_hold_ns), 1, MS_DAY, NULL,
         "the same after a 409 (at most reservationTtl): a real 409's new version comes "
         "with the watch"},
        {"resyncPeriod", K_DUR, "10s", P(resync_period_ns), 0, MS_DAY, NULL,
         "re-offer the informer's idle pods this often (0 = never)"},
        {"maxWaiting", K_UINT, "100000", P(max_waiting), 0, 1ull << 32, NULL,
         "claims queued in the pool (inbox + waiting) before new ones get 503 (0 = no bound)"},
        {"claimTimeout", K_DUR, "30s", P(claim_timeout_ns), 1, MS_DAY, NULL,
         "deadline of a claim that gives no timeoutSeconds (504 after)"},
        {"webhookUrl", K_STR, "", P(webhook_url), 0, 0, NULL,
         "POST each claim outcome here (http:// or https://; a SandboxPool's "
         "spec.webhook.url wins)"},
};

static const keydef env_keys[] = {
        {"name", K_STR, "", E(name), 0, 0, NULL, "environment name (required)"},
        {"strategy", K_ENUM, "most-idle", E(strategy_name), 0, 0,
         "most-idle|least-loaded|round-robin",
         "how a claim picks a member pool, after filtering by requiredTags"},
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))

/* ---- errors ----------------------------------------------------------------------------- */

typedef struct cerr {
    FILE *out;
    bool failed;
} cerr;

/* s up to `end` (NULL = its end), control characters, quotes and backslashes escaped: a value
 * from the file, the environment or a flag never breaks the one-line message (fuzz_daemon_config
 * found a newline in a value forging a second line). */
static void put_escaped(FILE *out, const char *s, const char *end)
{
    for (; *s && (!end || s < end); s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\n')
            fputs("\\n", out);
        else if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
}

/* One line: podclaimd: WHERE: KEY: "VALUE": WHAT. Never prints a token's value. */
static int fail(cerr *e, const char *where, const char *key, const char *value, const char *fmt,
                ...)
{
    if (e->failed)
        return -1;
    e->failed = true;
    bool secret = key && (strstr(key, "token") || strstr(key, "Token")) && !strstr(key, "File") &&
                  !strstr(key, "file");
    fputs("podclaimd: ", e->out);
    put_escaped(e->out, where, NULL);
    fputs(": ", e->out);
    put_escaped(e->out, key, NULL);
    fputs(": ", e->out);
    if (value) {
        fputc('"', e->out);
        if (secret) {
            fputs("(hidden)", e->out);
        } else {
            /* a server URL's user:password@ is a credential too (the kube client hides it) */
            const char *at = strstr(key, "server") ? strchr(value, '@') : NULL;
            const char *scheme = strstr(value, "://");
            put_escaped(e->out, value, at && scheme && scheme < at ? scheme + 3 : NULL);
            if (at && scheme && scheme < at) {
                fputs("***", e->out);
                put_escaped(e->out, at, NULL);
            }
        }
        fputs("\": ", e->out);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(e->out, fmt, ap);
    va_end(ap);
    fputc('\n', e->out);
    return -1;
}

/* ---- values ----------------------------------------------------------------------------- */

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

/* "500ms", "30s", "2m", "1h", "250us", "1.5s"; a bare number is seconds. */
static int parse_duration(const char *v, int64_t *out_ns)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || d < 0 || d != d)
        return -1;
    double mult = 1e9;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1e9;
    else if (strcmp(end, "ms") == 0)
        mult = 1e6;
    else if (strcmp(end, "us") == 0)
        mult = 1e3;
    else if (strcmp(end, "m") == 0)
        mult = 60e9;
    else if (strcmp(end, "h") == 0)
        mult = 3600e9;
    else
        return -1;
    double ns = d * mult;
    if (ns > 9.2e18)
        return -1;
    *out_ns = (int64_t)ns;
    return 0;
}

static int parse_addr(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    for (const char *p = v; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
            return -1;
    return 0;
}

static char **list_field(void *base, const keydef *k, size_t **n)
{
    char ***lp = (char ***)((char *)base + k->off);
    *n = (size_t *)((char *)base + k->off + sizeof(char **));
    return (char **)lp;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

static int set_list(cerr *e, const char *where, const char *key, const keydef *k, void *base,
                    const char *const *items, size_t n)
{
    size_t *np;
    char ***lp = (char ***)list_field(base, k, &np);
    free_list(*lp, *np);
    *lp = NULL;
    *np = 0;
    if (n == 0)
        return 0;
    char **l = calloc(n, sizeof(char *));
    for (size_t i = 0; l && i < n; i++) {
        if (items[i][0] == '\0') {
            free_list(l, n);
            return fail(e, where, key, items[i], "want a non-empty string in the list");
        }
        l[i] = strdup(items[i]);
    }
    *lp = l;
    *np = n;
    return 0;
}

/* Split "a,b,c" (empty = no items) and set the list. */
static int set_list_csv(cerr *e, const char *where, const char *key, const keydef *k, void *base,
                        const char *v)
{
    char *copy = strdup(v);
    const char *items[256];
    size_t n = 0;
    for (char *save, *t = strtok_r(copy, ",", &save); t && n < 256;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        items[n++] = t;
    }
    int rc = set_list(e, where, key, k, base, items, n);
    free(copy);
    return rc;
}

static int set_value(cerr *e, const char *where, const char *key, const keydef *k, void *base,
                     const char *v)
{
    void *field = (char *)base + k->off;
    switch (k->type) {
    case K_STR:
    case K_ENUM:
    case K_ADDR:
        if (k->type == K_ADDR && parse_addr(v) != 0)
            return fail(e, where, key, v,
                        "want HOST:PORT with an IPv4 address or name, port 0..65535");
        if (k->type == K_ENUM) {
            size_t vl = strlen(v);
            bool ok = false;
            for (const char *c = k->choices; *c && !ok;) {
                const char *bar = strchr(c, '|');
                size_t cl = bar ? (size_t)(bar - c) : strlen(c);
                ok = cl == vl && strncmp(c, v, cl) == 0;
                c += cl + (bar != NULL);
            }
            if (!ok)
                return fail(e, where, key, v, "want one of %s", k->choices);
        }
        free(*(char **)field);
        *(char **)field = strdup(v);
        return 0;
    case K_BOOL:
        if (parse_bool(v, (bool *)field) != 0)
            return fail(e, where, key, v, "want true or false");
        return 0;
    case K_UINT: {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-' || n < k->lo || n > k->hi)
            return fail(e, where, key, v, "want an integer in [%" PRIu64 ", %" PRIu64 "]", k->lo,
                        k->hi);
        *(uint64_t *)field = n;
        return 0;
    }
    case K_DUR: {
        int64_t ns;
        if (parse_duration(v, &ns) != 0 || (uint64_t)ns < k->lo * 1000000ull ||
            (uint64_t)ns > k->hi * 1000000ull)
            return fail(e, where, key, v,
                        "want a duration like 250ms, 30s, 2m (a bare number is seconds) in "
                        "[%" PRIu64 "ms, %" PRIu64 "ms]",
                        k->lo, k->hi);
        *(int64_t *)field = ns;
        return 0;
    }
    case K_LIST:
        return set_list_csv(e, where, key, k, base, v);
    }
    return -1;
}

static const keydef *find_key(const keydef *t, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].key, key) == 0)
            return &t[i];
    return NULL;
}

/* Whether some key of t starts with "prefix." */
static bool starts_a_key(const keydef *t, size_t n, const char *prefix)
{
    size_t pn = strlen(prefix);
    for (size_t i = 0; i < n; i++)
        if (strncmp(t[i].key, prefix, pn) == 0 && t[i].key[pn] == '.')
            return true;
    return false;
}

static int apply_defaults(cerr *e, const keydef *t, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++)
        if (set_value(e, "default", t[i].key, &t[i], base, t[i].def) != 0)
            return -1;
    return 0;
}

/* "kube.inCluster" -> "KUBE_IN_CLUSTER" (env) or "kube-in-cluster" (flag). */
static void key_to_name(const char *key, char *out, size_t len, bool env)
{
    size_t o = 0;
    for (const char *p = key; *p && o + 2 < len; p++) {
        if (*p == '.') {
            out[o++] = env ? '_' : '-';
        } else if (isupper((unsigned char)*p)) {
            out[o++] = env ? '_' : '-';
            out[o++] = env ? *p : (char)tolower((unsigned char)*p);
        } else {
            out[o++] = env ? (char)toupper((unsigned char)*p) : *p;
        }
    }
    out[o] = '\0';
}

/* ---- pools and envs ------------------------------------------------------------------------ */

static pcd_pool_cfg *add_pool(cerr *e, pcd_config *c)
{
    pcd_pool_cfg *np = realloc(c->pools, (c->n_pools + 1) * sizeof(*np));
    if (!np)
        return NULL;
    c->pools = np;
    pcd_pool_cfg *p = &c->pools[c->n_pools++];
    memset(p, 0, sizeof(*p));
    if (apply_defaults(e, pool_keys, NKEYS(pool_keys), p) != 0)
        return NULL;
    return p;
}

static pcd_env_cfg *add_env(cerr *e, pcd_config *c)
{
    pcd_env_cfg *ne = realloc(c->envs, (c->n_envs + 1) * sizeof(*ne));
    if (!ne)
        return NULL;
    c->envs = ne;
    pcd_env_cfg *v = &c->envs[c->n_envs++];
    memset(v, 0, sizeof(*v));
    if (apply_defaults(e, env_keys, NKEYS(env_keys), v) != 0)
        return NULL;
    return v;
}

/* "NS/NAME" from PODCLAIM_POOLS or --pool. */
static int add_pool_spec(cerr *e, pcd_config *c, const char *where, const char *spec)
{
    const char *slash = strchr(spec, '/');
    if (!slash || slash == spec || !slash[1] || strchr(slash + 1, '/'))
        return fail(e, where, "pools", spec, "want NAMESPACE/NAME");
    pcd_pool_cfg *p = add_pool(e, c);
    if (!p)
        return -1;
    free(p->namespace_);
    free(p->name);
    p->namespace_ = strndup(spec, (size_t)(slash - spec));
    p->name = strdup(slash + 1);
    return 0;
}

/* A DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63. */
static bool dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return false;
    return true;
}

/* A label value: at most 63, [A-Za-z0-9] at both ends, [-_.A-Za-z0-9] inside. */
static bool label_value(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
            return false;
    return true;
}

static int finish(cerr *e, pcd_config *c)
{
    static const char *levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(c->log_level, levels[i]) == 0)
            c->log_level_num = i;
    c->log_json = strcmp(c->log_format, "json") == 0;
    if (c->n_pools == 0 && !c->ctl_pools)
        return fail(e, "config", "pools", NULL,
                    "missing: want at least one pool (pools: in the file, PODCLAIM_POOLS=NS/NAME "
                    "or --pool NS/NAME), or controllers.pools: true (pools from SandboxPools)");
    char key[64];
    for (size_t i = 0; i < c->n_pools; i++) {
        pcd_pool_cfg *p = &c->pools[i];
        snprintf(key, sizeof(key), "pools[%zu].namespace", i);
        if (!dns_label(p->namespace_))
            return fail(e, "config", key, p->namespace_,
                        "want a DNS label (a-z, 0-9, '-', at most 63)");
        snprintf(key, sizeof(key), "pools[%zu].name", i);
        if (!label_value(p->name))
            return fail(e, "config", key, p->name,
                        "want a label value (A-Z a-z 0-9 - _ ., alphanumeric at both ends, at "
                        "most 63)");
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->pools[k].namespace_, p->namespace_) == 0 &&
                strcmp(c->pools[k].name, p->name) == 0)
                return fail(e, "config", key, p->name, "pool %s/%s is configured twice",
                            p->namespace_, p->name);
        if (p->webhook_url[0] && strncmp(p->webhook_url, "http://", 7) != 0 &&
            strncmp(p->webhook_url, "https://", 8) != 0) {
            snprintf(key, sizeof(key), "pools[%zu].webhookUrl", i);
            return fail(e, "config", key, p->webhook_url, "want an http:// or https:// URL");
        }
        if (p->env[0] && !label_value(p->env)) {
            snprintf(key, sizeof(key), "pools[%zu].env", i);
            return fail(e, "config", key, p->env, "want a label value (as a pool name)");
        }
        /* an env named by a pool and not declared exists with the default strategy */
        bool known = !p->env[0];
        for (size_t k = 0; k < c->n_envs && !known; k++)
            known = strcmp(c->envs[k].name, p->env) == 0;
        if (!known) {
            pcd_env_cfg *v = add_env(e, c);
            if (!v)
                return -1;
            free(v->name);
            v->name = strdup(p->env);
        }
    }
    for (size_t i = 0; i < c->n_envs; i++) {
        snprintf(key, sizeof(key), "envs[%zu].name", i);
        if (!label_value(c->envs[i].name))
            return fail(e, "config", key, c->envs[i].name, "want a label value");
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->envs[k].name, c->envs[i].name) == 0)
                return fail(e, "config", key, c->envs[i].name, "env is configured twice");
        pc_env_strategy_parse(c->envs[i].strategy_name, &c->envs[i].strategy);
    }
    if (c->server[0] && c->in_cluster)
        return fail(e, "config", "kube.server", c->server,
                    "set either kube.server or kube.inCluster, not both");
    if (c->ctl_namespace[0] && !dns_label(c->ctl_namespace))
        return fail(e, "config", "controllers.namespace", c->ctl_namespace, "want a DNS label");
    if (c->le_lease_namespace[0] && !dns_label(c->le_lease_namespace))
        return fail(e, "config", "leaderElection.leaseNamespace", c->le_lease_namespace,
                    "want a DNS label");
    if (!dns_label(c->le_lease_name) || strlen(c->le_lease_name) > 40)
        return fail(e, "config", "leaderElection.leaseName", c->le_lease_name,
                    "want a DNS label of at most 40 (per-pool Leases append -NAMESPACE-POOL)");
    /* client-go's order: the leader gives up (renew deadline) before a follower may take the
     * lease (lease duration), and it tries to renew more than once within the deadline */
    char v[64];
    if (c->le_renew_ns >= c->le_lease_ns) {
        snprintf(v, sizeof(v), "%lldms", (long long)(c->le_renew_ns / 1000000));
        return fail(e, "config", "leaderElection.renewDeadline", v,
                    "want less than leaderElection.leaseDuration (%lldms)",
                    (long long)(c->le_lease_ns / 1000000));
    }
    if (c->le_retry_ns * 12 >= c->le_renew_ns * 10) {
        snprintf(v, sizeof(v), "%lldms", (long long)(c->le_retry_ns / 1000000));
        return fail(e, "config", "leaderElection.retryPeriod", v,
                    "want 1.2x less than leaderElection.renewDeadline (%lldms)",
                    (long long)(c->le_renew_ns / 1000000));
    }
    return 0;
}

bool pcd_dns_label(const char *s)
{
    return dns_label(s);
}

bool pcd_label_value(const char *s)
{
    return label_value(s);
}

int pcd_pool_cfg_defaults(pcd_pool_cfg *p)
{
    cerr e = {.out = stderr};
    memset(p, 0, sizeof(*p));
    return apply_defaults(&e, pool_keys, NKEYS(pool_keys), p) != 0 ? -ENOMEM : 0;
}

void pcd_pool_cfg_fini(pcd_pool_cfg *p)
{
    for (size_t i = 0; i < NKEYS(pool_keys); i++) {
        const keydef *k = &pool_keys[i];
        void *f = (char *)p + k->off;
        if (k->type == K_LIST)
            free_list(*(char ***)f, *(size_t *)((char *)f + sizeof(char **)));
        else if (k->type == K_STR)
            free(*(char **)f);
    }
    memset(p, 0, sizeof(*p));
}

int pcd_pool_cfg_copy(pcd_pool_cfg *dst, const pcd_pool_cfg *src)
{
    *dst = *src;
    for (size_t i = 0; i < NKEYS(pool_keys); i++) {
        const keydef *k = &pool_keys[i];
        void *f = (char *)dst + k->off;
        if (k->type == K_STR) {
            char **sp = f;
            *sp = strdup(*sp ? *sp : "");
        } else if (k->type == K_LIST) {
            char ***lp = f;
            size_t n = *(size_t *)((char *)f + sizeof(char **));
            char **l = n ? calloc(n, sizeof(char *)) : NULL;
            for (size_t j = 0; l && j < n; j++)
                l[j] = strdup((*lp)[j]);
            *lp = l;
        }
    }
    return 0;
}

/* ---- the YAML file ------------------------------------------------------------------------- */

typedef struct yfile {
    const char *path;
    yaml_document_t doc;
} yfile;

static void where_of(const yfile *y, const yaml_node_t *n, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%zu", y->path, n->start_mark.line + 1);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int load_mapping(cerr *e, yfile *y, yaml_node_t *map, const char *prefix,
                        const keydef *table, size_t nt, void *base);

static int load_value(cerr *e, yfile *y, const char *key, const keydef *k, void *base,
                      yaml_node_t *v)
{
    char where[512];
    where_of(y, v, where, sizeof(where));
    if (k->type == K_LIST) {
        if (v->type == YAML_SCALAR_NODE && scalar(v)[0] == '\0')
            return set_list(e, where, key, k, base, NULL, 0);
        if (v->type != YAML_SEQUENCE_NODE)
            return fail(e, where, key, NULL, "want a list of strings");
        const char *items[256];
        size_t n = 0;
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            const char *s = scalar(yaml_document_get_node(&y->doc, *it));
            if (!s || n == 256)
                return fail(e, where, key, NULL, "want a list of at most 256 strings");
            items[n++] = s;
        }
        return set_list(e, where, key, k, base, items, n);
    }
    if (v->type != YAML_SCALAR_NODE)
        return fail(e, where, key, NULL, "want a single value, not a %s",
                    v->type == YAML_MAPPING_NODE ? "mapping" : "list");
    return set_value(e, where, key, k, base, scalar(v));
}

static int load_mapping(cerr *e, yfile *y, yaml_node_t *map, const char *prefix,
                        const keydef *table, size_t nt, void *base)
{
    char where[512], key[256];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(&y->doc, p->value);
        where_of(y, kn, where, sizeof(where));
        const char *ks = scalar(kn);
        if (!ks)
            return fail(e, where, prefix[0] ? prefix : "(top)", NULL, "a key must be a string");
        /* `prefix` is "pools[3]." for list items: the key as the user reads it */
        snprintf(key, sizeof(key), "%s%s", prefix, ks);
        const char *lookup = table == global_keys ? key : ks;
        const keydef *k = find_key(table, nt, lookup);
        /* a section ("kube:") holds keys "kube.x": recurse only into a name that starts a
         * key, so the depth is that of the key table, whatever the file's (fuzz_daemon_config:
         * 3,000 levels of an unknown key overflowed the stack) */
        if (!k && table == global_keys && vn->type == YAML_MAPPING_NODE &&
            starts_a_key(table, nt, key)) {
            char sub[260];
            snprintf(sub, sizeof(sub), "%s.", key);
            if (load_mapping(e, y, vn, sub, table, nt, base) != 0)
                return -1;
            continue;
        }
        if (!k)
            return fail(e, where, key, NULL, "unknown key (podclaimd --help lists them)");
        if (load_value(e, y, key, k, base, vn) != 0)
            return -1;
    }
    return 0;
}

static int load_list(cerr *e, yfile *y, pcd_config *c, yaml_node_t *seq, bool pools)
{
    char where[512], prefix[64];
    where_of(y, seq, where, sizeof(where));
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail(e, where, pools ? "pools" : "envs", NULL, "want a list of mappings");
    size_t i = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *m = yaml_document_get_node(&y->doc, *it);
        snprintf(prefix, sizeof(prefix), "%s[%zu]", pools ? "pools" : "envs",
                 pools ? c->n_pools : c->n_envs);
        if (m->type != YAML_MAPPING_NODE) {
            where_of(y, m, where, sizeof(where));
            return fail(e, where, prefix, NULL, "want a mapping (namespace:, name:, ...)");
        }
        strcat(prefix, ".");
        void *base = pools ? (void *)add_pool(e, c) : (void *)add_env(e, c);
        if (!base)
            return -1;
        if (load_mapping(e, y, m, prefix, pools ? pool_keys : env_keys,
                         pools ? NKEYS(pool_keys) : NKEYS(env_keys), base) != 0)
            return -1;
    }
    return 0;
}

/* libyaml's scanner costs O(depth) per token in flow collections (a 400 KB file of 100,000
 * nested "{a: " took 95 s to load; found by fuzz_daemon_config), so a first pass over the events
 * refuses a document nested deeper than CONFIG_MAX_DEPTH before the document is built. The
 * real keys nest 3 deep. Returns true (and the error) when too deep; a YAML error is left to
 * the load that follows, which names it. */
static bool too_deep(cerr *e, FILE *f, const char *path)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int depth = 0;
    bool deep = false, end = false;
    while (!deep && !end && yaml_parser_parse(&parser, &ev)) {
        if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
            deep = ++depth > CONFIG_MAX_DEPTH;
        else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        end = ev.type == YAML_STREAM_END_EVENT;
        if (deep) {
            char where[512];
            snprintf(where, sizeof(where), "%s:%zu", path, ev.start_mark.line + 1);
            fail(e, where, "config", NULL, "nested deeper than %d levels", CONFIG_MAX_DEPTH);
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return deep;
}

static int load_file(cerr *e, pcd_config *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(e, path, "config", NULL, "cannot open: %s", strerror(errno));
    /* libyaml holds the whole document in memory: bound it, as the kubeconfig loader does */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > CONFIG_MAX_BYTES) {
        fclose(f);
        return fail(e, path, "config", NULL, "file of %lld bytes is over the limit of 4 MiB",
                    (long long)st.st_size);
    }
    if (too_deep(e, f, path))
        return -1;
    rewind(f);
    yaml_parser_t parser;
    yfile y = {.path = path};
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    if (!yaml_parser_load(&parser, &y.doc)) {
        char where[512];
        snprintf(where, sizeof(where), "%s:%zu", path, parser.problem_mark.line + 1);
        rc = fail(e, where, "config", NULL, "not valid YAML: %s",
                  parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&y.doc);
    if (root && !(root->type == YAML_SCALAR_NODE && scalar(root)[0] == '\0')) {
        if (root->type != YAML_MAPPING_NODE) {
            rc = fail(e, path, "config", NULL, "want a mapping of keys at the top");
            goto out;
        }
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
             p < root->data.mapping.pairs.top && rc == 0; p++) {
            const char *ks = scalar(yaml_document_get_node(&y.doc, p->key));
            yaml_node_t *vn = yaml_document_get_node(&y.doc, p->value);
            if (ks && (strcmp(ks, "pools") == 0 || strcmp(ks, "envs") == 0)) {
                rc = load_list(e, &y, c, vn, ks[0] == 'p');
            } else {
                yaml_node_t sub = *root;
                sub.data.mapping.pairs.start = p;
                sub.data.mapping.pairs.top = p + 1;
                rc = load_mapping(e, &y, &sub, "", global_keys, NKEYS(global_keys), c);
            }
        }
    }
out:
    yaml_document_delete(&y.doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* ---- environment and flags ------------------------------------------------------------------ */

static const char *getenv_from(char **env, const char *name)
{
    size_t n = strlen(name);
    for (char **p = env; p && *p; p++)
        if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
            return *p + n + 1;
    return NULL;
}

static int load_env(cerr *e, pcd_config *c, char **env)
{
    char name[128], var[160];
    for (size_t i = 0; i < NKEYS(global_keys); i++) {
        key_to_name(global_keys[i].key, name, sizeof(name), true);
        snprintf(var, sizeof(var), "PODCLAIM_%s", name);
        const char *v = getenv_from(env, var);
        if (v && set_value(e, var, global_keys[i].key, &global_keys[i], c, v) != 0)
            return -1;
    }
    const char *pools = getenv_from(env, "PODCLAIM_POOLS");
    if (pools) {
        char *copy = strdup(pools);
        int rc = 0;
        for (char *save, *t = strtok_r(copy, ",", &save); t && rc == 0;
             t = strtok_r(NULL, ",", &save))
            rc = add_pool_spec(e, c, "PODCLAIM_POOLS", t);
        free(copy);
        if (rc)
            return -1;
    }
    return 0;
}

void pcd_config_usage(FILE *out)
{
    fputs("usage: podclaimd [--config FILE] [--check-config FILE] [--pool NS/NAME]... "
          "[--KEY VALUE]...\n"
          "Serves claims on pre-warmed Kubernetes pods over HTTP (docs/daemon.md).\n\n"
          "Each key is set, lowest precedence first, by its default, the YAML file (--config "
          "FILE or\nPODCLAIM_CONFIG), the environment variable PODCLAIM_<KEY> and the flag "
          "--<key>.\n"
          "  --config FILE         the YAML file\n"
          "  --check-config FILE   validate FILE (with the environment and flags) and exit: 0 "
          "ok, 2 bad\n"
          "  --pool NS/NAME        serve this pool with default knobs (repeatable; also "
          "PODCLAIM_POOLS=NS/NAME,...)\n"
          "  --port-file FILE      write the bound HTTP port to FILE once listening (tests, "
          "listen port 0)\n"
          "  --help                this text\n\n"
          "keys (file key, flag, environment variable, default):\n",
          out);
    char flag[128], env[128];
    for (size_t i = 0; i < NKEYS(global_keys); i++) {
        const keydef *k = &global_keys[i];
        key_to_name(k->key, flag, sizeof(flag), false);
        key_to_name(k->key, env, sizeof(env), true);
        fprintf(out, "  %-27s --%-27s PODCLAIM_%s\n      default: %s%s%s   %s%s%s\n", k->key, flag,
                env, k->def[0] ? "" : "\"", k->def, k->def[0] ? "" : "\"", k->help,
                k->choices ? "; one of " : "", k->choices ? k->choices : "");
    }
    fputs("\npools: a list in the file; each item (file key, default):\n", out);
    for (size_t i = 0; i < NKEYS(pool_keys); i++) {
        const keydef *k = &pool_keys[i];
        fprintf(out, "  pools[].%-19s default: %-10s %s\n", k->key,
                k->def[0] ? k->def : (k->type == K_LIST ? "[]" : "\"\""), k->help);
    }
    fputs("\nenvs: a list in the file (an env named by a pool and not listed gets the "
          "defaults):\n",
          out);
    for (size_t i = 0; i < NKEYS(env_keys); i++) {
        const keydef *k = &env_keys[i];
        fprintf(out, "  envs[].%-20s default: %-10s %s%s%s\n", k->key, k->def[0] ? k->def : "\"\"",
                k->help, k->choices ? "; one of " : "", k->choices ? k->choices : "");
    }
    fputs("\nExit status: 0 after SIGTERM/SIGINT drained cleanly, 1 on a start-up failure or a\n"
          "forced stop, 2 on a bad configuration (one line names the key, the value and what is\n"
          "allowed).\n",
          out);
}

int pcd_config_load(int argc, char **argv, char **env, pcd_config *c, FILE *err_out)
{
    cerr e = {.out = err_out};
    memset(c, 0, sizeof(*c));
    const char *file = getenv_from(env, "PODCLAIM_CONFIG");
    bool check = false;
    /* first pass: --help, the file (it sits below the environment and flags) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            pcd_config_usage(stdout);
            return PCD_EXIT_OK;
        }
        bool cfg = strcmp(argv[i], "--config") == 0, chk = strcmp(argv[i], "--check-config") == 0;
        if (cfg || chk) {
            if (i + 1 >= argc) {
                fail(&e, "flags", argv[i], NULL, "want a FILE after it");
                return PCD_EXIT_BAD;
            }
            file = argv[++i];
            check |= chk;
        }
    }
    if (apply_defaults(&e, global_keys, NKEYS(global_keys), c) != 0)
        return PCD_EXIT_BAD;
    if (file && load_file(&e, c, file) != 0)
        return PCD_EXIT_BAD;
    if (load_env(&e, c, env) != 0)
        return PCD_EXIT_BAD;
    char flag[128];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 || strcmp(a, "--check-config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fail(&e, "flags", a, NULL, "unexpected argument (podclaimd --help)");
            return PCD_EXIT_BAD;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const char *val = eq ? eq + 1 : NULL;
        if (strncmp(a + 2, "pool", nl) == 0 && nl == 4) {
            if (!val && i + 1 < argc)
                val = argv[++i];
            if (!val || add_pool_spec(&e, c, "--pool", val) != 0) {
                if (!val)
                    fail(&e, "flags", "--pool", NULL, "want NAMESPACE/NAME after it");
                return PCD_EXIT_BAD;
            }
            continue;
        }
        const keydef *k = NULL;
        for (size_t n = 0; n < NKEYS(global_keys) && !k; n++) {
            key_to_name(global_keys[n].key, flag, sizeof(flag), false);
            if (strlen(flag) == nl && strncmp(flag, a + 2, nl) == 0)
                k = &global_keys[n];
        }
        if (!k) {
            fail(&e, "flags", a, NULL, "unknown flag (podclaimd --help lists them)");
            return PCD_EXIT_BAD;
        }
        if (!val && k->type == K_BOOL)
            val = "true";
        else if (!val && i + 1 < argc)
            val = argv[++i];
        if (!val) {
            fail(&e, "flags", a, NULL, "want a value after it");
            return PCD_EXIT_BAD;
        }
        char where[160];
        snprintf(where, sizeof(where), "--%.*s", (int)nl, a + 2);
        if (set_value(&e, where, k->key, k, c, val) != 0)
            return PCD_EXIT_BAD;
    }
    if (finish(&e, c) != 0)
        return PCD_EXIT_BAD;
    if (check) {
        printf("podclaimd: %s: ok (%zu pools, %zu envs)\n", file, c->n_pools, c->n_envs);
        return PCD_EXIT_OK;
    }
    return PCD_RUN;
}

void pcd_config_fini(pcd_config *c)
{
    for (size_t i = 0; i < NKEYS(global_keys); i++) {
        const keydef *k = &global_keys[i];
        if (k->type == K_STR || k->type == K_ENUM || k->type == K_ADDR)
            free(*(char **)((char *)c + k->off));
    }
    for (size_t p = 0; p < c->n_pools; p++)
        pcd_pool_cfg_fini(&c->pools[p]);
    for (size_t v = 0; v < c->n_envs; v++) {
        free(c->envs[v].name);
        free(c->envs[v].strategy_name);
    }
    free(c->pools);
    free(c->envs);
    memset(c, 0, sizeof(*c));
}
