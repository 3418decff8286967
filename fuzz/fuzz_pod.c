/* Fuzz target: the pod decoder (src/informer/podcache.c) on top of the scanner.
 *
 * Oracle: a pod accepted has a name, a namespace and a resourceVersion within their bounds,
 * and its phase is exactly its podclaim.io/phase label (or "" when the label is absent or too
 * long); whatever is refused leaves nothing to free but what pc__pod_clear frees.
 */
#include "fuzz.h"
#include "podcache.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pc__js js;
    pc__pod p;
    char err[160] = "";
    memset(&p, 0, sizeof(p));
    pc__js_init(&js, (const char *)data, size);
    int rc = pc__pod_scan(&js, &p, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EBADMSG || rc == -ENOMEM, "rc %d", rc);
    FUZZ_CHECK(strlen(err) < sizeof(err));
    if (rc == 0) {
        FUZZ_CHECK(p.name[0] && strlen(p.name) < sizeof(p.name));
        FUZZ_CHECK(p.namespace_[0] && strlen(p.namespace_) < sizeof(p.namespace_));
        FUZZ_CHECK(p.rv[0] && strlen(p.rv) < sizeof(p.rv));
        FUZZ_CHECK(strlen(p.uid) < sizeof(p.uid));
        const char *ph = pc__pod_label(&p, "podclaim.io/phase");
        if (ph && strlen(ph) < sizeof(p.phase))
            FUZZ_CHECK(strcmp(ph, p.phase) == 0, "phase \"%s\", label \"%s\"", p.phase, ph);
        else if (!ph)
            FUZZ_CHECK(p.phase[0] == '\0', "phase \"%s\" without the label", p.phase);
        for (size_t i = 0; i < p.n_labels; i++)
            FUZZ_CHECK(p.labels[i].key[0], "an empty label key");
        if (pc__pod_is_idle(&p))
            FUZZ_CHECK(!strcmp(p.phase, "Idle") && p.running && p.ready && !p.deleting);
    } else if (rc != -EBADMSG) {
        FUZZ_CHECK(err[0], "refused without a message");
    }
    pc__pod_clear(&p);
    return 0;
}
