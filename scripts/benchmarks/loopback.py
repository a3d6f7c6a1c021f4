"""The registry binary the image runs, started on loopback with the cluster's own config.

The config is the one rendered into the registry ConfigMap, with only the
addresses and file paths moved to a temporary directory; the login has the
same bcrypt cost and the certificate the same key type (ECDSA P-256). What
differs from the pod is then only the path in between: kube-proxy, the pod
network, the container runtime and the volume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from registry_provisioner import render
from registry_provisioner.config import Settings
from registry_provisioner.logins import BCRYPT_ROUNDS
from scripts.loopback_registry import RunningRegistry, run_registry


def cluster_config(settings: Settings) -> dict[str, Any]:
    """config.yml exactly as the registry pod reads it from its ConfigMap."""
    for manifest in render.render_manifests(settings, None):
        if manifest["kind"] == "ConfigMap" and (
            manifest["metadata"]["name"] == settings.registry_config_name
        ):
            return yaml.safe_load(manifest["data"]["config.yml"])
    raise LookupError("the rendered manifests hold no registry ConfigMap")


@contextmanager
def run_loopback(settings: Settings, work_dir: Path) -> Iterator[RunningRegistry]:
    """Start the registry serving https://127.0.0.1:<port> as the pod would, stop it on exit."""
    with run_registry(
        work_dir, config=cluster_config(settings), bcrypt_rounds=BCRYPT_ROUNDS
    ) as registry:
        yield registry
