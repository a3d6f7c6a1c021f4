"""Named points where a test can have the process killed outright, as a crash would.

`REGISTRY_PROVISIONER_FAILPOINT=<name>` makes the run SIGKILL itself when it
reaches that point, so a test can stop provision exactly after one apply stage and
check that running it again converges. Unset, every point is a no-op.
"""

from __future__ import annotations

import os
import signal

ENV = "REGISTRY_PROVISIONER_FAILPOINT"


def reached(name: str) -> None:
    """Die here, without cleanup, if the environment names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
