#!/usr/bin/env bash
# The real-server suites (docs/realk8s.md), run by scripts/test.sh inside
# `scripts/realk8s.sh run BUILD -- scripts/realk8s-tests.sh BUILD` (KUBECONFIG: the cluster):
#   1. the differential suite and the official-client check (realk8s/diff) against kapi-sim
#   2. the kube client, informer and CAS tests (ctest -L kube) against the real server
#   3. the peers benchmark's smoke run (realk8s/peers, its own kube-apiserver with the audit log)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
: "${KUBECONFIG:?run me through scripts/realk8s.sh run}"
echo "=== realk8s: differential suite (kapi-sim vs kube-apiserver) and the official clients"
(cd "$root/realk8s" && KAPI_SIM="$build/kapi-sim/kapi-sim" REALK8S_REQUIRED=1 \
  nice -n 5 go test -count=1 ./diff)
echo "=== realk8s: kube client, informer and CAS tests against kube-apiserver"
PODCLAIM_KUBE_SERVER=real REALK8S_BIN="$build/realk8s/bin/realk8s" \
  ctest --test-dir "$build" -L kube --output-on-failure --timeout 600
echo "=== realk8s: peers benchmark, smoke run (every system on a pool of 20; docs/peers.md)"
(cd "$root/realk8s" && REALK8S_BIN="$build/realk8s/bin/realk8s" PODCLAIM_BUILD="$build" REALK8S_REQUIRED=1 \
  nice -n 5 go test -count=1 -timeout 15m ./peers)
