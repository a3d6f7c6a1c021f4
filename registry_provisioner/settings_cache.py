"""Settings validated before, kept for the next run of the same input.

Validation is a pure function of the input and the code that validates it, and
building pydantic's validator for ``Settings`` is the largest part of a task's
start-up after its imports (0.07 to 0.19 s). So settings that passed are kept,
pickled, under a name that hashes the input together with that code and pydantic's
version, and the next run of the same input reads them back instead. Only what
passed is kept: a rejected input is validated again and reported every time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

from .cache_dir import cache_root, private_cache_dir

# Entries beyond this many, the oldest first, are removed when one is written.
KEPT_ENTRIES = 32
# The modules whose code decides what passes and what it becomes.
_VALIDATING_MODULES = ("config.py", "references.py")


def settings_cache_dir() -> Path:
    return cache_root() / "settings"


@functools.cache
def _code_fingerprint() -> bytes:
    """The validating code, pydantic's version file (which pins pydantic-core's) and
    Python's version: a change to any of them gives every input a new name."""
    digest = hashlib.sha256(sys.version.encode())
    here = Path(__file__).parent
    paths = [here / name for name in _VALIDATING_MODULES]
    spec = importlib.util.find_spec("pydantic")  # found, not imported
    if spec is not None and spec.origin is not None:
        paths.append(Path(spec.origin).with_name("version.py"))
    for path in paths:
        digest.update(path.read_bytes())
    return digest.digest()


def entry_for(data: Any) -> Path | None:
    """Where what `data` validates to is kept; None when nothing may be kept."""
    directory = private_cache_dir(settings_cache_dir())
    if directory is None:
        return None
    try:
        key = hashlib.sha256(_code_fingerprint() + pickle.dumps(data)).hexdigest()
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return None
    return directory / f"{key}.pickle"


def recall(entry: Path) -> Any | None:
    """What validating the input named by `entry` gave before, or None."""
    try:
        return pickle.loads(entry.read_bytes())
    except (
        pickle.UnpicklingError,
        OSError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
    ):
        return None  # none yet, or damaged: a miss, and the entry is written afresh


def remember(entry: Path, settings: Any) -> None:
    """Keep `settings` at `entry`; failing to is only a lost saving, and leaves no
    partial file behind."""
    with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
        payload = pickle.dumps(settings)
        descriptor, temporary = tempfile.mkstemp(dir=entry.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(payload)
            os.replace(temporary, entry)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
            raise
        _prune(entry.parent)


def _prune(directory: Path) -> None:
    entries = sorted(directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[KEPT_ENTRIES:]:
        stale.unlink(missing_ok=True)
