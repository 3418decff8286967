/* podclaimd claims: validate a claim request, enqueue it, park its connection, answer it;
 * release a won claim; the waker and releaser threads.
 *
 * Flow: MHD thread: parse + validate -> watch the socket -> suspend -> pc_pool_enqueue
 *       pool thread: callback -> result copied, DONE set -> pushed on d->done -> eventfd
 *       waker thread: unwatch the socket -> (client gone and the claim won: release it)
 *                     -> MHD_resume_connection -> MHD thread: answer from the result.
 *
 * Ownership: a pcd_req belongs to its connection (freed when MHD completes the request). While
 * suspended, MHD cannot complete it, so the request lives at least until the waker resumes it.
 * The waker is the only thread that removes a socket from its epoll set and the only one that
 * resumes, in that order, so every event epoll_wait hands it names a request still suspended
 * (alive). A client hang-up (EPOLLRDHUP) sets HUNG and cancels the claim; a claim that still
 * won (its CAS was already sent) is released by a releaser, so the pod goes back to the pool.
 *
 * flags: the callback sets DONE with release order after writing the result; the waker reads
 * flags with acquire before reading the result. The MHD thread sets ENQUEUED (acq_rel) after
 * pc_pool_enqueue returned, and the waker cancels only a claim it saw ENQUEUED: the socket is
 * watched before the enqueue (the callback may run at once), so a hang-up can be seen first.
 */
#include "log.h"
#include "lost.h"
#include "podclaimd.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

void pcd_req_free(pcd_req *q)
{
    free(q->body);
    json_decref(q->doc);
    free(q->kvs);
    free(q);
}

/* ---- validation ------------------------------------------------------------------------------ */

static bool name_part(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
            return false;
    return true;
}

/* A qualified name (label or annotation key): [prefix/]name; prefix a DNS subdomain. */
static bool qualified_name(const char *k)
{
    const char *slash = strchr(k, '/');
    if (!slash)
        return name_part(k, strlen(k));
    size_t pn = (size_t)(slash - k);
    if (pn == 0 || pn > 253)
        return false;
    for (size_t i = 0; i < pn; i++)
        if (!(islower((unsigned char)k[i]) || isdigit((unsigned char)k[i]) || k[i] == '-' ||
              k[i] == '.'))
            return false;
    return name_part(slash + 1, strlen(slash + 1));
}

static bool label_value(const char *v)
{
    return v[0] == '\0' || name_part(v, strlen(v));
}

static bool reserved_key(const char *k)
{
    return strcmp(k, "podclaim.io/phase") == 0 || strcmp(k, "podclaim.io/pool") == 0 ||
           strcmp(k, "podclaim.io/claim-id") == 0 || strcmp(k, "podclaim.io/claimed-at") == 0;
}

