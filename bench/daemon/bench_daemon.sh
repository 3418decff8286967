#!/usr/bin/env bash
# podclaimd benchmark, one run, every figure beside its baseline (bench/RESULTS.md):
#   1. kapi-sim's raw PATCH rate (rawpatch: claim-shaped strategic-merge PATCHes with the
#      resourceVersion precondition, 64 keep-alive connections, closed loop, no podclaim at all)
#   2. the in-process claim rate (podclaim-demo: the library, informer and CAS backend in one
#      process against its own kapi-sim started with the same flags)
#   3. claims through podclaimd (podclaimctl load, 64 keep-alive connections, each claim released
#      20 ms after its answer): flat out, then open loop at 10/25/50/75/90 % of that maximum.
#      kapi-sim plays the kubelet only; podclaimd's pool controller makes the pool's pods and
#      recycles the released ones (issue 13). CAS PATCHes per claim from podclaimd's counters,
#      API writes per claim cycle (claim, release, recycle) from kapi-sim's
#   4. podclaimd's RSS serving an empty pool, and serving a pool of 10,000 cached pods (the pods
#      seeded through kapi-sim --objects; that podclaimd runs no controllers, so the figure is
#      the scheduler's and informer's)
#   5. 10,000 claims waiting at once on the empty pool (10,000 connections): threads and RSS
# usage: bench/daemon/bench_daemon.sh [SECONDS_PER_ROW]   (default 5; build folder build-bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
B=${BUILD:-build-bench}
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DPC_BUILD_TESTS=OFF -DPC_BUILD_BENCH=ON >/dev/null
cmake --build "$B" -j "$(nproc)" --target kapi-sim podclaimd podclaimctl podclaim-demo rawpatch >/dev/null
tmp=$(mktemp -d /tmp/bench-daemon.XXXXXX)
# servers are started inside $(...), so their pids go to a file, not a variable
cleanup() {
  [ -f "$tmp/pids" ] && while read -r p; do kill -TERM "$p" 2>/dev/null || true; done <"$tmp/pids"
  sleep 0.5
  rm -rf "$tmp"
}
trap cleanup EXIT
j() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
wait_port() { for _ in $(seq 1 2000); do [ -s "$1" ] && cat "$1" && return; sleep 0.01; done; echo "no port in $1" >&2; exit 1; }
sim() { # name [--objects FILE] pools...
  local name=$1; shift
  local args=()
  if [ "${1:-}" = --objects ]; then args+=(--objects "$2"); shift 2; fi
  for p in "$@"; do args+=(--pool "$p"); done
  "$B/kapi-sim/kapi-sim" --listen 127.0.0.1:0 --port-file "$tmp/sim-$name.port" "${args[@]}" \
    --warmup-ms 50 --restart-ms 20 >"$tmp/sim-$name.log" 2>&1 &
  echo $! >>"$tmp/pids"
  echo "http://127.0.0.1:$(wait_port "$tmp/sim-$name.port")"
}
pcd() { # name server ns/pool [controllers: true|false]
  cat >"$tmp/$1.yaml" <<YAML
listen: 127.0.0.1:0
log:
  level: warn
kube:
  server: $2
controllers: {pools: ${4:-true}, claims: ${4:-true}}
pools:
  - {namespace: ${3%/*}, name: ${3#*/}}
YAML
  "$B/daemon/podclaimd" --config "$tmp/$1.yaml" --port-file "$tmp/$1.port" >"$tmp/$1.log" 2>&1 &
  echo $! >>"$tmp/pids"
  echo "$! http://127.0.0.1:$(wait_port "$tmp/$1.port")"
}
wait_pods() { # api ns/pool n field
  for _ in $(seq 1 6000); do
    v=$(curl -s "$1/v1/pools/$2" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d$4)" 2>/dev/null || echo 0)
    [ "${v:-0}" -ge "$3" ] && return 0
    sleep 0.01
  done
  echo "bench: $2 never reached $3" >&2; exit 1
}
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
patches() { curl -s "$1/sim/stats" | python3 -c "import json,sys; print(sum(json.load(sys.stdin)['requests']['patch'].values()))"; }

# N Idle pods of bench/POOL as kapi-sim --objects (pods the baseline PATCHes, or an informer
# caches, without any pool controller): seeds FILE POOL N
seeds() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
path, pool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pods = [{"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "%s-%d" % (pool, i), "namespace": "bench",
                      "labels": {"podclaim.io/pool": pool, "podclaim.io/phase": "Idle"}},
         "spec": {"containers": [{"name": "sandbox", "image": "registry.local/podclaim/sandbox:latest"}]}}
        for i in range(n)]
json.dump([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}] + pods, open(path, "w"))
PY
}

