/* kapi-sim store and API verbs: revisions, preconditions, immutability, lists, history/watch,
 * and the pool controller's claim log — in process, no HTTP. */
#include "ksim_test.h"
#include "sim.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <string.h>

static ks_store st;
static ks_faults fl;
static const ks_res *PODS = &ks_resources[KS_RES_POD];

static void setup(void)
{
    cr_assert_eq(ks_store_init(&st, 64), 0);
    ks_faults_init(&fl);
    ks_ensure_namespace(&st, "default");
}

static void teardown(void)
{
    ks_store_fini(&st);
    ks_faults_fini(&fl);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 20);

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    cr_assert_not_null(j, "bad test JSON %s: %s", s, e.text);
    return j;
}

static json_t *mkpod(const char *name, const char *labels)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"metadata\":{\"name\":\"%s\",\"labels\":%s},\"spec\":{\"containers\":[{\"name\":"
             "\"c\",\"image\":\"img:1\"}],\"nodeName\":\"n1\"}}",
             name, labels ? labels : "{}");
    json_t *body = J(buf);
    ks_err err = {0};
    json_t *r = ks_api_create(&st, PODS, "default", body, &err, NULL, false);
    json_decref(body);
    cr_assert_not_null(r, "create %s: %d %s", name, err.code, err.message);
    return r;
}

static uint64_t rv_of(const json_t *o)
{
    return strtoull(ks_meta_str(o, "resourceVersion"), NULL, 10);
}

Test(store, create_sets_server_fields_and_rejects_duplicates)
{
    json_t *p = mkpod("a", NULL);
    cr_expect_not_null(ks_meta_str(p, "uid"));
    cr_expect_not_null(ks_meta_str(p, "creationTimestamp"));
    cr_expect_str_eq(json_string_value(json_object_get(p, "kind")), "Pod");
    cr_expect_eq(rv_of(p), st.rev);
    json_t *body = J("{\"metadata\":{\"name\":\"a\"},\"spec\":{\"containers\":[{\"name\":\"c\","
                     "\"image\":\"i\"}]}}");
    ks_err err = {0};
    cr_expect_null(ks_api_create(&st, PODS, "default", body, &err, NULL, false));
    cr_expect_eq(err.code, 409);
    cr_expect_str_eq(err.reason, "AlreadyExists");
    json_decref(body);
    json_decref(p);
}

Test(store, create_in_a_missing_namespace_is_404)
{
    json_t *body = J("{\"metadata\":{\"name\":\"a\"},\"spec\":{\"containers\":[{\"name\":\"c\","
                     "\"image\":\"i\"}]}}");
    ks_err err = {0};
    cr_expect_null(ks_api_create(&st, PODS, "nope", body, &err, NULL, false));
    cr_expect_eq(err.code, 404, "code %d", err.code);
    json_decref(body);
}

Test(store, revisions_increase_by_one_per_write_across_resources)
{
    uint64_t r0 = st.rev;
    json_t *a = mkpod("a", NULL);
    ks_ensure_namespace(&st, "other");
    json_t *b = mkpod("b", NULL);
    cr_expect_eq(rv_of(a), r0 + 1);
    cr_expect_eq(rv_of(b), r0 + 3);
    json_decref(a);
    json_decref(b);
}

Test(store, stale_resource_version_in_a_patch_is_409_and_writes_nothing)
{
    json_t *p = mkpod("a", NULL);
    char patch[256];
    snprintf(patch, sizeof patch,
             "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"x\":\"1\"}}}",
             ks_meta_str(p, "resourceVersion"));
    json_t *pj = J(patch);
    ks_err err = {0};
    json_t *r1 = ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_STRATEGIC, pj, &err, NULL,
                              false);
    cr_assert_not_null(r1, "%s", err.message);
    cr_expect_gt(rv_of(r1), rv_of(p));
    uint64_t rev = st.rev;
    json_t *r2 = ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_STRATEGIC, pj, &err, NULL,
                              false);
    cr_expect_null(r2);
    cr_expect_eq(err.code, 409, "code %d", err.code);
    cr_expect_str_eq(err.reason, "Conflict");
    cr_expect_eq(st.rev, rev, "a failed patch must not bump the revision");
    json_decref(pj);
    json_decref(r1);
    json_decref(p);
}

