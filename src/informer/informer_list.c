/* The informer's LIST: a paged, consistent snapshot of one pool's pods (see informer.h).
 *
 * Flow: API server -> [LIST pages -> pod cache (core)] -> pool offer/withdraw.
 *
 * Kubernetes behaviour relied on: a paged LIST (limit/continue) is one consistent snapshot;
 * its resourceVersion is the point to WATCH from, so no change between LIST and WATCH is
 * lost. A continue token expires with compaction (410): the LIST starts over.
 */
#include "informer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define INC(f) PC__INF_INC(inf, f)
#define ADD(f, v) PC__INF_ADD(inf, f, v)

void pc__informer_list_sweep(pc_informer *inf)
{
    /* Pods the snapshot no longer has were deleted while we were not watching. */
    pc__podcache_iter it;
    for (pc__pod *p = pc__podcache_first(&inf->cache, &it); p;
         p = pc__podcache_next(&inf->cache, &it))
        if (p->seen_gen != inf->gen)
            pc__informer_drop(inf, p);
}

/* A pod that is well-formed JSON but unusable is skipped with a warning and counted; malformed
 * JSON ends the page. */
int pc__informer_list_page(pc_informer *inf, const char *body, size_t len, char *rv, char *cont)
{
    pc__js js;
    char key[32];
    int rc;
    bool have_items = false;
    pc__js_init(&js, body, len);
    if ((rc = pc__js_obj_begin(&js)))
        goto bad;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (!strcmp(key, "metadata") && pc__js_peek(&js) == '{') {
            pc__js_obj_begin(&js);
            while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
                int n = 0;
                if (!strcmp(key, "resourceVersion") && pc__js_peek(&js) == '"')
                    n = pc__js_str(&js, rv, PC_RV_MAX);
                else if (!strcmp(key, "continue") && pc__js_peek(&js) == '"')
                    n = pc__js_str(&js, cont, 4096);
                else
                    n = pc__js_skip(&js);
                if (n == -EMSGSIZE) {
                    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                                 "informer=%s/%s msg=\"list %s too long\"", inf->namespace_,
                                 inf->pool, key);
                    return -EMSGSIZE;
                }
                if (n < 0)
                    goto bad;
            }
            if (rc < 0)
                goto bad;
        } else if (!strcmp(key, "items") && pc__js_peek(&js) == '[') {
            have_items = true;
            pc__js_arr_begin(&js);
            while ((rc = pc__js_arr_next(&js)) == 1) {
                pc__pod np;
                char err[160];
                memset(&np, 0, sizeof(np));
                int prc = pc__pod_scan(&js, &np, err, sizeof(err));
                if (prc == -EBADMSG) {
                    pc__pod_clear(&np);
                    goto bad;
                }
                if (prc) {
                    /* Well-formed but unusable (or no memory for it): skipped. A cached
                     * version of it is dropped by the sweep after the LIST. */
                    if (prc == -EINVAL)
                        INC(skipped);
                    else
                        INC(errors);
                    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                                 "informer=%s/%s msg=\"skipping pod in list: %s\"", inf->namespace_,
                                 inf->pool, err);
                    pc__pod_clear(&np);
                    continue;
                }
                pc__informer_apply(inf, &np, true);
            }
            if (rc < 0)
                goto bad;
        } else if (pc__js_skip(&js)) {
            goto bad;
        }
    }
    if (rc < 0 || pc__js_end(&js))
        goto bad;
    if (!have_items || !rv[0]) {
        pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                     "informer=%s/%s msg=\"malformed list page: no items or resourceVersion\"",
                     inf->namespace_, inf->pool);
        return -EBADMSG;
    }
    return 0;
bad:
    pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                 "informer=%s/%s msg=\"malformed list page at byte %zu: %s\"", inf->namespace_,
                 inf->pool, (size_t)(js.p - body), js.why ? js.why : "?");
    return -EBADMSG;
}

