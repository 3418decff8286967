#!/usr/bin/env bash
# Regenerate the seed corpora under fuzz/corpus from real sources: kapi-sim's answers (pods,
# lists, watch streams, Status errors, discovery), kubeconfig files written by kubectl itself,
# the CAS patch bodies libpodclaim sends. Hand-written seeds (a pod shaped like
# kube-apiserver's, with managedFields) live beside them as seed-hand-*. Run from the repository
# root after a build (build/kapi-sim/kapi-sim); it overwrites only seed-gen-* files.
set -euo pipefail
cd "$(dirname "$0")/.."
sim=build/kapi-sim/kapi-sim
c=fuzz/corpus
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
# kapi-sim plays the kubelet only (issue 13): the pool's three pods come from an objects file
python3 -c 'import json; print(json.dumps([{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"f"}}]+[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p-%d"%i,"namespace":"f","labels":{"podclaim.io/pool":"p","podclaim.io/phase":"Idle"}},"spec":{"containers":[{"name":"sandbox","image":"registry.local/podclaim/sandbox:latest"}]}} for i in range(3)]))' >"$tmp/pods.json"
"$sim" --listen 127.0.0.1:0 --port-file "$tmp/port" --objects "$tmp/pods.json" --pool f/p=3 \
  --warmup-ms 0 --stop-ms 10 >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
u="http://127.0.0.1:$(cat "$tmp/port")"
get() { curl -s "$u$1"; }
sleep 0.3

# pods and lists, as served
get "/api/v1/namespaces/f/pods" >"$c/pod/seed-gen-list.json"
name=$(get "/api/v1/namespaces/f/pods" | sed 's/.*"items":\[{[^}]*"name":"\([^"]*\)".*/\1/')
get "/api/v1/namespaces/f/pods/$name" >"$c/pod/seed-gen-pod.json"
cp "$c/pod/seed-gen-pod.json" "$c/jscan/seed-gen-pod.json"
cp "$c/pod/seed-gen-list.json" "$c/jscan/seed-gen-list.json"
rv=$(get "/api/v1/namespaces/f/pods/$name" | sed 's/.*"resourceVersion":"\([0-9]*\)".*/\1/')

# a watch stream with a claim, bookmarks and the kubelet's restart for the new image
(curl -s -N --max-time 1 "$u/api/v1/namespaces/f/pods?labelSelector=podclaim.io%2Fpool%3Dp&watch=true&resourceVersion=$rv&allowWatchBookmarks=true" >"$tmp/watch") &
wpid=$!
sleep 0.2
body='{"metadata":{"resourceVersion":"'$rv'","labels":{"podclaim.io/phase":"Running"},"annotations":{"podclaim.io/claim-id":"seed-1"}},"spec":{"containers":[{"name":"sandbox","image":"registry.local/x:1"}]}}'
curl -s -X PATCH -H 'Content-Type: application/strategic-merge-patch+json' -d "$body" \
  "$u/api/v1/namespaces/f/pods/$name" >"$c/jscan/seed-gen-patched.json"
printf '%s' "$body" >"$c/jscan/seed-gen-patch-body.json"
# 409 on the stale version, 404, 422: Status objects
curl -s -X PATCH -H 'Content-Type: application/strategic-merge-patch+json' -d "$body" \
  "$u/api/v1/namespaces/f/pods/$name" >"$tmp/409"
get "/api/v1/namespaces/f/pods/nope" >"$tmp/404"
curl -s -X PATCH -H 'Content-Type: application/strategic-merge-patch+json' \
  -d '{"spec":{"containers":[{"name":"nope","image":"x"}]}}' "$u/api/v1/namespaces/f/pods/$name" >"$tmp/422"
wait "$wpid" || true # curl ends the watch at --max-time (status 28)
# framer and informer: the stream as bytes; the informer seed starts with a LIST line
{ printf '\x11'; cat "$tmp/watch"; } >"$c/framer/seed-gen-watch"
{ printf '\x05L '; get "/api/v1/namespaces/f/pods?labelSelector=podclaim.io%2Fpool%3Dp" | tr -d '\n'; printf '\n'; cat "$tmp/watch"; } >"$c/informer/seed-gen-list-watch"
for s in 409 404 422; do
  { printf "\x0$((s / 256))\x$(printf %02x $((s % 256)))\x80"; cat "$tmp/$s"; } >"$c/status/seed-gen-$s"
