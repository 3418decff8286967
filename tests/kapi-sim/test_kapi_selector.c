/* kapi-sim label and field selectors: grammar and matching. */
#include "sim.h"

#include <criterion/criterion.h>

static bool lmatch(const char *sel, const char *labels_json)
{
    ks_err err = {0};
    ks_lsel *s = ks_lsel_parse(sel, &err);
    cr_assert_not_null(s, "selector %s: %s", sel, err.message);
    json_t *l = json_loads(labels_json, 0, NULL);
    bool m = ks_lsel_match(s, l);
    json_decref(l);
    ks_lsel_free(s);
    return m;
}

Test(selector, equality_and_double_equals_match_the_value)
{
    cr_expect(lmatch("a=b", "{\"a\":\"b\"}"));
    cr_expect(lmatch("a==b", "{\"a\":\"b\"}"));
    cr_expect(!lmatch("a=b", "{\"a\":\"c\"}"));
    cr_expect(!lmatch("a=b", "{}"));
}

Test(selector, not_equal_matches_missing_keys)
{
    cr_expect(lmatch("a!=b", "{}"));
    cr_expect(lmatch("a!=b", "{\"a\":\"c\"}"));
    cr_expect(!lmatch("a!=b", "{\"a\":\"b\"}"));
}

Test(selector, set_based_in_and_notin)
{
    cr_expect(lmatch("env in (prod, dev)", "{\"env\":\"dev\"}"));
    cr_expect(!lmatch("env in (prod,dev)", "{\"env\":\"qa\"}"));
    cr_expect(!lmatch("env in (prod,dev)", "{}"));
    cr_expect(lmatch("env notin (prod,dev)", "{\"env\":\"qa\"}"));
    cr_expect(lmatch("env notin (prod,dev)", "{}"));
    cr_expect(!lmatch("env notin (prod)", "{\"env\":\"prod\"}"));
}

Test(selector, exists_and_not_exists)
{
    cr_expect(lmatch("a", "{\"a\":\"\"}"));
    cr_expect(!lmatch("a", "{}"));
    cr_expect(lmatch("!a", "{}"));
    cr_expect(!lmatch("!a", "{\"a\":\"x\"}"));
}

Test(selector, requirements_are_anded_and_prefixed_keys_work)
{
    const char *l = "{\"podclaim.io/pool\":\"web\",\"podclaim.io/phase\":\"Idle\"}";
    cr_expect(lmatch("podclaim.io/pool=web,podclaim.io/phase=Idle", l));
    cr_expect(!lmatch("podclaim.io/pool=web,podclaim.io/phase=Running", l));
    cr_expect(lmatch("", "{}"));
    cr_expect(lmatch(NULL, "{}"));
}

Test(selector, syntax_errors_are_400_with_the_offset)
{
    const char *bad[] = {"a=b,", "a in (x", "a in x", "=b", "a b", "a=(b)", "!"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_err err = {0};
        ks_lsel *s = ks_lsel_parse(bad[i], &err);
        cr_expect_null(s, "selector '%s' should not parse", bad[i]);
        cr_expect_eq(err.code, 400, "selector '%s': code %d", bad[i], err.code);
        ks_lsel_free(s);
    }
}

static bool fmatch(const char *sel, const char *obj_json)
{
    ks_err err = {0};
    ks_fsel *s = ks_fsel_parse(sel, &err);
    cr_assert_not_null(s, "field selector %s: %s", sel, err.message);
    json_t *o = json_loads(obj_json, 0, NULL);
    bool m = ks_fsel_match(s, o);
    json_decref(o);
    ks_fsel_free(s);
    return m;
}

Test(selector, field_selectors_on_name_namespace_and_phase)
{
    const char *pod = "{\"metadata\":{\"name\":\"p1\",\"namespace\":\"ns\"},\"status\":{\"phase\":"
                      "\"Running\"}}";
    cr_expect(fmatch("metadata.name=p1", pod));
    cr_expect(fmatch("metadata.name==p1,metadata.namespace=ns", pod));
    cr_expect(!fmatch("metadata.name!=p1", pod));
    cr_expect(fmatch("status.phase=Running", pod));
    cr_expect(!fmatch("status.phase=Pending", pod));
}

Test(selector, unsupported_field_is_400)
{
    ks_err err = {0};
    ks_fsel *s = ks_fsel_parse("spec.foo=bar", &err);
    cr_expect_null(s);
    cr_expect_eq(err.code, 400);
    cr_expect(strstr(err.message, "spec.foo") != NULL, "message: %s", err.message);
}
