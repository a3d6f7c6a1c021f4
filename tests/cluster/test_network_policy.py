"""The registry's NetworkPolicy on a cluster that enforces it (kube-router, as in k3s).

From pods in other namespaces the registry port answers and the metrics port is
refused, except from a namespace in metrics.allowed_namespaces; the node itself
(kubelet probes, containerd pulls) and LoadBalancer clients are never blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment, Namespace, NetworkPolicy, Pod

from registry_provisioner import kube
from registry_provisioner.waiting import poll
from scripts.local_cluster import images
from scripts.local_cluster.demo import demo_deployment, skopeo_push
from scripts.local_cluster.pods import restricted
from scripts.local_cluster.versions import HELPER_IMAGE
from tests.cluster.helpers import http_get, until_ready
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

NAMESPACE = "netpol-registry"
ALLOWED = "netpol-scraper"  # listed in metrics.allowed_namespaces
OTHER = "netpol-other"  # listed nowhere
# hostNetwork is beyond `restricted` (the cluster's default): the node's probe lives here.
ON_NODE = "netpol-node"
PRIVILEGED = {"pod-security.kubernetes.io/enforce": "privileged"}
REGISTRY_PORT, METRICS_PORT = 5000, 5001
# A verdict must settle within this long: kube-router syncs on each pod and policy event.
SETTLE_SECONDS = 60
REFUSED = "Connection refused"


@dataclass(frozen=True)
class Setup:
    registry: Registry
    pod_ip: str
    probes: dict[str, Pod]  # namespace -> a pod there that runs `nc`


def probe_pod(name: str, namespace: str, *, host_network: bool = False) -> dict:
    """An idle busybox pod to connect from with `nc`, `restricted` unless on the node."""
    spec: dict = {
        "containers": [
            {
                "name": "main",
                "image": HELPER_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "exec sleep 3600"],
            }
        ],
        "terminationGracePeriodSeconds": 1,
    }
    if host_network:
        spec["hostNetwork"] = True
    else:
        spec = restricted(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def connect(pod: Pod, ip: str, port: int) -> str:
    """ "connected", or busybox nc's error (say "... Connection refused"), within 3 s."""
    result = await pod.exec(["nc", "-w", "3", ip, str(port)], check=False)
    return "connected" if result.returncode == 0 else result.stderr.decode().strip()


async def settles(pod: Pod, ip: str, port: int, wanted: str) -> None:
    """Wait until a connection from `pod` gives `wanted`; fail with the last outcome."""
    last = ""

    async def outcome_is_wanted() -> bool:
        nonlocal last
        last = await connect(pod, ip, port)
        return wanted in last

    try:
        await asyncio.wait_for(poll(outcome_is_wanted), SETTLE_SECONDS)
    except TimeoutError:
        where = f"{pod.namespace}/{pod.name} -> {ip}:{port}"
        raise AssertionError(f"{where}: wanted {wanted!r}, last got {last!r}") from None


@pytest.fixture(scope="module")
async def setup(api: kr8s.asyncio.Api, module_registries: RegistryFactory) -> AsyncIterator[Setup]:
    namespaces = [
        await Namespace({"metadata": {"name": ns, "labels": labels}}, api=api)
        for ns, labels in ((ALLOWED, {}), (OTHER, {}), (ON_NODE, PRIVILEGED))
    ]
    for ns in namespaces:
        if await ns.exists():  # left by an interrupted run, with its probe pods
            await ns.delete()
            await asyncio.wait_for(kube.wait_deleted(ns), 120)
        await ns.create()
    try:
        registry = await module_registries(
            NAMESPACE, **{"metrics__allowed_namespaces": f"[{ALLOWED}]"}
        )
        [pod] = await kube.get_all(
            api,
            "pods",
            namespace=NAMESPACE,
            label_selector="app.kubernetes.io/component=registry",
            field_selector="status.phase=Running",
        )
        probes = {}
        for ns in (ALLOWED, OTHER):
            probes[ns] = await Pod(probe_pod("probe", ns), api=api)
        # On the node's network: the source kubelet probes and containerd pulls come from.
        probes["node"] = await Pod(probe_pod("node-probe", ON_NODE, host_network=True), api=api)
        for probe in probes.values():
            await probe.create()
        for probe in probes.values():
            await until_ready(probe)
        yield Setup(registry, pod.raw["status"]["podIP"], probes)
    finally:
        for ns in namespaces:
            await ns.delete()
        for ns in namespaces:
            await asyncio.wait_for(kube.wait_deleted(ns), 120)


async def test_provision_applied_the_policy_with_the_allowed_namespace(
    api: kr8s.asyncio.Api, setup: Setup
) -> None:
    policy = await NetworkPolicy.get("docker-registry", namespace=NAMESPACE, api=api)
    metrics_rules = [
        rule
        for rule in policy.raw["spec"]["ingress"]
        if {"protocol": "TCP", "port": METRICS_PORT} in rule.get("ports", [])
    ]
    [rule] = metrics_rules
    [peer] = rule["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == [ALLOWED]


async def test_registry_port_answers_pods_of_any_namespace(setup: Setup) -> None:
    for ns in (ALLOWED, OTHER):
        await settles(setup.probes[ns], setup.pod_ip, REGISTRY_PORT, "connected")


async def test_metrics_port_refuses_a_namespace_not_listed(setup: Setup) -> None:
    await settles(setup.probes[OTHER], setup.pod_ip, METRICS_PORT, REFUSED)
    # The refusal is the policy's, not a closed port: the allowed namespace gets in.
    await settles(setup.probes[ALLOWED], setup.pod_ip, METRICS_PORT, "connected")
    assert REFUSED in await connect(setup.probes[OTHER], setup.pod_ip, METRICS_PORT)


async def test_metrics_port_serves_the_allowed_namespace(setup: Setup) -> None:
    probe = setup.probes[ALLOWED]
    await settles(probe, setup.pod_ip, METRICS_PORT, "connected")
    response = await http_get(probe, setup.pod_ip, METRICS_PORT, "/metrics")
    status_line = response.split("\r\n", 1)[0]
    assert status_line.split()[1:2] == ["200"], response[:200]  # Go answers 1.0 with 1.0
    assert "# TYPE " in response  # Prometheus text format


async def test_the_node_reaches_both_ports(setup: Setup) -> None:
    """kubelet's probes come from the node: neither port is closed to it, whatever the
    policy says, so a probe may move to the metrics port."""
    for port in (REGISTRY_PORT, METRICS_PORT):
        await settles(setup.probes["node"], setup.pod_ip, port, "connected")


async def test_push_through_the_loadbalancer_and_node_pull_still_work(
    api: kr8s.asyncio.Api, setup: Setup, module_registries: RegistryFactory
) -> None:
    registry = setup.registry
    image = f"{registry.host}/netpol/app:1"
    archive = images.build_image(images.helper_image())
    password = await module_registries.password(registry)
    # From the host, through the LoadBalancer IP: an outside client's path.
    await asyncio.to_thread(
        skopeo_push, archive, image, registry.ca_file.parent, "registry", password
    )
    # The node's containerd pulls it for a Deployment in the registry's namespace.
    app = demo_deployment(
        image, "docker-registry-pull", name="app", namespace=NAMESPACE, grace_seconds=1
    )
    await kube.apply_manifests(api, [app])
    deployment = await Deployment.get("app", namespace=NAMESPACE, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr
