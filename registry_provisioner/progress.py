"""Progress lines for long steps: what is being waited on, and for how long."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Steps a failure or Ctrl-C cut short, innermost first: what the one-line error names.
_cut_short: list[str] = []
# What has been done so far, for that same line (e.g. "6 of 11 objects applied").
_done: dict[str, str] = {}


def note(topic: str, done: str) -> None:
    """Record how far `topic` got, for the line printed if the run is cut short."""
    _done[topic] = done


def cut_short() -> str:
    """Where the run stopped and how far it got, in one clause ("" if nothing ran)."""
    where = f"while {_cut_short[0]}" if _cut_short else ""
    return "; ".join(part for part in (where, *_done.values()) if part)


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
    except BaseException:
        _cut_short.append(what)
        raise
    finally:
        done.set()
        thread.join()
    print(f"    done in {time.monotonic() - started:.1f}s: {what}", file=sys.stderr, flush=True)
