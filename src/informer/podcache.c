/* The informer's pod cache (see podcache.h).
 *
 * Flow: WATCH/LIST JSON -> [pod cache] -> idle transitions -> pool offer_idle / withdraw.
 */
#include "podcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC__PODCACHE_MIN_BUCKETS 1024u

static uint64_t hash_key(const char *ns, const char *name)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)ns; *s; s++)
        h = (h ^ *s) * 1099511628211ULL;
    h = (h ^ '/') * 1099511628211ULL;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        h = (h ^ *s) * 1099511628211ULL;
    return h;
}

bool pc__pod_is_idle(const pc__pod *p)
{
    return strcmp(p->phase, "Idle") == 0 && p->running && p->ready && !p->deleting;
}

const char *pc__pod_label(const pc__pod *p, const char *key)
{
    for (size_t i = 0; i < p->n_labels; i++)
        if (strcmp(p->labels[i].key, key) == 0)
            return p->labels[i].value;
    return NULL;
}

void pc__pod_clear(pc__pod *p)
{
    for (size_t i = 0; i < p->n_labels; i++) {
        free((char *)p->labels[i].key);
        free((char *)p->labels[i].value);
    }
    free(p->labels);
    p->labels = NULL;
    p->n_labels = p->labels_cap = 0;
    for (size_t i = 0; i < p->n_containers; i++)
        free(p->containers[i]);
    free(p->containers);
    p->containers = NULL;
    p->n_containers = p->containers_cap = 0;
    free(p->claim_id);
    p->claim_id = NULL;
}

/* Read a string field into a fixed buffer; over-long is a semantic error (-EINVAL). */
static int field(pc__js *js, char *dst, size_t cap, const char *what, char *err, size_t errlen)
{
    char t = pc__js_peek(js);
    if (t == 'n') /* null: treat as absent */
        return pc__js_skip(js) ? -EBADMSG : (dst[0] = '\0', 0);
    if (t != '"') {
        if (pc__js_skip(js))
            return -EBADMSG;
        snprintf(err, errlen, "pod %s is not a string", what);
        dst[0] = '\0';
        return -EINVAL;
    }
    int n = pc__js_str(js, dst, cap);
    if (n == -EMSGSIZE) {
        snprintf(err, errlen, "pod %s longer than %zu bytes", what, cap - 1);
        return -EINVAL;
    }
    if (n == -EINVAL) {
        snprintf(err, errlen, "pod %s holds a NUL character", what);
        return -EINVAL;
    }
    return n < 0 ? -EBADMSG : 0;
}

static int add_label(pc__pod *p, size_t *cap, const char *k, const char *v)
{
    if (p->n_labels == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        pc_kv *l = realloc(p->labels, nc * sizeof(pc_kv));
        if (!l)
            return -ENOMEM;
        p->labels = l;
        *cap = nc;
    }
    char *kd = strdup(k), *vd = strdup(v);
    if (!kd || !vd) {
        free(kd);
        free(vd);
        return -ENOMEM;
    }
    p->labels[p->n_labels].key = kd;
    p->labels[p->n_labels].value = vd;
    p->n_labels++;
    return 0;
}

/* Lower-case letters, digits, '-' (and '.' in a subdomain), starting and ending alphanumeric. */
static bool dns_name(const char *s, bool subdomain)
{
    size_t n = strlen(s);
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-' && !(subdomain && c == '.'))
            return false;
        if ((i == 0 || i == n - 1) && !alnum)
            return false;
    }
    return true;
}

/* The worst of two results: syntax errors beat allocation failures beat semantic ones. */
static int worst(int a, int b)
{
    if (a == -EBADMSG || b == -EBADMSG)
        return -EBADMSG;
    if (a == -ENOMEM || b == -ENOMEM)
        return -ENOMEM;
    return a ? a : b;
}

/* metadata.annotations: only podclaim.io/claim-id is kept (which claim wrote the pod; the
 * pool recognises a claim whose PATCH timed out by it). Every other value is skipped, still
 * checked as JSON. A value that cannot be one of our ids (empty, PC_CLAIM_ID_MAX bytes or
 * more, holding a NUL) counts as no claim id. */
