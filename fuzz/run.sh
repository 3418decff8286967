#!/usr/bin/env bash
# Run every libFuzzer target of a fuzz build for a bounded time, starting from the seed corpora
# in fuzz/corpus (read only: what the run adds goes to a scratch folder). A crash leaves its
# reproducer and log under <build>/fuzz-findings/<target>/ and fails the run: add the
# reproducer to fuzz/regressions/<target>/ with the fix, so every later test build replays it.
#   fuzz/run.sh [build-dir]       PC_FUZZ_SECONDS per target (default 5)
# PC_FUZZ_SEED (default 1) fixes libFuzzer's random seed, so a run is the same run again on the
# same tree: the short CI run then fails only on a change, never on the luck of the draw (a
# finding of a long run by hand lands as a reproducer). PC_FUZZ_SEED=0 draws a new seed.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-fuzz}
secs=${PC_FUZZ_SECONDS:-5}
seed=${PC_FUZZ_SEED:-1}
out="$dir/fuzz-findings"
fail=0
shopt -s nullglob
bins=("$dir"/fuzz/fuzz_*)
[ ${#bins[@]} -gt 0 ] || { echo "fuzz: no targets in $dir/fuzz (build target fuzz_all)"; exit 1; }
for bin in "${bins[@]}"; do
  name=$(basename "$bin")
  name=${name#fuzz_}
  work=$(mktemp -d)
  mkdir -p "$out/$name"
  if "$bin" -seed="$seed" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/$name/" "$work" "fuzz/corpus/$name" >"$out/$name.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$name.log")
    cov=$(grep -o 'cov: [0-9]*' "$out/$name.log" | tail -1)
    printf 'fuzz_%-14s %3ss  %8s runs  %s\n' "$name" "$secs" "${runs:-?}" "${cov:-}"
  else
    echo "fuzz_$name: FAILED; reproducer and log in $out/$name/ and $out/$name.log"
    grep -m3 -E 'ERROR|check failed|runtime error' "$out/$name.log" | sed 's/^/  /'
    fail=1
  fi
  rm -rf "$work"
done
exit $fail
