"""Progress lines for long steps: what is being waited on, and for how long."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def step(what: str, every: float = 30.0) -> Iterator[None]:
    """Print `what`, then a heartbeat every `every` seconds until the block ends."""
    started = time.monotonic()
    print(f"==> {what}", file=sys.stderr, flush=True)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(every):
            print(
                f"    ... still {what} ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    print(f"    done in {time.monotonic() - started:.1f}s: {what}", file=sys.stderr, flush=True)
