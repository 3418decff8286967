/* kapi-sim: a Kubernetes API server stand-in for loopback (DESIGN.md §5).
 *
 * main wires the pieces: store (objects, revisions, history) <- http (MHD) <- clients, the
 * kubelet reacting to store writes (controller.c; no pool controller: podclaimd is that), fault
 * injection; then waits for SIGTERM/SIGINT with the
 * signals blocked in every thread (sigwait), and tears down in reverse order.
 */
#include "sim.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ThreadSanitizer: jansson's inline json_incref/json_decref read the refcount with a plain load
 * (to skip its static values) before the atomic update. kapi-sim shares immutable objects
 * between connection threads and changes their refcounts concurrently, always atomically; that
 * one plain read is the only race TSan sees here, and it is benign (an aligned word that is
 * never the static marker for our objects). Suppress exactly those two functions. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:json_decref\nrace:json_incref\n";
}

static void usage(FILE *out)
{
    fputs("usage: kapi-sim [options]\n"
          "A Kubernetes API server stand-in for loopback tests and benchmarks.\n"
          "\n"
          "  --listen HOST:PORT     address to serve (default 127.0.0.1:0 = ephemeral port)\n"
          "  --port-file FILE       write the bound port (decimal + newline) to FILE, atomically\n"
          "  --token TOKEN          require 'Authorization: Bearer TOKEN' (401 Status otherwise)\n"
          "  --tls-cert FILE        serve HTTPS with this PEM certificate (needs --tls-key)\n"
          "  --tls-key FILE         PEM private key for --tls-cert\n"
          "  --pool NS/NAME=N       create SandboxPool NAME in namespace NS with N replicas and a\n"
          "                         one-container template (repeatable; the namespace is created\n"
          "                         when missing). kapi-sim makes no pods for it: podclaimd's\n"
          "                         pool controller does, as in a real cluster\n"
          "  --objects FILE         initial objects, YAML (multi-document) or JSON, Lists "
          "flattened\n"
          "the kubelet (every pod; kapi-sim has no pool controller):\n"
          "  --warmup-ms MS         a new pod is Running and Ready after MS (default 100)\n"
          "  --restart-ms MS        a container whose image changed is Ready again after MS\n"
          "                         (default 50)\n"
          "  --stop-ms MS           a pod with a deletionTimestamp is deleted after MS, unless\n"
          "                         it has finalizers (graceful deletion; default 20)\n"
          "  --kubelet-never-ready  pods run but never become Ready\n"
          "  --no-kubelet           no pod is ever started or restarted (a cluster without\n"
          "                         nodes); graceful deletions are still finished\n"
          "  --no-pool-controller   the same as --no-kubelet (its old name: the differential\n"
          "                         suite's real cluster has neither)\n"
          "  --kubelet-only         accepted for older command lines: kapi-sim has had no pool\n"
          "                         controller since issue 13 (no effect)\n"
          "  --hold-ms MS           no effect (nothing recycles claimed pods but podclaimd)\n"
          "  --history N            watch event history length (default 20000)\n"
          "  --bookmark-ms MS       watch bookmark interval when allowWatchBookmarks (default "
          "1000)\n"
          "  --claims-max N         claim log bound (default 1000000; more are counted as "
          "dropped)\n"
          "  --watch-batch-us US    a busy watch gathers events this long between sends\n"
          "                         (default 500; 0 = send every event at once)\n"
          "  --conn-timeout-s S     close a connection that sends nothing for S seconds\n"
          "                         (default 90; an open watch is not affected)\n"

          "fault injection (also at runtime: PUT /sim/faults):\n"
          "  --latency VERB=MS[+JITTER]  delay VERB (get list watch create update patch delete\n"
          "                         other, or all) by MS plus uniform [0,JITTER) ms; repeatable\n"
          "  --conflict-rate R      answer this share of PATCH/PUT with 409 Conflict\n"
          "  --throttle-rate R      answer this share of API requests with 429 + Retry-After\n"
          "  --retry-after S        Retry-After seconds for 429 (default 1)\n"
          "  --error-rate R         answer this share of API requests with --error-code\n"
          "  --error-code C         500..599 (default 500)\n"
          "  --watch-drop-events N  cut each watch connection after N events\n"
          "  --watch-drop-ms MS     cut each watch connection after MS\n"
          "  --watch-delay-ms MS    deliver watch events MS after commit (informer lag)\n"
          "  --compact-every-ms MS  forget the whole watch history this often (resumes from\n"
          "                         older versions get 410 Expired; also POST /sim/compact)\n"
          "  --help                 this text\n"
          "See docs/kapi-sim.md for the HTTP surface (/sim/claims, /sim/stats, /sim/faults).\n",
          out);
}

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) {
        fprintf(stderr, "kapi-sim: %s %s: want a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = cap < (64u << 20) ? realloc(b, cap * 2) : NULL;
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(fp);
    *len = n;
    return b;
}

static int add_pool(ks_store *s, const char *spec)
{
    const char *slash = strchr(spec, '/'), *eq = strrchr(spec, '=');
    if (!slash || !eq || eq < slash || slash == spec || eq == slash + 1) {
        fprintf(stderr, "kapi-sim: --pool %s: want NAMESPACE/NAME=REPLICAS\n", spec);
        return -1;
    }
    char *end;
    long n = strtol(eq + 1, &end, 10);
    if (*end || n < 0 || n > KS_POOL_MAX_REPLICAS) {
        fprintf(stderr, "kapi-sim: --pool %s: replicas must be 0..%d\n", spec,
                KS_POOL_MAX_REPLICAS);
        return -1;
    }
    char ns[256], name[256];
    snprintf(ns, sizeof ns, "%.*s", (int)(slash - spec), spec);
    snprintf(name, sizeof name, "%.*s", (int)(eq - slash - 1), slash + 1);
    ks_ensure_namespace(s, ns);
    /* a template of one container, so podclaimd's pool controller can make the pods */
    json_t *pool =
            json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:I,s:{s:{s:[{s:s,s:s}],s:s}}}}", "apiVersion",
                      "podclaim.io/v1alpha1", "kind", "SandboxPool", "metadata", "name", name,
                      "namespace", ns, "spec", "replicas", (json_int_t)n, "template", "spec",
                      "containers", "name", "sandbox", "image",
                      "registry.local/podclaim/sandbox:latest", "restartPolicy", "Always");
    ks_err err = {0};
    json_t *r = ks_api_create(s, &ks_resources[KS_RES_SANDBOXPOOL], ns, pool, &err, NULL, false);
    json_decref(pool);
    if (!r) {
        fprintf(stderr, "kapi-sim: --pool %s: %s\n", spec, err.message);
        return -1;
    }
    json_decref(r);
    return 0;
}

