#!/usr/bin/env bash
# README's test command: install what is missing, build from scratch, run every test,
# then the whole suite under AddressSanitizer+UBSan and the concurrency tests under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc)
run() { # build-dir label-regex cmake-args...
  local dir=$1 labels=$2; shift 2
  echo "=== $dir: configure + build ($*)"
  cmake -S . -B "$dir" -DPC_BUILD_TESTS=ON -DPC_BUILD_BENCH=OFF "$@" >/dev/null
  cmake --build "$dir" -j "$jobs" >/dev/null
  echo "=== $dir: ctest"
  # --no-tests=error: a build configured without tests must fail here, not pass with
  # "No tests were found" (scripts/demo.sh builds in build-demo/ for that reason).
  local args=(--test-dir "$dir" --output-on-failure --timeout 600 --no-tests=error)
  [ -n "$labels" ] && args+=(-L "$labels")
  ctest "${args[@]}"
}

run build "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run build-asan "" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPC_SANITIZE=address,undefined
# TSan options and suppressions come with each test (tests/CMakeLists.txt).
run build-tsan concurrency -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DPC_SANITIZE=thread
echo "=== all test runs passed"
