/* Helpers shared by the cluster controllers (see util.h). */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pc__cl_log(const pc_cluster_log *lg, int level, const char *component, const char *fmt, ...)
{
    int threshold = lg && lg->level_set ? lg->level : PC_KUBE_LOG_INFO;
    if (level > threshold)
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "level=%s component=%s ",
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level],
                     component);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (lg && lg->fn)
        lg->fn(lg->arg, level, line);
    else
        fprintf(stderr, "%s\n", line);
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t pc__cl_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int64_t pc__cl_real_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

void pc__cl_rfc3339(int64_t unix_ns, bool micro, char *buf, size_t len)
{
    time_t t = (time_t)(unix_ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (micro)
        snprintf(buf, len, "%s.%06ldZ", base, (long)((unix_ns % 1000000000LL) / 1000));
    else
        snprintf(buf, len, "%sZ", base);
}

int64_t pc__cl_parse_time(const char *s)
{
    if (!s)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    int64_t frac = 0;
    if (*p == '.') {
        int64_t scale = 100000000;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) >= 6) {
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    return ((int64_t)timegm(&tm) - off) * 1000000000LL + frac;
}

int pc__cl_urlenc(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.' || *c == '~';
        if (o + (plain ? 1 : 3) >= len)
            return -EMSGSIZE;
        if (plain) {
            out[o++] = (char)*c;
        } else {
            out[o++] = '%';
            out[o++] = hex[*c >> 4];
            out[o++] = hex[*c & 15];
        }
    }
    if (o >= len)
        return -EMSGSIZE;
    out[o] = '\0';
    return 0;
}

static int request(pc_kube_conn *k, const char *method, const char *path, const char *ctype,
                   const json_t *body, long *status, json_t **out, char *err, size_t errlen,
                   int64_t *retry_after_ns)
{
    char *text = NULL;
    if (out)
        *out = NULL;
    *status = 0;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        if (!text) {
            if (err)
                snprintf(err, errlen, "%s %s: out of memory", method, path);
            return -ENOMEM;
        }
    }
    pc_kube_response r;
    const char *ct = text ? (ctype ? ctype : "application/json") : NULL;
    size_t len = text ? strlen(text) : 0;
    int rc = retry_after_ns ? pc_kube_conn_request_once(k, method, path, ct, text, len, &r)
                            : pc_kube_conn_request(k, method, path, ct, text, len, &r);
    free(text);
    *status = r.status;
    if (retry_after_ns)
        *retry_after_ns = rc == 0 && r.status == 429 ? pc_kube_retry_wait_ns(&r) : 0;
    if (err && errlen)
        snprintf(err, errlen, "%s", r.error);
    if (rc == 0 && out && r.status >= 200 && r.status < 300 && r.body) {
        json_error_t je;
        *out = json_loadb(r.body, r.body_len, 0, &je);
        if (!*out && err)
            snprintf(err, errlen, "%s %s: answer is not JSON: %s", method, path, je.text);
    }
    pc_kube_response_fini(&r);
    return rc;
}

int pc__cl_request(pc_kube_conn *k, const char *method, const char *path, const char *ctype,
                   const json_t *body, long *status, json_t **out, char *err, size_t errlen)
{
    return request(k, method, path, ctype, body, status, out, err, errlen, NULL);
}

int pc__cl_request_once(pc_kube_conn *k, const char *method, const char *path, const char *ctype,
                        const json_t *body, long *status, json_t **out, char *err, size_t errlen,
                        int64_t *retry_after_ns)
{
    return request(k, method, path, ctype, body, status, out, err, errlen, retry_after_ns);
}

json_t *pc__cl_jget(const json_t *obj, const char *path)
{
    const json_t *cur = obj;
    char key[128];
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = json_object_get(cur, key);
        path += n + (dot ? 1 : 0);
    }
    return (json_t *)cur;
}

const char *pc__cl_jstr(const json_t *obj, const char *path)
{
    return json_string_value(pc__cl_jget(obj, path));
}

const char *pc__cl_label(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(pc__cl_jget(obj, "metadata.labels"), key));
}

const char *pc__cl_annotation(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(pc__cl_jget(obj, "metadata.annotations"), key));
}

bool pc__cl_rv_older(const char *a, const char *b)
{
    size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
    if (!la || !lb || a[la] || b[lb])
        return false;
    while (la > 1 && *a == '0')
        a++, la--;
    while (lb > 1 && *b == '0')
        b++, lb--;
    return la != lb ? la < lb : strcmp(a, b) < 0;
}

uint64_t pc__cl_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}
