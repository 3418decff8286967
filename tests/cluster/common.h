/* Shared by the cluster tests: waiting for a condition with a deadline (tests/core/common.h)
 * as an expression macro. */
#ifndef PODCLAIM_TESTS_CLUSTER_COMMON_H
#define PODCLAIM_TESTS_CLUSTER_COMMON_H

#include "../core/common.h"

#define PC_TEST_WAIT(expr, ms) PC_TEST_WAIT_UNTIL((expr), (ms))

#endif
