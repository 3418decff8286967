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
  # -j: most tests wait on servers and sockets more than they compute, so two at a time
  # shorten the run; the soak, which uses every core, runs alone (RUN_SERIAL).
  local args=(--test-dir "$dir" --output-on-failure --timeout 600 --no-tests=error -j "$jobs")
  [ -n "$labels" ] && args+=(-L "$labels")
  ctest "${args[@]}"
}

run build "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
# The real Kubernetes API server (docs/realk8s.md): kube-apiserver and etcd built from Go
# modules (the first build costs minutes, then build/realk8s and the Go build cache keep it).
if command -v go >/dev/null 2>&1; then
  scripts/realk8s.sh run build -- scripts/realk8s-tests.sh build
elif [ "${REALK8S_REQUIRED:-0}" = 1 ]; then
  echo "=== no Go toolchain, but the real-server suites are required (REALK8S_REQUIRED=1)" >&2
  exit 1
else
  echo "=== real-server suites skipped: no Go toolchain (see docs/realk8s.md)"
fi
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run build-asan "" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPC_SANITIZE=address,undefined
# TSan options and suppressions come with each test (tests/CMakeLists.txt).
run build-tsan concurrency -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DPC_SANITIZE=thread
# Fuzzing, bounded: every libFuzzer target of fuzz/ for PC_FUZZ_SECONDS (default 3) from its
# seed corpus; a crash fails the run (docs/RELIABILITY.md). The seeds and reproducers also ran
# above, in every build, as the fuzz_replay_* tests.
if echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return d && n; }' |
    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
  echo "=== build-fuzz: configure + build"
  cmake -S . -B build-fuzz -DPC_FUZZ=ON -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DPC_SANITIZE=fuzzer-no-link,address,undefined >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_all >/dev/null
  echo "=== build-fuzz: each target for ${PC_FUZZ_SECONDS:-3} s"
  PC_FUZZ_SECONDS=${PC_FUZZ_SECONDS:-3} fuzz/run.sh build-fuzz
else
  echo "=== fuzzing skipped: clang's libFuzzer runtime (Debian libclang-rt-14-dev) is missing"
fi
echo "=== all test runs passed"
