"""Build k3s and its containerd shim from the k3s source tree, for the k3s lane.

The Go module proxy does not serve k3s itself, so the lane builds from a source tree
(paths.K3S_SOURCE) copied into the build cache first: the tree is never changed in
place. k3s's own scripts/build clones and downloads from the internet; none of that is
needed to build `./cmd/server` (with the embedded containerd, kubelet and kube-router)
and the shim, which resolves from the same module graph. Outputs are cached under a key
of the versions, the recipe and the Go version, like the other binaries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from registry_provisioner.progress import step

from . import versions
from .paths import CACHE_DIR, K3S_SOURCE, REPO_ROOT

# The tags k3s's scripts/build uses on Linux; the shim gets netgo instead of netcgo.
TAGS = (
    "ctrd",
    "netcgo",
    "osusergo",
    "providerless",
    "urfave_cli_no_docs",
    "sqlite_omit_load_extension",
    "apparmor",
    "seccomp",
)
SHIM_PACKAGE = "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
# What scripts/build sets for sqlite (kine's datastore).
CGO_CFLAGS = "-DSQLITE_ENABLE_DBSTAT_VTAB=1 -DSQLITE_USE_ALLOCA=1"
# Bump when the way k3s is built changes, so the cached binaries are rebuilt.
RECIPE_VERSION = "1"


class K3sSourceMissing(RuntimeError):
    """The k3s source tree is not on this machine: the k3s lane cannot run."""


class K3sBuildFailed(RuntimeError):
    """The background build of k3s that `invoke test` started did not succeed."""


@dataclass(frozen=True)
class K3sBinaries:
    k3s: Path
    shim: Path


def source_missing_reason(source: Path = K3S_SOURCE) -> str | None:
    """Why the k3s lane cannot run here, or None when the source tree is present."""
    if not (source / "go.mod").is_file() or not (source / "cmd" / "server").is_dir():
        return (
            f"k3s lane not run: no k3s source tree at {source} (set LOCAL_CLUSTER_K3S_SOURCE "
            f"to a k3s {versions.K3S} tree)"
        )
    return None


def go_version() -> str:
    """k3s refuses to start unless its UpstreamGolang equals the Go that built it."""
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def ldflags(go: str) -> str:
    k3s, containerd = "github.com/k3s-io/k3s/pkg/version", "github.com/containerd/containerd/v2"
    version = versions.K3S
    return " ".join(
        (
            "-s",
            "-w",
            f"-X {k3s}.Version={version}",
            f"-X {k3s}.GitCommit={versions.K3S_COMMIT[:8]}",
            f"-X {k3s}.UpstreamGolang={go}",
            f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X {containerd}/version.Version={versions.K3S_CONTAINERD}",
            f"-X {containerd}/version.Package=github.com/k3s-io/containerd/v2",
        )
    )


def cache_key(go: str) -> str:
    recipe = (RECIPE_VERSION, versions.K3S, versions.K3S_COMMIT, TAGS, ldflags(go), CGO_CFLAGS)
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:16]


def binaries(go: str | None = None) -> K3sBinaries:
    key = cache_key(go or go_version())
    return K3sBinaries(
        CACHE_DIR / "bin" / f"k3s-{key}", CACHE_DIR / "bin" / f"containerd-shim-runc-v2-{key}"
    )


def is_built(go: str | None = None) -> bool:
    """Whether k3s, its shim and its containerd template for this recipe are cached."""
    go = go or go_version()
    target = binaries(go)
    return all(
        path.exists() for path in (target.k3s, target.shim, containerd_template(cache_key(go)))
    )


def start_background_build(log: Path) -> subprocess.Popen | None:
    """Start building k3s and its shim at the lowest priority, or None when nothing is to build.

    `invoke test` runs it beside the home-built lane: a cold k3s build (about 18 min)
    then takes only the CPU those tests leave idle, instead of adding its whole time.
    Only k3s: the images and add-ons the k3s lane shares are the home-built lane's,
    which builds them first (building them here too did the same work twice).
    """
    if source_missing_reason() or is_built():
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "scripts.local_cluster.k3s_build"],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_background_build ends go too
        )


def stop_background_build(build: subprocess.Popen) -> None:
    """End the build and the go processes it started (its process group, which is its PID)."""
    if build.poll() is None:
        os.killpg(build.pid, signal.SIGTERM)
        build.wait()


def finish_background_build(build: subprocess.Popen, log: Path, report_every: float = 60) -> None:
    """Wait for the background build, saying how long; a failed build raises with its log's end."""
    started = time.monotonic()
    while True:
        try:
            code = build.wait(timeout=report_every)
            break
        except subprocess.TimeoutExpired:
            waited = time.monotonic() - started
            what = f"the k3s build (pid {build.pid}, log {log})"
            print(f"    waiting for {what}: {waited:.0f}s so far", flush=True)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise K3sBuildFailed(f"the k3s build failed (exit {code}); the end of {log}:\n{tail}")