enum {
    O_LISTEN = 256,
    O_PORT_FILE,
    O_TOKEN,
    O_TLS_CERT,
    O_TLS_KEY,
    O_POOL,
    O_OBJECTS,
    O_WARMUP,
    O_HOLD,
    O_STOP,
    O_HISTORY,
    O_BOOKMARK,
    O_CLAIMS_MAX,
    O_LATENCY,
    O_CONFLICT,
    O_THROTTLE,
    O_RETRY_AFTER,
    O_ERROR_RATE,
    O_ERROR_CODE,
    O_DROP_EVENTS,
    O_DROP_MS,
    O_DELAY_MS,
    O_HELP,
    O_WATCH_BATCH,
    O_COMPACT_EVERY,
    O_CONN_TIMEOUT,
    O_NO_POOLS,
    O_KUBELET_ONLY,
    O_RESTART,
    O_NEVER_READY,
    O_NO_KUBELET
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", 1, 0, O_LISTEN},
                                             {"port-file", 1, 0, O_PORT_FILE},
                                             {"token", 1, 0, O_TOKEN},
                                             {"tls-cert", 1, 0, O_TLS_CERT},
                                             {"tls-key", 1, 0, O_TLS_KEY},
                                             {"pool", 1, 0, O_POOL},
                                             {"objects", 1, 0, O_OBJECTS},
                                             {"warmup-ms", 1, 0, O_WARMUP},
                                             {"hold-ms", 1, 0, O_HOLD},
                                             {"stop-ms", 1, 0, O_STOP},
                                             {"history", 1, 0, O_HISTORY},
                                             {"bookmark-ms", 1, 0, O_BOOKMARK},
                                             {"claims-max", 1, 0, O_CLAIMS_MAX},
                                             {"latency", 1, 0, O_LATENCY},
                                             {"conflict-rate", 1, 0, O_CONFLICT},
                                             {"throttle-rate", 1, 0, O_THROTTLE},
                                             {"retry-after", 1, 0, O_RETRY_AFTER},
                                             {"error-rate", 1, 0, O_ERROR_RATE},
                                             {"error-code", 1, 0, O_ERROR_CODE},
                                             {"watch-drop-events", 1, 0, O_DROP_EVENTS},
                                             {"watch-drop-ms", 1, 0, O_DROP_MS},
                                             {"watch-delay-ms", 1, 0, O_DELAY_MS},
                                             {"help", 0, 0, O_HELP},
                                             {"watch-batch-us", 1, 0, O_WATCH_BATCH},
                                             {"compact-every-ms", 1, 0, O_COMPACT_EVERY},
                                             {"conn-timeout-s", 1, 0, O_CONN_TIMEOUT},
                                             {"no-pool-controller", 0, 0, O_NO_POOLS},
                                             {"kubelet-only", 0, 0, O_KUBELET_ONLY},
                                             {"restart-ms", 1, 0, O_RESTART},
                                             {"kubelet-never-ready", 0, 0, O_NEVER_READY},
                                             {"no-kubelet", 0, 0, O_NO_KUBELET},
                                             {0, 0, 0, 0}};
    ks_server_opts so = {.listen = "127.0.0.1:0", .bookmark_ms = 1000, .watch_batch_us = 500};
    ks_controller_opts co = {.warmup_ms = 100, .stop_ms = 20, .restart_ms = 50};
    double ignored;
    ks_fault_cfg fc = {.retry_after_s = 1, .error_code = 500};
    const char *port_file = NULL, *objects = NULL;
    const char *pools[64];
    int npools = 0;
    double history = 20000, d;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_LISTEN:
            so.listen = optarg;
            break;
        case O_PORT_FILE:
            port_file = optarg;
            break;
        case O_TOKEN:
            so.token = optarg;
            break;
        case O_TLS_CERT:
            so.tls_cert = optarg;
            break;
        case O_TLS_KEY:
            so.tls_key = optarg;
            break;
        case O_POOL:
            if (npools == 64) {
                fprintf(stderr, "kapi-sim: at most 64 --pool options\n");
                return 2;
            }
            pools[npools++] = optarg;
            break;
        case O_OBJECTS:
            objects = optarg;
            break;
        case O_NO_POOLS: /* its old meaning (a cluster without podclaimd) left pods unstarted */
        case O_NO_KUBELET:
            co.no_kubelet = true;
            break;
        case O_KUBELET_ONLY:
            break; /* the only mode there is */
