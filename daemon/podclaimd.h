/* podclaimd internals shared by its files.
 *
 * Flow: HTTP client -> [http.c: route, auth, body] -> [claims.c: validate, enqueue, suspend]
 *       -> pool (inbox, ready-queue, pending) -> reservation -> scheduler (cas_start) -> kube backend
 *       -> pool callback -> [claims.c: waker thread resumes the connection] -> answer.
 *       The informers (one per pool) feed the pools; [metrics.c] renders /metrics and the
 *       pool snapshots; [registry.c] remembers won claims for DELETE.
 *
 * Threads: MHD's event-loop threads (http.threads), the waker (resumes suspended connections
 * and watches them for hang-ups), the releasers (blocking release PATCHes), plus the library's
 * threads (schedulers, CAS workers, kube backend, informers) and main (signals, shutdown).
 * A waiting claim holds none of them: its connection is suspended and its claim sits in the
 * pool's queues.
 */
#ifndef PODCLAIM_DAEMON_H
#define PODCLAIM_DAEMON_H

#include "config.h"

#include <podclaim/env.h>
#include <podclaim/informer.h>
#include <podclaim/kube.h>
#include <podclaim/podclaim.h>

#include <ck_stack.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

/* ---- histograms (daemon-side stages; the pool renders its own) ------------------------------ */

#define PCD_HIST_BOUNDS 22
typedef struct pcd_hist {
    _Atomic uint64_t buckets[PCD_HIST_BOUNDS + 1]; /* non-cumulative; last = +Inf; relaxed */
    _Atomic uint64_t sum_ns;
} pcd_hist;

void pcd_hist_observe(pcd_hist *h, int64_t ns);
/* Append `name{labels,le=...}` buckets, _sum and _count (count derived from the buckets read,
 * so +Inf == _count always holds). */
/* Append printf-style text to a growing buffer (*buf of *len bytes in *cap; NULL = empty), as
 * /metrics is rendered. Out of memory: the text stops short, never corrupt. */
void pcd_buf_vprintf(char **buf, size_t *len, size_t *cap, const char *fmt, va_list ap)
        __attribute__((format(printf, 4, 0)));
/* One Prometheus counter family with one label: HELP, TYPE, a line per value. */
typedef struct pcd_counter {
    const char *label_value;
    uint64_t v;
} pcd_counter;
void pcd_counter_family(char **buf, size_t *len, size_t *cap, const char *name, const char *help,
                        const char *label, const pcd_counter *c, size_t n);
void pcd_hist_render(char **buf, size_t *len, size_t *cap, const char *name, const char *labels,
                     const pcd_hist *h);
/* Upper bound of the bucket holding quantile q, in ns (0 when empty). */
int64_t pcd_hist_quantile_ns(const pcd_hist *h, double q);

/* ---- routes and response counters ----------------------------------------------------------- */

#define PCD_ROUTE_MAP(XX)                                                                          \
    XX(CLAIM, "claim")                                                                             \
    XX(ENV_CLAIM, "env_claim")                                                                     \
    XX(RELEASE, "release")                                                                         \
    XX(POOLS, "pools")                                                                             \
    XX(POOL, "pool")                                                                               \
    XX(ENVS, "envs")                                                                               \
    XX(METRICS, "metrics")                                                                         \
    XX(HEALTHZ, "healthz")                                                                         \
    XX(READYZ, "readyz")                                                                           \
    XX(OTHER, "other")

typedef enum pcd_route {
#define PCD_XX(n, s) PCD_ROUTE_##n,
    PCD_ROUTE_MAP(PCD_XX)
#undef PCD_XX
            PCD_ROUTE_COUNT
} pcd_route;

extern const char *const pcd_route_names[];
extern const int pcd_codes[]; /* the status codes counted; the last slot counts any other */
#define PCD_N_CODES 14

/* ---- pools ---------------------------------------------------------------------------------- */

typedef struct pcd pcd;
typedef struct pcd_lease pcd_lease;

