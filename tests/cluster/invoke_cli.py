"""Run the tasks exactly as a user types them, against the local cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str, kubeconfig: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`invoke TASK --local ...`; output is captured, never echoed with secrets in it."""
    task, *rest = args
    command = [sys.executable, "-m", "invoke", task, "--local", "--kubeconfig", kubeconfig, *rest]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
