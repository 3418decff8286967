/* Tests of src/reservation/podtable: one record per pod holding the ready-queue entry and
 * the reservation (informer -> pool ([ready-queue]) -> [reservation] -> CAS). The table
 * reads no clock: tests pass their own "now". */
#include "common.h"
#include "reservation/podtable.h"
#include "util/ckhs.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#define TTL 1000
#define HOLD 200

static pc__podtable T;

static void setup(void)
{
    cr_assert_eq(pc__podtable_init(&T, TTL, HOLD), 0);
}

static void teardown(void)
{
    pc__podtable_fini(&T);
}

static pc__pod_key key(const char *ns, const char *name)
{
    return (pc__pod_key){pc__pod_key_hash(ns, name, 0), ns, name};
}

static pc__offer_result offer(const char *name, const char *rv)
{
    pc__pod_key k = key("ns", name);
    return pc__podtable_offer(&T, &k, "uid", rv);
}

static void withdraw(const char *name, int64_t now)
{
    pc__pod_key k = key("ns", name);
    pc__podtable_withdraw(&T, &k, now);
}

Test(podtable, offers_queue_in_order_and_a_queued_pod_keeps_its_place_with_the_new_version,
     .init = setup, .fini = teardown, .timeout = 10)
{
    cr_assert_eq(offer("a", "1"), PC__OFFER_QUEUED);
    cr_assert_eq(offer("b", "1"), PC__OFFER_QUEUED);
    cr_assert_eq(offer("a", "5"), PC__OFFER_UPDATED);
    cr_assert_eq(T.ready.len, 2);
    pc__pod *p = pc__podtable_reserve(&T, 0);
    cr_assert_str_eq(p->name, "a", "a was offered first");
    cr_assert_str_eq(p->rv, "5", "at the newest version seen");
    cr_assert_eq(p->state, PC__POD_RESERVED);
    cr_assert_eq(p->until_ns, TTL);
    cr_assert_str_eq(pc__podtable_reserve(&T, 0)->name, "b");
    cr_assert_null(pc__podtable_reserve(&T, 0), "nothing idle left");
}

Test(podtable, key_is_namespace_and_name_not_their_concatenation, .init = setup, .fini = teardown,
     .timeout = 10)
{
    pc__pod_key k1 = key("a", "b/c"), k2 = key("a/b", "c");
    cr_assert_eq(pc__podtable_offer(&T, &k1, "", "1"), PC__OFFER_QUEUED);
    cr_assert_eq(pc__podtable_offer(&T, &k2, "", "2"), PC__OFFER_QUEUED, "a different pod");
    cr_assert_eq(pc__podtable_count(&T), 2);
}

Test(podtable, a_reserved_pod_offered_at_its_version_is_stale_and_at_another_is_released,
     .init = setup, .fini = teardown, .timeout = 10)
{
    offer("a", "1");
    pc__pod *p = pc__podtable_reserve(&T, 0);
    cr_assert_eq(offer("a", "1"), PC__OFFER_STALE);
    cr_assert_eq(T.ready.len, 0);
    cr_assert_eq(T.reserved.len, 1);
    cr_assert_eq(offer("a", "2"), PC__OFFER_RELEASED);
    cr_assert_eq(p->state, PC__POD_IDLE);
    cr_assert_eq(T.reserved.len, 0);
    cr_assert_eq(pc__podtable_reserve(&T, 0), p, "the same record, a stable address");
    cr_assert_str_eq(p->rv, "2");
}

Test(podtable, cas_results_decide_the_pod_only_under_their_own_reservation, .init = setup,
     .fini = teardown, .timeout = 10)
{
    offer("a", "1");
    offer("b", "1");
    offer("c", "1");
    offer("d", "1");
    pc__pod *a = pc__podtable_reserve(&T, 0), *b = pc__podtable_reserve(&T, 0);
    pc__pod *c = pc__podtable_reserve(&T, 0), *d = pc__podtable_reserve(&T, 0);
    offer("e", "1");
    pc__podtable_cas_done(&T, a, a->gen, PC_CAS_RETRYABLE, 0);
    cr_assert_eq(a->state, PC__POD_IDLE);
    cr_assert_eq(T.ready.head, a, "untouched: first in line again, before e");
    pc__podtable_cas_done(&T, b, b->gen, PC_CAS_NOT_FOUND, 0);
    cr_assert_eq(b->state, PC__POD_GONE);
    pc__podtable_cas_done(&T, c, c->gen, PC_CAS_CONFLICT, 0);
    cr_assert_eq(c->state, PC__POD_RESERVED, "conflict: the reserved version stays unusable");
    pc__podtable_cas_done(&T, d, d->gen, PC_CAS_WON, 0);
    cr_assert_eq(d->state, PC__POD_RESERVED);
    /* d released by a newer offer and reserved again: an answer of the first CAS is late */
    uint32_t first = d->gen;
    offer("d", "2");
    cr_assert_eq(pc__podtable_reserve(&T, 0), a);
    cr_assert_eq(pc__podtable_reserve(&T, 0), T.reserved.tail);
    cr_assert_eq(pc__podtable_reserve(&T, 0), d);
    pc__podtable_cas_done(&T, d, first, PC_CAS_RETRYABLE, 0);
    cr_assert_eq(d->state, PC__POD_RESERVED, "a result of an older reservation changes nothing");
}

