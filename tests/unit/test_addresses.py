"""The address pool the cluster tests and the benchmarks share, without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.local_cluster import addresses
from scripts.local_cluster.addresses import OVERLAY_IP, AddressPool, pool_addresses
from scripts.local_cluster.network import LOADBALANCER_POOL


def _service(ip: str, *, annotated: bool) -> SimpleNamespace:
    """A Service holding `ip`: asked for by annotation, or given by MetalLB."""
    metadata = {"annotations": {"metallb.io/loadBalancerIPs": ip}} if annotated else {}
    status = {} if annotated else {"loadBalancer": {"ingress": [{"ip": ip}]}}
    return SimpleNamespace(raw={"metadata": metadata, "spec": {}, "status": status})


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[SimpleNamespace]:
    """The cluster's Services, which a test fills; claims go to a directory of its own."""
    found: list[SimpleNamespace] = []

    async def get_all(api, kind, *names, **options):
        assert kind == "services"
        return found

    monkeypatch.setattr(addresses.kube, "get_all", get_all)
    monkeypatch.setattr(addresses, "ensure_routed_into_cluster", lambda *ips: None)
    monkeypatch.setattr(addresses, "CLAIMS_DIR", tmp_path / "claims")
    return found


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_the_pool_is_metallbs_less_the_overlays_address() -> None:
    pool = pool_addresses()
    assert OVERLAY_IP not in pool
    assert f"{pool[0]}-{pool[-1]}" == LOADBALANCER_POOL
    assert len(pool) == len(set(pool)) == 50  # .10 to .60, less one


async def test_claims_skip_service_addresses_and_each_other(services: list) -> None:
    first, second, third, fourth = pool_addresses()[:4]
    services += [_service(first, annotated=True), _service(third, annotated=False)]
    pool = AddressPool()
    assert await pool.claim(None) == second
    assert await pool.claim(None) == fourth  # not second again, not third (MetalLB gave it)
    assert (addresses.CLAIMS_DIR / second).read_text() == str(os.getpid())


async def test_a_live_claim_is_respected_and_a_dead_one_taken_over(services: list) -> None:
    first, second = pool_addresses()[:2]
    addresses.CLAIMS_DIR.mkdir(parents=True)
    (addresses.CLAIMS_DIR / first).write_text(str(os.getppid()))  # another live process
    assert await AddressPool().claim(None) == second
    (addresses.CLAIMS_DIR / first).write_text(str(_dead_pid()))
    assert await AddressPool().claim(None) == first


async def test_a_released_address_is_handed_out_again(services: list) -> None:
    pool = AddressPool()
    ip = await pool.claim(None)
    pool.release(ip)
    assert not (addresses.CLAIMS_DIR / ip).exists()
    assert await AddressPool().claim(None) == ip


async def test_a_full_pool_says_so(services: list) -> None:
    services += [_service(ip, annotated=True) for ip in pool_addresses()]
    with pytest.raises(RuntimeError, match="is in use"):
        await AddressPool().claim(None)
