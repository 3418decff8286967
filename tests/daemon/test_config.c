/* podclaimd configuration: --help, --check-config, and one clear line + exit 2 for a bad value
 * from the file, the environment or a flag. Runs the built binary; no server needed. */
#include "pcd_fixture.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static char out[65536];

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/pc-cfg-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static int check(const char *yaml, const char *const *env)
{
    const char *path = write_file("c.yaml", yaml);
    const char *args[] = {"--check-config", path, NULL};
    return pcd_run(args, env, out, sizeof(out));
}

Test(config, help_lists_every_key_with_its_default, .fini = cleanup)
{
    const char *args[] = {"--help", NULL};
    cr_assert_eq(pcd_run(args, NULL, out, sizeof(out)), 0);
    const char *keys[] = {"listen",
                          "127.0.0.1:8080",
                          "token",
                          "log.level",
                          "log.format",
                          "kube.kubeconfig",
                          "kube.context",
                          "kube.inCluster",
                          "kube.server",
                          "kube.caFile",
                          "PODCLAIM_KUBE_IN_CLUSTER",
                          "--kube-in-cluster",
                          "pools[].inboxCapacity",
                          "pools[].maxInflight",
                          "pools[].casWorkers",
                          "pools[].promoteAfter",
                          "pools[].retryLimit",
                          "pools[].retryBackoff",
                          "pools[].reservationTtl",
                          "pools[].conflictHold",
                          "pools[].resyncPeriod",
                          "pools[].tags",
                          "envs[].strategy",
                          "most-idle",
                          "leaderElection.enabled",
                          "leaderElection.leaseName",
                          "leaderElection.leaseNamespace",
                          "leaderElection.identity",
                          "leaderElection.leaseDuration",
                          "leaderElection.renewDeadline",
                          "leaderElection.retryPeriod",
                          "leaderElection.perPool",
                          "PODCLAIM_LEADER_ELECTION_LEASE_DURATION",
                          "--leader-election-renew-deadline",
                          "controllers.pools",
                          "controllers.claims",
                          "controllers.namespace",
                          "controllers.statusInterval",
                          "controllers.readyTimeout",
                          "controllers.emptyGrace",
                          "webhook.queueCapacity",
                          "pools[].webhookUrl"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert(strstr(out, keys[i]), "--help does not mention %s", keys[i]);
}

Test(config, a_good_file_checks_ok, .fini = cleanup)
{
    int rc = check("listen: 127.0.0.1:9000\nlog:\n  level: debug\n"
                   "kube:\n  server: http://127.0.0.1:1\n"
                   "pools:\n  - namespace: default\n    name: web\n    maxInflight: 64\n"
                   "    promoteAfter: 5s\n    tags: [gpu]\n    env: prod\n",
                   NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ok (1 pools, 1 envs)"), "%s", out);
}

/* Each bad value: exit 2, one line naming the key and the value. */
static void bad(const char *yaml, const char *const *env, const char *key, const char *value)
{
    int rc = check(yaml, env);
    cr_assert_eq(rc, 2, "exit %d for %s: %s", rc, key, out);
    cr_assert(strstr(out, key), "message does not name %s: %s", key, out);
    if (value)
        cr_assert(strstr(out, value), "message does not show %s: %s", value, out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "not one line: %s", out);
}

static const char *pool = "pools:\n  - {namespace: default, name: web}\n";

Test(config, bad_values_exit_2_naming_key_and_value, .fini = cleanup)
{
    char y[512];
    snprintf(y, sizeof(y), "listen: nowhere\n%s", pool);
    bad(y, NULL, "listen", "nowhere");
    snprintf(y, sizeof(y), "log:\n  level: loud\n%s", pool);
    bad(y, NULL, "log.level", "loud");
    bad("pools:\n  - {namespace: default, name: web, maxInflight: lots}\n", NULL,
        "pools[0].maxInflight", "lots");
    bad("pools:\n  - {namespace: default, name: web, promoteAfter: soon}\n", NULL,
        "pools[0].promoteAfter", "soon");
    bad("pools:\n  - {namespace: Default_NS, name: web}\n", NULL, "pools[0].namespace",
        "Default_NS");
    bad("pools:\n  - {namespace: default}\n", NULL, "pools[0].name", NULL);
    bad("envs:\n  - {name: prod, strategy: fastest}\npools:\n  - {namespace: a, name: b}\n", NULL,
        "envs[0].strategy", "fastest");
    snprintf(y, sizeof(y), "colour: blue\n%s", pool);
    bad(y, NULL, "colour", NULL);
    /* no pool is fine when SandboxPools define them (controllers.pools, the default) */
    bad("listen: 127.0.0.1:1\ncontrollers:\n  pools: false\n", NULL, "pools", NULL);
    bad("leaderElection:\n  renewDeadline: 20s\n", NULL, "leaderElection.renewDeadline", "20000ms");
    bad("leaderElection:\n  retryPeriod: 9s\n", NULL, "leaderElection.retryPeriod", "9000ms");
    bad("pools:\n  - {namespace: a, name: b, webhookUrl: ftp://x}\n", NULL, "pools[0].webhookUrl",
        "ftp://x");
    bad("pools: [\n", NULL, "c.yaml", NULL);
}

Test(config, environment_and_flags_override_the_file, .fini = cleanup)
{
    const char *env[] = {"PODCLAIM_HTTP_MAX_BODY=12", NULL};
    bad(pool, env, "http.maxBody", "12");
    const char *path = write_file("d.yaml", pool);
    const char *args[] = {"--check-config", path, "--kube-max-connections", "0", NULL};
    cr_assert_eq(pcd_run(args, NULL, out, sizeof(out)), 2, "%s", out);
    cr_assert(strstr(out, "kube.maxConnections") && strstr(out, "\"0\""), "%s", out);
    const char *env2[] = {"PODCLAIM_POOLS=ns1/a,ns2/b", NULL};
    const char *args2[] = {"--check-config", path, "--pool", "ns3/c", NULL};
    cr_assert_eq(pcd_run(args2, env2, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "4 pools"), "%s", out);
}

/* Found by fuzz_daemon_config: an unknown key nested deeper and deeper recursed once per level
 * (a 12 KB file of 3,000 levels overflowed the stack), and libyaml's scanner is quadratic in
 * flow nesting (this file took 95 s). Both are now refused: a document deeper than 32 levels
 * before it is built, a mapping under a name that starts no key at that name. */
Test(config, a_file_nested_100000_levels_deep_is_one_error_line, .fini = cleanup)
{
    size_t n = 100000;
    char *y = malloc(n * 5 + 16), *p = y;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "{a: ");
    *p++ = '1';
    memset(p, '}', n);
    strcpy(p + n, "\n");
    bad(y, NULL, "nested deeper than 32 levels", NULL);
    free(y);
    bad("a: {a: {a: {a: 1}}}\n", NULL, "a: unknown key", NULL);
    /* a real section still nests: kube.server under kube */
    bad("kube: {server: {x: 1}}\n", NULL, "kube.server", NULL);
}

/* Found by fuzz_daemon_config: a value with a newline made two lines (a forged log line on
 * stderr); control characters are now escaped, and a server URL's credentials hidden. */
Test(config, a_value_with_control_characters_stays_on_one_line, .fini = cleanup)
{
    bad("listen: \"1.2.3.4\\npodclaimd: forged\"\n", NULL, "listen", "\\n");
    const char *env[] = {"PODCLAIM_KUBE_SERVER=http://user:secret@x", NULL};
    bad("kube: {inCluster: true}\n", env, "kube.server", "***@x");
    cr_assert_null(strstr(out, "secret"), "%s", out);
}

/* A config file is read whole by libyaml: like a kubeconfig, over 4 MiB it is refused unread. */
Test(config, a_file_over_4_mib_is_refused, .fini = cleanup)
{
    size_t n = 5u << 20;
    char *y = malloc(n + 1);
    memset(y, '#', n);
    y[n] = '\0';
    y[0] = '\n'; /* a comment line after an empty one: valid YAML, no keys */
    bad(y, NULL, "MiB", NULL);
    free(y);
}
