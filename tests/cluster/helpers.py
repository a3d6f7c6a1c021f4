"""Run the tasks exactly as a user types them, against the local cluster."""

from __future__ import annotations

import asyncio
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
