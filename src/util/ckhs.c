/* Allocator shims and key hash shared by the core's ck_hs users. See ckhs.h. */
#include "util/ckhs.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static void *ck_malloc_libc(size_t n)
{
    return malloc(n);
}

static void *ck_realloc_libc(void *p, size_t old, size_t n, bool defer)
{
    (void)old;
    (void)defer;
    return realloc(p, n);
}

static void ck_free_libc(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer;
    free(p);
}

struct ck_malloc pc__ck_allocator = {
        .malloc = ck_malloc_libc, .realloc = ck_realloc_libc, .free = ck_free_libc};

unsigned long pc__pod_key_hash(const char *ns, const char *name, unsigned long seed)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (const unsigned char *p = (const unsigned char *)ns; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ '/') * 0x100000001b3ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return (unsigned long)(h ^ (h >> 31));
}
