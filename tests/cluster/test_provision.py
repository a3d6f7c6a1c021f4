"""provision / unprovision / smoke-test on the real local cluster, through the CLI."""

from __future__ import annotations

import kr8s.asyncio
import pytest

from registry_provisioner import kube
from registry_provisioner.images import push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from tests.cluster.helpers import invoke, registry_password

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

LABEL = "app.kubernetes.io/managed-by=registry-provisioner"


async def _objects_of(api: kr8s.asyncio.Api, namespace: str) -> list[str]:
    """Every object of ours, wherever it lives (pull secrets, kube-public)."""
    found = []
    for kind in (
        "secrets",
        "configmaps",
        "services",
        "deployments",
        "daemonsets",
        "persistentvolumeclaims",
    ):
        for obj in await kube.get_all(api, kind, namespace=kr8s.ALL, label_selector=LABEL):
            if obj.labels.get("app.kubernetes.io/instance") == namespace:
                found.append(f"{obj.kind}/{obj.namespace}/{obj.name}")
    return found


@pytest.mark.parametrize(
    ("namespace", "ip"), [("docker-registry", "10.213.1.50"), ("team-registry", "10.213.1.51")]
)
async def test_lifecycle(api: kr8s.asyncio.Api, kubeconfig: str, tmp_path, namespace, ip):
    settings = ["--set", f"namespace={namespace}", "--set", f"service.ip={ip}"]
    # Start from nothing, whatever an earlier run or the demo left.
    assert invoke("unprovision", *settings, "--purge", kubeconfig=kubeconfig).returncode == 0

    first = invoke("provision", *settings, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
    assert first.returncode == 0, first.stderr
    assert f"registry ready at https://{ip}:5000" in first.stdout
    assert ": created" in first.stdout
    password = await registry_password(api, namespace)
    assert password not in first.stdout + first.stderr

    second = invoke("provision", *settings, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout
    assert ": created" not in second.stdout and ": configured" not in second.stdout

    dry = invoke("provision", *settings, "--dry-run", kubeconfig=kubeconfig)
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed: no changes" in dry.stdout

    smoke = invoke("smoke-test", *settings, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
    assert smoke.returncode == 0, smoke.stderr
    assert password not in smoke.stdout + smoke.stderr

    ca_file = tmp_path / f"{ip}:5000" / "ca.crt"
    image = random_image([4096])
    async with RegistryClient(f"https://{ip}:5000", "registry", password, ca_file) as client:
        digest = await push_image(client, "kept/data", "v1", image)

    kept = invoke("unprovision", *settings, kubeconfig=kubeconfig)
    assert kept.returncode == 0, kept.stderr
    assert "kept its data" in kept.stdout
    left = await _objects_of(api, namespace)
    assert sorted(left) == sorted(
        [
            f"PersistentVolumeClaim/{namespace}/docker-registry-pvc",
            f"Secret/{namespace}/docker-registry-auth",
            f"Secret/{namespace}/docker-registry-tls",
        ]
    ), left

    again = invoke("provision", *settings, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
    assert again.returncode == 0, again.stderr
    assert await registry_password(api, namespace) == password  # the login survived too
    async with RegistryClient(f"https://{ip}:5000", "registry", password, ca_file) as client:
        manifest = await client.get_manifest("kept/data", digest)
        assert manifest.digest == digest

    purge = invoke("unprovision", *settings, "--purge", kubeconfig=kubeconfig)
    assert purge.returncode == 0, purge.stderr
    assert await _objects_of(api, namespace) == []
    namespaces = [ns.name for ns in await kube.get_all(api, "namespaces")]
    assert namespace not in namespaces

    nothing = invoke("unprovision", *settings, kubeconfig=kubeconfig)
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to remove" in nothing.stdout
