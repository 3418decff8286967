/* Fuzz target: Status decoding for error messages (pc_kube_status_describe, jansson).
 *
 * Input: bytes 0-1 the HTTP status, byte 2 the message buffer size; the rest is the body.
 * Oracle: the message is NUL-terminated within its buffer; the code returned is the Status
 * code when positive, else the HTTP status.
 */
#include "fuzz.h"

#include <podclaim/kube.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    long http = 100 + (data[0] << 8 | data[1]) % 500;
    size_t cap = 1 + data[2];
    char *msg = malloc(cap); /* exactly cap bytes: ASan sees a write past it */
    long code = pc_kube_status_describe(http, (const char *)data + 3, size - 3, msg, cap);
    FUZZ_CHECK(memchr(msg, '\0', cap) != NULL, "message not terminated");
    FUZZ_CHECK(code > 0, "code %ld", code);
    free(msg);
    return 0;
}