#define NUM(o, lo, hi, dst)                                                                        \
    case o:                                                                                        \
        if (parse_num(argv[optind - 1], optarg, lo, hi, &d))                                       \
            return 2;                                                                              \
        dst = d;                                                                                   \
        break;
            NUM(O_WARMUP, 0, 3.6e6, co.warmup_ms)
        case O_HOLD:
            if (parse_num(argv[optind - 1], optarg, 0, 3.6e6, &ignored))
                return 2;
            fprintf(stderr, "kapi-sim: --hold-ms has no effect: kapi-sim recycles no claimed "
                            "pod (podclaimd's pool controller does)\n");
            break;
            NUM(O_STOP, 0, 3.6e6, co.stop_ms)
            NUM(O_RESTART, 0, 3.6e6, co.restart_ms)
            NUM(O_HISTORY, 16, 1e7, history)
            NUM(O_BOOKMARK, 1, 3.6e6, so.bookmark_ms)
            NUM(O_CLAIMS_MAX, 1, 1e9, co.claims_max)
            NUM(O_WATCH_BATCH, 0, 1e6, so.watch_batch_us)
            NUM(O_COMPACT_EVERY, 0, 8.64e7, co.compact_every_ms)
            NUM(O_CONN_TIMEOUT, 1, 86400, so.conn_timeout_s)
            NUM(O_CONFLICT, 0, 1, fc.conflict_rate)
            NUM(O_THROTTLE, 0, 1, fc.throttle_rate)
            NUM(O_RETRY_AFTER, 0, 3600, fc.retry_after_s)
            NUM(O_ERROR_RATE, 0, 1, fc.error_rate)
            NUM(O_ERROR_CODE, 500, 599, fc.error_code)
            NUM(O_DROP_EVENTS, 0, 1e15, fc.watch_drop_events)
            NUM(O_DROP_MS, 0, 8.64e7, fc.watch_drop_ms)
            NUM(O_DELAY_MS, 0, 3.6e6, fc.watch_delay_ms)
