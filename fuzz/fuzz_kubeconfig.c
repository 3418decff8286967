/* Fuzz target: the kubeconfig loader (src/kube/kubeconfig.c: libyaml document, contexts,
 * clusters, users, base64 PEM data, relative paths) and client construction behind it.
 *
 * The input is written to a file in a private folder and loaded. Inputs naming /dev, /proc or
 * /sys are skipped: a tokenFile there may block (a terminal, /proc/kmsg) and teaches nothing.
 * Oracle: 0 and a client, or a negative errno and a message; never a crash or a leak.
 */
#include "fuzz.h"

#include <podclaim/kube.h>

#include <string.h>
#include <unistd.h>

static char dir[64], path[128];

static void quiet(void *arg, int level, const char *line)
{
    (void)arg, (void)level, (void)line;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/pc-fuzz-kubeconfig-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/config", dir);
    if (!freopen("/dev/null", "r", stdin))
        abort();
    /* the folder goes when the process does (each input rewrites the one file) */
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
        memmem(data, size, "/sys", 4))
        return 0;
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    pc_kube_options tuning = {.log = quiet};
    pc_kube_client *c = NULL;
    char err[256] = "";
    int rc = pc_kube_client_new_kubeconfig(path, NULL, &tuning, &c, err, sizeof(err));
    FUZZ_CHECK(strlen(err) < sizeof(err));
    if (rc == 0) {
        FUZZ_CHECK(c && pc_kube_client_server(c)[0]);
        pc_kube_client_free(c);
    } else {
        FUZZ_CHECK(rc < 0 && err[0], "rc %d without a message", rc);
    }
    return 0;
}
