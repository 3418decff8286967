/* cluster-helper: a stand-in for podclaimd built from the phase-1 cluster modules, so the
 * tests can run two replicas as separate processes (kill -9 one, SIGTERM the other) before
 * the daemon integrates them. Test-only code.
 *
 *   cluster-helper --server URL --identity ID [--lease NS/NAME] [--lease-ms N] [--renew-ms N]
 *                  [--retry-ms N] [--no-release]
 *
 * Prints one line per event, stamped with CLOCK_MONOTONIC ms (the same clock in every
 * process): "ready", "start <ms>" / "stop <ms>" (leading), "leader <identity>", "exit".
 * SIGTERM/SIGINT: stops (releasing the lease unless --no-release) and exits 0.
 */
#include "elector.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const char *fmt, const char *s)
{
    printf(fmt, s, (long long)mono_ms());
    fflush(stdout);
}

static void on_start(void *arg)
{
    (void)arg;
    say("start%s %lld\n", "");
}

static void on_stop(void *arg)
{
    (void)arg;
    say("stop%s %lld\n", "");
}

static void on_new_leader(void *arg, const char *id)
{
    (void)arg;
    say("leader %s %lld\n", id[0] ? id : "-");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"server", 1, 0, 's'},     {"identity", 1, 0, 'i'},
                                       {"lease", 1, 0, 'l'},      {"lease-ms", 1, 0, 'D'},
                                       {"renew-ms", 1, 0, 'R'},   {"retry-ms", 1, 0, 'P'},
                                       {"no-release", 0, 0, 'n'}, {0, 0, 0, 0}};
    const char *server = NULL, *identity = NULL, *lease = NULL;
    long lease_ms = 0, renew_ms = 0, retry_ms = 0;
    bool release = true;
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 's':
            server = optarg;
            break;
        case 'i':
            identity = optarg;
            break;
        case 'l':
            lease = optarg;
            break;
        case 'D':
            lease_ms = atol(optarg);
            break;
        case 'R':
            renew_ms = atol(optarg);
            break;
        case 'P':
            retry_ms = atol(optarg);
            break;
        case 'n':
            release = false;
            break;
        default:
            return 2;
        }
    }
    if (!server || !identity) {
        fprintf(stderr, "cluster-helper: --server and --identity are required\n");
        return 2;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    pc_kube_options ko = {.server = server};
    pc_kube_client *kc;
    if (pc_kube_client_new(&ko, &kc, err, sizeof(err))) {
        fprintf(stderr, "cluster-helper: %s\n", err);
        return 1;
    }
    pc_elector *el = NULL;
    if (lease) {
        char ns[64], name[254];
        const char *slash = strchr(lease, '/');
        if (!slash) {
            fprintf(stderr, "cluster-helper: --lease NS/NAME\n");
            return 2;
        }
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - lease), lease);
        snprintf(name, sizeof(name), "%s", slash + 1);
        pc_elector_config ec = {.client = kc,
                                .namespace_ = ns,
                                .name = name,
                                .identity = identity,
                                .lease_duration_ns = lease_ms * 1000000,
                                .renew_deadline_ns = renew_ms * 1000000,
                                .retry_period_ns = retry_ms * 1000000,
                                .on_start = on_start,
                                .on_stop = on_stop,
                                .on_new_leader = on_new_leader};
        if (pc_elector_new(&ec, &el, err, sizeof(err)) || pc_elector_start(el)) {
            fprintf(stderr, "cluster-helper: %s\n", err);
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    if (el)
        pc_elector_stop(el, release);
    pc_elector_free(el);
    pc_kube_client_free(kc);
    printf("exit\n");
    fflush(stdout);
    return 0;
}
