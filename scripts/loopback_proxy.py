"""The registry behind an authenticating TLS proxy (Caddy), both on loopback.

A prototype of the pull-only login (issue 11, point 6) and of the per-request
bcrypt cost (issue 14, point 1); docs/pull-only-login.md has the design.

- distribution listens on 127.0.0.1 only, in plain HTTP and without auth of its
  own: only processes that share its network namespace (in the product: the
  containers of the registry pod) can reach it, and the proxy is the one of them
  that talks to it.
- Caddy terminates TLS and checks Basic credentials against bcrypt hashes, with
  its hash cache, so each login's bcrypt check runs once and not per request.
- The admin login may do anything; the pull login only GET and HEAD under /v2/.
  Anything else it asks is refused with 403 and distribution's DENIED error.
- `/` stays unauthenticated, as distribution serves it, for the pod's probes.

Secrets never appear on a command line or in the config: the hashes are files
(mode 0600) that the config names through Caddy's `{file.*}` placeholder, the
same layout a Secret mounted into the pod would give.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_provisioner.logins import BCRYPT_ROUNDS, htpasswd_line
from registry_provisioner.proxy import caddy_config
from scripts.loopback_registry import (
    RunningRegistry,
    run_registry,
    start_server,
    stop,
    write_tls_files,
)

ADMIN_USER = "admin"
PULL_USER = "puller"
REALM = "registry-loopback"


@dataclass(frozen=True)
class Login:
    """A user name and its password; ``repr`` hides the password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RunningProxy:
    """The proxy's address and logins, and the registry behind it."""

    url: str
    host: str  # host:port, the form image references use
    ca_path: Path
    admin: Login
    puller: Login
    log_path: Path
    pid: int
    registry: RunningRegistry


def caddy_binary() -> Path:
    """The Caddy binary: $CADDY_BINARY, else the cached (or freshly built) one."""
    override = os.environ.get("CADDY_BINARY")
    if override:
        return Path(override)
    from scripts.local_cluster import build, components

    return build.build(components.caddy())


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to a file only its owner can read, created with that mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


def relocate(
    config: Mapping[str, Any],
    *,
    listen: str,
    upstream: str,
    certificate: str,
    key: str,
    hash_files: Mapping[str, str],
    address: str,
) -> dict[str, Any]:
    """A rendered Caddy config with only its addresses and file paths moved to loopback.

    The bench runs the pod's own caddy.json this way, so the loopback side is the
    same software and the same config; every account must have a hash file here.
    """
    relocated = copy.deepcopy(dict(config))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                node["upstreams"] = [{"dial": upstream}]
            if "username" in node and "password" in node:
                node["password"] = "{file." + hash_files[node["username"]] + "}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(relocated)
    for server in relocated["apps"]["http"]["servers"].values():
        server["listen"] = [listen]
        for policy in server.get("tls_connection_policies", []):
            policy.update(default_sni=address, fallback_sni=address)
    relocated["apps"]["tls"]["certificates"]["load_files"] = [
        {"certificate": certificate, "key": key}
    ]
    return relocated


def bcrypt_hash(login: Login, rounds: int) -> str:
    """The bcrypt hash of the login's password, as its htpasswd line holds it."""
    return htpasswd_line(login.username, login.password, rounds).split(":", 1)[1]


@contextmanager
def run_proxied_registry(
    work_dir: Path,
    *,
    bcrypt_rounds: int = BCRYPT_ROUNDS,
    hash_cache: bool = True,
    access_log: bool = False,
    authenticate: bool = True,
    registry_config: Mapping[str, Any] | None = None,
    proxy_config: Mapping[str, Any] | None = None,
    admin_username: str = ADMIN_USER,
    pull_username: str = PULL_USER,
    registry_binary: Path | None = None,
    proxy_binary: Path | None = None,
) -> Iterator[RunningProxy]:
    """Start distribution on 127.0.0.1 and Caddy in front of it; stop both on exit.

    ``bcrypt_rounds`` is the cost of both logins' hashes; ``registry_config`` is
    distribution's config (``small_config()`` by default), whose TLS and auth are
    dropped: the proxy does both. ``authenticate=False`` leaves the logins out of
    the proxy's config, for a benchmark's floor; never a set-up to serve.
    ``proxy_config`` is a Caddy config rendered for the pod (render.py's caddy.json),
    run as it is with its addresses and files moved here (`relocate`); its account
    names must then be ``admin_username`` and ``pull_username``.
    """
    if proxy_config is not None and not authenticate:
        raise ValueError("a rendered proxy config authenticates; authenticate=False needs none")
    work_dir.mkdir(parents=True, exist_ok=True)
    proxy_binary = proxy_binary or caddy_binary()
    admin = Login(admin_username, secrets.token_urlsafe(24))
    puller = Login(pull_username, secrets.token_urlsafe(24))
    auth_dir = work_dir / "auth"
    auth_dir.mkdir(mode=0o700, exist_ok=True)
    hash_files = {
        login.username: write_secret(auth_dir / f"{login.username}.bcrypt", bcrypt_hash(login, r))
        for login, r in ((admin, bcrypt_rounds), (puller, bcrypt_rounds))
    }
    ca_path, cert_path, key_path = write_tls_files(work_dir / "tls")
    # Caddy keeps its data (instance id, locks) under XDG dirs: keep them in work_dir.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work_dir),
        "XDG_DATA_HOME": str(work_dir / "caddy-data"),
        "XDG_CONFIG_HOME": str(work_dir / "caddy-config"),
    }
    log_path = work_dir / "caddy.log"

    with run_registry(
        work_dir / "registry",
        tls=False,
        auth=False,
        binary=registry_binary,
        config=registry_config,
    ) as registry:
        config_path = work_dir / "caddy.json"

        def prepare(ports: tuple[int, ...]) -> tuple[list[str], str]:
            listen = f"127.0.0.1:{ports[0]}"
            files = {u: str(p) for u, p in hash_files.items()}
            config = (
                relocate(
                    proxy_config,
                    listen=listen,
                    upstream=registry.host,
                    certificate=str(cert_path),
                    key=str(key_path),
                    hash_files=files,
                    address="127.0.0.1",
                )
                if proxy_config is not None
                else caddy_config(
                    listen=listen,
                    upstream=registry.host,
                    certificate=str(cert_path),
                    key=str(key_path),
                    hash_files=files if authenticate else {},
                    realm=REALM,
                    address="127.0.0.1",
                    pull_users=(puller.username,) if authenticate else (),
                    hash_cache=hash_cache,
                    access_log=access_log,
                )
            )
            config_path.write_text(json.dumps(config, indent=2))
            argv = [str(proxy_binary), "run", "--config", str(config_path)]
            return argv, f"https://127.0.0.1:{ports[0]}"

        process, (port,), url = start_server(prepare, 1, work_dir, env, log_path, "the proxy")
        try:
            yield RunningProxy(
                url=url,
                host=f"127.0.0.1:{port}",
                ca_path=ca_path,
                admin=admin,
                puller=puller,
                log_path=log_path,
                pid=process.pid,
                registry=registry,
            )
        finally:
            stop(process)
