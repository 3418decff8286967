/* The fault soak (issue 16): kapi-sim with every fault on at once, two podclaimd replicas with
 * leader election, a leader kill -9 and a kapi-sim restart, a load of claims at a high rate with
 * mixed priorities, deadlines, client hang-ups and releases; then an audit of DESIGN.md §4
 * invariants 1 and 2 from the client's answers and kapi-sim's claim log. docs/RELIABILITY.md,
 * "The fault soak", says what runs and what is checked.
 *
 * Threads: main runs the load (one epoll loop, keep-alive HTTP/1.1 connections to each
 * replica, one request outstanding per connection) and owns the connections and the release
 * queue. The chaos thread owns the processes and the claim log: it reads /sim/claims as the run
 * goes, kills the leader, restarts kapi-sim. The monitor thread samples RSS and open fds.
 * Shared between them: the per-claim records (each field written by one side only: the answer
 * by main, the log counts by chaos; read together only after both stopped), the replica
 * ports/pids (mutex), and a few atomics (progress, stop flags, leader hint).
 */
#include "soak.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- claims ----------------------------------------------------------------------------- */

static soak_opts O;
static soak_rec *recs;          /* [0, O.claims), by claim number */
static _Atomic uint64_t n_sent; /* claims sent (main) */
static _Atomic int leader_hint; /* replica new claims go to (main reads, both write) */
static _Atomic bool load_done;  /* main stopped sending and every answer is in */
static soak_replica R[2];       /* guarded by procs_mu for pid/port changes */
pthread_mutex_t procs_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) /* main thread only */
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static double rnd01(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* ---- connections (main thread) ------------------------------------------------------------ */

typedef enum { C_IDLE, C_CLAIM, C_RELEASE } cstate;

typedef struct conn {
    int fd;
    int replica;
    int gen; /* R[replica].starts when it connected: which process of the replica */
    bool connected;
    cstate st;
    uint64_t claim;  /* the claim being asked or released */
    int64_t hang_at; /* close the connection then if no answer (a client hang-up); 0 = no */
    int64_t give_up; /* no answer by then: silence, recorded as such */
    int64_t sent_at;
    char out[1024];
    size_t out_len, out_off;
    char in[16384];
    size_t in_len;
} conn;

typedef struct rel {
    struct rel *next;
    int64_t due;
    uint64_t claim;
    int replica;
} rel;

static int ep;
static conn *conns;
static int n_conns;
static rel *rel_head, *rel_tail; /* due times increase along the list (one delay range) */
static rel *rel_pending[2];      /* due releases waiting for a free connection, per replica */
static uint64_t rel_sent;

static int replica_port(int r, int *gen)
{
    pthread_mutex_lock(&procs_mu);
    int p = R[r].port;
    *gen = R[r].starts;
    pthread_mutex_unlock(&procs_mu);
    return p;
}

/* A 503 holds new claims to that replica for this long: a client honouring Retry-After (1 s)
 * in spirit, shortened to keep the load high. Without it, a second with no leader (both
 * replicas answer 503 at once) burned thousands of claims in a tight loop. */
#define HOLD_AFTER_503_NS (100 * 1000000LL)
static int64_t hold_until[2];

/* A release that got no definite answer (5xx, 429, a transport error, silence) is sent again,
 * as a client would, up to this many times, REL_RETRY_NS apart: so that a pod left claimed at
 * the end is a defect, not a dropped release. */
#define REL_MAX_TRIES 30
#define REL_RETRY_NS (200 * 1000000LL)
static void queue_release(uint64_t n, int replica, int64_t due);

static void conn_open(conn *c)
{
    c->fd = -1;
    c->connected = false;
    c->st = C_IDLE;
    c->in_len = 0;
    int port = replica_port(c->replica, &c->gen);
    if (port <= 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return;
    }
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void conn_close(conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->connected = false;
    c->st = C_IDLE;
    c->in_len = 0;
}

/* The claim's answer (or its fate) belongs to a replica process that was killed since: it
 * may have won a pod its client never heard of, or one the client cannot release through
 * that process any more. The other replica learns the claim from its informer, with a lag. */
static bool of_a_killed_process(const soak_rec *r)
{
    if (r->flags & SOAK_AT_KILL)
        return true;
    pthread_mutex_lock(&procs_mu);
    const soak_replica *p = &R[r->replica];
    /* the killed generation, not "pid == 0 or restarted": the pid is cleared only after
     * waitpid, which on a loaded machine came ~1 s after the kill; a 404 in that window (the
     * other replica's informer had not yet seen the claim) was taken as final, and the pod
     * stayed held (16 pods in one run at load ~8, 20 in another) */
    bool gone = atomic_load(&p->killed_ns) != 0 &&
                (r->gen == p->killed_gen || r->gen != p->starts || p->pid == 0);
    pthread_mutex_unlock(&procs_mu);
    return gone;
}

/* The request in flight on c ended without an HTTP answer (EOF, reset, refused). */
static void transport_error(conn *c)
{
    if (c->st == C_CLAIM) {
        soak_rec *r = &recs[c->claim];
        if (r->status == 0 && !(r->flags & SOAK_ANSWERED)) {
            r->flags |= SOAK_ANSWERED | SOAK_TRANSPORT;
            r->replica = (uint8_t)c->replica;
            /* the chaos thread killed this replica (the stamp is set before the kill) and the
             * claim was sent before that: it was in flight at the kill */
            int64_t k = atomic_load(&R[c->replica].killed_ns);
            if (k && c->sent_at <= k + 100000000) {
                r->flags |= SOAK_AT_KILL;
                /* it may have won: the client releases it by its claimId on the other
                 * replica, as one retrying through a Service would (404: it won nothing) */
                queue_release(c->claim, 1 - c->replica, soak_now_ns() + SOAK_S);
            }
        }
    } else if (c->st == C_RELEASE) {
        recs[c->claim].rel_status = 1; /* transport error: try the other replica */
        queue_release(c->claim, 1 - c->replica, soak_now_ns() + REL_RETRY_NS);
    }
    conn_close(c);
}

static void conn_send(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN)
                transport_error(c);
            return;
        }
        c->out_off += (size_t)w;
    }
}

