/* The informer's WATCH: one streaming request, its events applied as they arrive
 * (see informer.h).
 *
 * Flow: API server -> libcurl -> framer -> [watch events -> pod cache (core)] -> pool.
 *
 * Kubernetes behaviour relied on:
 * - A WATCH from resourceVersion R replays every change after R, one JSON event per line.
 * - When R has been compacted away the server says 410 Gone, as an ERROR event carrying a
 *   Status or as the HTTP status: only a fresh LIST helps.
 * - BOOKMARK events carry only a resourceVersion: progress without a change.
 * - A WATCH from a version the server has not reached is accepted and silent (no bookmark
 *   either) until the server gets there: a restarted kapi-sim, or an etcd restored without
 *   --bump-revision, counts from 1 again. Only a LIST says so, after 3 s: 504 Timeout with
 *   cause ResourceVersionTooLarge (kube-apiserver v1.34, realk8s/diff
 *   TestFutureResourceVersion). So after a watch that was cut or silent, a LIST of one pod at
 *   rv asks before resuming (pc__informer_check_rv); "too large" means relist.
 */
#include "informer_internal.h"

#include <podclaim/kubepod.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define INC(f) PC__INF_INC(inf, f)
#define ADD(f, v) PC__INF_ADD(inf, f, v)

#define PC__INF_RELIST_AFTER 3u
#define PC__INF_RETRY_AFTER_MAX_NS (60LL * 1000000000LL)

/* An ERROR event's Status: code and message. */
static long status_of(const char *obj, size_t len, char *msg, size_t cap)
{
    pc__js js;
    char key[16];
    long long code = 0;
    msg[0] = '\0';
    pc__js_init(&js, obj, len);
    if (pc__js_obj_begin(&js))
        return 0;
    while (pc__js_obj_key(&js, key, sizeof(key)) == 1) {
        if (!strcmp(key, "code") && pc__js_peek(&js) == '0') {
            if (pc__js_int(&js, &code))
                return 0;
        } else if (!strcmp(key, "message") && pc__js_peek(&js) == '"') {
            if (pc__js_str(&js, msg, cap) == -EMSGSIZE)
                msg[0] = '\0';
        } else if (pc__js_skip(&js)) {
            return 0;
        }
    }
    return (long)code;
}

/* An error answer whose body is a "Too large resource version" Status. */
static bool answer_too_large(const pc_kube_response *r)
{
    return r->status == 504 && pc_kube_status_too_large(r->body, r->body_len);
}

