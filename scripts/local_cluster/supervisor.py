"""Start and stop the cluster's processes, tracked by PID and by cgroup.

Every process runs inside the cluster's network namespace and a private mount
namespace held open by one idle "holder" process, so mounts made by the
kubelet and containerd vanish with the cluster. Each process also joins a
pids cgroup of ours, which therefore lists every process the cluster started
(container shims included), and is what `stop_all` ends. Nothing is ever
killed by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from . import network
from .processes import ProcessSpec

CGROUP_HIERARCHIES = Path("/sys/fs/cgroup")
OUR_CGROUP = CGROUP_HIERARCHIES / "pids" / "registry-local-cluster"
KUBELET_CGROUP = "kubepods"  # created by our kubelet in each hierarchy
HOLDER = "namespace-holder"


class Supervisor:
    def __init__(self, state_dir: Path, log_dir: Path) -> None:
        self.pid_dir = state_dir / "pids"
        self.log_dir = log_dir

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The recorded PID, if that process is still the one we started."""
        try:
            pid_text, start_time = self._pid_file(name).read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _start_time(pid) == start_time and _alive(pid) else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def start_holder(self, hosts_file: Path | None = None) -> None:
        """The idle process whose mount namespace every other process joins.

        `hosts_file` is bind-mounted over /etc/hosts there: names the node resolves
        (an upstream registry's, say) without touching the host's own file.
        """
        # Not `ip netns exec`: it remounts /sys, which hides the cgroup mounts the
        # kubelet needs. The host's /sys is kept; only the network is the namespace's.
        self._spawn(
            HOLDER,
            [
                "nsenter",
                f"--net=/var/run/netns/{network.NETNS}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sleep",
                "infinity",
            ],
        )
        holder = self._require_pid(HOLDER)
        _wait_for_exec(holder, "sleep")
        # Pod network namespaces are files under /var/run/netns: keep them on a
        # tmpfs of our own so they disappear with the mount namespace.
        subprocess.run(
            [
                "nsenter",
                f"--target={holder}",
                "--mount",
                "--",
                "mount",
                "-t",
                "tmpfs",
                "tmpfs",
                "/var/run/netns",
            ],
            check=True,
        )
        if hosts_file is not None:
            bind = ["mount", "--bind", str(hosts_file), "/etc/hosts"]
            subprocess.run(["nsenter", f"--target={holder}", "--mount", "--", *bind], check=True)

    def start(self, spec: ProcessSpec) -> int:
        argv = list(spec.argv)
        if spec.in_netns:
            holder = self._require_pid(HOLDER)
            argv = ["nsenter", f"--target={holder}", "--mount", "--net", "--", *argv]
        return self._spawn(spec.name, argv, spec.env)

    def _require_pid(self, name: str) -> int:
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running; see {self.log_path(name)}")
        return pid

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        OUR_CGROUP.mkdir(exist_ok=True)
        # Join our cgroup before exec, so even the first child is tracked.
        wrapped = ["sh", "-c", f'echo $$ > {OUR_CGROUP}/cgroup.procs && exec "$@"', name, *argv]
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                wrapped,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        start_time = _wait_for_start_time(process.pid)
        self._pid_file(name).write_text(f"{process.pid} {start_time}\n")
        return process.pid

    def stop(self, name: str, timeout: float = 15.0) -> None:
        pid = self.pid(name)
        if pid is not None:
            _terminate([pid], timeout)
        self._pid_file(name).unlink(missing_ok=True)

    def log_tail(self, name: str, lines: int = 25) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path(name)})"
        return "\n".join(text.splitlines()[-lines:])


def tracked_pids() -> list[int]:
    """Every process in our cgroup or in a cgroup our kubelet made."""
    pids: set[int] = set()
    roots = [OUR_CGROUP] + [h / KUBELET_CGROUP for h in CGROUP_HIERARCHIES.iterdir()]
    for root in roots:
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
    pids.discard(os.getpid())
    return sorted(pids)


def stop_all(timeout: float = 15.0) -> None:
    """End every tracked process, then remove the cgroups that held them."""
    for _ in range(3):
        pids = tracked_pids()
        if not pids:
            break
        _terminate(pids, timeout)
    remove_cgroups()


def remove_cgroups(timeout: float = 10.0) -> None:
    roots = [OUR_CGROUP] + [h / KUBELET_CGROUP for h in CGROUP_HIERARCHIES.iterdir()]
    for root in roots:
        if root.is_dir():
            # Deepest first: a cgroup can only be removed once it has no children.
            cgroups = sorted(
                (p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            )
            for cgroup in [*cgroups, root]:
                _rmdir_when_empty(cgroup, timeout)


def _rmdir_when_empty(cgroup: Path, timeout: float) -> None:
    """A killed task leaves its cgroup a moment after it is reaped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cgroup.rmdir()
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _terminate(pids: Iterable[int], timeout: float) -> None:
    pids = list(pids)
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    _signal([p for p in pids if _alive(p)], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: distinguishes our process from a reused PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


def _wait_for_exec(pid: int, command: str, timeout: float = 10.0) -> None:
    """Until a wrapper has exec'd `command`, the PID is not yet in its namespaces."""
    deadline = time.monotonic() + timeout
    comm = Path(f"/proc/{pid}/comm")
    while comm.read_text().strip() != command:
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not become {command} in {timeout}s")
        time.sleep(0.02)


def _wait_for_start_time(pid: int) -> str:
    start_time = _start_time(pid)
    if start_time is None:
        raise RuntimeError(f"process {pid} exited at once")
    return start_time
