"""Task arguments that are not what they should be stop before any cluster work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "1e400"])
def test_a_timeout_that_is_no_positive_number_is_refused_by_name(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "provision", "--timeout", value],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"--timeout {value}: expected a number of seconds above 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_test_lane_is_refused_before_lint_or_any_cluster() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "test", "--lane", "kind"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--lane: 'kind' is not one of all, home, k3s" in result.stderr
    assert "All checks passed" not in result.stdout  # ruff did not run


def test_a_task_loads_no_package_it_never_uses() -> None:
    # Everything provision imports, then which of httpx's and httpcore's optional
    # companions came along, and whether kr8s's jsonpath (its own submodule) and
    # httpx-ws (wsproto under it) were loaded: each costs start-up on every task.
    unused = ("trio", "click", "pygments", "rich", "jsonpath.env", "wsproto")
    probe = (
        "import sys, tasks; tasks._settings(None, [], False); "
        "import registry_provisioner.commands; "
        f"print(' '.join(m for m in {unused!r} if sys.modules.get(m)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_a_module_kept_for_first_use_works_once_used() -> None:
    probe = (
        "import sys, tasks, kr8s._config, kr8s._api; "
        "config = kr8s._config.KubeConfig({'contexts': [{'name': 'a'}]}); "
        "print(config.get('$.contexts[0].name'), "
        "sys.modules['kr8s._api'].httpx_ws.aconnect_ws.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['a']", "aconnect_ws"]
