/* pc_peer_claimer: podclaim in process (library + informer + kube CAS backend) as one claimer
 * of the peers benchmark (bench/peers, docs/peers.md), driven by the Go harness over
 * stdin/stdout with the line protocol of realk8s/peers/proto.go:
 *
 *   in:  C <id>                claim a pod, <id> written to podclaim.io/claim-id
 *   out: READY                 the informer synced and the pool holds --min-idle idle pods
 *        A <id>                pc_pool_enqueue accepted the claim
 *        R <id> ok <pod>       the claim's PATCH won the pod
 *        R <id> fail <why>     any other result
 *
 * Flow: API server -> informer -> pool -> kube CAS backend -> API server; stdin -> enqueue on
 * the main thread; the result line is written by the pool's callback (scheduler thread) with
 * one write(2) of less than PIPE_BUF bytes, which POSIX makes atomic on a pipe, so lines from
 * the two threads never interleave without a lock.
 *
 * The claim is the one every system of the benchmark makes: phase -> Running, label
 * owner=peers, the claim id annotation; no image change. Library defaults throughout, as a
 * user who reads the header would run it.
 *
 * usage: pc_peer_claimer --kubeconfig F --namespace NS --pool P [--min-idle N]
 */
#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct req {
    pc_claim claim; /* first: the callback gets &claim and frees the req */
    char id[PC_CLAIM_ID_MAX];
} req;

static const pc_kv claim_labels[] = {{"owner", "peers"}};

static void put(const char *line, size_t n)
{
    /* a short write on a pipe to a live reader does not happen below PIPE_BUF */
    if (write(STDOUT_FILENO, line, n) != (ssize_t)n)
        _exit(3); /* the driver went away */
}

static void on_result(pc_claim *c, const pc_claim_result *r, void *arg)
{
    (void)arg;
    req *q = (req *)c;
    char line[512];
    int n;
    if (r->status == PC_CLAIM_OK) {
        n = snprintf(line, sizeof(line), "R %s ok %s\n", q->id, r->pod_name);
    } else {
        char why[300];
        snprintf(why, sizeof(why), "%s:%s", pc_claim_status_name(r->status), r->error);
        for (char *s = why; *s; s++)
            if (*s == ' ' || *s == '\n')
                *s = '_';
        n = snprintf(line, sizeof(line), "R %s fail %s\n", q->id, why);
    }
    put(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    free(q);
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    const char *kubeconfig = NULL, *ns = NULL, *pool_name = NULL;
    unsigned long min_idle = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--kubeconfig"))
            kubeconfig = argv[i + 1];
        else if (!strcmp(argv[i], "--namespace"))
            ns = argv[i + 1];
        else if (!strcmp(argv[i], "--pool"))
            pool_name = argv[i + 1];
        else if (!strcmp(argv[i], "--min-idle"))
            min_idle = strtoul(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "pc_peer_claimer: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!ns || !pool_name) {
        fprintf(stderr, "usage: pc_peer_claimer --kubeconfig F --namespace NS --pool P "
                        "[--min-idle N]\n");
        return 2;
    }
    char err[512];
    pc_kube_client *client;
    if (pc_kube_client_new_kubeconfig(kubeconfig, NULL, NULL, &client, err, sizeof(err))) {
        fprintf(stderr, "pc_peer_claimer: %s\n", err);
        return 1;
    }
    pc_kube_backend *kb;
    if (pc_kube_backend_new(client, NULL, &kb, err, sizeof(err))) {
        fprintf(stderr, "pc_peer_claimer: %s\n", err);
        return 1;
    }
    pc_informer_config ic = {.client = client, .namespace_ = ns, .pool = pool_name};
    pc_informer *inf;
    pc_pool *pool;
    int rc = pc_informer_new(&ic, &inf);
    pc_pool_config pc = {.namespace_ = ns,
                         .name = pool_name,
                         .resync = pc_informer_resync_hook,
                         .resync_arg = inf};
    if (rc || (rc = pc_pool_new(&pc, pc_kube_backend_iface(kb), &pool))) {
        fprintf(stderr, "pc_peer_claimer: pool: %s\n", pc_strerror(rc));
        return 1;
    }
    pc_informer_set_pool(inf, pool);
    if ((rc = pc_pool_start(pool)) || (rc = pc_informer_start(inf))) {
        fprintf(stderr, "pc_peer_claimer: start: %s\n", pc_strerror(rc));
        return 1;
    }
    /* wait for the cache, bounded: the harness made the pool idle before starting us */
    for (int i = 0; i < 6000; i++) {
        if (pc_informer_has_synced(inf) && pc_pool_snapshot(pool).idle_ready >= min_idle)
            break;
        pause_ms(10);
    }
    if (!pc_informer_has_synced(inf)) {
        fprintf(stderr, "pc_peer_claimer: the informer did not sync in 60 s\n");
        return 1;
    }
    put("READY\n", 6);

    char line[256];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        size_t idlen = strlen(line + 2);
        if (strncmp(line, "C ", 2) != 0 || idlen == 0 || idlen >= PC_CLAIM_ID_MAX)
            continue;
        req *q = calloc(1, sizeof(*q));
        if (!q)
            return 1;
        memcpy(q->id, line + 2, idlen + 1);
        pc_claim_init(&q->claim, 0, on_result, NULL);
        q->claim.opts = (pc_claim_opts){.labels = claim_labels, .n_labels = 1};
        q->claim.id = q->id;
        q->claim.deadline_ns = pc_now_ns() + 120 * 1000000000LL;
        char ack[PC_CLAIM_ID_MAX + 4];
        int n = snprintf(ack, sizeof(ack), "A %s\n", q->id);
        /* the ack goes out before enqueue: after it, the callback may already have freed q */
        put(ack, (size_t)n);
        while ((rc = pc_pool_enqueue(pool, &q->claim)) == -EAGAIN)
            pause_ms(1); /* inbox full: backpressure, try again */
        if (rc) {
            char fail[PC_CLAIM_ID_MAX + 64];
            n = snprintf(fail, sizeof(fail), "R %s fail enqueue:%s\n", q->id, pc_strerror(rc));
            put(fail, (size_t)n);
            free(q);
        }
    }
    pc_informer_stop(inf);
    pc_pool_shutdown(pool);
    pc_kube_backend_free(kb);
    pc_pool_free(pool);
    pc_informer_free(inf);
    pc_kube_client_free(client);
    return 0;
}
