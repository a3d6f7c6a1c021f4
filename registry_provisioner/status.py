"""What `invoke status` shows: each object's state, certificate expiry, storage used."""

from __future__ import annotations

import re

import kr8s.asyncio

from . import kube, lease, maintenance, notebook, ownership, render
from .certificates import certificate_expiry
from .config import MirrorSettings, Settings
from .credentials import tls_secret_value


async def status_lines(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """What is installed and how it is doing, for `invoke status`."""
    lines = [f"registry {settings.name} in namespace {settings.namespace}:"]
    settings = await notebook.settled(api, settings)
    found = await notebook.detect(api, settings)
    if found is not None:
        settings = notebook.adopting(settings, found)
        lines += notebook.plan(settings, found)
        lines.append(
            "  `invoke provision --adopt` takes it over (README: Coming from the Ansible notebook)"
        )
    for manifest in render.render_manifests(settings, None):
        meta = manifest["metadata"]
        found = await kube.get_all(
            api, manifest["kind"], meta["name"], namespace=meta.get("namespace")
        )
        state = _state(found)
        other = ownership.foreign(found[0].raw, settings) if found else None
        if other is not None:
            made_by = f"install {other.owner}" if other.owner else "someone else"
            state = f"{state}, made by {made_by}, not this install"
        lines.append(f"  {manifest['kind']}/{meta['name']}: {state}")
    if settings.node_trust.enabled:
        lines.append(f"  node trust CA copy: {await _ca_copy_state(api, settings)}")
    serving = await tls_secret_value(api, settings, "tls.crt")
    if serving:
        expiry = certificate_expiry(serving)
        lines.append(f"  certificate expires: {expiry:%Y-%m-%d %H:%M} UTC")
    where = f" (in {settings.storage.sub_path}/ of the claim)" if settings.storage.sub_path else ""
    lines.append(f"  storage used: {await _storage_used(api, settings)}{where}")
    deployment = await maintenance.deployment_of(api, settings)
    if deployment is not None and kube.managed_by(deployment.raw, maintenance.FIELD_MANAGER):
        reason = deployment.annotations.get(maintenance.REASON_ANNOTATION, "maintenance")
        lines.append(f"  read-only: {reason} (if no `invoke gc` runs, `invoke provision` ends it)")
    holder = await lease.live_holder(api, settings)
    if holder is not None:
        lines.append(f"  maintenance: {holder}")
    for mirror in settings.mirrors:
        lines += await _mirror_lines(api, settings, mirror)
    return lines


# distribution's proxy counters, e.g. registry_proxy_hits_total{type="blob"} 3
_PROXY_COUNTER = re.compile(
    r'^registry_proxy_(hits|misses)_total\{type="(blob|manifest)"\} (\S+)$', re.MULTILINE
)


def proxy_counts(metrics: str) -> dict[str, dict[str, int]]:
    """Hits and misses per type (blob, manifest) from the mirror's Prometheus text."""
    counts: dict[str, dict[str, int]] = {"hits": {}, "misses": {}}
    for what, kind, value in _PROXY_COUNTER.findall(metrics):
        counts[what][kind] = int(float(value))
    return counts


def _counts_line(counts: dict[str, dict[str, int]]) -> str:
    def one(what: str) -> str:
        found = counts[what]
        return f"{what} {found.get('blob', 0)} blobs, {found.get('manifest', 0)} manifests"

    return f"{one('hits')}; {one('misses')} (fetched from the upstream)"


async def _mirror_pod(api: kr8s.asyncio.Api, settings: Settings, mirror: MirrorSettings):
    selector = render.mirror_pod_selector(settings, mirror)
    pods = await kube.running_pods(api, settings.namespace, selector)
    return pods[0] if pods else None


async def mirror_metrics(api: kr8s.asyncio.Api, settings: Settings, mirror: MirrorSettings) -> str:
    """The mirror's Prometheus text, read inside its pod (the metrics port is not exposed)."""
    pod = await _mirror_pod(api, settings, mirror)
    if pod is None:
        return ""
    get = "printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n'"
    request = f"{get} | nc -w 3 127.0.0.1 {settings.metrics_port}"
    result = await pod.exec(["sh", "-c", request], container=maintenance.CONTAINER, check=False)
    return result.stdout.decode(errors="replace")


async def _mirror_lines(
    api: kr8s.asyncio.Api, settings: Settings, mirror: MirrorSettings
) -> list[str]:
    """Which upstream, where nodes reach it, its hit counts and the space it uses."""
    head = f"  mirror of {mirror.upstream} for {mirror.host}/... at {settings.mirror_url(mirror)}:"
    pod = await _mirror_pod(api, settings, mirror)
    if pod is None:
        return [head, "    no running pod"]
    metrics = await mirror_metrics(api, settings, mirror)
    used = await pod.exec(
        ["du", "-sh", "/var/lib/registry"], container=maintenance.CONTAINER, check=False
    )
    size = used.stdout.decode().split()
    return [
        head,
        f"    {_counts_line(proxy_counts(metrics))}",
        f"    storage used: {size[0] if size else 'unknown'} of {mirror.size}, "
        f"cached for {mirror.ttl}",
    ]


async def _ca_copy_state(api: kr8s.asyncio.Api, settings: Settings) -> str:
    """Whether node trust's copy of the CA matches the TLS Secret's (a renewal that
    changed the CA reaches the nodes only with the next provision)."""
    copy = await kube.read(
        api,
        f"configmaps/{settings.node_trust_ca_name}",
        namespace=settings.node_trust_namespace,
    )
    if copy is None:
        return "absent"
    current = await tls_secret_value(api, settings, "ca.crt")
    if (copy.get("data") or {}).get("ca.crt", "") == current:
        return "current"
    return "stale: the TLS Secret holds another CA; run `invoke provision` to copy it"


def _state(found) -> str:
    if not found:
        return "absent"
    raw = (found[0] if isinstance(found, list) else found).raw
    status = raw.get("status", {})
    if raw["kind"] == "Deployment":
        return f"{status.get('readyReplicas', 0)}/{raw['spec']['replicas']} ready"
    if raw["kind"] == "Service":
        ingress = status.get("loadBalancer", {}).get("ingress", [])
        return f"LoadBalancer IP {ingress[0]['ip']}" if ingress else "LoadBalancer IP pending"
    if raw["kind"] == "PersistentVolumeClaim":
        return f"{status.get('phase')} ({status.get('capacity', {}).get('storage', '?')})"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if "Ready" in conditions:
        return "Ready" if conditions["Ready"] == "True" else "not Ready"
    return "present"


async def _storage_used(api: kr8s.asyncio.Api, settings: Settings) -> str:
    if not settings.storage.on_claim:
        return f"in S3 bucket {settings.storage.s3.bucket} (not measured)"
    selector = render.component_selector(settings, "registry")
    registry_pods = await kube.running_pods(api, settings.namespace, selector)
    if not registry_pods:
        return "unknown (no running registry pod)"
    # The volume is mounted into distribution's container only, not the proxy's.
    result = await registry_pods[0].exec(
        ["du", "-sh", "/var/lib/registry"], container=maintenance.CONTAINER, check=False
    )
    used = result.stdout.decode().split()
    return f"{used[0]} of {settings.storage.size}" if used else "unknown"
