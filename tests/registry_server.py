"""Run the real distribution v3 registry on loopback, with TLS and htpasswd auth.

Tests of the client talk to the same binary the cluster runs, configured the way
the product configures it, so what passes here is what users meet.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import yaml

from registry_provisioner.secrets import self_signed_ca_and_server_cert

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
USERNAME = "tester"
# Distribution checks bcrypt on every request; the minimum cost keeps tests quick.
BCRYPT_ROUNDS = 4
_START_ATTEMPTS = 3


@dataclass(frozen=True)
class RunningRegistry:
    """Where a started registry listens and how to reach it."""

    url: str
    host: str  # host:port, the form image references use
    ca_path: Path | None
    username: str | None
    password: str | None = field(repr=False)
    log_path: Path
    pid: int
    debug_url: str
    storage_dir: Path

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def registry_binary() -> Path:
    """The registry binary: $REGISTRY_BINARY, else the cached (or freshly built) one."""
    override = os.environ.get("REGISTRY_BINARY")
    if override:
        return Path(override)
    from scripts.local_cluster import build, components

    return build.build(components.distribution())


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key).

    The same generator as the product's self-signed mode, so tests exercise it too.
    """
    # The CA alone in its directory: clients' --cert-dir reads every file in it.
    (directory / "ca").mkdir(parents=True, exist_ok=True)
    (directory / "server").mkdir(exist_ok=True)
    ca_pem, cert_pem, key_pem = self_signed_ca_and_server_cert(["localhost"], ["127.0.0.1"])
    paths = (
        directory / "ca" / "ca.crt",
        directory / "server" / "tls.crt",
        directory / "server" / "tls.key",
    )
    for path, pem in zip(paths, (ca_pem, cert_pem, key_pem), strict=True):
        path.write_text(pem)
    paths[2].chmod(0o600)
    return paths


def htpasswd_line(username: str, password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """An htpasswd entry in the $2y$ bcrypt form Apache's htpasswd -B writes."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    return f"{username}:$2y${hashed.removeprefix('$2b$')}\n"


def _config(
    tmp_dir: Path, port: int, debug_port: int, tls: tuple[Path, Path] | None, htpasswd: Path | None
) -> dict[str, object]:
    http: dict[str, object] = {
        "addr": f"127.0.0.1:{port}",
        "secret": secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
        "debug": {
            "addr": f"127.0.0.1:{debug_port}",
            "prometheus": {"enabled": True, "path": "/metrics"},
        },
    }
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(tmp_dir / "storage")},
            "delete": {"enabled": True},
            # Purging would walk the storage on a timer; tests clean up by deleting tmp_dir.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "registry-test", "path": str(htpasswd)}}
    return config


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_serving(
    process: subprocess.Popen[bytes], url: str, ca_path: Path | None, deadline: float
) -> None:
    """Return once GET / answers; raise if the process exits or the deadline passes."""
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca_path)) if ca_path else False
    )
    with httpx.Client(verify=verify, timeout=2.0) as client:
        while True:
            try:
                if client.get(url + "/").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("registry did not answer GET /")
            # Waiting on the process both paces the polling and notices an early exit.
            try:
                code = process.wait(timeout=min(0.1, remaining))
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"registry exited with status {code}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the registry by PID, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def run_registry(
    tmp_dir: Path,
    *,
    tls: bool = True,
    auth: bool = True,
    binary: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Iterator[RunningRegistry]:
    """Start a registry storing into tmp_dir, wait until it serves, stop it on exit.

    `overrides` are REGISTRY_* variables, as a Deployment's env would set them.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    binary = binary or registry_binary()
    ca_path = server_pair = None
    if tls:
        ca_path, cert_path, key_path = write_tls_files(tmp_dir / "tls")
        server_pair = (cert_path, key_path)
    username = password = htpasswd = None
    if auth:
        username, password = USERNAME, secrets.token_urlsafe(24)
        htpasswd = tmp_dir / "htpasswd"
        htpasswd.write_text(htpasswd_line(username, password))
        htpasswd.chmod(0o600)
    # Distribution reads REGISTRY_* variables as config overrides, so none may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["OTEL_TRACES_EXPORTER"] = "none"
    env.update(overrides or {})
    log_path = tmp_dir / "registry.log"
    scheme = "https" if tls else "http"

    # A free port can be taken between probing and binding; retry with new ports then.
    for attempt in range(_START_ATTEMPTS):
        port, debug_port = free_port(), free_port()
        config_path = tmp_dir / "config.yml"
        config_path.write_text(
            yaml.safe_dump(_config(tmp_dir, port, debug_port, server_pair, htpasswd))
        )
        url = f"{scheme}://127.0.0.1:{port}"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(binary), "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_dir,
            )
        try:
            _wait_until_serving(process, url, ca_path, time.monotonic() + START_TIMEOUT)
            break
        except (TimeoutError, RuntimeError) as exc:
            _stop(process)
            with log_path.open("rb") as log:
                log.seek(log_start)
                this_attempt = log.read().decode(errors="replace")
            if "address already in use" in this_attempt and attempt + 1 < _START_ATTEMPTS:
                continue
            tail = "\n".join(this_attempt.splitlines()[-40:])
            raise RuntimeError(f"{exc}; log tail ({log_path}):\n{tail}") from None

    try:
        yield RunningRegistry(
            url=url,
            host=f"127.0.0.1:{port}",
            ca_path=ca_path,
            username=username,
            password=password,
            log_path=log_path,
            pid=process.pid,
            debug_url=f"http://127.0.0.1:{debug_port}",
            storage_dir=tmp_dir / "storage",
        )
    finally:
        _stop(process)