void pcd_utf8_repair(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80             ? 1
                   : (*p & 0xe0) == 0xc0 ? 2
                   : (*p & 0xf0) == 0xe0 ? 3
                   : (*p & 0xf8) == 0xf0 ? 4
                                         : 0;
        bool ok = n > 0;
        for (size_t i = 1; ok && i < n; i++)
            ok = (p[i] & 0xc0) == 0x80;
        if (ok && n > 1) { /* overlong forms, surrogates, beyond U+10FFFF: jansson refuses them */
            uint32_t c = n == 2   ? (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f)
                         : n == 3 ? (uint32_t)(p[0] & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 |
                                            (p[2] & 0x3f)
                                  : (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3f) << 12 |
                                            (uint32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
            ok = c >= (n == 2   ? 0x80u
                       : n == 3 ? 0x800u
                                : 0x10000u) &&
                 c <= 0x10ffff && (c < 0xd800 || c > 0xdfff);
        }
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

typedef struct verr {
    int code; /* 400 / 422 / 404 */
    char msg[512];
} verr;

static int bad(verr *e, int code, const char *fmt, const char *a, const char *b)
{
    e->code = code;
    snprintf(e->msg, sizeof(e->msg), fmt, a, b);
    return -1;
}

/* An object of strings into kvs[*n..]. kind: 0 images, 1 labels, 2 annotations. */
static int take_map(verr *e, json_t *o, const char *field, int kind, const pcd_pool *pool,
                    pc_kv *kvs, size_t *n)
{
    if (!json_is_object(o))
        return bad(e, 422, "%s: want an object of strings%s", field, "");
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        char f[320];
        snprintf(f, sizeof(f), "%s.%s", field, k);
        if (!json_is_string(v))
            return bad(e, 422, "%s: want a string%s", f, "");
        const char *s = json_string_value(v);
        if (kind == 0) {
            /* a container name is a DNS label; "" reached the CAS backend, which refused it
             * (REJECTED after the claim had waited; found by fuzz_daemon_claim) */
            if (!pcd_dns_label(k))
                return bad(e, 422, "%s: want a container name (a DNS label)%s", f, "");
            bool known = pool == NULL || pool->containers == NULL;
            for (size_t i = 0; pool && i < pool->n_containers && !known; i++)
                known = strcmp(pool->containers[i], k) == 0;
            if (!known)
                return bad(e, 422, "%s: unknown container \"%s\" in this pool", f, k);
            if (!s[0] || strpbrk(s, " \t\r\n"))
                return bad(e, 422, "%s: want an image reference, got \"%s\"", f, s);
        } else {
            if (!qualified_name(k))
                return bad(e, 422,
                           "%s: invalid key (want [prefix/]name, name 1-63 of A-Z a-z 0-9 "
                           "- _ ., alphanumeric at both ends)%s",
                           f, "");
            if (reserved_key(k))
                return bad(e, 422, "%s: podclaimd writes this key itself%s", f, "");
            if (kind == 1 && !label_value(s))
                return bad(e, 422,
                           "%s: invalid label value \"%s\" (at most 63 of A-Z a-z 0-9 - _ "
                           "., alphanumeric at both ends)",
                           f, s);
        }
        kvs[*n] = (pc_kv){k, s};
        (*n)++;
    }
    return 0;
}

static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= PC_CLAIM_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
            return false;
    return true;
}

/* Parse and check the body into q->claim; pool may be NULL (env claims: checked per pool by
 * the server). Returns 0, or -1 with e filled. */
static int parse_claim(pcd_req *q, const pcd_pool *pool, bool env, verr *e, json_t **tags)
{
    json_error_t je;
    if (q->body_len == 0) {
        q->doc = json_object();
    } else {
        q->doc = json_loadb(q->body, q->body_len, JSON_REJECT_DUPLICATES, &je);
        if (!q->doc) {
            e->code = 400;
            snprintf(e->msg, sizeof(e->msg), "malformed JSON at line %d, column %d (byte %d): %s",
                     je.line, je.column, je.position, je.text);
            return -1;
        }
    }
    if (!json_is_object(q->doc))
        return bad(e, 422, "body: want a JSON object%s%s", "", "");
    size_t nkv = 0;
    const char *k;
    json_t *v;
    json_object_foreach(q->doc, k, v)
    {
        if (json_is_object(v))
            nkv += json_object_size(v);
        static const char *known[] = {"priority",    "images",         "labels",  "annotations",
                                      "targetPhase", "timeoutSeconds", "claimId", "requiredTags"};
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
            ok = strcmp(k, known[i]) == 0 && (i < 7 || env);
        if (!ok)
            return bad(e, 422, "%s: unknown field%s", k, "");
    }
    q->kvs = calloc(nkv ? nkv : 1, sizeof(pc_kv));
    if (!q->kvs)
        return bad(e, 500, "out of memory%s%s", "", "");
    int priority = 3;
    json_t *j = json_object_get(q->doc, "priority");
    if (j) {
        if (!json_is_integer(j) || json_integer_value(j) < PC_PRIORITY_HIGHEST ||
            json_integer_value(j) > PC_PRIORITY_LOWEST)
            return bad(e, 422, "priority: want an integer 0 (highest) .. 5 (lowest)%s%s", "", "");
        priority = (int)json_integer_value(j);
    }
    pc_claim_init(&q->claim, priority, NULL, q);
    pc_claim_opts *o = &q->claim.opts;
    size_t n = 0;
    if ((j = json_object_get(q->doc, "images"))) {
        o->images = q->kvs + n;
        size_t before = n;
        if (take_map(e, j, "images", 0, pool, q->kvs, &n) != 0)
            return -1;
        o->n_images = n - before;
    }
    if ((j = json_object_get(q->doc, "labels"))) {
        o->labels = q->kvs + n;
        size_t before = n;
        if (take_map(e, j, "labels", 1, pool, q->kvs, &n) != 0)
            return -1;
        o->n_labels = n - before;
    }
    if ((j = json_object_get(q->doc, "annotations"))) {
        o->annotations = q->kvs + n;
        size_t before = n;
        if (take_map(e, j, "annotations", 2, pool, q->kvs, &n) != 0)
            return -1;
        o->n_annotations = n - before;
    }
    if ((j = json_object_get(q->doc, "targetPhase"))) {
        const char *s = json_string_value(j);
        if (!s || !name_part(s, strlen(s)) || strcmp(s, "Idle") == 0 || strcmp(s, "Starting") == 0)
            return bad(e, 422,
                       "targetPhase: want a label value other than Idle and Starting (e.g. "
                       "Running)%s%s",
                       "", "");
        o->target_phase = s;
    }
    int64_t timeout_ns = pool ? pool->cfg.claim_timeout_ns : 30 * (int64_t)1000000000;
    if ((j = json_object_get(q->doc, "timeoutSeconds"))) {
        double t = json_is_number(j) ? json_number_value(j) : -1;
        if (!json_is_number(j) || !(t > 0) || t > 86400)
            return bad(e, 422, "timeoutSeconds: want a number of seconds in (0, 86400]%s%s", "",
                       "");
        timeout_ns = (int64_t)(t * 1e9);
    }
    q->claim.deadline_ns = pc_now_ns() + timeout_ns;
    if ((j = json_object_get(q->doc, "claimId"))) {
        const char *s = json_string_value(j);
        if (!s || !id_ok(s))
            return bad(e, 422, "claimId: want 1-63 characters of A-Z a-z 0-9 - _ .%s%s", "", "");
        snprintf(q->id, sizeof(q->id), "%s", s);
        q->claim.id = q->id;
    }
    if ((j = json_object_get(q->doc, "requiredTags"))) {
        if (!json_is_array(j))
            return bad(e, 422, "requiredTags: want a list of strings%s%s", "", "");
        size_t i;
        json_t *t;
        json_array_foreach(j, i, t)
        {
            if (!json_is_string(t))
                return bad(e, 422, "requiredTags: want a list of strings%s%s", "", "");
        }
        *tags = j;
    }
    return 0;
}

int pcd_claim_parse(pcd_req *q, const pcd_pool *pool, bool env, int *code, char *msg,
                    size_t msg_len, json_t **tags)
{
    verr e = {0};
    if (parse_claim(q, pool, env, &e, tags) == 0)
        return 0;
    *code = e.code;
    snprintf(msg, msg_len, "%s", e.msg);
    pcd_utf8_repair(msg); /* as pcd_reply_error does before the message goes into JSON */
    return -1;
}

/* ---- claims ------------------------------------------------------------------------------------ */

static void push_done(pcd *d, pcd_req *q)
{
    ck_stack_push_mpmc(&d->done, &q->done_entry);
    uint64_t one = 1;
    /* the eventfd counter saturates far beyond any backlog; a failed write means the waker
     * will be woken by the previous one anyway */
    if (write(d->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        pcd_logf(PCD_ERROR, "msg=\"eventfd write: %s\"", strerror(errno));
}

/* ---- late wins ---------------------------------------------------------------------------- */
/* A claim answered without a pod (deadline, error, cancel) after at least one CAS was sent may
 * still have won: a PATCH that timed out at the claim's deadline can be applied afterwards
 * (found by the fault soak: 0-2 pods in 15,000 claims left claimed by nobody). Such claims are
 * remembered (lost.h: for PCD_LOST_TTL_NS, up to PCD_LOST_MAX of them); when the informer
 * shows a pod newly claimed with one of their ids, the pod is registered under that id and
 * given back by a releaser, as for a client that hung up (podclaimd_late_win_releases_total),
 * and a DELETE of the id says it is released. */

static bool queue_release(pcd *d, pcd_release_job *job, bool unless_stopping);

static void lost_add(pcd *d, const pcd_pool *pool, const char *id)
{
    if (!pcd_lost_add(d->lost, pool, id, pc_now_ns())) {
        /* only a burst of more than PCD_LOST_MAX failed claims within the TTL gets here */
        uint64_t n = pcd_lost_forgotten(d->lost);
        if (n == 1 || n % 10000 == 0)
            pcd_logf(PCD_WARN,
                     "pool=%s claim=%s forgotten=%llu msg=\"too many claims ended without a pod "
                     "at once: the oldest is forgotten; a late win of it will not be given "
                     "back\"",
                     pool->key, id, (unsigned long long)n);
    }
}

void pcd_pod_claimed(pcd *d, const pcd_pool *pool, const pc_pod_ref *pod, const char *claim_id)
{
    pcd_claim_info ci = {.state = PCD_ACTIVE};
    snprintf(ci.pod_namespace, sizeof(ci.pod_namespace), "%s", pod->namespace_);
    snprintf(ci.pod, sizeof(ci.pod), "%s", pod->name);
    snprintf(ci.rv, sizeof(ci.rv), "%s", pod->resource_version ? pod->resource_version : "");
    snprintf(ci.id, sizeof(ci.id), "%s", claim_id);
    if (!pcd_lost_take(d->lost, pool, claim_id, pc_now_ns())) {
        /* Won through another process (the other replica, or this one before a restart), or
         * our own win whose callback has not run yet (then the registry knows it, or its
         * callback's copy replaces this one). Known here, the claim can be released through
         * this replica: its caller may never learn of the process that won it. */
        if (pcd_registry_adopt(d->registry, pool->key, &ci))
            atomic_fetch_add_explicit(&d->claims_adopted, 1, memory_order_relaxed);
        return;
    }
    pcd_registry_add(d->registry, pool->key, &ci);
    pcd_release_job *job = calloc(1, sizeof(*job));
    if (job && pcd_registry_get(d->registry, pool->key, claim_id, &job->ci, true, NULL)) {
        snprintf(job->pool_key, sizeof(job->pool_key), "%s", pool->key);
        /* the informers outlive the releasers at shutdown: a job queued after they stopped
         * would never run (and leak) */
        bool stopping = !queue_release(d, job, true);
        if (!stopping)
            atomic_fetch_add_explicit(&d->late_win_releases, 1, memory_order_relaxed);
        pcd_logf(PCD_WARN,
                 "pool=%s claim=%s pod=%s/%s msg=\"won after the claim had ended (its PATCH "
                 "applied late): %s\"",
                 pool->key, claim_id, pod->namespace_, pod->name,
                 stopping ? "shutting down, not given back" : "giving the pod back");
        if (stopping)
            free(job);
    } else {
        free(job);
    }
}

/* Before a claim with the client's id enters `pool`: an earlier claim with that id that ended
 * without a pod is forgotten. Its pod is no more a late win to give back: this claim's own win,
 * shown by the informer, would be taken for one (the client's new pod given back), and a late
 * PATCH of the earlier claim is recognised by the pool as this claim's win. Before the
 * enqueue: this claim's own end, which may come at once, must not be forgotten. */
static void forget_ended(pcd *d, const pcd_pool *pool, const pcd_req *q)
{
    if (q->claim.id)
        pcd_lost_take(d->lost, pool, q->claim.id, pc_now_ns());
}

/* Pool callback (a pool thread): short, non-blocking. */
static void on_claim_done(pc_claim *c, const pc_claim_result *r, void *arg)
{
    pcd_req *q = arg;
    (void)c;
    q->result = *r;
    if (r->status != PC_CLAIM_OK && r->attempts > 0 && r->claim_id[0])
        lost_add(q->d, q->pool, r->claim_id);
    if (r->status == PC_CLAIM_OK) {
        pcd_claim_info ci = {.state = PCD_ACTIVE};
        snprintf(ci.pod_namespace, sizeof(ci.pod_namespace), "%s", r->pod_namespace);
        snprintf(ci.pod, sizeof(ci.pod), "%s", r->pod_name);
        snprintf(ci.rv, sizeof(ci.rv), "%s", r->resource_version);
        snprintf(ci.id, sizeof(ci.id), "%s", r->claim_id);
        pcd_registry_add(q->d->registry, q->pool->key, &ci);
    }
    pcd_webhook_outcome(q->pool, r, q->id);
    /* release: the result above is complete before the waker, after its acquire, reads it */
    atomic_fetch_or_explicit(&q->flags, PCD_REQ_DONE, memory_order_release);
    push_done(q->d, q);
}

enum MHD_Result pcd_claim_begin(pcd_req *q, const char *ns, const char *pool_name,
                                const char *env_name)
{
    pcd *d = q->d;
    pcd_pool *pool = NULL;
    pcd_env *env = NULL;
    /* a replica still loading its SandboxPools cannot tell "no such pool" yet: 503 + Retry-After
     * (a restarted replica answered 404 to a pool that existed; found by the fault soak) */
    bool loaded = pcd_cluster_synced(d) && pcd_pools_settled(d);
    if (env_name) {
        if (!(env = pcd_find_env(d, env_name)))
            return loaded ? pcd_reply_error(q, 404, "env %s is not served here", env_name)
                          : pcd_reply_error(q, 503,
                                            "env %s is not known yet: podclaimd is "
                                            "still loading its pools",
                                            env_name);
    } else if (!(pool = pcd_find_pool(d, ns, pool_name))) {
        return loaded ? pcd_reply_error(q, 404, "pool %s/%s is not served here", ns, pool_name)
                      : pcd_reply_error(q, 503,
                                        "pool %s/%s is not known yet: podclaimd is "
                                        "still loading its pools",
                                        ns, pool_name);
    }
    if (atomic_load_explicit(&d->draining, memory_order_relaxed))
        return pcd_reply_error(q, 503, "podclaimd is shutting down");
    /* a follower keeps its informers warm but serves nothing: the client retries, on the
     * leader (named in the answer) or through a Service that reaches both (docs/cluster.md) */
    if (pool && !pcd_may_write(pool))
        return pcd_reply_not_leader(q, pool);
    if (pool && pool->cfg.max_waiting &&
        pc_pool_snapshot(pool->pool).queue_len >= pool->cfg.max_waiting)
        return pcd_reply_error(q, 503, "pool %s has %llu claims queued (maxWaiting); retry later",
                               pool->key, (unsigned long long)pool->cfg.max_waiting);
    verr e = {0};
    json_t *tags = NULL;
    if (parse_claim(q, pool, env != NULL, &e, &tags) != 0)
        return pcd_reply_error(q, e.code, "%s", e.msg);
    if (pool && q->id[0]) {
        pcd_claim_info ci;
        if (pcd_registry_get(d->registry, pool->key, q->id, &ci, false, NULL) &&
            ci.state != PCD_RELEASED)
            return pcd_reply_error(q, 409, "claimId %s holds pod %s/%s; release it first", q->id,
                                   ci.pod_namespace, ci.pod);
    }
    q->claim.cb = on_claim_done;
    q->claim.cb_arg = q;
    q->pool = pool;
    q->env = env;

    /* Watch the socket for a hang-up, then suspend, then enqueue: the callback may run at once
     * on another thread, and the waker must find the connection suspended and watched. */
    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    q->fd = ci ? ci->connect_fd : -1;
    if (q->fd >= 0) {
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.ptr = q};
        if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, q->fd, &ev) != 0)
            q->fd = -1; /* not watched: a hang-up then ends in a released pod or a deadline */
    }
    q->suspended = true;
    MHD_suspend_connection(q->conn);
    atomic_fetch_add_explicit(&d->waiting, 1, memory_order_relaxed);
    /* on the waiting list before the enqueue: the callback (and so finish_one, which unlinks)
     * may run at once */
    pthread_mutex_lock(&d->wait_mu);
    q->wnext = d->waiting_list;
    if (q->wnext)
        q->wnext->wprev = q;
    d->waiting_list = q;
    q->wlinked = true;
    pthread_mutex_unlock(&d->wait_mu);
    int err;
    if (env) {
        const char *req[64];
        size_t nreq = 0, i;
        json_t *t;
        json_array_foreach(tags, i, t)
        {
            if (nreq < 64)
                req[nreq++] = json_string_value(t);
        }
        /* pc_env_rank, then enqueue here rather than pc_env_enqueue: q->pool must name the
         * pool before the claim enters it, because its callback may run at once */
        pc_pool *order[PC_ENV_MAX_POOLS];
        /* acquire: a member list built by the pool manager (pools.c) */
        pc_env *members = atomic_load_explicit(&env->env, memory_order_acquire);
        size_t nr = members ? pc_env_rank(members, req, nreq, order, PC_ENV_MAX_POOLS) : 0;
        err = nr ? -ESHUTDOWN : -ENOENT;
        bool full = false, led = false;
        pcd_table *live = pcd_pools_now(d);
        for (size_t r = 0; r < nr && r < PC_ENV_MAX_POOLS; r++) {
            q->pool = NULL;
            for (size_t k = 0; k < live->n && !q->pool; k++)
                if (((pcd_pool *)live->item[k])->pool == order[r])
                    q->pool = live->item[k];
            if (!q->pool || !pcd_may_write(q->pool))
                continue; /* retired meanwhile, or led by another replica */
            led = true;
            forget_ended(d, q->pool, q);
            err = pc_pool_enqueue(order[r], &q->claim);
            if (err == 0) {
                atomic_fetch_add_explicit(&q->pool->env_routed, 1, memory_order_relaxed);
                break;
            }
            full |= err == -EAGAIN;
            if (err == -EINVAL)
                break;
        }
        if (err == -ESHUTDOWN && full)
            err = -EAGAIN;
        if (nr && !led)
            err = -EPERM; /* a follower for every fitting pool */
        if (err == -ENOENT)
            atomic_fetch_add_explicit(&env->no_pool, 1, memory_order_relaxed);
    } else {
        forget_ended(d, pool, q);
        err = pc_pool_enqueue(pool->pool, &q->claim);
    }
    if (err) {
        q->enqueue_err = err;
        atomic_fetch_or_explicit(&q->flags, PCD_REQ_DONE, memory_order_release);
        push_done(d, q);
    } else {
        /* acq_rel: releases enqueue's writes into the claim to the waker, which calls
         * pc_claim_cancel only after it saw ENQUEUED; if the client hung up before this
         * point, the waker left the cancel to us. Whoever comes second cancels, once. */
        unsigned old = atomic_fetch_or_explicit(&q->flags, PCD_REQ_ENQUEUED, memory_order_acq_rel);
        if ((old & PCD_REQ_HUNG) && !(old & PCD_REQ_DONE))
            pc_claim_cancel(&q->claim);
    }
    return MHD_YES;
}

