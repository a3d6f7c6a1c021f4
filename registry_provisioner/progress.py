"""Progress lines for long steps: what is being waited on, and for how long."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager

# Steps a failure or Ctrl-C cut short, innermost first: what the one-line error names.
_cut_short: list[str] = []
# How far each count got, for that same line: {"objects applied": (done, planned)}.
_tallies: dict[str, tuple[set[Hashable], set[Hashable]]] = {}


def tally(counted: str, *, planned: Iterable[Hashable] = (), done: Iterable[Hashable] = ()) -> None:
    """Add items to a count for the line printed if the run is cut short ("10 of 11
    objects applied"). Steps that run at once, like the registry's and node trust's
    applies, add to the same count; an item named twice counts once, so a step may
    plan what a later one applies."""
    done_so_far, planned_so_far = _tallies.setdefault(counted, (set(), set()))
    planned_so_far.update(planned)
    done_so_far.update(done)


def count_afresh(counted: str) -> None:
    """Start a count from nothing: a task counts its own work, not what a task before
    it applied in the same process (`invoke demo` applies the cluster's add-ons first)."""
    _tallies.pop(counted, None)


def cut_short() -> str:
    """Where the run stopped and how far it got, in one clause ("" if nothing ran)."""
    where = [f"while {_cut_short[0]}"] if _cut_short else []
    counts = [
        f"{len(done)} of {len(planned)} {counted}" for counted, (done, planned) in _tallies.items()
    ]
    return "; ".join(where + counts)


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
