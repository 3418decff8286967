#!/usr/bin/python3
"""Parse a /metrics scrape with prometheus_client's text parser (Debian python3-prometheus-client)
and check every histogram: cumulative buckets never decrease, +Inf equals _count, _sum >= 0,
and every family has a TYPE. Exit 1 with the first problem found."""
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
families = list(text_string_to_metric_families(text))
names = [f.name for f in families]
if len(names) != len(set(names)):
    sys.exit("a family appears twice: %s" % sorted(n for n in names if names.count(n) > 1))
need = {"podclaim_claims", "podclaim_cas", "podclaim_enqueue_rejected", "podclaim_promotions",
        "podclaim_queue_length", "podclaim_idle_ready", "podclaim_reserved_pods",
        "podclaim_inflight_cas", "podclaim_claim_latency_seconds",
        "podclaim_idle_to_claimable_seconds", "podclaimd_claim_request_seconds",
        "podclaim_cas_round_trip_seconds", "podclaim_dispatch_latency_seconds"}
missing = need - set(names)
if missing:
    sys.exit("missing families: %s" % sorted(missing))
histograms = 0
for f in families:
    if f.type == "untyped":
        sys.exit("%s has no TYPE" % f.name)
    if f.type != "histogram":
        continue
    series = {}
    for s in f.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            series[key]["sum"] = s.value
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    for key, h in series.items():
        histograms += 1
        b = sorted(h["buckets"])
        if not b or b[-1][0] != math.inf:
            sys.exit("%s%s: no +Inf bucket" % (f.name, key))
        for (le0, v0), (le1, v1) in zip(b, b[1:]):
            if v1 < v0:
                sys.exit("%s%s: bucket le=%s (%s) < le=%s (%s)" % (f.name, key, le1, v1, le0, v0))
        if h["count"] is None or h["count"] != b[-1][1]:
            sys.exit("%s%s: _count %s != +Inf bucket %s" % (f.name, key, h["count"], b[-1][1]))
        if h["sum"] is None or h["sum"] < 0:
            sys.exit("%s%s: bad _sum %s" % (f.name, key, h["sum"]))
        for k in ("namespace", "pool", "team", "user", "env"):
            if f.name.startswith("podclaim") and k not in dict(key):
                sys.exit("%s%s: no %s label" % (f.name, key, k))
print("ok: %d families, %d histogram series" % (len(families), histograms))
