"""Named points where a test can have the process killed outright, as a crash would,
or held still while it acts inside a window.

`REGISTRY_PROVISIONER_FAILPOINT=<name>` makes the run SIGKILL itself when it
reaches that point, so a test can stop provision exactly after one apply stage and
check that running it again converges. `REGISTRY_PROVISIONER_PAUSE=<name>:<fifo>`
makes it wait at that point until the test writes to the named pipe, so a test can
push during gc's read-only window however short the window is. Unset, every point
is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from .progress import step

ENV = "REGISTRY_PROVISIONER_FAILPOINT"
PAUSE_ENV = "REGISTRY_PROVISIONER_PAUSE"


def reached(name: str) -> None:
    """Die here, without cleanup, if the environment names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


async def pause(name: str) -> None:
    """Wait here until the test writes to its pipe, if the environment names this point."""
    point, _, fifo = os.environ.get(PAUSE_ENV, "").partition(":")
    if point == name and fifo:
        with step(f"paused at {name} until {fifo} is written"):
            # Opening a pipe for reading blocks until a writer opens it.
            await asyncio.to_thread(Path(fifo).read_bytes)
