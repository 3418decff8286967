/* Tests of src/reservation: the TTL-bounded pod -> claim map the scheduler consults
 * before it selects a pod (informer -> pool -> [reservation] -> CAS workers). */
#include "common.h"
#include "reservation/reservation.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TTL 1000 /* ns; the map never reads a clock, so tests pass their own "now" */

static pc__reservation_map *new_map(void)
{
    pc__reservation_map *m = NULL;
    int rc = pc__reservation_map_new(TTL, &m);
    cr_assert_eq(rc, 0, "map_new: expected 0, got %d", rc);
    cr_assert_not_null(m);
    return m;
}

Test(reservation, reserved_pod_is_found_with_its_version_and_claim, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "pod-a", "41", "claim-1", 100), 0);
    const pc__reservation *r = pc__reservation_lookup(m, "ns", "pod-a", 100);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->namespace_, "ns");
    cr_assert_str_eq(r->name, "pod-a");
    cr_assert_str_eq(r->rv, "41");
    cr_assert_str_eq(r->claim_id, "claim-1");
    cr_assert_eq(r->reserved_at_ns, 100);
    cr_assert_eq(r->expires_at_ns, 100 + TTL, "expires_at: expected %d, got %lld", 100 + TTL,
                 (long long)r->expires_at_ns);
    cr_assert_null(pc__reservation_lookup(m, "ns", "pod-b", 100), "other pod must be absent");
    cr_assert_null(pc__reservation_lookup(m, "other", "pod-a", 100), "other ns must be absent");
    cr_assert_eq(pc__reservation_count(m), 1);
    pc__reservation_map_free(m);
}

Test(reservation, key_is_namespace_and_name_not_their_concatenation, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "a", "b/c", "1", "x", 0), 0);
    cr_assert_eq(pc__reservation_reserve(m, "a/b", "c", "2", "y", 0), 0);
    cr_assert_eq(pc__reservation_count(m), 2);
    cr_assert_str_eq(pc__reservation_lookup(m, "a", "b/c", 0)->rv, "1");
    cr_assert_str_eq(pc__reservation_lookup(m, "a/b", "c", 0)->rv, "2");
    pc__reservation_map_free(m);
}

Test(reservation, released_pod_is_no_longer_reserved, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "1", "c", 0), 0);
    cr_assert_eq(pc__reservation_release(m, "ns", "p"), 0);
    cr_assert_null(pc__reservation_lookup(m, "ns", "p", 0));
    cr_assert_eq(pc__reservation_count(m), 0);
    cr_assert_eq(pc__reservation_next_expiry(m), 0);
    int rc = pc__reservation_release(m, "ns", "p");
    cr_assert_eq(rc, -ENOENT, "second release: expected -ENOENT, got %d", rc);
    pc__reservation_map_free(m);
}

Test(reservation, stale_offer_is_ignored_until_release, .timeout = 10)
{
    /* The scheduler's use: a pod reserved at rv 7 and offered again at 7 is stale; once
     * the informer shows 8 the reservation is released and the pod is selectable. */
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "7", "c", 0), 0);
    const pc__reservation *r = pc__reservation_lookup(m, "ns", "p", 10);
    cr_assert(r != NULL && strcmp(r->rv, "7") == 0, "offer at 7 must find the reservation");
    cr_assert_eq(pc__reservation_release(m, "ns", "p"), 0);
    cr_assert_null(pc__reservation_lookup(m, "ns", "p", 10));
    pc__reservation_map_free(m);
}

Test(reservation, reserving_again_replaces_and_moves_expiry_to_the_tail, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "a", "1", "c1", 0), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "b", "1", "c2", 10), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "a", "5", "c3", 20), 0);
    cr_assert_eq(pc__reservation_count(m), 2, "replace must not add an entry");
    const pc__reservation *r = pc__reservation_lookup(m, "ns", "a", 20);
    cr_assert_str_eq(r->rv, "5");
    cr_assert_str_eq(r->claim_id, "c3");
    cr_assert_eq(r->expires_at_ns, 20 + TTL);
    cr_assert_eq(pc__reservation_next_expiry(m), 10 + TTL,
                 "b is now the earliest: expected %d, got %lld", 10 + TTL,
                 (long long)pc__reservation_next_expiry(m));
    /* At 10 + TTL only b expires; a was moved behind it. */
    cr_assert_eq(pc__reservation_sweep(m, 10 + TTL, NULL, NULL), 1);
    cr_assert_not_null(pc__reservation_lookup(m, "ns", "a", 10 + TTL));
    pc__reservation_map_free(m);
}