echo "bench_daemon: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ${secs} s per row" >&2
seeds "$tmp/raw.json" raw 64
# bench/sandboxes: a SandboxPool of 512 whose pods podclaimd's pool controller makes
kapi=$(sim main --objects "$tmp/raw.json" bench/sandboxes=512)
sleep 0.5
sim_pid=$(head -1 "$tmp/pids")
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # utime+stime, 1/100 s
t0=$(ticks "$sim_pid")
raw=$("$B/bench/daemon/rawpatch" "$kapi" bench raw 64 "$secs")
t1=$(ticks "$sim_pid")
inproc=$("$B/demo/podclaim-demo" --claims $((secs * 4000)) --pods 512 --conflict-rate 0 --hold-ms 20 \
  | awk '/^claims\/s/{print $2}')
read -r pcd_pid api < <(pcd main "$kapi" bench/sandboxes)
wait_pods "$api" bench/sandboxes 512 "['idleReady']"
cas() { curl -s "$1/metrics" | awk '/^podclaim_cas_total/{s+=$2} END{print s+0}'; }
p0=$(patches "$kapi")
c0=$(cas "$api")
t2=$(ticks "$sim_pid")
rows=()
max=$("$B/daemon/podclaimctl" --server "$api" load bench/sandboxes --rate max --connections 64 \
  --duration "${secs}s" --json --name max --image sandbox=python:3.12-slim --release-after 20ms)
rows+=("$max")
t3=$(ticks "$sim_pid")
top=$(j "$max" claimsPerSecond)
for f in 0.1 0.25 0.5 0.75 0.9; do
  r=$(python3 -c "print(round($top*$f))")
  rows+=("$("$B/daemon/podclaimctl" --server "$api" load bench/sandboxes --rate "$r" --connections 64 \
    --duration "${secs}s" --json --name "$f x max" --image sandbox=python:3.12-slim --release-after 20ms)")
done
p1=$(patches "$kapi")
c1=$(cas "$api")
recycled=$(curl -s "$api/metrics" | awk -F'[ ]' '/^podclaimd_pool_controller_total\{action="reset"\}/{print $2}')
# the same flat out with claims that keep the template's image: no container restart, and the
# recycle is one PATCH (reset and Idle together), as the claim cycle was before issue 13
noimg=$("$B/daemon/podclaimctl" --server "$api" load bench/sandboxes --rate max --connections 64 \
  --duration "${secs}s" --json --name "max, no image change" --label bench=noimage --release-after 20ms)
rss_loaded=$(rss_kb "$pcd_pid")
curl -s "$api/metrics" >"$tmp/metrics.txt"
cp "$tmp/metrics.txt" /tmp/bench_daemon.metrics.txt
kill -TERM "$pcd_pid"
while kill -0 "$pcd_pid" 2>/dev/null; do sleep 0.05; done

seeds "$tmp/big.json" big 10000
kapi2=$(sim rss --objects "$tmp/big.json")
read -r idle_pid api_idle < <(pcd idle "$kapi2" bench/empty false)
wait_pods "$api_idle" bench/empty 0 "['synced'] * 1"
sleep 1
rss_idle=$(rss_kb "$idle_pid")
read -r big_pid api_big < <(pcd big "$kapi2" bench/big false)
wait_pods "$api_big" bench/big 10000 "['informer']['pods']"
sleep 1
rss_big=$(rss_kb "$big_pid")

threads() { awk '/^Threads/{print $2}' "/proc/$1/status"; }
threads_idle=$(threads "$idle_pid")
"$B/daemon/podclaimctl" --server "$api_idle" load bench/empty --rate max --connections 10000 \
  --duration 1s --timeout 30s --json >"$tmp/wait.json" 2>&1 &
load_pid=$!
same=0
last=-1
for _ in $(seq 1 150); do # until all 10,000 wait, or the count stays put for 2 s
  w=$(curl -s -m 5 "$api_idle/metrics" | awk '/^podclaimd_claims_waiting /{print $2}')
  w=${w:-0}
  [ "$w" -ge 10000 ] && break
  if [ "$w" = "$last" ] && [ "$w" -gt 0 ]; then same=$((same + 1)); else same=0; fi
  [ "$same" -ge 10 ] && break
  last=$w
  sleep 0.2
done
threads_wait=$(threads "$idle_pid")
rss_wait=$(rss_kb "$idle_pid")
kill -TERM "$load_pid" 2>/dev/null || true