def containerd_template(key: str) -> Path:
    """k3s's own containerd config template, taken from the same tree (see k3s.py)."""
    return CACHE_DIR / "bin" / f"k3s-containerd-config-v3-{key}.toml.tmpl"


def _copy_tree(source: Path) -> Path:
    """A writable copy of the tree, with the embedded manifests where scripts/build puts them."""
    (CACHE_DIR / "src").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="k3s-", dir=CACHE_DIR / "src"))
    tree = workdir / "k3s"
    shutil.copytree(source, tree, symlinks=True)
    for path in (tree, *tree.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    (tree / "pkg" / "deploy" / "embed").mkdir(parents=True, exist_ok=True)
    for manifest in (tree / "manifests").iterdir():
        copy = shutil.copytree if manifest.is_dir() else shutil.copy
        copy(manifest, tree / "pkg" / "deploy" / "embed" / manifest.name)
    # pkg/static embeds embed/*, which scripts/build fills from downloads; one
    # placeholder is enough (the lane needs none of those files).
    (tree / "pkg" / "static" / "embed").mkdir(parents=True, exist_ok=True)
    (tree / "pkg" / "static" / "embed" / ".placeholder").write_text("")
    return tree


def _go_build(tree: Path, output: Path, package: str, tags: tuple[str, ...], go: str) -> None:
    env = {**os.environ, "CGO_ENABLED": "1", "CGO_CFLAGS": CGO_CFLAGS, "GOTOOLCHAIN": "local"}
    command = ["go", "build", "-trimpath", "-buildvcs=false", "-tags", ",".join(tags)]
    command += ["-ldflags", ldflags(go), "-o", str(output), package]
    subprocess.run(command, cwd=tree, env=env, check=True)


def extract_containerd_template(tree: Path) -> str:
    """The version-3 containerd config template k3s renders, as this k3s has it."""
    source = (tree / "pkg" / "agent" / "templates" / "templates.go").read_text()
    match = re.search(r"const ContainerdConfigTemplateV3 = `(.*?)`", source, re.DOTALL)
    if match is None:
        raise RuntimeError(f"no ContainerdConfigTemplateV3 in {tree}/pkg/agent/templates")
    return match.group(1)


def build_k3s(source: Path = K3S_SOURCE) -> K3sBinaries:
    """Build k3s and the shim, or return the cached ones."""
    reason = source_missing_reason(source)
    if reason:
        raise K3sSourceMissing(reason)
    go = go_version()
    target = binaries(go)
    template = containerd_template(cache_key(go))
    if is_built(go):
        return target
    target.k3s.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with step(f"copying the k3s {versions.K3S} source tree from {source}"):
        tree = _copy_tree(source)
    try:
        with step("downloading k3s's modules"):
            subprocess.run(["go", "mod", "download"], cwd=tree, check=True)
        out = tree / "out"
        with step(f"building k3s {versions.K3S} (./cmd/server, embedded containerd)"):
            _go_build(tree, out / "k3s", "./cmd/server", TAGS, go)
        shim_tags = tuple("netgo" if tag == "netcgo" else tag for tag in TAGS)
        with step(f"building containerd-shim-runc-v2 {versions.K3S_CONTAINERD}"):
            _go_build(tree, out / "containerd-shim-runc-v2", SHIM_PACKAGE, shim_tags, go)
        partial = out / "template"
        partial.write_text(extract_containerd_template(tree))
        (out / "k3s").rename(target.k3s)
        (out / "containerd-shim-runc-v2").rename(target.shim)
        partial.rename(template)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
    print(f"built k3s in {time.monotonic() - started:.0f}s -> {target.k3s}", flush=True)
    return target


if __name__ == "__main__":  # what start_background_build runs
    build_k3s()
