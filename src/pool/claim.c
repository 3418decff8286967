/* Claim results: the one place a claim ends and its callback runs.
 *
 * Flow: informer -> pool (inbox, ready-queue, pending) -> reservation -> CAS (backend)
 *       -> [result].
 *
 * Runs on the scheduler thread (or, for a pool shut down before it was started, on the
 * thread calling pc_pool_shutdown), so a callback never runs concurrently with another
 * of the same pool.
 */
#include "pool/pool_internal.h"

#include <string.h>

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void pc__claim_finish(pc_pool *p, pc_claim *c, pc_claim_status st, const char *error)
{
    int64_t now = pc_now_ns();
    pc_claim_result r;
    r.status = st;
    if (st == PC_CLAIM_OK) {
        copy_str(r.pod_namespace, sizeof(r.pod_namespace), c->priv.pod_namespace);
        copy_str(r.pod_name, sizeof(r.pod_name), c->priv.pod_name);
        copy_str(r.resource_version, sizeof(r.resource_version), c->priv.new_rv);
        r.error[0] = '\0';
    } else {
        r.pod_namespace[0] = r.pod_name[0] = r.resource_version[0] = '\0';
        copy_str(r.error, sizeof(r.error), error);
    }
    copy_str(r.claim_id, sizeof(r.claim_id), c->id ? c->id : c->priv.id_buf);
    r.latency_ns = pc__sub_sat(now, c->enqueued_at_ns);
    r.attempts = c->priv.attempts;
    pc__histogram_observe(&p->m.claim_latency, r.latency_ns);
    pc__count(&p->m.results[st]);
    c->priv.state = CLAIM_DONE;
    /* From here the claim is the caller's: the callback may free it. */
    c->cb(c, &r, c->cb_arg);
}
