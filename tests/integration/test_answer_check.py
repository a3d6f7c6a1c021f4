"""Provision's "does the registry answer" check, against an address that drops connects.

A Service's address drops connections for a moment while kube-proxy programs a new
endpoint. A listener on loopback whose accept queue is full does the same: the
kernel drops each further SYN, and the client would resend it only after a second.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from registry_provisioner import provision
from scripts.loopback_registry import write_tls_files


@contextmanager
def dropping_connects() -> Iterator[int]:
    """A loopback port that takes one connection and drops every later one's SYN."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the accept queue
            yield port


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    ca, _, _ = write_tls_files(tmp_path)
    return ca


async def test_a_dropped_connect_is_given_up_after_the_short_first_bound(ca_file: Path) -> None:
    with dropping_connects() as port:
        started = time.monotonic()
        answered = await provision._answers(
            f"https://127.0.0.1:{port}", ca_file, connect_timeout=provision.FIRST_CONNECT_TIMEOUT
        )
        took = time.monotonic() - started
    assert not answered
    # With the usual bound it would wait all 5 s, the kernel's resends dropped too.
    assert provision.FIRST_CONNECT_TIMEOUT <= took < 2.5, took


async def test_the_check_waits_on_while_the_address_drops_connects(ca_file: Path) -> None:
    with dropping_connects() as port, pytest.raises(TimeoutError):
        await asyncio.wait_for(
            provision._until_answers(f"https://127.0.0.1:{port}", ca_file, None, None), 2.0
        )
