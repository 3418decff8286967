/* Helpers for the kapi-sim tests: waiting with a deadline, running kapi-sim as a child process
 * on an ephemeral port, and running shell commands (curl, kubectl) against it. */
#ifndef PODCLAIM_TESTS_KSIM_TEST_H
#define PODCLAIM_TESTS_KSIM_TEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

int64_t ksim_now_ms(void);
void ksim_pause(void); /* 1 ms: the polling step of KSIM_WAIT_UNTIL, never a synchronisation */

/* Re-evaluate expr until it is true or timeout_ms passes; the value is its last truth value. */
#define KSIM_WAIT_UNTIL(expr, timeout_ms)                                                          \
    ({                                                                                             \
        int64_t ksim_end_ = ksim_now_ms() + (timeout_ms);                                          \
        bool ksim_ok_;                                                                             \
        while (!(ksim_ok_ = (expr)) && ksim_now_ms() < ksim_end_)                                  \
            ksim_pause();                                                                          \
        ksim_ok_;                                                                                  \
    })

typedef struct ksim {
    pid_t pid;
    int port;
    char dir[128];     /* temporary directory for the port file and scratch files */
    char url[64];      /* http://127.0.0.1:PORT */
    char kubectl[600]; /* "kubectl --server URL" (+ token, CA), ready for a command line */
    char ca[256];      /* --tls-cert file, "" without TLS */
} ksim;

/* Start the kapi-sim binary with extra arguments (space separated, no quoting) and wait for
 * its port file. The child gets SIGTERM if the test process dies. Returns 0 or -1. */
int ksim_start(ksim *k, const char *args);
/* SIGTERM, wait up to 5 s (then SIGKILL); returns the exit status or -1. */
int ksim_stop(ksim *k);

/* Run `sh -c cmd` and return its exit status; *out (may be NULL) gets stdout, malloc'd. */
int ksim_sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* curl helper: method, path, optional body and content type; returns HTTP code, *body gets the
 * response body (malloc'd, may be NULL). */
int ksim_http(const ksim *k, const char *method, const char *path, const char *ctype,
              const char *body, char **resp);
/* GET path and parse the JSON answer (NULL on failure). */
json_t *ksim_get_json(const ksim *k, const char *path);
/* Count pods of the given pool in the given phase (label podclaim.io/phase). */
int ksim_count_phase(const ksim *k, const char *ns, const char *pool, const char *phase);
bool ksim_kubectl_available(void);

#endif
