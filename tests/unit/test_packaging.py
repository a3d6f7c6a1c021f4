"""pyproject.toml declares what the package needs; requirements.txt pins what was tested."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["test"]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _pinned() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_requirements_pin_exactly_what_pyproject_declares() -> None:
    declared, pinned = _declared(), _pinned()
    assert sorted(declared) == sorted(pinned)
    outside = {
        name: (pinned[name], str(req.specifier))
        for name, req in declared.items()
        if not req.specifier.contains(pinned[name], prereleases=True)
    }
    assert outside == {}, "requirements.txt pins versions outside pyproject's ranges"


def test_installed_package_renders_without_the_checkout(tmp_path: Path) -> None:
    """`pip install .` gives a package that finds its templates inside itself.

    It installs from a copy: setuptools writes build/ and egg-info into the source.
    """
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("registry_provisioner", "manifests"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import registry_provisioner.render as r, registry_provisioner as p;"
        "s = p.load_settings(None, {'service.ip': '192.0.2.10'});"
        "print(r.MANIFESTS_DIR);"
        "print(len(r.render_manifests(s, None)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    manifests_dir, count = run.stdout.split()
    assert Path(manifests_dir).is_relative_to(target)
    assert int(count) > 5
