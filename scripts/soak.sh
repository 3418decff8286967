#!/usr/bin/env bash
# The long fault soak (docs/RELIABILITY.md, "The fault soak"): kapi-sim with every fault on,
# two podclaimd replicas, one leader kill -9, a load of claims for a given time, then the
# audits. Exit 0 when every audit passed; the report is printed and kept in the output folder.
#   scripts/soak.sh [--duration 2h] [--claims N] [--build DIR] [--out DIR] [-- soak options]
# --duration: 90s, 30m, 2h (default 1h); --claims: an upper bound (default 20,000,000; 20 bytes
# of memory each in the driver). Builds the soak driver in DIR (default build) first.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=1h claims=20000000 build=build out=
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --claims) claims=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
  esac
done
case $duration in
  *h) secs=$(( ${duration%h} * 3600 )) ;;
  *m) secs=$(( ${duration%m} * 60 )) ;;
  *s) secs=${duration%s} ;;
  *) secs=$duration ;;
esac
out=${out:-$build/soak-$(date -u +%Y%m%dT%H%M%SZ)}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DPC_BUILD_TESTS=ON -DPC_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target soak >/dev/null
mkdir -p "$out"
echo "=== soak: ${secs} s (at most $claims claims), logs and report in $out"
set +e
"$build/tests/soak/soak" --duration "$secs" --claims "$claims" --out "$out" "$@" |
  tee "$out/report.txt"
rc=${PIPESTATUS[0]}
exit "$rc"
