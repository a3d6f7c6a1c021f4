"""Remove the registry: by default its data, login and certificate stay for the next provision.

Only objects this install created are deleted (see ownership.py); anything else
that carries one of our names is left as it is and reported.
"""

from __future__ import annotations

import asyncio
import base64

import kr8s
import kr8s.asyncio

from . import bucket, kube, node_probe, node_trust, ownership, render
from .config import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, Settings
from .credentials import ca_secret_name

LEFT_FOREIGN = "left alone: this install did not create it"
LEFT_NAMESPACE = "left: it existed before this registry; only our objects in it were deleted"


def _kept(settings: Settings, manifest: dict) -> bool:
    """Unprovision without purge keeps the data and the login that protects it.

    Node trust's namespace holds neither, so it goes with the DaemonSet.
    """
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    secrets = {settings.auth.secret_name, settings.tls.secret_name, ca_secret_name(settings)}
    if kind == "Namespace":
        return name != settings.node_trust_namespace
    if kind == "PersistentVolumeClaim":
        return True
    in_our_namespace = manifest["metadata"].get("namespace") == settings.namespace
    return kind == "Secret" and name in secrets and in_our_namespace


async def _candidates(api: kr8s.asyncio.Api, settings: Settings) -> list[dict]:
    """What this install may have made: the rendered objects, cert-manager's Secret, strays.

    Node trust's objects are looked for even when node_trust.enabled is now false, and
    so are the DaemonSet that earlier releases ran in the registry's namespace and the
    ConfigMap that releases before issue 11 kept its script in.
    """
    manifests = render.render_manifests(settings, None)
    if settings.tls.mode == "cert-manager":
        manifests.append(ownership.cert_manager_secret(settings))
    if not settings.node_trust.enabled:
        manifests += node_trust.owned_refs(settings)
    manifests.append(node_trust.previous_daemonset(settings))
    manifests.append(node_trust.legacy_config_map(settings))
    manifests += await stray_mirrors(api, settings)
    return manifests + await _strays(api, settings, manifests)


async def _sorted(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict]
) -> tuple[list[dict], list[kube.Change]]:
    """Ours to delete (with the uid read, as a precondition), and report lines for the rest."""
    found = await asyncio.gather(*(ownership.live(api, m) for m in manifests))
    ours, report = [], []
    for manifest, raw in zip(manifests, found, strict=True):
        meta = manifest["metadata"]
        if raw is None:
            action = "absent"
        elif ownership.foreign(raw, settings) is None:
            meta = {**meta, "uid": raw["metadata"]["uid"]}
            ours.append({**manifest, "metadata": meta})
            continue
        else:
            action = LEFT_NAMESPACE if manifest["kind"] == "Namespace" else LEFT_FOREIGN
        report.append(kube.Change(manifest["kind"], meta["name"], meta.get("namespace"), action))
    return ours, report


async def unprovision(
    api: kr8s.asyncio.Api, settings: Settings, *, purge: bool = False
) -> list[kube.Change]:
    """Delete what this install made; `purge` also takes the data, login and namespace."""
    manifests = await _candidates(api, settings)
    if not purge:
        manifests = [m for m in manifests if not _kept(settings, m)]
    ours, report = await _sorted(api, settings, manifests)
    daemonsets = {m["metadata"]["namespace"]: m for m in ours if m["kind"] == "DaemonSet"}
    deleted: list[kube.Change] = []
    previous = daemonsets.get(settings.namespace)
    if previous is not None and settings.node_trust_namespace in daemonsets:
        # An upgrade that stopped half-way: both run. The old one's pods would write the
        # files again, so it goes first; the new one then removes them.
        deleted = await kube.delete_manifests(api, [previous])
        ours.remove(previous)
        daemonsets.pop(settings.namespace)
    for namespace in daemonsets:
        # The pods keep the node files when they stop; they empty them before they go.
        report += await node_trust.remove_files(api, settings, namespace=namespace)
    if settings.probes_nodes:  # a killed provision's probe pods
        deleted += await node_probe.remove_probes(api, settings)
    deleted += await kube.delete_manifests(api, ours)
    if purge and settings.storage.backend == "s3":
        report.append(await _empty_bucket_prefix(api, settings))
    return deleted + report


