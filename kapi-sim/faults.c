/* kapi-sim fault injection and request statistics.
 *
 * The fault configuration is a small struct behind its own mutex: every request copies it once
 * (ks_faults_get), so PUT /sim/faults takes effect for the next request without coordination.
 * Request counters are relaxed atomics: they are statistics, nothing is ordered by them.
 */
#include "sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ks_faults_init(ks_faults *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->cfg.retry_after_s = 1;
    f->cfg.error_code = 500;
    f->rng = (uint64_t)ks_now_ns() | 1;
}

void ks_faults_fini(ks_faults *f)
{
    pthread_mutex_destroy(&f->mu);
}

ks_fault_cfg ks_faults_get(ks_faults *f)
{
    pthread_mutex_lock(&f->mu);
    ks_fault_cfg c = f->cfg;
    pthread_mutex_unlock(&f->mu);
    return c;
}

void ks_faults_set(ks_faults *f, const ks_fault_cfg *c)
{
    pthread_mutex_lock(&f->mu);
    f->cfg = *c;
    pthread_mutex_unlock(&f->mu);
}

double ks_faults_rand(ks_faults *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t x = f->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    pthread_mutex_unlock(&f->mu);
    return (double)((x * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

void ks_faults_count(ks_faults *f, ks_verb v, int code)
{
    if (code < 0 || code >= 600)
        code = 0;
    atomic_fetch_add_explicit(&f->counts[v][code], 1, memory_order_relaxed);
}

/* A verb filter (throttleVerb, errorVerb): 1 + KS_VERB_*, 0 = every verb. */
static const char *verb_name(int verb)
{
    return verb > 0 && verb <= KS_VERB_COUNT ? ks_verb_names[verb - 1] : "";
}

static int get_verb(const json_t *j, const char *k, int *out, ks_err *err)
{
    json_t *v = json_object_get(j, k);
    if (!v)
        return 0;
    int verb = -1;
    if (json_is_string(v) && !json_string_length(v))
        verb = 0;
    for (int i = 0; json_is_string(v) && verb < 0 && i < KS_VERB_OTHER; i++)
        if (strcmp(json_string_value(v), ks_verb_names[i]) == 0)
            verb = 1 + i;
    if (verb < 0) {
        ks_err_set(err, 400, "BadRequest",
                   "faults: \"%s\" must be \"\" (every verb) or one of get, list, watch, create, "
                   "update, patch, delete",
                   k);
        return -1;
    }
    *out = verb;
    return 0;
}

json_t *ks_faults_to_json(const ks_fault_cfg *c)
{
    json_t *lat = json_object();
    for (int v = 0; v < KS_VERB_COUNT; v++) {
        if (c->latency[v].fixed_us || c->latency[v].jitter_us)
            json_object_set_new(lat, ks_verb_names[v],
                                json_pack("{s:f,s:f}", "fixedMs", c->latency[v].fixed_us / 1000.0,
                                          "jitterMs", c->latency[v].jitter_us / 1000.0));
    }
    return json_pack("{s:o,s:f,s:f,s:s,s:s,s:i,s:f,s:i,s:s,s:I,s:I,s:I}", "latency", lat,
                     "conflictRate", c->conflict_rate, "throttleRate", c->throttle_rate,
                     "throttleName", c->throttle_name, "throttleVerb", verb_name(c->throttle_verb),
                     "retryAfterSeconds", c->retry_after_s, "errorRate", c->error_rate, "errorCode",
                     c->error_code, "errorVerb", verb_name(c->error_verb), "watchDropEvents",
                     (json_int_t)c->watch_drop_events, "watchDropMs", (json_int_t)c->watch_drop_ms,
                     "watchDelayMs", (json_int_t)c->watch_delay_ms);
}

static int get_rate(const json_t *j, const char *k, double *out, ks_err *err)
{
    json_t *v = json_object_get(j, k);
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
        ks_err_set(err, 400, "BadRequest", "faults: \"%s\" must be a number in [0,1]", k);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int get_int(const json_t *j, const char *k, int64_t *out, int64_t lo, int64_t hi,
                   ks_err *err)
{
    json_t *v = json_object_get(j, k);
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < (double)lo ||
        json_number_value(v) > (double)hi) {
        ks_err_set(err, 400, "BadRequest",
                   "faults: \"%s\" must be a number in [%" PRId64 ",%" PRId64 "]", k, lo, hi);
        return -1;
    }
    *out = (int64_t)json_number_value(v);
    return 0;
}

int ks_faults_from_json(ks_fault_cfg *out, const json_t *j, ks_err *err)
{
    if (!json_is_object(j)) {
        ks_err_set(err, 400, "BadRequest", "faults: body must be a JSON object");
        return -1;
    }
    ks_fault_cfg c = *out;
    int64_t ra = c.retry_after_s, ec = c.error_code, de = (int64_t)c.watch_drop_events;
    if (get_rate(j, "conflictRate", &c.conflict_rate, err) ||
        get_rate(j, "throttleRate", &c.throttle_rate, err) ||
        get_rate(j, "errorRate", &c.error_rate, err) ||
        get_int(j, "retryAfterSeconds", &ra, 0, 3600, err) ||
        get_int(j, "errorCode", &ec, 500, 599, err) ||
        get_int(j, "watchDropEvents", &de, 0, INT64_MAX / 2, err) ||
        get_int(j, "watchDropMs", &c.watch_drop_ms, 0, 86400000, err) ||
        get_int(j, "watchDelayMs", &c.watch_delay_ms, 0, 3600000, err))
        return -1;
    json_t *tn = json_object_get(j, "throttleName");
    if (tn) {
        if (!json_is_string(tn) || json_string_length(tn) >= sizeof(c.throttle_name)) {
            ks_err_set(err, 400, "BadRequest",
                       "faults: \"throttleName\" must be a string of at most %zu bytes",
                       sizeof(c.throttle_name) - 1);
            return -1;
        }
        snprintf(c.throttle_name, sizeof(c.throttle_name), "%s", json_string_value(tn));
    }
    if (get_verb(j, "throttleVerb", &c.throttle_verb, err) ||
        get_verb(j, "errorVerb", &c.error_verb, err))
        return -1;
    c.retry_after_s = (int)ra;
    c.error_code = (int)ec;
    c.watch_drop_events = (uint64_t)de;
    json_t *lat = json_object_get(j, "latency");
    if (lat) {
        if (!json_is_object(lat)) {
            ks_err_set(err, 400, "BadRequest", "faults: \"latency\" must be an object");
            return -1;
        }
        memset(c.latency, 0, sizeof c.latency);
        const char *k;
        json_t *v;
        json_object_foreach(lat, k, v)
        {
            int verb = -1;
            for (int i = 0; i < KS_VERB_COUNT; i++)
                if (strcmp(k, ks_verb_names[i]) == 0)
                    verb = i;
            int64_t fx = 0, jt = 0;
            if (verb < 0) {
                ks_err_set(err, 400, "BadRequest", "faults: unknown verb \"%.40s\" in latency", k);
                return -1;
            }
            json_t *fv = json_object_get(v, "fixedMs"), *jv = json_object_get(v, "jitterMs");
            if (!json_is_object(v) || (fv && !json_is_number(fv)) || (jv && !json_is_number(jv)) ||
                json_number_value(fv) < 0 || json_number_value(jv) < 0 ||
                json_number_value(fv) > 60000 || json_number_value(jv) > 60000) {
                ks_err_set(
                        err, 400, "BadRequest",
                        "faults: latency.%s must be {\"fixedMs\":0..60000,\"jitterMs\":0..60000}",
                        k);
                return -1;
            }
            fx = (int64_t)(json_number_value(fv) * 1000);
            jt = (int64_t)(json_number_value(jv) * 1000);
            c.latency[verb].fixed_us = fx;
            c.latency[verb].jitter_us = jt;
        }
    }
    *out = c;
    return 0;
}

int ks_faults_parse_latency(ks_fault_cfg *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        return -1;
    int verb = -1;
    for (int i = 0; i < KS_VERB_COUNT; i++)
        if (strlen(ks_verb_names[i]) == (size_t)(eq - arg) &&
            strncmp(arg, ks_verb_names[i], (size_t)(eq - arg)) == 0)
            verb = i;
    bool all = strncmp(arg, "all=", 4) == 0;
    if (verb < 0 && !all)
        return -1;
    char *end;
    double fx = strtod(eq + 1, &end), jt = 0;
    if (end == eq + 1 || fx < 0)
        return -1;
    if (*end == '+') {
        const char *j = end + 1;
        jt = strtod(j, &end);
        if (end == j || jt < 0)
            return -1;
    }
    if (*end)
        return -1;
    for (int i = 0; i < KS_VERB_COUNT; i++) {
        if (all ? i != KS_VERB_OTHER : i == verb) {
            c->latency[i].fixed_us = (int64_t)(fx * 1000);
            c->latency[i].jitter_us = (int64_t)(jt * 1000);
        }
    }
    return 0;
}

json_t *ks_stats_json(ks_faults *f, ks_store *s)
{
    json_t *req = json_object();
    uint64_t total = 0;
    for (int v = 0; v < KS_VERB_COUNT; v++) {
        json_t *codes = json_object();
        for (int c = 0; c < 600; c++) {
            uint64_t n = atomic_load_explicit(&f->counts[v][c], memory_order_relaxed);
            if (!n)
                continue;
            char k[8];
            snprintf(k, sizeof k, "%d", c);
            json_object_set_new(codes, k, json_integer((json_int_t)n));
            total += n;
        }
        json_object_set_new(req, ks_verb_names[v], codes);
    }
    json_t *objs = json_object();
    pthread_mutex_lock(&s->mu);
    uint64_t rev = s->rev, lo = s->lo, comp = s->compacted;
    for (int r = 0; r < KS_RES_COUNT; r++)
        json_object_set_new(objs, ks_resources[r].plural,
                            json_integer((json_int_t)json_object_size(s->objs[r])));
    pthread_mutex_unlock(&s->mu);
    return json_pack("{s:o,s:I,s:I,s:I,s:o,s:{s:I,s:I,s:I}}", "requests", req, "requestsTotal",
                     (json_int_t)total, "watchEventsSent",
                     (json_int_t)atomic_load_explicit(&f->watch_events, memory_order_relaxed),
                     "watchesOpen",
                     (json_int_t)atomic_load_explicit(&f->watches_open, memory_order_relaxed),
                     "objects", objs, "history", "resourceVersion", (json_int_t)rev, "oldest",
                     (json_int_t)(lo <= rev ? lo : 0), "compacted", (json_int_t)comp);
}
