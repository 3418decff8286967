/* Pod summaries, watch event envelopes and LIST pages for controllers (see kubepod.h).
 *
 * Flow: API server bytes -> a controller's watch -> [kubepod: jscan walk -> builder -> one
 *       block] -> the controller's cache.
 *
 * The builder collects strings into one growing byte buffer and the lists as offsets into it;
 * the end of the walk lays the summary out in one allocation (struct, then the arrays, then
 * the strings) and turns the offsets into pointers. Offset 0 is a "" every absent string
 * points to.
 */
#include "jscan.h"

#include <podclaim/kubepod.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A string value bigger than this stack buffer is read again into a heap one. */
#define SCRATCH 1024

typedef struct pair {
    uint32_t a, b; /* string offsets; annotations: key and (unused), hash in h */
    uint64_t h;
    bool ready;
} pair;

typedef struct list {
    pair *v;
    size_t n, cap;
} list;

enum { L_LABELS, L_ANN, L_CONT, L_STAT, L_OWN, L_COUNT };

typedef struct bld {
    char *s; /* strings, each NUL-terminated */
    size_t len, cap;
    list l[L_COUNT];
    uint32_t ns, name, uid, rv, created, phase;
    bool deleting, ready_cond, has_statuses;
    bool nomem;
} bld;

uint64_t pc_kube_value_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint32_t put(bld *b, const char *s, size_t n)
{
    if (b->nomem || b->len + n + 1 > UINT32_MAX)
        return b->nomem = true, 0;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 512;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns)
            return b->nomem = true, 0;
        b->s = ns;
        b->cap = nc;
    }
    uint32_t off = (uint32_t)b->len;
    memcpy(b->s + off, s, n);
    b->s[off + n] = '\0';
    b->len += n + 1;
    return off;
}

static pair *push(bld *b, int which)
{
    list *l = &b->l[which];
    if (b->nomem)
        return NULL;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        pair *nv = realloc(l->v, nc * sizeof(pair));
        if (!nv)
            return b->nomem = true, NULL;
        l->v = nv;
        l->cap = nc;
    }
    pair *p = &l->v[l->n++];
    *p = (pair){0};
    return p;
}

/* Read a string value (anything else is consumed and reads as ""): calls fn with it. Returns
 * 0 or -EBADMSG. */
static int with_str(pc__js *js, void (*fn)(void *arg, const char *s, size_t n), void *arg)
{
    if (pc__js_peek(js) != '"') {
        fn(arg, "", 0);
        return pc__js_skip(js);
    }
    char small[SCRATCH];
    pc__js at = *js; /* a cursor: copied to read the value again if it does not fit */
    int n = pc__js_str(js, small, sizeof(small));
    if (n >= 0) {
        fn(arg, small, (size_t)n);
        return 0;
    }
    if (n == -EINVAL) {
        fn(arg, "", 0); /* holds \u0000: no C string can carry it */
        return 0;
    }
    if (n != -EMSGSIZE)
        return -EBADMSG;
    *js = at;
    size_t cap = (size_t)(js->end - js->p) + 1; /* decoding never lengthens a string */
    char *big = malloc(cap);
    if (!big) {
        pc__js_skip(js);
        fn(arg, "", 0);
        return 0; /* as if absent; the decode reports ENOMEM through the builder */
    }
    n = pc__js_str(js, big, cap);
    if (n >= 0)
        fn(arg, big, (size_t)n);
    else
        fn(arg, "", 0);
    free(big);
    return n == -EBADMSG ? -EBADMSG : 0;
}

typedef struct put_arg {
    bld *b;
    uint32_t *off;
} put_arg;

static void put_fn(void *arg, const char *s, size_t n)
{
    put_arg *a = arg;
    *a->off = n ? put(a->b, s, n) : 0;
}

static int str_field(pc__js *js, bld *b, uint32_t *off)
{
    put_arg a = {b, off};
    return with_str(js, put_fn, &a);
}

static void hash_fn(void *arg, const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    *(uint64_t *)arg = h;
}

/* {"k": "v", ...} into list `which` (values as strings, or hashed for annotations). */
static int scan_map(pc__js *js, bld *b, int which)
{
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js);
    char key[512];
    int rc;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        pair *p = push(b, which);
        if (!p)
            return pc__js_skip(js);
        p->a = key[0] ? put(b, key, strlen(key)) : 0;
        int r = which == L_ANN ? with_str(js, hash_fn, &p->h) : str_field(js, b, &p->b);
        if (r)
            return -EBADMSG;
    }
    return rc < 0 ? -EBADMSG : 0;
}