static char *ok_body(const pcd_req *q, int64_t latency_ns)
{
    const pc_claim_result *r = &q->result;
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:i}", "claimId", r->claim_id, "namespace",
                          r->pod_namespace, "pod", r->pod_name, "pool", q->pool->cfg.name,
                          "resourceVersion", r->resource_version, "latencyMs",
                          (double)latency_ns / 1e6, "attempts", (int)r->attempts);
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    return s;
}

enum MHD_Result pcd_claim_answer(pcd_req *q)
{
    if (q->enqueue_err) {
        switch (q->enqueue_err) {
        case -EAGAIN:
            return pcd_reply_error(q, 503, "the pool's inbox is full; retry later");
        case -ESHUTDOWN:
            return pcd_reply_error(q, 503, "podclaimd is shutting down");
        case -ENOENT:
            return pcd_reply_error(q, 404, "no pool of env %s has every required tag",
                                   q->env->cfg.name);
        case -EPERM:
            return pcd_reply_not_leader(q, q->pool);
        default:
            return pcd_reply_error(q, 422, "claim refused by the pool: %s",
                                   pc_strerror(q->enqueue_err));
        }
    }
    int64_t now = pc_now_ns();
    if (q->pool)
        pcd_hist_observe(&q->pool->request_latency, now - q->started_ns);
    const pc_claim_result *r = &q->result;
    unsigned f = atomic_load_explicit(&q->flags, memory_order_acquire);
    if (r->status != PC_CLAIM_OK && q->pool && ((f & PCD_REQ_DEPOSED) || !pcd_may_write(q->pool)))
        return pcd_reply_not_leader(q, q->pool); /* stopped leading while the claim waited */
    switch (r->status) {
    case PC_CLAIM_OK: {
        char *body = ok_body(q, now - q->started_ns);
        return body ? pcd_reply(q, 200, body, -1) : MHD_NO;
    }
    case PC_CLAIM_DEADLINE:
        return pcd_reply_error(q, 504, "no pod was won before the deadline (%s)", r->error);
    case PC_CLAIM_SHUTDOWN:
        return pcd_reply_error(q, 503, "podclaimd is shutting down (%s)", r->error);
    case PC_CLAIM_REJECTED:
        return pcd_reply_error(q, 422, "the API server refused the claim: %s", r->error);
    case PC_CLAIM_CANCELLED:
        return pcd_reply_error(q, 499, "cancelled: the client closed the connection");
    default:
        return pcd_reply_error(q, 502, "claim failed: %s", r->error);
    }
}

