#!/usr/bin/env bash
# The real Kubernetes API server for podclaim's tests (docs/realk8s.md).
#
#   scripts/realk8s.sh build [BUILD]      build kube-apiserver, etcd and the harness once
#                                         (BUILD/realk8s/bin; default BUILD = build); a rebuild
#                                         happens only when realk8s/ changes
#   scripts/realk8s.sh up DIR [BUILD]     start etcd + kube-apiserver + fake kubelet, install the
#                                         CRDs; DIR/env then holds KUBECONFIG=... (for `source`)
#   scripts/realk8s.sh down DIR           stop them (SIGTERM, wait)
#   scripts/realk8s.sh run [BUILD] -- CMD run CMD with KUBECONFIG set to a fresh cluster, then stop
#   scripts/realk8s.sh peers [BUILD] [-- FLAGS]
#                                         the peers benchmark (docs/peers.md): builds podclaim
#                                         (Release, default BUILD = build-bench) and the harness,
#                                         then `realk8s peers` brings up its own cluster, runs
#                                         every system on the same pools, prints one table
#
# Go builds run under `nice -n 15`: the machine is shared.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

stamp_of() { # everything that decides the binaries
  (cd "$root/realk8s" && cat go.mod go.sum $(find . -name '*.go' | sort) "$root/scripts/realk8s.sh" && go version) |
    sha256sum | cut -d' ' -f1
}

# /version of a module build says v0.0.0-master unless told; stamp the pinned release.
version_ldflags() {
  local v
  v=$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$root/realk8s/go.mod")
  local mm=${v#v} pkg=k8s.io/component-base/version
  echo "-X $pkg.gitVersion=$v -X $pkg.gitMajor=${mm%%.*} -X $pkg.gitMinor=$(echo "$mm" | cut -d. -f2)" \
    "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
}

abspath() { mkdir -p "$1" && (cd "$1" && pwd); }

build() {
  local build
  build=$(abspath "${1:-$root/build}")
  local bin=$build/realk8s/bin stamp
  command -v go >/dev/null || { echo "realk8s: no Go toolchain" >&2; return 1; }
  stamp=$(stamp_of)
  if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] && [ -x "$bin/realk8s" ] &&
     [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  mkdir -p "$bin"
  echo "realk8s: building kube-apiserver, etcd and the harness into $bin (first time: minutes)" >&2
  local t0=$SECONDS
  (cd "$root/realk8s" &&
    nice -n 15 go build -trimpath -ldflags "$(version_ldflags)" -o "$bin/kube-apiserver" \
      k8s.io/kubernetes/cmd/kube-apiserver &&
    nice -n 15 go build -trimpath -o "$bin/etcd" go.etcd.io/etcd/server/v3 &&
    nice -n 15 go build -trimpath -o "$bin/realk8s" ./cmd/realk8s)
  echo "$stamp" >"$bin/.stamp"
  echo "realk8s: built in $((SECONDS - t0)) s" >&2
}

up() {
  local dir=$1 build
  build=$(abspath "${2:-$root/build}")
  build "$build"
  rm -rf "$dir"
  mkdir -p "$dir"
  # setsid: its own process group, so `down` can stop it and its children together
  setsid "$build/realk8s/bin/realk8s" up --bin "$build/realk8s/bin" --dir "$dir" \
    >"$dir/up.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local i
  for i in $(seq 1 1200); do
    [ -f "$dir/env" ] && break
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "realk8s: the cluster did not start:" >&2
      tail -20 "$dir/up.log" >&2
      return 1
    fi
    sleep 0.1
  done
  [ -f "$dir/env" ] || { echo "realk8s: no cluster after 120 s ($dir/up.log)" >&2; down "$dir"; return 1; }
  local kc
  kc=$(sed -n 's/^KUBECONFIG=//p' "$dir/env")
  # the CRDs a cluster gets from deploy/ (kubectl apply -k deploy/ installs the same files)
  KUBECONFIG=$kc kubectl apply -f "$root/deploy/crds/" >/dev/null
  KUBECONFIG=$kc kubectl wait --for condition=established --timeout=60s \
    crd/sandboxpools.podclaim.io crd/sandboxclaims.podclaim.io >/dev/null
  echo "realk8s: up; source $dir/env (KUBECONFIG=$kc)" >&2
}

down() {
  local dir=$1 pid
  pid=$(cat "$dir/pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    sleep 0.1
  done
  echo "realk8s: $pid did not stop in 30 s; killing its group" >&2
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

run() {
  local build=$root/build
  if [ "${1:-}" != "--" ]; then build=$1; shift; fi
  [ "${1:-}" = "--" ] && shift
  run_dir=$(mktemp -d /tmp/realk8s.XXXXXX) # global: the EXIT trap needs it
  trap 'down "$run_dir"; rm -rf "$run_dir"' EXIT
  up "$run_dir" "$build"
  set -a
  # shellcheck disable=SC1091
  . "$run_dir/env"
  set +a
  "$@"
}

peers() {
  local build=$root/build-bench
  if [ -n "${1:-}" ] && [ "$1" != "--" ]; then build=$1; shift; fi
  [ "${1:-}" = "--" ] && shift
  build=$(abspath "$build")
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=ON >/dev/null
  nice -n 15 cmake --build "$build" -j "$(nproc)" --target pc_peer_claimer podclaimd >/dev/null
  build "$build"
  "$build/realk8s/bin/realk8s" peers --bin "$build/realk8s/bin" --build "$build" \
    --crds "$root/deploy/crds" "$@"
}

cmd=${1:-}
shift || true
case "$cmd" in
build) build "$@" ;;
up) up "$@" ;;
down) down "$@" ;;
run) run "$@" ;;
peers) peers "$@" ;;
*) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
