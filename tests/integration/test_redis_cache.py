"""gc's cache cleanup against a real redis-server on loopback, through busybox sh and nc,
as it runs in the registry container."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_provisioner import gc, load_settings
from registry_provisioner.errors import ProvisionError
from scripts.local_cluster.images import BUSYBOX
from scripts.loopback_registry import free_port, stop

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
PASSWORD = secrets.token_hex(16)
DB = 3


def _resp(*words: str) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)


def _send(port: int, *commands: tuple[str, ...]) -> list[str]:
    """The one-line replies to `commands`, sent after AUTH and SELECT on one connection."""
    requests = [("AUTH", PASSWORD), ("SELECT", str(DB)), *commands]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"".join(_resp(*words) for words in requests))
        reply = b""
        while reply.count(b"\r\n") < len(requests):
            reply += sock.recv(4096)
    return reply.decode().split("\r\n")[2 : len(requests)]


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
        f"requirepass {PASSWORD}\n"
    )
    config.chmod(0o600)
    process = subprocess.Popen(
        [str(REDIS_SERVER), str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not listen within 10s"
                time.sleep(0.05)  # polling a port: there is nothing to wait on
        yield port
    finally:
        stop(process)


def _forget(port: int, password: str) -> subprocess.CompletedProcess[str]:
    settings = load_settings(None, {"redis.address": f"127.0.0.1:{port}", "redis.db": DB})
    return subprocess.run(
        [str(BUSYBOX), *gc.forget_cache_argv(settings)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"REGISTRY_REDIS_PASSWORD": password},
        check=False,
    )


def test_forget_deletes_distributions_keys_only(redis_port: int) -> None:
    digest = "sha256:" + "ab" * 32
    ours = [
        f"blobs::{digest}",
        f"repository::app/one::blobs::{digest}",
        "repository::app/one::blobs",
    ]
    theirs = ["someone-else", "repository-list"]
    assert _send(redis_port, *[("SET", key, "1") for key in ours + theirs]) == ["+OK"] * 5

    done = _forget(redis_port, PASSWORD)
    assert done.returncode == 0, done.stderr
    assert gc.parse_forget_reply(done.stdout) == len(ours)
    assert PASSWORD not in done.stdout + done.stderr
    assert _send(redis_port, *[("EXISTS", key) for key in ours + theirs]) == [":0"] * 3 + [":1"] * 2
    assert gc.parse_forget_reply(_forget(redis_port, PASSWORD).stdout) == 0


def test_a_wrong_password_is_an_error(redis_port: int) -> None:
    done = _forget(redis_port, "not-the-password")
    with pytest.raises(ProvisionError, match="emptying the redis cache failed: -WRONGPASS"):
        gc.parse_forget_reply(done.stdout)
