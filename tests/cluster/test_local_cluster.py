"""The local cluster does what the registry needs from a real one."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import (
    NetworkPolicy,
    Node,
    PersistentVolumeClaim,
    Pod,
    Secret,
    Service,
    new_class,
)

from registry_provisioner.kube import condition_is, field_is, wait_until
from registry_provisioner.waiting import poll
from scripts.local_cluster import network, versions
from scripts.local_cluster.pods import restricted
from tests.cluster.helpers import http_get, until_ready

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

Certificate = new_class("Certificate", "cert-manager.io/v1", namespaced=True)


def has_ingress_ip(raw: dict) -> bool:
    return bool((raw.get("status") or {}).get("loadBalancer", {}).get("ingress"))


def busybox_pod(name: str, namespace: str, command: str, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": restricted(
            {
                "containers": [
                    {
                        "name": "main",
                        "image": versions.HELPER_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", command],
                    }
                ],
                "terminationGracePeriodSeconds": 1,
                **spec,
            }
        ),
    }


async def test_node_is_ready(api: kr8s.asyncio.Api) -> None:
    node = await Node.get(network.NODE_NAME, api=api)
    await asyncio.wait_for(wait_until(node, condition_is("Ready")), 60)


async def test_a_pod_runs_to_completion(api: kr8s.asyncio.Api, namespace: str) -> None:
    pod = await Pod(busybox_pod("hello", namespace, "echo hello-from-pod"), api=api)
    pod.raw["spec"]["restartPolicy"] = "Never"
    await pod.create()
    await asyncio.wait_for(wait_until(pod, field_is("status.phase", "Succeeded")), 120)
    assert "hello-from-pod" in "".join([line async for line in pod.logs()])


async def test_loadbalancer_gets_pool_ip_and_answers_from_host(
    api: kr8s.asyncio.Api, namespace: str
) -> None:
    serve = "echo lb-ok > /www/index.html && exec httpd -f -p 8080 -h /www"
    # The pod runs as nobody (restricted): it writes only into a volume of its own.
    web = busybox_pod("web", namespace, serve, volumes=[{"name": "www", "emptyDir": {}}])
    web["spec"]["containers"][0]["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
    pod = await Pod(web, api=api)
    await pod.create()
    service = await Service(
        {
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
        api=api,
    )
    await service.create()
    await asyncio.wait_for(wait_until(service, has_ingress_ip), 60)
    ip = service.raw["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(network.LOADBALANCER_CIDR)
    await until_ready(pod)
    # Ready pod, then kube-proxy programs the endpoint: wait for the answer itself.
    async with httpx.AsyncClient(timeout=2) as client:

        async def answers() -> bool:
            try:
                return (await client.get(f"http://{ip}/")).text.strip() == "lb-ok"
            except httpx.TransportError:
                return False

        await asyncio.wait_for(poll(answers), 30)


async def test_pvc_on_default_storage_class_binds(api: kr8s.asyncio.Api, namespace: str) -> None:
    claim = await PersistentVolumeClaim(
        {
            "metadata": {"name": "data", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}},
            },
        },
        api=api,
    )
    await claim.create()
    writer = busybox_pod(
        "writer",
        namespace,
        "echo persisted > /data/file && cat /data/file",
        restartPolicy="Never",
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    writer["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod = await Pod(writer, api=api)
    await pod.create()
    await asyncio.wait_for(wait_until(claim, field_is("status.phase", "Bound")), 120)
    await asyncio.wait_for(wait_until(pod, field_is("status.phase", "Succeeded")), 120)
    assert "persisted" in "".join([line async for line in pod.logs()])


async def test_certificate_from_ca_cluster_issuer_becomes_ready(
    api: kr8s.asyncio.Api, namespace: str
) -> None:
    certificate = await Certificate(
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": "example", "namespace": namespace},
            "spec": {
                "secretName": "example-tls",
                "commonName": "example.test",
                "dnsNames": ["example.test"],
                "ipAddresses": ["203.0.113.10"],  # a SAN only (TEST-NET-3): nothing is sent there
                "issuerRef": {
                    "name": "cert-manager-issuer",
                    "kind": "ClusterIssuer",
                    "group": "cert-manager.io",
                },
            },
        },
        api=api,
    )
    await certificate.create()
    await asyncio.wait_for(wait_until(certificate, condition_is("Ready")), 120)
    secret = await Secret.get("example-tls", namespace=namespace, api=api)
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret.raw["data"])


async def test_network_policy_is_enforced(api: kr8s.asyncio.Api, namespace: str) -> None:
    """kube-router's controller enforces NetworkPolicy: a deny-all ingress policy refuses a
    pod-to-pod connection, and deleting the policy lets it through again."""
    # /tmp: the pod runs as nobody (Pod Security restricted) and may not write to /.
    www = "/tmp/www"
    serve = f"mkdir -p {www} && echo np-ok > {www}/index.html && exec httpd -f -p 8080 -h {www}"
    web = await Pod(busybox_pod("web", namespace, serve), api=api)
    client = await Pod(busybox_pod("client", namespace, "exec sleep 3600"), api=api)
    for pod in (web, client):
        await pod.create()
    for pod in (web, client):
        await until_ready(pod)
    ip = web.raw["status"]["podIP"]

    last: list[str] = []

    async def answers() -> bool:
        last.append(await http_get(client, ip, 8080))
        return last[-1].endswith("np-ok")

    async def refused() -> bool:
        last.append(await http_get(client, ip, 8080))
        return "Connection refused" in last[-1]

    try:
        await asyncio.wait_for(poll(answers), 30)
    except TimeoutError:
        raise AssertionError(f"no answer before any policy; last: {last[-1:]}") from None
    deny_all = await NetworkPolicy(
        {
            "metadata": {"name": "deny-all", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        api=api,
    )
    await deny_all.create()
    # kube-router rejects (not drops) what no policy allows, so the refusal is immediate.
    await asyncio.wait_for(poll(refused), 30)
    await deny_all.delete()
    await asyncio.wait_for(poll(answers), 30)
