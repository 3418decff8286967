/* Fuzz target: kapi-sim's patch code (kapi-sim/patch.c: JSON merge, strategic merge, JSON
 * patch), linked as is.
 *
 * Input: byte 0 the patch type, then the document and the patch as JSON texts separated by a
 * NUL byte. Oracle: a result or an error with a message; a JSON merge patch is idempotent
 * (RFC 7386: applying it twice gives what applying it once gave).
 */
#include "fuzz.h"
#include "sim.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    ks_patch_type t = (ks_patch_type)(data[0] % KS_PATCH_COUNT);
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    const char *z = memchr(p, '\0', (size_t)(end - p));
    if (!z)
        return 0;
    json_t *doc = json_loadb(p, (size_t)(z - p), JSON_DECODE_ANY, NULL);
    json_t *patch = json_loadb(z + 1, (size_t)(end - z - 1), JSON_DECODE_ANY, NULL);
    if (doc && patch) {
        ks_err err = {0};
        json_t *once = ks_patch_apply(t, doc, patch, &err);
        if (!once) {
            FUZZ_CHECK(err.code >= 400 && err.message[0], "failed without a Status");
        } else if (t == KS_PATCH_MERGE) {
            ks_err e2 = {0};
            json_t *twice = ks_patch_apply(t, once, patch, &e2);
            FUZZ_CHECK(twice && json_equal(once, twice), "merge patch not idempotent");
            json_decref(twice);
        }
        json_decref(once);
    }
    char ct[64];
    snprintf(ct, sizeof(ct), "%.*s", (int)(z - p < 63 ? z - p : 63), p);
    ks_patch_type_parse(ct);
    json_decref(doc);
    json_decref(patch);
    return 0;
}
