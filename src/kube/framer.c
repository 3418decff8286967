/* Line framer for the watch stream (see framer.h).
 *
 * Flow: API server -> libcurl chunks -> [framer] -> watch event lines -> informer cache.
 *
 * Cost: a line that starts and ends inside one chunk is handed over in place; only the
 * head of a line cut by a chunk boundary is copied, and its tail is appended once. The
 * buffer doubles up to max_line, so a 10 MB event costs O(size) copies, not O(size^2).
 */
#include "framer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PC__FRAMER_DEFAULT_MAX (16u << 20)
#define PC__FRAMER_MIN_CAP 4096u

void pc__framer_init(pc__framer *f, size_t max_line)
{
    memset(f, 0, sizeof(*f));
    f->max_line = max_line ? max_line : PC__FRAMER_DEFAULT_MAX;
}

void pc__framer_fini(pc__framer *f)
{
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
}

void pc__framer_reset(pc__framer *f)
{
    f->len = 0;
}

size_t pc__framer_pending(const pc__framer *f)
{
    return f->len;
}

/* Append to the carried-over partial line, growing the buffer within max_line. */
static int carry(pc__framer *f, const char *p, size_t n)
{
    if (n > f->max_line + 1 - f->len) /* +1: a "\r" before "\n" is stripped later */
        return -EMSGSIZE;
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : PC__FRAMER_MIN_CAP;
        while (cap < f->len + n)
            cap *= 2;
        if (cap > f->max_line + 1)
            cap = f->max_line + 1;
        char *b = realloc(f->buf, cap);
        if (!b)
            return -ENOMEM;
        f->buf = b;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
    return 0;
}

/* Deliver one line unless it is empty (after dropping a trailing "\r"). */
static int deliver(pc__framer *f, const char *line, size_t len, pc__line_fn fn, void *arg)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (len > f->max_line)
        return -EMSGSIZE;
    if (len == 0)
        return 0;
    f->lines++;
    return fn(arg, line, len);
}

int pc__framer_feed(pc__framer *f, const char *data, size_t n, pc__line_fn fn, void *arg)
{
    const char *p = data, *end = data + n;
    int rc = 0;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            rc = carry(f, p, (size_t)(end - p));
            if (rc)
                goto fail;
            return 0;
        }
        if (f->len) {
            /* The head of this line came with earlier chunks: complete it in the buffer. */
            rc = carry(f, p, (size_t)(nl - p));
            if (rc)
                goto fail;
            size_t len = f->len;
            f->len = 0; /* before the callback: the line is consumed whatever it returns */
            rc = deliver(f, f->buf, len, fn, arg);
        } else {
            rc = deliver(f, p, (size_t)(nl - p), fn, arg);
        }
        if (rc)
            goto fail;
        p = nl + 1;
    }
    return 0;

fail:
    f->len = 0;
    return rc;
}
