"""TLS without cert-manager (self-signed, existing Secret), expiry, and password rotation."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Secret

from registry_provisioner import kube
from registry_provisioner.certificates import self_signed_ca_and_server_cert
from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from tests.cluster.helpers import decoded, fresh_namespace, namespace_gone
from tests.support.registries import Registry, RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


async def test_self_signed_mode_password_rotation_and_renewal(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries(
        "selfsigned-registry", provision=False, shared=True, tls__mode="self-signed"
    )
    first = registry.invoke("provision")
    assert first.returncode == 0, first.stderr
    again = registry.invoke("provision")
    assert "no changes" in again.stdout  # the generated CA and key are reused
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr

    old = await registries.password(registry)
    rotated = registry.invoke("provision", "--rotate-password")
    assert rotated.returncode == 0, rotated.stderr
    new = await registries.password(registry)
    assert new != old
    async with RegistryClient(registry.url, "registry", old, registry.ca_file) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
        assert caught.value.status == 401
    async with RegistryClient(registry.url, "registry", new, registry.ca_file) as client:
        await client.ping()

    # A stored certificate past its date is replaced by the next provision, and served.
    [tls] = await kube.get_all(api, "secrets", "docker-registry-tls", namespace=registry.namespace)
    await tls.patch({"data": _tls_data(*_expired_pems(registry.ip, []))})
    renewed = registry.invoke("provision")
    assert renewed.returncode == 0, renewed.stderr
    same_ca = "new certificate from the same CA, clients keep their ca.crt (the certificate expires"
    assert same_ca in renewed.stdout, renewed.stdout
    [tls] = await kube.get_all(api, "secrets", "docker-registry-tls", namespace=registry.namespace)
    await asyncio.wait_for(_until_served(registry.ip, decoded(tls.raw, "tls.crt")), 120)
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr


def _tls_data(ca: str, cert: str, key: str) -> dict[str, str]:
    pems = {"tls.crt": cert, "tls.key": key, "ca.crt": ca}
    return {k: base64.b64encode(v.encode()).decode() for k, v in pems.items()}


def _expired_pems(ip: str, hosts: list[str]) -> tuple[str, str, str]:
    """A server certificate valid for one day, two days ago; its CA is still valid."""
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    return self_signed_ca_and_server_cert(hosts, [ip], not_before=two_days_ago, days=1)


def _served_certificate(ip: str) -> bytes:
    """The DER certificate the registry serves right now, unverified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((ip, 5000), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


async def _until_served(ip: str, cert_pem: str) -> None:
    """Wait until the registry hands out this certificate (a new pod behind the Service)."""
    wanted = ssl.PEM_cert_to_DER_cert(cert_pem)
    while True:
        try:
            if await asyncio.to_thread(_served_certificate, ip) == wanted:
                return
        except OSError:
            pass  # between pods
        await asyncio.sleep(0.5)


BYO_NAMESPACE = "byo-registry"
BYO_HOSTS = ["registry.byo.test"]


@pytest.fixture
async def byo(registries: RegistryFactory) -> Registry:
    """A registry in existing-secret mode, not yet provisioned."""
    return await registries(
        BYO_NAMESPACE, provision=False, shared=True, tls__mode="existing-secret"
    )


@pytest.fixture
async def byo_secret(api: kr8s.asyncio.Api, byo: Registry) -> AsyncIterator[Secret]:
    """The user's own TLS Secret, made before provisioning as that mode expects.

    Its namespace is the user's too, so no purge deletes it: this fixture does,
    and one an interrupted run left behind as well.
    """
    ns = await fresh_namespace(api, BYO_NAMESPACE)
    try:
        pems = self_signed_ca_and_server_cert(BYO_HOSTS, [byo.ip])
        secret = await Secret(
            {
                "metadata": {"name": "docker-registry-tls", "namespace": BYO_NAMESPACE},
                "type": "kubernetes.io/tls",
                "data": _tls_data(*pems),
            },
            api=api,
        )
        await secret.create()
        yield secret
    finally:
        await namespace_gone(ns)


async def test_expired_existing_secret_is_refused_before_any_change(
    api: kr8s.asyncio.Api, byo: Registry, byo_secret: Secret
) -> None:
    await byo_secret.patch({"data": _tls_data(*_expired_pems(byo.ip, BYO_HOSTS))})
    before = await snapshot(api)
    refused = byo.invoke("provision")
    assert refused.returncode != 0
    assert "tls.secret_name: Secret 'docker-registry-tls': the certificate expires" in (
        refused.stderr
    )
    assert "nothing was changed" in refused.stderr
    assert await snapshot(api) == before


async def test_existing_secret_mode_serves_a_replaced_certificate_and_names_its_expiry(
    byo: Registry, byo_secret: Secret
) -> None:
    result = byo.invoke("provision")
    assert result.returncode == 0, result.stderr
    ca = decoded(byo_secret.raw, "ca.crt")
    assert byo.ca_file.read_text() == ca
    smoke = byo.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr

    # The Secret gets another certificate (one that has expired, as if nobody renewed
    # it): the registry restarts by itself to serve it, and smoke-test names the cause.
    # Kubelet refreshes mounted Secrets within about a minute; serve.sh checks every 30 s.
    expired = _expired_pems(byo.ip, BYO_HOSTS)
    await byo_secret.patch({"data": _tls_data(*expired)})
    await asyncio.wait_for(_until_served(byo.ip, expired[1]), 240)
    smoke = byo.invoke("smoke-test")
    assert smoke.returncode != 0
    assert "the registry's certificate has expired" in smoke.stderr, smoke.stderr
    assert "CA does not match" not in smoke.stderr
