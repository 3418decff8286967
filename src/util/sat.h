/* Saturating int64 arithmetic for times: deadlines, expiries and retry times computed from
 * caller or server values (a TTL or Retry-After of INT64_MAX) must not wrap into the past.
 * Not a public header. */
#ifndef PODCLAIM_UTIL_SAT_H
#define PODCLAIM_UTIL_SAT_H

#include <stdint.h>

/* a + b clamped to [INT64_MIN, INT64_MAX]. */
static inline int64_t pc__add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* a - b, clamped the same way (waiting times from a caller-set enqueued_at_ns). */
static inline int64_t pc__sub_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}

#endif
