/* Fuzz target: podclaimd's configuration loader (pcd_config_load in daemon/config.c: the YAML
 * file through libyaml's document API, PODCLAIM_* variables, flags, the checks of finish()).
 *
 * Input: the YAML file, then optionally a NUL byte and NUL-separated words: a word starting
 * with PODCLAIM_ goes into the environment, any other into argv. Words naming another file
 * (--config, --check-config, PODCLAIM_CONFIG), --help (stdout) and inputs naming /dev, /proc or /sys are
 * skipped. The environment always holds two canary tokens (PODCLAIM_TOKEN and
 * PODCLAIM_KUBE_TOKEN) unless the input sets them. Oracle, beyond no crash and no leak:
 *   - PCD_RUN: every pool has a DNS-label namespace and a name, no pool twice, every env a
 *     name, the leader-election durations in client-go's order;
 *   - PCD_EXIT_BAD: exactly one line on err_out, starting "podclaimd: ";
 *   - a canary token never appears in what the loader writes.
 */
#include "config.h"
#include "fuzz.h"

#include <string.h>
#include <unistd.h>

static char dir[64], path[128];

#define CANARY_API "canary-api-token-9f8e7d"
#define CANARY_KUBE "canary-kube-token-1a2b3c"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/pc-fuzz-daemon-config-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/podclaimd.yaml", dir);
    return 0;
}

__attribute__((destructor)) static void cleanup(void)
{
    if (path[0])
        unlink(path);
    if (dir[0])
        rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memmem(data, size, "/dev", 4) || memmem(data, size, "/proc", 5) ||
        memmem(data, size, "/sys", 4) || memmem(data, size, "canary-", 7))
        return 0;
    const char *in = (const char *)data, *end = in + size;
    const char *nul = memchr(in, '\0', size);
    size_t file_len = nul ? (size_t)(nul - in) : size;
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(in, 1, file_len, f);
    fclose(f);

    char *argv[40] = {"podclaimd", "--config", path};
    int argc = 3;
    char *env[40];
    int envc = 0;
    bool api_set = false, kube_set = false;
    /* words: copies, so each is NUL-terminated within its own allocation (ASan sees overruns) */
    char *words[64];
    int nw = 0;
    for (const char *p = nul ? nul + 1 : end; p < end && nw < 64;) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        size_t n = z ? (size_t)(z - p) : (size_t)(end - p);
        char *w = strndup(p, n);
        words[nw++] = w;
        p += n + 1;
        if (!strncmp(w, "--config", 8) || !strncmp(w, "--check-config", 14) ||
            !strncmp(w, "PODCLAIM_CONFIG=", 16) || !strcmp(w, "--help") || !strcmp(w, "-h"))
            continue;
        if (!strncmp(w, "PODCLAIM_", 9)) {
            if (envc < 36)
                env[envc++] = w;
            api_set |= !strncmp(w, "PODCLAIM_TOKEN=", 15);
            kube_set |= !strncmp(w, "PODCLAIM_KUBE_TOKEN=", 20);
        } else if (argc < 38) {
            argv[argc++] = w;
        }
    }
    if (!api_set)
        env[envc++] = "PODCLAIM_TOKEN=" CANARY_API;
    if (!kube_set)
        env[envc++] = "PODCLAIM_KUBE_TOKEN=" CANARY_KUBE;
    env[envc] = NULL;
    argv[argc] = NULL;

    char *out = NULL;
    size_t out_len = 0;
    FILE *err = open_memstream(&out, &out_len);
    pcd_config c;
    int rc = pcd_config_load(argc, argv, env, &c, err);
    fclose(err);
    FUZZ_CHECK(!strstr(out, CANARY_API) && !strstr(out, CANARY_KUBE), "a token printed: %s", out);
    if (rc == PCD_RUN) {
        FUZZ_CHECK(out_len == 0, "PCD_RUN with a message: %s", out);
        FUZZ_CHECK(c.n_pools > 0 || c.ctl_pools);
        for (size_t i = 0; i < c.n_pools; i++) {
            const pcd_pool_cfg *p = &c.pools[i];
            FUZZ_CHECK(pcd_dns_label(p->namespace_) && pcd_label_value(p->name), "pool %zu", i);
            for (size_t k = 0; k < i; k++)
                FUZZ_CHECK(strcmp(p->namespace_, c.pools[k].namespace_) ||
                                   strcmp(p->name, c.pools[k].name),
                           "pool %s/%s twice", p->namespace_, p->name);
        }
        for (size_t i = 0; i < c.n_envs; i++)
            FUZZ_CHECK(c.envs[i].name && pcd_label_value(c.envs[i].name), "env %zu", i);
        FUZZ_CHECK(c.le_renew_ns < c.le_lease_ns && c.le_retry_ns * 12 < c.le_renew_ns * 10);
        FUZZ_CHECK(c.listen && c.listen[0]);
    } else if (rc == PCD_EXIT_BAD) {
        FUZZ_CHECK(out_len > 11 && !strncmp(out, "podclaimd: ", 11), "message: \"%s\"", out);
        FUZZ_CHECK(out[out_len - 1] == '\n' && memchr(out, '\n', out_len) == out + out_len - 1,
                   "not one line: \"%s\"", out);
    } else {
        FUZZ_CHECK(0, "rc %d", rc); /* PCD_EXIT_OK needs --help or --check-config */
    }
    pcd_config_fini(&c);
    free(out);
    for (int i = 0; i < nw; i++)
        free(words[i]);
    return 0;
}
