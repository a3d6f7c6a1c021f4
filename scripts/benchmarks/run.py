"""The bench from start to end: what runs in which order, and which figure it feeds.

Each run times the kubectl floor and our tasks back to back (alternating which
goes first, so drift in the machine's load does not always favour one side),
and, while our registry is up, moves the same image through it, through the
loopback registry and onto the raw disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry_provisioner import kube
from registry_provisioner.config import Settings
from registry_provisioner.images import Image, random_image
from scripts.byte_compile import byte_compile
from scripts.docker_daemon import DockerDaemon
from scripts.local_cluster.addresses import AddressPool
from scripts.loopback_proxy import run_proxied_registry

from . import (
    auth_rate,
    cluster_pull,
    data_plane,
    docker_client,
    helm_peer,
    lifecycle,
    pod_cost,
    skopeo,
)
from .children import BenchError
from .data_plane import Endpoint
from .loopback import cluster_config, run_loopback
from .report import MIB, Results, markdown, write

NAMESPACE = "bench-registry"
CLIENTS = 8
AUTH_CLIENTS = 16  # issue 14's figure: 16 concurrent clients
AUTH_SECONDS, AUTH_SLICES = 8.0, 4  # per kind of request, interleaved
IDLE_SECONDS = 5.0
HELM_FIGURES = ("helm_ready", "provision_vs_helm", "helm_uninstall")
SKOPEO_FIGURES = (
    *(f"skopeo_{verb}_{side}" for verb in ("push", "pull") for side in ("cluster", "loopback")),
    "skopeo_push_vs_loopback",
    "skopeo_pull_vs_loopback",
    "skopeo_server_cpu_cluster",
    "skopeo_server_cpu_loopback",
    "skopeo_server_cpu_vs_loopback",
    "skopeo_client_cpu_vs_loopback",
)
DOCKER_FIGURES = (
    *(f"docker_{verb}_{side}" for verb in ("push", "pull") for side in ("cluster", "loopback")),
    "docker_push_vs_loopback",
    "docker_pull_vs_loopback",
)
FIRST_PUSH_LAYERS = [64 * 1024]  # the smoke test's size: readiness, not throughput


def bench_set_args(extra: Sequence[str]) -> tuple[str, ...]:
    """The bench's settings as --set pairs; `extra` pairs override them.

    The pull Secret stays in the bench's namespace and the KEP-1755 ConfigMap is
    off: both default to names shared by every installation (default's
    docker-registry-pull, kube-public's local-registry-hosting), which a purge
    would delete from under whoever else uses the cluster. No service.ip unless
    `extra` gives one: the bench then claims an address of the pool when it starts.
    """
    given = dict(pair.partition("=")[::2] for pair in extra)
    namespace = given.get("namespace", NAMESPACE)
    if not namespace.startswith("bench-"):
        raise BenchError(f"namespace {namespace!r}: the bench purges it, so it must start bench-")
    defaults = {
        "namespace": namespace,
        "pull_secret.namespaces": f"[{namespace}]",
        "discovery.publish_local_registry_hosting": "false",
    }
    return tuple(f"{key}={value}" for key, value in {**defaults, **given}.items())


def given_address(set_args: Sequence[str]) -> str | None:
    """The service.ip that --set gave, if any: then the bench claims none."""
    given = dict(pair.partition("=")[::2] for pair in set_args)
    return given.get("service.ip")


def at_address(target: lifecycle.Target, ip: str) -> lifecycle.Target:
    """The target with its registry at `ip`, in its settings and in its --set pairs alike."""
    service = dataclasses.replace(target.settings.service, ip=ip)
    return dataclasses.replace(
        target,
        settings=dataclasses.replace(target.settings, service=service),
        set_args=(*target.set_args, f"service.ip={ip}"),
    )


@dataclass(frozen=True)
class Loopback:
    """The pod's pair on loopback, its twin without authentication, and what the run uses."""

    endpoint: Endpoint
    auth: auth_rate.Setup  # with `twin` set: the authentication ratio's two sides
    helm: Path | None  # the helm binary, None when the peer is not measured
    skopeo: bool
    docker: DockerDaemon | None  # the private dockerd, None when docker is not measured
    pull_images: list[Image]  # one per pod of the cluster pull


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _mib_per_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


async def floor_path(target: lifecycle.Target, results: Results) -> dict[str, float]:
    """kubectl alone: apply, wait, first push; then kubectl delete --wait."""
    ready, manifests, credentials = await lifecycle.floor_to_first_push(
        target, random_image(FIRST_PUSH_LAYERS)
    )
    results.add("floor_ready", ready.seconds)
    results.add_phases("kubectl floor", ready.phases)
    log(f"kubectl floor ready and pushed in {ready.seconds:.1f} s")
    secrets = lifecycle.secrets_of(credentials)
    removal = await lifecycle.kubectl_delete_until_gone(target, manifests, secrets)
    manifests.unlink()
    results.add("kubectl_delete", removal)
    log(f"kubectl delete --wait: everything gone in {removal:.1f} s")
    await lifecycle.wait_volumes_released(target)
    return {"ready": ready.seconds, "removal": removal}


async def helm_path(target: lifecycle.Target, results: Results, helm: Path) -> dict[str, float]:
    """The helm user's install to the same first push, then helm uninstall until gone."""
    user = helm_peer.prepare(target, helm)
    ready = await helm_peer.install_to_first_push(user, random_image(FIRST_PUSH_LAYERS))
    results.add("helm_ready", ready.seconds)
    results.add_phases("helm peer", ready.phases)
    log(f"helm install ready and pushed in {ready.seconds:.1f} s")
    removal = await helm_peer.uninstall_until_gone(user)
    results.add("helm_uninstall", removal)
    log(f"helm uninstall --wait and cleanup: everything gone in {removal:.1f} s")
    await lifecycle.wait_volumes_released(target, namespace=helm_peer.NAMESPACE)
    return {"ready": ready.seconds, "removal": removal}


async def ours_path(
    target: lifecycle.Target,
    results: Results,
    loopback: Loopback,
    size_bytes: int,
    cluster_first: bool,
) -> dict[str, float]:
    """invoke provision, a no-op re-run, a dry run, the data plane, then unprovision."""
    ready = await lifecycle.provision_to_first_push(target, random_image(FIRST_PUSH_LAYERS))
    assert ready.provision_run is not None
    results.add("provision_ready", ready.seconds)
    results.add_phases("invoke provision", ready.phases)
    results.add("provision_peak_rss", ready.provision_run.max_rss_bytes / MIB)
    results.add("provision_cpu", ready.provision_run.cpu_seconds)
    log(f"invoke provision ready and pushed in {ready.seconds:.1f} s")
    noop = await lifecycle.reprovision(target)
    results.add("noop_provision", noop.seconds)
    dry = await lifecycle.reprovision(target, "--dry-run")
    results.add("dry_run", dry.seconds)
    log(f"no-op re-provision {noop.seconds:.2f} s, dry run {dry.seconds:.2f} s")
    await measure_data_plane(target, results, ready.endpoint, loopback, size_bytes, cluster_first)
    removal = await lifecycle.unprovision_until_gone(target)
    results.add("unprovision", removal)
    log(f"invoke unprovision --purge: everything gone in {removal:.1f} s")
    await lifecycle.wait_volumes_released(target)
    return {"ready": ready.seconds, "removal": removal}


async def measure_data_plane(
    target: lifecycle.Target,
    results: Results,
    cluster: Endpoint,
    loop: Loopback,
    size_bytes: int,
    cluster_first: bool,
) -> None:
    """Idle cost, then the same image through the cluster, the loopback pair and the disk,
    with our client and with skopeo; the authenticated request rate; the cluster pull."""
    loopback = loop.endpoint
    meter = await pod_cost.registry_pod_meter(target.api, target.settings)
    results.environment["pod_meter"] = meter.source
    idle_cores, idle_memory = await pod_cost.idle_usage(meter, IDLE_SECONDS)
    results.add("pod_idle_cpu", idle_cores * 1000)
    results.add("pod_idle_memory", idle_memory / MIB)
    image: Image = await asyncio.to_thread(data_plane.make_image, size_bytes)
    images = [
        await asyncio.to_thread(data_plane.make_image, size_bytes // CLIENTS, 2)
        for _ in range(CLIENTS)
    ]
    each = images[0].size / MIB
    log(f"images ready: {image.size / MIB:.0f} MiB, and {CLIENTS} of {each:.0f} MiB")

    timings: dict[str, float] = {}

    async def through_cluster() -> None:
        repo = data_plane.new_repository("cluster")
        async with pod_cost.under_load(meter) as load:
            timings["push_cluster"] = await data_plane.push_seconds(cluster, repo, "v1", image)
            timings["pull_cluster"] = await data_plane.pull_seconds(cluster, repo, "v1", image)
            concurrent = await data_plane.concurrent_pushes(cluster, images)
        results.add("pod_load_cpu", load.cores * 1000)
        results.add("pod_load_memory", load.peak_working_set / MIB)
        peak = meter.peak_bytes()
        if peak is not None:
            results.add("pod_memory_peak", peak / MIB)
        results.add("concurrent_push", _mib_per_s(concurrent.pushed_bytes, concurrent.seconds))
        results.add("concurrent_errors", len(concurrent.errors))
        results.notes.extend(f"concurrent push error: {error}" for error in concurrent.errors[:5])

    async def through_loopback() -> None:
        repo = data_plane.new_repository("loopback")
        timings["push_loopback"] = await data_plane.push_seconds(loopback, repo, "v1", image)
        timings["pull_loopback"] = await data_plane.pull_seconds(loopback, repo, "v1", image)

    sides: list[Callable[[], Awaitable[None]]] = [through_cluster, through_loopback]
    for side in sides if cluster_first else reversed(sides):
        await side()
    if loop.skopeo:
        await measure_skopeo(target, results, meter, (cluster, loop), image, cluster_first, timings)
    if loop.docker is not None:
        archive = docker_client.write_archive(image, target.work_dir / "docker-archive.tar")
        pairs = [("cluster", cluster), ("loopback", loopback)]
        for side, endpoint in pairs if cluster_first else reversed(pairs):
            push, pull = await asyncio.to_thread(
                docker_client.push_pull_seconds,
                loop.docker,
                endpoint,
                archive,
                data_plane.new_repository(f"docker-{side}"),
            )
            timings[f"docker_push_{side}"], timings[f"docker_pull_{side}"] = push, pull
        archive.unlink()
    disk_write, disk_read = await asyncio.to_thread(
        data_plane.disk_write_read, target.work_dir / "disk", image
    )
    rates = {key: _mib_per_s(image.size, seconds) for key, seconds in timings.items()}
    rates["disk_write"] = _mib_per_s(image.size, disk_write)
    rates["disk_read"] = _mib_per_s(image.size, disk_read)
    for key, rate in rates.items():
        results.add(key, rate)
    results.add_ratio("push_vs_loopback", rates["push_cluster"], rates["push_loopback"])
    results.add_ratio("pull_vs_loopback", rates["pull_cluster"], rates["pull_loopback"])
    for client, measured in (("skopeo", loop.skopeo), ("docker", loop.docker is not None)):
        if measured:
            _client_ratios(results, rates, client)
    results.add_ratio("push_vs_disk", rates["push_cluster"], rates["disk_write"])
    results.add_ratio("pull_vs_disk", rates["pull_cluster"], rates["disk_read"])
    results.add_ratio(
        "concurrent_vs_single",
        results.figures["concurrent_push"].samples[-1],
        rates["push_cluster"],
    )
    log(
        "MiB/s: push {push_cluster:.0f} (loopback {push_loopback:.0f}, disk {disk_write:.0f}), "
        "pull {pull_cluster:.0f} (loopback {pull_loopback:.0f}, disk {disk_read:.0f})".format(
            **rates
        )
    )
    await measure_auth_rates(results, cluster, loop.auth)
    seconds, retried = await cluster_pull.measure(
        target.api, target.settings, cluster, loop.pull_images
    )
    results.add("cluster_pull", seconds)
    log(f"cluster pull: {len(loop.pull_images)} pods Running after {seconds:.1f} s")
    if retried:
        results.notes.append(
            f"cluster pull, the run of {seconds:.2f} s: kubelet pulled {len(retried)} of "
            f"{len(loop.pull_images)} images again after a 401: it had not synced the pull "
            "Secret within its one-second wait and tried without it first; that run's time "
            "includes kubelet's back-off."
        )


async def measure_skopeo(
    target: lifecycle.Target,
    results: Results,
    meter: pod_cost.PodMeter,
    endpoints: tuple[Endpoint, Loopback],
    image: Image,
    cluster_first: bool,
    timings: dict[str, float],
) -> None:
    """skopeo's push and pull on both sides, and the CPU each side's servers and skopeo
    spent per GiB: on two cores, a path that costs more CPU per byte moves fewer bytes."""
    cluster, loop = endpoints

    async def pod_cpu() -> float:
        return (await meter.read()).cpu_seconds

    async def loopback_cpu() -> float:
        return sum(auth_rate.process_cpu_seconds(pid) for pid in loop.auth.pids)

    layout = skopeo.write_layout(image, target.work_dir / "skopeo-layout")
    sides = [("cluster", cluster, pod_cpu), ("loopback", loop.endpoint, loopback_cpu)]
    gib = 2 * image.size / (1024 * MIB)  # pushed, then pulled
    per_gib: dict[str, tuple[float, float]] = {}
    for side, endpoint, server_cpu in sides if cluster_first else reversed(sides):
        before = await server_cpu()
        copies = await asyncio.to_thread(
            skopeo.push_pull,
            endpoint,
            layout,
            data_plane.new_repository(f"skopeo-{side}"),
            target.work_dir / f"skopeo-{side}",
        )
        server = await server_cpu() - before
        timings[f"skopeo_push_{side}"] = copies.push_seconds
        timings[f"skopeo_pull_{side}"] = copies.pull_seconds
        per_gib[side] = (server / gib, copies.cpu_seconds / gib)
        results.add(f"skopeo_server_cpu_{side}", server / gib)
    shutil.rmtree(layout, ignore_errors=True)
    (server_cluster, client_cluster), (server_loop, client_loop) = (
        per_gib["cluster"],
        per_gib["loopback"],
    )
    results.add_ratio("skopeo_server_cpu_vs_loopback", server_cluster, server_loop)
    results.add_ratio("skopeo_client_cpu_vs_loopback", client_cluster, client_loop)
    log(
        f"skopeo CPU s/GiB: registry {server_cluster:.2f} (loopback {server_loop:.2f}), "
        f"skopeo {client_cluster:.2f} (loopback {client_loop:.2f})"
    )


async def measure_auth_rates(
    results: Results, cluster: Endpoint, loopback: auth_rate.Setup
) -> None:
    """16 clients: the cluster's rates, and loopback's ratio that isolates authentication."""
    login = (cluster.username, cluster.password)
    on_cluster = auth_rate.Setup(cluster.url, cluster.ca_file, *login, pids=(), admin=login)
    phases = await auth_rate.cluster_and_loopback(
        on_cluster, loopback, AUTH_CLIENTS, AUTH_SECONDS, AUTH_SLICES
    )
    for key, phase in phases.items():
        results.add(key, phase.rate)
    rate = {key: phase.rate for key, phase in phases.items()}
    results.add_ratio("auth_vs_root_cluster", rate["auth_head_cluster"], rate["root_cluster"])
    results.add_ratio(
        "auth_vs_noauth_loopback", rate["auth_head_loopback"], rate["noauth_head_loopback"]
    )
    errors = sum(phase.errors for phase in phases.values())
    if errors:
        results.notes.append(f"authenticated-rate loads: {errors} unexpected answers or errors")
    log(
        "req/s: cluster auth HEAD {auth_head_cluster:.0f}, GET / {root_cluster:.0f}; loopback "
        "auth HEAD {auth_head_loopback:.0f}, HEAD without auth {noauth_head_loopback:.0f}".format(
            **rate
        )
    )


def _client_ratios(results: Results, rates: dict[str, float], client: str) -> None:
    """A standard client's cluster / loopback ratios, and its line in the log."""
    parts = []
    for verb in ("push", "pull"):
        cluster, loopback = rates[f"{client}_{verb}_cluster"], rates[f"{client}_{verb}_loopback"]
        results.add_ratio(f"{client}_{verb}_vs_loopback", cluster, loopback)
        parts.append(f"{verb} {cluster:.0f} (loopback {loopback:.0f})")
    log(f"{client} MiB/s: {', '.join(parts)}")


async def bench_command(
    settings: Settings,
    set_args: tuple[str, ...],
    kubeconfig: str,
    *,
    repeat: int,
    size_mib: int,
    out_dir: Path,
) -> None:
    """Run every measurement `repeat` times, write bench/results.{json,md}, print the table.

    Without a service.ip in `set_args` the registry gets an address of the local
    cluster's pool that no Service and no test run holds, released at the end.
    """
    if repeat < 1 or size_mib < 1:
        raise BenchError("--repeat and --size-mib must be at least 1")
    byte_compile()
    api = await kube.connect(kubeconfig=kubeconfig)
    await kube.check_reachable(api)
    version = await api.version()
    results = Results(
        parameters={
            "repeat": repeat,
            "size_mib": size_mib,
            "clients": CLIENTS,
            "auth_clients": AUTH_CLIENTS,
            "auth_seconds": AUTH_SECONDS,
            "pull_pods": cluster_pull.PODS,
            "pull_layers": cluster_pull.LAYERS,
            "pull_layer_bytes": cluster_pull.LAYER_BYTES,
            "settings": list(set_args),
            "idle_window_s": IDLE_SECONDS,
            "first_push_bytes": sum(FIRST_PUSH_LAYERS),
        },
        environment={
            "started_at": _now(),
            "cpus": os.cpu_count(),
            "load_before": _load(),
            "kubernetes": version.get("gitVersion"),
            "registry_image": settings.image,
            "python": platform.python_version(),
        },
    )
    results.notes += [
        "Time to ready runs from nothing until a first push "
        f"({sum(FIRST_PUSH_LAYERS) // 1024} KiB) is accepted; the floor's manifests are "
        "rendered before its clock starts.",
        "Throughput images are fresh random (incompressible) layers; pulls verify every "
        f"digest; the concurrent test pushes {CLIENTS} images of size/{CLIENTS} each.",
        "Raw disk: the same blobs written with fsync (the registry fsyncs each blob on "
        "commit), then read back after dropping those files' pages (posix_fadvise).",
    ]
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        target = lifecycle.Target(
            settings=settings,
            set_args=set_args,
            kubeconfig=kubeconfig,
            kubectl=lifecycle.kubectl_command(kubeconfig),
            api=api,
            work_dir=Path(tmp),
        )
        helm = await helm_or_reason(results)
        log(f"namespace {settings.namespace}; cleaning up first")
        # Whatever an earlier run left goes first, so that it holds no address.
        await helm_peer.ensure_clean(target, helm)
        await lifecycle.ensure_clean(target)
        addresses, claimed = AddressPool(), None
        if given_address(set_args) is None:
            claimed = await addresses.claim(api)
            target = at_address(target, claimed)
            results.parameters["settings"] = list(target.set_args)
        log(f"the registry will be at {target.settings.registry_url}")
        has_skopeo = skopeo.available()
        if not has_skopeo:
            results.skip(SKOPEO_FIGURES, "skopeo is not installed on this machine")
        docker_missing = docker_client.missing_reason()
        if docker_missing is not None:
            results.skip(DOCKER_FIGURES, docker_missing)
            log(f"docker not measured: {docker_missing}")
        pause = await asyncio.to_thread(cluster_pull.pause_binary)
        docker_context: contextlib.AbstractContextManager[DockerDaemon | None] = (
            docker_client.running_daemon() if docker_missing is None else contextlib.nullcontext()
        )
        try:
            with (
                docker_context as docker_daemon,
                run_loopback(target.settings, Path(tmp) / "loopback") as loop,
                run_proxied_registry(
                    Path(tmp) / "loopback-twin",
                    authenticate=False,
                    registry_config=cluster_config(target.settings),
                ) as twin,
            ):
                admin = (loop.admin.username, loop.admin.password)
                twin_setup = auth_rate.Setup(
                    twin.url, twin.ca_path, "", "", pids=(twin.pid, twin.registry.pid)
                )
                for index in range(repeat):
                    pull_images = [
                        await asyncio.to_thread(cluster_pull.runnable_image, pause)
                        for _ in range(cluster_pull.PODS)
                    ]
                    loopback = Loopback(
                        endpoint=Endpoint(loop.url, *admin, loop.ca_path),
                        auth=auth_rate.Setup(
                            loop.url,
                            loop.ca_path,
                            *admin,
                            pids=(loop.pid, loop.registry.pid),
                            admin=admin,
                            twin=twin_setup,
                        ),
                        helm=helm,
                        skopeo=has_skopeo,
                        docker=docker_daemon,
                        pull_images=pull_images,
                    )
                    await one_run(target, results, loopback, size_mib * MIB, index, repeat)
        except BaseException as error:
            # A failing purge below would replace this error: say it first.
            log(f"stopped by {type(error).__name__}: {error}")
            raise
        finally:
            log("purging the bench's registry")
            try:
                await helm_peer.ensure_clean(target, helm)
                await lifecycle.ensure_clean(target)
            finally:
                if claimed is not None:
                    addresses.release(claimed)
    results.environment.update(finished_at=_now(), load_after=_load())
    results.notes.extend(missed_notes(results))
    results.notes.append(
        f"Pod cost comes from the {results.environment.get('pod_meter', '?')}; CPU in mCPU "
        "(1000 = one core) averaged over the window; idle is a "
        f"{IDLE_SECONDS:.0f} s window before any push."
    )
    json_path, md_path = write(results, out_dir)
    print(markdown(results))
    print(f"wrote {json_path} and {md_path}")


def path_order(index: int, names: Sequence[str]) -> list[str]:
    """The paths of run `index`, rotated each run so none always goes first or last."""
    shift = index % len(names)
    return [*names[shift:], *names[:shift]]


async def one_run(
    target: lifecycle.Target,
    results: Results,
    loopback: Loopback,
    size_bytes: int,
    index: int,
    repeat: int,
) -> None:
    log(f"run {index + 1}/{repeat}")
    startup = await lifecycle.child([sys.executable, "-m", "invoke", "--list"], "invoke --list")
    results.add("cli_startup", startup.seconds)
    cluster_first = index % 2 == 0
    names = ("floor", "ours", "helm") if loopback.helm is not None else ("floor", "ours")
    outcome: dict[str, dict[str, float]] = {}
    for name in path_order(index, names):
        if name == "floor":
            outcome[name] = await floor_path(target, results)
        elif name == "helm":
            assert loopback.helm is not None
            outcome[name] = await helm_path(target, results, loopback.helm)
        else:
            outcome[name] = await ours_path(target, results, loopback, size_bytes, cluster_first)
    ours, floor = outcome["ours"], outcome["floor"]
    results.add_ratio("provision_vs_floor", ours["ready"], floor["ready"])
    results.add_ratio("unprovision_vs_delete", ours["removal"], floor["removal"])
    if "helm" in outcome:
        results.add_ratio("provision_vs_helm", ours["ready"], outcome["helm"]["ready"])


async def helm_or_reason(results: Results) -> Path | None:
    """The helm binary (built once, before any clock), or None with the figures skipped."""
    reason = helm_peer.missing_reason()
    if reason is None:
        try:
            return await asyncio.to_thread(helm_peer.helm_binary)
        except (OSError, subprocess.CalledProcessError) as error:
            reason = f"helm could not be built: {error}"
    results.skip(HELM_FIGURES, reason)
    log(f"helm peer not measured: {reason}")
    return None


# Where the time goes when a figure misses its target; the phase table has the numbers.
_RULED_OUT = (
    "Ruled out by measurement (skopeo, 512 MiB, through the cluster, alternating runs): "
    "the registry container's memory limit (512 MiB and 4 GiB alike; 512 MiB and 2 GiB "
    "alike also once the cgroup is full of page cache), the pod network's MTU (1500 and "
    "65000 on every link alike), the client's CPU weight against the node's (skopeo in a "
    "cgroup of its own: alike), the containers' CPU weights within the pod (cpu.shares "
    "10 and 51, as kubelet sets them from the requests, against 1024 each: the pod's "
    "CPU per byte no lower), the Service's externalTrafficPolicy (Local against "
    "Cluster, no SNAT: alike), the NetworkPolicy (present and deleted: alike), TCP "
    "congestion control (bbr and cubic alike), the bridge's netfilter calls "
    "(bridge-nf-call-iptables 1 and 0 alike), the host's link to the node (skopeo run "
    "inside the node's network namespace: alike) and the pod's cgroups (its two processes "
    "moved to the root cpu and cpuacct cgroups in place, eight alternating rounds: push "
    "168 against 168 MiB/s, CPU per GiB 2.96 against 3.06 s). What is left is per packet: "
    "a push crosses the pod's path as one packet per TLS record of the client (16.5 KB on "
    "average, about 65,000 per GiB, nearly each acknowledged on its own), and each pays two "
    "veth pairs, the bridge and conntrack, which loopback does not."
)
_CPU_PER_BYTE = (
    "see the CPU rows: per GiB moved, the registry pod spends more CPU than the same two "
    "programs on loopback, while skopeo's own CPU is alike. Split by process for a push "
    "(by hand, /proc/PID/stat): user time alike, system time higher in both, the proxy "
    "1.2-1.4 s/GiB against 0.8-1.0 and distribution 1.8-2.0 against 1.1-1.2. The proxy's "
    "extra is the pod's network path (raw TCP from the host into the pod costs 0.44-0.54 "
    "s of CPU per GiB, on loopback 0.29); distribution's is scheduling: perf puts 29% of "
    "its samples at the return from a context switch (epoll, nanosleep, futex), 14% on "
    "loopback, as it waits more often per byte for a proxy that is itself slower. On two "
    "cores shared by client and servers, more CPU per byte means fewer bytes per second. "
)
MISSED: dict[str, str] = {
    "provision_vs_floor": (
        "provision / floor missed: both apply the same manifests (provision holds the "
        "Deployment until its claim is Bound), so the cluster's side is alike, but it "
        "steps by whole seconds: local-path checks its helper pod once a second, kubelet "
        "calls that pod Succeeded only once its sandbox is stopped, one or two of its "
        "once-a-second relists after the container exits (the bind took 1.8 or 2.8 s, "
        "from one run to the next), and kube-proxy programs a Service at most once a "
        "second, so one path can land a second later than the other within a run; see "
        "the runs of each. Compare the "
        "phase table's first rows, the client's side before the Deployment goes out. "
        "Traced by hand on 2026-12-01, on a machine where a no-op re-provision took "
        "0.56 s, the claim was created 0.47-0.50 s after provision started (interpreter, "
        "imports, settings, preflight's reads and access reviews, render, then the claim "
        "first), 0.24 s after the floor's kubectl apply started (no preflight; the claim "
        "is its sixth object); from there both wait on the same cluster."
    ),
    "provision_vs_helm": (
        "provision / helm missed: provision does more before it calls the registry ready: "
        "node trust's pod on every node (the helm path has none), the proxy container of "
        "the pull-only login in the registry pod, and a preflight of rights and ownership "
        "(see the phases for the clients' share). The volume bind, local-path's helper "
        "pod, weighs most on both paths and varies most: it checks its helper pod once a "
        "second. Provision holds the registry's Deployment until its claim is Bound, so "
        "the scheduler has nothing to retry; helm's --wait polls every 2 s."
    ),
    "noop_provision": (
        "no-op re-provision missed: it is interpreter start-up, imports, preflight's reads "
        "and access reviews, render and the dry-run compare of every object."
    ),
    "auth_vs_noauth_loopback": (
        "authentication ratio missed: see the per-request CPU in "
        "`python -m scripts.benchmarks.auth_rate`; on 2 shared cores the clients compete "
        "with the servers."
    ),
    "push_vs_loopback": (
        "push / loopback missed: the cluster path adds kube-proxy, the pod network, the "
        "container's cgroup and the volume; the skopeo CPU rows show that path costing the "
        "registry pod more CPU per byte, on two cores the client shares. At small "
        "--size-mib the per-blob round trips weigh more than the bytes."
    ),
    "pull_vs_loopback": (
        "pull / loopback missed: the cluster path adds kube-proxy, the pod network and "
        "the volume's reads."
    ),
    "concurrent_errors": "concurrent pushes failed: the errors are listed in these notes.",
    "skopeo_push_vs_loopback": ("skopeo push missed: " + _CPU_PER_BYTE + _RULED_OUT),
    "docker_push_vs_loopback": (
        "docker push missed: the cluster path adds kube-proxy, the pod network and the "
        "volume; docker's gzip of every layer is paid on both sides. On loopback docker "
        "treats 127.0.0.0/8 as an insecure registry and skips the certificate check."
    ),
    "docker_pull_vs_loopback": (
        "docker pull missed: the cluster path adds kube-proxy, the pod network and the "
        "volume's reads; docker's unpacking of every layer is paid on both sides."
    ),
    "skopeo_pull_vs_loopback": ("skopeo pull missed: " + _CPU_PER_BYTE + _RULED_OUT),
}


def missed_notes(results: Results) -> list[str]:
    """A note for every figure that missed its target, saying where the time goes."""
    return [
        MISSED.get(key, f"{key} missed its target.")
        for key, figure in results.figures.items()
        if figure.met is False
    ]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