#undef NUM
        case O_NEVER_READY:
            co.never_ready = true;
            break;
        case O_LATENCY:
            if (ks_faults_parse_latency(&fc, optarg)) {
                fprintf(stderr, "kapi-sim: --latency %s: want VERB=MS[+JITTER_MS]\n", optarg);
                return 2;
            }
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kapi-sim: unexpected argument %s\n", argv[optind]);
        return 2;
    }

    /* Signals are taken by sigwait in this thread only; block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    ks_tune_malloc();
    int rc = 1;
    ks_store store;
    ks_faults faults;
    ks_controller *ctl = NULL;
    ks_server *srv = NULL;
    if (ks_store_init(&store, (size_t)history)) {
        fprintf(stderr, "kapi-sim: out of memory for a history of %.0f events\n", history);
        return 1;
    }
    ks_faults_init(&faults);
    ks_faults_set(&faults, &fc);
    ctl = ks_controller_new(&store, &co);
    if (!ctl)
        goto out;
    const char *defaults[] = {"default", "kube-system", "kube-public"};
    for (int i = 0; i < 3; i++)
        ks_ensure_namespace(&store, defaults[i]);
    if (objects) {
        size_t len = 0;
        char *text = slurp(objects, &len);
        if (!text) {
            fprintf(stderr, "kapi-sim: --objects %s: %s\n", objects, strerror(errno));
            goto out;
        }
        ks_err err = {0};
        json_t *arr = ks_objects_parse(text, len, &err);
        free(text);
        if (!arr || ks_objects_load(&store, arr, &err)) {
            fprintf(stderr, "kapi-sim: --objects %s: %s\n", objects, err.message);
            json_decref(arr);
            goto out;
        }
        json_decref(arr);
    }
    for (int i = 0; i < npools; i++)
        if (add_pool(&store, pools[i]))
            goto out;
    if (ks_controller_start(ctl)) {
        fprintf(stderr, "kapi-sim: cannot start the kubelet thread\n");
        goto out;
    }
    char err[256];
    srv = ks_server_start(&so, &store, &faults, ctl, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "kapi-sim: %s\n", err);
        goto out;
    }
    int port = ks_server_port(srv);
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", port_file, (int)getpid());
        FILE *fp = fopen(tmp, "w");
        if (!fp || fprintf(fp, "%d\n", port) < 0 || fclose(fp) != 0 || rename(tmp, port_file)) {
            fprintf(stderr, "kapi-sim: --port-file %s: %s\n", port_file, strerror(errno));
            goto out;
        }
    }
    printf("kapi-sim listening on %s://%s\n", so.tls_cert ? "https" : "http", ks_server_addr(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "level=info msg=\"kapi-sim stopping\" signal=%d\n", sig);
    rc = 0;
out:
    ks_server_stop(srv);
    ks_controller_free(ctl);
    ks_store_fini(&store);
    ks_faults_fini(&faults);
    return rc;
}
