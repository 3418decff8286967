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
    p->n_labels = 0;
    for (size_t i = 0; i < p->n_containers; i++)
        free(p->containers[i]);
    free(p->containers);
    p->containers = NULL;
    p->n_containers = 0;
}

static int copy_field(char *dst, size_t cap, const char *src, const char *what, bool required,
                      char *err, size_t errlen)
{
    if (!src) {
        if (required) {
            snprintf(err, errlen, "pod object without %s", what);
            return -EINVAL;
        }
        dst[0] = '\0';
        return 0;
    }
    size_t n = strlen(src);
    if (n >= cap || (required && n == 0)) {
        snprintf(err, errlen, "pod %s: %s of %zu bytes out of bounds", what, what, n);
        return -EINVAL;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

int pc__pod_parse(json_t *obj, pc__pod *p, char *err, size_t errlen)
{
    json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md)) {
        snprintf(err, errlen, "pod object without metadata");
        return -EINVAL;
    }
    int rc;
    if ((rc = copy_field(p->namespace_, sizeof(p->namespace_),
                         json_string_value(json_object_get(md, "namespace")), "metadata.namespace",
                         true, err, errlen)) ||
        (rc = copy_field(p->name, sizeof(p->name), json_string_value(json_object_get(md, "name")),
                         "metadata.name", true, err, errlen)) ||
        (rc = copy_field(p->rv, sizeof(p->rv),
                         json_string_value(json_object_get(md, "resourceVersion")),
                         "metadata.resourceVersion", true, err, errlen)) ||
        (rc = copy_field(p->uid, sizeof(p->uid), json_string_value(json_object_get(md, "uid")),
                         "metadata.uid", false, err, errlen)))
        return rc;
    json_t *dt = json_object_get(md, "deletionTimestamp");
    p->deleting = dt && !json_is_null(dt);

    json_t *labels = json_object_get(md, "labels");
    p->phase[0] = '\0';
    if (json_is_object(labels) && json_object_size(labels)) {
        p->labels = calloc(json_object_size(labels), sizeof(pc_kv));
        if (!p->labels)
            return -ENOMEM;
        const char *k;
        json_t *v;
        json_object_foreach(labels, k, v)
        {
            const char *s = json_string_value(v);
            if (!s)
                continue;
            char *kd = strdup(k), *vd = strdup(s);
            if (!kd || !vd) {
                free(kd);
                free(vd);
                return -ENOMEM;
            }
            p->labels[p->n_labels].key = kd;
            p->labels[p->n_labels].value = vd;
            p->n_labels++;
            if (strcmp(k, "podclaim.io/phase") == 0)
                snprintf(p->phase, sizeof(p->phase), "%s", s);
        }
    }

    json_t *containers = json_object_get(json_object_get(obj, "spec"), "containers");
    if (json_is_array(containers) && json_array_size(containers)) {
        p->containers = calloc(json_array_size(containers), sizeof(char *));
        if (!p->containers)
            return -ENOMEM;
        size_t i;
        json_t *ct;
        json_array_foreach(containers, i, ct)
        {
            const char *n = json_string_value(json_object_get(ct, "name"));
            if (!n)
                continue;
            if (!(p->containers[p->n_containers] = strdup(n)))
                return -ENOMEM;
            p->n_containers++;
        }
    }

    json_t *status = json_object_get(obj, "status");
    const char *phase = json_string_value(json_object_get(status, "phase"));
    p->running = phase && strcmp(phase, "Running") == 0;
    p->ready = false;
    json_t *conds = json_object_get(status, "conditions");
    size_t i;
    json_t *cd;
    json_array_foreach(conds, i, cd)
    {
        const char *t = json_string_value(json_object_get(cd, "type"));
        const char *s = json_string_value(json_object_get(cd, "status"));
        if (t && s && strcmp(t, "Ready") == 0)
            p->ready = strcmp(s, "True") == 0;
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