/* Kubernetes quirk: pods allow an unconditional update (no resourceVersion in the PUT),
 * custom resources such as SandboxPool refuse it with 422. */
Test(store, update_without_resource_version_writes_a_pod_but_is_422_for_a_custom_resource)
{
    json_t *p = mkpod("a", NULL);
    json_t *body = json_deep_copy(p);
    json_object_del(json_object_get(body, "metadata"), "resourceVersion");
    json_object_set_new(json_object_get(body, "metadata"), "labels", json_pack("{s:s}", "u", "1"));
    ks_err err = {0};
    json_t *r = ks_api_update(&st, PODS, "default", "a", NULL, body, &err, NULL, false);
    cr_expect_not_null(r, "pod: %d %s", err.code, err.message);
    cr_expect_gt(r ? rv_of(r) : 0, rv_of(p));
    json_decref(r);
    json_decref(body);
    json_decref(p);

    const ks_res *pools = &ks_resources[KS_RES_SANDBOXPOOL];
    json_t *pool = J("{\"metadata\":{\"name\":\"p\"},\"spec\":{\"replicas\":0}}");
    json_t *made = ks_api_create(&st, pools, "default", pool, &err, NULL, false);
    cr_assert_not_null(made, "%s", err.message);
    body = json_deep_copy(made);
    json_object_del(json_object_get(body, "metadata"), "resourceVersion");
    memset(&err, 0, sizeof err);
    cr_expect_null(ks_api_update(&st, pools, "default", "p", NULL, body, &err, NULL, false));
    cr_expect_eq(err.code, 422, "code %d", err.code);
    json_decref(body);
    json_decref(made);
    json_decref(pool);
}

Test(store, pod_spec_is_immutable_but_image_is_not)
{
    json_t *p = mkpod("a", NULL);
    ks_err err = {0};
    json_t *bad = J("{\"spec\":{\"nodeName\":\"other\"}}");
    cr_expect_null(
            ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_MERGE, bad, &err, NULL, false));
    cr_expect_eq(err.code, 422, "code %d", err.code);
    cr_expect_str_eq(err.reason, "Invalid");
    json_t *img = J("{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"img:2\"}]}}");
    memset(&err, 0, sizeof err);
    json_t *r = ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_STRATEGIC, img, &err, NULL,
                             false);
    cr_assert_not_null(r, "%s", err.message);
    cr_expect_str_eq(
            json_string_value(json_object_get(
                    json_array_get(json_object_get(json_object_get(r, "spec"), "containers"), 0),
                    "image")),
            "img:2");
    json_decref(r);
    json_decref(img);
    json_decref(bad);
    json_decref(p);
}

Test(store, main_resource_ignores_status_and_status_subresource_changes_only_status)
{
    json_t *p = mkpod("a", NULL);
    ks_err err = {0};
    json_t *patch =
            J("{\"status\":{\"phase\":\"Running\"},\"metadata\":{\"labels\":{\"l\":\"1\"}}}");
    json_t *r1 =
            ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_MERGE, patch, &err, NULL, false);
    cr_assert_not_null(r1);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r1, "status"), "phase")),
                     "Pending");
    json_t *r2 = ks_api_patch(&st, PODS, "default", "a", "status", KS_PATCH_MERGE, patch, &err,
                              NULL, false);
    cr_assert_not_null(r2);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r2, "status"), "phase")),
                     "Running");
    cr_expect_null(
            json_object_get(json_object_get(json_object_get(r2, "metadata"), "labels"), "x"));
    json_decref(r1);
    json_decref(r2);
    json_decref(patch);
    json_decref(p);
}

Test(store, a_no_op_patch_keeps_the_resource_version)
{
    json_t *p = mkpod("a", "{\"k\":\"v\"}");
    json_t *patch = J("{\"metadata\":{\"labels\":{\"k\":\"v\"}}}");
    ks_err err = {0};
    uint64_t rev = st.rev;
    json_t *r =
            ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_MERGE, patch, &err, NULL, false);
    cr_assert_not_null(r);
    cr_expect_eq(rv_of(r), rv_of(p));
    cr_expect_eq(st.rev, rev);
    json_decref(r);
    json_decref(patch);
    json_decref(p);
}

