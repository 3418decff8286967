/* Kubernetes Events, deduplicated (see kevents.h).
 *
 * Flow: controllers -> [dedup table under mu] -> POST /apis/events.k8s.io/v1/namespaces/<ns>/events
 *
 * events.k8s.io/v1 validation needs eventTime (MicroTime), reportingController,
 * reportingInstance, action, reason, type and regarding on create; the name is generated
 * (generateName "<object>.") as kubectl and client-go's recorder do.
 */
#include "kevents.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pc_kevents {
    char controller[128];
    char instance[256];
    int64_t dedup_ns;
    pc_cluster_log log;
    pthread_mutex_t mu;
    json_t *seen; /* "uid/reason" -> CLOCK_MONOTONIC ns of the last report; under mu */
};

int pc_kevents_new(const pc_kevents_config *cfg, pc_kevents **out)
{
    if (!cfg || !cfg->instance || !cfg->instance[0])
        return -EINVAL;
    pc_kevents *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return -ENOMEM;
    snprintf(ev->controller, sizeof(ev->controller), "%s",
             cfg->controller ? cfg->controller : "podclaim.io/podclaimd");
    snprintf(ev->instance, sizeof(ev->instance), "%s", cfg->instance);
    ev->dedup_ns = cfg->dedup_ns > 0 ? cfg->dedup_ns : 600000000000LL;
    ev->log = cfg->log;
    ev->seen = json_object();
    pthread_mutex_init(&ev->mu, NULL);
    if (!ev->seen) {
        pc_kevents_free(ev);
        return -ENOMEM;
    }
    *out = ev;
    return 0;
}

void pc_kevents_free(pc_kevents *ev)
{
    if (!ev)
        return;
    json_decref(ev->seen);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

static json_t *ref_of(const json_t *o)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "apiVersion",
                     json_string_value(json_object_get(o, "apiVersion")) ?: "", "kind",
                     json_string_value(json_object_get(o, "kind")) ?: "", "name",
                     pc__cl_jstr(o, "metadata.name") ?: "", "namespace",
                     pc__cl_jstr(o, "metadata.namespace") ?: "", "uid",
                     pc__cl_jstr(o, "metadata.uid") ?: "");
}

int pc_kevents_emit(pc_kevents *ev, pc_kube_conn *k, const json_t *regarding, const json_t *related,
                    const char *type, const char *reason, const char *action, const char *note_fmt,
                    ...)
{
    const char *uid = pc__cl_jstr(regarding, "metadata.uid") ?: "";
    const char *ns = pc__cl_jstr(regarding, "metadata.namespace");
    const char *name = pc__cl_jstr(regarding, "metadata.name");
    if (!ns || !name)
        return -EINVAL;
    char key[400];
    snprintf(key, sizeof(key), "%s/%s/%s", uid, reason,
             related ? pc__cl_jstr(related, "metadata.uid") ?: "" : "");
    int64_t now = pc__cl_mono_ns();
    pthread_mutex_lock(&ev->mu);
    json_t *last = json_object_get(ev->seen, key);
    bool dup = last && now - (int64_t)json_integer_value(last) < ev->dedup_ns;
    if (!dup)
        json_object_set_new(ev->seen, key, json_integer(now));
    if (json_object_size(ev->seen) > 100000) /* bound: forget everything, worst case a repeat */
        json_object_clear(ev->seen);
    pthread_mutex_unlock(&ev->mu);
    if (dup)
        return 1;
    char note[1024], when[40], path[512];
    va_list ap;
    va_start(ap, note_fmt);
    vsnprintf(note, sizeof(note), note_fmt, ap);
    va_end(ap);
    pc__cl_rfc3339(pc__cl_real_ns(), true, when, sizeof(when));
    char gen[300];
    snprintf(gen, sizeof(gen), "%.240s.", name);
    json_t *body =
            json_pack("{s:s,s:s,s:{s:s,s:s},s:s,s:s,s:s,s:s,s:s,s:o,s:s,s:s}", "apiVersion",
                      "events.k8s.io/v1", "kind", "Event", "metadata", "generateName", gen,
                      "namespace", ns, "eventTime", when, "reportingController", ev->controller,
                      "reportingInstance", ev->instance, "action", action, "reason", reason,
                      "regarding", ref_of(regarding), "note", note, "type", type);
    if (related)
        json_object_set_new(body, "related", ref_of(related));
    snprintf(path, sizeof(path), "/apis/events.k8s.io/v1/namespaces/%s/events", ns);
    long st;
    char err[512];
    int rc = pc__cl_request(k, "POST", path, NULL, body, &st, NULL, err, sizeof(err));
    json_decref(body);
    if (rc == 0 && st == 201) {
        pc__cl_log(&ev->log, PC_KUBE_LOG_INFO, "events",
                   "object=%s/%s reason=%s type=%s note=\"%s\"", ns, name, reason, type, note);
        return 0;
    }
    /* not written: allow a retry at the next occurrence */
    pthread_mutex_lock(&ev->mu);
    json_object_del(ev->seen, key);
    pthread_mutex_unlock(&ev->mu);
    pc__cl_log(&ev->log, PC_KUBE_LOG_WARN, "events", "object=%s/%s reason=%s msg=\"%s\"", ns, name,
               reason, err);
    return rc ? rc : -EIO;
}

void pc_kevents_forget(pc_kevents *ev, const char *uid, const char *reason)
{
    char pfx[300];
    size_t pl = (size_t)snprintf(pfx, sizeof(pfx), "%s/%s/", uid, reason);
    pthread_mutex_lock(&ev->mu);
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(ev->seen, tmp, k, v)
    {
        if (strncmp(k, pfx, pl) == 0)
            json_object_del(ev->seen, k);
    }
    pthread_mutex_unlock(&ev->mu);
}
