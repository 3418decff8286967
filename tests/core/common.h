/* Test helpers shared by the core tests: waiting for a condition with a deadline. */
#ifndef PODCLAIM_TESTS_COMMON_H
#define PODCLAIM_TESTS_COMMON_H

#include <stdbool.h>
#include <stdint.h>

/* Poll cond(arg) until it is true or timeout_ms passes; returns its last value.
 * The only place tests wait: it re-checks every 200 us, so a test never depends on a
 * sleep being long enough, only on the condition becoming true within the timeout. */
bool pc_test_wait(bool (*cond)(void *arg), void *arg, int64_t timeout_ms);

/* Same, for an expression: evaluates to the expression's final truth value. */
#define PC_TEST_WAIT_UNTIL(expr, timeout_ms)                                                       \
    ({                                                                                             \
        int64_t pc_test_end_ = pc_test_now_ms() + (timeout_ms);                                    \
        bool pc_test_ok_;                                                                          \
        while (!(pc_test_ok_ = (expr)) && pc_test_now_ms() < pc_test_end_)                         \
            pc_test_pause();                                                                       \
        pc_test_ok_;                                                                               \
    })

int64_t pc_test_now_ms(void);
void pc_test_pause(void); /* 200 us */

#endif
