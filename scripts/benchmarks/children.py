"""Run a command as a timed child: wall time, exit status, its own peak memory and CPU.

Peak memory comes from GNU time wrapped around the command. Taking it from
this process's own wait4 would be wrong: the kernel carries a forked child's
high-water RSS across exec, and Python forks with the bench's memory (its
images run to hundreds of MiB) mapped. GNU time is small when it forks, so the
figure is the command's alone. stderr lines are timestamped as they arrive, so
the progress lines of `invoke provision` double as a profile of its phases.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from registry_provisioner.errors import ProvisionError

REPO_ROOT = Path(__file__).resolve().parents[2]
GNU_TIME = Path("/usr/bin/time")


class BenchError(ProvisionError):
    """A measured step failed; the bench stops rather than report a bogus figure."""


@dataclass(frozen=True)
class ChildRun:
    """What one child did, measured from just before it started until it was reaped."""

    argv: tuple[str, ...]
    seconds: float
    returncode: int
    stdout: str
    stderr_lines: tuple[tuple[float, str], ...]  # (seconds since start, line)
    max_rss_bytes: int
    cpu_seconds: float

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.stderr_lines)

    def checked(self, what: str, secrets: Iterable[str] = ()) -> ChildRun:
        """Self, or a BenchError with the output's tail, any known secret blanked out."""
        if self.returncode == 0:
            return self
        tail = "\n".join((self.stdout + "\n" + self.stderr).strip().splitlines()[-25:])
        raise BenchError(f"{what} failed (exit {self.returncode}):\n{redact(tail, secrets)}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Blank out secret values, so an error message can never carry the password."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL our child and the command it runs (GNU time's child), by PID."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        pids = [int(pid) for pid in children.read_text().split()]
    except OSError:
        pids = []
    exits = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            exits.append(os.pidfd_open(pid))  # before the kill: the PID cannot be reused yet
            os.kill(pid, signal.SIGKILL)
    process.kill()  # Popen polls first, so a PID already reaped is never signalled
    # SIGKILL takes effect asynchronously: return once the command has really exited.
    for pidfd in exits:
        select.select([pidfd], [], [], 10)
        os.close(pidfd)


def _usage(path: Path) -> tuple[int, float] | None:
    """GNU time's last line: peak RSS (KiB, returned in bytes) and CPU seconds, if written."""
    try:
        max_rss_kib, user, system = path.read_text().strip().splitlines()[-1].split()
        return int(max_rss_kib) * 1024, float(user) + float(system)
    except (OSError, IndexError, ValueError):
        return None


def run_child(
    argv: Sequence[str], *, timeout: float, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> ChildRun:
    """Run `argv` to completion, killing it after `timeout`."""
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        usage_file = Path(tmp) / "usage"
        wrapper = [str(GNU_TIME), "-f", "%M %U %S", "-o", str(usage_file)]
        command = [*wrapper, *argv] if GNU_TIME.exists() else list(argv)
        run = _run(command, timeout, cwd, env, shown=argv)
        usage = _usage(usage_file)
        if usage is not None:
            run = replace(run, max_rss_bytes=usage[0], cpu_seconds=usage[1])
        return replace(run, argv=tuple(argv))


def _run(
    argv: list[str], timeout: float, cwd: Path, env: dict[str, str] | None, shown: Sequence[str]
) -> ChildRun:
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout_parts: list[str] = []
    stderr_lines: list[tuple[float, str]] = []

    def read_stdout() -> None:
        stdout_parts.append(process.stdout.read())

    def read_stderr() -> None:
        for line in process.stderr:
            stderr_lines.append((time.monotonic() - started, line.rstrip("\n")))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    # Set by the timer itself: whether the child or GNU time dies first, and so what
    # GNU time's exit status says, is a race.
    killed = threading.Event()

    def kill_at_deadline() -> None:
        killed.set()
        _kill_tree(process)

    timer = threading.Timer(timeout, kill_at_deadline)
    timer.start()
    try:
        # wait4 rather than Popen.wait: it also gives the rusage used when GNU time is absent.
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:  # reaped by the timer's poll at the very deadline
        usage, returncode = None, -signal.SIGKILL
    finally:
        timer.cancel()
    seconds = time.monotonic() - started
    process.returncode = returncode
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    if killed.is_set():
        raise BenchError(f"{' '.join(shown[:6])} ... timed out after {timeout:.0f}s")
    return ChildRun(
        argv=tuple(argv),
        seconds=seconds,
        returncode=returncode,
        stdout="".join(stdout_parts),
        stderr_lines=tuple(stderr_lines),
        # Without GNU time: an upper bound, since it includes what was mapped at fork.
        max_rss_bytes=usage.ru_maxrss * 1024 if usage else 0,  # Linux reports KiB
        cpu_seconds=usage.ru_utime + usage.ru_stime if usage else 0.0,
    )