/* ---- release -------------------------------------------------------------------------------------- */

/* Hand a release to the releasers. unless_stopping: refuse it (false) once they were told to
 * stop, for a caller that may outlive them (the informers). */
static bool queue_release(pcd *d, pcd_release_job *job, bool unless_stopping)
{
    pthread_mutex_lock(&d->rel_mu);
    bool take = !(unless_stopping && d->rel_stop);
    if (take) {
        if (d->rel_tail)
            d->rel_tail->next = job;
        else
            d->rel_head = job;
        d->rel_tail = job;
        pthread_cond_signal(&d->rel_cv);
    }
    pthread_mutex_unlock(&d->rel_mu);
    return take;
}

enum MHD_Result pcd_release_begin(pcd_req *q, const char *ns, const char *pool_name, const char *id)
{
    pcd *d = q->d;
    pcd_pool *pool = pcd_find_pool(d, ns, pool_name);
    if (!pool)
        return pcd_reply_error(q, 404, "pool %s/%s is not served here", ns, pool_name);
    bool took = false;
    if (!pcd_registry_get(d->registry, pool->key, id, &q->rel, true, &took)) {
        /* logged: a claim won through another process is known here only once this
         * replica's informer has seen its pod held, so a 404 may mean "not yet" */
        pcd_logf(PCD_INFO, "pool=%s claim=%s msg=\"release of an unknown claim: 404\"", pool->key,
                 id);
        return pcd_reply_error(q, 404, "claim %s of pool %s is unknown here", id, pool->key);
    }
    pcd_release_job *job = calloc(1, sizeof(*job));
    if (!job)
        return MHD_NO;
    job->req = q;
    job->ci = q->rel;
    snprintf(job->pool_key, sizeof(job->pool_key), "%s", pool->key);
    q->pool = pool;
    q->suspended = true;
    MHD_suspend_connection(q->conn);
    queue_release(d, job, false);
    return MHD_YES;
}