static void start_claim(conn *c, uint64_t n, int64_t now)
{
    soak_rec *r = &recs[n];
    static const double timeouts[] = {0.05, 0.5, 2, 2, 10, 10};
    int prio = (int)(rnd() % 6);
    double t = timeouts[rnd() % 6];
    bool image = rnd01() < O.image_share;
    char body[512];
    int bl = snprintf(body, sizeof(body),
                      "{\"claimId\":\"c%" PRIu64 "\",\"priority\":%d,\"timeoutSeconds\":%g,"
                      "\"labels\":{\"soak\":\"p%d\"}%s}",
                      n, prio, t, prio,
                      image ? ",\"images\":{\"sandbox\":\"registry.local/podclaim/sandbox:v2\"}"
                            : "");
    c->out_len = (size_t)snprintf(c->out, sizeof(c->out),
                                  "POST /v1/pools/%s/%s/claims HTTP/1.1\r\nHost: soak\r\n"
                                  "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                                  O.ns, O.pool, bl, body);
    c->out_off = 0;
    c->st = C_CLAIM;
    c->claim = n;
    c->sent_at = now;
    c->give_up = now + (int64_t)(t * 1e9) + O.silence_ns;
    c->hang_at = rnd01() < O.hangup_share ? now + (int64_t)(rnd() % 30000000) : 0;
    r->flags |= SOAK_SENT;
    r->priority = (uint8_t)prio;
    r->replica = (uint8_t)c->replica;
    r->gen = (uint8_t)c->gen;
    conn_send(c);
}

static void start_release(conn *c, uint64_t n, int64_t now)
{
    c->out_len = (size_t)snprintf(c->out, sizeof(c->out),
                                  "DELETE /v1/pools/%s/%s/claims/c%" PRIu64
                                  " HTTP/1.1\r\nHost: soak\r\nContent-Length: 0\r\n\r\n",
                                  O.ns, O.pool, n);
    c->out_off = 0;
    c->st = C_RELEASE;
    c->claim = n;
    c->sent_at = now;
    c->give_up = now + 30 * SOAK_S + O.silence_ns;
    c->hang_at = 0;
    rel_sent++;
    recs[n].rel_tries++;
    recs[n].rel_replica = (uint8_t)c->replica;
    recs[n].rel_gen = (uint8_t)c->gen;
    conn_send(c);
}

/* Leader identity in a 503 body -> replica index (-1 unknown). */
static int replica_of(const char *id)
{
    for (int r = 0; r < 2; r++)
        if (id && strcmp(id, R[r].identity) == 0)
            return r;
    return -1;
}

static void on_answer(conn *c, int status, const char *body, size_t blen, int64_t now)
{
    soak_rec *r = &recs[c->claim];
    if (c->st == C_RELEASE) {
        r->rel_status = (uint16_t)status;
        if (status >= 500 || status == 429)
            queue_release(c->claim, c->replica, now + REL_RETRY_NS);
        /* a replica that did not win the claim knows it once its informer has seen the pod
         * held (a lagging watch, a relist): a 404 for a claim of a killed process may mean
         * "not yet" */
        else if (status == 404 && of_a_killed_process(r))
            queue_release(c->claim, c->replica, now + SOAK_S);
        return;
    }
    if (r->flags & SOAK_ANSWERED) {
        r->flags |= SOAK_TWICE;
        return;
    }
    r->flags |= SOAK_ANSWERED;
    r->status = (uint16_t)status;
    r->replica = (uint8_t)c->replica;
    r->gen = (uint8_t)c->gen;
    if (status == 503)
        hold_until[c->replica] = now + HOLD_AFTER_503_NS;
    json_t *j = json_loadb(body, blen, 0, NULL);
    if (status == 200) {
        const char *pod = json_string_value(json_object_get(j, "pod"));
        const char *ns = json_string_value(json_object_get(j, "namespace"));
        const char *id = json_string_value(json_object_get(j, "claimId"));
        char want[32];
        snprintf(want, sizeof(want), "c%" PRIu64, c->claim);
        if (!pod || !ns || !id || strcmp(id, want) != 0) {
            r->flags |= SOAK_BAD_BODY;
        } else {
            r->ans_pod = soak_pod_hash(ns, pod);
        }
        /* released after a random delay, to the replica that knows the claim */
        queue_release(c->claim, c->replica, now + (int64_t)(rnd01() * (double)O.release_max_ns));
    }
    if (status != 200 && status < 600) {
        /* the first message of each status, and 503s by cause, for the report */
        const char *err = json_string_value(json_object_get(j, "error"));
        if (!soak_first_error[status][0] && err)
            snprintf(soak_first_error[status], sizeof(soak_first_error[status]), "%s", err);
        if (status == 503 && json_object_get(j, "leader"))
            soak_503_not_leader++;
    }
    if (status == 503) {
        int l = replica_of(json_string_value(json_object_get(j, "leader")));
        if (l >= 0)
            atomic_store_explicit(&leader_hint, l, memory_order_relaxed);
        else if (json_object_get(j, "leader"))
            /* a follower that knows no leader yet: try the other replica */
            atomic_store_explicit(&leader_hint, 1 - c->replica, memory_order_relaxed);
    }
    json_decref(j);
}

static void queue_release(uint64_t n, int replica, int64_t due)
{
    if (recs[n].rel_tries >= REL_MAX_TRIES)
        return;
    rel *x = malloc(sizeof(*x));
    x->due = due;
    x->claim = n;
    x->replica = replica;
    x->next = NULL;
    /* keep the list sorted by due (a short insertion walk from the head is rare) */
    if (!rel_tail || rel_tail->due <= x->due) {
        if (rel_tail)
            rel_tail->next = x;
        else
            rel_head = x;
        rel_tail = x;
    } else {
        rel **pp = &rel_head;
        while ((*pp)->due <= x->due)
            pp = &(*pp)->next;
        x->next = *pp;
        *pp = x;
    }
}

/* Parse what is in c->in: returns 1 when an answer was consumed, 0 when more is needed, -1 on
 * a malformed answer. */
static int parse_answer(conn *c, int64_t now)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return c->in_len >= sizeof(c->in) ? -1 : 0;
    size_t hlen = (size_t)(end - c->in) + 4;
    int status = 0;
    if (sscanf(c->in, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t clen = 0;
    bool close_after = false;
    for (char *p = c->in; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        if (strncasecmp(p, "content-length:", 15) == 0)
            clen = strtoul(p + 15, NULL, 10);
        else if (strncasecmp(p, "connection:", 11) == 0 && strstr(p, "close") &&
                 strstr(p, "close") < nl)
            close_after = true;
        p = nl + 1;
    }
    if (hlen + clen > sizeof(c->in))
        return -1;
    if (c->in_len < hlen + clen)
        return 0;
    on_answer(c, status, c->in + hlen, clen, now);
    memmove(c->in, c->in + hlen + clen, c->in_len - hlen - clen);
    c->in_len -= hlen + clen;
    c->st = C_IDLE;
    if (close_after) {
        conn_close(c);
        conn_open(c);
    }
    return 1;
}

static void conn_event(conn *c, uint32_t evs, int64_t now)
{
    if (c->fd < 0)
        return;
    if ((evs & EPOLLOUT) && !c->connected) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            transport_error(c);
            return;
        }
        c->connected = true;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (c->st != C_IDLE && c->out_off < c->out_len)
        conn_send(c);
    if (c->fd < 0)
        return;
    if (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
            if (n > 0) {
                c->in_len += (size_t)n;
                int rc;
                while (c->st != C_IDLE && (rc = parse_answer(c, now)) == 1)
                    ;
                if (c->fd < 0)
                    return;
                if (c->st != C_IDLE && rc < 0) {
                    transport_error(c);
                    return;
                }
                if (c->in_len == sizeof(c->in)) {
                    transport_error(c);
                    return;
                }
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                transport_error(c); /* EOF or reset: the request in flight has no answer */
                return;
            }
            break;
        }
    }
}