/* [{...}, ...]: for each object element, the string fields k1 -> a and k2 -> b, and "ready"
 * (a boolean) into a new entry of list `which`. Other elements are skipped. */
static int scan_objs(pc__js *js, bld *b, int which, const char *k1, const char *k2)
{
    if (pc__js_peek(js) != '[')
        return pc__js_skip(js);
    int rc;
    pc__js_arr_begin(js);
    while ((rc = pc__js_arr_next(js)) == 1) {
        if (pc__js_peek(js) != '{') {
            if (pc__js_skip(js))
                return -EBADMSG;
            continue;
        }
        pair *p = push(b, which);
        pair dummy;
        if (!p)
            p = &dummy;
        char key[32];
        int krc;
        pc__js_obj_begin(js);
        while ((krc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
            int r;
            if (strcmp(key, k1) == 0)
                r = str_field(js, b, &p->a);
            else if (strcmp(key, k2) == 0)
                r = str_field(js, b, &p->b);
            else if (strcmp(key, "ready") == 0) {
                p->ready = pc__js_peek(js) == 't';
                r = pc__js_skip(js);
            } else
                r = pc__js_skip(js);
            if (r)
                return -EBADMSG;
        }
        if (krc < 0)
            return -EBADMSG;
    }
    return rc < 0 ? -EBADMSG : 0;
}

/* status.conditions: only whether Ready is "True" (the last Ready entry wins). */
static int scan_conditions(pc__js *js, bld *b)
{
    if (pc__js_peek(js) != '[')
        return pc__js_skip(js);
    int rc;
    pc__js_arr_begin(js);
    while ((rc = pc__js_arr_next(js)) == 1) {
        if (pc__js_peek(js) != '{') {
            if (pc__js_skip(js))
                return -EBADMSG;
            continue;
        }
        char key[32], type[64] = "", status[16] = "";
        int krc;
        pc__js_obj_begin(js);
        while ((krc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
            char *dst = strcmp(key, "type") == 0     ? type
                        : strcmp(key, "status") == 0 ? status
                                                     : NULL;
            size_t cap = dst == type ? sizeof(type) : sizeof(status);
            if (dst && pc__js_peek(js) == '"') {
                int n = pc__js_str(js, dst, cap);
                if (n == -EBADMSG)
                    return -EBADMSG;
                if (n < 0)
                    dst[0] = '\0';
            } else if (pc__js_skip(js)) {
                return -EBADMSG;
            }
        }
        if (krc < 0)
            return -EBADMSG;
        if (strcmp(type, "Ready") == 0)
            b->ready_cond = strcmp(status, "True") == 0;
    }
    return rc < 0 ? -EBADMSG : 0;
}

static int scan_metadata(pc__js *js, bld *b)
{
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js);
    char key[32];
    int rc;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        int r;
        if (!strcmp(key, "name"))
            r = str_field(js, b, &b->name);
        else if (!strcmp(key, "namespace"))
            r = str_field(js, b, &b->ns);
        else if (!strcmp(key, "uid"))
            r = str_field(js, b, &b->uid);
        else if (!strcmp(key, "resourceVersion"))
            r = str_field(js, b, &b->rv);
        else if (!strcmp(key, "creationTimestamp"))
            r = str_field(js, b, &b->created);
        else if (!strcmp(key, "deletionTimestamp")) {
            b->deleting = pc__js_peek(js) != 'n';
            r = pc__js_skip(js);
        } else if (!strcmp(key, "labels"))
            r = scan_map(js, b, L_LABELS);
        else if (!strcmp(key, "annotations"))
            r = scan_map(js, b, L_ANN);
        else if (!strcmp(key, "ownerReferences"))
            r = scan_objs(js, b, L_OWN, "kind", "name");
        else
            r = pc__js_skip(js);
        if (r)
            return -EBADMSG;
    }
    return rc < 0 ? -EBADMSG : 0;
}

/* spec.containers, or status.{phase, conditions, containerStatuses} */
static int scan_section(pc__js *js, bld *b, bool status)
{
    if (pc__js_peek(js) != '{')
        return pc__js_skip(js);
    char key[32];
    int rc;
    pc__js_obj_begin(js);
    while ((rc = pc__js_obj_key(js, key, sizeof(key))) == 1) {
        int r;
        if (!status && !strcmp(key, "containers"))
            r = scan_objs(js, b, L_CONT, "name", "image");
        else if (status && !strcmp(key, "phase"))
            r = str_field(js, b, &b->phase);
        else if (status && !strcmp(key, "conditions"))
            r = scan_conditions(js, b);
        else if (status && !strcmp(key, "containerStatuses")) {
            b->has_statuses = pc__js_peek(js) == '[';
            r = scan_objs(js, b, L_STAT, "name", "image");
        } else
            r = pc__js_skip(js);
        if (r)
            return -EBADMSG;
    }
    return rc < 0 ? -EBADMSG : 0;
}

