"""The registry binary the image runs, started on loopback with the cluster's own config.

The config is the one rendered into the registry ConfigMap, with only the
addresses and file paths moved to a temporary directory; the login has the
same bcrypt cost and the certificate the same key type (ECDSA P-256). What
differs from the pod is then only the path in between: kube-proxy, the pod
network, the container runtime and the volume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from registry_provisioner import render
from registry_provisioner.config import Settings
from registry_provisioner.secrets import generate_credentials, self_signed_ca_and_server_cert
from scripts.local_cluster import build, components

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class LoopbackRegistry:
    url: str
    username: str
    password: str = field(repr=False)
    ca_file: Path
    storage_dir: Path
    pid: int


def registry_binary() -> Path:
    """The cached distribution build (the same version the image is made from)."""
    return build.build(components.distribution())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_config(settings: Settings) -> dict:
    """config.yml exactly as the registry pod reads it from its ConfigMap."""
    for manifest in render.render_manifests(settings, None):
        if manifest["kind"] == "ConfigMap" and (
            manifest["metadata"]["name"] == settings.registry_config_name
        ):
            return yaml.safe_load(manifest["data"]["config.yml"])
    raise LookupError("the rendered manifests hold no registry ConfigMap")


def loopback_config(settings: Settings, work_dir: Path, port: int, debug_port: int) -> dict:
    """The cluster config with addresses on 127.0.0.1 and paths under work_dir."""
    config = cluster_config(settings)
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
    config["http"]["tls"] = {
        "certificate": str(work_dir / "tls.crt"),
        "key": str(work_dir / "tls.key"),
    }
    config["storage"]["filesystem"]["rootdirectory"] = str(work_dir / "storage")
    config["auth"]["htpasswd"]["path"] = str(work_dir / "htpasswd")
    return config


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def _wait_serving(process: subprocess.Popen[bytes], url: str, ca_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file)), timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if http.get(url + "/").status_code == 200:
                    return
            if process.poll() is not None:
                raise RuntimeError(f"the loopback registry exited with status {process.returncode}")
            time.sleep(0.1)
    raise TimeoutError("the loopback registry did not answer GET / in time")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def run_loopback(settings: Settings, work_dir: Path) -> Iterator[LoopbackRegistry]:
    """Start the registry serving https://127.0.0.1:<port>, stop it on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    credentials = generate_credentials(settings)  # the same bcrypt cost as the pod's
    ca_pem, cert_pem, key_pem = self_signed_ca_and_server_cert([], ["127.0.0.1"])
    ca_file = work_dir / "ca.crt"
    ca_file.write_text(ca_pem)
    (work_dir / "tls.crt").write_text(cert_pem)
    _write_private(work_dir / "tls.key", key_pem)
    _write_private(work_dir / "htpasswd", credentials.htpasswd + "\n")
    port, debug_port = _free_port(), _free_port()
    config_file = work_dir / "config.yml"
    config_file.write_text(yaml.safe_dump(loopback_config(settings, work_dir, port, debug_port)))
    # As in the pod: the http secret from the environment, no other REGISTRY_* override.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(OTEL_TRACES_EXPORTER="none", REGISTRY_HTTP_SECRET=credentials.http_secret)
    url = f"https://127.0.0.1:{port}"
    with (work_dir / "registry.log").open("ab") as log:
        process = subprocess.Popen(
            [str(registry_binary()), "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work_dir,
        )
    try:
        _wait_serving(process, url, ca_file)
        yield LoopbackRegistry(
            url=url,
            username=credentials.username,
            password=credentials.password,
            ca_file=ca_file,
            storage_dir=work_dir / "storage",
            pid=process.pid,
        )
    finally:
        _stop(process)
