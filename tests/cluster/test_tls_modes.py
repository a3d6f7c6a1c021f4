"""TLS without cert-manager (self-signed, existing Secret) and password rotation."""

from __future__ import annotations

import base64

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Namespace, Secret

from registry_provisioner import kube
from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.secrets import self_signed_ca_and_server_cert
from tests.cluster.helpers import invoke

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

IP = "10.213.1.41"


def settings(namespace: str, *extra: str) -> list[str]:
    return ["--set", f"namespace={namespace}", "--set", f"service.ip={IP}", *extra]


async def _password(api: kr8s.asyncio.Api, namespace: str) -> str:
    [secret] = await kube.get_all(api, "secrets", "docker-registry-auth", namespace=namespace)
    return base64.b64decode(secret.raw["data"]["password"]).decode()


async def test_self_signed_mode_and_password_rotation(
    api: kr8s.asyncio.Api, kubeconfig: str, tmp_path
) -> None:
    args = settings("selfsigned-registry", "--set", "tls.mode=self-signed")
    invoke("unprovision", *args, "--purge", kubeconfig=kubeconfig)
    try:
        first = invoke("provision", *args, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
        assert first.returncode == 0, first.stderr
        again = invoke("provision", *args, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
        assert "no changes" in again.stdout  # the generated CA and key are reused
        smoke = invoke("smoke-test", *args, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
        assert smoke.returncode == 0, smoke.stderr

        old = await _password(api, "selfsigned-registry")
        rotated = invoke(
            "provision",
            *args,
            "--rotate-password",
            "--ca-dir",
            str(tmp_path),
            kubeconfig=kubeconfig,
        )
        assert rotated.returncode == 0, rotated.stderr
        new = await _password(api, "selfsigned-registry")
        assert new != old
        ca_file = tmp_path / f"{IP}:5000" / "ca.crt"
        async with RegistryClient(f"https://{IP}:5000", "registry", old, ca_file) as client:
            with pytest.raises(RegistryError) as caught:
                await client.ping()
            assert caught.value.status == 401
        async with RegistryClient(f"https://{IP}:5000", "registry", new, ca_file) as client:
            await client.ping()
    finally:
        invoke("unprovision", *args, "--purge", kubeconfig=kubeconfig)


async def test_existing_secret_mode(api: kr8s.asyncio.Api, kubeconfig: str, tmp_path) -> None:
    namespace = "byo-registry"
    args = settings(namespace, "--set", "tls.mode=existing-secret")
    invoke("unprovision", *args, "--purge", kubeconfig=kubeconfig)
    ns = await Namespace({"metadata": {"name": namespace}}, api=api)
    await ns.create()
    ca, cert, key = self_signed_ca_and_server_cert(["registry.byo.test"], [IP])
    encoded = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in {"tls.crt": cert, "tls.key": key, "ca.crt": ca}.items()
    }
    secret = await Secret(
        {
            "metadata": {"name": "docker-registry-tls", "namespace": namespace},
            "type": "kubernetes.io/tls",
            "data": encoded,
        },
        api=api,
    )
    await secret.create()
    try:
        result = invoke("provision", *args, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / f"{IP}:5000" / "ca.crt").read_text() == ca
        smoke = invoke("smoke-test", *args, "--ca-dir", str(tmp_path), kubeconfig=kubeconfig)
        assert smoke.returncode == 0, smoke.stderr
    finally:
        invoke("unprovision", *args, "--purge", kubeconfig=kubeconfig)
