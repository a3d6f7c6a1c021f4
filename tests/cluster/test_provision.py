"""provision / unprovision / smoke-test on the real local cluster, through the CLI."""

from __future__ import annotations

import kr8s.asyncio
import pytest

from registry_provisioner import kube
from registry_provisioner.images import push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from tests.support.registries import KINDS, Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

LABEL = "app.kubernetes.io/managed-by=registry-provisioner"
REGISTRY_POD = "app.kubernetes.io/component=registry"


async def _objects_of(api: kr8s.asyncio.Api, namespace: str) -> list[str]:
    """Every object of ours, wherever it lives (pull secrets, kube-public)."""
    found = []
    for kind in KINDS:
        for obj in await kube.get_all(api, kind, namespace=kr8s.ALL, label_selector=LABEL):
            if obj.labels.get("app.kubernetes.io/instance") == namespace:
                found.append("/".join(part for part in (obj.kind, obj.namespace, obj.name) if part))
    return found


@pytest.fixture(params=["local defaults", "team-registry"])
async def registry(request: pytest.FixtureRequest, registries: RegistryFactory) -> Registry:
    """Purged, not provisioned: `invoke --local` as it is (the demo's namespace at the
    overlay's address, no --set), or another namespace at an address of the pool."""
    if request.param == "local defaults":
        return await registries.local_defaults(provision=False)
    return await registries(request.param, provision=False, shared=True)


async def test_lifecycle(
    api: kr8s.asyncio.Api, registries: RegistryFactory, registry: Registry
) -> None:
    namespace = registry.namespace
    first = registry.invoke("provision")
    assert first.returncode == 0, first.stderr
    assert f"registry ready at {registry.url}" in first.stdout
    assert ": created" in first.stdout
    assert "Warning" not in first.stdout + first.stderr  # no library noise for users
    password = await registries.password(registry)
    assert password not in first.stdout + first.stderr

    second = registry.invoke("provision")
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout
    assert ": created" not in second.stdout and ": configured" not in second.stdout

    dry = registry.invoke("provision", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed: no changes" in dry.stdout

    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr
    assert password not in smoke.stdout + smoke.stderr

    image = random_image([4096])
    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        digest = await push_image(client, "kept/data", "v1", image)

    kept = registry.invoke("unprovision")
    assert kept.returncode == 0, kept.stderr
    assert "kept its data" in kept.stdout
    left = await _objects_of(api, namespace)
    assert sorted(left) == sorted(
        [
            f"Namespace/{namespace}",
            f"PersistentVolumeClaim/{namespace}/docker-registry-pvc",
            f"Secret/{namespace}/docker-registry-auth",
            f"Secret/{namespace}/docker-registry-tls",
        ]
    ), left

    again = registry.invoke("provision")
    assert again.returncode == 0, again.stderr
    assert await registries.password(registry) == password  # the login survived too
    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        manifest = await client.get_manifest("kept/data", digest)
        assert manifest.digest == digest

    purge = registry.purge()
    assert purge.returncode == 0, purge.stderr
    assert await _objects_of(api, namespace) == []
    namespaces = [ns.name for ns in await kube.get_all(api, "namespaces")]
    assert namespace not in namespaces

    nothing = registry.invoke("unprovision")
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to remove" in nothing.stdout


@pytest.mark.parametrize("storage_class", ["longhorn", "local-path"])
async def test_the_registry_pod_is_created_when_its_claim_can_bind(
    api: kr8s.asyncio.Api, registries: RegistryFactory, storage_class: str
) -> None:
    """The local cluster's longhorn class binds at once: the pod comes after the volume,
    so the scheduler never sets it aside for an unbound claim. local-path waits for the
    first consumer: there the pod is what makes the claim bind, so it goes out at once."""
    registry = await registries("claim-order", storage__storage_class=storage_class)
    [claim] = await kube.get_all(
        api, "persistentvolumeclaims", "docker-registry-pvc", namespace=registry.namespace
    )
    [volume] = await kube.get_all(api, "persistentvolumes", claim.raw["spec"]["volumeName"])
    [pod] = await kube.get_all(
        api, "pods", namespace=registry.namespace, label_selector=REGISTRY_POD
    )
    [binding_mode] = [
        sc.raw.get("volumeBindingMode")
        for sc in await kube.get_all(api, "storageclasses", storage_class)
    ]
    created = {obj.kind: obj.metadata.creationTimestamp for obj in (volume, pod)}
    events = await kube.get_all(api, "events", namespace=registry.namespace)
    set_aside = [
        e.raw["message"]
        for e in events
        if e.raw["involvedObject"].get("name") == pod.name and e.raw["reason"] == "FailedScheduling"
    ]
    if binding_mode == "Immediate":
        assert created["Pod"] >= created["PersistentVolume"], created
        assert set_aside == []
    else:
        assert binding_mode == "WaitForFirstConsumer"
        assert created["Pod"] <= created["PersistentVolume"], created
