#!/bin/bash
# kapi-sim with only some of the soak's faults: the soak's --kapi-sim for measuring what each
# fault costs (docs/RELIABILITY.md, "Throughput under faults"). The soak passes every fault of
# issue 16; this drops the ones not named in SOAK_FAULTS (comma-separated: conflict, error,
# throttle, drop, compact, delay; "all" keeps every one) and runs the real kapi-sim
# (KAPI_SIM, default build/kapi-sim/kapi-sim of this checkout). For example:
#   SOAK_FAULTS=throttle build/tests/soak/soak --kapi-sim tests/soak/faults-only.sh \
#       --claims 4000 --kill-at -1
set -euo pipefail
real=${KAPI_SIM:-$(cd "$(dirname "$0")/../.." && pwd)/build/kapi-sim/kapi-sim}
keep=",${SOAK_FAULTS:-all},"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --conflict-rate) k=conflict ;;
    --error-rate | --error-code) k=error ;;
    --throttle-rate) k=throttle ;;
    --watch-drop-ms) k=drop ;;
    --compact-every-ms) k=compact ;;
    --watch-delay-ms) k=delay ;;
    *)
        args+=("$1")
        shift
        continue
        ;;
    esac
    if [[ $keep == *",all,"* || $keep == *",$k,"* ]]; then
        args+=("$1" "$2")
    fi
    shift 2
done
exec "$real" "${args[@]}"
