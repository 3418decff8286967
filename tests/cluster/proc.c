/* Helper-process fixture (see proc.h). */
#include "proc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int proc_start(proc *p, const char *const *argv)
{
    static int seq;
    memset(p, 0, sizeof(*p));
    snprintf(p->out, sizeof(p->out), "/tmp/pc-cluster-%d-%d.out", (int)getpid(), ++seq);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(p->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

int proc_stop(proc *p, int64_t timeout_ms)
{
    if (p->pid <= 0)
        return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
    kill(p->pid, SIGTERM);
    int64_t end = proc_now_ms() + timeout_ms;
    int st = 0;
    while (waitpid(p->pid, &st, WNOHANG) == 0) {
        if (proc_now_ms() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            break;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    p->pid = 0;
    p->status = st;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void proc_kill(proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &p->status, 0);
    p->pid = 0;
}

char *proc_output(const proc *p)
{
    FILE *f = fopen(p->out, "r");
    if (!f)
        return strdup("");
    size_t cap = 4096, n = 0, r;
    char *b = malloc(cap);
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb)
                break;
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[n] = '\0';
    return b;
}

int proc_count(const proc *p, const char *prefix)
{
    char *o = proc_output(p);
    int n = 0;
    size_t pl = strlen(prefix);
    for (char *l = o; l && *l;) {
        if (strncmp(l, prefix, pl) == 0)
            n++;
        char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    free(o);
    return n;
}
