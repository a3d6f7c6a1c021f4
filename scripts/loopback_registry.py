"""Run the real distribution registry on loopback, with TLS and htpasswd auth.

The client tests and the data-plane benchmark both talk to the binary the cluster's
image is built from. The benchmark passes the config rendered for the cluster, so
only addresses and file paths differ from the pod; tests use a small config of the
same shape.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from registry_provisioner.certificates import self_signed_ca_and_server_cert
from registry_provisioner.logins import htpasswd_line

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
USERNAME = "tester"
# Distribution checks bcrypt on every request; the minimum cost keeps tests quick.
TEST_BCRYPT_ROUNDS = 4
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


def write_tls_files(
    directory: Path, *, not_before: dt.datetime | None = None, days: int = 365
) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key).

    The same generator as the product's self-signed mode, so tests exercise it too.
    """
    # The CA alone in its directory: clients' --cert-dir reads every file in it.
    (directory / "ca").mkdir(parents=True, exist_ok=True)
    (directory / "server").mkdir(exist_ok=True)
    pems = self_signed_ca_and_server_cert(
        ["localhost"], ["127.0.0.1"], not_before=not_before, days=days
    )
    paths = (
        directory / "ca" / "ca.crt",
        directory / "server" / "tls.crt",
        directory / "server" / "tls.key",
    )
    for path, pem in zip(paths, pems, strict=True):
        path.write_text(pem)
    paths[2].chmod(0o600)
    return paths


def small_config() -> dict[str, Any]:
    """The small config tests run: filesystem storage with deletes, metrics on."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {},
            "delete": {"enabled": True},
            # Purging would walk the storage on a timer; tests clean up by deleting work_dir.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            "debug": {"prometheus": {"enabled": True, "path": "/metrics"}},
        },
    }


def on_loopback(
    config: Mapping[str, Any],
    work_dir: Path,
    ports: tuple[int, int],
    tls: tuple[Path, Path] | None,
    htpasswd: Path | None,
) -> dict[str, Any]:
    """``config`` with its addresses on 127.0.0.1 and its files under ``work_dir``."""
    config = copy.deepcopy(dict(config))
    http = config.setdefault("http", {})
    http["addr"] = f"127.0.0.1:{ports[0]}"
    http.setdefault("debug", {})["addr"] = f"127.0.0.1:{ports[1]}"
    http["secret"] = secrets.token_hex(16)
    http.pop("tls", None)
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config.setdefault("storage", {})["filesystem"] = {"rootdirectory": str(work_dir / "storage")}
    config.pop("auth", None)
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "registry-loopback", "path": str(htpasswd)}}
    return config


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_serving(
    process: subprocess.Popen[bytes], url: str, deadline: float, what: str = "registry"
) -> None:
    """Return once GET / answers; raise if the process exits or the deadline passes."""
    # Unverified: this only waits for the port, and some tests serve a bad certificate.
    with httpx.Client(verify=False, timeout=2.0) as client:
        while True:
            try:
                if client.get(url + "/").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what} did not answer GET /")
            # Waiting on the process both paces the polling and notices an early exit.
            try:
                code = process.wait(timeout=min(0.1, remaining))
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"{what} exited with status {code}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server we started, by PID, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def start_server(
    prepare: Callable[[tuple[int, ...]], tuple[list[str], str]],
    port_count: int,
    work_dir: Path,
    env: Mapping[str, str],
    log_path: Path,
    what: str,
) -> tuple[subprocess.Popen[bytes], tuple[int, ...], str]:
    """Start a server on fresh loopback ports and wait until it answers GET /.

    `prepare(ports)` writes its config and gives (argv, url). A free port can be
    taken between probing and binding, so a start that lost that race is retried
    with new ports; any other failure raises with the tail of this attempt's log.
    """
    for attempt in range(_START_ATTEMPTS):
        ports = tuple(free_port() for _ in range(port_count))
        argv, url = prepare(ports)
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=work_dir,
            )
        try:
            wait_until_serving(process, url, time.monotonic() + START_TIMEOUT, what)
            return process, ports, url
        except (TimeoutError, RuntimeError) as exc:
            stop(process)
            with log_path.open("rb") as log:
                log.seek(log_start)
                this_attempt = log.read().decode(errors="replace")
            if "address already in use" in this_attempt and attempt + 1 < _START_ATTEMPTS:
                continue
            tail = "\n".join(this_attempt.splitlines()[-40:])
            raise RuntimeError(f"{exc}; log tail ({log_path}):\n{tail}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def run_registry(
    work_dir: Path,
    *,
    tls: bool = True,
    auth: bool = True,
    binary: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    bcrypt_rounds: int = TEST_BCRYPT_ROUNDS,
    cert_not_before: dt.datetime | None = None,
    cert_days: int = 365,
) -> Iterator[RunningRegistry]:
    """Start a registry storing into work_dir, wait until it serves, stop it on exit.

    ``config`` defaults to ``small_config()``; ``overrides`` are REGISTRY_* variables,
    as a Deployment's env would set them.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    binary = binary or registry_binary()
    ca_path = server_pair = None
    if tls:
        ca_path, cert_path, key_path = write_tls_files(
            work_dir / "tls", not_before=cert_not_before, days=cert_days
        )
        server_pair = (cert_path, key_path)
    username = password = htpasswd = None
    if auth:
        username, password = USERNAME, secrets.token_urlsafe(24)
        htpasswd = work_dir / "htpasswd"
        htpasswd.touch(mode=0o600)
        htpasswd.write_text(htpasswd_line(username, password, bcrypt_rounds) + "\n")
    # Distribution reads REGISTRY_* variables as config overrides, so none may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["OTEL_TRACES_EXPORTER"] = "none"
    env.update(overrides or {})
    log_path = work_dir / "registry.log"
    scheme = "https" if tls else "http"

    config_path = work_dir / "config.yml"

    def prepare(ports: tuple[int, ...]) -> tuple[list[str], str]:
        local = on_loopback(config or small_config(), work_dir, ports[:2], server_pair, htpasswd)
        config_path.write_text(yaml.safe_dump(local))
        return [str(binary), "serve", str(config_path)], f"{scheme}://127.0.0.1:{ports[0]}"

    process, ports, url = start_server(prepare, 2, work_dir, env, log_path, "registry")

    try:
        yield RunningRegistry(
            url=url,
            host=f"127.0.0.1:{ports[0]}",
            ca_path=ca_path,
            username=username,
            password=password,
            log_path=log_path,
            pid=process.pid,
            debug_url=f"http://127.0.0.1:{ports[1]}",
            storage_dir=work_dir / "storage",
        )
    finally:
        stop(process)
