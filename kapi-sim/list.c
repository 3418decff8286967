/* kapi-sim LIST: selectors, limit/continue pages, and the resourceVersion semantics of
 * kube-apiserver (reading from etcd or the watch cache):
 *
 *   resourceVersion ""        the latest state (a consistent read)
 *   resourceVersion "0"       any state; kapi-sim serves the latest
 *   "X" (NotOlderThan/unset)  at least X: the latest; X in the future waits up to 3 s, then
 *                             504 Timeout (reason ResourceVersionTooLarge), like the cacher
 *   "X" + Exact               the state at revision X, rebuilt from the event history (each
 *                             event keeps the object before the change); X compacted or older
 *                             than the history: 410 Expired
 *
 * A continue token carries the list's revision and the last key; every page is the state at
 * that revision (etcd serves pages at the first page's revision), so pages form one snapshot.
 * Items are ordered by key (namespace/name), as etcd orders them.
 */
#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOO_LARGE_WAIT_NS 3000000000LL /* the cacher's wait for a future resourceVersion */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_encode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
}

static bool b64_decode(const char *in, char *out, size_t cap)
{
    size_t o = 0, bits = 0;
    uint32_t acc = 0;
    for (; *in; in++) {
        const char *p = strchr(b64, *in);
        if (!p)
            return false;
        acc = (acc << 6) | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return false;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A decimal revision with nothing else around it. */
static bool parse_rev(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ListOptions validation (apimachinery ValidateListOptions): 422 on meta.k8s.io ListOptions. */
static bool check_opts(const ks_list_opts *o, ks_err *err)
{
    const char *m = o->rv_match && *o->rv_match ? o->rv_match : NULL;
    const char *why = NULL, *type = "FieldValueForbidden";
    if (m && strcmp(m, "Exact") != 0 && strcmp(m, "NotOlderThan") != 0) {
        why = "Unsupported value";
        type = "FieldValueNotSupported";
    } else if (m && o->cont && *o->cont) {
        why = "Forbidden: resourceVersionMatch is forbidden when continue is provided";
    } else if (m && (!o->rv || !*o->rv)) {
        why = "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided";
    } else if (m && strcmp(m, "Exact") == 0 && strcmp(o->rv, "0") == 0) {
        why = "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"";
    }
    if (!why)
        return true;
    ks_err_set(err, 422, "Invalid",
               "ListOptions.meta.k8s.io \"\" is invalid: "
               "resourceVersionMatch: %s",
               why);
    ks_err_details(err, "meta.k8s.io", "ListOptions", NULL);
    ks_err_cause(err, type, "resourceVersionMatch", "%s", why);
    return false;
}

/* The objects of res as they were at revision rev (a new object mapping key -> object), or
 * NULL when the history no longer reaches back to rev. Store mutex held. */
static json_t *state_at_locked(ks_store *s, const ks_res *res, uint64_t rev)
{
    if (rev >= s->rev)
        return json_copy(s->objs[res->id]);
    if (rev < s->compacted || rev + 1 < s->lo)
        return NULL;
    json_t *m = json_copy(s->objs[res->id]);
    for (uint64_t r = s->rev; r > rev; r--) {
        const ks_event *e = ks_store_event_locked(s, r);
        if (!e || e->res != res->id)
            continue;
        char key[512];
        ks_key(key, sizeof key, res, ks_meta_str(e->obj, "namespace"), ks_meta_str(e->obj, "name"));
        if (e->type == KS_EV_ADDED)
            json_object_del(m, key);
        else if (e->old)
            json_object_set(m, key, e->old);
    }
    return m;
}

static void err_expired(ks_err *err, bool cont)
{
    if (cont)
        ks_err_set(err, 410, "Expired",
                   "The provided continue parameter is too old to display a consistent list "
                   "result. You can start a new list without the continue parameter, or use the "
                   "continue token in this response to retrieve the remainder of the results. "
                   "Continuing with the provided token results in an inconsistent list - objects "
                   "that were created, modified, or deleted between the time the first chunk was "
                   "returned and now may show up in the list.");
    else
        ks_err_set(err, 410, "Expired", "The resourceVersion for the provided list is too old.");
}

/* Wait (store mutex held) until the store reaches rev or the cacher's patience runs out. */
static bool wait_for_rev_locked(ks_store *s, uint64_t rev)
{
    int64_t end = ks_now_ns() + TOO_LARGE_WAIT_NS;
    while (s->rev < rev && !s->shutdown) {
        int64_t now = ks_now_ns();
        if (now >= end)
            return false;
        /* Polled rather than woken: a list from the future is a client bug, not a hot path. */
        pthread_mutex_unlock(&s->mu);
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->mu);
    }
    return s->rev >= rev;
}

json_t *ks_list(ks_store *s, const ks_res *res, const char *ns, const ks_list_opts *o, ks_err *err)
{
    if (!check_opts(o, err))
        return NULL;
    const char *rv = o->rv && *o->rv ? o->rv : NULL;
    bool exact = o->rv_match && strcmp(o->rv_match, "Exact") == 0;
    uint64_t want = 0; /* 0 = the latest */
    if (rv && strcmp(rv, "0") != 0 && !parse_rev(rv, &want)) {
        ks_err_set(err, 400, "BadRequest", "invalid resource version: %.60s", rv);
        return NULL;
    }
    char start[600] = "";
    uint64_t list_rev = 0;
    bool cont = o->cont && *o->cont;
    if (cont) {
        if (want) {
            ks_err_set(err, 400, "BadRequest",
                       "specifying resource version is not allowed when using continue");
            return NULL;
        }
        char dec[700];
        char *sep;
        if (!b64_decode(o->cont, dec, sizeof dec) || !(sep = strchr(dec, '|')) ||
            sscanf(dec, "%" SCNu64, &list_rev) != 1 || list_rev == 0) {
            ks_err_set(err, 400, "BadRequest", "continue key is not valid: %.100s", o->cont);
            return NULL;
        }
        snprintf(start, sizeof start, "%s", sep + 1);
    }
    char pfx[300] = "";
    size_t pl = 0;
    if (res->namespaced && ns)
        pl = (size_t)snprintf(pfx, sizeof pfx, "%s/", ns);

    pthread_mutex_lock(&s->mu);
    if (want > s->rev && !wait_for_rev_locked(s, want)) {
        pthread_mutex_unlock(&s->mu);
        ks_err_set(err, 504, "Timeout",
                   "Timeout: Too large resource version: %" PRIu64 ", current: %" PRIu64, want,
                   s->rev);
        ks_err_cause(err, "ResourceVersionTooLarge", NULL, "Too large resource version");
        ks_err_details(err, NULL, NULL, NULL); /* NewTimeoutError names no resource */
        err->retry_after_s = 1;
        return NULL;
    }
    if (!list_rev)
        list_rev = exact ? want : s->rev;
    json_t *objs = state_at_locked(s, res, list_rev);
    pthread_mutex_unlock(&s->mu);
    if (!objs) {
        err_expired(err, cont);
        return NULL;
    }

    size_t n = json_object_size(objs), k = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    json_t *items = json_array();
    if (!keys || !items) {
        free(keys);
        json_decref(items);
        json_decref(objs);
        ks_err_set(err, 500, "InternalError", "out of memory");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(objs, key, v)
    {
        if (pl && strncmp(key, pfx, pl) != 0)
            continue;
        if (start[0] && strcmp(key, start) <= 0)
            continue;
        keys[k++] = key;
    }
    qsort(keys, k, sizeof *keys, cmp_str);
    size_t taken = 0, i;
    const char *last = NULL;
    for (i = 0; i < k; i++) {
        json_t *ob = json_object_get(objs, keys[i]);
        if (!ks_lsel_match(o->lsel, json_object_get(json_object_get(ob, "metadata"), "labels")) ||
            !ks_fsel_match(o->fsel, ob))
            continue;
        if (o->limit > 0 && taken == (size_t)o->limit)
            break;
        if (res->custom) {
            json_array_append(items, ob);
        } else { /* items of a typed list carry no kind/apiVersion (custom ones do) */
            json_t *it = json_copy(ob);
            json_object_del(it, "kind");
            json_object_del(it, "apiVersion");
            json_array_append_new(items, it);
        }
        taken++;
        last = keys[i];
    }
    /* remainingItemCount: sent with a continue token when nothing filters the list */
    json_int_t remaining = -1;
    if (o->limit > 0 && i < k && last && ks_lsel_empty(o->lsel) && !o->fsel_set)
        remaining = (json_int_t)(k - i);
    char token[1000] = "";
    if (o->limit > 0 && i < k && last) {
        char raw[700];
        int rl = snprintf(raw, sizeof raw, "%" PRIu64 "|%s", list_rev, last);
        b64_encode(raw, (size_t)rl < sizeof raw ? (size_t)rl : sizeof raw - 1, token);
    }
    free(keys);
    json_decref(objs);

    char rvs[24];
    snprintf(rvs, sizeof rvs, "%" PRIu64, list_rev);
    json_t *md = json_pack("{s:s}", "resourceVersion", rvs);
    if (token[0])
        json_object_set_new(md, "continue", json_string(token));
    else if (res->custom && o->limit > 0) /* the unstructured list of a CR says it: "" */
        json_object_set_new(md, "continue", json_string(""));
    if (token[0] && remaining >= 0)
        json_object_set_new(md, "remainingItemCount", json_integer(remaining));
    return json_pack("{s:s,s:s,s:o,s:o}", "kind", res->list_kind, "apiVersion", res->api_version,
                     "metadata", md, "items", items);
}

json_t *ks_api_list(ks_store *s, const ks_res *res, const char *ns, const ks_lsel *ls,
                    const ks_fsel *fs, long limit, const char *cont, ks_err *err)
{
    ks_list_opts o = {.lsel = (ks_lsel *)ls, .fsel = (ks_fsel *)fs, .limit = limit, .cont = cont};
    return ks_list(s, res, ns, &o, err);
}