/* One full paged LIST, applied to the cache; pods not in it are dropped. Returns 0 (inf->rv
 * set to the list's version), -ECANCELED (stop), or another negative errno. */
int pc__informer_list(pc_informer *inf)
{
    char path[PC__INF_PATH_MAX], cont[4096] = "", enc[6144];
    int restarts = 0;
    char list_rv[PC_RV_MAX] = "";
    inf->rv[0] = '\0';
    inf->gen++;
    pc__informer_set_state(inf, PC__INF_LIST, inf->n.lists ? "relist" : "initial sync");
    for (;;) {
        int n = snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s&limit=%u",
                         inf->namespace_, inf->selector, inf->page_size);
        if (cont[0]) {
            if (pc__informer_urlenc(cont, enc, sizeof(enc)) ||
                snprintf(path + n, sizeof(path) - (size_t)n, "&continue=%s", enc) >=
                        (int)(sizeof(path) - (size_t)n)) {
                pc__kube_log(inf->client, PC_KUBE_LOG_ERROR,
                             "informer=%s/%s msg=\"continue token too long\"", inf->namespace_,
                             inf->pool);
                return -EMSGSIZE;
            }
        }
        pc_kube_response r;
        int rc = pc_kube_conn_request(inf->conn, "GET", path, NULL, NULL, 0, &r);
        if (rc == 0 && r.status == 410) {
            /* The continue token expired (compaction): start the LIST over. */
            pc__kube_log(inf->client, PC_KUBE_LOG_INFO,
                         "informer=%s/%s msg=\"list continue token expired, restarting\"",
                         inf->namespace_, inf->pool);
            pc_kube_response_fini(&r);
            if (++restarts > 3)
                return -EAGAIN; /* keeps expiring: back off, then try again */
            cont[0] = '\0';
            inf->gen++;
            continue;
        }
        if (rc || r.status != 200) {
            pc__kube_log(inf->client, PC_KUBE_LOG_WARN, "informer=%s/%s msg=\"list failed: %s\"",
                         inf->namespace_, inf->pool, r.error);
            pc_kube_response_fini(&r);
            return rc ? rc : -EIO;
        }
        INC(list_pages);
        inf->received_ns = pc__kube_mono_ns();
        ADD(list_bytes, r.body_len);
        char page_rv[PC_RV_MAX] = "", next[sizeof(cont)] = "";
        int prc = pc__informer_list_page(inf, r.body ? r.body : "", r.body_len, page_rv, next);
        pc_kube_response_fini(&r);
        if (prc) {
            INC(errors);
            return prc;
        }
        /* The resume point only once the whole LIST is in: a LIST cut short (error, stop)
         * must be redone, not resumed from the middle. */
        snprintf(list_rv, sizeof(list_rv), "%s", page_rv);
        bool more = next[0] != '\0';
        if (more && strcmp(cont, next) == 0) {
            INC(errors);
            pc__kube_log(inf->client, PC_KUBE_LOG_WARN,
                         "informer=%s/%s msg=\"list continue token did not advance\"",
                         inf->namespace_, inf->pool);
            return -EBADMSG;
        }
        snprintf(cont, sizeof(cont), "%s", next);
        if (pc__informer_on_wake(inf))
            return -ECANCELED;
        if (!more)
            break;
    }
    snprintf(inf->rv, sizeof(inf->rv), "%s", list_rv);
    pc__informer_list_sweep(inf);
    INC(lists);
    if (!atomic_load_explicit(&inf->synced, memory_order_relaxed)) {
        atomic_store_explicit(&inf->n.synced_at_ns, pc__kube_mono_ns(), memory_order_relaxed);
        /* release: a thread that sees synced also sees the counters written before it */
        atomic_store_explicit(&inf->synced, true, memory_order_release);
        pc__kube_log(inf->client, PC_KUBE_LOG_INFO, "informer=%s/%s msg=\"synced\" pods=%zu rv=%s",
                     inf->namespace_, inf->pool, inf->cache.count, inf->rv);
    }
    return 0;
}
