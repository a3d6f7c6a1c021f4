"""With the local cluster down, its addresses follow the default route off the machine.

Each `--local` task must then refuse before it sends anything. The test runs the
task in a network namespace of its own whose only route is a default one through a
dummy interface, as the host's routes are while the cluster is down; a packet that
did go out there would go nowhere, so the test itself cannot leak one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The documentation range (RFC 5737) stands in for the host's LAN and gateway.
_DOWN_HOST = (
    "ip link add lan0 type veth peer name lan1 && ip link set lan0 up && ip link set lo up && "
    "ip addr add 198.51.100.2/24 dev lan0 && ip route add default via 198.51.100.1 && "
    'exec "$@"'
)


def _run_where_the_cluster_is_down(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", _DOWN_HOST, "sh", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
@pytest.mark.parametrize("task", ["provision", "unprovision", "smoke-test", "status", "gc"])
def test_local_tasks_refuse_addresses_that_leave_the_machine(task: str) -> None:
    result = _run_where_the_cluster_is_down(sys.executable, "-m", "invoke", task, "--local")
    assert result.returncode == 1, result.stderr
    assert "routes out of lan0, off this machine, so nothing was sent" in result.stderr
    assert "invoke cluster.up" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_guard_lets_loopback_and_other_addresses_through() -> None:
    from scripts.local_cluster.network import ensure_routed_into_cluster

    ensure_routed_into_cluster("127.0.0.1", "192.0.2.10")  # not the cluster's: not its job
