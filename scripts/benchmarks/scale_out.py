"""Scale-out figure: 8 pushers and 8 pullers against 1 and then 3 replicas on S3.

Both sides run in one session against the same object store (versitygw) and redis on
the local cluster, the registry re-provisioned from 1 to 3 replicas in between, so
their ratio compares replica counts and nothing else. CPU and memory come from each
replica pod's cgroup (pod_cost.py). On this 2-core machine the clients share the
cores with every replica, so the ratio says what more replicas cost or gain here,
not on a cluster of several nodes.

Run it on a running local cluster with ``invoke bench-scale-out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import kr8s.asyncio

from registry_provisioner import kube, load_settings, render
from registry_provisioner.config import Settings
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, pull_image, push_image
from scripts.local_cluster import object_store
from scripts.local_cluster.addresses import AddressPool
from scripts.local_cluster.paths import KUBECONFIG

from . import data_plane, lifecycle, pod_cost
from .children import BenchError

PUSHERS = PULLERS = 8
REPLICAS = (1, 3)
NAMESPACE = "bench-scale-out"
STORE_NAMESPACE = "bench-scale-out-store"
MIB = 1024 * 1024


@dataclass(frozen=True)
class ReplicaCost:
    pod: str
    cores: float
    peak_working_set_mib: float


@dataclass(frozen=True)
class Side:
    """One replica count: aggregate MiB/s of the pushers and of the pullers, and each pod's cost."""

    replicas: int
    push_mib_s: float
    pull_mib_s: float
    errors: tuple[str, ...]
    cost: tuple[ReplicaCost, ...]


async def _replica_meters(
    api: kr8s.asyncio.Api, settings: Settings
) -> dict[str, pod_cost.PodMeter]:
    selector = render.component_selector(settings, "registry")
    pods = await kube.running_pods(api, settings.namespace, selector)
    if len(pods) != settings.replicas:
        raise BenchError(f"expected {settings.replicas} registry pods, found {len(pods)}")
    return {pod.name: pod_cost.meter_for(api, pod.raw) for pod in pods}


@contextlib.asynccontextmanager
async def _metered(meters: dict[str, pod_cost.PodMeter]) -> AsyncIterator[list[ReplicaCost]]:
    costs: list[ReplicaCost] = []
    async with contextlib.AsyncExitStack() as stack:
        windows = {
            name: await stack.enter_async_context(pod_cost.under_load(meter))
            for name, meter in meters.items()
        }
        yield costs
    costs.extend(
        ReplicaCost(name, window.cores, window.peak_working_set / MIB)
        for name, window in windows.items()
    )


async def push_then_pull(
    endpoint: data_plane.Endpoint, images: list[Image]
) -> tuple[float, float, list[str]]:
    """Aggregate MiB/s of one pusher per image at once, then one puller per image at once."""
    repos = [data_plane.new_repository(f"scale{i}") for i in range(len(images))]
    errors: list[str] = []

    async def push(repo: str, image: Image) -> None:
        try:
            async with endpoint.client() as client:
                await push_image(client, repo, "v1", image)
        except (RegistryError, OSError) as error:
            errors.append(f"push {repo}: {error}")

    async def pull(repo: str, image: Image) -> None:
        try:
            async with endpoint.client() as client:
                if await pull_image(client, repo, "v1") != image:
                    errors.append(f"pull {repo}: different bytes than were pushed")
        except (RegistryError, OSError) as error:
            errors.append(f"pull {repo}: {error}")

    total = sum(image.size for image in images) / MIB
    started = time.perf_counter()
    await asyncio.gather(*(push(r, i) for r, i in zip(repos, images, strict=True)))
    pushed = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(pull(r, i) for r, i in zip(repos, images, strict=True)))
    pulled = time.perf_counter() - started
    return total / pushed, total / pulled, errors


def _target(
    api: kr8s.asyncio.Api, kubeconfig: str, work_dir: Path, overrides: dict[str, str]
) -> lifecycle.Target:
    return lifecycle.Target(
        settings=load_settings(None, overrides),
        set_args=tuple(f"{key}={value}" for key, value in overrides.items()),
        kubeconfig=kubeconfig,
        kubectl=lifecycle.kubectl_command(kubeconfig),
        api=api,
        work_dir=work_dir,
    )


