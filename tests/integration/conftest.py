"""Fixtures that run the real registry binary on loopback for client tests."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from registry_provisioner.oci_client import RegistryClient
from scripts.loopback_proxy import caddy_binary
from scripts.loopback_registry import RunningRegistry, registry_binary, run_registry
from tests.support.chunked_client import ChunkedClient


@pytest.fixture(scope="session")
def registry_binary_path() -> Path:
    """Built once per cache key; a cold build takes minutes, so it is not under a test timeout."""
    return registry_binary()


@pytest.fixture(scope="session")
def caddy_binary_path() -> Path:
    """The authenticating proxy, built like the registry; a cold build takes about 5 minutes."""
    return caddy_binary()


@pytest.fixture(scope="session")
def registry_on_loopback(
    tmp_path_factory: pytest.TempPathFactory, registry_binary_path: Path
) -> Iterator[RunningRegistry]:
    """One TLS + htpasswd registry shared by the session; tests use unique repositories."""
    with run_registry(tmp_path_factory.mktemp("registry"), binary=registry_binary_path) as reg:
        yield reg


@pytest.fixture(scope="session")
def plain_registry_on_loopback(
    tmp_path_factory: pytest.TempPathFactory, registry_binary_path: Path
) -> Iterator[RunningRegistry]:
    """A registry without TLS or auth, for the "TLS client meets plain port" case."""
    with run_registry(
        tmp_path_factory.mktemp("plain-registry"),
        tls=False,
        auth=False,
        binary=registry_binary_path,
    ) as reg:
        yield reg


@pytest.fixture
async def registry_client(registry_on_loopback: RunningRegistry) -> AsyncIterator[RegistryClient]:
    """A client with the right URL, credentials and CA."""
    reg = registry_on_loopback
    async with RegistryClient(reg.url, reg.username, reg.password, reg.ca_path) as client:
        yield client


@pytest.fixture
async def chunked_client(registry_on_loopback: RunningRegistry) -> AsyncIterator[ChunkedClient]:
    """The same client, plus the chunked uploads and streamed downloads only tests use."""
    reg = registry_on_loopback
    async with ChunkedClient(reg.url, reg.username, reg.password, reg.ca_path) as client:
        yield client


@pytest.fixture
def unique_repo() -> str:
    """A repository no other test touches."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def skopeo_path() -> str:
    """skopeo, the independent client the tests cross-check against."""
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed")
    return path
