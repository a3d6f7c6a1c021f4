"""Build the local cluster's binaries from pinned Go modules.

Each component is a small wrapper module under go/<name>/ whose go.mod is
written here from versions.py, so the pins live in one place. Outputs are
cached under a key of the versions and the wrapper's source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry_provisioner.progress import step

from .paths import CACHE_DIR, GO_SOURCES


@dataclass(frozen=True)
class GoComponent:
    """A Go main package to build, and the module versions it needs."""

    name: str
    requires: dict[str, str]
    package: str = "."
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    go_directive: str = "1.24.0"
    godebug: str = ""
    replaces: dict[str, str] = field(default_factory=dict)
    # Checksums the wrapper carries for modules the checksum database does not know
    # (a fork used through a replace), so the build still verifies what it downloads.
    # Out of repr, so adding the field kept every other component's cache key.
    go_sum: tuple[str, ...] = field(default=(), repr=False)

    def cache_key(self) -> str:
        digest = hashlib.sha256(repr(self).encode())
        for line in self.go_sum:
            digest.update(line.encode())
        for path in _sources(self.name):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    def binary(self) -> Path:
        return CACHE_DIR / "bin" / f"{self.name}-{self.cache_key()}"


def _sources(name: str) -> list[Path]:
    """The component's own files: its .go files, and local modules a replace points at
    (in subdirectories, with their go.mod)."""
    root = GO_SOURCES / name
    local = [p for p in root.glob("*/**/*") if p.is_file() and p.suffix in (".go", ".mod")]
    return sorted(root.glob("*.go")) + sorted(local)


def download_module(module: str, version: str) -> dict[str, str]:
    """`go mod download -json`: where the module's source and go.mod landed in the cache."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return json.loads(out)


def _write_go_mod(component: GoComponent, workdir: Path) -> None:
    lines = [f"module local.test/{component.name}", "", f"go {component.go_directive}", ""]
    if component.godebug:
        lines += [f"godebug {component.godebug}", ""]
    lines += ["require ("] + [f"\t{m} {v}" for m, v in component.requires.items()] + [")", ""]
    if component.replaces:
        lines += (
            ["replace ("]
            + [f"\t{m} => {_target(m, v)}" for m, v in component.replaces.items()]
            + [")", ""]
        )
    (workdir / "go.mod").write_text("\n".join(lines))
    if component.go_sum:
        (workdir / "go.sum").write_text("\n".join(component.go_sum) + "\n")


def _target(module: str, replacement: str) -> str:
    """A replace's right side: ``vX`` means the same module at that version, ``./dir`` a
    local module beside the component's sources, else ``path vX``."""
    if " " in replacement or replacement.startswith("./"):
        return replacement
    return f"{module} {replacement}"


def build(component: GoComponent) -> Path:
    """Build one component, or return the cached binary."""
    target = component.binary()
    if target.exists():
        return target
    # A private work dir and an atomic rename let concurrent builds coexist.
    (CACHE_DIR / "src").mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{component.name}-", dir=CACHE_DIR / "src"))
    for source in _sources(component.name):
        copy = workdir / source.relative_to(GO_SOURCES / component.name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, copy)
    _write_go_mod(component, workdir)
    if component.package != ".":
        # Keeps `go mod tidy` from dropping the module whose main we build.
        (workdir / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{component.package}"\n'
        )
    env = {**os.environ, "CGO_ENABLED": "0"}
    with step(f"resolving modules for {component.name}"):
        subprocess.run(["go", "mod", "tidy"], cwd=workdir, env=env, check=True)
    partial = workdir / "out" / component.name
    command = ["go", "build", "-trimpath", "-o", str(partial)]
    if component.tags:
        command += ["-tags", ",".join(component.tags)]
    command += ["-ldflags", " ".join(("-s", "-w", *component.ldflags)), component.package]
    started = time.monotonic()
    with step(f"building {component.name}"):
        subprocess.run(command, cwd=workdir, env=env, check=True)
    partial.rename(target)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"built {component.name} in {time.monotonic() - started:.0f}s -> {target}", flush=True)
    return target
