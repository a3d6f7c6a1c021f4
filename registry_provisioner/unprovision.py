"""Remove the registry: by default its data, login and certificate stay for the next provision."""

from __future__ import annotations

import kr8s
import kr8s.asyncio

from . import kube, render
from .config import Settings


def _kept(settings: Settings, manifest: dict) -> bool:
    """Unprovision without purge keeps the data and the login that protects it."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    return (
        kind == "Namespace"
        or kind == "PersistentVolumeClaim"
        or (kind == "Secret" and name == settings.auth.secret_name)
        or (kind == "Secret" and name == settings.tls.secret_name)
    )


async def unprovision(
    api: kr8s.asyncio.Api, settings: Settings, *, purge: bool = False
) -> list[kube.Change]:
    """Delete what provision made (and our strays); `purge` takes the kept objects too."""
    manifests = render.render_manifests(settings, None) + await _strays(api, settings)
    if purge:
        # Deleting the namespace takes what cert-manager made in it (the TLS Secret).
        return await kube.delete_manifests(api, manifests)
    return await kube.delete_manifests(api, [m for m in manifests if not _kept(settings, m)])


async def _strays(api: kr8s.asyncio.Api, settings: Settings) -> list[dict]:
    """Our objects in other namespaces that the current config no longer names.

    A namespace dropped from pull_secret.namespaces still holds its pull Secret.
    """
    rendered = {
        (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"])
        for m in render.render_manifests(settings, None)
    }
    found = []
    for kind in ("Secret", "ConfigMap"):
        for obj in await kube.get_all(
            api,
            kind.lower() + "s",
            namespace=kr8s.ALL,
            label_selector=render.label_selector(settings),
        ):
            key = (kind, obj.namespace, obj.name)
            if obj.namespace != settings.namespace and key not in rendered:
                found.append(
                    {
                        "apiVersion": "v1",
                        "kind": kind,
                        "metadata": {"name": obj.name, "namespace": obj.namespace},
                    }
                )
    return found
