"""CPU and memory of the registry pod, read from its cgroup on the node (this host).

The local cluster's kubelet uses the cgroupfs driver on cgroup v1, so a pod's
cgroup is kubepods[/<qos>]/pod<uid> in the cpuacct and memory hierarchies. The
kubelet's summary API is the fallback: it works on any node, but cadvisor
refreshes it only every ten seconds or so, too coarse for a peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import kr8s.asyncio

from registry_provisioner import kube, render
from registry_provisioner.config import Settings

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_INTERVAL = 0.2


@dataclass(frozen=True)
class Usage:
    """A reading: cumulative CPU seconds, and the working set the kubelet would report."""

    cpu_seconds: float
    working_set_bytes: int


class PodMeter:
    """Reads one pod's usage; `peak_bytes` is the cgroup's own high-water mark, if known."""

    async def read(self) -> Usage:
        raise NotImplementedError

    def peak_bytes(self) -> int | None:
        return None

    source = "unknown"


@dataclass
class CgroupMeter(PodMeter):
    cpuacct: Path
    memory: Path
    source: str = "cgroup v1 files"

    async def read(self) -> Usage:
        cpu_ns = int((self.cpuacct / "cpuacct.usage").read_text())
        usage = int((self.memory / "memory.usage_in_bytes").read_text())
        return Usage(cpu_ns / 1e9, max(0, usage - _inactive_file(self.memory)))

    def peak_bytes(self) -> int | None:
        return int((self.memory / "memory.max_usage_in_bytes").read_text())


def _inactive_file(memory_dir: Path) -> int:
    """As the kubelet computes the working set: usage minus inactive page cache."""
    for line in (memory_dir / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "total_inactive_file":
            return int(value)
    return 0


@dataclass
class SummaryMeter(PodMeter):
    api: kr8s.asyncio.Api
    node: str
    namespace: str
    pod: str
    source: str = "kubelet summary API"

    async def read(self) -> Usage:
        async with self.api.call_api(
            "GET", version="v1", url=f"nodes/{self.node}/proxy/stats/summary"
        ) as response:
            summary = response.json()
        for pod in summary.get("pods", []):
            ref = pod.get("podRef", {})
            if (ref.get("namespace"), ref.get("name")) == (self.namespace, self.pod):
                cpu = pod.get("cpu", {}).get("usageCoreNanoSeconds", 0)
                return Usage(cpu / 1e9, pod.get("memory", {}).get("workingSetBytes", 0))
        raise LookupError(f"pod {self.namespace}/{self.pod} is not in the kubelet summary")


def cgroup_dirs(uid: str, qos_class: str, root: Path = CGROUP_ROOT) -> tuple[Path, Path]:
    """The pod's cpuacct and memory cgroup directories under the cgroupfs driver."""
    parts = ["kubepods"]
    if qos_class != "Guaranteed":
        parts.append(qos_class.lower())
    parts.append(f"pod{uid}")
    return root.joinpath("cpuacct", *parts), root.joinpath("memory", *parts)


async def registry_pod_meter(api: kr8s.asyncio.Api, settings: Settings) -> PodMeter:
    """A meter for the running registry pod (not the node-trust pods)."""
    selector = render.component_selector(settings, "registry")
    pods = await kube.running_pods(api, settings.namespace, selector)
    if len(pods) != 1:
        raise LookupError(f"expected one running registry pod, found {len(pods)}")
    return meter_for(api, pods[0].raw)


def meter_for(api: kr8s.asyncio.Api, raw: dict) -> PodMeter:
    """A meter for one pod: its cgroup files when this host is its node, else the summary API."""
    cpuacct, memory = cgroup_dirs(raw["metadata"]["uid"], raw["status"].get("qosClass", ""))
    if (cpuacct / "cpuacct.usage").exists() and (memory / "memory.usage_in_bytes").exists():
        return CgroupMeter(cpuacct, memory)
    meta = raw["metadata"]
    return SummaryMeter(api, raw["spec"]["nodeName"], meta["namespace"], meta["name"])


async def idle_usage(meter: PodMeter, seconds: float) -> tuple[float, int]:
    """Cores used over a quiet window, and the working set at its end."""
    before, started = await meter.read(), time.monotonic()
    await asyncio.sleep(seconds)
    after = await meter.read()
    return (after.cpu_seconds - before.cpu_seconds) / (time.monotonic() - started), (
        after.working_set_bytes
    )


@dataclass
class LoadWindow:
    """CPU over a loaded window and the highest working set sampled during it."""

    cores: float = 0.0
    peak_working_set: int = 0
    samples: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def under_load(meter: PodMeter) -> AsyncIterator[LoadWindow]:
    """Sample the working set in the background while the block runs."""
    window = LoadWindow()
    before, started = await meter.read(), time.monotonic()

    async def sample() -> None:
        while True:
            window.samples.append((await meter.read()).working_set_bytes)
            await asyncio.sleep(SAMPLE_INTERVAL)

    sampler = asyncio.create_task(sample())
    try:
        yield window
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    after = await meter.read()
    window.samples.append(after.working_set_bytes)
    window.cores = (after.cpu_seconds - before.cpu_seconds) / (time.monotonic() - started)
    window.peak_working_set = max(window.samples)