/* ---- the load loop (main thread) ---------------------------------------------------------- */

static conn *free_conn(int replica)
{
    /* a linear scan: tens of connections, and a scan is cheaper than keeping free lists right
     * across closes and reopens */
    for (int i = 0; i < n_conns; i++) {
        conn *c = &conns[i];
        if (c->replica != replica)
            continue;
        if (c->fd < 0)
            conn_open(c);
        if (c->fd >= 0 && c->connected && c->st == C_IDLE)
            return c;
    }
    return NULL;
}

static void timers(int64_t now)
{
    for (int i = 0; i < n_conns; i++) {
        conn *c = &conns[i];
        if (c->st == C_CLAIM && c->hang_at && now >= c->hang_at) {
            soak_rec *r = &recs[c->claim];
            if (!(r->flags & SOAK_ANSWERED)) {
                r->flags |= SOAK_HUNG;
                /* the answer may have been written just before the hang-up (a 200 nobody
                 * read): the client releases by its claimId, as one that reconnects would;
                 * 404 when podclaimd cancelled the claim or gave its pod back itself */
                queue_release(c->claim, c->replica, now + SOAK_S);
            }
            conn_close(c); /* the client goes away: podclaimd must cancel (or release) */
            continue;
        }
        if (c->st != C_IDLE && now >= c->give_up) {
            if (c->st == C_CLAIM) {
                soak_rec *r = &recs[c->claim];
                if (!(r->flags & SOAK_ANSWERED))
                    r->flags |= SOAK_SILENT;
            } else {
                recs[c->claim].rel_status = 2; /* silent release */
                queue_release(c->claim, c->replica, now + REL_RETRY_NS);
            }
            conn_close(c);
        }
    }
}