/* One pool this daemon serves: its scheduler (pc_pool), informer and figures. Made by the pool
 * manager (pools.c) from a `pools:` entry of the file and/or a SandboxPool object; immutable
 * once published but for `gone` and the webhook URL. A change of team, user, env or tags makes
 * a new generation (a new pcd_pool) and retires the old one: retired pools are shut down and
 * stay allocated until exit (readers find them without locks, see pcd_table). */
typedef struct pcd_pool {
    pcd *d;
    pcd_pool_cfg cfg;                             /* own copy */
    char key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2]; /* "ns/name" */
    char labels[1024];                            /* namespace=..,pool=..,team=..,user=..,env=.. */
    pc_pool *pool;
    pc_informer *informer;
    char **containers; /* known container names; NULL = unknown (the server checks) */
    size_t n_containers;
    pcd_hist request_latency;    /* HTTP claim: body read -> answer ready */
    pcd_hist idle_to_claimable;  /* watch bytes in -> pool offer returned */
    pcd_hist cas_round_trip;     /* backend cas_start -> its completion (one PATCH) */
    pc_backend_wrapper backend;  /* the kube backend wrapped to time each CAS (pools.c) */
    _Atomic uint64_t env_routed; /* claims an env sent here */
    _Atomic uint64_t not_leader; /* CAS calls the leadership gate refused */
    pcd_lease *lease;            /* the Lease deciding for this pool; NULL = always lead */
    bool from_file;              /* in the file (fixed) */
    _Atomic bool from_object;    /* a SandboxPool defines it now (manager writes; relaxed) */
    _Atomic bool gone;           /* retired: shut down, no longer in the table */
    pthread_mutex_t wh_mu;       /* guards webhook (read by claim callbacks) */
    char webhook[512];           /* "" = none */
    struct pcd_pool *all_next;   /* every pool ever made (manager; freed at exit) */
} pcd_pool;

typedef struct pcd_env {
    pcd_env_cfg cfg;          /* own copy (name, strategy) */
    _Atomic(pc_env *) env;    /* rebuilt when members change; old ones retired until exit */
    _Atomic uint64_t no_pool; /* claims no member could take (tags) */
} pcd_env;

/* The published set of live pools (or envs): an immutable array swapped with one release
 * store by the pool manager and read with one acquire load by anyone (HTTP threads, metrics,
 * controller callbacks), without a lock. A replaced array and a retired pool are never freed
 * while the daemon runs, so a reader holding an old pointer never touches freed memory; the
 * cost is the memory of each retired pool until exit (pool changes are rare operator
 * actions; ck_epoch would let them be reclaimed, not done yet). */
typedef struct pcd_table {
    struct pcd_table *retired_next;
    size_t n;
    void *item[]; /* pcd_pool * or pcd_env * */
} pcd_table;

/* ---- registry: won claims, for DELETE (registry.c) ------------------------------------------ */

typedef struct pcd_registry pcd_registry;

typedef enum pcd_claim_state { PCD_ACTIVE, PCD_RELEASING, PCD_RELEASED } pcd_claim_state;

typedef struct pcd_claim_info {
    char pod_namespace[PC_NAMESPACE_MAX];
    char pod[PC_NAME_MAX];
    char rv[PC_RV_MAX];
    char id[PC_CLAIM_ID_MAX];
    pcd_claim_state state;
} pcd_claim_info;

int pcd_registry_new(size_t max, pcd_registry **out);
void pcd_registry_free(pcd_registry *r);
/* Remember a won claim of pool `pool_key` (replaces an entry with the same id). */
void pcd_registry_add(pcd_registry *r, const char *pool_key, const pcd_claim_info *ci);
/* Remember a claim won through another process, seen by an informer, unless its id is known
 * (live or ended). Returns true when it was added. */
bool pcd_registry_adopt(pcd_registry *r, const char *pool_key, const pcd_claim_info *ci);
/* Look up; returns false if unknown. With `take`, an ACTIVE claim becomes RELEASING (the
 * caller then releases it) and *took is set. */