static int scan_annotations(pc__js *js, pc__pod *p, char *err, size_t errlen)
{
    char ak[320], v[PC_CLAIM_ID_MAX];
    int rc, res = 0;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, ak, sizeof(ak))) == 1) {
        if (strcmp(ak, "podclaim.io/claim-id") != 0 || pc__js_peek(js) != '"') {
            if (pc__js_skip(js))
                return -EBADMSG;
            continue;
        }
        int n = pc__js_str(js, v, sizeof(v));
        if (n == -EBADMSG)
            return n;
        if (p->claim_id != NULL) {
            /* Go keeps the last of duplicate keys, we would keep the first: an object that
             * can name two claims is refused, as a phase given twice is. */
            snprintf(err, errlen, "pod annotation podclaim.io/claim-id given twice");
            res = worst(res, -EINVAL);
            continue;
        }
        if (n <= 0)
            continue;
        if ((p->claim_id = strdup(v)) == NULL)
            res = worst(res, -ENOMEM);
    }
    return rc < 0 ? -EBADMSG : res;
}

static int scan_metadata(pc__js *js, pc__pod *p, bool *have_name, bool *have_ns, bool *have_rv,
                         char *err, size_t errlen)
{
    char key[32];
    int rc, res = 0;
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js) ? -EBADMSG : 0;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        int r = 0;
        if (!strcmp(key, "name")) {
            r = field(js, p->name, sizeof(p->name), "metadata.name", err, errlen);
            *have_name = r == 0 && p->name[0];
        } else if (!strcmp(key, "namespace")) {
            r = field(js, p->namespace_, sizeof(p->namespace_), "metadata.namespace", err, errlen);
            *have_ns = r == 0 && p->namespace_[0];
        } else if (!strcmp(key, "resourceVersion")) {
            r = field(js, p->rv, sizeof(p->rv), "metadata.resourceVersion", err, errlen);
            *have_rv = r == 0 && p->rv[0];
        } else if (!strcmp(key, "uid")) {
            r = field(js, p->uid, sizeof(p->uid), "metadata.uid", err, errlen);
        } else if (!strcmp(key, "annotations") && pc__js_peek(js) == '{') {
            r = scan_annotations(js, p, err, errlen);
        } else if (!strcmp(key, "deletionTimestamp")) {
            p->deleting = pc__js_peek(js) != 'n';
            r = pc__js_skip(js);
        } else if (!strcmp(key, "labels") && pc__js_peek(js) == '{') {
            /* Kubernetes bounds label keys at 317 bytes (prefix 253 + '/' + name 63) and
             * values at 63; longer ones cannot come from a real server: rejected. */
            char lk[320], lv[256];
            size_t *cap = &p->labels_cap; /* not 0: "labels" may come twice (fuzz_pod) */
            int lrc;
            pc__js_obj_begin(js);
            while ((lrc = pc__js_obj_key(js, lk, sizeof(lk))) == 1) {
                if (pc__js_peek(js) != '"') {
                    r = worst(r, pc__js_skip(js) ? -EBADMSG : 0);
                    continue;
                }
                int n = pc__js_str(js, lv, sizeof(lv));
                if (n == -EMSGSIZE || n == -EINVAL || !lk[0]) {
                    /* also a key or value holding a \u0000 (read as ""): never a shortened
                     * key that could pass for podclaim.io/phase */
                    snprintf(err, errlen, "pod label key or value out of bounds");
                    r = worst(r, -EINVAL);
                    continue;
                }
                if (n < 0) {
                    r = -EBADMSG;
                    break;
                }
                if (!strcmp(lk, "podclaim.io/phase") && pc__pod_label(p, lk)) {
                    /* Go keeps the last of duplicate keys, our label lookup the first: an
                     * object that can mean two phases is refused. */
                    snprintf(err, errlen, "pod label podclaim.io/phase given twice");
                    r = worst(r, -EINVAL);
                    continue;
                }
                r = worst(r, add_label(p, cap, lk, lv));
                if (!strcmp(lk, "podclaim.io/phase")) {
                    /* longer than any phase name: kept as "", which is no phase at all */
                    size_t vl = strlen(lv);
                    if (vl < sizeof(p->phase))
                        memcpy(p->phase, lv, vl + 1);
                }
            }
            if (lrc < 0)
                r = -EBADMSG;
        } else {
            r = pc__js_skip(js);
        }
        res = worst(res, r);
        if (res == -EBADMSG)
            return res;
    }
    return rc < 0 ? -EBADMSG : res;
}