Test(reservation, expired_entry_is_invisible_before_the_sweep, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "1", "c", 0), 0);
    cr_assert_not_null(pc__reservation_lookup(m, "ns", "p", TTL - 1));
    cr_assert_null(pc__reservation_lookup(m, "ns", "p", TTL), "expired at exactly expires_at");
    cr_assert_eq(pc__reservation_count(m), 1, "still counted until swept");
    /* An expired but unswept pod can be reserved again (replaced). */
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "2", "c", TTL + 5), 0);
    cr_assert_str_eq(pc__reservation_lookup(m, "ns", "p", TTL + 5)->rv, "2");
    cr_assert_eq(pc__reservation_count(m), 1);
    pc__reservation_map_free(m);
}

struct seen {
    char names[8][PC_NAME_MAX];
    int64_t expires[8];
    int n;
};

static void record_expired(const pc__reservation *r, void *arg)
{
    struct seen *s = arg;
    if (s->n < 8) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", r->name);
        s->expires[s->n] = r->expires_at_ns;
    }
    s->n++;
}

Test(reservation, sweep_removes_expired_oldest_first_and_calls_back, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p0", "1", "c", 0), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p1", "1", "c", 5), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p2", "1", "c", 10), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p3", "1", "c", 20), 0);

    struct seen s = {0};
    cr_assert_eq(pc__reservation_sweep(m, TTL - 1, record_expired, &s), 0);
    cr_assert_eq(s.n, 0, "nothing expired yet, callback called %d times", s.n);

    size_t n = pc__reservation_sweep(m, 10 + TTL, record_expired, &s);
    cr_assert_eq(n, 3, "expected 3 swept, got %zu", n);
    cr_assert_eq(s.n, 3);
    cr_assert_str_eq(s.names[0], "p0");
    cr_assert_str_eq(s.names[1], "p1");
    cr_assert_str_eq(s.names[2], "p2");
    cr_assert_eq(s.expires[2], 10 + TTL);
    cr_assert_eq(pc__reservation_count(m), 1);
    cr_assert_null(pc__reservation_lookup(m, "ns", "p0", 0), "swept entry must be gone");
    cr_assert_not_null(pc__reservation_lookup(m, "ns", "p3", 10 + TTL));
    cr_assert_eq(pc__reservation_next_expiry(m), 20 + TTL);

    cr_assert_eq(pc__reservation_sweep(m, INT64_MAX, NULL, NULL), 1, "NULL callback is fine");
    cr_assert_eq(pc__reservation_count(m), 0);
    cr_assert_eq(pc__reservation_next_expiry(m), 0);
    pc__reservation_map_free(m);
}

Test(reservation, next_expiry_tracks_the_head_through_release, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    cr_assert_eq(pc__reservation_next_expiry(m), 0, "empty map");
    cr_assert_eq(pc__reservation_reserve(m, "ns", "a", "1", "c", 3), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "b", "1", "c", 4), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "c", "1", "c", 9), 0);
    cr_assert_eq(pc__reservation_next_expiry(m), 3 + TTL);
    cr_assert_eq(pc__reservation_release(m, "ns", "b"), 0, "unlink from the middle");
    cr_assert_eq(pc__reservation_release(m, "ns", "a"), 0, "unlink the head");
    cr_assert_eq(pc__reservation_next_expiry(m), 9 + TTL);
    cr_assert_eq(pc__reservation_release(m, "ns", "c"), 0, "unlink the only entry");
    cr_assert_eq(pc__reservation_next_expiry(m), 0);
    pc__reservation_map_free(m);
}

