"""The pull-only login on the cluster (issue 11, point 6).

What goes into pull namespaces may pull but not push or delete; the admin keeps
every right; each login rotates on its own. Checked with our client, with skopeo,
and with kubelet pulling for a Deployment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import tempfile
from pathlib import Path

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment

from registry_provisioner import kube
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import random_image
from registry_provisioner.oci_client import RegistryClient
from scripts.local_cluster import images
from scripts.local_cluster.demo import demo_deployment, skopeo_push
from tests.cluster.helpers import decoded
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

PULL_SECRET = "docker-registry-pull"
SKOPEO_TIMEOUT = 120


def skopeo(
    registry: Registry, user: str, password: str, command: str, *args: str
) -> subprocess.CompletedProcess:
    """skopeo with a login from an authfile (mode 0600), never from its command line."""
    # inspect reads from the registry; copy writes to it.
    cert_dir = "--cert-dir" if command == "inspect" else "--dest-cert-dir"
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "auth.json"
        authfile.touch(mode=0o600)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        return subprocess.run(
            [
                "skopeo",
                command,
                "--authfile",
                str(authfile),
                cert_dir,
                str(registry.ca_file.parent),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=SKOPEO_TIMEOUT,
        )


async def pull_secret_login(api: kr8s.asyncio.Api, registry: Registry) -> dict[str, str]:
    [secret] = await kube.get_all(api, "secrets", PULL_SECRET, namespace=registry.namespace)
    return json.loads(decoded(secret.raw, ".dockerconfigjson"))["auths"][registry.host]


async def deploy_app(api: kr8s.asyncio.Api, registry: Registry, image: str) -> Deployment:
    """A Deployment that pulls ``image`` with the pull Secret, once Running."""
    app = demo_deployment(image, PULL_SECRET, name="app", namespace=registry.namespace)
    await kube.apply_manifests(api, [app])
    deployment = await Deployment.get("app", namespace=registry.namespace, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)
    return deployment


async def rolls_out_again(deployment: Deployment, round_: str) -> None:
    """A new pod (imagePullPolicy Always: a real pull with the Secret as it is now)."""
    template = {"metadata": {"annotations": {"test/round": round_}}}
    await deployment.patch({"spec": {"template": template}})
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)


async def test_the_pull_secret_pulls_but_cannot_push_or_delete(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("pull-only")
    admin_password = await registries.password(registry)
    pull_password = await registries.pull_password(registry)
    login = await pull_secret_login(api, registry)
    assert login["username"] == "puller" and login["password"] == pull_password
    assert pull_password != admin_password

    image = f"{registry.host}/pull-only/app:1"
    archive = images.build_image(images.helper_image())
    await asyncio.to_thread(
        skopeo_push, archive, image, registry.ca_file.parent, "registry", admin_password
    )
    # kubelet pulls with the pull Secret.
    await deploy_app(api, registry, image)
    # status reads the volume in distribution's container, not in the proxy's.
    status = registry.invoke("status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"storage used: [0-9.]+[KMG]\S* of 5Gi", status.stdout), status.stdout

    async with RegistryClient(registry.url, "puller", pull_password, registry.ca_file) as puller:
        digest = (await puller.get_manifest("pull-only/app", "1")).digest
        for denied in (
            puller.push_blob("pull-only/app", random_image([1024]).layers[0]),
            puller.delete_manifest("pull-only/app", digest),
        ):
            with pytest.raises(RegistryError) as caught:
                await denied
            assert caught.value.status == 403
            assert "DENIED" in str(caught.value)

    # skopeo, an independent client, sees the same rights.
    inspected = await asyncio.to_thread(
        skopeo, registry, "puller", pull_password, "inspect", f"docker://{image}"
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest
    pushed = await asyncio.to_thread(
        skopeo,
        registry,
        "puller",
        pull_password,
        "copy",
        "--quiet",
        f"oci-archive:{archive}",
        f"docker://{registry.host}/pull-only/other:1",
    )
    assert pushed.returncode != 0
    assert "denied" in pushed.stderr.lower(), pushed.stderr

    # The admin keeps every right: it deletes what the pull login could not.
    async with RegistryClient(registry.url, "registry", admin_password, registry.ca_file) as admin:
        await admin.delete_manifest("pull-only/app", digest)
        with pytest.raises(RegistryError) as gone:
            await admin.get_manifest("pull-only/app", digest)
        assert gone.value.status == 404


async def test_rotating_the_pull_login_keeps_pulls_working_and_retires_the_old_one(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("pull-rotation")
    admin_password = await registries.password(registry)
    old = await registries.pull_password(registry)
    image = f"{registry.host}/pull-rotation/app:1"
    archive = images.build_image(images.helper_image())
    await asyncio.to_thread(
        skopeo_push, archive, image, registry.ca_file.parent, "registry", admin_password
    )
    app = await deploy_app(api, registry, image)

    rotated = registry.invoke("provision", "--rotate-pull-password")
    assert rotated.returncode == 0, rotated.stderr
    new = await registries.pull_password(registry)
    assert new != old
    assert await registries.password(registry) == admin_password  # the admin's is untouched
    assert (await pull_secret_login(api, registry))["password"] == new
    for output in (rotated.stdout, rotated.stderr):
        assert old not in output and new not in output

    async with RegistryClient(registry.url, "puller", old, registry.ca_file) as retired:
        with pytest.raises(RegistryError) as caught:
            await retired.get_manifest("pull-rotation/app", "1")
        assert caught.value.status == 401
    async with RegistryClient(registry.url, "puller", new, registry.ca_file) as current:
        await current.get_manifest("pull-rotation/app", "1")
    # kubelet pulls again with the rotated Secret.
    await rolls_out_again(app, "after-rotation")
