/* Test fixture: run podclaimd (the built binary) against a kapi-sim (tests/kube/ksim.h), both
 * as separate processes on ephemeral loopback ports, and talk to it over real sockets.
 *
 * podclaimd gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test even when an assertion
 * ends the test early.
 */
#ifndef PODCLAIM_TESTS_PCD_FIXTURE_H
#define PODCLAIM_TESTS_PCD_FIXTURE_H

#include "../kube/ksim.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct pcd_proc {
    pid_t pid;
    int port;
    char url[64];
    char dir[64];
    char config[128];
    char log[128];
} pcd_proc;

/* Write `yaml` (printf format, "%s" = kapi-sim's URL is passed as the only argument) to a
 * config file and start podclaimd with it plus `extra` args (NULL-terminated); wait for its
 * port and, when wait_ready, for /readyz 200. Returns 0 or -1 (message printed). */
int pcd_start(pcd_proc *p, const char *yaml, const char *server, const char *const *extra,
              bool wait_ready);
/* Send `sig` and wait up to `timeout_ms`; returns the exit status, or -1 if it had to be
 * killed (or died of a signal). */
int pcd_stop(pcd_proc *p, int sig, int timeout_ms);

/* Run podclaimd to completion with args (NULL-terminated) and env additions ("K=V", NULL-
 * terminated); capture stdout+stderr into out. Returns the exit status. */
int pcd_run(const char *const *args, const char *const *env, char *out, size_t outlen);

typedef struct pcd_http {
    long status;
    char body[262144];
    char retry_after[32];
} pcd_http;

/* One request over libcurl (a fresh connection). token may be NULL. Returns 0 or -1. */
int pcd_req(const char *method, const char *url, const char *body, const char *token,
            pcd_http *out);
/* GET url+path and parse the JSON answer (NULL unless 2xx). */
json_t *pcd_get_json(const char *base, const char *path);

/* The value of the first sample in the daemon's /metrics whose line starts with `name` and
 * contains `with` (NULL = any), or -1. */
double pcd_metric(pcd_proc *p, const char *name, const char *with);
/* Wait until pcd_metric(...) >= value; false on timeout. */
bool pcd_wait_metric(pcd_proc *p, const char *name, const char *with, double value, int timeout_ms);

/* Wait until 0 <= pcd_metric(...) <= value. */
bool pcd_wait_metric_at_most(pcd_proc *p, const char *name, const char *with, double value,
                             int timeout_ms);

int64_t pcd_now_ms(void);

#endif
