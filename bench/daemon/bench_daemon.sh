#!/usr/bin/env bash
# podclaimd benchmark, one run, every figure beside its baseline (bench/RESULTS.md).
#
# A. The claim path: what issue 12's aim is about, one CAS PATCH per claim.
#   1. kapi-sim's raw PATCH rate (rawpatch: claim-shaped strategic-merge PATCHes with the
#      resourceVersion precondition, 64 keep-alive connections, closed loop, no podclaim at all)
#   2. the in-process claim rate on a warm pool claimed once each, no recycle in the window
#      (podclaim-demo: library, informer and CAS backend in one process, its own kapi-sim)
#   3. claims through podclaimd on a warm pool of CLAIM_PODS (default 50,000) seeded Idle pods
#      of pool bench/claim (podclaimctl load, 64 keep-alive connections, no release: each claim
#      is one CAS PATCH and nothing else writes): flat out, then open loop at 10/25/50/75/90 % of
#      that maximum. Between rows, outside the measured window, `rawpatch --reset` turns the
#      claimed pods Idle again (the pool controller's recycle, played by the bench) and the
#      next row waits for the informer to offer them all. podclaimd runs as it ships: its pool
#      and claim controllers on, watching every pool's pods (bench/claim has no SandboxPool, so
#      the controller writes nothing for it). API writes per claim from kapi-sim's counters.
# B. The claim cycle (the rows of issue 13, kept): bench/sandboxes, a SandboxPool of 512 whose
#    pods podclaimd's pool controller makes; each claim changes the image and is released 20 ms
#    after its answer; the controller recycles it (reset, kubelet restart, Idle): flat out, open
#    loop at 10..90 % of that, flat out without image change; the in-process cycle beside it.
# C. Memory: podclaimd's RSS (and its anonymous part) serving an empty pool and a pool of 10,000
#    cached pods (seeded through kapi-sim --objects), with the controllers off (scheduler and
#    informer only) and on (as it ships: the controller's pod cache too); after the load rows;
#    10,000 claims waiting at once on the empty pool (10,000 connections): threads and RSS.
# usage: bench/daemon/bench_daemon.sh [SECONDS_PER_ROW]   (default 5; build folder build-bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
B=${BUILD:-build-bench}
claim_pods=${CLAIM_PODS:-50000}
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
wait_port() { for _ in $(seq 1 6000); do [ -s "$1" ] && cat "$1" && return; sleep 0.01; done; echo "no port in $1" >&2; exit 1; }
sim() { # name [--objects FILE] pools...
  local name=$1; shift
  local args=()
  if [ "${1:-}" = --objects ]; then args+=(--objects "$2"); shift 2; fi
  for p in "$@"; do args+=(--pool "$p"); done
  "$B/kapi-sim/kapi-sim" --listen 127.0.0.1:0 --port-file "$tmp/sim-$name.port" "${args[@]}" \
    --warmup-ms 50 --restart-ms 20 >"$tmp/sim-$name.log" 2>&1 &
  echo $! >>"$tmp/pids"
  echo "$! http://127.0.0.1:$(wait_port "$tmp/sim-$name.port")"
}
pcd() { # name server controllers(true|false) ns/pool...
  local name=$1 server=$2 ctl=$3; shift 3
  {
    echo "listen: 127.0.0.1:0"
    echo "log: {level: warn}"
    echo "kube: {server: $server}"
    echo "controllers: {pools: $ctl, claims: $ctl}"
    echo "pools:"
    for p in "$@"; do echo "  - {namespace: ${p%/*}, name: ${p#*/}}"; done
  } >"$tmp/$name.yaml"
  "$B/daemon/podclaimd" --config "$tmp/$name.yaml" --port-file "$tmp/$name.port" >"$tmp/$name.log" 2>&1 &
  echo $! >>"$tmp/pids"
  echo "$! http://127.0.0.1:$(wait_port "$tmp/$name.port")"
}
wait_pods() { # api ns/pool n field
  for _ in $(seq 1 12000); do
    v=$(curl -s "$1/v1/pools/$2" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d$4)" 2>/dev/null || echo 0)
    [ "${v:-0}" -ge "$3" ] && return 0
    sleep 0.01
  done
  echo "bench: $2 never reached $3" >&2; exit 1
}
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
anon_kb() { awk '/RssAnon/{print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # utime+stime, 1/100 s
patches() { curl -s "$1/sim/stats" | python3 -c "import json,sys; print(sum(json.load(sys.stdin)['requests']['patch'].values()))"; }
# every write verb, any answer: what the claims cost the API server
writes() { curl -s "$1/sim/stats" | python3 -c "
import json,sys; r=json.load(sys.stdin)['requests']
print(sum(sum(r.get(v, {}).values()) for v in ('patch','post','put','delete')))"; }
cas() { curl -s "$1/metrics" | awk -v p="pool=\"$2\"" '/^podclaim_cas_total/ && index($0, p) {s+=$2} END{print s+0}'; }

# Idle pods as kapi-sim --objects (pods the baseline PATCHes, or an informer caches, without
# any pool controller): seeds FILE POOL=N...
seeds() {
  python3 - "$@" <<'PY'
import json, sys
path = sys.argv[1]
objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
for spec in sys.argv[2:]:
    pool, n = spec.split("=")
    objs += [{"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "%s-%d" % (pool, i), "namespace": "bench",
                           "labels": {"podclaim.io/pool": pool, "podclaim.io/phase": "Idle"}},
              "spec": {"containers": [{"name": "sandbox", "image": "registry.local/podclaim/sandbox:latest"}]}}
             for i in range(int(n))]
json.dump(objs, open(path, "w"))
PY
}

echo "bench_daemon: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ${secs} s per row, claim pool ${claim_pods}" >&2
seeds "$tmp/main.json" raw=64 "claim=$claim_pods"
# bench/sandboxes: a SandboxPool of 512 whose pods podclaimd's pool controller makes
read -r sim_pid kapi < <(sim main --objects "$tmp/main.json" bench/sandboxes=512)
sleep 0.5

# ---- A. the claim path ----
t0=$(ticks "$sim_pid")
raw=$("$B/bench/daemon/rawpatch" "$kapi" bench raw 64 "$secs")
t1=$(ticks "$sim_pid")
# each pod claimed once: claims = pods, the recycler never due within the run
inproc=$("$B/demo/podclaim-demo" --claims $((claim_pods * 4 / 5)) --pods "$claim_pods" --conflict-rate 0 \
  --hold-ms 3600000 | awk '/^claims\/s/{print $2}')
inproc_cycle=$("$B/demo/podclaim-demo" --claims $((secs * 4000)) --pods 512 --conflict-rate 0 --hold-ms 20 \
  | awk '/^claims\/s/{print $2}')
read -r pcd_pid api < <(pcd main "$kapi" true bench/claim bench/sandboxes)
wait_pods "$api" bench/claim "$claim_pods" "['idleReady']"
wait_pods "$api" bench/sandboxes 512 "['idleReady']"

claim_row() { # name rate -> one JSON line with the load's figures and the row's costs
  local w0 c0 s0 d0 out w1 c1 s1 d1
  curl -s "$api/metrics" >"$tmp/m-$1-0.txt"
  w0=$(writes "$kapi"); c0=$(cas "$api" claim); s0=$(ticks "$sim_pid"); d0=$(ticks "$pcd_pid")
  out=$("$B/daemon/podclaimctl" --server "$api" load bench/claim --rate "$2" --connections 64 \
    --duration "${secs}s" --json --name "$1" --label bench=claim)
  w1=$(writes "$kapi"); c1=$(cas "$api" claim); s1=$(ticks "$sim_pid"); d1=$(ticks "$pcd_pid")
  curl -s "$api/metrics" >"$tmp/m-$1-1.txt"
  "$B/bench/daemon/rawpatch" --reset "$kapi" bench claim 64 >/dev/null
  wait_pods "$api" bench/claim "$claim_pods" "['idleReady']"
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(writes=$w1-$w0, cas=$c1-$c0, sim_ticks=$s1-$s0, pcd_ticks=$d1-$d0); print(json.dumps(d))" "$out"
}
crows=()
cmax=$(claim_row max max)
crows+=("$cmax")
ctop=$(j "$cmax" claimsPerSecond)
for f in 0.1 0.25 0.5 0.75 0.9; do
  crows+=("$(claim_row "$f x max" "$(python3 -c "print(round($ctop*$f))")")")
done
curl -s "$api/metrics" >"$tmp/metrics-claim.txt"
# the tail's baseline: raw PATCHes offered at the rate of the half-maximum row, same connections
raw_half=$("$B/bench/daemon/rawpatch" "$kapi" bench raw 64 "$secs" "$(python3 -c "print(round($ctop*0.5))")")

# ---- B. the claim cycle ----
p0=$(patches "$kapi")
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
recycled=$(curl -s "$api/metrics" | awk -F'[ ]' '/^podclaimd_pool_controller_total\{action="reset"\}/{print $2}')
# the same flat out with claims that keep the template's image: no container restart, and the
# recycle is one PATCH (reset and Idle together), as the claim cycle was before issue 13
noimg=$("$B/daemon/podclaimctl" --server "$api" load bench/sandboxes --rate max --connections 64 \
  --duration "${secs}s" --json --name "max, no image change" --label bench=noimage --release-after 20ms)
sleep 1
rss_loaded=$(rss_kb "$pcd_pid")
curl -s "$api/metrics" >"$tmp/metrics.txt"
cp "$tmp/metrics.txt" /tmp/bench_daemon.metrics.txt
kill -TERM "$pcd_pid" "$sim_pid"
while kill -0 "$pcd_pid" 2>/dev/null; do sleep 0.05; done

# ---- C. memory ----
# an API server without pods for the idle figures (the controller's watch sees every pool's
# pods, so it must not share one with the 10,000), another with 10,000 for the cached ones
read -r _ kapi0 < <(sim empty)
seeds "$tmp/big.json" big=10000
read -r _ kapi2 < <(sim rss --objects "$tmp/big.json")
read -r idle_pid api_idle < <(pcd idle "$kapi0" false bench/empty)
wait_pods "$api_idle" bench/empty 0 "['synced'] * 1"
read -r idle_on_pid api_idle_on < <(pcd idleon "$kapi0" true bench/empty)
wait_pods "$api_idle_on" bench/empty 0 "['synced'] * 1"
sleep 1
rss_idle=$(rss_kb "$idle_pid")
anon_idle=$(anon_kb "$idle_pid")
rss_idle_on=$(rss_kb "$idle_on_pid")
anon_idle_on=$(anon_kb "$idle_on_pid")
read -r big_pid api_big < <(pcd big "$kapi2" false bench/big)
wait_pods "$api_big" bench/big 10000 "['informer']['pods']"
read -r big_on_pid api_big_on < <(pcd bigon "$kapi2" true bench/big)
wait_pods "$api_big_on" bench/big 10000 "['informer']['pods']"
sleep 1
rss_big=$(rss_kb "$big_pid")
anon_big=$(anon_kb "$big_pid")
rss_big_on=$(rss_kb "$big_on_pid")
anon_big_on=$(anon_kb "$big_on_pid")
kill -TERM "$idle_on_pid" "$big_pid" "$big_on_pid"

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

cat >"$tmp/figures.json" <<JSON
{"raw": $raw, "raw_half": $raw_half, "inproc": $inproc, "inproc_cycle": $inproc_cycle, "claim_pods": $claim_pods,
 "crows": [$(IFS=,; echo "${crows[*]}")], "rows": [$(IFS=,; echo "${rows[*]}")], "noimg": $noimg,
 "p0": $p0, "p1": $p1, "recycled": ${recycled:-0}, "t0": $t0, "t1": $t1, "t2": $t2, "t3": $t3,
 "rss_idle": $rss_idle, "anon_idle": $anon_idle, "rss_idle_on": $rss_idle_on, "anon_idle_on": $anon_idle_on,
 "rss_big": $rss_big, "anon_big": $anon_big, "rss_big_on": $rss_big_on, "anon_big_on": $anon_big_on,
 "rss_loaded": $rss_loaded, "waiting": $w, "th_idle": $threads_idle, "th_wait": $threads_wait,
 "rss_wait": $rss_wait}
JSON
python3 - "$tmp/figures.json" "$tmp/metrics-claim.txt" "$tmp/metrics.txt" "$tmp/m-0.5 x max-0.txt" "$tmp/m-0.5 x max-1.txt" <<'PY'
import json, sys
F = json.load(open(sys.argv[1]))
mclaim, mcycle = open(sys.argv[2]).read(), open(sys.argv[3]).read()
half0, half1 = open(sys.argv[4]).read(), open(sys.argv[5]).read()
raw, rp = F["raw"], F["raw"]["patchesPerSecond"]
def mean(metrics, name, pool):
    tot = cnt = 0.0
    for line in metrics.splitlines():
        if 'pool="%s"' % pool not in line:
            continue
        if line.startswith(name + "_sum{"):
            tot += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count{"):
            cnt += float(line.rsplit(" ", 1)[1])
    return tot / cnt * 1e3 if cnt else 0
def row(name, r):
    print("%-46s %10.0f %8.3f %8.3f %8.3f %8.2f" % (name, r["claimsPerSecond"], r["p50Ms"], r["p90Ms"], r["p99Ms"], r["claimsPerSecond"] / rp))
    bad = r["503"] + r["504"] + r["4xx"] + r["other"] + r["errors"]
    if bad:
        print("   (not won: 503=%d 504=%d 4xx=%d other=%d errors=%d)" % (r["503"], r["504"], r["4xx"], r["other"], r["errors"]))
def name_of(r):
    return "podclaimd, closed loop (max)" if r["label"] == "max" else "podclaimd, offered %.0f/s (%s)" % (r["targetRate"], r["label"])
def breakdown(metrics, pool):
    http_ms, pool_ms = mean(metrics, "podclaimd_claim_request_seconds", pool), mean(metrics, "podclaim_claim_latency_seconds", pool)
    print("%-46s %10.3f ms" % ("mean claim, HTTP request in -> answer ready", http_ms))
    print("%-46s %10.3f ms" % ("  of which in the pool (enqueue -> result)", pool_ms))
    print("%-46s %10.3f ms" % ("    of which enqueue -> CAS start", mean(metrics, "podclaim_dispatch_latency_seconds", pool)))
    print("%-46s %10.3f ms" % ("    one CAS round trip (PATCH)", mean(metrics, "podclaim_cas_round_trip_seconds", pool)))
    print("%-46s %10.3f ms" % ("  podclaimd's own share (HTTP - pool)", http_ms - pool_ms))

hdr = "%-46s %10s %8s %8s %8s %8s" % ("row", "claims/s", "p50 ms", "p90 ms", "p99 ms", "x raw")
print("A. claim path: one CAS PATCH per claim, warm pool of %d, no release in the window" % F["claim_pods"])
print(hdr)
print("%-46s %10.0f %8.3f %8s %8.3f %8.2f" % ("baseline: raw PATCH to kapi-sim, 64 conns", rp, raw["p50Ms"], "-", raw["p99Ms"], 1.0))
print("%-46s %10.0f %8s %8s %8s %8.2f" % ("in-process claims (podclaim-demo)", F["inproc"], "-", "-", "-", F["inproc"] / rp))
won = writes = cas = 0
for r in F["crows"]:
    row(name_of(r), r)
    won += r["ok"]; writes += r["writes"]; cas += r["cas"]
cm = F["crows"][0]
print("%-46s %10.2f" % ("API writes per claim won (kapi-sim, all rows)", writes / max(won, 1)))
print("%-46s %10.2f" % ("CAS PATCHes per claim won", cas / max(won, 1)))
print("%-46s %10.2f" % ("podclaimd / raw PATCH, max", cm["claimsPerSecond"] / rp))
print("%-46s %10.2f" % ("podclaimd / in-process, max", cm["claimsPerSecond"] / F["inproc"]))
print("%-46s %10.1f" % ("kapi-sim CPU us per raw PATCH", (F["t1"] - F["t0"]) * 1e4 / max(raw["ok"], 1)))
print("%-46s %10.1f" % ("kapi-sim CPU us per claim (max row)", cm["sim_ticks"] * 1e4 / max(cm["ok"], 1)))
print("%-46s %10.1f" % ("podclaimd CPU us per claim (max row)", cm["pcd_ticks"] * 1e4 / max(cm["ok"], 1)))
breakdown(mclaim, "claim")
rh = F["raw_half"]
print("%-46s %10.0f %8.3f %8.3f %8.3f %8s" % ("tail baseline: raw PATCH offered at 0.5 x max", rh["patchesPerSecond"], rh["p50Ms"], rh["p90Ms"], rh["p99Ms"], "-"))
def buckets(metrics, name, pool):
    b = {}
    for line in metrics.splitlines():
        if line.startswith(name + "_bucket{") and 'pool="%s"' % pool in line:
            le = line.split('le="')[1].split('"')[0]
            b[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return b
print("  the 0.5 x max row by stage (podclaimd's histograms): claims, p99 bucket, share > 2.5 ms")
for title, name in (("HTTP request in -> answer ready", "podclaimd_claim_request_seconds"),
                    ("in the pool (enqueue -> result)", "podclaim_claim_latency_seconds"),
                    ("enqueue -> CAS start", "podclaim_dispatch_latency_seconds"),
                    ("one CAS round trip (PATCH)", "podclaim_cas_round_trip_seconds")):
    b0, b1 = buckets(half0, name, "claim"), buckets(half1, name, "claim")
    d = {le: b1[le] - b0.get(le, 0) for le in b1}
    les = sorted(d)
    total = d[les[-1]] if les else 0
    p99 = next((le for le in les if d[le] >= 0.99 * total), float("nan")) if total else float("nan")
    over = (total - d.get(0.0025, 0)) / total * 100 if total else 0
    print("    %-42s %8.0f  <= %6.2f ms  %5.1f %%" % (title, total, p99 * 1e3, over))
print()
print("B. claim cycle: claim (new image), release 20 ms later, recycle by podclaimd's controller (512 pods)")
print(hdr)
print("%-46s %10.0f %8s %8s %8s %8.2f" % ("in-process claim cycle (podclaim-demo)", F["inproc_cycle"], "-", "-", "-", F["inproc_cycle"] / rp))
won = 0
for r in F["rows"]:
    row(name_of(r), r)
    won += r["ok"]
row("podclaimd, closed loop, no image change", F["noimg"])
top = F["rows"][0]
print("%-46s %10.2f   (claim, release, recycle; kubelet writes not counted)" % ("API PATCHes per claim cycle", (F["p1"] - F["p0"]) / max(won, 1)))
print("%-46s %10d   (InPlace, by podclaimd's pool controller)" % ("released pods recycled", int(float(F["recycled"]))))
print("%-46s %10.2f" % ("podclaimd cycle / raw PATCH, max", top["claimsPerSecond"] / rp))
print("%-46s %10.1f   (claim, release, recycle and 4 kubelet writes; watch events)" % ("kapi-sim CPU us per claim cycle (max row)", (F["t3"] - F["t2"]) * 1e4 / max(top["ok"], 1)))
breakdown(mcycle, "sandboxes")
print()
print("C. memory (RSS; anonymous part in brackets)")
mb = lambda k: F[k] / 1024
print("%-46s %7.1f MB  (%.1f MB)" % ("podclaimd, empty pool, controllers off", mb("rss_idle"), mb("anon_idle")))
print("%-46s %7.1f MB  (%.1f MB)" % ("podclaimd, empty pool, controllers on", mb("rss_idle_on"), mb("anon_idle_on")))
print("%-46s %7.1f MB  (%.1f MB)" % ("podclaimd, 10,000 cached pods, controllers off", mb("rss_big"), mb("anon_big")))
print("%-46s %7.2f KB" % ("  per cached pod", (F["rss_big"] - F["rss_idle"]) / 10000))
print("%-46s %7.1f MB  (%.1f MB)" % ("podclaimd, 10,000 cached pods, controllers on", mb("rss_big_on"), mb("anon_big_on")))
print("%-46s %7.2f KB" % ("  per cached pod", (F["rss_big_on"] - F["rss_idle_on"]) / 10000))
print("%-46s %7.1f MB" % ("podclaimd after the load rows (%d pods)" % (F["claim_pods"] + 512 + 64), mb("rss_loaded")))
print("%-46s %7d" % ("claims waiting at once (10,000 connections)", F["waiting"]))
print("%-46s %7d -> %d" % ("  podclaimd threads, idle -> with them", F["th_idle"], F["th_wait"]))
print("%-46s %7.1f MB -> %.1f MB (%.2f KB per waiting claim)" % ("  podclaimd RSS, idle -> with them", mb("rss_idle"), mb("rss_wait"), (F["rss_wait"] - F["rss_idle"]) / max(F["waiting"], 1)))
PY