done

# kapi-sim requests: method, target, content type, body
req() { printf '%s\n%s\n%s\n%s' "$1" "$2" "$3" "$4" >"$c/ksim_http/seed-gen-$5"; }
req GET "/api/v1/namespaces/f/pods?labelSelector=podclaim.io%2Fpool%3Dp&limit=2" "" "" list
req GET "/api/v1/namespaces/f/pods?watch=true&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=1" "" "" watch
req PATCH "/api/v1/namespaces/f/pods/$name" application/strategic-merge-patch+json "$body" smp
req PATCH "/api/v1/namespaces/f/pods/$name" application/merge-patch+json '{"metadata":{"labels":{"a":"b"}}}' merge
req PATCH "/api/v1/namespaces/f/pods/$name" application/json-patch+json '[{"op":"add","path":"/metadata/labels/x","value":"y"},{"op":"test","path":"/kind","value":"Pod"}]' jsonpatch
req POST /api/v1/namespaces/f/pods application/json "$(cat "$c/pod/seed-gen-pod.json")" create
req PUT "/apis/podclaim.io/v1alpha1/namespaces/f/sandboxpools/p/scale" application/json '{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"p","namespace":"f"},"spec":{"replicas":5}}' scale
req DELETE "/api/v1/namespaces/f/pods/$name" application/json '{"kind":"DeleteOptions","gracePeriodSeconds":0}' delete
req GET /apis "" "" discovery
req GET /sim/claims "" "" claims
req PUT /sim/faults application/json '{"conflictRate":0.5}' faults

# kubeconfigs written by kubectl
export KUBECONFIG="$tmp/kc"
kubectl config set-cluster sim --server="$u" --insecure-skip-tls-verify=false >/dev/null
kubectl config set-cluster tls --server=https://127.0.0.1:6443 --tls-server-name=api.example >/dev/null
kubectl config set clusters.tls.certificate-authority-data "$(printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' | base64 -w0)" >/dev/null
kubectl config set-credentials alice --token=seed-token >/dev/null
kubectl config set-credentials bot --client-certificate=bot.crt --client-key=bot.key >/dev/null
kubectl config set-context dev --cluster=sim --user=alice --namespace=f >/dev/null
kubectl config set-context prod --cluster=tls --user=bot >/dev/null
kubectl config use-context dev >/dev/null
sed "s#$PWD/##" "$tmp/kc" >"$c/kubeconfig/seed-gen-kubectl" # kubectl made the paths absolute

# CAS patch bodies' inputs: rv, claim id, phase, then kind/key/value triples, NUL-separated
printf '\x20%s\0%s\0%s\0l\0team\0a\0a\0note\0line1\nline2\0i\0sandbox\0registry.local/x:1\0' \
  "$rv" seed-1 Running >"$c/patch/seed-gen-claim"
printf '\x01%s\0%s\0\0' 7 c >"$c/patch/seed-gen-minimal"

# selectors: label selector, field selector, labels
printf '%s\n%s\n%s' 'podclaim.io/pool=p,podclaim.io/phase in (Idle,Running),!gone' \
  'metadata.name=a,status.phase!=Failed' '{"podclaim.io/pool":"p","podclaim.io/phase":"Idle"}' \
  >"$c/ksim_selector/seed-gen-pool"
printf '%s\n%s\n%s' 'env notin (prod),tier,tier!=db' 'spec.nodeName==n' '{"tier":"web"}' \
  >"$c/ksim_selector/seed-gen-sets"

# patches: type byte (0 merge, 1 json, 2 strategic), document NUL patch
pod=$(cat "$c/pod/seed-gen-pod.json")
printf '\x02%s\0%s' "$pod" "$body" >"$c/ksim_patch/seed-gen-strategic"
printf '\x00%s\0%s' "$pod" '{"metadata":{"labels":{"podclaim.io/phase":null,"a":"b"}}}' >"$c/ksim_patch/seed-gen-merge"
printf '\x01%s\0%s' "$pod" '[{"op":"replace","path":"/metadata/labels/podclaim.io~1phase","value":"Running"},{"op":"remove","path":"/spec/containers/0/image"}]' >"$c/ksim_patch/seed-gen-jsonpatch"
echo "seeds written"