async def _empty_bucket_prefix(api: kr8s.asyncio.Api, settings: Settings) -> kube.Change:
    """Purge on S3: delete what distribution wrote under root_directory, never the bucket.

    Runs after the registry pods are gone, with the user's credentials Secret (which
    purge leaves alone); an in-cluster Service endpoint is reached through the API server,
    and any other endpoint that does not answer from here is reported, not guessed.
    """
    s3 = settings.storage.s3
    where = f"{s3.bucket}/{bucket.storage_prefix(s3)}"
    secret = await kube.read(api, f"secrets/{s3.credentials_secret}", namespace=settings.namespace)
    data = (secret or {}).get("data") or {}
    if not {S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY} <= set(data):
        action = (
            f"left: Secret {s3.credentials_secret} is gone, so the objects could not be deleted"
        )
        return kube.Change("S3 objects", where, None, action)
    login = bucket.Login(
        base64.b64decode(data[S3_ACCESS_KEY_ID]).decode(),
        base64.b64decode(data[S3_SECRET_ACCESS_KEY]).decode(),
    )
    ca_pem = ""
    if s3.ca_configmap:
        ca = await kube.read(api, f"configmaps/{s3.ca_configmap}", namespace=settings.namespace)
        ca_pem = ((ca or {}).get("data") or {}).get("ca.crt", "")
    try:
        count = await bucket.empty_prefix(s3, login, ca_pem, api)
    except OSError as error:
        return kube.Change("S3 objects", where, None, f"left: {error}")
    if count is None:
        action = f"left: {bucket.endpoint_url(s3)} does not answer from here; delete them there"
        return kube.Change("S3 objects", where, None, action)
    return kube.Change("S3 objects", where, None, f"deleted ({count}; the bucket stays)")


# A mirror's objects, in apply order (deletion walks them backwards).
MIRROR_KINDS = (
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
)


async def stray_mirrors(api: kr8s.asyncio.Api, settings: Settings) -> list[dict]:
    """The objects of mirrors that the settings no longer list (found by their labels)."""
    listed = {m.slug for m in settings.mirrors}
    selector = render.component_selector(settings, "mirror")
    found = []
    for version, kind, plural in MIRROR_KINDS:
        for obj in await kube.get_all(
            api, plural, namespace=settings.namespace, label_selector=selector
        ):
            if obj.labels.get(render.MIRROR_LABEL) not in listed:
                meta = {"name": obj.name, "namespace": obj.namespace}
                found.append({"apiVersion": version, "kind": kind, "metadata": meta})
    return found


async def drop_stray_mirrors(
    api: kr8s.asyncio.Api, settings: Settings, *, dry_run: bool = False
) -> list[kube.Change]:
    """A provision after a mirror left the settings deletes what this install made for
    it (never another's), except its claim, which unprovision --purge deletes."""
    strays = [m for m in await stray_mirrors(api, settings) if m["kind"] != "PersistentVolumeClaim"]
    ours, _ = await _sorted(api, settings, strays)
    if dry_run:
        return [
            kube.Change(
                m["kind"], m["metadata"]["name"], m["metadata"]["namespace"], "would be deleted"
            )
            for m in ours
        ]
    return await kube.delete_manifests(api, ours)


async def _strays(api: kr8s.asyncio.Api, settings: Settings, rendered: list[dict]) -> list[dict]:
    """Our objects in other namespaces that the current config no longer names.

    A namespace dropped from pull_secret.namespaces still holds its pull Secret.
    """
    names = {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in rendered}
    found = []
    for kind in ("Secret", "ConfigMap"):
        for obj in await kube.get_all(
            api,
            kind.lower() + "s",
            namespace=kr8s.ALL,
            label_selector=render.label_selector(settings),
        ):
            key = (kind, obj.namespace, obj.name)
            if obj.namespace != settings.namespace and key not in names:
                found.append(
                    {
                        "apiVersion": "v1",
                        "kind": kind,
                        "metadata": {"name": obj.name, "namespace": obj.namespace},
                    }
                )
    return found


async def switch_off_node_trust(
    api: kr8s.asyncio.Api, settings: Settings, *, dry_run: bool = False
) -> list[kube.Change]:
    """node_trust.enabled turned false: empty the nodes' directory, then delete what this
    install made for node trust (never another's), as unprovision would."""
    ours, _ = await _sorted(api, settings, node_trust.owned_refs(settings))
    if dry_run:
        return [
            kube.Change(
                m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"), "would be deleted"
            )
            for m in ours
        ]
    report = []
    if any(m["kind"] == "DaemonSet" for m in ours):
        report = await node_trust.remove_files(api, settings)
    return await kube.delete_manifests(api, ours) + report
