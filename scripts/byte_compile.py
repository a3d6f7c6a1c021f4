"""Byte-compile the project, as pip does the packages it installs.

Every task then starts from cached bytecode, even where PYTHONDONTWRITEBYTECODE keeps
Python from writing it. install-prerequisites.sh runs this once; the bench runs it
before its clock, so sources edited since the install are timed from bytecode too.
"""

from __future__ import annotations

import compileall

from scripts.local_cluster.paths import REPO_ROOT

SOURCES = ("tasks.py", "registry_provisioner", "scripts")


def byte_compile() -> None:
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            compileall.compile_dir(path, quiet=1)
        else:
            compileall.compile_file(path, quiet=1)


if __name__ == "__main__":
    byte_compile()