enum MHD_Result pcd_release_answer(pcd_req *q)
{
    if (q->rel_status != 200)
        return pcd_reply_error(q, q->rel_status, "%s", q->rel_msg);
    json_t *j =
            json_pack("{s:s,s:s,s:s,s:b}", "claimId", q->rel.id, "namespace", q->rel.pod_namespace,
                      "pod", q->rel.pod, "alreadyReleased", q->rel_already);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s ? pcd_reply(q, 200, s, -1) : MHD_NO;
}

/* phase -> Stopping, in one JSON patch whose first operation tests that the pod still carries
 * this claim's id. The server applies a JSON patch atomically to the pod as it is now, so the
 * test is the guard: a kubelet status write since the claim (a container restarted for the
 * claim's image) does not make the release conflict, as a resourceVersion precondition would
 * (that cost a 409, a GET and a second PATCH on almost every release once kapi-sim played the
 * kubelet); a pod recycled meanwhile (annotation gone) or claimed again (another id) fails the
 * test: 422, the claim was already over. 409 only from injected faults: tried again.
 * Returns the HTTP status to answer; *already for "was over"; 429 with *retry_after_ns when
 * the server throttles (not answered: the job is tried again later). */
static int release_pod(pc_kube_conn *conn, pcd_release_job *job, bool *already,
                       int64_t *retry_after_ns, char *msg, size_t msglen)
{
    char path[512], body[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", job->ci.pod_namespace,
             job->ci.pod);
    /* claim ids are [A-Za-z0-9._-] (checked at the claim): no JSON escaping needed */
    snprintf(body, sizeof(body),
             "[{\"op\":\"test\",\"path\":\"/metadata/annotations/podclaim.io~1claim-id\","
             "\"value\":\"%s\"},{\"op\":\"add\",\"path\":\"/metadata/labels/"
             "podclaim.io~1phase\",\"value\":\"Stopping\"}]",
             job->ci.id);
    *already = false;
    *retry_after_ns = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        pc_kube_response r;
        /* once: a 429 comes back here rather than sleeping this thread, which every other
         * release queued behind it would wait for (the caller puts the job aside) */
        int rc = pc_kube_conn_request_once(conn, "PATCH", path, "application/json-patch+json", body,
                                           strlen(body), &r);
        long st = r.status;
        if (rc != 0 || st == 0) {
            snprintf(msg, msglen, "PATCH %s: %s", path, rc ? pc_strerror(rc) : r.error);
            pc_kube_response_fini(&r);
            return 502;
        }
        int64_t wait = st == 429 ? pc_kube_retry_wait_ns(&r) : 0;
        pc_kube_response_fini(&r);
        if (st >= 200 && st < 300)
            return 200;
        if (st == 404 || st == 422) {
            *already = true; /* gone, or no longer this claim's pod */
            return 200;
        }
        if (st == 429) {
            snprintf(msg, msglen, "PATCH %s: HTTP 429 (the API server is throttling)", path);
            *retry_after_ns = wait;
            return 429;
        }
        if (st != 409) {
            snprintf(msg, msglen, "PATCH %s: HTTP %ld", path, st);
            return 502;
        }
    }
    snprintf(msg, msglen, "PATCH %s: still conflicting after 4 attempts", path);
    return 502;
}