bool pcd_registry_get(pcd_registry *r, const char *pool_key, const char *id, pcd_claim_info *out,
                      bool take, bool *took);
/* Set the state (and the resourceVersion, when rv is not NULL). */
void pcd_registry_set(pcd_registry *r, const char *pool_key, const char *id, pcd_claim_state st,
                      const char *rv);
/* The informer saw `pod` idle at `rv`: a claim on it at an older version has ended. */
void pcd_registry_pod_idle(pcd_registry *r, const char *ns, const char *pod, const char *rv);
size_t pcd_registry_size(pcd_registry *r);

/* ---- one HTTP request ----------------------------------------------------------------------- */

#define PCD_REQ_HUNG 1u     /* the client hung up while its claim waited (waker) */
#define PCD_REQ_DONE 2u     /* the claim's result (or the release's) is in (callback) */
#define PCD_REQ_ENQUEUED 4u /* the claim is in its pool: pc_claim_cancel may be called (MHD) */
#define PCD_REQ_DEPOSED 8u  /* cancelled because this replica stopped leading (waker) */

typedef struct pcd_req {
    pc_claim claim; /* first: the pool callback gets &claim */
    pcd *d;
    pcd_route route;
    struct MHD_Connection *conn;
    int fd;         /* watched for hang-up while suspended; -1 = not watched */
    bool suspended; /* MHD thread only */
    bool answered;  /* MHD thread only: response queued */
    char *body;
    size_t body_len, body_cap;
    bool too_big;
    int64_t started_ns;
    _Atomic unsigned flags;      /* PCD_REQ_*: release/acquire pair between callback and waker */
    ck_stack_entry_t done_entry; /* waker's queue */
    pcd_pool *pool;
    pcd_env *env;
    int enqueue_err; /* != 0: the claim never entered a pool */
    pc_claim_result result;
    json_t *doc; /* the parsed body: the claim's strings point into it */
    pc_kv *kvs;  /* images, labels, annotations */
    char id[PC_CLAIM_ID_MAX];
    /* release */
    pcd_claim_info rel;
    char rel_pool_key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2];
    int rel_status; /* HTTP status to answer */
    char rel_msg[512];
    bool rel_already;
    struct pcd_req *rel_next;
    struct pcd_req *wprev, *wnext; /* d->waiting_list while enqueued (wait_mu) */
    bool wlinked;
} pcd_req;

/* A release with no HTTP request behind it (a client hung up after its claim won). */
typedef struct pcd_release_job {
    pcd_req *req; /* NULL for an orphan release */
    pcd_claim_info ci;
    char pool_key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2];
    int64_t not_before_ns; /* put aside until then (CLOCK_MONOTONIC): a 429, or a failure
                            * of a release no client waits for */
    unsigned throttled;    /* 429s met so far */
    unsigned failures;     /* other failures so far (req == NULL only: tried again) */
    struct pcd_release_job *next;
} pcd_release_job;

/* ---- the daemon ----------------------------------------------------------------------------- */

struct pcd {
    pcd_config cfg;
    char *token; /* API token ("" = none); never logged */
    pc_kube_client *client;
    pc_kube_backend *kb;
    _Atomic(pcd_table *) pools; /* live pools (pcd_pool *), see pcd_table */
    _Atomic(pcd_table *) envs;  /* envs (pcd_env *); only ever grows */
    pcd_registry *registry;
    struct pcd_mgr *mgr;    /* pool manager (pools.c) */
    struct pcd_cluster *cl; /* leases, controllers, webhooks (cluster.c) */
    struct MHD_Daemon *mhd;
    int port;

    /* waker: one epoll set holding the eventfd (data.ptr NULL) and the sockets of suspended
     * claims (data.ptr = the request), EPOLLRDHUP|EPOLLONESHOT. Only the waker thread
     * removes sockets and resumes connections, so an event it reads always names a live
     * request (see claims.c). */
    int epfd, evfd;
    pthread_t waker;
    ck_stack_t done; /* requests whose answer is ready (mpmc push, waker pops) */
    _Atomic bool waker_stop;

