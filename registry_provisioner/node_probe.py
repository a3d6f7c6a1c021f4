"""Before provision changes anything: may node trust write each mirror's hosts.toml?

k3s writes `<certs_dir>/<host>/hosts.toml` for every host its registries.yaml
configures, and nothing in the API says so. A hosts.toml this tool did not write is
left as it is (unless `mirrors[i].replace_node_config`), so that node would not use
the mirror. One short-lived read-only pod per node (manifests/node-probe.yaml.j2)
looks first, and provision refuses, naming node, file and fix, before it applies
anything. Node trust's pods still refuse such a file written later (a k3s restart).

The pods run in node trust's namespace, the one place whose Pod Security allows a
host path. When this run has to create that namespace and then refuses, it deletes it
again, so a refusal leaves the cluster as it was.
"""

from __future__ import annotations

import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import Pod

from . import kube, render
from .config import Settings
from .errors import ProvisionError
from .node_trust import REFUSAL, live_dirs, on_every_node, pod_log
from .preflight import refuse
from .waiting import all_of, diagnose_pods, first_of, poll, wait_for

COMPONENT = "node-probe"
# kubelet's event when a `type: Directory` host path is missing: nothing there to find.
_NO_DIRECTORY = "hostPath type check failed"
_EVENT_POLL_SECONDS = 1.0
_ENDED = ("Succeeded", "Failed")


async def check_nodes(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict], timeout: float
) -> list[kube.Change]:
    """Raise PreflightError, leaving the cluster as it was, if a node holds a hosts.toml
    not ours where a mirror's belongs; else the changes made to look (node trust's
    namespace, when this run created it)."""
    if not settings.probes_nodes or await _files_already_ours(api, settings):
        return []
    namespace = _namespace_manifest(settings, manifests)
    made = [await kube.apply_object(api, namespace)] if namespace else []
    await remove_probes(api, settings)  # a killed run's
    try:
        nodes = await kube.get_all(api, "nodes")
        found = await all_of(*(_probe(api, settings, node.name, timeout) for node in nodes))
    finally:
        await remove_probes(api, settings)
    refusals = [line for lines in found for line in lines]
    if refusals and namespace and made[0].action == "created":
        await kube.delete_manifests(api, [namespace], timeout)
    refuse(refusals)
    return made


async def _files_already_ours(api: kr8s.asyncio.Api, settings: Settings) -> bool:
    """Node trust already holds every mirror's directory on every node: nothing to ask.

    Its pods are ready only where hosts.toml is ours, so this keeps a re-provision
    from starting a pod per node each time."""
    raw = await kube.read(
        api,
        f"daemonsets/{settings.node_trust_name}",
        version="apps/v1",
        namespace=settings.node_trust_namespace,
    )
    if raw is None or raw["spec"]["template"]["spec"]["containers"][0]["args"][-1] != "sync":
        return False
    live = live_dirs(raw)
    wanted = {settings.node_mirror_dir(m) for m in settings.mirrors}
    return live is not None and wanted <= set(live.mirrors) and on_every_node(raw)


def _namespace_manifest(settings: Settings, manifests: list[dict]) -> dict | None:
    """Node trust's namespace as provision applies it; None when the settings name one
    that someone else made (preflight has checked it exists)."""
    for manifest in manifests:
        if manifest["kind"] == "Namespace" and (
            manifest["metadata"]["name"] == settings.node_trust_namespace
        ):
            return manifest
    return None


async def _probe(api: kr8s.asyncio.Api, settings: Settings, node: str, timeout: float) -> list[str]:
    """`node N: <refusal>` for each hosts.toml on `node` that is not ours."""
    manifest = render.node_probe(settings, node)
    pod = await kube.object_for(api, manifest)
    await pod.create()
    what = f"node {node}'s containerd hosts directory to be read (pod {pod.name})"
    missing = await wait_for(
        what,
        lambda: first_of(_finished(pod), _no_directory(api, pod)),
        timeout,
        lambda: diagnose_pods(api, pod.namespace, render.component_selector(settings, COMPONENT)),
    )
    if missing:
        return []
    log = await pod_log(pod)
    if pod.raw["status"].get("phase") != "Succeeded":
        # The pod goes with this run: its last words go into the message.
        raise ProvisionError(
            f"could not read node {node}'s {settings.node_trust.certs_dir}: pod {pod.name} "
            f"failed: {' / '.join(log[-5:]) or 'it logged nothing'}"
        )
    return [f"node {node}: {line}" for line in log if line.startswith(REFUSAL)]


async def _finished(pod: Pod) -> bool:
    """False (the directory is there) once the pod has run to its end, either way."""
    await kube.wait_until(pod, lambda raw: raw.get("status", {}).get("phase") in _ENDED)
    return False


async def _no_directory(api: kr8s.asyncio.Api, pod: Pod) -> bool:
    """True once kubelet reports that `certs_dir` does not exist on the node."""

    async def reported() -> bool:
        events = await kube.events_about(api, pod.namespace, pod.name, "Pod")
        return any(_NO_DIRECTORY in (event.get("message") or "") for event in events)

    await poll(reported, _EVENT_POLL_SECONDS)
    return True


async def remove_probes(api: kr8s.asyncio.Api, settings: Settings) -> list[kube.Change]:
    """Delete every probe pod of this install, a killed run's included."""
    selector = render.component_selector(settings, COMPONENT)
    pods = await kube.get_all(
        api, "pods", namespace=settings.node_trust_namespace, label_selector=selector
    )
    return await kube.delete_manifests(api, [pod.raw for pod in pods])