/* A 429 puts a release aside for the wait it asks for (pc_kube_retry_wait_ns), this many
 * times; after that the client hears 503 and may DELETE again. */
#define REL_MAX_THROTTLED 5

/* A release no client waits for (a hung-up client's pod, a late win) has nobody to try it
 * again: a failure would leave the pod claimed by nobody for good (the million-claim soak's
 * one leak: an injected 500 on such a release). It is put aside and tried again until the
 * server answers, 1 s after its first failure, doubling up to a minute; a 429 waits its
 * Retry-After, without the limit above. Only podclaimd's stop ends the tries. */
#define REL_RETRY_FIRST_NS 1000000000LL
#define REL_RETRY_MAX_NS (60 * 1000000000LL)

static int64_t release_retry_ns(unsigned failures)
{
    int64_t wait = REL_RETRY_FIRST_NS;
    for (unsigned i = 1; i < failures && wait < REL_RETRY_MAX_NS; i++)
        wait *= 2;
    return wait < REL_RETRY_MAX_NS ? wait : REL_RETRY_MAX_NS;
}

/* Under rel_mu: the next job to run, or NULL with *wait_until set to when a put-aside one is
 * due (0: none). Put-aside jobs due now go first (they waited); at stop they all are due, so
 * the releasers drain everything. */
static pcd_release_job *next_job(pcd *d, int64_t *wait_until)
{
    *wait_until = 0;
    pcd_release_job *job = d->rel_later;
    if (job && (d->rel_stop || job->not_before_ns <= pc_now_ns())) {
        d->rel_later = job->next;
        return job;
    }
    if ((job = d->rel_head)) {
        d->rel_head = job->next;
        if (!d->rel_head)
            d->rel_tail = NULL;
        return job;
    }
    if (d->rel_later)
        *wait_until = d->rel_later->not_before_ns;
    return NULL;
}

/* Put a throttled job aside until job->not_before_ns (sorted insert: few jobs are aside). */
static void put_aside(pcd *d, pcd_release_job *job)
{
    pthread_mutex_lock(&d->rel_mu);
    pcd_release_job **pp = &d->rel_later;
    while (*pp && (*pp)->not_before_ns <= job->not_before_ns)
        pp = &(*pp)->next;
    job->next = *pp;
    *pp = job;
    pthread_cond_signal(&d->rel_cv); /* an idle releaser sleeps until the soonest one */
    pthread_mutex_unlock(&d->rel_mu);
}

