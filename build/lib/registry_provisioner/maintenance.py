"""Read-only maintenance mode: a temporary override on the registry's Deployment.

While distribution's ``storage.maintenance.readonly`` is enabled it refuses
pushes and deletes (HTTP 405) and still serves pulls, which is what garbage
collection needs: no new manifest can come to reference a blob being swept.
distribution reads its configuration only at start, so the mode is an
environment variable on the pod template and switching it rolls the pods.

The override is applied server-side under its own field manager, never ours:
``provision`` (manager ``registry-provisioner``) neither owns nor overwrites it,
and applying an empty object under the maintenance manager removes exactly the
fields it set and nothing of provision's. A leftover from an interrupted run
shows in ``metadata.managedFields``; ``provision`` clears it.
"""

from __future__ import annotations

import kr8s
import kr8s.asyncio

from . import kube
from .config import Settings
from .errors import ProvisionError

FIELD_MANAGER = "registry-provisioner-maintenance"
# The registry container's name in manifests/deployment.yaml.j2.
CONTAINER = "registry"
# distribution maps REGISTRY_STORAGE_MAINTENANCE_READONLY onto storage.maintenance.readonly
# and parses the value as YAML: it must be a mapping with a boolean `enabled`.
READ_ONLY_ENV = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
READ_ONLY_VALUE = '{"enabled": true}'
# On the Deployment, so `kubectl describe` tells why the registry refuses pushes.
REASON_ANNOTATION = "registry-provisioner/read-only"


def _identity(settings: Settings) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": settings.name, "namespace": settings.namespace},
    }


def read_only_fields(settings: Settings, reason: str) -> dict:
    """The fields the maintenance manager owns while the registry is read-only."""
    fields = _identity(settings)
    fields["metadata"]["annotations"] = {REASON_ANNOTATION: reason}
    env = [{"name": READ_ONLY_ENV, "value": READ_ONLY_VALUE}]
    fields["spec"] = {"template": {"spec": {"containers": [{"name": CONTAINER, "env": env}]}}}
    return fields


def released_fields(settings: Settings) -> dict:
    """No fields at all: applied, it removes everything the maintenance manager set."""
    return _identity(settings)


def pod_is_read_only(pod: dict) -> bool:
    """Whether the pod's registry container runs with the read-only override."""
    for container in pod.get("spec", {}).get("containers", []):
        if container.get("name") == CONTAINER:
            env = {e.get("name"): e.get("value") for e in container.get("env") or []}
            return env.get(READ_ONLY_ENV) == READ_ONLY_VALUE
    return False


async def deployment_of(api: kr8s.asyncio.Api, settings: Settings):
    """The registry's Deployment, or None when it is not installed."""
    found = await kube.get_all(api, "deployments", settings.name, namespace=settings.namespace)
    return found[0] if found else None


async def enter_read_only(api: kr8s.asyncio.Api, settings: Settings, reason: str) -> None:
    """Put the override on the Deployment; the pods roll (wait for that separately)."""
    try:
        await kube.apply_fields(api, read_only_fields(settings, reason), FIELD_MANAGER)
    except kr8s.ServerError as error:
        if error.response is not None and error.response.status_code == 409:
            raise ProvisionError(
                f"Deployment {settings.namespace}/{settings.name}: someone else set "
                f"{READ_ONLY_ENV} to another value ({error}); remove it first"
            ) from error
        raise


async def leave_read_only(
    api: kr8s.asyncio.Api, settings: Settings, *, dry_run: bool = False
) -> bool:
    """Remove the override if it is there; True when it was (and so the pods roll)."""
    deployment = await deployment_of(api, settings)
    if deployment is None or not kube.managed_by(deployment.raw, FIELD_MANAGER):
        return False
    await kube.apply_fields(api, released_fields(settings), FIELD_MANAGER, dry_run=dry_run)
    return True
