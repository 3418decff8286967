/* kapi-sim test fixture (see ksim.h).
 *
 * PODCLAIM_KUBE_SERVER=real runs the same tests against the real kube-apiserver: the fixture
 * then starts `realk8s front` (REALK8S_BIN; KUBECONFIG names the cluster scripts/realk8s.sh
 * started) with the same arguments. The front takes kapi-sim's flags, forwards every API
 * request to the real server, injects the same faults, and serves /sim/claims from the real
 * server's watch of its own pod objects (docs/realk8s.md). */
#include "ksim.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool ksim_real(void)
{
    const char *v = getenv("PODCLAIM_KUBE_SERVER");
    return v && strcmp(v, "real") == 0 && getenv("REALK8S_BIN") && getenv("KUBECONFIG");
}

void ksim_mkdir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/pc-ksim-XXXXXX");
    if (!mkdtemp(dir))
        dir[0] = '\0';
}

/* ---- the pod-filler (see ksim.h) ----------------------------------------------------------
 *
 * One thread. Every 100 ms it counts each pool's pods (a LIST by label) and creates the missing
 * ones; every 5 ms it reads the claim log from where it left off and queues each claimed pod
 * of its pools for hold + stop ms later; a due pod still claimed goes back to Idle with one
 * PATCH guarded by its resourceVersion (a 409 or an injected error: tried again next round).
 * The periods are the filler's reaction time, a simulated controller's, not a test's
 * synchronisation: tests wait for what they need with a deadline. The initial pods come
 * through --objects (one file, loaded before kapi-sim listens), so 10,000 of them cost no
 * 10,000 requests. */

#define FILL_POOLS 8
#define FILL_IMAGE "registry.local/podclaim/sandbox:latest"

typedef struct fill_due {
    struct fill_due *next;
    char ns[64], pod[256];
    int64_t due_ms;
} fill_due;

struct ksim_filler {
    ksim *k;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; stop */
    bool stop;         /* guarded by mu */
    struct {
        char ns[64], name[64];
        int n;
        unsigned seq;
    } pools[FILL_POOLS];
    int npools;
    int64_t delay_ms; /* hold + stop; < 0 = never recycle */
    size_t since;     /* claim log entries seen */
    fill_due *head, *tail;
};

static bool fill_pod_json(FILE *f, const char *ns, const char *pool, unsigned seq)
{
    return fprintf(f,
                   "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s-f%u\","
                   "\"namespace\":\"%s\",\"labels\":{\"podclaim.io/pool\":\"%s\","
                   "\"podclaim.io/phase\":\"Idle\"}},\"spec\":{\"containers\":[{\"name\":"
                   "\"sandbox\",\"image\":\"" FILL_IMAGE "\"}],\"restartPolicy\":\"Always\"}}",
                   pool, seq, ns, pool) > 0;
}

static void fill_top_up(ksim_filler *f, pc_kube_conn *c, int i)
{
    char path[512];
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io%%2Fpool%%3D%s", f->pools[i].ns,
             f->pools[i].name);
    pc_kube_response r;
    if (pc_kube_conn_request(c, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200) {
        pc_kube_response_fini(&r);
        return; /* an injected fault: next round */
    }
    json_t *l = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
    pc_kube_response_fini(&r);
    int have = 0;
    size_t j;
    json_t *p;
    json_array_foreach(json_object_get(l, "items"), j, p)
    {
        if (!json_object_get(json_object_get(p, "metadata"), "deletionTimestamp"))
            have++;
    }
    json_decref(l);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", f->pools[i].ns);
    for (; have < f->pools[i].n; have++) {
        char *body = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&body, &len);
        fill_pod_json(m, f->pools[i].ns, f->pools[i].name, f->pools[i].seq++);
        fclose(m);
        pc_kube_conn_request(c, "POST", path, "application/json", body, len, &r);
        pc_kube_response_fini(&r);
        free(body);
    }
}

