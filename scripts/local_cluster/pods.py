"""The security context every pod the tests, benches and demo start carries.

The local cluster enforces Pod Security `restricted` by default (see
control_plane.write_admission_config), as a hardened homelab does; these are the
fields that level asks for, written once.
"""

from __future__ import annotations

from typing import Any

# nobody: a numeric uid, so the kubelet can check runAsNonRoot without reading the image.
UNPRIVILEGED_UID = 65534

POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": UNPRIVILEGED_UID,
    "runAsGroup": UNPRIVILEGED_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def restricted(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` with the `restricted` fields set on it and on each of its containers."""
    containers = [
        {**c, "securityContext": {**CONTAINER_SECURITY_CONTEXT, **c.get("securityContext", {})}}
        for c in pod_spec.get("containers", [])
    ]
    security = {**POD_SECURITY_CONTEXT, **pod_spec.get("securityContext", {})}
    return {**pod_spec, "securityContext": security, "containers": containers}
