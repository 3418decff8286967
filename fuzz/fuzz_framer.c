/* Fuzz target: the watch-stream line framer (src/kube/framer.c).
 *
 * Input: byte 0 sets the line bound (1..256), byte 1 the chunking; the rest is the stream,
 * cut into chunks of varying size. Oracle: the lines delivered are exactly those a plain
 * split on "\n" gives (one trailing "\r" dropped, empty lines skipped), as long as no line
 * exceeds the bound; a line over the bound is -EMSGSIZE, never delivered in part.
 */
#include "framer.h"
#include "fuzz.h"

#include <errno.h>
#include <string.h>

typedef struct seen {
    size_t max;
    size_t lines;
    uint64_t sum; /* a position-weighted checksum of the delivered bytes */
} seen;

static int on_line(void *arg, const char *line, size_t len)
{
    seen *s = arg;
    FUZZ_CHECK(len > 0 && len <= s->max, "len %zu max %zu", len, s->max);
    FUZZ_CHECK(memchr(line, '\n', len) == NULL);
    s->lines++;
    for (size_t i = 0; i < len; i++)
        s->sum = s->sum * 31 + (unsigned char)line[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = (size_t)data[0] + 1;
    unsigned seed = data[1];
    const char *p = (const char *)data + 2;
    size_t n = size - 2;

    /* the reference: split the whole stream at once */
    seen want = {.max = max};
    bool too_long = false;
    size_t start = 0, tail = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n')
            continue;
        size_t len = i - start;
        if (len && p[start + len - 1] == '\r')
            len--;
        if (len > max)
            too_long = true;
        else if (len)
            on_line(&want, p + start, len);
        start = i + 1;
    }
    tail = n - start;
    if (tail > max + 1) /* an unterminated line past the bound (+1: a "\r" may follow) */
        too_long = true;

    pc__framer f;
    seen got = {.max = max};
    pc__framer_init(&f, max);
    size_t off = 0;
    int err = 0;
    while (off < n) {
        size_t chunk = 1 + (seed = seed * 1103515245u + 12345u) % 23u;
        if (chunk > n - off)
            chunk = n - off;
        int rc = pc__framer_feed(&f, p + off, chunk, on_line, &got);
        FUZZ_CHECK(rc == 0 || rc == -EMSGSIZE, "rc %d", rc);
        if (rc)
            err = rc;
        off += chunk;
    }
    if (!too_long) {
        FUZZ_CHECK(err == 0, "rc %d without an over-long line", err);
        FUZZ_CHECK(got.lines == want.lines, "%zu lines, want %zu", got.lines, want.lines);
        FUZZ_CHECK(got.sum == want.sum, "line bytes differ");
        if (tail <= max)
            FUZZ_CHECK(pc__framer_pending(&f) == tail, "pending %zu, tail %zu",
                       pc__framer_pending(&f), tail);
    }
    pc__framer_fini(&f);
    return 0;
}
