/* A stand-in for <criterion/criterion.h>, used only by the ThreadSanitizer build.
 *
 * Criterion's runner cannot start under TSan: it maps its shared arena at a random fixed
 * address in 0x2000'0000'0000..0x7f00'0000'0000, which TSan reserves for its shadow, and
 * aborts with "Could not initialize inheritable arena" (Snaipe/Criterion#274, open).
 * The concurrency tests are ordinary Criterion sources; under TSan this header compiles
 * them against a minimal in-process runner instead (runner.c): each Test() runs in the
 * same process, one after the other, with its .init/.fini and .timeout. Supported: the
 * Test() fields .init .fini .timeout .disabled .description, TestSuite() defaults for them, and the cr_assert_* /
 * cr_expect_* / cr_log_* / cr_skip_test macros below. A failed assertion ends the process with status 1.
 */
#ifndef PODCLAIM_TSAN_CRITERION_H
#define PODCLAIM_TSAN_CRITERION_H

/* What <criterion/criterion.h> brings in too, so tests compile the same way in both builds. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct criterion_test_extra_data {
    void (*init)(void);
    void (*fini)(void);
    double timeout;
    bool disabled;
    const char *description;
};

struct cr_tsan_test {
    const char *suite;
    const char *name;
    void (*fn)(void);
    struct criterion_test_extra_data data;
    struct cr_tsan_test *next;
};

void cr_tsan_register(struct cr_tsan_test *t);

/* TestSuite(suite, .init = …, .fini = …, .timeout = …): defaults for the suite's tests, each
 * field used where the Test() leaves it unset, as Criterion does. */
struct cr_tsan_suite {
    const char *name;
    struct criterion_test_extra_data data;
    struct cr_tsan_suite *next;
};
void cr_tsan_register_suite(struct cr_tsan_suite *s);
void cr_tsan_fail(const char *file, int line, bool fatal, const char *expr, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
void cr_tsan_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the running test as skipped (its .fini still runs), as Criterion's cr_skip_test. */
void cr_tsan_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#define Test(suite, name, ...)                                                                     \
    static void cr_tsan_fn_##suite##_##name(void);                                                 \
    static struct cr_tsan_test cr_tsan_desc_##suite##_##name = {                                   \
            #suite, #name, cr_tsan_fn_##suite##_##name, {__VA_ARGS__}, NULL};                      \
    __attribute__((constructor)) static void cr_tsan_reg_##suite##_##name(void)                    \
    {                                                                                              \
        cr_tsan_register(&cr_tsan_desc_##suite##_##name);                                          \
    }                                                                                              \
    static void cr_tsan_fn_##suite##_##name(void)

#define TestSuite(suite, ...)                                                                      \
    static struct cr_tsan_suite cr_tsan_suite_##suite = {#suite, {__VA_ARGS__}, NULL};             \
    __attribute__((constructor)) static void cr_tsan_sreg_##suite(void)                            \
    {                                                                                              \
        cr_tsan_register_suite(&cr_tsan_suite_##suite);                                            \
    }

#define CR_TSAN_CHECK(fatal, cond, text, ...)                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_tsan_fail(__FILE__, __LINE__, fatal, text, "" __VA_ARGS__);                         \
    } while (0)

#define cr_assert(e, ...) CR_TSAN_CHECK(true, (e), #e, __VA_ARGS__)
#define cr_expect(e, ...) CR_TSAN_CHECK(false, (e), #e, __VA_ARGS__)
#define cr_assert_not(e, ...) CR_TSAN_CHECK(true, !(e), "!(" #e ")", __VA_ARGS__)
#define cr_expect_not(e, ...) CR_TSAN_CHECK(false, !(e), "!(" #e ")", __VA_ARGS__)
#define cr_assert_fail(...) CR_TSAN_CHECK(true, 0, "cr_assert_fail", __VA_ARGS__)
#define cr_fatal(...) CR_TSAN_CHECK(true, 0, "cr_fatal", __VA_ARGS__)
#define cr_assert_null(e, ...) CR_TSAN_CHECK(true, (e) == NULL, #e " == NULL", __VA_ARGS__)
#define cr_assert_not_null(e, ...) CR_TSAN_CHECK(true, (e) != NULL, #e " != NULL", __VA_ARGS__)
#define cr_expect_null(e, ...) CR_TSAN_CHECK(false, (e) == NULL, #e " == NULL", __VA_ARGS__)
#define cr_expect_not_null(e, ...) CR_TSAN_CHECK(false, (e) != NULL, #e " != NULL", __VA_ARGS__)

#define CR_TSAN_CMP(fatal, a, op, b, ...)                                                          \
    CR_TSAN_CHECK(fatal, (a)op(b), #a " " #op " " #b, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) CR_TSAN_CMP(true, a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) CR_TSAN_CMP(true, a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) CR_TSAN_CMP(true, a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) CR_TSAN_CMP(true, a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) CR_TSAN_CMP(true, a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) CR_TSAN_CMP(true, a, >=, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) CR_TSAN_CMP(false, a, ==, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) CR_TSAN_CMP(false, a, !=, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) CR_TSAN_CMP(false, a, <, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) CR_TSAN_CMP(false, a, <=, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) CR_TSAN_CMP(false, a, >, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) CR_TSAN_CMP(false, a, >=, b, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                                                \
    CR_TSAN_CHECK(true, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                                               \
    CR_TSAN_CHECK(true, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                                                \
    CR_TSAN_CHECK(false, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_empty(a, ...) CR_TSAN_CHECK(true, (a)[0] == '\0', #a " is empty", __VA_ARGS__)
#define cr_assert_str_not_empty(a, ...)                                                            \
    CR_TSAN_CHECK(true, (a)[0] != '\0', #a " is not empty", __VA_ARGS__)
#define cr_assert_arr_eq(a, b, n, ...)                                                             \
    CR_TSAN_CHECK(true, memcmp((a), (b), (n)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...)                                                         \
    CR_TSAN_CHECK(true, ((a) - (b) <= (eps)) && ((b) - (a) <= (eps)), #a " ~= " #b, __VA_ARGS__)

#define cr_skip_test(...) cr_tsan_skip("" __VA_ARGS__)

#define cr_log_info(...) cr_tsan_log("info", __VA_ARGS__)
#define cr_log_warn(...) cr_tsan_log("warn", __VA_ARGS__)
#define cr_log_error(...) cr_tsan_log("error", __VA_ARGS__)

#endif
