"""LoadBalancer IPs for the tests and the benchmarks, from one pool.

The local config overlay keeps one address (the demo's and `--local`'s own); every
other address of MetalLB's pool is handed out on demand, never one that a Service
on the cluster already claims. A claim is also a file in the cluster's state directory
that names the claiming process, so test runs and benchmarks side by side cannot hand
out one address twice before its Service exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os

import kr8s
import kr8s.asyncio

from registry_provisioner import kube
from registry_provisioner.preflight import service_ips

from .network import LOADBALANCER_POOL, ensure_routed_into_cluster
from .paths import STATE_DIR

CLAIMS_DIR = STATE_DIR / "address-claims"

# scripts/local_cluster/registry-config.yaml's service.ip: the demo and `--local` use it.
OVERLAY_IP = "10.213.1.50"


def pool_addresses() -> list[str]:
    """MetalLB's pool in order, less the overlay's address."""
    first, last = (ipaddress.ip_address(part) for part in LOADBALANCER_POOL.split("-"))
    every = (str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1))
    return [ip for ip in every if ip != OVERLAY_IP]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserve(ip: str) -> bool:
    """Create the claim file for `ip`, taking over one whose process is gone."""
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    path = CLAIMS_DIR / ip
    for _ in range(2):
        try:
            with path.open("x") as claim:
                claim.write(str(os.getpid()))
            return True
        except FileExistsError:
            owner = path.read_text().strip()
            if owner.isdigit() and _alive(int(owner)):
                return False
            path.unlink(missing_ok=True)  # its claimer died without releasing it
    return False


class AddressPool:
    """Hands out addresses that no Service and no live claim holds."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def claim(self, api: kr8s.asyncio.Api) -> str:
        services = await kube.get_all(api, "services", namespace=kr8s.ALL)
        in_use = set().union(*(service_ips(s.raw) for s in services))
        for ip in pool_addresses():
            if ip not in in_use and ip not in self._held and _reserve(ip):
                ensure_routed_into_cluster(ip)
                self._held.add(ip)
                return ip
        raise RuntimeError(f"every address of {LOADBALANCER_POOL} is in use")

    def release(self, ip: str) -> None:
        if ip in self._held:
            self._held.discard(ip)
            with contextlib.suppress(FileNotFoundError):
                (CLAIMS_DIR / ip).unlink()
