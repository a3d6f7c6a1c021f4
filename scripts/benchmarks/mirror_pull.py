"""Pod start through the pull-through mirror: the upstream directly, against the warm mirror.

Two registries on the local cluster: the upstream (a CA of its own, named
upstream.test) and the bench's registry with a mirror of it. One runnable image
(pause, then random layers up to `size`) is pushed to the upstream. Each run then
times, from creating a pod until it is Running, with the image gone from the node's
containerd before each pod:
- direct: `<upstream ip>:5000/...` with the upstream's pull Secret;
- mirror: `upstream.test:5000/...` and nothing else, through the mirror, which an
  untimed pull has warmed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import kr8s.asyncio
import yaml
from kr8s.asyncio.objects import ConfigMap, Namespace, Pod, Secret

from registry_provisioner import kube
from registry_provisioner.config import Settings, load_settings
from registry_provisioner.credentials import existing_credentials, tls_secret_value
from registry_provisioner.images import Image, push_image
from registry_provisioner.oci_client import RegistryClient
from scripts.local_cluster import images, node_config
from scripts.local_cluster.addresses import AddressPool
from scripts.local_cluster.paths import LOCAL_OVERLAY, STATE_DIR

from . import cluster_pull, lifecycle
from .children import BenchError
from .report import MIB, MIRROR, SPECS, Figure, Results, markdown, write

UPSTREAM_NAMESPACE = "bench-mirror-upstream"
NAMESPACE = "bench-mirror"
UPSTREAM_NAME = "upstream.test"
MIRROR_PORT = 5002
LAYERS = 8
REPOSITORY = "library/bench"
NODE = node_config.NodeLayout(STATE_DIR / "node")


@dataclass(frozen=True)
class Registries:
    """The two installs, as `invoke --local` targets."""

    upstream: lifecycle.Target
    mirrored: lifecycle.Target


def _target(
    api: kr8s.asyncio.Api, kubeconfig: str, work: Path, sets: dict[str, str]
) -> lifecycle.Target:
    """An install's settings as `--local --set ...` makes them."""
    local = yaml.safe_load(LOCAL_OVERLAY.read_text(encoding="utf-8")) or {}
    set_args = tuple(f"{key}={value}" for key, value in sets.items())
    return lifecycle.Target(
        settings=load_settings(overrides={**local, **sets}),
        set_args=set_args,
        kubeconfig=kubeconfig,
        kubectl=lifecycle.kubectl_command(kubeconfig),
        api=api,
        work_dir=work,
    )


def _isolated(namespace: str, ip: str) -> dict[str, str]:
    """Settings that share nothing with other installs (as the bench's own)."""
    return {
        "namespace": namespace,
        "service.ip": ip,
        "pull_secret.namespaces": f"[{namespace}]",
        "discovery.publish_local_registry_hosting": "false",
    }


def mirror_settings(upstream: Settings) -> str:
    """`mirrors` for the bench's registry: the upstream by name, its login, CA and IP."""
    mirror = {
        "upstream": f"https://{UPSTREAM_NAME}:{upstream.service.port}",
        "port": MIRROR_PORT,
        "login_secret": "upstream-login",
        "ca_config_map": "upstream-ca",
        "upstream_ip": upstream.service.ip,
    }
    return json.dumps([mirror])


async def _prepare_namespace(api: kr8s.asyncio.Api, upstream: Settings) -> None:
    """The mirror's namespace with the upstream's pull login and CA, before provision."""
    credentials = await existing_credentials(api, upstream)
    ca = await tls_secret_value(api, upstream, "ca.crt")
    if credentials is None or not ca:
        raise BenchError("the upstream registry has no login or CA after provision")
    meta = {"namespace": NAMESPACE}
    login = {"username": credentials.pull_username, "password": credentials.pull_password}
    await (await Namespace({"metadata": {"name": NAMESPACE}}, api=api)).create()
    await (
        await Secret({"metadata": {**meta, "name": "upstream-login"}, "stringData": login}, api=api)
    ).create()
    await (
        await ConfigMap(
            {"metadata": {**meta, "name": "upstream-ca"}, "data": {"ca.crt": ca}}, api=api
        )
    ).create()


async def _clean(api: kr8s.asyncio.Api, registries: Registries) -> None:
    """Purge both installs and the namespace the bench made for the mirror (a purge
    leaves a namespace that existed before it)."""
    mirrored = registries.mirrored
    if await lifecycle.leftovers(mirrored):
        purge = lifecycle.invoke_command(mirrored, "unprovision", "--purge")
        await lifecycle.child(purge, "unprovision --purge")
    namespace = await Namespace({"metadata": {"name": NAMESPACE}}, api=api)
    if await namespace.exists():
        await namespace.delete()
        await asyncio.wait_for(kube.wait_deleted(namespace), lifecycle.GONE_TIMEOUT)
    for target in (mirrored, registries.upstream):
        await lifecycle.ensure_clean(target)


