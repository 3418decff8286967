/* Test helpers shared by the core tests. */
#include "common.h"

#include <time.h>

int64_t pc_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pc_test_pause(void)
{
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
}

bool pc_test_wait(bool (*cond)(void *arg), void *arg, int64_t timeout_ms)
{
    return PC_TEST_WAIT_UNTIL(cond(arg), timeout_ms);
}
