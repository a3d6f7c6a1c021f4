"""Node trust on the cluster: wait until every node holds the files, and take them away.

The files (`<certs_dir>/<ip:port>/hosts.toml` and `ca.crt`) outlive the pods that
write them: a rollout, an eviction or a node shutdown leaves them, so trust never
lapses. Only unprovision removes them, by rolling the DaemonSet over to its `remove`
mode (each pod empties its directory, then idles) and waiting for that on every node
before deleting it. That reuses what already runs on every node, with the same image,
placement and Pod Security level, rather than a second kind of pod per node.

The DaemonSet lives in a namespace of its own (`node_trust.namespace`), labelled Pod
Security `privileged`, the least a host path needs, so the registry's namespace can
enforce `restricted`. Releases before that kept it in the registry's namespace:
provision retires that one once the new one holds the files on every node.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import DaemonSet

from . import kube, ownership, render
from .config import Settings
from .errors import NodeConfigConflict, ReadinessTimeout
from .waiting import first_of, poll, wait_for

# How long unprovision waits for every node to drop the files before it goes on.
REMOVE_TIMEOUT = 120.0
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_PSA_POLICY = re.compile(r'violates PodSecurity "([^"]+)"')
# How the sync script's line starts when it leaves a hosts.toml it did not write.
REFUSAL = "refused to replace "
# How often provision looks for that line while it waits for every node.
REFUSAL_POLL_SECONDS = 2.0


def legacy_config_map(settings: Settings) -> dict:
    """The ConfigMap releases before issue 11 kept the script in; nothing mounts it now."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": settings.node_trust_name, "namespace": settings.namespace},
    }


def daemonset_ref(settings: Settings, namespace: str | None = None) -> dict:
    """The DaemonSet by name, for finding it whatever node_trust.enabled says now;
    in node trust's namespace unless `namespace` names another (the old layout's)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": settings.node_trust_name,
            "namespace": namespace or settings.node_trust_namespace,
        },
    }


def previous_daemonset(settings: Settings) -> dict:
    """Where releases before node trust's own namespace ran it: the registry's namespace."""
    return daemonset_ref(settings, settings.namespace)


def owned_refs(settings: Settings) -> list[dict]:
    """Node trust's namespace, CA copy and DaemonSet by name, to find them whatever the
    settings say now; in apply order."""
    namespace = settings.node_trust_namespace
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": settings.node_trust_ca_name, "namespace": namespace},
        },
        daemonset_ref(settings),
    ]


def on_every_node(raw: dict) -> bool:
    """The current template runs and is Ready on every node the DaemonSet should run on."""
    status = raw.get("status") or {}
    desired = status.get("desiredNumberScheduled")
    return (
        status.get("observedGeneration", 0) >= raw["metadata"].get("generation", 0)
        and desired is not None
        and status.get("numberReady", 0) == desired
        and status.get("updatedNumberScheduled", 0) == desired
    )


async def wait_on_every_node(
    api: kr8s.asyncio.Api,
    settings: Settings,
    timeout: float,
    *,
    removing: bool = False,
    namespace: str | None = None,
) -> None:
    """Until `on_every_node`; else ReadinessTimeout naming each node and why.

    `namespace` is where the DaemonSet is, node trust's own unless told otherwise."""
    namespace = namespace or settings.node_trust_namespace
    daemonset = await DaemonSet.get(settings.node_trust_name, namespace=namespace, api=api)
    what = (
        "the registry's files to be removed from every node"
        if removing
        else "every node to trust the registry's CA"
    )
    started = time.monotonic()

    async def condition() -> None:
        ready = kube.wait_until(daemonset, on_every_node)
        if removing:
            return await ready
        # A refusal is final until someone acts: fail on it now, not after `timeout`.
        return await first_of(ready, _until_refused(api, settings, daemonset, started))

    await wait_for(
        f"{what} (DaemonSet {settings.node_trust_name})",
        condition,
        timeout,
        lambda: diagnose(api, settings, removing=removing, namespace=namespace),
    )


async def _until_refused(
    api: kr8s.asyncio.Api, settings: Settings, daemonset: DaemonSet, started: float
) -> None:
    """Raise NodeConfigConflict once a pod of the current template logs, since `started`,
    that it left someone else's hosts.toml (it does on every pass while that lasts)."""
    found: list[str] = []

    async def refused() -> bool:
        found[:] = await refusals(api, settings, daemonset, time.monotonic() - started)
        return bool(found)

    await poll(refused, REFUSAL_POLL_SECONDS)
    raise NodeConfigConflict(found)


