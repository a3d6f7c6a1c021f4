"""The provisioned registry keeps strangers out and keeps its data (issue: reliability suite)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment

from registry_provisioner import kube
from registry_provisioner.certificates import self_signed_ca_and_server_cert
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import pull_image, push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.smoke import smoke_test
from tests.cluster.helpers import until_answers
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

NAMESPACE = "sec-registry"
DNS_NAMES = (
    f"docker-registry-service.{NAMESPACE}.svc",
    f"docker-registry-service.{NAMESPACE}.svc.cluster.local",
    f"docker-registry-service.{NAMESPACE}",
)


@dataclass(frozen=True)
class Provisioned:
    installed: Registry
    password: str
    outputs: str  # everything provision, smoke-test and status printed

    @property
    def ip(self) -> str:
        return self.installed.ip

    @property
    def url(self) -> str:
        return self.installed.url

    @property
    def ca_file(self) -> Path:
        return self.installed.ca_file


@pytest.fixture(scope="module")
async def registry(module_registries: RegistryFactory) -> Provisioned:
    installed = await module_registries(NAMESPACE, shared=True)
    runs = [*installed.outputs, installed.invoke("smoke-test"), installed.invoke("status")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    outputs = "".join(run.stdout + run.stderr for run in runs)
    return Provisioned(installed, await module_registries.password(installed), outputs)


# --- auth ----------------------------------------------------------------------------


async def test_anonymous_and_wrong_password_get_401(registry: Provisioned) -> None:
    for username, password in ((None, None), ("registry", "not-the-password")):
        async with RegistryClient(registry.url, username, password, registry.ca_file) as client:
            with pytest.raises(RegistryError) as caught:
                await client.ping()
            assert caught.value.status == 401


async def test_push_and_pull_without_credentials_fail(registry: Provisioned) -> None:
    image = random_image([1024])
    async with RegistryClient(
        registry.url, "registry", registry.password, registry.ca_file
    ) as client:
        await push_image(client, "private/app", "v1", image)
    async with RegistryClient(registry.url, ca_file=registry.ca_file) as anonymous:
        with pytest.raises(RegistryError) as pushed:
            await push_image(anonymous, "private/app", "v2", random_image([1024]))
        with pytest.raises(RegistryError) as pulled:
            await pull_image(anonymous, "private/app", "v1")
    assert pushed.value.status == pulled.value.status == 401


def test_metrics_port_is_not_reachable_through_the_loadbalancer(registry: Provisioned) -> None:
    with pytest.raises(OSError), socket.create_connection((registry.ip, 5001), timeout=5):
        pass


async def test_password_never_appears_in_output_or_logs(
    api: kr8s.asyncio.Api, registry: Provisioned
) -> None:
    assert registry.password not in registry.outputs
    pods = await kube.get_all(api, "pods", namespace=NAMESPACE)
    for pod in pods:
        for container in pod.raw["spec"]["containers"]:
            log = "".join([line async for line in pod.logs(container=container["name"])])
            assert registry.password not in log, f"password in the log of {pod.name}"


# --- TLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("server_name", ["ip", *DNS_NAMES])
def test_served_chain_verifies_for_the_ip_and_every_dns_name(
    registry: Provisioned, server_name: str
) -> None:
    server_name = registry.ip if server_name == "ip" else server_name
    context = ssl.create_default_context(cafile=str(registry.ca_file))
    with (
        socket.create_connection((registry.ip, 5000), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        assert tls.getpeercert()  # verified chain and hostname, or wrap_socket raised


async def test_plain_http_serves_no_content(registry: Provisioned) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://{registry.ip}:5000/v2/_catalog")
    assert response.status_code == 400
    assert "Docker-Distribution-Api-Version" not in response.headers
    assert b"repositories" not in response.content


async def test_wrong_ca_fails_verification_and_smoke_test_says_so(
    registry: Provisioned, tmp_path: Path
) -> None:
    stranger_ca, _, _ = self_signed_ca_and_server_cert(["elsewhere.test"], [registry.ip])
    wrong_ca = tmp_path / "wrong-ca.crt"
    wrong_ca.write_text(stranger_ca)
    with pytest.raises(RegistryError) as caught:
        await smoke_test(registry.url, "registry", registry.password, wrong_ca)
    assert "CA does not match" in str(caught.value)


# --- durability ----------------------------------------------------------------------


async def test_twenty_images_survive_a_registry_pod_restart(
    api: kr8s.asyncio.Api, registry: Provisioned
) -> None:
    images = {f"durable/app{i}": random_image([2048 + i, 4096]) for i in range(20)}
    async with RegistryClient(
        registry.url, "registry", registry.password, registry.ca_file
    ) as client:
        digests = {repo: await push_image(client, repo, "v1", img) for repo, img in images.items()}

    selector = "app.kubernetes.io/component=registry"
    [pod] = await kube.get_all(api, "pods", namespace=NAMESPACE, label_selector=selector)
    await pod.delete()
    await asyncio.wait_for(kube.wait_deleted(pod), 120)
    deployment = await Deployment.get("docker-registry", namespace=NAMESPACE, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 180)

    async with RegistryClient(
        registry.url, "registry", registry.password, registry.ca_file
    ) as client:
        await asyncio.wait_for(until_answers(client), 60)
        for repo, image in images.items():
            pulled = await pull_image(client, repo, digests[repo])
            assert pulled.manifest == image.manifest
            assert pulled.config == image.config and pulled.layers == image.layers


async def test_twenty_images_survive_unprovision_and_provision(
    registry: Provisioned,
) -> None:
    images = {f"kept/app{i}": random_image([1024 + i, 2048]) for i in range(20)}
    async with RegistryClient(
        registry.url, "registry", registry.password, registry.ca_file
    ) as client:
        digests = {repo: await push_image(client, repo, "v1", img) for repo, img in images.items()}

    assert registry.installed.invoke("unprovision").returncode == 0
    again = registry.installed.invoke("provision")
    assert again.returncode == 0, again.stderr

    async with RegistryClient(
        registry.url, "registry", registry.password, registry.ca_file
    ) as client:
        for repo, image in images.items():
            pulled = await pull_image(client, repo, digests[repo])
            assert pulled.manifest == image.manifest
            assert pulled.config == image.config and pulled.layers == image.layers
