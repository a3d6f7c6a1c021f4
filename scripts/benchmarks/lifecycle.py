"""Time to ready and to removal: `invoke provision` against the kubectl floor.

The floor is what a careful person does by hand with the same manifests:
`kubectl apply --server-side`, `kubectl wait` and `rollout status` on what
provision waits for, then the same first push with the same OCI client. Both
are timed from nothing until that push is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import kr8s
import kr8s.asyncio

from registry_provisioner import kube, render
from registry_provisioner.config import Settings
from registry_provisioner.credentials import Credentials, existing_credentials, generate_credentials
from registry_provisioner.images import Image
from registry_provisioner.provision import PREFLIGHT_STEP
from scripts.kinds import KINDS
from scripts.local_cluster.paths import CACHE_DIR

from .children import BenchError, ChildRun, run_child
from .data_plane import Endpoint, push_until_accepted

STEP_TIMEOUT = 600.0
WAIT_TIMEOUT = "300s"
GONE_TIMEOUT = 300.0
FIELD_MANAGER = "bench-kubectl"
# provision's progress lines name what it waits for; these give each wait a short name.
_WAIT_NAMES = (
    (re.compile(r"^Certificate "), "wait: Certificate Ready"),
    (re.compile(r"^Deployment "), "wait: Deployment rolled out"),
    (re.compile(r"^Service "), "wait: LoadBalancer IP"),
    (re.compile(r"^the registry to answer"), "wait: registry answers on the IP"),
)


@dataclass(frozen=True)
class Target:
    """The cluster and settings every step works on."""

    settings: Settings
    set_args: tuple[str, ...]  # --set KEY=VALUE pairs that produce `settings` under --local
    kubeconfig: str
    kubectl: tuple[str, ...]
    api: kr8s.asyncio.Api
    work_dir: Path


def kubectl_command(kubeconfig: str) -> tuple[str, ...]:
    """The local cluster's own kubectl (its multi-call binary), else kubectl on PATH."""
    builds = sorted(
        (CACHE_DIR / "bin").glob("kubernetes-*"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    prefix = (str(builds[0]), "kubectl") if builds else ("kubectl",)
    return (*prefix, f"--kubeconfig={kubeconfig}")


def invoke_command(target: Target, task: str, *extra: str) -> list[str]:
    """`invoke TASK --local` with the bench's settings, as a user would type it."""
    sets = [arg for pair in target.set_args for arg in ("--set", pair)]
    local = ["--local", "--kubeconfig", target.kubeconfig]
    return [sys.executable, "-m", "invoke", task, *local, *sets, *extra]


async def child(argv: Sequence[str], what: str, secrets: Sequence[str] = ()) -> ChildRun:
    """Run a child off the event loop, so samplers keep running; fail loudly."""
    run = await asyncio.to_thread(run_child, argv, timeout=STEP_TIMEOUT)
    return run.checked(what, secrets)


# -- ours --


def provision_phases(run: ChildRun) -> dict[str, float]:
    """Split a provision run by its progress lines: start-up, the preflight, then render
    and apply until the first wait, each wait, and what comes after."""
    phases: dict[str, float] = {}
    preflight_start = preflight_end = first_wait = last_done = None
    for at, line in run.stderr_lines:
        if line == f"==> {PREFLIGHT_STEP}":
            preflight_start = at
        elif line.endswith(f": {PREFLIGHT_STEP}") and "done in" in line:
            preflight_end = at
        if line.startswith("==> waiting for "):
            first_wait = at if first_wait is None else first_wait
        done = re.match(r"^\s+done in ([\d.]+)s: waiting for (.*?) \(up to", line)
        if done:
            seconds, what = float(done.group(1)), done.group(2)
            name = next((n for pattern, n in _WAIT_NAMES if pattern.search(what)), f"wait: {what}")
            phases[name] = phases.get(name, 0.0) + seconds
            last_done = at
    before: dict[str, float] = {}
    if preflight_start is not None and preflight_end is not None and first_wait is not None:
        before = {
            "interpreter, imports, settings, connect": preflight_start,
            "preflight (and the logins, alongside)": preflight_end - preflight_start,
            "render, node probe, apply": first_wait - preflight_end,
        }
    elif first_wait is not None:
        before = {"interpreter and imports, preflight, render, apply": first_wait}
    phases = {**before, **phases}
    if last_done is not None:
        phases["after the waits (CA file, summary, exit)"] = max(0.0, run.seconds - last_done)
    return phases


async def endpoint_of(target: Target, ca_file: Path) -> Endpoint:
    credentials = await existing_credentials(target.api, target.settings)
    if credentials is None:
        raise BenchError("provision finished but left no login Secret")
    return Endpoint(
        target.settings.registry_url, credentials.username, credentials.password, ca_file
    )


@dataclass(frozen=True)
class Ready:
    seconds: float
    phases: dict[str, float]
    provision_run: ChildRun | None
    endpoint: Endpoint


async def provision_to_first_push(target: Target, image: Image) -> Ready:
    """`invoke provision` from nothing, then the first push, timed end to end."""
    ca_dir = target.work_dir / "ca-provision"
    started = time.monotonic()
    run = await child(invoke_command(target, "provision", "--ca-dir", str(ca_dir)), "provision")
    endpoint = await endpoint_of(target, ca_dir / target.settings.registry_host / "ca.crt")
    push = await push_until_accepted(endpoint, image, timeout=120)
    seconds = time.monotonic() - started
    phases = {**provision_phases(run), "first push": push}
    return Ready(seconds, phases, run, endpoint)


async def reprovision(target: Target, *extra: str) -> ChildRun:
    """A re-run that must change nothing (or a dry run, with --dry-run)."""
    run = await child(invoke_command(target, "provision", *extra), f"provision {' '.join(extra)}")
    expected = "no changes" if not extra else "nothing was changed: no changes"
    if expected not in run.stdout:
        raise BenchError(f"provision {' '.join(extra)} changed something:\n{run.stdout}")
    return run


async def unprovision_until_gone(target: Target) -> float:
    started = time.monotonic()
    await child(invoke_command(target, "unprovision", "--purge"), "unprovision --purge")
    await wait_gone(target)
    return time.monotonic() - started


# -- the kubectl floor --


def secrets_of(credentials: Credentials) -> tuple[str, ...]:
    return (
        credentials.password,
        credentials.password_hash,
        credentials.pull_password,
        credentials.pull_password_hash,
        credentials.http_secret,
    )


def write_manifests(target: Target) -> tuple[Path, Credentials]:
    """The manifests provision would apply from nothing, real secrets in, mode 0600."""
    credentials = generate_credentials(target.settings)
    path = target.work_dir / "floor-manifests.yaml"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    # Node trust's CA copy: what the floor knows before applying ("" under cert-manager,
    # whose CA comes later: the nodes then fall back to their system roots).
    objects = render.render_manifests(target.settings, credentials, credentials.ca_pem)
    path.write_text(render.manifests_yaml(objects))
    return path, credentials


def floor_steps(target: Target, manifests: Path) -> list[tuple[str, list[str]]]:
    """The floor's kubectl commands: apply, then wait on what provision waits on."""
    s, k = target.settings, target.kubectl
    ns, timeout = ["-n", s.namespace], f"--timeout={WAIT_TIMEOUT}"
    apply = ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(manifests)]
    steps = [("kubectl apply --server-side", [*k, *apply])]
    if s.tls.mode == "cert-manager":
        certificate = f"certificates.cert-manager.io/{s.name}"
        steps.append(
            (
                "kubectl wait: Certificate Ready",
                [*k, *ns, "wait", timeout, "--for=condition=Ready", certificate],
            )
        )
    lb_ip = f"--for=jsonpath={{.status.loadBalancer.ingress[0].ip}}={s.service.ip}"
    service = f"service/{s.service.name}"
    steps += [
        ("kubectl rollout status", [*k, *ns, "rollout", "status", timeout, f"deployment/{s.name}"]),
        ("kubectl wait: LoadBalancer IP", [*k, *ns, "wait", timeout, lb_ip, service]),
    ]
    if s.node_trust.enabled:
        # Provision waits until every node trusts the registry; so must the floor.
        daemonset = f"daemonset/{s.node_trust_name}"
        status = [*k, "-n", s.node_trust_namespace, "rollout", "status", timeout, daemonset]
        steps.append(("kubectl rollout status: node trust", status))
    return steps


async def floor_to_first_push(target: Target, image: Image) -> tuple[Ready, Path, Credentials]:
    """Apply, wait and push with kubectl alone; manifests are rendered before the clock."""
    s, ns, k = target.settings, target.settings.namespace, target.kubectl
    manifests, credentials = write_manifests(target)
    secrets = secrets_of(credentials)
    steps = floor_steps(target, manifests)
    phases: dict[str, float] = {}
    started = time.monotonic()
    for name, argv in steps:
        phases[name] = (await child(argv, name, secrets)).seconds
    ca = await child(
        [*k, "-n", ns, "get", "secret", s.tls.secret_name, "-o", r"jsonpath={.data.ca\.crt}"],
        "kubectl get the CA",
    )
    phases["kubectl get the CA"] = ca.seconds
    ca_file = target.work_dir / "ca-floor" / s.registry_host / "ca.crt"
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(base64.b64decode(ca.stdout))
    endpoint = Endpoint(s.registry_url, credentials.username, credentials.password, ca_file)
    phases["first push"] = await push_until_accepted(endpoint, image, timeout=120)
    seconds = time.monotonic() - started
    return Ready(seconds, phases, None, endpoint), manifests, credentials


async def kubectl_delete_until_gone(
    target: Target, manifests: Path, secrets: Sequence[str]
) -> float:
    started = time.monotonic()
    delete = ["delete", "--wait=true", f"--timeout={WAIT_TIMEOUT}", "-f", str(manifests)]
    await child([*target.kubectl, *delete], "kubectl delete --wait", secrets)
    await wait_gone(target)
    return time.monotonic() - started


# -- cleanliness between runs --


async def leftovers(target: Target) -> list[str]:
    """Every object of this installation still present, the namespace included.

    Every kind a provision makes is looked up by our labels wherever it lives, and
    the namespace by its name as well, whether or not it carries our labels.
    """
    api, s = target.api, target.settings
    found = [f"Namespace/{s.namespace}" for _ in await kube.get_all(api, "namespaces", s.namespace)]
    for kind in KINDS:
        for obj in await kube.get_all(
            api, kind, namespace=kr8s.ALL, label_selector=render.label_selector(s)
        ):
            found.append("/".join(part for part in (obj.kind, obj.namespace, obj.name) if part))
    return list(dict.fromkeys(found))


async def wait_gone(target: Target, timeout: float = GONE_TIMEOUT) -> None:
    """Until every object is gone: part of what removal is timed on."""
    deadline = time.monotonic() + timeout
    while left := await leftovers(target):
        if time.monotonic() > deadline:
            raise BenchError(f"still present {timeout:.0f}s after removal: {', '.join(left)}")
        await asyncio.sleep(0.2)


async def wait_volumes_released(
    target: Target, timeout: float = GONE_TIMEOUT, namespace: str | None = None
) -> None:
    """The provisioner deletes the old volume in the background; let it finish untimed,
    so its cleanup does not run inside the next measurement. `namespace` defaults to
    the registry's (the helm peer has its own)."""
    namespace = namespace or target.settings.namespace
    deadline = time.monotonic() + timeout
    while True:
        volumes = [
            pv.name
            for pv in await kube.get_all(target.api, "persistentvolumes")
            if (pv.raw["spec"].get("claimRef") or {}).get("namespace") == namespace
        ]
        if not volumes:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"volumes not released after {timeout:.0f}s: {', '.join(volumes)}")
        await asyncio.sleep(0.5)


async def ensure_clean(target: Target) -> None:
    """Start from nothing: purge whatever an earlier (or failed) run left."""
    if await leftovers(target):
        await child(invoke_command(target, "unprovision", "--purge"), "unprovision --purge")
        await wait_gone(target)
    await wait_volumes_released(target)