async def pod_start_seconds(
    api: kr8s.asyncio.Api, namespace: str, image: str, pull_secret: str | None
) -> float:
    """From creating a pod that runs `image` until it is Running; the pod is then deleted."""
    manifest = cluster_pull.pod_manifest(
        f"bench-mirror-{time.time_ns() % 10**9}", namespace, image, pull_secret or ""
    )
    if pull_secret is None:
        del manifest["spec"]["imagePullSecrets"]
    pod = await Pod(manifest, api=api)
    started = time.monotonic()
    await pod.create()
    try:
        while True:
            await pod.refresh()
            if pod.raw.get("status", {}).get("phase") == "Running":
                return time.monotonic() - started
            failures = cluster_pull.pull_failures([pod.raw])
            if failures:
                raise BenchError("mirror pull failed:\n" + "\n".join(failures))
            if time.monotonic() - started > cluster_pull.TIMEOUT:
                raise BenchError(f"pod {pod.name} not Running after {cluster_pull.TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await pod.delete(grace_period=0)
        await asyncio.wait_for(kube.wait_deleted(pod), 120)


async def _forget(reference: str, image: Image) -> None:
    await asyncio.to_thread(images.remove_image, NODE.containerd_socket, reference, image)


async def measure(
    api: kr8s.asyncio.Api, registries: Registries, image: Image, results: Results
) -> None:
    """One run: the direct pull, then the warm mirror's, each onto a node without the image."""
    upstream = registries.upstream.settings
    direct = f"{upstream.registry_host}/{REPOSITORY}:1"
    mirrored = f"{UPSTREAM_NAME}:{upstream.service.port}/{REPOSITORY}:1"
    seconds = await pod_start_seconds(api, upstream.namespace, direct, upstream.pull_secret.name)
    await _forget(direct, image)
    results.add("mirror_pull_direct", seconds)
    await pod_start_seconds(api, NAMESPACE, mirrored, None)  # warms the mirror, untimed
    await _forget(mirrored, image)
    warm = await pod_start_seconds(api, NAMESPACE, mirrored, None)
    await _forget(mirrored, image)
    results.add("mirror_pull_warm", warm)
    results.add_ratio("mirror_vs_direct", warm, seconds)
    print(f"[bench] direct {seconds:.1f} s, warm mirror {warm:.1f} s", flush=True)


async def mirror_bench_command(
    kubeconfig: str, *, repeat: int, size_mib: int, out_dir: Path
) -> None:
    """Provision the upstream and the mirror, run `repeat` times, write bench/mirror.*."""
    if repeat < 1 or size_mib < 1:
        raise BenchError("--repeat and --size-mib must be at least 1")
    api = await kube.connect(kubeconfig=kubeconfig)
    await kube.check_reachable(api)
    results = Results(
        parameters={"repeat": repeat, "size_mib": size_mib, "layers": LAYERS},
        environment={"started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        figures={spec.key: Figure(spec) for spec in SPECS if spec.section == MIRROR},
    )
    pause = await asyncio.to_thread(cluster_pull.pause_binary)
    layer_bytes = size_mib * MIB // (LAYERS - 1)
    image = await asyncio.to_thread(cluster_pull.runnable_image, pause, LAYERS, layer_bytes)
    addresses = AddressPool()
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        work = Path(tmp)
        up_ip, ip = await addresses.claim(api), await addresses.claim(api)
        upstream_sets = {
            **_isolated(UPSTREAM_NAMESPACE, up_ip),
            "tls.mode": "self-signed",
            "tls.extra_dns_names": f"[{UPSTREAM_NAME}]",
        }
        upstream = _target(api, kubeconfig, work, upstream_sets)
        mirror_sets = {**_isolated(NAMESPACE, ip), "mirrors": mirror_settings(upstream.settings)}
        registries = Registries(upstream, _target(api, kubeconfig, work, mirror_sets))
        try:
            await _clean(api, registries)
            await _provision(api, registries, image, work)
            for index in range(repeat):
                print(f"[bench] mirror run {index + 1}/{repeat}", flush=True)
                await measure(api, registries, image, results)
        finally:
            try:
                await _clean(api, registries)
            finally:
                addresses.release(up_ip)
                addresses.release(ip)
    json_path, md_path = write(results, out_dir, stem="mirror-results")
    print(markdown(results))
    print(f"wrote {json_path} and {md_path}")


async def _provision(
    api: kr8s.asyncio.Api, registries: Registries, image: Image, work: Path
) -> None:
    """The upstream with the image in it, then the bench's registry with its mirror."""
    upstream = registries.upstream
    ca_dir = work / "ca"
    await lifecycle.child(
        lifecycle.invoke_command(upstream, "provision", "--ca-dir", str(ca_dir)), "provision"
    )
    credentials = await existing_credentials(api, upstream.settings)
    assert credentials is not None
    ca_file = ca_dir / upstream.settings.registry_host / "ca.crt"
    async with RegistryClient(
        upstream.settings.registry_url, credentials.username, credentials.password, ca_file
    ) as client:
        await push_image(client, REPOSITORY, "1", image)
    await _prepare_namespace(api, upstream.settings)
    mirrored = registries.mirrored
    await lifecycle.child(
        lifecycle.invoke_command(mirrored, "provision", "--ca-dir", str(ca_dir)),
        "provision with a mirror",
    )
