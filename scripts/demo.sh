#!/usr/bin/env bash
# README's demo command: install what is missing, build, then run the whole system on loopback,
# as in a cluster: kapi-sim (the API server stand-in; it plays the kubelet only and holds one
# SandboxPool object), podclaimd against it (the pool controller: it creates the pool's pods from
# the template and turns them Idle when Ready; and the scheduler), and podclaimctl load firing
# claims over HTTP for about 10 s, first at a sustainable rate, then flat out (saturation). The
# load client releases each claim 20 ms after winning it (--release-after), and podclaimd's pool
# controller recycles the released pod in place (Stopping -> reset -> Idle), so the same pods
# serve the whole run. Prints both summaries, the pools' snapshots, how many pods were created
# and recycled, and kapi-sim's check that no pod idle period was won twice, then stops.
#
#   scripts/demo.sh                      the daemon demo (above)
#   scripts/demo.sh --rate R             offered rate of the sustainable phase (default 200/s)
#   scripts/demo.sh --pods N             warm pods in the pool (default 256)
#   scripts/demo.sh --in-process [ARGS]  the library alone, in one process (podclaim-demo ARGS;
#                                        --in-process --help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

build=build-demo # its own folder: scripts/test.sh configures build/ with other options
rate=200
pods=256
seconds=5
if [ "${1:-}" = "--in-process" ]; then
  shift
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target podclaim-demo >/dev/null
  exec "$build/demo/podclaim-demo" "$@"
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --pods) pods=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "demo.sh: unknown argument $1 (see the top of scripts/demo.sh)" >&2; exit 2 ;;
  esac
done

echo "== building ($build, Release)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target kapi-sim podclaimd podclaimctl >/dev/null

tmp=$(mktemp -d /tmp/podclaim-demo.XXXXXX)
sim_pid=""
pcd_pid=""
cleanup() {
  [ -n "$pcd_pid" ] && kill -TERM "$pcd_pid" 2>/dev/null && wait "$pcd_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_file() { # file pid what
  for _ in $(seq 1 1000); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "demo.sh: $3 exited at start; its log:" >&2; cat "$tmp/$3.log" >&2; exit 1; }
    sleep 0.01
  done
  echo "demo.sh: $3 did not start within 10 s" >&2
  exit 1
}

echo "== kapi-sim (the kubelet: a pod runs 100 ms after it is created): SandboxPool demo/sandboxes, replicas $pods"
"$build/kapi-sim/kapi-sim" --listen 127.0.0.1:0 --port-file "$tmp/kapi.port" \
  --pool "demo/sandboxes=$pods" --warmup-ms 100 --restart-ms 20 >"$tmp/kapi-sim.log" 2>&1 &
sim_pid=$!
wait_file "$tmp/kapi.port" "$sim_pid" kapi-sim
kapi="http://127.0.0.1:$(cat "$tmp/kapi.port")"

cat >"$tmp/podclaimd.yaml" <<YAML
listen: 127.0.0.1:0
kube:
  server: $kapi
pools:
  - namespace: demo
    name: sandboxes
    team: platform
    user: demo
    env: local
YAML
echo "== podclaimd against $kapi (config $tmp/podclaimd.yaml): its pool controller creates the $pods pods"
"$build/daemon/podclaimd" --config "$tmp/podclaimd.yaml" --port-file "$tmp/pcd.port" \
  >"$tmp/podclaimd.log" 2>&1 &
pcd_pid=$!
wait_file "$tmp/pcd.port" "$pcd_pid" podclaimd
api="http://127.0.0.1:$(cat "$tmp/pcd.port")"
ctl() { "$build/daemon/podclaimctl" --server "$api" "$@"; }
t0=$(date +%s%N)
for _ in $(seq 1 3000); do
  idle=$(ctl pools | awk '$1=="demo/sandboxes"{print $3}')
  [ "${idle:-0}" -ge "$pods" ] && break
  sleep 0.01
done
echo "   $pods pods created and Idle after $((($(date +%s%N) - t0) / 1000000)) ms"
ctl pools
echo
metric() { curl -s "$api/metrics" | awk -v m="$1" 'index($0, m) == 1 {print $2}'; }

echo "== load 1/2, SUSTAINABLE: $rate claims/s offered for ${seconds} s; a claim here takes milliseconds"
ctl load demo/sandboxes --rate "$rate" --duration "${seconds}s" --connections 32 \
  --image sandbox=python:3.12-slim --label sandbox.example/owner=demo --name sustainable \
  --release-after 20ms
echo
echo "== load 2/2, SATURATION: 64 connections as fast as answers come for ${seconds} s;"
echo "   64 claims always in flight on 2 cores shared by kapi-sim, podclaimd and the load client:"
echo "   the latency here is queueing (64 / claims per second), not a slow claim"
ctl load demo/sandboxes --rate max --duration "${seconds}s" --connections 64 \
  --image sandbox=python:3.12-slim --label sandbox.example/owner=demo --name saturation \
  --release-after 20ms
echo
for _ in $(seq 1 1000); do # the last releases recycle, the replacements made meanwhile go
  idle=$(ctl pools | awk '$1=="demo/sandboxes"{print $3}')
  [ "${idle:-0}" -eq "$pods" ] && break
  sleep 0.01
done
echo "== pools after the load"
ctl pools
echo
echo "== podclaimd's pool controller (every write guarded by the pod's resourceVersion)"
echo "   pods created:               $(metric 'podclaimd_pool_controller_total{action="create"}')   (the $pods, and replacements: a claimed pod is the caller's,"
echo "                               so the pool makes another to keep $pods warm; once released pods come back the surplus goes)"
echo "   released pods reset in place (template images and labels back): $(metric 'podclaimd_pool_controller_total{action="reset"}')"
echo "   pods turned Idle (first start + each recycle): $(metric 'podclaimd_pool_controller_total{action="idle"}')"
echo "   pods deleted:               $(metric 'podclaimd_pool_controller_total{action="delete"}')"
echo "   SandboxPool status writes:  $(metric 'podclaimd_pool_status_writes_total')"
echo "   (kubectl --server $kapi get sandboxpool -n demo sandboxes -o yaml shows the status)"
echo
echo "== kapi-sim's log of every Idle -> claimed transition (GET /sim/claims)"
curl -s "$kapi/sim/claims" | python3 -c '
import collections, json, sys
claims = json.load(sys.stdin)["claims"]
seen = collections.Counter((c["namespace"], c["pod"], c["idleResourceVersion"]) for c in claims)
twice = sum(1 for n in seen.values() if n > 1)
print("idle periods won: %d, won twice: %d" % (len(claims), twice))
sys.exit(1 if twice else 0)'