static void *releaser_main(void *arg)
{
    pcd *d = arg;
    pc_kube_conn *conn = NULL;
    if (pc_kube_conn_new(d->client, &conn) != 0)
        pcd_logf(PCD_ERROR, "component=releaser msg=\"cannot create a connection\"");
    for (;;) {
        pthread_mutex_lock(&d->rel_mu);
        pcd_release_job *job;
        int64_t wait_until;
        while (!(job = next_job(d, &wait_until)) && !d->rel_stop) {
            if (wait_until) {
                struct timespec ts = {.tv_sec = wait_until / 1000000000LL,
                                      .tv_nsec = wait_until % 1000000000LL};
                pthread_cond_timedwait(&d->rel_cv, &d->rel_mu, &ts); /* rel_cv is monotonic */
            } else {
                pthread_cond_wait(&d->rel_cv, &d->rel_mu);
            }
        }
        bool stopping = d->rel_stop;
        pthread_mutex_unlock(&d->rel_mu);
        if (!job)
            break; /* stopping and drained */
        pcd_claim_info cur;
        bool already = false;
        char msg[512] = "";
        int status;
        int64_t retry_after = 0;
        /* a DELETE that raced another one: the first did the work */
        if (pcd_registry_get(d->registry, job->pool_key, job->ci.id, &cur, false, NULL) &&
            cur.state == PCD_RELEASED) {
            status = 200;
            already = true;
        } else {
            status = conn ? release_pod(conn, job, &already, &retry_after, msg, sizeof(msg)) : 502;
            bool nobody_waits = job->req == NULL;
            if (status != 200 && status != 429 && nobody_waits && !stopping) {
                atomic_fetch_add_explicit(&d->releases_retried, 1, memory_order_relaxed);
                int64_t wait = release_retry_ns(++job->failures);
                job->not_before_ns = pc_now_ns() + wait;
                pcd_logf(PCD_WARN,
                         "component=releaser pool=%s claim=%s pod=%s/%s status=%d msg=\"%s; no "
                         "client waits for this release: tried again in %.0f s\"",
                         job->pool_key, job->ci.id, job->ci.pod_namespace, job->ci.pod, status, msg,
                         (double)wait / 1e9);
                put_aside(d, job); /* still RELEASING in the registry */
                continue;
            }
            if (status == 429 && !stopping &&
                (++job->throttled < REL_MAX_THROTTLED || nobody_waits)) {
                atomic_fetch_add_explicit(&d->releases_throttled, 1, memory_order_relaxed);
                job->not_before_ns = pc_now_ns() + retry_after;
                pcd_logf(PCD_DEBUG,
                         "component=releaser pool=%s claim=%s pod=%s/%s msg=\"429: tried again "
                         "in %.1f s\"",
                         job->pool_key, job->ci.id, job->ci.pod_namespace, job->ci.pod,
                         (double)retry_after / 1e9);
                put_aside(d, job); /* still RELEASING in the registry */
                continue;
            }
            if (status == 429)
                status = 503; /* throttled too long (or shutting down): the client may retry */
            pcd_registry_set(d->registry, job->pool_key, job->ci.id,
                             status == 200 ? PCD_RELEASED : PCD_ACTIVE, NULL);
        }
        atomic_fetch_add_explicit(&d->releases[status != 200 ? 2
                                               : already     ? 1
                                                             : 0],
                                  1, memory_order_relaxed);
        if (status != 200 && !job->req)
            pcd_logf(PCD_ERROR,
                     "component=releaser pool=%s claim=%s pod=%s/%s status=%d msg=\"%s; "
                     "podclaimd is stopping: the pod stays claimed by a claim nobody holds\"",
                     job->pool_key, job->ci.id, job->ci.pod_namespace, job->ci.pod, status, msg);
        else
            pcd_logf(status == 200 ? PCD_DEBUG : PCD_WARN,
                     "component=releaser pool=%s claim=%s pod=%s/%s status=%d already=%d%s%s%s",
                     job->pool_key, job->ci.id, job->ci.pod_namespace, job->ci.pod, status, already,
                     msg[0] ? " msg=\"" : "", msg, msg[0] ? "\"" : "");
        if (job->req) {
            pcd_req *q = job->req;
            q->rel_status = status;
            q->rel_already = already;
            snprintf(q->rel_msg, sizeof(q->rel_msg), "%s", msg);
            atomic_fetch_or_explicit(&q->flags, PCD_REQ_DONE, memory_order_release);
            push_done(d, q);
        }
        free(job);
    }
    pc_kube_conn_free(conn);
    return NULL;
}

