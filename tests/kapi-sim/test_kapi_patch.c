/* kapi-sim patch semantics: merge patch, JSON patch, strategic merge patch. */
#include "sim.h"

#include <criterion/criterion.h>

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    cr_assert_not_null(j, "bad test JSON %s: %s", s, e.text);
    return j;
}

static void expect_json(json_t *got, const char *want)
{
    json_t *w = J(want);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    char *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
    cr_expect(json_equal(got, w), "expected %s\n     got %s", ws, g);
    free(g);
    free(ws);
    json_decref(w);
}

static json_t *apply(ks_patch_type t, const char *doc, const char *patch, ks_err *err)
{
    json_t *d = J(doc), *p = J(patch);
    json_t *r = ks_patch_apply(t, d, p, err);
    json_t *d0 = J(doc);
    cr_expect(json_equal(d, d0), "the input document must not change");
    json_decref(d0);
    json_decref(d);
    json_decref(p);
    return r;
}

Test(patch, merge_patch_merges_maps_and_null_deletes)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_MERGE, "{\"a\":{\"b\":1,\"c\":2},\"d\":[1,2]}",
                      "{\"a\":{\"b\":null,\"e\":3},\"d\":[3]}", &err);
    expect_json(r, "{\"a\":{\"c\":2,\"e\":3},\"d\":[3]}");
    json_decref(r);
}

Test(patch, merge_patch_replaces_container_lists_whole)
{
    ks_err err = {0};
    json_t *r =
            apply(KS_PATCH_MERGE,
                  "{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"x\",\"args\":[\"1\"]}]}}",
                  "{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"y\"}]}}", &err);
    expect_json(r, "{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"y\"}]}}");
    json_decref(r);
}

Test(patch, strategic_merges_containers_by_name)
{
    ks_err err = {0};
    json_t *r =
            apply(KS_PATCH_STRATEGIC,
                  "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"x\","
                  "\"args\":[\"1\"]},{\"name\":\"b\",\"image\":\"z\"}]},\"metadata\":{\"labels\":{"
                  "\"k\":\"v\"}}}",
                  "{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"y\"}]},\"metadata\":{"
                  "\"labels\":{\"n\":\"m\"}}}",
                  &err);
    expect_json(r, "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"y\","
                   "\"args\":[\"1\"]},{\"name\":\"b\",\"image\":\"z\"}]},\"metadata\":{\"labels\":{"
                   "\"k\":\"v\","
                   "\"n\":\"m\"}}}");
    json_decref(r);
}

Test(patch, strategic_appends_new_containers_and_honours_delete_directive)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_STRATEGIC,
                      "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":"
                      "\"b\"}]}}",
                      "{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"i\"},{\"name\":\"a\","
                      "\"$patch\":\"delete\"}]}}",
                      &err);
    expect_json(r, "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"b\"},{\"name\":"
                   "\"c\",\"image\":\"i\"}]}}");
    json_decref(r);
}

Test(patch, strategic_ignores_set_element_order_and_replaces_unkeyed_lists)
{
    ks_err err = {0};
    json_t *r =
            apply(KS_PATCH_STRATEGIC, "{\"args\":[\"1\",\"2\"],\"x\":1}",
                  "{\"$setElementOrder/containers\":[{\"name\":\"a\"}],\"args\":[\"3\"]}", &err);
    expect_json(r, "{\"args\":[\"3\"],\"x\":1}");
    json_decref(r);
}

Test(patch, strategic_list_element_without_merge_key_is_400)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_STRATEGIC, "{\"kind\":\"Pod\",\"spec\":{\"containers\":[]}}",
                      "{\"spec\":{\"containers\":[{\"image\":\"x\"}]}}", &err);
    cr_expect_null(r);
    cr_expect_eq(err.code, 400, "code %d: %s", err.code, err.message);
}

/* kube-apiserver finds a list's merge key by its place in the Go type, not by its field
 * name: a container's ports merge by containerPort, a Service's by port, and a list that is
 * not a merge list in its place is replaced whole even if a merge list elsewhere shares its
 * name. */
