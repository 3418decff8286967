#!/usr/bin/python3
"""The official Python client (Debian python3-kubernetes) against one API server.

Run by realk8s/diff (TestOfficialClients) once against kube-apiserver and once against
kapi-sim, with KUBECONFIG naming the server and NS a fresh namespace; the two transcripts it
prints must be equal. Each line is one call and what a program using the client would see
(values that differ between any two servers by nature, uids and times, are left out).
"""
import os
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main():
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    ns = os.environ["NS"]
    core = client.CoreV1Api()
    crd = client.CustomObjectsApi()
    out = []
    say = out.append

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="py1", labels={"podclaim.io/pool": "web", "podclaim.io/phase": "Idle"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="sandbox", image="img:1")]))
    p = core.create_namespaced_pod(ns, pod)
    say("create %s phase=%s qos=%s policy=%s" % (p.metadata.name, p.status.phase, p.status.qos_class,
                                                 p.spec.containers[0].image_pull_policy))
    rv = p.metadata.resource_version
    pods = core.list_namespaced_pod(ns, label_selector="podclaim.io/phase=Idle")
    say("list %s" % [i.metadata.name for i in pods.items])
    # the claim as podclaim sends it: a strategic merge patch with the resourceVersion seen
    body = {"metadata": {"resourceVersion": rv, "labels": {"podclaim.io/phase": "Running"}},
            "spec": {"containers": [{"name": "sandbox", "image": "python:3.12"}]}}
    p = core.patch_namespaced_pod("py1", ns, body)
    say("claim phase=%s image=%s" % (p.metadata.labels["podclaim.io/phase"], p.spec.containers[0].image))
    try:
        core.patch_namespaced_pod("py1", ns, body)
        say("second claim: won (wrong)")
    except ApiException as e:
        say("second claim: %d" % e.status)
    try:
        core.read_namespaced_pod("nope", ns)
    except ApiException as e:
        say("read missing: %d" % e.status)
    try:
        core.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(name="Bad_Name"),
                                                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")])))
    except ApiException as e:
        say("bad name: %d" % e.status)
    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=1):
        seen.append("%s %s %s" % (ev["type"], ev["object"].metadata.name,
                                  ev["object"].metadata.labels.get("podclaim.io/phase")))
    say("watch %s" % seen)
    pool = {"apiVersion": "podclaim.io/v1alpha1", "kind": "SandboxPool",
            "metadata": {"name": "web"}, "spec": {"replicas": 0, "team": "a"}}
    crd.create_namespaced_custom_object("podclaim.io", "v1alpha1", ns, "sandboxpools", pool)
    got = crd.get_namespaced_custom_object("podclaim.io", "v1alpha1", ns, "sandboxpools", "web")
    say("pool replicas=%s" % got["spec"]["replicas"])
    st = crd.patch_namespaced_custom_object_status("podclaim.io", "v1alpha1", ns, "sandboxpools", "web",
                                                   {"status": {"idleReady": 2}})
    say("pool status=%s" % st["status"])
    sc = crd.get_namespaced_custom_object_scale("podclaim.io", "v1alpha1", ns, "sandboxpools", "web")
    say("scale kind=%s replicas=%s" % (sc["kind"], sc["status"]["replicas"]))
    d = core.delete_namespaced_pod("py1", ns, grace_period_seconds=0)
    say("delete %s" % d.metadata.name)
    crd.delete_namespaced_custom_object("podclaim.io", "v1alpha1", ns, "sandboxpools", "web")
    say("pools %s" % [i["metadata"]["name"] for i in
                      crd.list_namespaced_custom_object("podclaim.io", "v1alpha1", ns, "sandboxpools")["items"]])
    print("\n".join(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the transcript then shows what failed
        print("error: %r" % e)
        sys.exit(1)