int pcd_releasers_start(pcd *d, size_t n)
{
    pthread_mutex_init(&d->rel_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* pc_now_ns's clock, for put-aside jobs */
    pthread_cond_init(&d->rel_cv, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < n && i < 4; i++) {
        int err = pthread_create(&d->releasers[i], NULL, releaser_main, d);
        if (err)
            return -err;
        pthread_setname_np(d->releasers[i], "pcd-releaser");
        d->n_releasers++;
    }
    return 0;
}

void pcd_releasers_stop(pcd *d)
{
    pthread_mutex_lock(&d->rel_mu);
    d->rel_stop = true;
    pthread_cond_broadcast(&d->rel_cv);
    pthread_mutex_unlock(&d->rel_mu);
    for (size_t i = 0; i < d->n_releasers; i++)
        pthread_join(d->releasers[i], NULL);
    d->n_releasers = 0;
}

/* ---- waker ---------------------------------------------------------------------------------- */

static void unlink_waiting(pcd *d, pcd_req *q)
{
    pthread_mutex_lock(&d->wait_mu);
    if (q->wlinked) {
        if (q->wprev)
            q->wprev->wnext = q->wnext;
        else
            d->waiting_list = q->wnext;
        if (q->wnext)
            q->wnext->wprev = q->wprev;
        q->wlinked = false;
        q->wprev = q->wnext = NULL;
    }
    pthread_mutex_unlock(&d->wait_mu);
}

/* This replica stopped leading (for some pools): end the claims waiting in them, so their
 * clients hear it now (503 naming the leader) instead of at their deadline. Waker thread: the
 * only one that resumes, so every listed request is alive (suspended) while we hold wait_mu. */
static void sweep_deposed(pcd *d)
{
    pthread_mutex_lock(&d->wait_mu);
    for (pcd_req *q = d->waiting_list; q; q = q->wnext) {
        unsigned f = atomic_load_explicit(&q->flags, memory_order_acquire);
        if (!(f & PCD_REQ_ENQUEUED) || (f & PCD_REQ_DONE) || !q->pool || pcd_may_write(q->pool))
            continue;
        atomic_fetch_or_explicit(&q->flags, PCD_REQ_DEPOSED, memory_order_relaxed);
        pc_claim_cancel(&q->claim); /* not blocking: a push for the pool's scheduler */
    }
    pthread_mutex_unlock(&d->wait_mu);
}

void pcd_waker_stepdown(pcd *d)
{
    atomic_store_explicit(&d->stepdown, true, memory_order_release);
    uint64_t one = 1;
    if (write(d->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        pcd_logf(PCD_ERROR, "msg=\"eventfd write: %s\"", strerror(errno));
}

static void finish_one(pcd *d, pcd_req *q)
{
    unlink_waiting(d, q);
    if (q->fd >= 0) {
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, q->fd, NULL);
        q->fd = -1;
    }
    /* acquire: pairs with the release in the callback; the result is complete */
    unsigned f = atomic_load_explicit(&q->flags, memory_order_acquire);
    if ((f & PCD_REQ_HUNG) && q->route != PCD_ROUTE_RELEASE && !q->enqueue_err &&
        q->result.status == PC_CLAIM_OK) {
        /* the claim won a pod for a client that is gone: give the pod back */
        pcd_release_job *job = calloc(1, sizeof(*job));
        if (job &&
            pcd_registry_get(d->registry, q->pool->key, q->result.claim_id, &job->ci, true, NULL)) {
            snprintf(job->pool_key, sizeof(job->pool_key), "%s", q->pool->key);
            atomic_fetch_add_explicit(&d->orphan_releases, 1, memory_order_relaxed);
            queue_release(d, job, false);
        } else {
            free(job);
        }
    }
    /* here, not in the answer: MHD may close a resumed connection whose client is gone
     * without calling the handler again */
    if (q->route != PCD_ROUTE_RELEASE)
        atomic_fetch_sub_explicit(&d->waiting, 1, memory_order_relaxed);
    MHD_resume_connection(q->conn);
}

static void *waker_main(void *arg)
{
    pcd *d = arg;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(d->epfd, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            pcd_req *q = evs[i].data.ptr;
            if (q == NULL) {
                uint64_t v;
                if (read(d->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    pcd_logf(PCD_ERROR, "msg=\"eventfd read: %s\"", strerror(errno));
                continue;
            }
            /* the client hung up while its claim waits: cancel it. A callback may be running
             * right now; the request stays alive until this thread resumes it, and cancel
             * after the callback started only sets a flag nobody reads any more. */
            unsigned old = atomic_fetch_or_explicit(&q->flags, PCD_REQ_HUNG, memory_order_acq_rel);
            atomic_fetch_add_explicit(&d->hangups, 1, memory_order_relaxed);
            if ((old & PCD_REQ_ENQUEUED) && !(old & PCD_REQ_DONE) && q->route != PCD_ROUTE_RELEASE)
                pc_claim_cancel(&q->claim);
        }
        if (atomic_exchange_explicit(&d->stepdown, false, memory_order_acq_rel))
            sweep_deposed(d);
        ck_stack_entry_t *e = ck_stack_batch_pop_mpmc(&d->done);
        /* the batch is LIFO; the order of resumes does not matter to anyone */
        while (e) {
            ck_stack_entry_t *next = e->next;
            pcd_req *q = (pcd_req *)((char *)e - offsetof(pcd_req, done_entry));
            finish_one(d, q);
            e = next;
        }
        if (atomic_load_explicit(&d->waker_stop, memory_order_acquire) &&
            CK_STACK_FIRST(&d->done) == NULL)
            break;
    }
    return NULL;
}

int pcd_waker_start(pcd *d)
{
    ck_stack_init(&d->done);
    pthread_mutex_init(&d->wait_mu, NULL);
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->epfd < 0 || d->evfd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->evfd, &ev) != 0)
        return -errno;
    int err = pthread_create(&d->waker, NULL, waker_main, d);
    if (err)
        return -err;
    pthread_setname_np(d->waker, "pcd-waker");
    return 0;
}

void pcd_waker_stop(pcd *d)
{
    atomic_store_explicit(&d->waker_stop, true, memory_order_release);
    uint64_t one = 1;
    if (write(d->evfd, &one, sizeof(one)) < 0)
        pcd_logf(PCD_DEBUG, "msg=\"eventfd write at stop: %s\"", strerror(errno));
    pthread_join(d->waker, NULL);
    close(d->epfd);
    close(d->evfd);
}
