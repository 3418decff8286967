/* The fault soak's shared pieces: options, the per-claim record, the processes (soak.c runs
 * the load; chaos.c the processes, the claim log and the audit). */
#ifndef PODCLAIM_SOAK_H
#define PODCLAIM_SOAK_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SOAK_S 1000000000LL

typedef struct soak_opts {
    uint64_t claims;     /* claims to send (at most, with duration_ns) */
    int64_t duration_ns; /* stop sending after this long; 0 = when `claims` are sent */
    double rate;         /* claims/s cap; 0 = as fast as answers come */
    int conns;           /* connections per replica */
    int pods;            /* SandboxPool replicas */
    double kill_at;      /* kill -9 the leader when this share of the claims was sent; <0 never */
    uint64_t restart_every; /* restart kapi-sim every N claims sent; 0 = never */
    double hangup_share;    /* claims whose client hangs up within 30 ms if unanswered */
    double image_share;     /* claims that change the container image (a kubelet restart) */
    int64_t release_max_ns; /* a won claim is released after a uniform delay in [0, this) */
    int64_t silence_ns;     /* no answer this long past a claim's deadline: "silent" */
    bool faults;
    bool no_rss_check; /* RSS not checked (a sanitizer build); open fds still are */
    bool strict;       /* fail on the KNOWN defect too (chaos.c: a PATCH applied after a 504) */
    const char *ns, *pool;
    const char *out; /* folder for logs and the summary; created; NULL = a temporary one */
    const char *kapi_sim, *podclaimd;
} soak_opts;

void soak_opts_defaults(soak_opts *o);

/* One claim, by number (its claimId is "c<n>"). Fields marked (main) are written by the load
 * loop only, (chaos) by the chaos thread only; both are read together after both stopped. */
enum {
    SOAK_SENT = 1,      /* (main) */
    SOAK_ANSWERED = 2,  /* an HTTP answer, or a transport error (main) */
    SOAK_TRANSPORT = 4, /* the connection broke before an answer (main) */
    SOAK_HUNG = 8,      /* the client hung up before an answer, on purpose (main) */
    SOAK_SILENT = 16,   /* no answer by deadline + silence_ns (main) */
    SOAK_TWICE = 32,    /* a second answer for the same claim (main) */
    SOAK_BAD_BODY = 64, /* a 200 without pod/namespace, or another claim's id (main) */
    SOAK_AT_KILL = 128, /* the transport error came from a replica killed just before (main) */
};

typedef struct soak_rec {
    uint32_t ans_pod;    /* hash of "ns/pod" of the 200 (main) */
    uint32_t log_pod;    /* hash of the pod of its /sim/claims entry (chaos) */
    uint16_t status;     /* HTTP status of the answer; 0 = none (main) */
    uint16_t rel_status; /* of its release: HTTP status, 1 transport error, 2 silent (main) */
    uint8_t flags;       /* SOAK_* (main) */
    uint8_t log_count;   /* /sim/claims entries naming it, all servers, saturating (chaos) */
    uint8_t replica;     /* that answered (main) */
    uint8_t priority;    /* (main) */
    uint8_t gen;         /* the replica's process that answered: its `starts` then (main) */
    uint8_t rel_tries;   /* release requests sent for it (main) */
    uint8_t rel_replica; /* the replica its last release request went to (main) */
    uint8_t rel_gen;     /* and that replica's process then: its `starts` (main) */
} soak_rec;

uint32_t soak_pod_hash(const char *ns, const char *pod);

typedef struct soak_replica {
    pid_t pid; /* 0 = not running */
    int port;
    char identity[32];
    char dir[256];
    _Atomic int64_t killed_ns; /* CLOCK_MONOTONIC of its kill -9; 0 = never */
    int starts;
    int killed_gen; /* the `starts` of the process killed (under procs_mu, set before it) */
} soak_replica;

extern pthread_mutex_t procs_mu; /* pid and port of the replicas and kapi-sim */

typedef struct soak_ctx {
    soak_opts *o;
    soak_rec *recs;
    soak_replica *replicas; /* [2] */
    _Atomic uint64_t *n_sent;
    _Atomic int *leader_hint;
    _Atomic bool *load_done;
} soak_ctx;

/* (main) the first error message of each HTTP status; 503s that named a leader */
extern char soak_first_error[600][160];
extern uint64_t soak_503_not_leader;

int64_t soak_now_ns(void);
void soak_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* chaos.c: start kapi-sim and both replicas and wait for a leader (0 or -1); start the chaos
 * and monitor threads; after the load: settle, audit, print the report (exit status); stop
 * everything. */
int soak_setup(soak_ctx *x);
void soak_chaos_start(soak_ctx *x);
int soak_finish(soak_ctx *x);
void soak_teardown(soak_ctx *x);

#endif
