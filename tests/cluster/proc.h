/* Test fixture: run a helper process (cluster-helper) with its stdout and stderr in a file,
 * read what it printed, stop it with SIGTERM or SIGKILL. Like tests/kube/ksim.c, the child has
 * PR_SET_PDEATHSIG(SIGKILL), so it never outlives the test. */
#ifndef PODCLAIM_TESTS_CLUSTER_PROC_H
#define PODCLAIM_TESTS_CLUSTER_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct proc {
    pid_t pid;
    char out[128]; /* file with the child's stdout + stderr */
    int status;    /* wait status once reaped */
} proc;

/* Start argv[0] (a path) with argv; output to a fresh file. Returns 0 or -1. */
int proc_start(proc *p, const char *const *argv);
/* SIGTERM and wait up to timeout_ms (then SIGKILL). Returns the exit code, or -1 if killed. */
int proc_stop(proc *p, int64_t timeout_ms);
/* SIGKILL and reap. */
void proc_kill(proc *p);
/* Everything the child printed so far (malloc'd, NUL-terminated; "" if nothing). */
char *proc_output(const proc *p);
/* The number of lines starting with `prefix` printed so far. */
int proc_count(const proc *p, const char *prefix);
/* CLOCK_MONOTONIC ms (same clock as the helper's stamps). */
int64_t proc_now_ms(void);

#endif
