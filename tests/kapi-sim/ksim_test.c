/* kapi-sim test helpers: see ksim_test.h. */
#include "ksim_test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t ksim_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ksim_pause(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static bool read_port(const char *path, int *port)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    int ok = fscanf(fp, "%d", port);
    fclose(fp);
    return ok == 1 && *port > 0;
}

int ksim_start(ksim *k, const char *args)
{
    memset(k, 0, sizeof *k);
    snprintf(k->dir, sizeof k->dir, "/tmp/ksim-test-XXXXXX");
    if (!mkdtemp(k->dir))
        return -1;
    char portfile[200];
    snprintf(portfile, sizeof portfile, "%s/port", k->dir);
    char *argv[64];
    int argc = 0;
    /* KSIM_BIN runs the tests against another build, e.g. a ThreadSanitizer one. */
    argv[argc++] = getenv("KSIM_BIN") ? getenv("KSIM_BIN") : KAPI_SIM_BIN;
    argv[argc++] = "--port-file";
    argv[argc++] = portfile;
    char *dup = strdup(args ? args : "");
    char *save = NULL;
    for (char *t = strtok_r(dup, " ", &save); t && argc < 62; t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    free(dup);
    if (pid < 0)
        return -1;
    k->pid = pid;
    int status;
    if (!KSIM_WAIT_UNTIL(read_port(portfile, &k->port) || waitpid(pid, &status, WNOHANG) == pid,
                         10000) ||
        k->port == 0) {
        ksim_stop(k);
        return -1;
    }
    const char *cert = args ? strstr(args, "--tls-cert ") : NULL;
    if (cert) {
        snprintf(k->ca, sizeof k->ca, "%s", cert + 11);
        char *sp = strchr(k->ca, ' ');
        if (sp)
            *sp = '\0';
    }
    snprintf(k->url, sizeof k->url, "%s://127.0.0.1:%d", cert ? "https" : "http", k->port);
    const char *tok = args ? strstr(args, "--token ") : NULL;
    char tokarg[100] = "", caarg[300] = "";
    if (tok) {
        snprintf(tokarg, sizeof tokarg, " --token %.60s", tok + 8);
        char *sp = strchr(tokarg + 9, ' ');
        if (sp)
            *sp = '\0';
    }
    if (cert)
        snprintf(caarg, sizeof caarg, " --certificate-authority %s", k->ca);
    snprintf(k->kubectl, sizeof k->kubectl, "kubectl --server %s%s%s", k->url, tokarg, caarg);
    return 0;
}

int ksim_stop(ksim *k)
{
    int rc = -1;
    if (k->pid > 0) {
        kill(k->pid, SIGTERM);
        int status = 0;
        pid_t r = 0;
        if (!KSIM_WAIT_UNTIL((r = waitpid(k->pid, &status, WNOHANG)) != 0, 5000)) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, &status, 0);
        } else if (r == k->pid && WIFEXITED(status)) {
            rc = WEXITSTATUS(status);
        }
        k->pid = 0;
    }
    if (k->dir[0]) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", k->dir);
        if (system(cmd) != 0)
            rc = rc == 0 ? -1 : rc;
        k->dir[0] = '\0';
    }
    return rc;
}

int ksim_sh(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int ksim_http(const ksim *k, const char *method, const char *path, const char *ctype,
              const char *body, char **resp)
{
    char bodyfile[200] = "", outfile[200];
    snprintf(outfile, sizeof outfile, "%s/resp.%d.%ld", k->dir, (int)getpid(), (long)ksim_now_ms());
    if (body) {
        snprintf(bodyfile, sizeof bodyfile, "%s/body.%d", k->dir, (int)getpid());
        FILE *fp = fopen(bodyfile, "w");
        fputs(body, fp);
        fclose(fp);
    }
    char *code = NULL;
    char bodyarg[260] = "", ctarg[200] = "";
    if (body)
        snprintf(bodyarg, sizeof bodyarg, "--data-binary @%s", bodyfile);
    if (ctype)
        snprintf(ctarg, sizeof ctarg, "-H 'Content-Type: %s'", ctype);
    ksim_sh(&code, "curl -s -o %s -w '%%{http_code}' -X %s %s %s '%s%s'", outfile, method, ctarg,
            bodyarg, k->url, path);
    int c = code ? atoi(code) : -1;
    free(code);
    if (resp) {
        *resp = NULL;
        ksim_sh(resp, "cat %s", outfile);
    }
    unlink(outfile);
    return c;
}

json_t *ksim_get_json(const ksim *k, const char *path)
{
    char *body = NULL;
    int code = ksim_http(k, "GET", path, NULL, NULL, &body);
    json_t *j = code == 200 && body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

int ksim_count_phase(const ksim *k, const char *ns, const char *pool, const char *phase)
{
    char path[300];
    snprintf(path, sizeof path,
             "/api/v1/namespaces/%s/pods?labelSelector=podclaim.io/pool%%3D%s,podclaim.io/"
             "phase%%3D%s",
             ns, pool, phase);
    json_t *j = ksim_get_json(k, path);
    int n = j ? (int)json_array_size(json_object_get(j, "items")) : -1;
    json_decref(j);
    return n;
}

bool ksim_kubectl_available(void)
{
    return access("/usr/bin/kubectl", X_OK) == 0 ||
           ksim_sh(NULL, "command -v kubectl >/dev/null") == 0;
}