Test(podtable, withdraw_takes_a_pod_out_of_the_queue_and_releases_its_reservation, .init = setup,
     .fini = teardown, .timeout = 10)
{
    offer("a", "1");
    offer("b", "1");
    pc__pod *a = pc__podtable_reserve(&T, 0);
    withdraw("a", 0);
    cr_assert_eq(a->state, PC__POD_GONE);
    withdraw("b", 0);
    cr_assert_eq(T.ready.len, 0);
    withdraw("never-seen", 0);
    cr_assert_eq(pc__podtable_count(&T), 2, "unknown pods are not recorded");
    cr_assert_eq(offer("a", "1"), PC__OFFER_QUEUED, "withdrawn: not stale any more");
}

static int expired_n;
static void on_expired(pc__pod *p, void *arg)
{
    (void)arg;
    cr_assert_eq(p->state, PC__POD_GONE);
    expired_n++;
}

Test(podtable, reservations_expire_in_order_and_gone_records_are_forgotten_a_ttl_later,
     .init = setup, .fini = teardown, .timeout = 10)
{
    offer("a", "1");
    offer("b", "1");
    pc__pod *a = pc__podtable_reserve(&T, 0);
    pc__pod *b = pc__podtable_reserve(&T, 100);
    cr_assert_eq(pc__podtable_next_event(&T), TTL);
    cr_assert_eq(pc__podtable_sweep(&T, TTL - 1, on_expired, NULL), 0);
    cr_assert_eq(pc__podtable_sweep(&T, TTL, on_expired, NULL), 1);
    cr_assert_eq(a->state, PC__POD_GONE);
    cr_assert_eq(b->state, PC__POD_RESERVED);
    cr_assert_eq(pc__podtable_next_event(&T), 100 + TTL);
    cr_assert_eq(offer("a", "1"), PC__OFFER_QUEUED, "expired: the version is selectable again");
    pc__podtable_sweep(&T, 100 + TTL, on_expired, NULL);
    cr_assert_eq(expired_n, 2);
    /* b is gone since 100 + TTL and still referenced (its CAS did not report) */
    cr_assert_eq(pc__podtable_sweep(&T, 100 + 2 * TTL, NULL, NULL), 0);
    cr_assert_eq(pc__podtable_count(&T), 2, "a referenced record is kept");
    pc__podtable_unref(a);
    pc__podtable_unref(b);
    pc__podtable_sweep(&T, 100 + 3 * TTL, NULL, NULL);
    cr_assert_eq(pc__podtable_count(&T), 1, "b forgotten; a is idle");
    cr_assert_eq(pc__podtable_next_event(&T), 0);
}

Test(podtable, thousands_of_pods_come_and_go_and_the_table_empties, .init = setup, .fini = teardown,
     .timeout = 10)
{
    char name[32];
    int64_t now = 0;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 3000; i++) {
            snprintf(name, sizeof name, "r%d-p%d", round, i);
            cr_assert_eq(offer(name, "1"), PC__OFFER_QUEUED);
        }
        pc__pod *p;
        while ((p = pc__podtable_reserve(&T, now)) != NULL) {
            pc__podtable_cas_done(&T, p, p->gen, PC_CAS_WON, now);
            pc__podtable_unref(p);
            withdraw(p->name, now); /* the informer saw it claimed */
        }
        now += 2 * TTL;
        pc__podtable_sweep(&T, now, NULL, NULL);
        cr_assert_eq(pc__podtable_count(&T), 0, "round %d: %zu records left", round,
                     pc__podtable_count(&T));
    }
}

Test(podtable, a_conflict_holds_the_pod_for_the_conflict_hold_not_the_whole_ttl, .init = setup,
     .fini = teardown, .timeout = 10)
{
    offer("a", "1");
    offer("b", "1");
    offer("c", "1");
    pc__pod *a = pc__podtable_reserve(&T, 0), *b = pc__podtable_reserve(&T, 0);
    pc__pod *c = pc__podtable_reserve(&T, 0);
    pc__podtable_cas_done(&T, a, a->gen, PC_CAS_CONFLICT, 50);
    pc__podtable_cas_done(&T, b, b->gen, PC_CAS_WON, 50);
    cr_assert_eq(a->state, PC__POD_RESERVED, "still not selectable at its old version");
    cr_assert_eq(offer("a", "1"), PC__OFFER_STALE);
    cr_assert_eq(pc__podtable_next_event(&T), 50 + HOLD);
    cr_assert_eq(pc__podtable_sweep(&T, 50 + HOLD - 1, on_expired, NULL), 0);
    expired_n = 0;
    cr_assert_eq(pc__podtable_sweep(&T, 50 + HOLD, on_expired, NULL), 1);
    cr_assert_eq(expired_n, 1);
    cr_assert_eq(a->state, PC__POD_GONE, "the conflict hold passed: offered again, it is taken");
    cr_assert_eq(b->state, PC__POD_RESERVED, "a win keeps the whole TTL");
    cr_assert_eq(c->state, PC__POD_RESERVED);
    cr_assert_eq(offer("a", "1"), PC__OFFER_QUEUED);
    /* a newer version ends a held reservation at once, as any reservation */
    pc__pod *a2 = pc__podtable_reserve(&T, 300);
    cr_assert_eq(a2, a);
    pc__podtable_cas_done(&T, a, a->gen, PC_CAS_CONFLICT, 310);
    cr_assert_eq(offer("a", "2"), PC__OFFER_RELEASED);
    cr_assert_eq(T.held.len, 0);
    cr_assert_eq(pc__podtable_count(&T), 3);
    /* a CAS slower than TTL - HOLD: the hold would end after the TTL; the TTL stays */
    pc__pod *late = pc__podtable_reserve(&T, 1000);
    cr_assert_eq(late, a);
    pc__podtable_cas_done(&T, a, a->gen, PC_CAS_CONFLICT, 1000 + TTL - HOLD / 2);
    cr_assert_eq(T.held.len, 0);
    cr_assert_eq(a->until_ns, 1000 + TTL);
}
