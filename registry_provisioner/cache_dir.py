"""Where a run keeps what it may reuse in the next: ~/.cache/registry-provisioner.

What is kept there is loaded as code (compiled templates) or unpickled (settings), so
a directory is used only when it is ours and nobody else can write it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "registry-provisioner"


def private_cache_dir(directory: Path) -> Path | None:
    """`directory`, made if missing, when only this user can write it; else None."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = directory.lstat()
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return None
    writable_by_others = found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or writable_by_others:
        return None
    return directory