    /* releasers: blocking PATCHes on their own connections */
    pthread_mutex_t rel_mu;
    pthread_cond_t rel_cv;
    pcd_release_job *rel_head, *rel_tail; /* ready, FIFO */
    pcd_release_job *rel_later;           /* throttled (429): by not_before_ns, soonest first */
    bool rel_stop;
    size_t n_releasers;
    pthread_t releasers[4];

    /* claims waiting in a pool (HTTP), so a replica that stops leading can end them */
    pthread_mutex_t wait_mu;
    pcd_req *waiting_list;
    _Atomic bool stepdown; /* the waker sweeps waiting_list (set by an elector's on_stop) */

    _Atomic bool draining;
    _Atomic int64_t waiting;    /* claims suspended waiting for a pool */
    _Atomic int64_t open_reqs;  /* claim/release requests not yet completed by MHD */
    _Atomic int64_t open_conns; /* client connections open (the http.maxConnections bound) */
    _Atomic uint64_t responses[PCD_ROUTE_COUNT][PCD_N_CODES];
    _Atomic uint64_t hangups, orphan_releases, late_win_releases;
    _Atomic uint64_t claims_adopted;     /* registered from an informer (pcd_pod_claimed) */
    _Atomic uint64_t releases[3];        /* released, already, failed */
    _Atomic uint64_t releases_throttled; /* 429s that put a release aside (claims.c) */
    _Atomic uint64_t releases_retried;   /* failed releases no client waits for, put aside */
    /* claims that ended without a pod after a CAS was sent (claims.c, "late wins") */
    struct pcd_lost_set *lost;
    int64_t started_ns;
};

/* http.c */
int pcd_http_start(pcd *d);
void pcd_http_stop(pcd *d);
void pcd_count_response(pcd *d, pcd_route r, int code);

/* claims.c */
int pcd_waker_start(pcd *d);
void pcd_waker_stop(pcd *d);
int pcd_releasers_start(pcd *d, size_t n);
void pcd_releasers_stop(pcd *d);
/* POST claims, final call: validates, enqueues and suspends, or answers at once.
 * Returns an MHD result. */
enum MHD_Result pcd_claim_begin(pcd_req *q, const char *ns, const char *pool, const char *env);
enum MHD_Result pcd_claim_answer(pcd_req *q);
/* The claim request decoder pcd_claim_begin uses: parse q->body (q->body_len bytes) into
 * q->claim (its strings point into q->doc, freed by pcd_req_free); pool NULL = unknown (env
 * claims), env = "requiredTags" allowed (*tags then points into q->doc). Returns 0, or -1 with
 * *code (400, 422; 500 out of memory) and one line in msg. Thread: any (touches only q).
 * Exposed for fuzz/fuzz_daemon_claim.c. */
int pcd_claim_parse(pcd_req *q, const pcd_pool *pool, bool env, int *code, char *msg,
                    size_t msg_len, json_t **tags);
/* Replace with '?' every byte of s that is not part of valid UTF-8 (as jansson wants it), in
 * place: a message quoting raw input (jansson's "near '...'", a path) or cut at its buffer's
 * end mid-character still goes into a JSON answer. Cannot fail. */
void pcd_utf8_repair(char *s);
/* The informer showed `pod` newly held by claim_id (pools.c's on_claimed hook). If that claim
 * ended here without a pod (its PATCH applied after its deadline), nobody holds the pod:
 * register it and give it back. Otherwise register it unless known (a claim won through
 * another process), so a DELETE here can release it. Thread: an informer's. */
void pcd_pod_claimed(pcd *d, const struct pcd_pool *pool, const pc_pod_ref *pod,
                     const char *claim_id);