int pc__informer_watch_line(void *arg, const char *line, size_t len)
{
    pc_informer *inf = arg;
    inf->received_ns = inf->cur_stream ? inf->cur_stream->chunk_at_ns : pc__kube_mono_ns();
    char type[16];
    const char *obj;
    size_t olen = 0;
    int src = pc_kube_watch_event_scan(line, len, type, sizeof(type), &obj, &olen);
    if (src) {
        const char *why = src == -ENOENT ? "no type or object" : "malformed JSON";
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"malformed watch event, resuming from rv %s: %s\"",
                     inf->namespace_, inf->pool, inf->rv, why);
        return PC__INF_STOP_RESUME;
    }
    if (strcmp(type, "ERROR") == 0) {
        char msg[200];
        long code = status_of(obj, olen, msg, sizeof(msg));
        int rc = code == 410 || pc_kube_status_too_large(obj, olen) ? PC__INF_STOP_GONE
                                                                    : PC__INF_STOP_RESUME;
        if (rc != PC__INF_STOP_GONE)
            INC(errors);
        pc__kube_log(inf->client, rc == PC__INF_STOP_GONE ? PC_KUBE_LOG_INFO : PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"watch error event: %ld %s\"", inf->namespace_, inf->pool,
                     code, msg);
        return rc;
    }
    if (strcmp(type, "BOOKMARK") == 0) {
        char rv[PC_RV_MAX];
        if (pc__js_metadata_rv(obj, olen, rv, sizeof(rv)) > 0)
            snprintf(inf->rv, sizeof(inf->rv), "%s", rv);
        INC(bookmarks);
        inf->got_event = true;
        return 0;
    }
    bool deleted = strcmp(type, "DELETED") == 0;
    if (!deleted && strcmp(type, "ADDED") != 0 && strcmp(type, "MODIFIED") != 0) {
        pc__kube_log(inf->client, PC_KUBE_LOG_DEBUG, "informer=%s/%s msg=\"ignoring event %s\"",
                     inf->namespace_, inf->pool, type);
        return 0;
    }
    pc__pod np;
    pc__js js;
    char err[160];
    memset(&np, 0, sizeof(np));
    pc__js_init(&js, obj, olen);
    int prc = pc__pod_scan(&js, &np, err, sizeof(err));
    if (prc == -EINVAL) {
        /* Well-formed, but no pod we can hold (a label value over 255 bytes, a name with a
         * NUL...). Stopping the watch here would resume before this event and meet it again,
         * forever: skip it as a LIST does, and move the resume point past it. The cached
         * version of that pod is stale now (a claim on it would meet a 409): dropped. */
        INC(skipped);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"skipping unusable pod in %s event: %s\" pod=%s rv=%s",
                     inf->namespace_, inf->pool, type, err, np.name[0] ? np.name : "-",
                     np.rv[0] ? np.rv : "-");
        if (np.namespace_[0] && np.name[0]) /* any uid: a new incarnation replaces the old */
            pc__informer_remove(inf, &np, false);
        if (np.rv[0])
            snprintf(inf->rv, sizeof(inf->rv), "%s", np.rv);
        inf->got_event = true;
        pc__pod_clear(&np);
        return 0;
    }
    if (prc) {
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"bad pod in %s: %s\"",
                     inf->namespace_, inf->pool, type, err);
        pc__pod_clear(&np);
        return PC__INF_STOP_RESUME;
    }
    INC(watch_events);
    inf->got_event = true;
    char rv[PC_RV_MAX];
    snprintf(rv, sizeof(rv), "%s", np.rv);
    if (deleted) {
        /* replayed deletion (not cached), or one of another incarnation / older version */
        if (pc__informer_remove(inf, &np, true) <= 0)
            INC(duplicates);
        pc__pod_clear(&np);
    } else {
        pc__informer_apply(inf, &np, false);
    }
    snprintf(inf->rv, sizeof(inf->rv), "%s", rv);
    return 0;
}

/* An API-level failure of the watch: an ERROR event other than 410, an HTTP error, a line that
 * is no event. client-go's reflector relists after one. A single failure resumes at the same
 * version here (a proxy hiccup or one bad line is not worth a LIST of the whole pool), but
 * PC__INF_RELIST_AFTER in a row without progress between them mean the server keeps refusing
 * that version: forget it, so that the next round relists. */
static void watch_failed(pc_informer *inf, const char *what)
{
    if (inf->got_event) /* this watch made progress before it failed */
        inf->watch_failures = 0;
    if (++inf->watch_failures < PC__INF_RELIST_AFTER)
        return;
    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                 "informer=%s/%s msg=\"relisting after %u watch errors in a row (last: %s)\"",
                 inf->namespace_, inf->pool, inf->watch_failures, what);
    inf->watch_failures = 0;
    inf->rv[0] = '\0';
    INC(relists);
}

/* 429, 503: the server says when to come back; the next backoff waits at least that long. */
static void note_retry_after(pc_informer *inf, const pc_kube_response *r)
{
    if (r->retry_after_ns > 0)
        inf->retry_after_ns = r->retry_after_ns < PC__INF_RETRY_AFTER_MAX_NS
                                      ? r->retry_after_ns
                                      : PC__INF_RETRY_AFTER_MAX_NS;
}