Test(patch, strategic_merge_keys_follow_the_path_not_the_field_name)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_STRATEGIC,
                      "{\"kind\":\"Service\",\"spec\":{\"ports\":[{\"port\":80,\"name\":\"a\"},"
                      "{\"port\":81,\"name\":\"b\"}]}}",
                      "{\"spec\":{\"ports\":[{\"port\":81,\"name\":\"c\"}]}}", &err);
    cr_assert_not_null(r, "%d %s", err.code, err.message);
    expect_json(r, "{\"kind\":\"Service\",\"spec\":{\"ports\":[{\"port\":80,\"name\":\"a\"},"
                   "{\"port\":81,\"name\":\"c\"}]}}");
    json_decref(r);

    /* a container's ports merge by containerPort; a "containers" list anywhere else (here
     * under status, where PodStatus has none) is plain data, replaced */
    r = apply(KS_PATCH_STRATEGIC,
              "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\",\"ports\":[{"
              "\"containerPort\":1,\"name\":\"x\"}]}]},\"status\":{\"containers\":[{\"n\":1},"
              "{\"n\":2}]}}",
              "{\"spec\":{\"containers\":[{\"name\":\"a\",\"ports\":[{\"containerPort\":2}]}]},"
              "\"status\":{\"containers\":[{\"n\":3}]}}",
              &err);
    cr_assert_not_null(r, "%d %s", err.code, err.message);
    expect_json(r, "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\",\"ports\":[{"
                   "\"containerPort\":1,\"name\":\"x\"},{\"containerPort\":2}]}]},\"status\":{"
                   "\"containers\":[{\"n\":3}]}}");
    json_decref(r);

    /* readinessGates has no patch strategy in PodSpec: replaced, not merged */
    r = apply(KS_PATCH_STRATEGIC,
              "{\"kind\":\"Pod\",\"spec\":{\"readinessGates\":[{\"conditionType\":\"a\"}]}}",
              "{\"spec\":{\"readinessGates\":[{\"conditionType\":\"b\"}]}}", &err);
    cr_assert_not_null(r, "%d %s", err.code, err.message);
    expect_json(r, "{\"kind\":\"Pod\",\"spec\":{\"readinessGates\":[{\"conditionType\":\"b\"}]}}");
    json_decref(r);

    /* a Deployment's pod template merges containers by name as a pod does */
    r = apply(KS_PATCH_STRATEGIC,
              "{\"kind\":\"Deployment\",\"spec\":{\"template\":{\"spec\":{\"containers\":[{"
              "\"name\":\"a\",\"image\":\"x\"},{\"name\":\"b\",\"image\":\"y\"}]}}}}",
              "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"b\",\"image\":"
              "\"z\"}]}}}}",
              &err);
    cr_assert_not_null(r, "%d %s", err.code, err.message);
    expect_json(r, "{\"kind\":\"Deployment\",\"spec\":{\"template\":{\"spec\":{\"containers\":[{"
                   "\"name\":\"a\",\"image\":\"x\"},{\"name\":\"b\",\"image\":\"z\"}]}}}}");
    json_decref(r);
}

Test(patch, json_patch_add_remove_replace_test)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_JSON, "{\"a\":{\"b\":1},\"l\":[1,2]}",
                      "[{\"op\":\"test\",\"path\":\"/a/b\",\"value\":1},"
                      "{\"op\":\"replace\",\"path\":\"/a/b\",\"value\":2},"
                      "{\"op\":\"add\",\"path\":\"/a/c~1d\",\"value\":\"s\"},"
                      "{\"op\":\"add\",\"path\":\"/l/-\",\"value\":3},"
                      "{\"op\":\"add\",\"path\":\"/l/0\",\"value\":0},"
                      "{\"op\":\"remove\",\"path\":\"/l/1\"}]",
                      &err);
    cr_assert_not_null(r, "%s", err.message);
    expect_json(r, "{\"a\":{\"b\":2,\"c/d\":\"s\"},\"l\":[0,2,3]}");
    json_decref(r);
}