static void bld_fini(bld *b)
{
    free(b->s);
    for (int i = 0; i < L_COUNT; i++)
        free(b->l[i].v);
}

static pc_kube_pod *layout(const bld *b)
{
    size_t nl = b->l[L_LABELS].n, na = b->l[L_ANN].n, nc = b->l[L_CONT].n, ns = b->l[L_STAT].n,
           no = b->l[L_OWN].n;
    size_t size = sizeof(pc_kube_pod) + (nl + no) * sizeof(pc_kv) +
                  na * sizeof(pc_kube_annotation) + (nc + ns) * sizeof(pc_kube_container) + b->len;
    pc_kube_pod *p = malloc(size);
    if (!p)
        return NULL;
    char *at = (char *)(p + 1);
    pc_kv *labels = (pc_kv *)at;
    at += nl * sizeof(pc_kv);
    pc_kv *owners = (pc_kv *)at;
    at += no * sizeof(pc_kv);
    pc_kube_annotation *ann = (pc_kube_annotation *)at;
    at += na * sizeof(pc_kube_annotation);
    pc_kube_container *cont = (pc_kube_container *)at;
    at += nc * sizeof(pc_kube_container);
    pc_kube_container *stat = (pc_kube_container *)at;
    at += ns * sizeof(pc_kube_container);
    char *s = at;
    memcpy(s, b->s, b->len);
    for (size_t i = 0; i < nl; i++)
        labels[i] = (pc_kv){s + b->l[L_LABELS].v[i].a, s + b->l[L_LABELS].v[i].b};
    for (size_t i = 0; i < no; i++)
        owners[i] = (pc_kv){s + b->l[L_OWN].v[i].a, s + b->l[L_OWN].v[i].b};
    for (size_t i = 0; i < na; i++)
        ann[i] = (pc_kube_annotation){s + b->l[L_ANN].v[i].a, b->l[L_ANN].v[i].h};
    for (size_t i = 0; i < nc; i++)
        cont[i] = (pc_kube_container){s + b->l[L_CONT].v[i].a, s + b->l[L_CONT].v[i].b, false};
    for (size_t i = 0; i < ns; i++)
        stat[i] = (pc_kube_container){s + b->l[L_STAT].v[i].a, s + b->l[L_STAT].v[i].b,
                                      b->l[L_STAT].v[i].ready};
    *p = (pc_kube_pod){.namespace_ = s + b->ns,
                       .name = s + b->name,
                       .uid = s + b->uid,
                       .resource_version = s + b->rv,
                       .creation_timestamp = s + b->created,
                       .status_phase = s + b->phase,
                       .deleting = b->deleting,
                       .ready_condition = b->ready_cond,
                       .has_container_statuses = b->has_statuses,
                       .n_labels = nl,
                       .n_annotations = na,
                       .n_containers = nc,
                       .n_statuses = ns,
                       .n_owners = no,
                       .labels = labels,
                       .annotations = ann,
                       .containers = cont,
                       .statuses = stat,
                       .owners = owners};
    return p;
}

int pc_kube_pod_decode(const char *json, size_t len, pc_kube_pod **out, char *err, size_t errlen)
{
    *out = NULL;
    bld b = {0};
    put(&b, "", 0); /* offset 0: the "" of every absent string */
    pc__js js;
    pc__js_init(&js, json, len);
    int rc = 0;
    if (pc__js_obj_begin(&js)) {
        snprintf(err, errlen, "pod: not a JSON object");
        bld_fini(&b);
        return -EBADMSG;
    }
    char key[32];
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        int r;
        if (!strcmp(key, "metadata"))
            r = scan_metadata(&js, &b);
        else if (!strcmp(key, "spec"))
            r = scan_section(&js, &b, false);
        else if (!strcmp(key, "status"))
            r = scan_section(&js, &b, true);
        else
            r = pc__js_skip(&js);
        if (r) {
            rc = -EBADMSG;
            break;
        }
    }
    if (rc < 0 || pc__js_end(&js)) {
        snprintf(err, errlen, "pod: malformed JSON at byte %zu: %s", (size_t)(js.p - json),
                 js.why ? js.why : "bad value");
        bld_fini(&b);
        return -EBADMSG;
    }
    if (b.nomem) {
        snprintf(err, errlen, "pod: out of memory");
        bld_fini(&b);
        return -ENOMEM;
    }
    if (!b.name || !b.ns) {
        snprintf(err, errlen, "pod without metadata.%s", b.name ? "namespace" : "name");
        bld_fini(&b);
        return -EINVAL;
    }
    pc_kube_pod *p = layout(&b);
    bld_fini(&b);
    if (!p) {
        snprintf(err, errlen, "pod: out of memory");
        return -ENOMEM;
    }
    *out = p;
    return 0;
}