Test(store, list_pages_with_limit_and_continue_cover_every_object_once)
{
    for (int i = 0; i < 7; i++) {
        char n[8];
        snprintf(n, sizeof n, "p%d", i);
        json_decref(mkpod(n, i % 2 ? "{\"odd\":\"1\"}" : NULL));
    }
    char cont[1200] = "";
    int seen = 0, pages = 0;
    const char *first_rv = NULL;
    json_t *first = NULL;
    do {
        ks_err err = {0};
        json_t *l = ks_api_list(&st, PODS, "default", NULL, NULL, 3, cont[0] ? cont : NULL, &err);
        cr_assert_not_null(l, "%s", err.message);
        pages++;
        seen += (int)json_array_size(json_object_get(l, "items"));
        const char *c =
                json_string_value(json_object_get(json_object_get(l, "metadata"), "continue"));
        snprintf(cont, sizeof cont, "%s", c ? c : "");
        if (!first) {
            first = l;
            first_rv = json_string_value(
                    json_object_get(json_object_get(l, "metadata"), "resourceVersion"));
        } else {
            cr_expect_str_eq(json_string_value(json_object_get(json_object_get(l, "metadata"),
                                                               "resourceVersion")),
                             first_rv);
            json_decref(l);
        }
    } while (cont[0] && pages < 10);
    cr_expect_eq(seen, 7);
    cr_expect_eq(pages, 3);
    json_decref(first);

    ks_err err = {0};
    ks_lsel *ls = ks_lsel_parse("odd=1", &err);
    json_t *l = ks_api_list(&st, PODS, NULL, ls, NULL, 0, NULL, &err);
    cr_expect_eq(json_array_size(json_object_get(l, "items")), 3);
    json_decref(l);
    ks_lsel_free(ls);
}

Test(store, bad_continue_token_is_400)
{
    ks_err err = {0};
    cr_expect_null(ks_api_list(&st, PODS, NULL, NULL, NULL, 1, "!!notbase64", &err));
    cr_expect_eq(err.code, 400);
}