enum MHD_Result pcd_release_begin(pcd_req *q, const char *ns, const char *pool, const char *id);
enum MHD_Result pcd_release_answer(pcd_req *q);
/* Queue a JSON answer (takes `body`, malloc'd). */
enum MHD_Result pcd_reply(pcd_req *q, int code, char *body, int retry_after);
enum MHD_Result pcd_reply_error(pcd_req *q, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void pcd_req_free(pcd_req *q);
/* An answer to a claim this replica may not serve (a follower): 503, Retry-After, the
 * leader's identity in the body ("leader") and in header X-Podclaim-Leader. */
enum MHD_Result pcd_reply_not_leader(pcd_req *q, const pcd_pool *p);
/* Ask the waker to end the claims waiting in pools this replica no longer leads. Thread: any. */
void pcd_waker_stepdown(pcd *d);

/* pools.c: the pool table and its manager thread */
/* The live pool ns/name or NULL. Thread: any; lock-free. The pointer stays valid memory until
 * exit (a pool retired meanwhile answers enqueue with -ESHUTDOWN). */
pcd_pool *pcd_find_pool(pcd *d, const char *ns, const char *name);
pcd_env *pcd_find_env(pcd *d, const char *name);
pcd_table *pcd_pools_now(pcd *d); /* acquire load; never NULL after pcd_pools_init */
pcd_table *pcd_envs_now(pcd *d);
int pcd_pools_init(pcd *d);  /* the file's pools, made at once (main) */
int pcd_pools_start(pcd *d); /* the manager thread */
/* A SandboxPool appeared, changed or went (obj NULL): queued for the manager. Thread: any. */
void pcd_pools_object(pcd *d, const char *ns, const char *name, const json_t *obj);
bool pcd_pools_settled(pcd *d);  /* no object change waiting for the manager */
void pcd_pools_stop(pcd *d);     /* stop the manager (before teardown) */
void pcd_pools_shutdown(pcd *d); /* every live pool: pc_pool_shutdown (drain) */
void pcd_pools_free(pcd *d);     /* informers stopped, pools and envs freed (teardown) */

/* cluster.c: leases, the SandboxPool/SandboxClaim controllers, webhooks */
int pcd_cluster_new(pcd *d);   /* electors, controllers, webhook sender (not started) */
int pcd_cluster_start(pcd *d); /* controllers, then electors */
/* SIGTERM: stop leading and release the Lease(s) at once (the follower takes over). */
void pcd_cluster_step_down(pcd *d);
void pcd_cluster_stop(pcd *d); /* controllers stopped (after the pools shut down) */
void pcd_cluster_free(pcd *d);
/* The Lease of one pool (per-pool leases: made on first use and kept; else the daemon's one;
 * NULL when leader election is off). Manager thread. */
pcd_lease *pcd_cluster_lease_for(pcd *d, const char *ns, const char *name);
/* A pool left for good: stop its own Lease (released), if it has one. Manager thread. */
void pcd_cluster_lease_drop(pcd *d, pcd_lease *l);
/* May this replica dispatch and write for pool p now? Lock-free (a clock read). */
bool pcd_may_write(const pcd_pool *p);
/* The holder this replica last saw of p's Lease (p NULL: the daemon's Lease; "" = unknown),
 * into buf. */
const char *pcd_leader_of(pcd *d, const pcd_pool *p, char *buf, size_t len);
/* "leader", "follower" or "leader of 2/3 pools" for /readyz. */
void pcd_cluster_role(pcd *d, char *buf, size_t len);
bool pcd_cluster_synced(pcd *d);
/* Post a claim outcome to the pool's webhook, if it has one. Thread: any; never blocks. */
void pcd_webhook_outcome(pcd_pool *p, const pc_claim_result *r, const char *claim_id);
/* Cluster metrics (leases, controllers, webhooks) appended to the exposition. */
void pcd_cluster_metrics(pcd *d, char **buf, size_t *len, size_t *cap);

/* metrics.c */
char *pcd_metrics_render(pcd *d, size_t *len);
char *pcd_pools_json(pcd *d, const pcd_pool *only, size_t *len);
char *pcd_envs_json(pcd *d, size_t *len);
bool pcd_ready(pcd *d);

#endif
