"""A pause point holds the run until the test writes to its pipe; unnamed, it is a no-op."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from registry_provisioner import failpoints


async def test_a_point_the_environment_does_not_name_returns_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(failpoints.PAUSE_ENV, f"another-point:{tmp_path / 'never'}")
    await asyncio.wait_for(failpoints.pause("gc-read-only"), 5)


async def test_the_named_point_waits_for_the_pipe_to_be_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    os.mkfifo(release, 0o600)
    monkeypatch.setenv(failpoints.PAUSE_ENV, f"gc-read-only:{release}")
    paused = asyncio.ensure_future(failpoints.pause("gc-read-only"))
    done, _ = await asyncio.wait({paused}, timeout=0.5)
    assert not done, "returned before the pipe was written"
    await asyncio.to_thread(release.write_bytes, b"go")
    await asyncio.wait_for(paused, 5)
