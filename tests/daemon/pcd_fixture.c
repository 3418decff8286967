/* podclaimd test fixture (see pcd_fixture.h). */
#include "pcd_fixture.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t pcd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polling a child's start-up: nothing to block on but another process's progress. */
static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int pcd_start(pcd_proc *p, const char *yaml, const char *server, const char *const *extra,
              bool wait_ready)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "/tmp/pc-pcd-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    snprintf(p->config, sizeof(p->config), "%s/podclaimd.yaml", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/podclaimd.log", p->dir);
    char portfile[128];
    snprintf(portfile, sizeof(portfile), "%s/port", p->dir);
    FILE *f = fopen(p->config, "w");
    if (!f)
        return -1;
    fprintf(f, yaml, server);
    fclose(f);
    const char *argv[48];
    size_t n = 0;
    argv[n++] = PODCLAIMD_PATH;
    argv[n++] = "--config";
    argv[n++] = p->config;
    argv[n++] = "--port-file";
    argv[n++] = portfile;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; extra && extra[i] && n < 46; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    int64_t end = pcd_now_ms() + 15000;
    while (pcd_now_ms() < end && p->port <= 0) {
        FILE *pf = fopen(portfile, "r");
        if (pf) {
            if (fscanf(pf, "%d", &p->port) != 1)
                p->port = 0;
            fclose(pf);
        }
        int st;
        if (p->port <= 0 && waitpid(pid, &st, WNOHANG) == pid) {
            p->pid = 0;
            fprintf(stderr, "podclaimd exited at start (status %d); log %s\n", st, p->log);
            return -1;
        }
        if (p->port <= 0)
            pause_ms(5);
    }
    if (p->port <= 0) {
        fprintf(stderr, "podclaimd wrote no port in 15 s; log %s\n", p->log);
        pcd_stop(p, SIGKILL, 1000);
        return -1;
    }
    snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", p->port);
    while (wait_ready && pcd_now_ms() < end) {
        pcd_http h;
        char u[128];
        snprintf(u, sizeof(u), "%s/readyz", p->url);
        if (pcd_req("GET", u, NULL, NULL, &h) == 0 && h.status == 200)
            return 0;
        pause_ms(5);
    }
    if (wait_ready) {
        fprintf(stderr, "podclaimd not ready in 15 s; log %s\n", p->log);
        return -1;
    }
    return 0;
}

int pcd_stop(pcd_proc *p, int sig, int timeout_ms)
{
    int rc = -1;
    if (p->pid > 0) {
        kill(p->pid, sig);
        int64_t end = pcd_now_ms() + timeout_ms;
        int st;
        pid_t w;
        while ((w = waitpid(p->pid, &st, WNOHANG)) == 0 && pcd_now_ms() < end)
            pause_ms(2);
        if (w == p->pid) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        } else {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
        }
        p->pid = 0;
    }
    if (p->dir[0] && !getenv("PCD_KEEP")) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", p->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", p->dir);
        p->dir[0] = '\0';
    }
    return rc;
}

int pcd_run(const char *const *args, const char *const *env, char *out, size_t outlen)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        const char *argv[32];
        size_t n = 0;
        argv[n++] = PODCLAIMD_PATH;
        for (size_t i = 0; args && args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t o = 0;
    ssize_t r;
    while ((r = read(pipefd[0], out + o, outlen - 1 - o)) > 0)
        o += (size_t)r;
    out[o] = '\0';
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct sink {
    char *buf;
    size_t len, cap;
} sink;

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t k = size * n;
    if (s->len + k >= s->cap)
        k = s->cap - 1 - s->len;
    memcpy(s->buf + s->len, ptr, k);
    s->len += k;
    s->buf[s->len] = '\0';
    return size * n;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *arg)
{
    pcd_http *h = arg;
    size_t k = size * n;
    if (k > 13 && strncasecmp(ptr, "Retry-After: ", 13) == 0)
        snprintf(h->retry_after, sizeof(h->retry_after), "%.*s", (int)strcspn(ptr + 13, "\r\n"),
                 ptr + 13);
    return k;
}

int pcd_req(const char *method, const char *url, const char *body, const char *token, pcd_http *out)
{
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    sink s = {out->body, 0, sizeof(out->body)};
    struct curl_slist *hs = NULL;
    char auth[512];
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hs = curl_slist_append(hs, auth);
    }
    hs = curl_slist_append(hs, "Content-Type: application/json");
    hs = curl_slist_append(hs, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

json_t *pcd_get_json(const char *base, const char *path)
{
    static pcd_http h;
    char u[512];
    snprintf(u, sizeof(u), "%s%s", base, path);
    if (pcd_req("GET", u, NULL, NULL, &h) != 0 || h.status / 100 != 2)
        return NULL;
    return json_loads(h.body, 0, NULL);
}

double pcd_metric(pcd_proc *p, const char *prefix, const char *with)
{
    static pcd_http h;
    char u[128];
    snprintf(u, sizeof(u), "%s/metrics", p->url);
    if (pcd_req("GET", u, NULL, NULL, &h) != 0 || h.status != 200)
        return -1;
    size_t pl = strlen(prefix);
    for (char *line = h.body; line && *line;) {
        char *eol = strchr(line, '\n');
        char one[2048];
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        snprintf(one, sizeof(one), "%.*s", (int)ll, line);
        if (strncmp(one, prefix, pl) == 0 && (one[pl] == '{' || one[pl] == ' ') &&
            (!with || strstr(one, with))) {
            char *sp = strrchr(one, ' ');
            if (sp)
                return strtod(sp + 1, NULL);
        }
        line = eol ? eol + 1 : NULL;
    }
    return -1;
}

bool pcd_wait_metric(pcd_proc *p, const char *prefix, const char *with, double value,
                     int timeout_ms)
{
    int64_t end = pcd_now_ms() + timeout_ms;
    while (pcd_now_ms() < end) {
        if (pcd_metric(p, prefix, with) >= value)
            return true;
        pause_ms(5);
    }
    return false;
}

bool pcd_wait_metric_at_most(pcd_proc *p, const char *prefix, const char *with, double value,
                             int timeout_ms)
{
    int64_t end = pcd_now_ms() + timeout_ms;
    while (pcd_now_ms() < end) {
        double v = pcd_metric(p, prefix, with);
        if (v >= 0 && v <= value)
            return true;
        pause_ms(5);
    }
    return false;
}