static int scan_spec(pc__js *js, pc__pod *p)
{
    char key[32];
    int rc, res = 0;
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js) ? -EBADMSG : 0;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        if (strcmp(key, "containers") != 0 || pc__js_peek(js) != '[') {
            if (pc__js_skip(js))
                return -EBADMSG;
            continue;
        }
        size_t *cap = &p->containers_cap; /* "containers" may come twice */
        pc__js_arr_begin(js);
        while ((rc = pc__js_arr_next(js)) == 1) {
            if (pc__js_peek(js) != '{') {
                if (pc__js_skip(js))
                    return -EBADMSG;
                continue;
            }
            pc__js_obj_begin(js);
            int crc;
            while ((crc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
                char name[PC_NAME_MAX];
                if (strcmp(key, "name") != 0 || pc__js_peek(js) != '"') {
                    if (pc__js_skip(js))
                        return -EBADMSG;
                    continue;
                }
                int n = pc__js_str(js, name, sizeof(name));
                if (n == -EBADMSG)
                    return n;
                if (n < 0)
                    continue; /* an over-long container name is not kept */
                if (p->n_containers == *cap) {
                    size_t nc = *cap ? *cap * 2 : 4;
                    char **c = realloc(p->containers, nc * sizeof(char *));
                    if (!c) {
                        res = -ENOMEM;
                        continue;
                    }
                    p->containers = c;
                    *cap = nc;
                }
                if (!(p->containers[p->n_containers] = strdup(name)))
                    res = -ENOMEM;
                else
                    p->n_containers++;
            }
            if (crc < 0)
                return -EBADMSG;
        }
        if (rc < 0)
            return -EBADMSG;
    }
    return rc < 0 ? -EBADMSG : res;
}

static int scan_status(pc__js *js, pc__pod *p)
{
    char key[32], val[32];
    int rc;
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js) ? -EBADMSG : 0;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        if (!strcmp(key, "phase") && pc__js_peek(js) == '"') {
            int n = pc__js_str(js, val, sizeof(val));
            if (n == -EBADMSG)
                return n;
            p->running = n > 0 && !strcmp(val, "Running");
        } else if (!strcmp(key, "conditions") && pc__js_peek(js) == '[') {
            pc__js_arr_begin(js);
            int arc;
            while ((arc = pc__js_arr_next(js)) == 1) {
                if (pc__js_peek(js) != '{') {
                    if (pc__js_skip(js))
                        return -EBADMSG;
                    continue;
                }
                char type[32] = "", status[16] = "";
                pc__js_obj_begin(js);
                int crc;
                while ((crc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
                    int n = 0;
                    if (!strcmp(key, "type") && pc__js_peek(js) == '"')
                        n = pc__js_str(js, type, sizeof(type));
                    else if (!strcmp(key, "status") && pc__js_peek(js) == '"')
                        n = pc__js_str(js, status, sizeof(status));
                    else
                        n = pc__js_skip(js);
                    if (n == -EBADMSG)
                        return n;
                }
                if (crc < 0)
                    return -EBADMSG;
                if (!strcmp(type, "Ready"))
                    p->ready = !strcmp(status, "True");
            }
            if (arc < 0)
                return -EBADMSG;
        } else if (pc__js_skip(js)) {
            return -EBADMSG;
        }
    }
    return rc < 0 ? -EBADMSG : 0;
}

