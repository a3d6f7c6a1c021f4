"""Which objects on the cluster this install created, and may therefore change or delete.

Like Helm's release annotations: every object we create carries the install's
identity, and an object without it is someone else's. Provision refuses to take
such an object over unless told to (`--adopt`); unprovision never deletes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import kr8s.asyncio

from . import kube
from .config import Settings

OWNER_ANNOTATION = "registry-provisioner/owner"
MANAGED_BY = "registry-provisioner"
# Applies by the releases before the owner annotation existed carry only this manager.
LEGACY_FIELD_MANAGER = "registry-provisioner"


def install_id(settings: Settings) -> str:
    """The install's identity: its namespace and name, as `namespace/name`."""
    return f"{settings.namespace}/{settings.name}"


def stamp(manifest: dict, settings: Settings) -> dict:
    """The manifest with this install's owner annotation (and its Secret's, for cert-manager)."""
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[OWNER_ANNOTATION] = install_id(settings)
    if manifest["kind"] == "Certificate":
        template = manifest["spec"].setdefault("secretTemplate", {})
        template.setdefault("annotations", {})[OWNER_ANNOTATION] = install_id(settings)
    return manifest


def _legacy_owner(raw: dict) -> str | None:
    """An object of a release before the annotation: our labels, and applied by us
    (our field manager) or issued for our Certificate by cert-manager."""
    metadata = raw.get("metadata", {})
    labels = metadata.get("labels") or {}
    applied = any(
        entry.get("manager") == LEGACY_FIELD_MANAGER
        for entry in metadata.get("managedFields") or []
    )
    issued = "cert-manager.io/certificate-name" in (metadata.get("annotations") or {})
    if (applied or issued) and labels.get("app.kubernetes.io/managed-by") == MANAGED_BY:
        instance = labels.get("app.kubernetes.io/instance")
        name = labels.get("app.kubernetes.io/name")
        if instance and name:
            return f"{instance}/{name}"
    return None


def owner_of(raw: dict) -> str | None:
    """The install that created the object, or None when no install of ours did."""
    annotations = raw.get("metadata", {}).get("annotations") or {}
    return annotations.get(OWNER_ANNOTATION) or _legacy_owner(raw)


@dataclass(frozen=True)
class Foreign:
    """An existing object this install did not create."""

    kind: str
    namespace: str | None
    name: str
    owner: str | None  # another install's identity, or None for anyone else

    @property
    def where(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"

    def problem(self, hint: str) -> str:
        made_by = f"registry install {self.owner}" if self.owner else "someone else"
        return f"{self.where} exists and was made by {made_by}, not this install: {hint}"


def foreign(raw: dict, settings: Settings) -> Foreign | None:
    """The object as Foreign when it exists and is not ours, else None."""
    owner = owner_of(raw)
    if owner == install_id(settings):
        return None
    metadata = raw["metadata"]
    return Foreign(raw["kind"], metadata.get("namespace"), metadata["name"], owner)


# ------------------------------------------------------------------ on the cluster


# The setting that names each object, for the hint on a clash with another install.
def _naming_setting(manifest: dict, settings: Settings) -> str:
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    if kind == "ConfigMap" and manifest["metadata"].get("namespace") == "kube-public":
        return "discovery.publish_local_registry_hosting=false (one registry per cluster is it)"
    by_name = {
        settings.pull_secret.name: "pull_secret.name",
        settings.auth.secret_name: "auth.secret_name",
        settings.tls.secret_name: "tls.secret_name",
        settings.storage.claim_name: "storage.claim_name",
        settings.service.name: "service.name",
    }
    return f"another {by_name.get(name, 'name')}"


async def live(api: kr8s.asyncio.Api, manifest: dict) -> dict | None:
    """The object the manifest names, as it is on the cluster; None only when absent."""
    where = await kube.locate(api, manifest)
    return await kube.read(api, where.path, version=where.version, namespace=where.namespace)


def cert_manager_secret(settings: Settings) -> dict:
    """The TLS Secret cert-manager issues for our Certificate; we never apply it ourselves."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": settings.tls.secret_name, "namespace": settings.namespace},
    }


async def takeover_problems(
    api: kr8s.asyncio.Api,
    settings: Settings,
    manifests: list[dict],
    *,
    adopt: bool,
    versions: kube.Versions | None = None,
) -> list[str]:
    """Existing objects provision would overwrite though this install did not create them.

    With `adopt`, objects nobody of ours made are taken over; another install's never are.
    `versions`, if given, receives what each read found, so the apply need not read again.
    """
    checked = [m for m in manifests if m["kind"] != "Namespace"]
    if settings.tls.mode == "cert-manager":
        checked.append(cert_manager_secret(settings))
    found = await asyncio.gather(*(live(api, m) for m in checked))
    if versions is not None:
        kube.record_versions(versions, checked, found)
    problems = []
    for manifest, raw in zip(checked, found, strict=True):
        other = foreign(raw, settings) if raw else None
        if other is None or (adopt and other.owner is None):
            continue
        if other.owner:
            hint = (
                f"give this install {_naming_setting(manifest, settings)}, "
                f"or unprovision install {other.owner} first"
            )
        else:
            hint = (
                "rename or delete it, or run provision with --adopt to take it over "
                "(provision then overwrites it and unprovision --purge deletes it)"
            )
        problems.append(other.problem(hint))
    return problems


async def adopt(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict], *, dry_run: bool
) -> list[kube.Change]:
    """Take over the objects nobody of ours made, by replacing them with our manifest.

    A replace, not a merge: a server-side apply would leave the other party's fields
    (a Service's extra port or selector key) in place beside ours. A
    PersistentVolumeClaim is only applied over, since its spec cannot change and
    its volume holds data; a namespace is never adopted.
    """
    changes = []
    for manifest in manifests:
        if manifest["kind"] in ("Namespace", "PersistentVolumeClaim"):
            continue
        raw = await live(api, manifest)
        other = foreign(raw, settings) if raw else None
        if other is None or other.owner is not None:
            continue  # ours already, or another install's (preflight refused those)
        if not dry_run:
            await kube.replace_object(api, manifest, raw["metadata"]["resourceVersion"])
        action = "would be adopted" if dry_run else "adopted: replaced with this install's own"
        changes.append(kube.Change(other.kind, other.name, other.namespace, action))
    return changes