void pc_kube_pod_free(pc_kube_pod *p)
{
    free(p);
}

const char *pc_kube_pod_label(const pc_kube_pod *p, const char *key)
{
    for (size_t i = p->n_labels; i-- > 0;)
        if (strcmp(p->labels[i].key, key) == 0)
            return p->labels[i].value;
    return NULL;
}

const pc_kube_annotation *pc_kube_pod_annotation(const pc_kube_pod *p, const char *key)
{
    for (size_t i = p->n_annotations; i-- > 0;)
        if (strcmp(p->annotations[i].key, key) == 0)
            return &p->annotations[i];
    return NULL;
}

/* ---- envelopes ------------------------------------------------------------------------------ */

int pc_kube_watch_event_scan(const char *line, size_t len, char *type, size_t typecap,
                             const char **object, size_t *object_len)
{
    pc__js js;
    pc__js_init(&js, line, len);
    char key[16];
    bool have_type = false;
    int rc;
    *object = NULL;
    *object_len = 0;
    if (typecap)
        type[0] = '\0';
    if (pc__js_obj_begin(&js))
        return -EBADMSG;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (!strcmp(key, "type") && pc__js_peek(&js) == '"') {
            int n = pc__js_str(&js, type, typecap);
            if (n == -EBADMSG)
                return n;
            have_type = n > 0;
        } else if (!strcmp(key, "object") && pc__js_peek(&js) == '{') {
            const char *start = js.p; /* peek skipped the whitespace */
            if (pc__js_skip(&js))
                return -EBADMSG;
            *object = start;
            *object_len = (size_t)(js.p - start);
        } else if (pc__js_skip(&js)) {
            return -EBADMSG;
        }
    }
    if (rc < 0 || pc__js_end(&js))
        return -EBADMSG;
    return have_type && *object ? 0 : -ENOENT;
}

int pc_kube_object_rv(const char *json, size_t len, char *rv, size_t cap)
{
    return pc__js_metadata_rv(json, len, rv, cap);
}

int pc_kube_list_scan(const char *body, size_t len,
                      int (*on_item)(void *arg, const char *item, size_t len), void *arg, char *rv,
                      size_t rvcap, char *cont, size_t contcap)
{
    pc__js js;
    pc__js_init(&js, body, len);
    char key[32];
    bool have_rv = false, have_items = false, too_long = false;
    int rc;
    if (rvcap)
        rv[0] = '\0';
    if (contcap)
        cont[0] = '\0';
    if (pc__js_obj_begin(&js))
        return -EBADMSG;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (!strcmp(key, "metadata") && pc__js_peek(&js) == '{') {
            int mrc;
            pc__js_obj_begin(&js);
            while ((mrc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
                bool is_rv = !strcmp(key, "resourceVersion"), is_cont = !strcmp(key, "continue");
                if ((is_rv || is_cont) && pc__js_peek(&js) == '"') {
                    int n = is_rv ? pc__js_str(&js, rv, rvcap) : pc__js_str(&js, cont, contcap);
                    if (n == -EBADMSG)
                        return n;
                    too_long |= n == -EMSGSIZE;
                    have_rv |= is_rv && n > 0;
                } else if (pc__js_skip(&js)) {
                    return -EBADMSG;
                }
            }
            if (mrc < 0)
                return -EBADMSG;
        } else if (!strcmp(key, "items") && pc__js_peek(&js) == '[') {
            int arc;
            have_items = true;
            pc__js_arr_begin(&js);
            while ((arc = pc__js_arr_next(&js)) == 1) {
                pc__js_peek(&js); /* skips the whitespace before the item */
                const char *start = js.p;
                if (pc__js_skip(&js))
                    return -EBADMSG;
                int r = on_item(arg, start, (size_t)(js.p - start));
                if (r)
                    return r;
            }
            if (arc < 0)
                return -EBADMSG;
        } else if (!strcmp(key, "items") && pc__js_peek(&js) == 'n') {
            have_items = true; /* null: an empty list as Go may write it */
            if (pc__js_skip(&js))
                return -EBADMSG;
        } else if (pc__js_skip(&js)) {
            return -EBADMSG;
        }
    }
    if (rc < 0 || pc__js_end(&js))
        return -EBADMSG;
    if (too_long)
        return -EMSGSIZE;
    return have_rv && have_items ? 0 : -ENOENT;
}
