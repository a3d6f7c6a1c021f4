"""The auth-rate bench runs end to end on the real binaries, in a short window."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.benchmarks import auth_rate

pytestmark = pytest.mark.timeout(120, func_only=True)


@pytest.mark.parametrize("case", ["b", "c"])
async def test_every_load_is_answered_and_measured(
    tmp_path: Path,
    registry_binary_path: Path,
    caddy_binary_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    monkeypatch.setenv("REGISTRY_BINARY", str(registry_binary_path))
    monkeypatch.setenv("CADDY_BINARY", str(caddy_binary_path))
    name, start = auth_rate.CASES[case]
    with start(tmp_path) as setup:
        result = await auth_rate.measure(name, setup, clients=2, seconds=0.6, slices=2)
    phases = (result.unauth_v2, result.unauth_root, result.auth_head, result.noauth_head)
    assert all(p.requests > 0 and p.errors == 0 for p in phases)
    # The servers' CPU is read from /proc: every request costs some.
    assert all(p.server_cpu >= 0 for p in phases)
    assert sum(p.server_cpu for p in phases) > 0
    table = auth_rate.table([result], 2)
    assert name in table and "errors: 0" in table
