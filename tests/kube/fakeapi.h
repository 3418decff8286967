/* Test fixture: a scripted fake API server on a loopback port, for the failures kapi-sim
 * does not produce (broken JSON, half-open watches, unusable pods, canned error answers).
 *
 * Request i (in arrival order) gets script[i], the last entry repeating. Each answer is
 * HTTP/1.1 with "Connection: close" and no length: the body ends when the fake closes the
 * connection, right after the body, or, for a `hold` entry, when the client goes away or the
 * fake stops (a watch that stays open, possibly silent). One connection at a time, which is
 * all an informer opens. The request targets and their arrival times are recorded.
 */
#ifndef PODCLAIM_TESTS_KUBE_FAKEAPI_H
#define PODCLAIM_TESTS_KUBE_FAKEAPI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fake_resp {
    int status;          /* 0 = 200 */
    const char *headers; /* extra header lines, each ending "\r\n"; NULL = none */
    const char *body;    /* NULL = empty */
    bool hold;           /* keep the connection open after the body */
} fake_resp;

#define FAKEAPI_MAX_REQ 256

typedef struct fakeapi {
    int lfd;
    int port;
    char url[64]; /* http://127.0.0.1:<port> */
    const fake_resp *script;
    size_t n_script;
    pthread_t th;
    _Atomic bool stop;
    pthread_mutex_t mu; /* protects paths, at_ms */
    char paths[FAKEAPI_MAX_REQ][512];
    int64_t at_ms[FAKEAPI_MAX_REQ];
    _Atomic size_t n; /* requests seen */
} fakeapi;

/* Listen on an ephemeral loopback port and serve `script` (the array is copied; the strings
 * it points to are borrowed until fakeapi_stop). Returns 0 or -1. */
int fakeapi_start(fakeapi *f, const fake_resp *script, size_t n_script);
void fakeapi_stop(fakeapi *f);

size_t fakeapi_requests(fakeapi *f);
/* Copy of request i's target ("" when there is none yet); arrival time in ms (monotonic). */
void fakeapi_path(fakeapi *f, size_t i, char *out, size_t len);
int64_t fakeapi_at_ms(fakeapi *f, size_t i);
/* Is request i a watch (watch=true in its query)? */
bool fakeapi_is_watch(fakeapi *f, size_t i);

#endif
