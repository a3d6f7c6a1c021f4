"""Run a command as a timed child: wall time, exit status, its own peak memory and CPU.

os.wait4 gives the rusage of exactly this child, where getrusage(RUSAGE_CHILDREN)
mixes every child ever reaped. stderr lines are timestamped as they arrive, so
the progress lines of `invoke provision` double as a profile of its phases.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry_provisioner.errors import ProvisionError

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def run_child(
    argv: Sequence[str], *, timeout: float, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> ChildRun:
    """Run `argv` to completion (killing it, by its PID, after `timeout`)."""
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv),
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
    # Popen.kill polls first, so it never signals a PID that wait4 has already reaped.
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:  # reaped by the timer's poll at the very deadline
        usage, returncode = None, -9
    finally:
        timer.cancel()
    seconds = time.monotonic() - started
    process.returncode = returncode
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    if returncode == -9 and seconds >= timeout:
        raise BenchError(f"{' '.join(argv[:4])} ... timed out after {timeout:.0f}s")
    return ChildRun(
        argv=tuple(argv),
        seconds=seconds,
        returncode=returncode,
        stdout="".join(stdout_parts),
        stderr_lines=tuple(stderr_lines),
        max_rss_bytes=usage.ru_maxrss * 1024 if usage else 0,  # Linux reports KiB
        cpu_seconds=usage.ru_utime + usage.ru_stime if usage else 0.0,
    )
