"""The bench's loopback registry really runs the pod's configs: Caddy's TLS and logins, storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_provisioner.config import load_settings
from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from scripts.benchmarks import data_plane, loopback
from scripts.benchmarks.run import bench_set_args


async def test_loopback_registry_demands_the_login_and_round_trips(
    tmp_path: Path, registry_binary_path: Path, caddy_binary_path: Path
) -> None:
    settings = load_settings(None, dict(p.split("=", 1) for p in bench_set_args([])))
    with loopback.run_loopback(settings, tmp_path) as registry:
        async with RegistryClient(registry.url, ca_file=registry.ca_path) as anonymous:
            with pytest.raises(RegistryError) as refused:
                await anonymous.ping()
            assert refused.value.status == 401
        assert registry.admin.username == settings.auth.username
        admin = registry.admin
        endpoint = data_plane.Endpoint(
            registry.url, admin.username, admin.password, registry.ca_path
        )
        image = data_plane.make_image(64 * 1024, layers=2)
        assert await data_plane.push_seconds(endpoint, "bench/t", "v1", image) > 0
        assert await data_plane.pull_seconds(endpoint, "bench/t", "v1", image) > 0
        assert any(registry.registry.storage_dir.rglob("data"))
