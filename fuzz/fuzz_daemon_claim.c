/* Fuzz target: podclaimd's claim request decoder (pcd_claim_parse in daemon/claims.c: the body
 * of POST /v1/pools/{ns}/{pool}/claims and /v1/envs/{env}/claims).
 *
 * Input: the first byte picks the context (bit 0: an env claim, "requiredTags" allowed; bit 1:
 * the pool knows its containers, "sandbox" and "side"; bit 2: no pool at all, as for an env),
 * the rest is the body. Oracle, beyond no crash and no leak:
 *   - a refusal is 400 (not JSON) or 422 (a field), with a message the JSON answer can carry
 *     (valid UTF-8);
 *   - an accepted claim carries exactly what the body says (checked against jansson's own
 *     reading of it), no key podclaimd writes itself, a priority in 0..5, a deadline ahead;
 *   - and it is a claim the CAS backend will send: pc_kube_patch_body builds its PATCH (so a
 *     claim is never accepted here only to be REJECTED by the pool later).
 */
#include "fuzz.h"
#include "podclaimd.h"

#include <podclaim/kube.h>

#include <ctype.h>
#include <errno.h>
#include <string.h>

static bool ends_alnum(const char *s)
{
    size_t n = strlen(s);
    return n && isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[n - 1]);
}

/* kvs[0..n) equal the object field of the body, key by key */
static void same_map(json_t *doc, const char *field, const pc_kv *kv, size_t n)
{
    json_t *o = json_object_get(doc, field);
    FUZZ_CHECK(json_object_size(o) == n, "%s: %zu decoded, %zu in the body", field, n,
               json_object_size(o));
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_object_get(o, kv[i].key));
        FUZZ_CHECK(v && strcmp(v, kv[i].value) == 0, "%s.%s differs", field, kv[i].key);
        FUZZ_CHECK(strncmp(kv[i].key, "podclaim.io/", 12) != 0 || strcmp(field, "images") == 0 ||
                           (strcmp(kv[i].key, "podclaim.io/phase") &&
                            strcmp(kv[i].key, "podclaim.io/pool") &&
                            strcmp(kv[i].key, "podclaim.io/claim-id") &&
                            strcmp(kv[i].key, "podclaim.io/claimed-at")),
                   "reserved key %s accepted", kv[i].key);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool env = data[0] & 1, known = data[0] & 2, nopool = data[0] & 4;
    static char *containers[] = {"sandbox", "side"};
    static pcd_pool pool;
    memset(&pool, 0, sizeof(pool));
    pool.cfg.claim_timeout_ns = 30 * (int64_t)1000000000;
    if (known) {
        pool.containers = containers;
        pool.n_containers = 2;
    }
    pcd_req *q = calloc(1, sizeof(*q));
    q->body_len = size - 1;
    q->body = malloc(q->body_len ? q->body_len : 1);
    memcpy(q->body, data + 1, q->body_len);
    int code = 0;
    char msg[600] = "";
    json_t *tags = NULL;
    int64_t before = pc_now_ns();
    int rc = pcd_claim_parse(q, nopool ? NULL : &pool, env, &code, msg, sizeof(msg), &tags);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1 && (code == 400 || code == 422), "rc %d code %d: %s", rc, code, msg);
        /* the message goes into the JSON answer (pcd_reply_error): jansson must take it */
        json_t *s = json_string(msg);
        FUZZ_CHECK(msg[0] && s, "message not valid UTF-8: \"%s\"", msg);
        json_decref(s);
        pcd_req_free(q);
        return 0;
    }
    /* accepted: a JSON object (or no body), read the same way jansson reads it */
    json_t *doc = q->doc;
    FUZZ_CHECK(json_is_object(doc));
    const pc_claim *c = &q->claim;
    const pc_claim_opts *o = &c->opts;
    json_t *p = json_object_get(doc, "priority");
    FUZZ_CHECK(c->priority >= 0 && c->priority <= 5 &&
                       (!p || json_integer_value(p) == (json_int_t)c->priority),
               "priority %d", c->priority);
    FUZZ_CHECK(c->deadline_ns > before, "deadline not ahead");
    same_map(doc, "images", o->images, o->n_images);
    same_map(doc, "labels", o->labels, o->n_labels);
    same_map(doc, "annotations", o->annotations, o->n_annotations);
    for (size_t i = 0; i < o->n_images; i++) {
        FUZZ_CHECK(o->images[i].value[0], "empty image accepted");
        if (known && !nopool)
            FUZZ_CHECK(!strcmp(o->images[i].key, "sandbox") || !strcmp(o->images[i].key, "side"),
                       "unknown container %s accepted", o->images[i].key);
    }
    for (size_t i = 0; i < o->n_labels; i++)
        FUZZ_CHECK(!o->labels[i].value[0] || ends_alnum(o->labels[i].value),
                   "label value \"%s\" accepted", o->labels[i].value);
    json_t *t = json_object_get(doc, "targetPhase");
    if (t)
        FUZZ_CHECK(o->target_phase && !strcmp(o->target_phase, json_string_value(t)) &&
                   strcmp(o->target_phase, "Idle") && strcmp(o->target_phase, "Starting"));
    json_t *id = json_object_get(doc, "claimId");
    if (id)
        FUZZ_CHECK(c->id && !strcmp(c->id, json_string_value(id)) && strlen(c->id) < 64);
    FUZZ_CHECK(env || !json_object_get(doc, "requiredTags"), "requiredTags outside an env");
    if (tags)
        FUZZ_CHECK(json_is_array(tags));
    /* the PATCH the CAS backend would send for it */
    pc_cas_request req = {.pod = {"ns", "pod", NULL, "1"},
                          .opts = o,
                          .target_phase = o->target_phase ? o->target_phase : "Running",
                          .claim_id = c->id ? c->id : "pool-n-1",
                          .claimed_at_unix_ns = 1700000000123456789LL};
    size_t cap = 1 << 20;
    char *buf = malloc(cap), err[256] = "";
    int len = pc_kube_patch_body(&req, buf, cap, err, sizeof(err));
    /* -EMSGSIZE: escaping may grow a body near http.maxBody past the 64 KiB patch bound */
    FUZZ_CHECK(len >= 0 || (len == -EMSGSIZE && q->body_len > 65536 / 6),
               "accepted by podclaimd, refused by the CAS backend: %s", err);
    free(buf);
    pcd_req_free(q);
    return 0;
}
