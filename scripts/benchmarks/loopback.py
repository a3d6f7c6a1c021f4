"""The registry pod's two programs, started on loopback with the pod's own configs.

distribution runs the config.yml rendered into the registry ConfigMap and Caddy
the caddy.json rendered next to it, with only addresses and file paths moved to
a temporary directory: distribution on 127.0.0.1 in plain HTTP, Caddy in front
with TLS (ECDSA P-256, as cert-manager issues) and both logins' bcrypt hashes at
the product's cost. What differs from the pod is then only the path in between:
kube-proxy, the pod network, the container runtime and the volume, so "cluster /
loopback" compares the same software.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from registry_provisioner import render
from registry_provisioner.config import Settings
from registry_provisioner.logins import BCRYPT_ROUNDS
from scripts.loopback_proxy import RunningProxy, run_proxied_registry


def _registry_configmap(settings: Settings) -> dict[str, str]:
    for manifest in render.render_manifests(settings, None):
        if manifest["kind"] == "ConfigMap" and (
            manifest["metadata"]["name"] == settings.registry_config_name
        ):
            return manifest["data"]
    raise LookupError("the rendered manifests hold no registry ConfigMap")


def cluster_config(settings: Settings) -> dict[str, Any]:
    """config.yml exactly as the registry pod reads it from its ConfigMap."""
    return yaml.safe_load(_registry_configmap(settings)["config.yml"])


def proxy_config(settings: Settings) -> dict[str, Any]:
    """caddy.json exactly as the registry pod's proxy reads it from the same ConfigMap."""
    return json.loads(_registry_configmap(settings)["caddy.json"])


@contextmanager
def run_loopback(settings: Settings, work_dir: Path) -> Iterator[RunningProxy]:
    """Serve https://127.0.0.1:<port> as the pod would, with its logins; stop on exit."""
    with run_proxied_registry(
        work_dir,
        bcrypt_rounds=BCRYPT_ROUNDS,
        registry_config=cluster_config(settings),
        proxy_config=proxy_config(settings),
        admin_username=settings.auth.username,
        pull_username=settings.auth.pull_username,
    ) as proxy:
        yield proxy