/* The claim log since the last look: queue each claimed pod of our pools. */
static void fill_read_claims(ksim_filler *f, pc_kube_conn *c)
{
    char path[64];
    snprintf(path, sizeof(path), "/sim/claims?since=%zu", f->since);
    pc_kube_response r;
    if (pc_kube_conn_request(c, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200) {
        pc_kube_response_fini(&r);
        return;
    }
    json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
    pc_kube_response_fini(&r);
    size_t i;
    json_t *e;
    int64_t due = now_ms() + f->delay_ms;
    json_array_foreach(json_object_get(j, "claims"), i, e)
    {
        f->since++;
        const char *ns = json_string_value(json_object_get(e, "namespace"));
        const char *pod = json_string_value(json_object_get(e, "pod"));
        bool ours = false;
        for (int k = 0; k < f->npools && ns && pod && !ours; k++)
            ours = strcmp(f->pools[k].ns, ns) == 0 &&
                   strncmp(pod, f->pools[k].name, strlen(f->pools[k].name)) == 0 &&
                   pod[strlen(f->pools[k].name)] == '-';
        fill_due *d = ours ? calloc(1, sizeof(*d)) : NULL;
        if (!d)
            continue;
        snprintf(d->ns, sizeof(d->ns), "%s", ns);
        snprintf(d->pod, sizeof(d->pod), "%s", pod);
        d->due_ms = due;
        if (f->tail)
            f->tail->next = d;
        else
            f->head = d;
        f->tail = d;
    }
    json_decref(j);
}

/* Running, Ready, and every container reported running its spec's image: a restart for an
 * image a claim set is over (turning the pod Idle before would offer an idle period that the
 * restart ends at once). */
static bool fill_settled(const json_t *p)
{
    const json_t *st = json_object_get(p, "status");
    const char *ph = json_string_value(json_object_get(st, "phase"));
    if (!ph || strcmp(ph, "Running") != 0)
        return false;
    size_t i, j;
    json_t *ct, *cs;
    json_array_foreach(json_object_get(json_object_get(p, "spec"), "containers"), i, ct)
    {
        bool ok = false;
        json_array_foreach(json_object_get(st, "containerStatuses"), j, cs)
        {
            if (json_equal(json_object_get(cs, "name"), json_object_get(ct, "name")))
                ok = json_is_true(json_object_get(cs, "ready")) &&
                     json_equal(json_object_get(cs, "image"), json_object_get(ct, "image"));
        }
        if (!ok)
            return false;
    }
    return true;
}

/* Back to Idle if still claimed, once settled (the claim's images stay: resetting them would
 * restart the container once more). Returns false to try again later. */
static bool fill_recycle(pc_kube_conn *c, const fill_due *d)
{
    char path[512], body[768];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", d->ns, d->pod);
    pc_kube_response r;
    if (pc_kube_conn_request(c, "GET", path, NULL, NULL, 0, &r) != 0) {
        pc_kube_response_fini(&r);
        return false;
    }
    if (r.status == 404) {
        pc_kube_response_fini(&r);
        return true;
    }
    json_t *p = r.status == 200 ? json_loadb(r.body ? r.body : "", r.body_len, 0, NULL) : NULL;
    pc_kube_response_fini(&r);
    json_t *md = json_object_get(p, "metadata");
    const char *phase =
            json_string_value(json_object_get(json_object_get(md, "labels"), "podclaim.io/phase"));
    bool done =
            p && (!phase || strcmp(phase, "Idle") == 0 || json_object_get(md, "deletionTimestamp"));
    if (p && !done && fill_settled(p)) {
        snprintf(body, sizeof(body),
                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
                 "\"Idle\"},\"annotations\":{\"podclaim.io/claim-id\":null,"
                 "\"podclaim.io/claimed-at\":null}}}",
                 json_string_value(json_object_get(md, "resourceVersion")));
        done = pc_kube_conn_request(c, "PATCH", path, "application/strategic-merge-patch+json",
                                    body, strlen(body), &r) == 0 &&
               (r.status == 200 || r.status == 404);
        pc_kube_response_fini(&r);
    }
    json_decref(p);
    return done;
}

static void *fill_main(void *arg)
{
    ksim_filler *f = arg;
    pc_kube_conn *c = NULL;
    if (pc_kube_conn_new(f->k->admin, &c) != 0)
        return NULL;
    int64_t next_count = 0;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        pthread_mutex_unlock(&f->mu);
        int64_t now = now_ms();
        if (now >= next_count) {
            for (int i = 0; i < f->npools; i++)
                fill_top_up(f, c, i);
            next_count = now + 100;
        }
        if (f->delay_ms >= 0) {
            fill_read_claims(f, c);
            fill_due *keep = NULL, **kt = &keep;
            while (f->head && f->head->due_ms <= now_ms()) {
                fill_due *d = f->head;
                f->head = d->next;
                d->next = NULL;
                if (fill_recycle(c, d)) {
                    free(d);
                } else {
                    *kt = d;
                    kt = &d->next;
                }
            }
            if (keep) { /* to the front: still due */
                *kt = f->head;
                f->head = keep;
            }
            if (!f->head)
                f->tail = NULL;
            else
                for (f->tail = f->head; f->tail->next; f->tail = f->tail->next)
                    ;
        }
        pthread_mutex_lock(&f->mu);
        if (f->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 5000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    pthread_mutex_unlock(&f->mu);
    pc_kube_conn_free(c);
    return NULL;
}

static void filler_stop(ksim *k)
{
    ksim_filler *f = k->filler;
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
    while (f->head) {
        fill_due *d = f->head;
        f->head = d->next;
        free(d);
    }
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
    k->filler = NULL;
}

/* Read the filler's part of args: pools, hold, stop; and whether --kubelet-only turns it off.
 * Writes the initial pods into objects_path. Returns the filler (not started) or NULL. */
static ksim_filler *filler_plan(const char *const *args, const char *objects_path)
{
    ksim_filler *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    int64_t hold = 500, stop = 20;
    bool off = false;
    for (size_t i = 0; args && args[i]; i++) {
        const char *a = args[i], *v = args[i + 1];
        if (strcmp(a, "--kubelet-only") == 0)
            off = true;
        else if (strcmp(a, "--hold-ms") == 0 && v)
            hold = atoll(v);
        else if (strcmp(a, "--stop-ms") == 0 && v)
            stop = atoll(v);
        else if (strcmp(a, "--pool") == 0 && v && f->npools < FILL_POOLS) {
            const char *slash = strchr(v, '/'), *eq = strrchr(v, '=');
            if (slash && eq && eq > slash) {
                snprintf(f->pools[f->npools].ns, sizeof(f->pools[0].ns), "%.*s", (int)(slash - v),
                         v);
                snprintf(f->pools[f->npools].name, sizeof(f->pools[0].name), "%.*s",
                         (int)(eq - slash - 1), slash + 1);
                f->pools[f->npools++].n = atoi(eq + 1);
            }
        }
    }
    if (off || f->npools == 0) {
        free(f);
        return NULL;
    }
    /* hold of an hour or more: never (a test that keeps its claimed pods) */
    f->delay_ms = hold >= 3600000 ? -1 : hold + stop;
    FILE *o = fopen(objects_path, "w");
    if (!o) {
        free(f);
        return NULL;
    }
    fputs("[", o);
    bool first = true;
    /* the pools' namespaces first (kapi-sim starts with default, kube-system, kube-public) */
    for (int i = 0; i < f->npools; i++) {
        const char *ns = f->pools[i].ns;
        bool seen = strcmp(ns, "default") == 0 || strcmp(ns, "kube-system") == 0 ||
                    strcmp(ns, "kube-public") == 0;
        for (int k = 0; k < i && !seen; k++)
            seen = strcmp(f->pools[k].ns, ns) == 0;
        if (!seen) {
            fprintf(o,
                    "%s{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":"
                    "\"%s\"}}",
                    first ? "" : ",", ns);
            first = false;
        }
    }
    for (int i = 0; i < f->npools; i++)
        for (; (int)f->pools[i].seq < f->pools[i].n; f->pools[i].seq++) {
            if (!first)
                fputs(",", o);
            first = false;
            fill_pod_json(o, f->pools[i].ns, f->pools[i].name, f->pools[i].seq);
        }
    fputs("]", o);
    fclose(o);
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    return f;
}

/* kapi-sim's log to stderr, for a test that failed because kapi-sim did. */
static void print_log(const ksim *k)
{
    char logp[128], line[1024];
    snprintf(logp, sizeof(logp), "%s/kapi-sim.log", k->dir);
    FILE *f = fopen(logp, "r");
    while (f && fgets(line, sizeof(line), f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

int ksim_start(ksim *k, const char *const *args, bool tls, const char *ca_file, const char *token)
{
    memset(k, 0, sizeof(*k));
    ksim_mkdir(k->dir, sizeof(k->dir));
    char portfile[128];
    snprintf(portfile, sizeof(portfile), "%s/port", k->dir);
    const char *argv[64];
    size_t n = 0;
    if (ksim_real()) {
        argv[n++] = getenv("REALK8S_BIN");
        argv[n++] = "front";
        argv[n++] = "--kubeconfig";
        argv[n++] = getenv("KUBECONFIG");
    } else {
        argv[n++] = KAPI_SIM_PATH;
    }
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--port-file";
    argv[n++] = portfile;
    char objects[128];
    snprintf(objects, sizeof(objects), "%s/filler-pods.json", k->dir);
    ksim_filler *filler = ksim_real() ? NULL : filler_plan(args, objects);
    if (filler) {
        argv[n++] = "--objects";
        argv[n++] = objects;
    }
    for (size_t i = 0; args && args[i] && n < 60; i++) {
        if (filler && strcmp(args[i], "--hold-ms") == 0 && args[i + 1]) {
            i++; /* the filler's, not kapi-sim's */
            continue;
        }
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        free(filler);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        /* In the sanitizer builds kapi-sim is built with the same sanitizer and inherits the
         * test's options: a report in it is fatal, and ksim_stop fails the test with its log. */
        /* its per-connection chatter goes to a file in the scratch folder */
        char logp[128];
        snprintf(logp, sizeof(logp), "%s/kapi-sim.log", k->dir);
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    k->pid = pid;
    /* wait for the port file: kapi-sim writes it atomically once it listens */
    int64_t end = now_ms() + 30000; /* the real server's front first resets its pools */
    while (now_ms() < end) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int ok = fscanf(f, "%d", &k->port);
            fclose(f);
            if (ok == 1 && k->port > 0)
                break;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            k->pid = 0;
            fprintf(stderr, "kapi-sim exited early (status %d); its log:\n", st);
            print_log(k);
            free(filler);
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (k->port <= 0) {
        fprintf(stderr, "kapi-sim did not write its port file in 30 s\n");
        free(filler);
        ksim_stop(k);
        return -1;
    }
    snprintf(k->url, sizeof(k->url), "%s://127.0.0.1:%d", tls ? "https" : "http", k->port);
    pc_kube_options o = {.server = k->url, .ca_file = ca_file, .token = token};
    char err[256];
    if (pc_kube_client_new(&o, &k->admin, err, sizeof(err)) != 0) {
        fprintf(stderr, "admin client: %s\n", err);
        free(filler);
        ksim_stop(k);
        return -1;
    }
    if (filler) {
        filler->k = k;
        k->filler = filler;
        if (pthread_create(&filler->th, NULL, fill_main, filler) != 0) {
            k->filler = NULL;
            free(filler);
            ksim_stop(k);
            return -1;
        }
    }
    return 0;
}

/* kapi-sim did not end cleanly (a sanitizer report, a crash, a hang): show its log and fail
 * the test. abort() because this runs in .fini too, where an assertion may not reach. */
static void ksim_failed(ksim *k, int st)
{
    fprintf(stderr, "kapi-sim (pid %d) ended badly: %s %d; its log:\n", (int)k->pid,
            WIFEXITED(st) ? "exit status" : "signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    print_log(k);
    abort();
}

void ksim_filler_stop(ksim *k)
{
    filler_stop(k);
}

void ksim_stop(ksim *k)
{
    filler_stop(k);
    if (k->pid > 0) {
        kill(k->pid, SIGTERM);
        int64_t end = now_ms() + 10000; /* LeakSanitizer's exit scan takes a while */
        int st = 0;
        bool hung = false;
        while (waitpid(k->pid, &st, WNOHANG) == 0) {
            if (now_ms() > end) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, &st, 0);
                hung = true;
                break;
            }
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        if (hung || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ksim_failed(k, st);
        k->pid = 0;
    }
    pc_kube_client_free(k->admin);
    k->admin = NULL;
    if (k->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), getenv("KSIM_KEEP") ? "true %s" : "rm -rf %s", k->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", k->dir);
        k->dir[0] = '\0';
    }
}

json_t *ksim_json(ksim *k, const char *method, const char *path, const char *body)
{
    pc_kube_conn *c;
    if (pc_kube_conn_new(k->admin, &c))
        return NULL;
    pc_kube_response r;
    int rc = pc_kube_conn_request(c, method, path, body ? "application/json" : NULL, body,
                                  body ? strlen(body) : 0, &r);
    json_t *j = NULL;
    if (rc == 0 && r.status >= 200 && r.status < 300)
        j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
    else
        fprintf(stderr, "%s %s: rc=%d %s\n", method, path, rc, r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
    return j;
}

int ksim_put_faults(ksim *k, const char *json)
{
    json_t *j = ksim_json(k, "PUT", "/sim/faults", json);
    int rc = j ? 0 : -1;
    json_decref(j);
    return rc;
}
