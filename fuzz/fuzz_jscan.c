/* Fuzz target: the validating JSON pull scanner (src/kube/jscan.c).
 *
 * Oracles: (1) whatever the input, every entry point returns an error or a value, never reads
 * past the end (the input is a heap block of exactly its size in replay; libFuzzer's too);
 * (2) a document jansson accepts (strict JSON) is accepted by the scanner too, unless it
 * nests deeper than the scanner's bound; (3) a walk with every accessor agrees with a skip.
 */
#include "fuzz.h"
#include "jscan.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

static int depth_of(json_t *j)
{
    int d = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            int c = depth_of(v);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            int c = depth_of(v);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    return 0;
}

/* Walk one value with the typed accessors. Returns 0 or -EBADMSG. */
static int walk(pc__js *js)
{
    char buf[8];
    switch (pc__js_peek(js)) {
    case '{': {
        if (pc__js_obj_begin(js))
            return -EBADMSG;
        int rc;
        while ((rc = pc__js_obj_key(js, buf, sizeof(buf))) == 1) {
            FUZZ_CHECK(strlen(buf) < sizeof(buf));
            if (walk(js))
                return -EBADMSG;
        }
        return rc;
    }
    case '[': {
        if (pc__js_arr_begin(js))
            return -EBADMSG;
        int rc;
        while ((rc = pc__js_arr_next(js)) == 1)
            if (walk(js))
                return -EBADMSG;
        return rc;
    }
    case '"': {
        int n = pc__js_str(js, buf, sizeof(buf));
        FUZZ_CHECK(strlen(buf) < sizeof(buf));
        if (n >= 0)
            FUZZ_CHECK((size_t)n == strlen(buf), "length %d of \"%s\"", n, buf);
        return n == -EBADMSG ? -EBADMSG : 0;
    }
    default:
        return pc__js_skip(js);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    pc__js js;
    pc__js_init(&js, p, size);
    int skip = pc__js_skip(&js);
    if (skip == 0)
        skip = pc__js_end(&js);
    FUZZ_CHECK(skip == 0 || skip == -EBADMSG);
    FUZZ_CHECK(js.p >= p && js.p <= p + size);
    if (skip)
        FUZZ_CHECK(js.why != NULL, "an error without a reason");

    pc__js_init(&js, p, size);
    int w = walk(&js);
    if (w == 0)
        w = pc__js_end(&js);
    FUZZ_CHECK((w == 0) == (skip == 0), "walk %d, skip %d", w, skip);

    char rv[16];
    int m = pc__js_metadata_rv(p, size, rv, sizeof(rv));
    if (m >= 0)
        FUZZ_CHECK((size_t)m == strlen(rv));
    int mp = pc__js_metadata_rv_prefix(p, size, rv, sizeof(rv));
    if (m > 0)
        FUZZ_CHECK(mp == m, "prefix %d, whole %d", mp, m);

    /* jansson takes a NUL byte outside strings for the end of the text ("2\0" passes); JSON
     * does not (fuzz/regressions/jscan/nul-after-value): compare only NUL-free texts. */
    json_error_t je;
    json_t *j = memchr(p, '\0', size) ? NULL
                                      : json_loadb(p, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j && depth_of(j) <= PC__JS_MAX_DEPTH)
        FUZZ_CHECK(skip == 0, "jansson accepts, the scanner says %s", js.why ? js.why : "?");
    json_decref(j);
    return 0;
}
