"""A Docker daemon of its own, from Debian's docker.io, that leaves nothing behind.

The Docker client test and `invoke bench` (its docker figures) both run one.

The daemon runs beside the local cluster and other engineers' work on a shared machine,
so it must not touch the host's network or anything of theirs: no iptables rules, no
bridge (`--iptables=false --ip-masq=false --bridge=none`), sockets, state, data, the
cgroup parent and even dockerd's trust key (which 20.10 otherwise writes to
/etc/docker/key.json) under one directory of the test's own. Its containerd is started
here too, rather than left to dockerd, which would take a system containerd at
/run/containerd/containerd.sock whenever one runs. Both are stopped by PID, and
`stop()` says what it had to clean up by force, so the test can fail on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Debian's binaries by path: another docker CLI on PATH (/usr/local/bin) must not be used.
DOCKER = Path("/usr/bin/docker")
DOCKERD = Path("/usr/sbin/dockerd")
CONTAINERD = Path("/usr/bin/containerd")
CGROUPS = Path("/sys/fs/cgroup")
# dockerd makes these whatever its flags say (its plugin discovery directory); removed
# again if they were not there before.
DOCKERD_RUN_DIRS = (Path("/run/docker/plugins"), Path("/run/docker"))
# Host paths a daemon with default settings would create; none may appear.
MUST_NOT_APPEAR = (
    Path("/etc/docker/key.json"),
    Path("/etc/docker/daemon.json"),
    Path("/var/lib/docker"),
    Path("/var/lib/containerd"),
    Path("/run/docker.sock"),
    Path("/run/docker.pid"),
    Path("/run/containerd/containerd.sock"),
    Path("/opt/containerd"),
    Path.home() / ".docker",
)
CERTS_D = Path("/etc/docker/certs.d")  # where every dockerd reads a registry's CA
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 180.0
# A minimal PATH for the daemons (runc, containerd-shim-runc-v2) and no proxy settings.
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

CONTAINERD_CONFIG = """\
version = 2
root = "{root}/containerd/root"
state = "{root}/containerd/state"
# Only what dockerd uses: no CRI (the cluster's containerd is a separate process), and
# no plugin that writes outside this directory (opt: /opt/containerd).
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{root}/containerd.sock"
"""


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def certs_d_entry(host: str) -> Iterator[Path]:
    """Lend /etc/docker/certs.d/<host>, a real host path shared by every dockerd, and take it back.

    An entry of that name that is already there belongs to someone: refuse without
    touching it. Whatever was made here (the entry, certs.d, /etc/docker) is removed
    however the caller ends.
    """
    entry = CERTS_D / host
    if entry.exists() or entry.is_symlink():
        raise FileExistsError(f"{entry} already exists and is not ours: not touching it")
    made = [path for path in (CERTS_D.parent, CERTS_D) if not path.exists()]
    try:
        yield entry
    finally:
        shutil.rmtree(entry, ignore_errors=True)
        for path in reversed(made):
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


class DockerDaemon:
    """dockerd and its containerd under `root` (short: unix socket paths are limited)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dkr-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.client_config = self.root / "client"  # DOCKER_CONFIG: ~/.docker stays untouched
        self.bin = self.root / "bin"  # `docker` on the client's PATH is Debian's
        self.cgroup_parent = f"registry-docker-test-{self.root.name}"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._existed = {path: path.exists() for path in (*DOCKERD_RUN_DIRS, *MUST_NOT_APPEAR)}

    @property
    def env(self) -> dict[str, str]:
        """The client's environment: this daemon, this config, Debian's `docker` first."""
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.client_config),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
        }

    def start(self) -> None:
        self.client_config.mkdir()
        self.bin.mkdir()
        (self.bin / "docker").symlink_to(DOCKER)
        config = self.root / "containerd.toml"
        config.write_text(CONTAINERD_CONFIG.format(root=self.root))
        containerd_socket = self.root / "containerd.sock"
        self._spawn("containerd", [str(CONTAINERD), "--config", str(config)])
        wait_until(containerd_socket.is_socket, START_TIMEOUT, "containerd's socket")
        daemon_json = self.root / "daemon.json"
        # 20.10 has no flag for the key's path; the file also keeps /etc/docker/daemon.json out.
        daemon_json.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        self._spawn(
            "dockerd",
            [
                str(DOCKERD),
                f"--config-file={daemon_json}",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'docker.pid'}",
                f"--host=unix://{self.socket}",
                f"--containerd={containerd_socket}",
                "--exec-opt=native.cgroupdriver=cgroupfs",
                f"--cgroup-parent=/{self.cgroup_parent}",
            ],
        )
        wait_until(self._answers, START_TIMEOUT, f"dockerd answering on {self.socket}")

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self._processes[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=DAEMON_ENV, start_new_session=True
            )

    def _answers(self) -> bool:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
        return self.docker("version").returncode == 0

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def docker(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DOCKER), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def shell(self, line: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A line as a user pastes it into bash (pipefail, so a failing kubectl counts)."""
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def stop(self) -> list[str]:
        """Stop both daemons by PID and remove all they left; what needed force, if any."""
        problems = []
        # dockerd first: it stops its containers and unmounts their layers on SIGTERM.
        for name in ("dockerd", "containerd"):
            process = self._processes.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                problems.append(f"{name} (pid {process.pid}) ignored SIGTERM and was killed")
        strays = self._stray_pids()
        for pid in strays:
            problems.append(f"pid {pid} outlived the daemons and was killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if strays:
            # A killed process leaves its cgroup only once it is reaped.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not self._stray_pids(), STOP_TIMEOUT, "killed pids gone")
        for mountpoint in sorted(self._mounts(), reverse=True):
            problems.append(f"{mountpoint} was still mounted")
            subprocess.run(["umount", "-l", mountpoint], check=False)
        for hierarchy in self._cgroup_dirs():
            for child in sorted(hierarchy.glob("*/"), reverse=True):
                if child.is_dir():
                    # A busy one stays, and the parent's rmdir below reports it.
                    with contextlib.suppress(OSError):
                        child.rmdir()
            try:
                hierarchy.rmdir()
            except OSError as error:
                problems.append(f"cannot remove the cgroup {hierarchy}: {error}")
        for path in DOCKERD_RUN_DIRS:
            if not self._existed[path] and path.is_dir():
                try:
                    path.rmdir()
                except OSError as error:
                    problems.append(f"{path} is not empty: {error}")
        if problems:
            problems.append(f"dockerd's log ends:\n{self.log('dockerd')[-1500:]}")
        if not self._mounts():  # never delete through a mount that is still there
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=True)
        return problems

    def leftovers(self) -> list[str]:
        """Whatever of this daemon is still on the host: should be nothing after stop()."""
        found = [f"process {pid}" for pid in self._stray_pids()]
        found += [f"mount {mountpoint}" for mountpoint in self._mounts()]
        found += [f"cgroup {path}" for path in self._cgroup_dirs()]
        found += [
            str(path)
            for path, existed in self._existed.items()
            if not existed and (path.exists() or path.is_symlink())
        ]
        if self.root.exists():
            found.append(str(self.root))
        return found

    def _stray_pids(self) -> list[int]:
        """Shims (their command lines name our socket) and anything in our cgroups."""
        pids = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                if str(self.root).encode() in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
        for hierarchy in self._cgroup_dirs():
            for procs in hierarchy.rglob("cgroup.procs"):
                with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        return sorted(pids - {os.getpid()})

    def _mounts(self) -> list[str]:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        prefix = f"{self.root}/"
        return [
            fields[4]
            for fields in (line.split() for line in mounts)
            if fields[4] == str(self.root) or fields[4].startswith(prefix)
        ]

    def _cgroup_dirs(self) -> list[Path]:
        if not CGROUPS.is_dir():
            return []
        return [path for path in CGROUPS.glob(f"*/{self.cgroup_parent}") if path.is_dir()]
