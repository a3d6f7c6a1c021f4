"""Run the tasks exactly as a user types them, against the local cluster."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str, kubeconfig: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`invoke TASK --local ...`; output is captured, never echoed with secrets in it."""
    task, *rest = args
    command = [sys.executable, "-m", "invoke", task, "--local", "--kubeconfig", kubeconfig, *rest]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


async def until_answers(client: RegistryClient) -> None:
    """A Ready pod, then kube-proxy programs its endpoint: wait for the answer itself.

    Bound it with asyncio.wait_for.
    """
    while True:
        try:
            await client.ping()
            return
        except RegistryError:
            await asyncio.sleep(0.5)


def isolated_overrides(namespace: str, ip: str) -> dict[str, str]:
    """Settings for a registry that shares nothing with the others on the cluster.

    Its pull secret stays in its own namespace, out of `default` and kube-public.
    """
    return {
        "namespace": namespace,
        "service.ip": ip,
        "pull_secret.namespaces": f"[{namespace}]",
        "discovery.publish_local_registry_hosting": "false",
    }


def set_args(overrides: dict[str, str]) -> list[str]:
    """The same settings as the tasks' --set arguments."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def decoded(secret: dict, key: str) -> str:
    """One value of a Secret's data, as text."""
    return base64.b64decode(secret["data"][key]).decode()