python3 - "$raw" "$inproc" "$top" "$p0" "$p1" "$rss_idle" "$rss_big" "$rss_loaded" "$w" "$threads_idle" "$threads_wait" "$rss_wait" "$t0" "$t1" "$t2" "$t3" "$tmp/metrics.txt" "$c0" "$c1" "${recycled:-0}" "$noimg" "${rows[@]}" <<'PY'
import json, sys
raw = json.loads(sys.argv[1]); inproc = float(sys.argv[2]); top = float(sys.argv[3])
p0, p1, rss_idle, rss_big, rss_loaded = map(int, sys.argv[4:9])
waiting, th_idle, th_wait, rss_wait = map(int, sys.argv[9:13])
t0, t1, t2, t3 = map(int, sys.argv[13:17])
metrics = open(sys.argv[17]).read()
c0, c1 = float(sys.argv[18]), float(sys.argv[19])
recycled = int(float(sys.argv[20]))
noimg = json.loads(sys.argv[21])
rows = [json.loads(r) for r in sys.argv[22:]]
def mean(name):
    tot = cnt = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "_sum{"):
            tot += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count{"):
            cnt += float(line.rsplit(" ", 1)[1])
    return tot / cnt * 1e3 if cnt else 0
rp = raw["patchesPerSecond"]
print("%-44s %10s %8s %8s %8s %8s" % ("row", "claims/s", "p50 ms", "p90 ms", "p99 ms", "x raw"))
print("%-44s %10.0f %8.3f %8s %8.3f %8.2f" % ("baseline: raw PATCH to kapi-sim, 64 conns", rp, raw["p50Ms"], "-", raw["p99Ms"], 1.0))
print("%-44s %10.0f %8s %8s %8s %8.2f" % ("in-process claims (podclaim-demo)", inproc, "-", "-", "-", inproc / rp))
won = 0
for r in rows:
    won += r["ok"]
    name = "podclaimd, closed loop (max)" if r["label"] == "max" else "podclaimd, offered %.0f/s (%s)" % (r["targetRate"], r["label"])
    print("%-44s %10.0f %8.3f %8.3f %8.3f %8.2f" % (name, r["claimsPerSecond"], r["p50Ms"], r["p90Ms"], r["p99Ms"], r["claimsPerSecond"] / rp))
    bad = r["503"] + r["504"] + r["4xx"] + r["other"] + r["errors"]
    if bad:
        print("   (not won: 503=%d 504=%d 4xx=%d other=%d errors=%d)" % (r["503"], r["504"], r["4xx"], r["other"], r["errors"]))
print("%-44s %10.0f %8.3f %8.3f %8.3f %8.2f" % ("podclaimd, closed loop, no image change", noimg["claimsPerSecond"], noimg["p50Ms"], noimg["p90Ms"], noimg["p99Ms"], noimg["claimsPerSecond"] / rp))
print("%-44s %10.2f" % ("claim PATCHes (CAS) per claim won", (c1 - c0) / max(won, 1)))
print("%-44s %10.2f   (claim, release, recycle; kubelet writes not counted)" % ("API PATCHes per claim cycle", (p1 - p0) / max(won, 1)))
print("%-44s %10d   (InPlace, by podclaimd's pool controller)" % ("released pods recycled", recycled))
print("%-44s %10.2f" % ("podclaimd / raw PATCH, max", top / rp))
print("%-44s %10.1f" % ("kapi-sim CPU us per raw PATCH", (t1 - t0) * 1e4 / max(raw["ok"], 1)))
print("%-44s %10.1f   (claim, release, recycle and 4 kubelet writes; watch events)" % ("kapi-sim CPU us per claim (max row)", (t3 - t2) * 1e4 / max(rows[0]["ok"], 1)))
print("%-44s %10.2f" % ("podclaimd / in-process, max", top / inproc))
http_ms, pool_ms, disp_ms = mean("podclaimd_claim_request_seconds"), mean("podclaim_claim_latency_seconds"), mean("podclaim_dispatch_latency_seconds")
print("%-44s %10.3f ms" % ("mean claim, HTTP request in -> answer ready", http_ms))
print("%-44s %10.3f ms" % ("  of which in the pool (enqueue -> result)", pool_ms))
print("%-44s %10.3f ms" % ("    of which enqueue -> CAS start", disp_ms))
print("%-44s %10.3f ms" % ("    one CAS round trip (PATCH)", mean("podclaim_cas_round_trip_seconds")))
print("%-44s %10.3f ms" % ("  podclaimd's own share (HTTP - pool)", http_ms - pool_ms))
print("%-44s %10.1f MB" % ("podclaimd RSS, empty pool", rss_idle / 1024))
print("%-44s %10.1f MB" % ("podclaimd RSS, 10,000 cached pods", rss_big / 1024))
print("%-44s %10.2f KB" % ("  per cached pod", (rss_big - rss_idle) / 10000))
print("%-44s %10.1f MB" % ("podclaimd RSS after the load rows (512 pods)", rss_loaded / 1024))
print("%-44s %10d" % ("claims waiting at once (10,000 connections)", waiting))
print("%-44s %10d -> %d" % ("  podclaimd threads, idle -> with them", th_idle, th_wait))
print("%-44s %10.1f MB -> %.1f MB (%.2f KB per waiting claim)" % ("  podclaimd RSS, idle -> with them", rss_idle / 1024, rss_wait / 1024, (rss_wait - rss_idle) / max(waiting, 1)))
PY
