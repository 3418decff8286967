/* The in-process runner behind tests/tsan-runner/criterion/criterion.h (TSan builds only;
 * see that header for why). Runs every registered Test() in registration order and prints
 * a Criterion-like synthesis line. Exit status: 0 if all passed. */
#include <criterion/criterion.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct cr_tsan_test *tests, **tail = &tests;
static struct cr_tsan_test *current;
static int expect_failures;
static jmp_buf skip_jmp; /* cr_tsan_skip jumps back to main's call of the running test */

void cr_tsan_register(struct cr_tsan_test *t)
{
    *tail = t;
    tail = &t->next;
}

static struct cr_tsan_suite *suites;

void cr_tsan_register_suite(struct cr_tsan_suite *s)
{
    s->next = suites;
    suites = s;
}

/* The test's fields, the unset ones from its TestSuite() */
static void apply_suite(struct cr_tsan_test *t)
{
    for (struct cr_tsan_suite *s = suites; s; s = s->next) {
        if (strcmp(s->name, t->suite) != 0)
            continue;
        if (!t->data.init)
            t->data.init = s->data.init;
        if (!t->data.fini)
            t->data.fini = s->data.fini;
        if (t->data.timeout <= 0)
            t->data.timeout = s->data.timeout;
        t->data.disabled = t->data.disabled || s->data.disabled;
    }
}

void cr_tsan_fail(const char *file, int line, bool fatal, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[FAIL] %s::%s: %s:%d: %s", current ? current->suite : "?",
            current ? current->name : "?", file, line, expr);
    if (fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    if (fatal) {
        fprintf(stderr, "[====] Synthesis: test %s::%s failed\n", current->suite, current->name);
        exit(1);
    }
    expect_failures++;
}

void cr_tsan_log(const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%s] ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cr_tsan_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[SKIP] %s::%s: ", current->suite, current->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    longjmp(skip_jmp, 1);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "[FAIL] test timed out\n";
    write(2, msg, sizeof(msg) - 1);
    _exit(1);
}

int main(int argc, char **argv)
{
    const char *only = NULL; /* --filter suite::name (exact) */
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--filter=", 9) == 0)
            only = argv[i] + 9;
    signal(SIGALRM, on_alarm);
    int passed = 0, skipped = 0;
    for (current = tests; current; current = current->next) {
        char full[256];
        snprintf(full, sizeof(full), "%s::%s", current->suite, current->name);
        apply_suite(current);
        if (current->data.disabled || (only && strcmp(only, full) != 0)) {
            skipped++;
            continue;
        }
        fprintf(stderr, "[RUN ] %s\n", full);
        alarm(current->data.timeout > 0 ? (unsigned)current->data.timeout + 1 : 300);
        int before = expect_failures;
        if (current->data.init)
            current->data.init();
        volatile bool skip = false; /* set after a longjmp: volatile keeps it */
        if (setjmp(skip_jmp) == 0)
            current->fn();
        else
            skip = true;
        if (current->data.fini)
            current->data.fini();
        alarm(0);
        if (skip) {
            skipped++;
            continue;
        }
        if (expect_failures != before) {
            fprintf(stderr, "[====] Synthesis: test %s failed\n", full);
            return 1;
        }
        passed++;
    }
    fprintf(stderr,
            "[====] Synthesis: Tested: %d | Passing: %d | Failing: 0 | Crashing: 0 | Skipped: %d\n",
            passed, passed, skipped);
    return 0;
}
