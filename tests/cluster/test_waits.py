"""The readiness waits against the real API server: watch events, and re-reads when it is quiet."""

from __future__ import annotations

import asyncio

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap

from registry_provisioner import kube

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


@pytest.fixture
async def config_map(api: kr8s.asyncio.Api, namespace: str) -> ConfigMap:
    found = await ConfigMap(
        {"metadata": {"name": "watched", "namespace": namespace}, "data": {"step": "1"}},
        api=api,
    )
    await found.create()
    return found


async def test_a_change_arrives_by_watch(api: kr8s.asyncio.Api, config_map: ConfigMap) -> None:
    waiting = asyncio.create_task(
        kube.wait_until(config_map, kube.field_is("data.step", "2"), window=60)
    )
    other_view = await ConfigMap.get(config_map.name, namespace=config_map.namespace, api=api)
    await other_view.patch({"data": {"step": "2"}})
    await asyncio.wait_for(waiting, 30)
    assert config_map.raw["data"]["step"] == "2"


async def test_a_quiet_watch_is_read_again_after_its_window(config_map: ConfigMap) -> None:
    """Nothing changes, so no event comes: only the re-read after each window checks again."""
    checks: list[str] = []

    def third_check(raw: dict) -> bool:
        checks.append(raw["metadata"]["resourceVersion"])
        return len(checks) == 3

    await asyncio.wait_for(kube.wait_until(config_map, third_check, window=0.5), 30)
    assert len(set(checks)) == 1  # the same object, read three times


async def test_a_deletion_ends_the_wait(config_map: ConfigMap) -> None:
    waiting = asyncio.create_task(kube.wait_deleted(config_map, window=60))
    await config_map.delete()
    await asyncio.wait_for(waiting, 30)
    assert not await config_map.exists()
