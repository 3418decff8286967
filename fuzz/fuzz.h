/* Shared by the fuzz harnesses: the libFuzzer entry points and a check that aborts.
 *
 * Every harness is built two ways (fuzz/CMakeLists.txt): with -fsanitize=fuzzer as a libFuzzer
 * binary (fuzz_<name>, PC_FUZZ=ON), and with replay.c as a plain program (replay_<name>) that
 * runs the seed corpus and the regression inputs once, as a CTest test in every build.
 */
#ifndef PODCLAIM_FUZZ_H
#define PODCLAIM_FUZZ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken invariant: print it and abort, which libFuzzer records as a crash. */
__attribute__((noreturn, format(printf, 4, 5))) static inline void
fuzz_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: check failed: %s:", file, line, expr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                 \
    } while (0)

#endif