static void releases(int64_t now, bool all)
{
    while (rel_head && (all || rel_head->due <= now)) {
        rel *x = rel_head;
        rel_head = x->next;
        if (!rel_head)
            rel_tail = NULL;
        x->next = rel_pending[x->replica];
        rel_pending[x->replica] = x; /* LIFO: order among due releases does not matter */
    }
    for (int r = 0; r < 2; r++) {
        while (rel_pending[r]) {
            conn *c = free_conn(r);
            if (!c)
                break;
            rel *x = rel_pending[r];
            rel_pending[r] = x->next;
            start_release(c, x->claim, now);
            free(x);
        }
    }
}

static bool busy(void)
{
    for (int i = 0; i < n_conns; i++)
        if (conns[i].st != C_IDLE)
            return true;
    return rel_head || rel_pending[0] || rel_pending[1];
}

static void run_load(void)
{
    ep = epoll_create1(EPOLL_CLOEXEC);
    n_conns = 2 * O.conns;
    conns = calloc((size_t)n_conns, sizeof(conn));
    for (int i = 0; i < n_conns; i++) {
        conns[i].replica = i % 2;
        conn_open(&conns[i]);
    }
    int64_t t0 = soak_now_ns();
    int64_t last_report = t0;
    uint64_t next = 0;
    struct epoll_event evs[128];
    for (;;) {
        int64_t now = soak_now_ns();
        timers(now);
        releases(now, next >= O.claims || (O.duration_ns && now - t0 >= O.duration_ns));
        bool sending = next < O.claims && !(O.duration_ns && now - t0 >= O.duration_ns);
        if (sending) {
            /* rate cap: claim k may go at t0 + k/rate (no backlog: a stalled server is
             * visible in the claims/s and the answers, not in a queue here) */
            uint64_t allowed =
                    O.rate > 0 ? (uint64_t)((double)(now - t0) / 1e9 * O.rate) + 1 : O.claims;
            int target = atomic_load_explicit(&leader_hint, memory_order_relaxed);
            while (next < O.claims && next < allowed && now >= hold_until[target]) {
                conn *c = free_conn(target);
                if (!c)
                    break;
                start_claim(c, next++, now);
                atomic_store_explicit(&n_sent, next, memory_order_relaxed);
            }
        } else if (!busy()) {
            break;
        }
        if (now - last_report >= 5 * SOAK_S) {
            last_report = now;
            soak_logf("progress: %" PRIu64 " claims sent, %.0f/s", next,
                      (double)next / ((double)(now - t0) / 1e9));
        }
        int n = epoll_wait(ep, evs, 128, 2);
        now = soak_now_ns();
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events, now);
    }
    soak_logf("load: %" PRIu64 " claims and %" PRIu64 " releases in %.1f s", next, rel_sent,
              (double)(soak_now_ns() - t0) / 1e9);
    for (int i = 0; i < n_conns; i++)
        conn_close(&conns[i]);
    free(conns);
    close(ep);
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: soak [--claims N] [--duration S] [--rate R] [--conns C] [--pods N]\n"
            "            [--kill-at F] [--restart-every N] [--out DIR] [--kapi-sim PATH]\n"
            "            [--podclaimd PATH] [--no-faults] [--hangups F] [--images F] [--strict]\n"
            "            [--no-rss-check]\n"
            "Runs kapi-sim (every fault on) and two podclaimd replicas, fires N claims (or for S\n"
            "seconds, N at most), kills the leader (kill -9) at F of the claims (of S), restarts\n"
            "kapi-sim every N claims, audits. Defaults: 100000 claims, 32 connections per\n"
            "replica, 1000 pods, the kill at 0.2, no restart, 3%% hang-ups, 20%% new images.\n"
            "Exit 0 when every audit passed (docs/RELIABILITY.md, \"The fault soak\").\n");
}