int pc__pod_scan(pc__js *js, pc__pod *p, char *err, size_t errlen)
{
    char key[32];
    bool have_name = false, have_ns = false, have_rv = false;
    int rc, res = 0;
    p->phase[0] = '\0';
    p->running = p->ready = p->deleting = false;
    if (pc__js_peek(js) != '{') {
        if (pc__js_skip(js)) {
            snprintf(err, errlen, "malformed JSON: %s", js->why ? js->why : "?");
            return -EBADMSG;
        }
        snprintf(err, errlen, "pod is not a JSON object");
        return -EINVAL;
    }
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        int r;
        if (!strcmp(key, "metadata"))
            r = scan_metadata(js, p, &have_name, &have_ns, &have_rv, err, errlen);
        else if (!strcmp(key, "spec"))
            r = scan_spec(js, p);
        else if (!strcmp(key, "status"))
            r = scan_status(js, p);
        else
            r = pc__js_skip(js);
        res = worst(res, r);
        if (res == -EBADMSG)
            break;
    }
    if (rc < 0 || res == -EBADMSG) {
        snprintf(err, errlen, "malformed JSON: %s", js->why ? js->why : "?");
        return -EBADMSG;
    }
    if (res)
        return res;
    if (!have_name || !have_ns || !have_rv) {
        snprintf(err, errlen, "pod object without %s",
                 !have_name ? "metadata.name"
                 : !have_ns ? "metadata.namespace"
                            : "metadata.resourceVersion");
        return -EINVAL;
    }
    /* The name goes into the PATCH URL and the pool's keys: what Kubernetes allows (a DNS
     * subdomain; a namespace is a DNS label), nothing a server could smuggle in beside it. */
    if (!dns_name(p->name, true) || !dns_name(p->namespace_, false)) {
        snprintf(err, errlen, "pod metadata.%s is no DNS %s",
                 !dns_name(p->name, true) ? "name" : "namespace",
                 !dns_name(p->name, true) ? "subdomain" : "label");
        return -EINVAL;
    }
    return 0;
}

int pc__podcache_init(pc__podcache *c)
{
    c->n_buckets = PC__PODCACHE_MIN_BUCKETS;
    c->count = 0;
    c->buckets = calloc(c->n_buckets, sizeof(pc__pod *));
    return c->buckets ? 0 : -ENOMEM;
}

void pc__podcache_fini(pc__podcache *c)
{
    for (size_t b = 0; c->buckets && b < c->n_buckets; b++) {
        for (pc__pod *p = c->buckets[b]; p;) {
            pc__pod *n = p->next;
            pc__pod_clear(p);
            free(p);
            p = n;
        }
    }
    free(c->buckets);
    c->buckets = NULL;
    c->count = 0;
}

pc__pod *pc__podcache_get(const pc__podcache *c, const char *ns, const char *name)
{
    uint64_t h = hash_key(ns, name);
    for (pc__pod *p = c->buckets[h & (c->n_buckets - 1)]; p; p = p->next)
        if (p->hash == h && strcmp(p->name, name) == 0 && strcmp(p->namespace_, ns) == 0)
            return p;
    return NULL;
}

static int grow(pc__podcache *c)
{
    size_t nb = c->n_buckets * 2;
    pc__pod **b = calloc(nb, sizeof(pc__pod *));
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < c->n_buckets; i++) {
        for (pc__pod *p = c->buckets[i]; p;) {
            pc__pod *n = p->next;
            p->next = b[p->hash & (nb - 1)];
            b[p->hash & (nb - 1)] = p;
            p = n;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = nb;
    return 0;
}

int pc__podcache_insert(pc__podcache *c, pc__pod *p)
{
    /* Load factor 1: a failed grow only makes chains longer, so it is not an error. */
    if (c->count >= c->n_buckets)
        (void)grow(c);
    p->hash = hash_key(p->namespace_, p->name);
    size_t b = p->hash & (c->n_buckets - 1);
    p->next = c->buckets[b];
    c->buckets[b] = p;
    c->count++;
    return 0;
}

void pc__podcache_remove(pc__podcache *c, pc__pod *p)
{
    pc__pod **pp = &c->buckets[p->hash & (c->n_buckets - 1)];
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = p->next;
        c->count--;
    }
}

static pc__pod *scan(const pc__podcache *c, pc__podcache_iter *it)
{
    while (it->bucket < c->n_buckets) {
        pc__pod *p = c->buckets[it->bucket++];
        if (p)
            return p;
    }
    return NULL;
}

pc__pod *pc__podcache_first(const pc__podcache *c, pc__podcache_iter *it)
{
    it->bucket = 0;
    pc__pod *p = scan(c, it);
    it->next = p ? (p->next ? p->next : NULL) : NULL;
    return p;
}

pc__pod *pc__podcache_next(const pc__podcache *c, pc__podcache_iter *it)
{
    pc__pod *p = it->next ? it->next : scan(c, it);
    it->next = p ? p->next : NULL;
    return p;
}