/* Read watch output until it contains want or the stream ends; returns everything read. */
static char *watch_collect(ks_watch *w, const char *want, size_t max_total)
{
    char *all = calloc(1, max_total + 1);
    size_t n = 0;
    for (;;) {
        long r = ks_watch_read(w, all + n, max_total - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if ((want && strstr(all, want)) || n == max_total)
            break;
    }
    return all;
}

Test(store, watch_resumes_after_a_version_and_sees_each_change_in_order)
{
    json_t *a = mkpod("a", NULL);
    char rv[24];
    snprintf(rv, sizeof rv, "%s", ks_meta_str(a, "resourceVersion"));
    json_decref(mkpod("b", NULL));
    json_t *patch = J("{\"metadata\":{\"labels\":{\"x\":\"1\"}}}");
    ks_err err = {0};
    json_decref(ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_MERGE, patch, &err, NULL,
                             false));
    json_t *now = J("{\"gracePeriodSeconds\":0}");
    json_decref(ks_api_delete(&st, PODS, "default", "b", now, &err, NULL));
    json_decref(now);
    ks_watch_opts o = {.res = PODS, .rv = rv, .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    cr_assert_not_null(w);
    char *out = watch_collect(w, "DELETED", 1 << 20);
    const char *added = strstr(out, "{\"type\":\"ADDED\"");
    const char *mod = strstr(out, "{\"type\":\"MODIFIED\"");
    const char *del = strstr(out, "{\"type\":\"DELETED\"");
    cr_expect(added && mod && del && added < mod && mod < del, "events: %s", out);
    cr_expect(strstr(added, "\"name\":\"b\""), "first event is b's ADDED: %s", out);
    free(out);
    ks_watch_free(w);
    json_decref(patch);
    json_decref(a);
}

/* kube-apiserver never ends an established watch on compaction (the watch cache keeps
 * serving it); only a new watch or a continue from before the compaction gets 410. */
Test(store, compaction_does_not_end_an_established_watch_one_event_behind)
{
    json_t *a = mkpod("a", NULL);
    char rv[24];
    snprintf(rv, sizeof rv, "%s", ks_meta_str(a, "resourceVersion"));
    ks_err err = {0};
    ks_watch_opts o = {.res = PODS, .rv = rv, .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    cr_assert_not_null(w);
    json_decref(mkpod("b", NULL)); /* the watch is one event behind ... */
    ks_store_compact(&st, 0);      /* ... when the history is compacted */
    char *out = watch_collect(w, "\"name\":\"b\"", 1 << 16);
    cr_expect(strstr(out, "{\"type\":\"ADDED\"") && !strstr(out, "\"type\":\"ERROR\""), "got: %s",
              out);
    free(out);
    ks_watch_free(w);
    json_decref(a);
}

Test(store, watch_from_a_compacted_version_gets_410_expired)
{
    json_t *a = mkpod("a", NULL);
    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, rv_of(a) - 1);
    json_decref(mkpod("b", NULL));
    ks_store_compact(&st, 0);
    ks_err err = {0};
    ks_watch_opts o = {.res = PODS, .rv = rv, .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    cr_assert_not_null(w);
    char *out = watch_collect(w, NULL, 1 << 16);
    cr_expect(strstr(out, "\"type\":\"ERROR\"") && strstr(out, "\"code\":410") &&
                      strstr(out, "\"reason\":\"Expired\""),
              "got: %s", out);
    free(out);
    ks_watch_free(w);
    json_decref(a);
}

Test(store, history_overflow_expires_old_versions)
{
    json_t *a = mkpod("a", NULL);
    char rv[24];
    snprintf(rv, sizeof rv, "%s", ks_meta_str(a, "resourceVersion"));
    for (int i = 0; i < 100; i++) { /* history holds 64 */
        char n[16];
        snprintf(n, sizeof n, "q%d", i);
        json_decref(mkpod(n, NULL));
    }
    ks_err err = {0};
    ks_watch_opts o = {.res = PODS, .rv = rv, .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    char *out = watch_collect(w, NULL, 1 << 16);
    cr_expect(strstr(out, "\"code\":410"), "got: %s", out);
    free(out);
    ks_watch_free(w);
    json_decref(a);
}

Test(store, watch_with_selector_turns_leaving_objects_into_deleted)
{
    json_t *a = mkpod("a", "{\"phase\":\"Idle\"}");
    ks_err err = {0};
    ks_watch_opts o = {.res = PODS,
                       .rv = ks_meta_str(a, "resourceVersion"),
                       .lsel = ks_lsel_parse("phase=Idle", &err),
                       .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    json_t *patch = J("{\"metadata\":{\"labels\":{\"phase\":\"Running\"}}}");
    json_decref(ks_api_patch(&st, PODS, "default", "a", NULL, KS_PATCH_MERGE, patch, &err, NULL,
                             false));
    char *out = watch_collect(w, "DELETED", 1 << 16);
    cr_expect(strstr(out, "{\"type\":\"DELETED\""), "got: %s", out);
    free(out);
    ks_watch_free(w);
    json_decref(patch);
    json_decref(a);
}

Test(store, watch_without_version_starts_with_current_objects_and_timeout_ends_it)
{
    json_decref(mkpod("a", NULL));
    ks_err err = {0};
    ks_watch_opts o = {.res = PODS, .rv = NULL, .timeout_ns = 300000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    int64_t t0 = ksim_now_ms();
    char *out = watch_collect(w, NULL, 1 << 16); /* runs to the end of the stream */
    int64_t took = ksim_now_ms() - t0;
    cr_expect(strstr(out, "{\"type\":\"ADDED\""), "got: %s", out);
    cr_expect(took >= 250 && took < 3000, "the stream ended after %lld ms", (long long)took);
    free(out);
    ks_watch_free(w);
}

Test(store, bookmarks_carry_the_latest_version)
{
    ks_err err = {0};
    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, st.rev);
    ks_watch_opts o = {.res = PODS,
                       .rv = rv,
                       .bookmarks = true,
                       .bookmark_ns = 50000000LL,
                       .timeout_ns = 2000000000LL};
    ks_watch *w = ks_watch_new(&st, &fl, &o, &err);
    char *out = watch_collect(w, "BOOKMARK", 1 << 16);
    char want[64];
    snprintf(want, sizeof want, "\"resourceVersion\":\"%s\"", rv);
    cr_expect(strstr(out, "BOOKMARK") && strstr(out, want), "got: %s", out);
    free(out);
    ks_watch_free(w);
}

/* A write reuses the text of the members it did not change (spec, status) from the stored
 * version's event: whatever the write, the event line and the answer must still be exactly the
 * serialisation of the object stored (across resourceVersions growing by a digit too). */
Test(store, each_write_serialises_exactly_the_object_stored)
{
    json_decref(mkpod("t", "{\"a\":\"init\"}"));
    const char *patches[] = {
            "{\"metadata\":{\"labels\":{\"a\":\"%d\"}}}",
            "{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"img:v%d\"}]}}",
            "{\"status\":{\"phase\":\"Running\",\"message\":\"m%d\"}}",
            "[{\"op\":\"add\",\"path\":\"/metadata/annotations\",\"value\":{\"n\":\"%d\"}}]",
    };
    for (int i = 0; i < 160; i++) { /* resourceVersions pass 100 */
        int k = i % 4;
        char buf[256];
        snprintf(buf, sizeof buf, patches[k], i);
        json_t *patch = J(buf);
        ks_err err = {0};
        char *text = NULL;
        json_t *r = ks_api_patch(&st, PODS, "default", "t", k == 2 ? "status" : NULL,
                                 k == 3 ? KS_PATCH_JSON : KS_PATCH_STRATEGIC, patch, &err, &text,
                                 false);
        cr_assert_not_null(r, "patch %d: %d %s", i, err.code, err.message);
        char *want = json_dumps(r, JSON_COMPACT);
        pthread_mutex_lock(&st.mu);
        char *line = ks_store_last_text_locked(&st);
        pthread_mutex_unlock(&st.mu);
        cr_expect(text && strcmp(text, want) == 0, "answer to write %d:\n %s\nwant\n %s", i, text,
                  want);
        cr_expect(line && strcmp(line, want) == 0, "event of write %d:\n %s\nwant\n %s", i, line,
                  want);
        free(line);
        free(want);
        free(text);
        json_decref(r);
        json_decref(patch);
    }
}

/* A watch of one resource is not woken by another resource's writes (that was most of
 * kapi-sim's CPU in the fault soak), but it must still step over them before the history ring
 * passes its cursor: pod churn never expires a lease watch that keeps up, as on kube-apiserver
 * (one watch cache per resource). */
typedef struct lease_reader {
    ks_watch *w;
    char *out;
} lease_reader;

static void *read_lease_watch(void *arg)
{
    lease_reader *r = arg;
    r->out = watch_collect(r->w, "\"kind\":\"Lease\"", 1 << 16);
    return NULL;
}

/* The watch (the only one) sleeps and will not need waking before the next commit. */
static bool watch_asleep_and_caught_up(void)
{
    pthread_mutex_lock(&st.mu);
    const ks_waiter *w = st.waiters;
    bool ok = w && w->catch_up != UINT64_MAX && w->catch_up > st.rev;
    pthread_mutex_unlock(&st.mu);
    return ok;
}

Test(store, a_watch_of_leases_outlives_pod_churn_longer_than_the_history)
{
    const ks_res *leases = &ks_resources[KS_RES_LEASE];
    char rv[24];
    snprintf(rv, sizeof rv, "%" PRIu64, st.rev);
    ks_err err = {0};
    ks_watch_opts o = {.res = leases, .rv = rv, .timeout_ns = 10000000000LL};
    lease_reader r = {.w = ks_watch_new(&st, &fl, &o, &err)};
    cr_assert_not_null(r.w);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, read_lease_watch, &r), 0);
    for (int i = 0; i < 200; i++) { /* history holds 64 */
        /* one write at a time once the watch sleeps: whether a wake comes is what is tested */
        bool asleep = KSIM_WAIT_UNTIL(watch_asleep_and_caught_up(), 5000);
        cr_expect(asleep, "the lease watch is not asleep and caught up before pod write %d", i);
        if (!asleep)
            break;
        char n[16];
        snprintf(n, sizeof n, "churn%d", i);
        json_decref(mkpod(n, NULL));
    }
    json_t *lease = J("{\"metadata\":{\"name\":\"l\"},\"spec\":{\"holderIdentity\":\"a\"}}");
    json_decref(ks_api_create(&st, leases, "default", lease, &err, NULL, false));
    json_decref(lease);
    pthread_join(th, NULL);
    cr_expect(strstr(r.out, "{\"type\":\"ADDED\"") && !strstr(r.out, "\"type\":\"ERROR\""),
              "got: %s", r.out);
    free(r.out);
    ks_watch_free(r.w);
}

/* ---- controller ----------------------------------------------------------------------------- */

static int count_phase(const char *phase)
{
    char sel[128];
    snprintf(sel, sizeof sel, "podclaim.io/pool=p,podclaim.io/phase=%s", phase);
    ks_err err = {0};
    ks_lsel *ls = ks_lsel_parse(sel, &err);
    json_t *l = ks_api_list(&st, PODS, "default", ls, NULL, 0, NULL, &err);
    int n = (int)json_array_size(json_object_get(l, "items"));
    json_decref(l);
    ks_lsel_free(ls);
    return n;
}

static json_t *first_with_phase(const char *phase)
{
    char sel[128];
    snprintf(sel, sizeof sel, "podclaim.io/pool=p,podclaim.io/phase=%s", phase);
    ks_err err = {0};
    ks_lsel *ls = ks_lsel_parse(sel, &err);
    json_t *l = ks_api_list(&st, PODS, "default", ls, NULL, 1, NULL, &err);
    json_t *p = json_incref(json_array_get(json_object_get(l, "items"), 0));
    json_decref(l);
    ks_lsel_free(ls);
    return p;
}

static bool all_ready(void)
{
    ks_err err = {0};
    ks_lsel *ls = ks_lsel_parse("podclaim.io/pool=p", &err);
    json_t *l = ks_api_list(&st, PODS, "default", ls, NULL, 0, NULL, &err);
    size_t i, ready = 0;
    json_t *p;
    json_array_foreach(json_object_get(l, "items"), i, p)
    {
        const char *ph = json_string_value(json_object_get(json_object_get(p, "status"), "phase"));
        json_t *cs = json_array_get(
                json_object_get(json_object_get(p, "status"), "containerStatuses"), 0);
        ready += ph && strcmp(ph, "Running") == 0 && json_is_true(json_object_get(cs, "ready"));
    }
    size_t n = json_array_size(json_object_get(l, "items"));
    json_decref(l);
    ks_lsel_free(ls);
    return n == 3 && ready == 3;
}

/* kapi-sim plays the kubelet only (issue 13): pods it is given start, claims are logged, and a
 * SandboxPool gets no pods from kapi-sim (podclaimd's pool controller makes them). */
Test(store, kubelet_starts_pods_logs_claims_exactly_and_makes_no_pool_pods)
{
    ks_controller_opts co = {.warmup_ms = 10, .stop_ms = 5, .restart_ms = 5};
    ks_controller *c = ks_controller_new(&st, &co);
    cr_assert_eq(ks_controller_start(c), 0);
    json_t *pool = J("{\"metadata\":{\"name\":\"q\"},\"spec\":{\"replicas\":3}}");
    ks_err err = {0};
    json_decref(ks_api_create(&st, &ks_resources[KS_RES_SANDBOXPOOL], "default", pool, &err, NULL,
                              false));
    for (int i = 0; i < 3; i++) {
        char body[400];
        snprintf(body, sizeof body,
                 "{\"metadata\":{\"name\":\"p-%d\",\"labels\":{\"podclaim.io/pool\":\"p\","
                 "\"podclaim.io/phase\":\"Idle\"}},\"spec\":{\"containers\":[{\"name\":\"s\","
                 "\"image\":\"img:1\"}]}}",
                 i);
        json_t *pj = J(body);
        json_decref(ks_api_create(&st, PODS, "default", pj, &err, NULL, false));
        json_decref(pj);
    }
    cr_assert(KSIM_WAIT_UNTIL(all_ready(), 5000), "3 pods Running and Ready");

    json_t *pod = first_with_phase("Idle");
    char claim[512];
    snprintf(claim, sizeof claim,
             "{\"metadata\":{\"resourceVersion\":\"%s\",\"labels\":{\"podclaim.io/phase\":"
             "\"Running\"},\"annotations\":{\"podclaim.io/claim-id\":\"c1\"}}}",
             ks_meta_str(pod, "resourceVersion"));
    json_t *cj = J(claim);
    json_t *won = ks_api_patch(&st, PODS, "default", ks_meta_str(pod, "name"), NULL,
                               KS_PATCH_STRATEGIC, cj, &err, NULL, false);
    cr_assert_not_null(won, "%s", err.message);
    json_t *lost = ks_api_patch(&st, PODS, "default", ks_meta_str(pod, "name"), NULL,
                                KS_PATCH_STRATEGIC, cj, &err, NULL, false);
    cr_expect_null(lost, "the same idle version must not be won twice");

    json_t *log = ks_controller_claims_json(c, 0);
    cr_expect_eq(json_integer_value(json_object_get(log, "count")), 1);
    json_t *e = json_array_get(json_object_get(log, "claims"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(e, "pod")), ks_meta_str(pod, "name"));
    cr_expect_str_eq(json_string_value(json_object_get(e, "idleResourceVersion")),
                     ks_meta_str(pod, "resourceVersion"));
    cr_expect_str_eq(json_string_value(json_object_get(e, "resourceVersion")),
                     ks_meta_str(won, "resourceVersion"));
    cr_expect_str_eq(json_string_value(json_object_get(e, "claimId")), "c1");
    json_decref(log);

    /* after the kubelet's thread stopped: the claimed pod stayed claimed, and pool q got no
     * pods (nothing in kapi-sim creates or recycles pool pods) */
    ks_controller_free(c);
    cr_expect_eq(count_phase("Running"), 1);
    cr_expect_eq(count_phase("Idle"), 2);
    ks_lsel *ls = ks_lsel_parse("podclaim.io/pool=q", &err);
    json_t *l = ks_api_list(&st, PODS, "default", ls, NULL, 0, NULL, &err);
    cr_expect_eq(json_array_size(json_object_get(l, "items")), 0);
    json_decref(l);
    ks_lsel_free(ls);
    json_decref(cj);
    json_decref(won);
    json_decref(pod);
    json_decref(pool);
}

Test(store, a_continue_token_from_before_a_compaction_is_410)
{
    for (int i = 0; i < 3; i++) {
        char n[8];
        snprintf(n, sizeof n, "c%d", i);
        json_decref(mkpod(n, NULL));
    }
    ks_err err = {0};
    json_t *l = ks_api_list(&st, PODS, "default", NULL, NULL, 1, NULL, &err);
    const char *c = json_string_value(json_object_get(json_object_get(l, "metadata"), "continue"));
    cr_assert_not_null(c);
    json_decref(mkpod("later", NULL));
    ks_store_compact(&st, 0);
    json_t *l2 = ks_api_list(&st, PODS, "default", NULL, NULL, 1, c, &err);
    cr_expect_null(l2);
    cr_expect_eq(err.code, 410);
    cr_expect_str_eq(err.reason, "Expired");
    json_decref(l);
}

/* ---- concurrent writers ------------------------------------------------------------------- */

typedef struct writer {
    pthread_t th;
    int id;
    pthread_barrier_t *start;
    int wins;
} writer;

static void *unconditional(void *arg)
{
    writer *w = arg;
    pthread_barrier_wait(w->start);
    for (int i = 0; i < 300; i++) {
        char p[128];
        snprintf(p, sizeof p, "{\"metadata\":{\"labels\":{\"w%d-%d\":\"x\"}}}", w->id, i);
        json_t *pj = json_loads(p, 0, NULL);
        ks_err err = {0};
        json_t *r = ks_api_patch(&st, PODS, "default", "shared", NULL, KS_PATCH_MERGE, pj, &err,
                                 NULL, false);
        w->wins += r != NULL;
        json_decref(r);
        json_decref(pj);
    }
    return NULL;
}

Test(store, concurrent_unconditional_patches_lose_no_update)
{
    json_decref(mkpod("shared", NULL));
    uint64_t rev0 = st.rev;
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 4);
    writer ws[4] = {0};
    for (int i = 0; i < 4; i++) {
        ws[i] = (writer){.id = i, .start = &b};
        pthread_create(&ws[i].th, NULL, unconditional, &ws[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(ws[i].th, NULL);
        cr_expect_eq(ws[i].wins, 300, "writer %d: %d of 300 applied", i, ws[i].wins);
    }
    ks_err err = {0};
    json_t *p = ks_api_get(&st, PODS, "default", "shared", &err);
    cr_expect_eq(json_object_size(json_object_get(json_object_get(p, "metadata"), "labels")), 1200,
                 "every label of every writer is there");
    cr_expect_eq(st.rev, rev0 + 1200, "one revision per write");
    json_decref(p);
    pthread_barrier_destroy(&b);
}

typedef struct claimer {
    pthread_t th;
    int id;
    pthread_barrier_t *round;
    const char *volatile *rv; /* the version every claimer names in this round */
    int wins;
} claimer;

static void *claim_rounds(void *arg)
{
    claimer *c = arg;
    for (int r = 0; r < 200; r++) {
        pthread_barrier_wait(c->round); /* main has set *rv */
        char p[256];
        snprintf(p, sizeof p,
                 "{\"metadata\":{\"resourceVersion\":\"%s\",\"annotations\":{\"c\":\"%d-%d\"}}}",
                 *c->rv, c->id, r);
        json_t *pj = json_loads(p, 0, NULL);
        ks_err err = {0};
        json_t *res = ks_api_patch(&st, PODS, "default", "contested", NULL, KS_PATCH_STRATEGIC, pj,
                                   &err, NULL, false);
        if (res)
            c->wins++;
        else
            cr_expect_eq(err.code, 409, "a loser gets 409, got %d %s", err.code, err.message);
        json_decref(res);
        json_decref(pj);
        pthread_barrier_wait(c->round); /* round over */
    }
    return NULL;
}

Test(store, concurrent_cas_on_one_version_has_exactly_one_winner)
{
    json_decref(mkpod("contested", NULL));
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 5);
    static char rv[32];
    const char *volatile rvp = rv;
    claimer cs[4];
    for (int i = 0; i < 4; i++) {
        cs[i] = (claimer){.id = i, .round = &b, .rv = &rvp};
        pthread_create(&cs[i].th, NULL, claim_rounds, &cs[i]);
    }
    for (int r = 0; r < 200; r++) {
        ks_err err = {0};
        json_t *p = ks_api_get(&st, PODS, "default", "contested", &err);
        snprintf(rv, sizeof rv, "%s", ks_meta_str(p, "resourceVersion"));
        json_decref(p);
        uint64_t before = st.rev;
        pthread_barrier_wait(&b);
        pthread_barrier_wait(&b);
        cr_expect_eq(st.rev, before + 1, "round %d: exactly one write", r);
    }
    int wins = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(cs[i].th, NULL);
        wins += cs[i].wins;
    }
    cr_expect_eq(wins, 200, "one winner per round, %d wins in 200 rounds", wins);
    pthread_barrier_destroy(&b);
}

Test(store, a_resource_version_that_is_not_a_string_is_400_not_an_unconditional_write)
{
    json_t *p = mkpod("typed", NULL);
    uint64_t rev = st.rev;
    const char *bad[] = {"{\"metadata\":{\"resourceVersion\":1,\"labels\":{\"a\":\"b\"}}}",
                         "{\"metadata\":{\"labels\":{\"a\":1}}}",
                         "{\"metadata\":{\"annotations\":[\"x\"]}}", "{\"metadata\":7}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *pj = J(bad[i]);
        ks_err err = {0};
        json_t *r = ks_api_patch(&st, PODS, "default", "typed", NULL, KS_PATCH_MERGE, pj, &err,
                                 NULL, false);
        cr_expect_null(r, "%s must fail", bad[i]);
        cr_expect_eq(err.code, 400, "%s: code %d %s", bad[i], err.code, err.message);
        json_decref(r);
        json_decref(pj);
    }
    cr_expect_eq(st.rev, rev, "nothing was written");
    json_decref(p);
}
