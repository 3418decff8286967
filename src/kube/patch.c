/* The CAS request body: one strategic-merge patch per claim (DESIGN.md §2).
 *
 * Flow: CAS workers -> backend cas_start -> [patch body] -> PATCH /api/v1/.../pods/<name>.
 *
 * Kubernetes quirks relied on:
 * - metadata.resourceVersion inside a patch is a precondition: the server answers 409
 *   Conflict when the pod moved on, which is the compare-and-swap.
 * - Sent as application/strategic-merge-patch+json, spec.containers merge by `name` (the
 *   patchMergeKey of PodSpec.containers): only the image of the named containers changes.
 *   A JSON merge patch would replace the whole list and wipe every other container field.
 * - Only a container's image may change on a running pod, which is all we send.
 *
 * Built by hand into the caller's fixed buffer: no allocation on the CAS hot path.
 */
#include "kube_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PC__LABEL_POOL "podclaim.io/pool"
#define PC__LABEL_PHASE "podclaim.io/phase"
#define PC__ANN_CLAIM_ID "podclaim.io/claim-id"
#define PC__ANN_CLAIMED_AT "podclaim.io/claimed-at"

typedef struct out {
    char *p;
    size_t len;
    size_t cap;
    bool overflow;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* A JSON string literal (RFC 8259 escaping; bytes >= 0x80 pass through as UTF-8). */
static void put_str(out *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(o, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"':
            put(o, "\\\"", 2);
            break;
        case '\\':
            put(o, "\\\\", 2);
            break;
        case '\n':
            put(o, "\\n", 2);
            break;
        case '\r':
            put(o, "\\r", 2);
            break;
        case '\t':
            put(o, "\\t", 2);
            break;
        default:
            if (*c < 0x20) {
                char u[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
                put(o, u, 6);
            } else {
                put(o, (const char *)c, 1);
            }
        }
    }
    put(o, "\"", 1);
}

static void put_kv(out *o, bool *first, const char *k, const char *v)
{
    if (!*first)
        put(o, ",", 1);
    *first = false;
    put_str(o, k);
    put(o, ":", 1);
    put_str(o, v);
}

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). The API
 * server's JSON decoder would turn invalid bytes into U+FFFD without a word: the pod would get
 * another value than the claim asked for. */
static bool utf8_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

static bool reserved(const char *k, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, keys[i]) == 0)
            return true;
    return false;
}

int pc_kube_patch_body(const pc_cas_request *req, char *buf, size_t len, char *err, size_t errlen)
{
    static const char *const rl[] = {PC__LABEL_POOL, PC__LABEL_PHASE};
    static const char *const ra[] = {PC__ANN_CLAIM_ID, PC__ANN_CLAIMED_AT};
    const pc_claim_opts *opts = req->opts;
    if (!req->pod.resource_version || !req->pod.resource_version[0] || !req->claim_id || !opts) {
        pc__kube_errf(err, errlen, "CAS request without resourceVersion, claim id or options");
        return -EINVAL;
    }
    const char *phase = req->target_phase ? req->target_phase : "Running";
    if (!utf8_ok(req->pod.resource_version) || !utf8_ok(req->claim_id) || !utf8_ok(phase)) {
        pc__kube_errf(err, errlen, "resourceVersion, claim id or phase is not valid UTF-8");
        return -EINVAL;
    }
    for (size_t i = 0; i < opts->n_labels; i++) {
        if (!opts->labels[i].key || !opts->labels[i].value) {
            pc__kube_errf(err, errlen, "label %zu has no key or value", i);
            return -EINVAL;
        }
        if (!utf8_ok(opts->labels[i].key) || !utf8_ok(opts->labels[i].value)) {
            pc__kube_errf(err, errlen, "label %zu is not valid UTF-8", i);
            return -EINVAL;
        }
        if (reserved(opts->labels[i].key, rl, 2)) {
            pc__kube_errf(err, errlen, "label %s is reserved for podclaim", opts->labels[i].key);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < opts->n_annotations; i++) {
        if (!opts->annotations[i].key || !opts->annotations[i].value) {
            pc__kube_errf(err, errlen, "annotation %zu has no key or value", i);
            return -EINVAL;
        }
        if (!utf8_ok(opts->annotations[i].key) || !utf8_ok(opts->annotations[i].value)) {
            pc__kube_errf(err, errlen, "annotation %zu is not valid UTF-8", i);
            return -EINVAL;
        }
        if (reserved(opts->annotations[i].key, ra, 2)) {
            pc__kube_errf(err, errlen, "annotation %s is reserved for podclaim",
                          opts->annotations[i].key);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < opts->n_images; i++) {
        if (!opts->images[i].key || !opts->images[i].key[0] || !opts->images[i].value ||
            !opts->images[i].value[0]) {
            pc__kube_errf(err, errlen, "image %zu has no container name or image", i);
            return -EINVAL;
        }
        if (!utf8_ok(opts->images[i].key) || !utf8_ok(opts->images[i].value)) {
            pc__kube_errf(err, errlen, "image %zu is not valid UTF-8", i);
            return -EINVAL;
        }
    }

    /* claimed-at as RFC 3339 UTC with microseconds */
    char at[40];
    int64_t ns = req->claimed_at_unix_ns ? req->claimed_at_unix_ns : pc__kube_real_ns();
    time_t secs = (time_t)(ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(at + n, sizeof(at) - n, ".%06dZ", (int)((ns % 1000000000LL) / 1000));

    out o = {buf, 0, len, false};
    bool first = true;
    puts_(&o, "{\"metadata\":{\"resourceVersion\":");
    put_str(&o, req->pod.resource_version);
    puts_(&o, ",\"labels\":{");
    put_kv(&o, &first, PC__LABEL_PHASE, phase);
    for (size_t i = 0; i < opts->n_labels; i++)
        put_kv(&o, &first, opts->labels[i].key, opts->labels[i].value);
    puts_(&o, "},\"annotations\":{");
    first = true;
    put_kv(&o, &first, PC__ANN_CLAIM_ID, req->claim_id);
    put_kv(&o, &first, PC__ANN_CLAIMED_AT, at);
    for (size_t i = 0; i < opts->n_annotations; i++)
        put_kv(&o, &first, opts->annotations[i].key, opts->annotations[i].value);
    puts_(&o, "}}");
    if (opts->n_images) {
        puts_(&o, ",\"spec\":{\"containers\":[");
        for (size_t i = 0; i < opts->n_images; i++) {
            puts_(&o, i ? ",{\"name\":" : "{\"name\":");
            put_str(&o, opts->images[i].key);
            puts_(&o, ",\"image\":");
            put_str(&o, opts->images[i].value);
            puts_(&o, "}");
        }
        puts_(&o, "]}");
    }
    puts_(&o, "}");
    put(&o, "", 0);
    if (o.overflow || o.len >= len) {
        pc__kube_errf(err, errlen, "patch body exceeds %zu bytes", len);
        return -EMSGSIZE;
    }
    buf[o.len] = '\0';
    return (int)o.len;
}