/* The stored object is shared with watchers and readers: a JSON patch must leave every
 * container of its input untouched however deep it writes (it copies only what it changes). */
Test(patch, json_patch_deep_writes_moves_and_copies_leave_the_input_alone)
{
    ks_err err = {0};
    const char *doc = "{\"m\":{\"l\":{\"a\":\"x\"},\"n\":[{\"k\":1},{\"k\":2}]},\"s\":{\"z\":[1]}}";
    json_t *d = J(doc), *d0 = J(doc);
    json_t *p = J("[{\"op\":\"add\",\"path\":\"/m/l/b\",\"value\":\"y\"},"
                  "{\"op\":\"replace\",\"path\":\"/m/n/1/k\",\"value\":3},"
                  "{\"op\":\"move\",\"from\":\"/m/n/0\",\"path\":\"/m/l/first\"},"
                  "{\"op\":\"add\",\"path\":\"/m/l/first/k2\",\"value\":4},"
                  "{\"op\":\"copy\",\"from\":\"/m/l\",\"path\":\"/c\"},"
                  "{\"op\":\"remove\",\"path\":\"/c/a\"},"
                  "{\"op\":\"add\",\"path\":\"/m/n/-\",\"value\":5}]");
    json_t *r = ks_patch_apply(KS_PATCH_JSON, d, p, &err);
    cr_assert_not_null(r, "%s", err.message);
    cr_expect(json_equal(d, d0), "the input document changed");
    expect_json(r, "{\"m\":{\"l\":{\"a\":\"x\",\"b\":\"y\",\"first\":{\"k\":1,\"k2\":4}},"
                   "\"n\":[{\"k\":3},5]},\"s\":{\"z\":[1]},"
                   "\"c\":{\"b\":\"y\",\"first\":{\"k\":1,\"k2\":4}}}");
    /* an untouched subtree is shared, not copied */
    cr_expect_eq(json_object_get(r, "s"), json_object_get(d, "s"));
    json_decref(r);
    json_decref(p);
    json_decref(d0);
    json_decref(d);
}

Test(patch, json_patch_failed_test_is_422_and_changes_nothing)
{
    ks_err err = {0};
    json_t *r = apply(KS_PATCH_JSON, "{\"a\":1}",
                      "[{\"op\":\"replace\",\"path\":\"/a\",\"value\":5},"
                      "{\"op\":\"test\",\"path\":\"/a\",\"value\":1}]",
                      &err);
    cr_expect_null(r);
    cr_expect_eq(err.code, 422, "code %d", err.code);
}

Test(patch, json_patch_missing_path_and_bad_ops_fail)
{
    const char *bad[] = {"[{\"op\":\"remove\",\"path\":\"/nope\"}]",
                         "[{\"op\":\"replace\",\"path\":\"/x/y\",\"value\":1}]",
                         "[{\"op\":\"frobnicate\",\"path\":\"/a\"}]",
                         "[{\"path\":\"/a\"}]",
                         "[{\"op\":\"add\",\"path\":\"/l/9\",\"value\":1}]",
                         "{\"op\":\"add\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_err err = {0};
        json_t *r = apply(KS_PATCH_JSON, "{\"a\":1,\"l\":[]}", bad[i], &err);
        cr_expect_null(r, "patch %s should fail", bad[i]);
        cr_expect(err.code == 400 || err.code == 422, "patch %s: code %d", bad[i], err.code);
        json_decref(r);
    }
}

Test(patch, content_types_map_to_patch_types)
{
    cr_expect_eq(ks_patch_type_parse("application/merge-patch+json"), KS_PATCH_MERGE);
    cr_expect_eq(ks_patch_type_parse("application/json-patch+json; charset=utf-8"), KS_PATCH_JSON);
    cr_expect_eq(ks_patch_type_parse("application/strategic-merge-patch+json"), KS_PATCH_STRATEGIC);
    cr_expect_eq(ks_patch_type_parse("application/json"), -1);
    cr_expect_eq(ks_patch_type_parse(NULL), -1);
}
