/* Fuzz target: the CAS patch body (pc_kube_patch_body, src/kube/patch.c).
 *
 * Input: fields separated by NUL bytes: resourceVersion, claim id, target phase, then triples
 * (kind "l"abel / "a"nnotation / "i"mage, key, value); the first byte sets the output buffer
 * size. Oracle: a body produced is JSON that jansson (strict, UTF-8) parses, and carries the
 * precondition, the phase, the claim id and every label, annotation and image as given; a
 * refusal names why; nothing is written past the buffer.
 */
#include "fuzz.h"

#include <podclaim/kube.h>

#include <errno.h>
#include <jansson.h>
#include <string.h>

#define MAXKV 16

static const char *tok(const char **p, const char *end)
{
    if (*p >= end)
        return NULL;
    const char *s = *p;
    const char *z = memchr(s, '\0', (size_t)(end - s));
    if (!z)
        return NULL; /* the last field must be terminated too */
    *p = z + 1;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cap = 64 + (size_t)data[0] * 32;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    const char *rv = tok(&p, end), *id = tok(&p, end), *phase = tok(&p, end);
    if (!rv || !id || !phase)
        return 0;
    pc_kv kv[3][MAXKV];
    size_t n[3] = {0, 0, 0};
    const char *kind;
    while ((kind = tok(&p, end))) {
        const char *k = tok(&p, end), *v = tok(&p, end);
        if (!k || !v)
            break;
        int i = kind[0] == 'l' ? 0 : kind[0] == 'a' ? 1 : kind[0] == 'i' ? 2 : -1;
        if (i < 0 || n[i] == MAXKV)
            continue;
        kv[i][n[i]++] = (pc_kv){k, v};
    }
    pc_claim_opts o = {kv[2], n[2], kv[0], n[0], kv[1], n[1], phase[0] ? phase : NULL};
    pc_cas_request req = {.pod = {"ns", "pod", NULL, rv},
                          .opts = &o,
                          .target_phase = phase[0] ? phase : "Running",
                          .claim_id = id,
                          .claimed_at_unix_ns = 1700000000123456789LL};
    char *buf = malloc(cap), err[256] = "";
    int len = pc_kube_patch_body(&req, buf, cap, err, sizeof(err));
    if (len < 0) {
        FUZZ_CHECK(len == -EINVAL || len == -EMSGSIZE, "rc %d", len);
        FUZZ_CHECK(err[0], "refused without a message");
        free(buf);
        return 0;
    }
    FUZZ_CHECK((size_t)len < cap && buf[len] == '\0');
    json_error_t je;
    json_t *j = json_loadb(buf, (size_t)len, 0, &je);
    FUZZ_CHECK(j, "not JSON (%s at %d): %s", je.text, je.position, buf);
    json_t *md = json_object_get(j, "metadata");
    FUZZ_CHECK(!strcmp(json_string_value(json_object_get(md, "resourceVersion")), rv));
    json_t *l = json_object_get(md, "labels"), *a = json_object_get(md, "annotations");
    FUZZ_CHECK(
            !strcmp(json_string_value(json_object_get(l, "podclaim.io/phase")), req.target_phase));
    FUZZ_CHECK(!strcmp(json_string_value(json_object_get(a, "podclaim.io/claim-id")), id));
    /* every key as given (for a key given twice, the last value: as the server reads it) */
    for (size_t i = 0; i < n[0]; i++) {
        const char *got = json_string_value(json_object_get(l, kv[0][i].key));
        FUZZ_CHECK(got, "label %s missing", kv[0][i].key);
    }
    for (size_t i = 0; i < n[1]; i++)
        FUZZ_CHECK(json_string_value(json_object_get(a, kv[1][i].key)), "annotation missing");
    json_t *cs = json_object_get(json_object_get(j, "spec"), "containers");
    FUZZ_CHECK(json_array_size(cs) == n[2], "%zu containers for %zu images", json_array_size(cs),
               n[2]);
    for (size_t i = 0; i < n[2]; i++) {
        json_t *c = json_array_get(cs, i);
        FUZZ_CHECK(!strcmp(json_string_value(json_object_get(c, "name")), kv[2][i].key));
        FUZZ_CHECK(!strcmp(json_string_value(json_object_get(c, "image")), kv[2][i].value));
    }
    json_decref(j);
    free(buf);
    return 0;
}
