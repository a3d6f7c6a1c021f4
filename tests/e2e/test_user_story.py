"""The whole mission: push from outside, run it in the cluster, survive restarts."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment, Namespace

from registry_provisioner import kube
from registry_provisioner.oci_client import RegistryClient
from scripts.local_cluster import images, node_config
from scripts.local_cluster.demo import demo_deployment
from scripts.local_cluster.paths import STATE_DIR
from tests.cluster.helpers import skopeo, until_answers
from tests.support.registries import RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

NAMESPACE = "e2e-registry"
APPS = "e2e-apps"
NODE_CERTS_DIR = node_config.NodeLayout(STATE_DIR / "node").registry_certs_dir


def app_deployment(image: str) -> dict:
    """The demo's Deployment, in the test's namespace; it ends quickly when deleted."""
    return demo_deployment(
        image, "docker-registry-pull", name="app", namespace=APPS, grace_seconds=1
    )


async def test_push_from_outside_then_deploy_restart_and_reprovision(
    api: kr8s.asyncio.Api, registries: RegistryFactory, tmp_path: Path
) -> None:
    registry = await registries(
        NAMESPACE, provision=False, shared=True, pull_secret__namespaces=f"[{APPS}]"
    )
    host = registry.host
    node_trust_dir = NODE_CERTS_DIR / host
    apps = await Namespace({"metadata": {"name": APPS}}, api=api)
    if not await apps.exists():
        await apps.create()

    # 1. Provision.
    provisioned = registry.invoke("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    cert_dir = registry.ca_file.parent
    login = await registries.password(registry)
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(f"registry:{login}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    authfile.chmod(0o600)

    # 2. Push a runnable image from the host, TLS verified, with the real login.
    archive = images.build_image(images.helper_image())
    image = f"{host}/e2e/app:1"
    skopeo(
        "copy", f"oci-archive:{archive}", f"docker://{image}", authfile=authfile, cert_dir=cert_dir
    )
    digest = json.loads(
        skopeo("inspect", f"docker://{image}", authfile=authfile, cert_dir=cert_dir)
    )["Digest"]

    # 3. A Deployment in another namespace pulls it through node trust and the pull Secret.
    assert (node_trust_dir / "ca.crt").read_text() == (cert_dir / "ca.crt").read_text()
    await kube.apply_manifests(api, [app_deployment(image)])
    app = await Deployment.get("app", namespace=APPS, api=api)
    await asyncio.wait_for(kube.wait_until(app, kube.rolled_out), 180)
    [pod] = await kube.get_all(api, "pods", namespace=APPS, label_selector="app=app")
    assert pod.raw["status"]["phase"] == "Running"
    assert pod.raw["status"]["containerStatuses"][0]["imageID"].endswith(digest)

    # 4. Restart the registry pod; the image is still there, by digest.
    [registry_pod] = await kube.get_all(
        api, "pods", namespace=NAMESPACE, label_selector="app.kubernetes.io/component=registry"
    )
    await registry_pod.delete()
    await asyncio.wait_for(kube.wait_deleted(registry_pod), 120)
    deployment = await Deployment.get("docker-registry", namespace=NAMESPACE, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 180)
    by_digest = f"docker://{host}/e2e/app@{digest}"
    async with RegistryClient(registry.url, "registry", login, registry.ca_file) as c:
        await asyncio.wait_for(until_answers(c), 60)
    skopeo("inspect", by_digest, authfile=authfile, cert_dir=cert_dir)

    # 5. Unprovision keeping the data, provision again: the image is still there.
    kept = registry.invoke("unprovision")
    assert kept.returncode == 0, kept.stderr
    again = registry.invoke("provision")
    assert again.returncode == 0, again.stderr
    skopeo("inspect", by_digest, authfile=authfile, cert_dir=cert_dir)

    # 6. Purge: nothing left, node-trust files removed (the emptied directory may stay).
    await kube.delete_manifests(api, [app_deployment(image)])
    purged = registry.purge()
    assert purged.returncode == 0, purged.stderr
    assert not node_trust_dir.exists() or not any(node_trust_dir.iterdir())
    ours = await kube.get_all(
        api,
        "secrets",
        namespace=kr8s.ALL,
        label_selector=f"app.kubernetes.io/instance={NAMESPACE}",
    )
    assert ours == []
    assert not await Namespace({"metadata": {"name": NAMESPACE}}, api=api).exists()
