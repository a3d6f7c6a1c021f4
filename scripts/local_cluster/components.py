"""The Go components of the local cluster: which modules, versions and flags."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from . import versions
from .build import GoComponent


def _staging_replaces(kubernetes_version: str) -> dict[str, str]:
    """k8s.io/kubernetes points its staging modules at ./staging; point them at the proxy."""
    mod_file = _download_mod_file("k8s.io/kubernetes", kubernetes_version)
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", mod_file, re.MULTILINE)
    staging_version = "v0." + kubernetes_version.removeprefix("v1.")
    return {module: staging_version for module in staging}


def _download_mod_file(module: str, version: str) -> str:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    gomod = re.search(r'"GoMod": "([^"]+)"', out)
    assert gomod, out
    return Path(gomod.group(1)).read_text()


def _version_ldflags(package: str, version: str) -> tuple[str, ...]:
    major, minor = version.removeprefix("v").split(".")[:2]
    return (
        f"-X {package}.gitVersion={version}",
        f"-X {package}.gitMajor={major}",
        f"-X {package}.gitMinor={minor}",
        f"-X {package}.gitTreeState=clean",
    )


def kubernetes() -> GoComponent:
    version = versions.KUBERNETES
    return GoComponent(
        name="kubernetes",
        requires={"k8s.io/kubernetes": version, "go.etcd.io/etcd/server/v3": versions.ETCD},
        replaces=_staging_replaces(version),
        tags=("providerless",),
        ldflags=_version_ldflags("k8s.io/component-base/version", version)
        + _version_ldflags("k8s.io/client-go/pkg/version", version),
        godebug="default=go1.24",
    )


def distribution() -> GoComponent:
    """The registry binary, the same one the registry image runs."""
    return GoComponent(
        name="distribution",
        requires={"github.com/distribution/distribution/v3": versions.DISTRIBUTION},
        package="github.com/distribution/distribution/v3/cmd/registry",
    )