async def refusals(
    api: kr8s.asyncio.Api, settings: Settings, daemonset: DaemonSet, seconds: float
) -> list[str]:
    """`node N: <the script's line>` for each refusal logged in the last `seconds` by a
    pod running the DaemonSet's current template.

    Only that recent: once the file is gone or replaceable, the next pass writes ours,
    so an older line may be out of date. The window is measured on the node's clock."""
    template = daemonset.raw["spec"]["template"]["spec"]["containers"][0].get("env")
    selector = render.component_selector(settings, "node-trust")
    pods = await kube.get_all(api, "pods", namespace=daemonset.namespace, label_selector=selector)
    lines = []
    for pod in pods:
        current = pod.raw["spec"]["containers"][0].get("env") == template
        if not current or pod.raw["metadata"].get("deletionTimestamp"):
            continue
        try:
            log = [line async for line in pod.logs(since_seconds=math.ceil(seconds) + 1)]
        except (kr8s.ServerError, ValueError):  # not started yet: nothing logged
            continue
        node = _node_of(pod.raw) or f"of pod {pod.name}"
        lines += [f"node {node}: {line}" for line in dict.fromkeys(log) if line.startswith(REFUSAL)]
    return lines


async def diagnose(
    api: kr8s.asyncio.Api,
    settings: Settings,
    *,
    removing: bool = False,
    namespace: str | None = None,
) -> str:
    """One line per node that is not done, with the reason a person would look for."""
    ns = namespace or settings.node_trust_namespace
    selector = render.component_selector(settings, "node-trust")
    pods = await kube.get_all(api, "pods", namespace=ns, label_selector=selector)
    by_node = {_node_of(pod.raw): pod for pod in pods}
    try:
        nodes = sorted(node.name for node in await kube.get_all(api, "nodes"))
    except kr8s.ServerError:  # no right to list nodes: the pods' nodes are all we know
        nodes = sorted(n for n in by_node if n)
    rejected = await _failed_create(api, settings, ns)
    lines = []
    for node in nodes:
        pod = by_node.get(node)
        if pod is None:
            lines.append(f"  node {node}: no pod: {rejected or 'not created yet'}")
            continue
        reason = _pod_reason(pod.raw, settings, removing=removing)
        if reason:
            lines.append(f"  node {node}: {reason} (pod {pod.name})")
            lines += [f"    | {line}" for line in await pod_log(pod, 5)]
    if not lines and rejected:
        lines.append(f"  {rejected}")
    return "\n".join(lines)