async def _side(target: lifecycle.Target, images: list[Image]) -> Side:
    """Provision (or re-provision) at the target's replica count, then load it."""
    replicas = target.settings.replicas
    ca_dir = target.work_dir / f"ca-{replicas}"
    await lifecycle.child(
        lifecycle.invoke_command(target, "provision", "--ca-dir", str(ca_dir)),
        f"provision with {replicas} replica(s)",
    )
    ca_file = ca_dir / target.settings.registry_host / "ca.crt"
    endpoint = await lifecycle.endpoint_of(target, ca_file)
    meters = await _replica_meters(target.api, target.settings)
    async with _metered(meters) as costs:
        push, pull, errors = await push_then_pull(endpoint, images)
    return Side(replicas, push, pull, tuple(errors), tuple(costs))


async def measure(
    api: kr8s.asyncio.Api, kubeconfig: str, work_dir: Path, ip: str, size_mib: int
) -> list[Side]:
    """Both replica counts in one session; the store and the registry are removed after."""
    base = {
        "namespace": NAMESPACE,
        "service.ip": ip,
        "node_trust.enabled": "false",
        "pull_secret.namespaces": f"[{NAMESPACE}]",
        "discovery.publish_local_registry_hosting": "false",
    }
    images = [
        await asyncio.to_thread(data_plane.make_image, size_mib * MIB // PUSHERS, 2)
        for _ in range(PUSHERS)
    ]
    sides: list[Side] = []
    async with _namespaces(api):
        store = await object_store.start(api, STORE_NAMESPACE)
        await kube.apply_manifests(api, object_store.registry_secrets(NAMESPACE, store.logins))
        overrides = {**base, **store.registry_overrides("/bench")}
        target = _target(api, kubeconfig, work_dir, {**overrides, "replicas": "1"})
        try:
            for replicas in REPLICAS:
                target = _target(
                    api, kubeconfig, work_dir, {**overrides, "replicas": str(replicas)}
                )
                sides.append(await _side(target, images))
        finally:
            await lifecycle.child(
                lifecycle.invoke_command(target, "unprovision", "--purge"), "unprovision"
            )
    return sides


@contextlib.asynccontextmanager
async def _namespaces(api: kr8s.asyncio.Api) -> AsyncIterator[None]:
    """Fresh namespaces for the store and the registry, deleted however the run ends."""
    from kr8s.asyncio.objects import Namespace

    made = []
    for name in (STORE_NAMESPACE, NAMESPACE):
        for old in await kube.get_all(api, "namespaces", name):
            await old.delete()
            await asyncio.wait_for(kube.wait_deleted(old), 180)
        namespace = await Namespace({"metadata": {"name": name}}, api=api)
        await namespace.create()
        made.append(namespace)
    try:
        yield
    finally:
        for namespace in reversed(made):
            await namespace.delete()
            await asyncio.wait_for(kube.wait_deleted(namespace), 180)


def summary(sides: list[Side]) -> dict[str, object]:
    """The figures: each side's rates and costs, and the 3-replica / 1-replica ratios."""
    one, three = sides[0], sides[-1]
    return {
        "sides": [asdict(side) for side in sides],
        "push_ratio_3_vs_1": three.push_mib_s / one.push_mib_s,
        "pull_ratio_3_vs_1": three.pull_mib_s / one.pull_mib_s,
        "errors": sum(len(side.errors) for side in sides),
    }


async def main(size_mib: int) -> dict[str, object]:
    api = await kube.connect(kubeconfig=str(KUBECONFIG))
    await kube.check_reachable(api)
    pool = AddressPool()
    ip = await pool.claim(api)
    try:
        with tempfile.TemporaryDirectory(prefix="registry-bench-scale-") as tmp:
            return summary(await measure(api, str(KUBECONFIG), Path(tmp), ip, size_mib))
    finally:
        pool.release(ip)


async def write(size_mib: int, path: Path) -> None:
    """Measure, print the figures and write them as JSON to `path`."""
    figures = await main(size_mib)
    text = json.dumps(figures, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")
    print(f"wrote {path}")
