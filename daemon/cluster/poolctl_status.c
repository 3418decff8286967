/* The SandboxPool controller's status and Events: the pool's counts (from the last pod pass)
 * and the scheduler's snapshot (through the daemon's callback) -> status, written through the
 * /status subresource only when it changed and at most once per status_interval.
 *
 * Flow: reconcile(pool) -> [build status -> compare -> rate limit -> PATCH .../status].
 *
 * Kubernetes behaviour relied on: a merge patch on /status changes only status; the
 * resourceVersion in it is a precondition (409: the pool moved; the watch brings the new
 * version and the next pass writes again). A merge patch replaces arrays (conditions) whole and
 * removes a key set to null.
 */
#include "poolctl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG(lvl, ...) pc__cl_log(&c->log, lvl, "poolctl", __VA_ARGS__)

/* One condition, keeping lastTransitionTime when its status did not change. */
static json_t *condition(const json_t *old_status, const char *type, bool ok, const char *reason,
                         const char *message, const char *now)
{
    const char *want = ok ? "True" : "False";
    const char *since = now;
    size_t i;
    json_t *cd;
    json_array_foreach(json_object_get(old_status, "conditions"), i, cd)
    {
        const char *t = json_string_value(json_object_get(cd, "type"));
        const char *s = json_string_value(json_object_get(cd, "status"));
        const char *lt = json_string_value(json_object_get(cd, "lastTransitionTime"));
        if (t && s && lt && strcmp(t, type) == 0 && strcmp(s, want) == 0)
            since = lt;
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", type, "status", want, "reason", reason,
                     "message", message, "lastTransitionTime", since);
}