def _node_of(raw: dict) -> str | None:
    """The node a DaemonSet pod is for: bound, or still pinned by its node affinity."""
    spec = raw.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    try:
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        return terms["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
    except (KeyError, IndexError, TypeError):
        return None


async def _failed_create(api: kr8s.asyncio.Api, settings: Settings, namespace: str) -> str:
    """Why the DaemonSet controller could not create pods, from its latest FailedCreate."""
    events = await kube.events_about(api, namespace, settings.node_trust_name, kind="DaemonSet")
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return ""
    latest = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = latest.get("message", "")
    policy = _PSA_POLICY.search(message)
    if policy:
        return (
            f'rejected by Pod Security Admission (policy "{policy[1]}"): {message}; node trust '
            "mounts a host directory, which only the `privileged` level allows: label namespace "
            f"{namespace} pod-security.kubernetes.io/enforce=privileged, or set "
            "node_trust.namespace to a namespace provision creates"
        )
    return f"the DaemonSet cannot create it: {message}"


def _pod_reason(raw: dict, settings: Settings, *, removing: bool) -> str:
    """Why this pod is not done yet, or "" when it is."""
    status = raw.get("status") or {}
    if raw["metadata"].get("deletionTimestamp"):
        return "the previous pod is still stopping"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting")
        if waiting:
            reason, message = waiting.get("reason", ""), waiting.get("message", "")
            if reason in IMAGE_PULL_REASONS:
                return f"image pull error: {reason} for {container.get('image')}: {message}"
            if reason == "CrashLoopBackOff":
                last = (container.get("lastState") or {}).get("terminated") or {}
                return f"the script keeps failing (exit code {last.get('exitCode')}), see its log"
            return f"container waiting: {reason} {message}".rstrip()
        if "terminated" in state:
            return f"container exited (code {state['terminated'].get('exitCode')}), see its log"
        if "running" in state and not container.get("ready"):
            if removing:
                return "files not removed yet"
            dirs = [settings.node_registry_dir, *map(settings.node_mirror_dir, settings.mirrors)]
            return (
                f"files not written: {' or '.join(dirs)} does not hold our hosts.toml "
                "and the current CA yet"
            )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"not scheduled: {condition.get('message', '')}"
    if status.get("phase") == "Pending":
        return "pending: the pod has not started yet"
    return ""


async def pod_log(pod, tail_lines: int | None = None) -> list[str]:
    """What the pod logged (its last `tail_lines`); nothing when it never ran."""
    try:
        return [line async for line in pod.logs(tail_lines=tail_lines)]
    except (kr8s.ServerError, ValueError):
        return []


@dataclass(frozen=True)
class LiveDirs:
    """Where the live DaemonSet writes on each node, and with what image."""

    registry: str
    mirrors: tuple[str, ...]
    image: str

    @property
    def all(self) -> tuple[str, ...]:
        return (self.registry, *self.mirrors)


def live_dirs(raw: dict) -> LiveDirs | None:
    """The live DaemonSet's host directories (the registry's, then the mirrors' in
    order) and image; None for a release before issue 11, whose pods still delete the
    files themselves as they stop."""
    spec = raw["spec"]["template"]["spec"]
    container = spec["containers"][0]
    if not any(e.get("name") == "HOST_DIR" for e in container.get("env") or []):
        return None
    paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes") or [] if "hostPath" in v}
    if "registry-dir" not in paths:
        return None
    mirrors = tuple(
        paths[f"mirror-dir-{i}"] for i in range(len(paths)) if f"mirror-dir-{i}" in paths
    )
    return LiveDirs(paths["registry-dir"], mirrors, container["image"])


def keeps_files(raw: dict) -> bool:
    """Whether the live DaemonSet's pods leave the files as they stop (issue 11 on);
    before that, each pod deleted them."""
    return live_dirs(raw) is not None


def _mirror_dirs(settings: Settings) -> tuple[str, ...]:
    return tuple(settings.node_mirror_dir(m) for m in settings.mirrors)


async def remove_files(
    api: kr8s.asyncio.Api,
    settings: Settings,
    timeout: float = REMOVE_TIMEOUT,
    *,
    namespace: str | None = None,
) -> list[kube.Change]:
    """Roll our DaemonSet (in `namespace`, node trust's own by default) to `remove` mode
    and wait until every node is clean.

    The directories are the live DaemonSet's and, should a run have stopped half-way
    through dropping a mirror, the settings' mirrors' too. Returns report lines:
    nothing when every node dropped the files (or there is no DaemonSet of ours), else
    one naming the nodes that may still hold them, so the unprovision goes on rather
    than hang on a node that is gone for good.
    """
    namespace = namespace or settings.node_trust_namespace
    raw = await ownership.live(api, daemonset_ref(settings, namespace))
    if raw is None or ownership.foreign(raw, settings) is not None:
        return []
    found = live_dirs(raw)
    if found is None:
        return []
    mirrors = tuple(dict.fromkeys((*found.mirrors, *_mirror_dirs(settings))))
    dirs = LiveDirs(found.registry, mirrors, found.image)
    return await _roll_removal(api, settings, raw, dirs, timeout, keep_registry=False)


async def remove_dropped_mirror_files(
    api: kr8s.asyncio.Api, settings: Settings, timeout: float = REMOVE_TIMEOUT
) -> list[kube.Change]:
    """Empty the node directories of mirrors the settings no longer list, before the
    new DaemonSet (which no longer mounts them) replaces the live one; the registry's
    own files, and the remaining mirrors', stay throughout."""
    raw = await ownership.live(api, daemonset_ref(settings))
    if raw is None or ownership.foreign(raw, settings) is not None:
        return []
    found = live_dirs(raw)
    if found is None:
        return []
    dropped = tuple(d for d in found.mirrors if d not in _mirror_dirs(settings))
    if not dropped:
        return []
    dirs = LiveDirs(found.registry, dropped, found.image)
    report = await _roll_removal(api, settings, raw, dirs, timeout, keep_registry=True)
    action = f"emptied {', '.join(dropped)} on every node: no mirror is configured for them now"
    return report or [
        kube.Change("DaemonSet", settings.node_trust_name, settings.node_trust_namespace, action)
    ]


async def _roll_removal(
    api: kr8s.asyncio.Api,
    settings: Settings,
    raw: dict,
    dirs: LiveDirs,
    timeout: float,
    *,
    keep_registry: bool,
) -> list[kube.Change]:
    namespace = raw["metadata"]["namespace"]
    emptied = dirs.mirrors if keep_registry else dirs.all
    host_dir = ", ".join(emptied)
    if not (raw.get("status") or {}).get("currentNumberScheduled"):
        # No pod could be made (e.g. Pod Security Admission refuses them): none can
        # remove anything either, and none wrote anything while that lasted.
        action = (
            f"no pod of it runs on any node to remove files; if it ever wrote them, "
            f"remove {host_dir} on the nodes by hand"
        )
        return [kube.Change("DaemonSet", settings.node_trust_name, namespace, action)]
    removal = render.node_trust_removal(
        settings,
        host_dir=dirs.registry,
        image=dirs.image,
        mirror_dirs=dirs.mirrors,
        keep_registry=keep_registry,
    )
    removal["metadata"]["namespace"] = namespace
    await kube.apply_object(api, removal)
    try:
        await wait_on_every_node(api, settings, timeout, removing=True, namespace=namespace)
    except ReadinessTimeout as error:
        action = (
            f"the registry's files may remain in {host_dir} on these nodes; "
            f"remove them there by hand:\n{error.diagnosis}"
        )
        return [kube.Change("DaemonSet", settings.node_trust_name, namespace, action)]
    return []
