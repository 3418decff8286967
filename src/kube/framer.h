/* Line framer for the watch stream: turns the chunks libcurl hands over into whole lines.
 *
 * Flow: API server -> libcurl chunks -> [framer] -> watch event lines -> informer cache.
 *
 * A Kubernetes watch answers with one JSON event per line ("\n"-terminated). Chunks cut
 * lines anywhere: an event may span many chunks, a chunk may carry many events, an event may
 * be bigger than any fixed buffer, and a dropped connection leaves a truncated last line.
 * The framer hands complete lines to a callback, straight out of the chunk when the line
 * lies wholly inside it (no copy), otherwise from its own buffer, which grows up to
 * max_line bytes and no further (STYLE: every growable buffer has a bound).
 *
 * Thread-safety: none; a framer belongs to the thread that drives its transfer.
 */
#ifndef PODCLAIM_KUBE_FRAMER_H
#define PODCLAIM_KUBE_FRAMER_H

#include <stddef.h>
#include <stdint.h>

/* One complete line without its "\n" (and without a trailing "\r"); never empty.
 * `line` is valid during the call only and is not NUL-terminated.
 * Return 0 to go on, anything else to stop: pc__framer_feed returns that value. */
typedef int (*pc__line_fn)(void *arg, const char *line, size_t len);

typedef struct pc__framer {
    char *buf;       /* partial line carried over between chunks; NULL until needed */
    size_t len;      /* bytes in buf */
    size_t cap;      /* allocated bytes of buf */
    size_t max_line; /* longest line accepted, in bytes without "\n" */
    uint64_t lines;  /* lines delivered so far */
} pc__framer;

/* Prepare a framer. max_line 0 = 16 MiB. Allocates nothing. Cannot fail. */
void pc__framer_init(pc__framer *f, size_t max_line);

/* Feed one chunk. Calls fn for every line completed by it, in order.
 * Returns 0; fn's non-zero return (the rest of the chunk is dropped and the framer reset:
 * stopping means the caller abandons the stream); -EMSGSIZE when a line grows beyond max_line (the partial line is dropped
 * and the framer is reset: the caller must treat the stream as broken); -ENOMEM. */
int pc__framer_feed(pc__framer *f, const char *data, size_t n, pc__line_fn fn, void *arg);

/* Bytes of an unterminated last line held now: after the stream ended, >0 means it was
 * truncated. Cannot fail. */
size_t pc__framer_pending(const pc__framer *f);

/* Forget any partial line (keeps the buffer for reuse). Cannot fail. */
void pc__framer_reset(pc__framer *f);

/* Free the buffer. The framer may be initialised again. Cannot fail. */
void pc__framer_fini(pc__framer *f);

#endif /* PODCLAIM_KUBE_FRAMER_H */