Test(reservation, invalid_arguments_are_refused_and_leave_the_map_unchanged, .timeout = 10)
{
    pc__reservation_map *m = NULL;
    cr_assert_eq(pc__reservation_map_new(0, &m), -EINVAL, "ttl 0");
    cr_assert_eq(pc__reservation_map_new(-5, &m), -EINVAL, "negative ttl");
    cr_assert_null(m);
    m = new_map();

    char long_ns[PC_NAMESPACE_MAX + 1], long_name[PC_NAME_MAX + 1], long_rv[PC_RV_MAX + 1];
    char long_id[PC_CLAIM_ID_MAX + 1];
    memset(long_ns, 'n', sizeof long_ns - 1);
    long_ns[sizeof long_ns - 1] = '\0';
    memset(long_name, 'p', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    memset(long_rv, '9', sizeof long_rv - 1);
    long_rv[sizeof long_rv - 1] = '\0';
    memset(long_id, 'c', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';

    cr_assert_eq(pc__reservation_reserve(m, NULL, "p", "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "ns", NULL, "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", NULL, "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "", "p", "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, long_ns, "p", "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "ns", long_name, "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", long_rv, "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "1", long_id, 0), -EINVAL);
    cr_assert_eq(pc__reservation_reserve(NULL, "ns", "p", "1", "c", 0), -EINVAL);
    cr_assert_eq(pc__reservation_count(m), 0, "failed reserves must add nothing");

    /* A failed replace leaves the old reservation as it was. */
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", "1", "c", 0), 0);
    cr_assert_eq(pc__reservation_reserve(m, "ns", "p", long_rv, "d", 50), -EINVAL);
    const pc__reservation *r = pc__reservation_lookup(m, "ns", "p", 0);
    cr_assert_str_eq(r->rv, "1");
    cr_assert_str_eq(r->claim_id, "c");
    cr_assert_eq(r->expires_at_ns, TTL);

    /* The maximal lengths themselves are accepted; a NULL claim id is stored as "". */
    long_name[PC_NAME_MAX - 1] = '\0';
    cr_assert_eq(pc__reservation_reserve(m, "ns", long_name, "1", NULL, 0), 0);
    cr_assert_str_eq(pc__reservation_lookup(m, "ns", long_name, 0)->claim_id, "");

    cr_assert_null(pc__reservation_lookup(m, NULL, "p", 0));
    cr_assert_null(pc__reservation_lookup(NULL, "ns", "p", 0));
    cr_assert_eq(pc__reservation_release(m, NULL, "p"), -EINVAL);
    cr_assert_eq(pc__reservation_release(m, "ns", "nope"), -ENOENT);
    cr_assert_eq(pc__reservation_count(NULL), 0);
    cr_assert_eq(pc__reservation_next_expiry(NULL), 0);
    cr_assert_eq(pc__reservation_sweep(NULL, 0, NULL, NULL), 0);
    pc__reservation_map_free(m);
    pc__reservation_map_free(NULL);
}

#define MANY 5000

Test(reservation, thousands_of_entries_survive_growth_and_churn, .timeout = 10)
{
    pc__reservation_map *m = new_map();
    char name[32], rv[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "pod-%d", i);
        snprintf(rv, sizeof rv, "%d", i);
        int rc = pc__reservation_reserve(m, "ns", name, rv, "c", i);
        cr_assert_eq(rc, 0, "reserve %d: got %d", i, rc);
    }
    cr_assert_eq(pc__reservation_count(m), MANY);
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "pod-%d", i);
        snprintf(rv, sizeof rv, "%d", i);
        const pc__reservation *r = pc__reservation_lookup(m, "ns", name, 0);
        cr_assert(r != NULL && strcmp(r->rv, rv) == 0, "lookup %s after growth", name);
    }
    /* Release the even ones, then churn: reserve/release many times (tombstones and gc). */
    for (int i = 0; i < MANY; i += 2) {
        snprintf(name, sizeof name, "pod-%d", i);
        cr_assert_eq(pc__reservation_release(m, "ns", name), 0);
    }
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < MANY; i += 2) {
            snprintf(name, sizeof name, "churn-%d", i);
            cr_assert_eq(pc__reservation_reserve(m, "ns", name, "1", "c", MANY), 0);
        }
        for (int i = 0; i < MANY; i += 2) {
            snprintf(name, sizeof name, "churn-%d", i);
            cr_assert_eq(pc__reservation_release(m, "ns", name), 0);
        }
    }
    cr_assert_eq(pc__reservation_count(m), MANY / 2);
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "pod-%d", i);
        bool present = pc__reservation_lookup(m, "ns", name, 0) != NULL;
        cr_assert_eq(present, i % 2 == 1, "%s: present=%d", name, present);
    }
    /* Sweep at the last odd entry's expiry: everything goes, in order. */
    size_t n = pc__reservation_sweep(m, (MANY - 1) + TTL, NULL, NULL);
    cr_assert_eq(n, MANY / 2, "swept %zu", n);
    cr_assert_eq(pc__reservation_count(m), 0);
    /* Entries left in the map are freed by map_free (ASan checks for leaks). */
    cr_assert_eq(pc__reservation_reserve(m, "ns", "left", "1", "c", 0), 0);
    pc__reservation_map_free(m);
}
