#!/usr/bin/env bash
# README's demo command: install what is missing, build from scratch, run the demo.
# Extra arguments go to the demo (see: build/demo/podclaim-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPC_BUILD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" --target podclaim-demo >/dev/null
exec build/demo/podclaim-demo "$@"
