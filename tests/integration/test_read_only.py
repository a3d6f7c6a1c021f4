"""The read-only override `invoke gc` puts on the Deployment, on the real registry binary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry_provisioner.errors import RegistryError
from registry_provisioner.images import push_image, random_image
from registry_provisioner.maintenance import READ_ONLY_ENV, READ_ONLY_VALUE
from registry_provisioner.oci_client import RegistryClient
from scripts.loopback_registry import run_registry


@pytest.fixture
async def read_only_client(
    tmp_path: Path, registry_binary_path: Path
) -> AsyncIterator[RegistryClient]:
    """A client of a registry started with exactly the variable gc sets."""
    overrides = {READ_ONLY_ENV: READ_ONLY_VALUE}
    with run_registry(tmp_path, binary=registry_binary_path, overrides=overrides) as reg:
        async with RegistryClient(reg.url, reg.username, reg.password, reg.ca_path) as client:
            yield client


async def test_writable_registry_accepts_pushes_and_the_probe_stores_nothing(
    registry_client: RegistryClient, unique_repo: str
) -> None:
    assert await registry_client.accepts_pushes(unique_repo)
    assert unique_repo not in await registry_client.catalog()


async def test_read_only_registry_refuses_pushes_with_a_hint(
    read_only_client: RegistryClient, unique_repo: str
) -> None:
    await read_only_client.ping()
    assert not await read_only_client.accepts_pushes(unique_repo)
    with pytest.raises(RegistryError) as refused:
        await push_image(read_only_client, unique_repo, "v1", random_image([1024]))
    assert refused.value.status == 405
    assert "read-only" in refused.value.hint
