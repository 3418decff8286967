/* Fuzz target: kapi-sim's label and field selectors (kapi-sim/selector.c), linked as is.
 *
 * Input: line 1 a label selector, line 2 a field selector, the rest a JSON object used as the
 * labels and as the object's metadata. Oracle: a parse either gives a selector or a 400 with
 * a message; matching never crashes; the empty selector matches everything.
 */
#include "fuzz.h"
#include "sim.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *nl1 = memchr(p, '\n', size);
    if (!nl1)
        return 0;
    const char *nl2 = memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1));
    if (!nl2)
        return 0;
    char *ls = strndup(p, (size_t)(nl1 - p)), *fs = strndup(nl1 + 1, (size_t)(nl2 - nl1 - 1));
    json_t *labels = json_loadb(nl2 + 1, (size_t)(end - nl2 - 1), 0, NULL);
    if (!json_is_object(labels)) {
        json_decref(labels);
        labels = json_pack("{s:s,s:s}", "podclaim.io/pool", "p", "podclaim.io/phase", "Idle");
    }
    json_t *obj =
            json_pack("{s:{s:s,s:s,s:O},s:{s:s},s:{s:s}}", "metadata", "name", "a", "namespace",
                      "f", "labels", labels, "spec", "nodeName", "n", "status", "phase", "Running");
    ks_err err = {0};
    ks_lsel *l = ks_lsel_parse(ls, &err);
    if (l) {
        bool all = ks_lsel_empty(l);
        bool m = ks_lsel_match(l, labels);
        FUZZ_CHECK(!all || m, "the empty selector refused a pod");
        ks_lsel_match(l, NULL);
        ks_lsel_free(l);
    } else {
        FUZZ_CHECK(err.code == 400 && err.message[0], "no 400 for a bad label selector");
    }
    ks_err ferr = {0};
    ks_fsel *f = ks_fsel_parse(fs, &ferr);
    if (f) {
        ks_fsel_match(f, obj);
        ks_fsel_free(f);
    } else {
        FUZZ_CHECK(ferr.code == 400 && ferr.message[0], "no 400 for a bad field selector");
    }
    json_decref(obj);
    json_decref(labels);
    free(ls);
    free(fs);
    return 0;
}