int main(int argc, char **argv)
{
    soak_opts_defaults(&O);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--claims"))
            O.claims = strtoull(v, NULL, 10);
        else if (ARG("--duration"))
            O.duration_ns = (int64_t)(atof(v) * 1e9);
        else if (ARG("--rate"))
            O.rate = atof(v);
        else if (ARG("--conns"))
            O.conns = atoi(v);
        else if (ARG("--pods"))
            O.pods = atoi(v);
        else if (ARG("--kill-at"))
            O.kill_at = atof(v);
        else if (ARG("--restart-every"))
            O.restart_every = strtoull(v, NULL, 10);
        else if (ARG("--out"))
            O.out = v;
        else if (ARG("--kapi-sim"))
            O.kapi_sim = v;
        else if (ARG("--podclaimd"))
            O.podclaimd = v;
        else if (ARG("--hangups"))
            O.hangup_share = atof(v);
        else if (ARG("--images"))
            O.image_share = atof(v);
        else if (strcmp(a, "--no-rss-check") == 0)
            O.no_rss_check = true;
        else if (strcmp(a, "--strict") == 0)
            O.strict = true;
        else if (strcmp(a, "--no-faults") == 0)
            O.faults = false;
        else {
            usage();
            return 2;
        }
#undef ARG
    }
    if (O.claims == 0 || O.conns <= 0 || O.pods <= 0) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    recs = calloc(O.claims, sizeof(soak_rec));
    if (!recs) {
        fprintf(stderr, "soak: no memory for %" PRIu64 " claim records\n", O.claims);
        return 1;
    }
    soak_ctx ctx = {.o = &O,
                    .recs = recs,
                    .replicas = R,
                    .n_sent = &n_sent,
                    .leader_hint = &leader_hint,
                    .load_done = &load_done};
    if (soak_setup(&ctx) != 0) {
        soak_teardown(&ctx);
        return 1;
    }
    soak_chaos_start(&ctx);
    run_load();
    atomic_store(&load_done, true);
    int rc = soak_finish(&ctx);
    soak_teardown(&ctx);
    free(recs);
    return rc;
}
