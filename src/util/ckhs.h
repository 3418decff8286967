/* What the core's ck_hs hash sets share: the allocator shims and the pod key hash.
 *
 * Flow: used by the pool's pod table (src/reservation), the pool's offers (src/pool)
 * and the in-memory backend (src/membackend), each keyed by "namespace/name".
 *
 * Thread-safety: pc__ck_allocator is immutable; pc__pod_key_hash is a pure function.
 */
#ifndef PODCLAIM_UTIL_CKHS_H
#define PODCLAIM_UTIL_CKHS_H

#include <ck_malloc.h>

/* Plain libc behind ck_hs. ck_hs asks for deferred frees only when SPMC readers may still
 * walk an old bucket array; every user here reads under its single writer (or its mutex),
 * so freeing at once is safe. */
extern struct ck_malloc pc__ck_allocator;

/* FNV-1a over "ns/name" and the seed, finished with the splitmix64 mixer, so both the low
 * bits (ck_hs's bucket index) and the high bits (its pointer-packed tag) are well spread. */
unsigned long pc__pod_key_hash(const char *ns, const char *name, unsigned long seed);

#endif /* PODCLAIM_UTIL_CKHS_H */