void pc__poolctl_sync_status(pc_poolctl *c, pc__pool_state *st, const json_t *pool)
{
    int64_t now = pc__cl_mono_ns();
    const json_t *old = json_object_get(pool, "status");
    json_int_t want = json_integer_value(pc__cl_jget(pool, "spec.replicas"));
    pc_snapshot snap;
    memset(&snap, 0, sizeof(snap));
    bool served = c->snapshot && c->snapshot(c->arg, st->ns, st->name, &snap);

    /* claims waiting and nothing idle: the pool cannot keep up (or cannot start pods) */
    bool empty = served && snap.queue_len > 0 && snap.idle_ready == 0;
    if (!empty)
        st->empty_since_ns = 0;
    else if (!st->empty_since_ns)
        st->empty_since_ns = now;
    bool starved = empty && now - st->empty_since_ns >= c->empty_grace_ns;
    if (empty && !starved)
        pc__poolctl_requeue_after(c, st->key, st->empty_since_ns + c->empty_grace_ns - now);
    if (starved &&
        pc_kevents_emit(c->events, c->conn, pool, NULL, "Warning", "PoolEmpty", "Dispatch",
                        "%llu claims waiting and no idle pod for %lld s (%u pods starting)",
                        (unsigned long long)snap.queue_len,
                        (long long)((now - st->empty_since_ns) / 1000000000LL), st->starting) == 0)
        PC__PC_INC(c, events);

    char ts[40], msg[400];
    pc__cl_rfc3339(pc__cl_real_ns(), false, ts, sizeof(ts));
    const char *reason = "AsExpected";
    msg[0] = '\0';
    if (st->rejected[0]) {
        reason = "TemplateRejected";
        snprintf(msg, sizeof(msg), "%s", st->rejected);
    } else if (st->invalid_template) {
        reason = "InvalidTemplate";
        snprintf(msg, sizeof(msg), "spec.template.spec.containers is missing or empty");
    } else if (st->not_ready) {
        reason = "PodsNotReady";
        snprintf(msg, sizeof(msg), "%u pods not Ready within %lld ms", st->not_ready,
                 (long long)(c->ready_timeout_ns / 1000000LL));
    } else if (starved) {
        reason = "EmptyWithWaitingClaims";
        snprintf(msg, sizeof(msg), "%llu claims waiting, no idle pod",
                 (unsigned long long)snap.queue_len);
    }
    bool degraded = strcmp(reason, "AsExpected") != 0;
    char rmsg[128];
    snprintf(rmsg, sizeof(rmsg), "%u of %lld pods idle", st->idle, (long long)want);
    json_t *conds = json_pack("[o,o]",
                              condition(old, "Ready", st->idle >= want,
                                        st->idle >= want ? "Warm" : "Warming", rmsg, ts),
                              condition(old, "Degraded", degraded, reason, msg, ts));
    char sel[PC_NAME_MAX + 32];
    snprintf(sel, sizeof(sel), "%s=%s", PC_CL_LABEL_POOL, st->name);
    json_t *status = json_pack(
            "{s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:I,s:o}", "replicas", (json_int_t)st->warm, "idle",
            (json_int_t)st->idle, "idleReady", (json_int_t)(served ? snap.idle_ready : st->idle),
            "pendingRequests", (json_int_t)snap.queue_len, "reserved", (json_int_t)snap.reserved,
            "inflight", (json_int_t)snap.inflight_cas, "selector", sel, "observedGeneration",
            json_integer_value(pc__cl_jget(pool, "metadata.generation")), "conditions", conds);
    if (snap.last_dispatch_at > 0) {
        char ld[40];
        pc__cl_rfc3339(snap.last_dispatch_at, true, ld, sizeof(ld));
        json_object_set_new(status, "lastDispatchTime", json_string(ld));
    }
    if (json_equal(status, old)) {
        json_decref(status);
        return;
    }
    if (st->last_status_ns && now - st->last_status_ns < c->status_interval_ns) {
        pc__poolctl_requeue_after(c, st->key, st->last_status_ns + c->status_interval_ns - now);
        json_decref(status);
        return;
    }
    if (now < st->status_after_ns) {
        pc__poolctl_requeue_after(c, st->key, st->status_after_ns - now);
        json_decref(status);
        return;
    }
    /* fields we no longer report are removed (null in a merge patch) */
    const char *k;
    json_t *v;
    json_t *patch_status = json_copy(status);
    json_object_foreach((json_t *)old, k, v)
    {
        if (!json_object_get(status, k))
            json_object_set_new(patch_status, k, json_null());
    }
    json_t *patch =
            json_pack("{s:{s:s},s:o}", "metadata", "resourceVersion",
                      pc__cl_jstr(pool, "metadata.resourceVersion") ?: "", "status", patch_status);
    char path[600], err[512];
    snprintf(path, sizeof(path), "/apis/%s/%s/namespaces/%s/sandboxpools/%s/status", PC_CL_GROUP,
             PC_CL_VERSION, st->ns, st->name);
    long code = 0;
    /* a 429 is not slept here (the controller's one thread does every pool's work): the
     * status waits its Retry-After and is written on a later pass */
    int64_t retry_after = 0;
    int rc = pc__cl_request_once(c->conn, "PATCH", path, "application/merge-patch+json", patch,
                                 &code, NULL, err, sizeof(err), &retry_after);
    json_decref(patch);
    json_decref(status);
    if (rc == 0 && code == 200) {
        /* from the answer, not from before the request: the next write is sent an interval
         * after this one was stored, so the server sees them at least that far apart however
         * long this one took (a slow first write, under TSan, was stored 184 ms before the
         * next one at a 400 ms interval) */
        st->last_status_ns = pc__cl_mono_ns();
        PC__PC_INC(c, status_writes);
        return;
    }
    if (rc == 0 && code == 429) {
        PC__PC_INC(c, throttled);
        st->status_after_ns = pc__cl_mono_ns() + retry_after;
        pc__poolctl_requeue_after(c, st->key, retry_after);
        return;
    }
    PC__PC_INC(c, status_errors);
    if (rc == 0 && code == 409) {
        PC__PC_INC(c, conflicts);
        pc__poolctl_requeue_after(c, st->key, 50000000LL); /* the watch brings the new version */
        return;
    }
    /* never blocks a scheduler: retried on a later pass */
    LOG(PC_KUBE_LOG_WARN, "pool=%s action=status msg=\"%s\"", st->key, err);
    pc__poolctl_requeue_after(c, st->key, c->status_interval_ns);
}
