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
    for (size_t i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
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
            fprintf(stderr, "kapi-sim exited early (status %d)\n", st);
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (k->port <= 0) {
        fprintf(stderr, "kapi-sim did not write its port file in 30 s\n");
        ksim_stop(k);
        return -1;
    }
    snprintf(k->url, sizeof(k->url), "%s://127.0.0.1:%d", tls ? "https" : "http", k->port);
    pc_kube_options o = {.server = k->url, .ca_file = ca_file, .token = token};
    char err[256];
    if (pc_kube_client_new(&o, &k->admin, err, sizeof(err)) != 0) {
        fprintf(stderr, "admin client: %s\n", err);
        ksim_stop(k);
        return -1;
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
    char logp[128], line[1024];
    snprintf(logp, sizeof(logp), "%s/kapi-sim.log", k->dir);
    FILE *f = fopen(logp, "r");
    while (f && fgets(line, sizeof(line), f))
        fputs(line, stderr);
    if (f)
        fclose(f);
    abort();
}

void ksim_stop(ksim *k)
{
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