int pc__informer_watch(pc_informer *inf)
{
    char path[PC__INF_PATH_MAX], rv[3 * PC_RV_MAX];
    /* resourceVersions are opaque: encode them like any query value */
    if (pc__informer_urlenc(inf->rv, rv, sizeof(rv)))
        return -EINVAL;
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=%s&watch=true&resourceVersion=%s"
             "&allowWatchBookmarks=true&timeoutSeconds=%u",
             inf->namespace_, inf->selector, rv, inf->watch_timeout_s);
    pc__informer_set_state(inf, PC__INF_WATCH, "watching");
    INC(watches);
    inf->got_event = false;
    pc__kube_stream s = {
            .max_line = inf->max_event,
            .on_line = pc__informer_watch_line,
            .arg = inf,
            /* The server ends the watch after timeoutSeconds; this client-side bound is
             * the last resort behind the watchdog. */
            .timeout_ns = ((int64_t)inf->watch_timeout_s + 30) * 1000000000LL,
            /* A half-open connection (peer gone, no RST) stays silent; TCP keep-alive takes
             * minutes to notice. A live watch asked for bookmarks is never silent that long. */
            .idle_timeout_ns = inf->watch_idle_timeout_ns,
    };
    pc_kube_response r;
    inf->cur_stream = &s;
    int rc = pc__kube_conn_stream(inf->conn, path, &s, &r);
    inf->cur_stream = NULL;
    ADD(watch_bytes, s.bytes);
    if (rc == -ECANCELED) {
        pc_kube_response_fini(&r);
        return rc;
    }
    if (rc == 0)
        note_retry_after(inf, &r);
    if (rc == 0 && (r.status == 410 || answer_too_large(&r))) {
        rc = 1;
    } else if (rc == 0 && r.status == 429) {
        /* API priority and fairness: not a failure of this version, just "later". */
        INC(throttled);
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO,
                     "informer=%s/%s msg=\"watch throttled, retrying after %lld ms\"",
                     inf->namespace_, inf->pool, (long long)(inf->retry_after_ns / 1000000));
        rc = -EAGAIN;
    } else if (rc == 0 && r.status != 200) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"watch failed: %s\"",
                     inf->namespace_, inf->pool, r.error);
        watch_failed(inf, r.error);
        rc = -EIO;
    } else if (rc == 0 && s.line_rc == PC__INF_STOP_GONE) {
        rc = 1;
    } else if (rc == 0 && s.line_rc == PC__INF_STOP_RESUME) {
        watch_failed(inf, "error event or malformed line");
        rc = -EBADMSG;
    } else if (rc == 0 && s.truncated) {
        /* The stream ended inside an event: the partial event is dropped; resuming from the
         * last applied version delivers it again. */
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO,
                     "informer=%s/%s msg=\"watch stream truncated (%zu bytes of a partial event)\"",
                     inf->namespace_, inf->pool, s.truncated);
        rc = -ECONNRESET;
    } else if (rc == -EMSGSIZE) {
        /* An event over max_event: we cannot apply it, and resuming would hit it again. The
         * LIST has its own (larger) body limit, so relist. */
        INC(errors);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"%s; relisting\"",
                     inf->namespace_, inf->pool, r.error);
        rc = 1;
    } else if (rc == -ETIMEDOUT && s.stalled) {
        INC(stalls);
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"watch silent for %lld ms, reconnecting\"",
                     inf->namespace_, inf->pool, (long long)(inf->watch_idle_timeout_ns / 1000000));
    } else if (rc) {
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO, "informer=%s/%s msg=\"watch ended: %s\"",
                     inf->namespace_, inf->pool, r.error);
    }
    pc_kube_response_fini(&r);
    return rc;
}

int pc__informer_check_rv(pc_informer *inf)
{
    char path[PC__INF_PATH_MAX], rv[3 * PC_RV_MAX];
    if (pc__informer_urlenc(inf->rv, rv, sizeof(rv)))
        return -EINVAL;
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=%s&limit=1&resourceVersion=%s"
             "&resourceVersionMatch=NotOlderThan",
             inf->namespace_, inf->selector, rv);
    pc_kube_response r;
    int rc = pc_kube_conn_request(inf->conn, "GET", path, NULL, NULL, 0, &r);
    if (rc == 0 && (r.status == 410 || answer_too_large(&r))) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"the server no longer has rv %s (%ld %s); relisting\"",
                     inf->namespace_, inf->pool, inf->rv, r.status, r.error);
        INC(relists);
        inf->rv[0] = '\0';
        rc = 1;
    } else if (rc == 0 && r.status == 429) {
        INC(throttled);
        note_retry_after(inf, &r);
        rc = -EAGAIN;
    } else if (rc == 0 && r.status != 200) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"rv check failed: %s\"",
                     inf->namespace_, inf->pool, r.error);
        inf->got_event = false;
        watch_failed(inf, r.error);
        rc = inf->rv[0] ? -EIO : 1;
    } else if (rc && rc != -ECANCELED) {
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO, "informer=%s/%s msg=\"rv check: %s\"",
                     inf->namespace_, inf->pool, r.error);
    }
    pc_kube_response_fini(&r);
    return rc;
}
