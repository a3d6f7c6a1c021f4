"""Each preflight failure stops provision with a clear message and creates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Service

from registry_provisioner.kube import field_is, wait_until
from tests.cluster.helpers import invoke
from tests.support.registries import ADDRESSES, Registry, RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

NAMESPACE = "preflight-registry"


@pytest.fixture(scope="module")
async def refused(module_registries: RegistryFactory) -> Registry:
    """A purged namespace and a free address, for provisions that must be refused."""
    return await module_registries(NAMESPACE, provision=False, shared=True)


@pytest.fixture
async def ip_taken(api: kr8s.asyncio.Api, namespace: str) -> AsyncIterator[str]:
    """Another LoadBalancer Service already holding an address of the pool."""
    ip = await ADDRESSES.claim(api)
    try:
        service = await Service(
            {
                "metadata": {
                    "name": "squatter",
                    "namespace": namespace,
                    "annotations": {"metallb.io/loadBalancerIPs": ip},
                },
                "spec": {
                    "type": "LoadBalancer",
                    "ports": [{"port": 5000}],
                    "selector": {"a": "b"},
                },
            },
            api=api,
        )
        await service.create()
        ingress_ip = field_is("status.loadBalancer.ingress.0.ip", ip)
        await asyncio.wait_for(wait_until(service, ingress_ip), 60)
        yield ip
    finally:
        ADDRESSES.release(ip)  # the Service holds it until its namespace is gone


CASES = {
    "missing issuer": (["--set", "tls.issuer_name=no-such-issuer"], "tls.issuer_name"),
    "missing storage class": (
        ["--set", "storage.storage_class=fast-nvme"],
        "storage.storage_class",
    ),
    "ip outside every pool": (["--set", "service.ip=10.213.1.99"], "service.ip"),
    "unknown pool": (["--set", "service.address_pool=nope"], "service.address_pool"),
    "missing existing secret": (["--set", "tls.mode=existing-secret"], "tls.secret_name"),
    "missing pull namespace": (
        ["--set", "pull_secret.namespaces=[ghost-ns]"],
        "pull_secret.namespaces",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_preflight_failure_changes_nothing(
    api: kr8s.asyncio.Api, refused: Registry, case: str
) -> None:
    extra, field = CASES[case]
    before = await snapshot(api)
    result = refused.invoke("provision", *extra)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    assert await snapshot(api) == before


async def test_ip_used_by_another_service(
    api: kr8s.asyncio.Api, refused: Registry, ip_taken: str
) -> None:
    before = await snapshot(api)
    result = refused.invoke("provision", "--set", f"service.ip={ip_taken}")
    assert result.returncode != 0
    assert "service.ip" in result.stderr and "squatter" in result.stderr, result.stderr
    assert await snapshot(api) == before


async def test_unreachable_api_is_a_clear_error(tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "
        "'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    result = invoke("provision", kubeconfig=str(kubeconfig), timeout=120)
    assert result.returncode != 0
    assert "cannot reach the Kubernetes API" in result.stderr, result.stderr


def test_invalid_config_is_refused_before_the_cluster(tmp_path) -> None:
    result = invoke("provision", "--set", "storage.size=lots", kubeconfig="/nonexistent")
    assert result.returncode != 0
    assert "storage.size" in result.stderr
