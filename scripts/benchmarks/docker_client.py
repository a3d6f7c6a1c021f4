"""The client most users have in the throughput figures: docker push and pull, timed.

A private dockerd of Debian's docker.io (scripts/docker_daemon.py: own sockets and data,
no iptables, no bridge) loads the very image our client and skopeo move, from a
docker-archive holding its gzip'd layers as they are. Each side (the cluster's
LoadBalancer IP, the pod's pair on loopback) is then done alike: CA lent into
/etc/docker/certs.d/<host>/, login with the password on stdin, load and tag
(untimed), `docker push` (timed), `docker rmi` until the daemon holds no image, then
`docker pull` (timed) and rmi again. Both sides pay docker's own gzip on push and
unpacking on pull, so their ratio compares the paths.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from registry_provisioner.images import Image
from registry_provisioner.references import sha256_digest
from scripts.docker_daemon import CONTAINERD, DOCKER, DOCKERD, DockerDaemon, certs_d_entry

from .children import BenchError, redact, run_child
from .data_plane import Endpoint
from .skopeo import host_of

TIMEOUT = 900.0
LOCAL_REFERENCE = "bench-local/docker:v1"  # the loaded image's name before it is tagged


def missing_reason(binaries: tuple[Path, ...] = (DOCKER, DOCKERD, CONTAINERD)) -> str | None:
    """Why the docker figures cannot be measured here, or None when they can."""
    absent = [str(path) for path in binaries if not path.exists()]
    if absent:
        return f"Debian's docker.io is not installed ({', '.join(absent)} absent)"
    if os.geteuid() != 0:
        return "a private dockerd and /etc/docker/certs.d need root"
    return None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(image: Image, path: Path, reference: str = LOCAL_REFERENCE) -> Path:
    """The image as a docker-archive (`docker save`'s format) for `docker load`.

    Layers stay the gzip'd bytes the other clients push (docker load unpacks them and
    checks each against the config's diff_ids); the config is the image's own.
    """
    config_name = f"blobs/sha256/{sha256_digest(image.config).removeprefix('sha256:')}"
    layer_names = [
        f"blobs/sha256/{sha256_digest(layer).removeprefix('sha256:')}" for layer in image.layers
    ]
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": layer_names}]
    with tarfile.open(path, "w") as tar:
        _add(tar, config_name, image.config)
        for name, layer in zip(layer_names, image.layers, strict=True):
            _add(tar, name, layer)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


@contextmanager
def running_daemon() -> Iterator[DockerDaemon]:
    """A started private dockerd, stopped by PID on exit; anything it left is an error."""
    daemon = DockerDaemon()
    failed = False
    try:
        daemon.start()
        yield daemon
    except BaseException:
        failed = True
        raise
    finally:
        problems = daemon.stop()
        leftovers = daemon.leftovers()
        if problems or leftovers:
            message = f"docker cleanup: {problems}; left on the host: {leftovers}"
            if not failed:  # else the first error stays the one raised
                raise BenchError(message)
            print(f"[bench] {message}", file=sys.stderr, flush=True)


def _checked(daemon: DockerDaemon, *args: str, secrets: tuple[str, ...] = ()) -> str:
    result = daemon.docker(*args)
    if result.returncode != 0:
        output = redact(result.stdout + result.stderr, secrets)
        raise BenchError(f"docker {args[0]} failed (exit {result.returncode}):\n{output[-2000:]}")
    return result.stdout


def _no_images(daemon: DockerDaemon) -> None:
    """Fail unless the daemon holds no image: a pull must really download every layer."""
    left = _checked(daemon, "images", "--quiet", "--all").split()
    if left:
        raise BenchError(f"docker still holds images {left}: the pull would not be real")


def push_pull_seconds(
    daemon: DockerDaemon, endpoint: Endpoint, archive: Path, repo: str
) -> tuple[float, float]:
    """Seconds for `docker push` of the archive's image to `repo`, then `docker pull` back."""
    host = host_of(endpoint.url)
    reference = f"{host}/{repo}:v1"
    secrets = (endpoint.password,)
    with certs_d_entry(host) as entry:
        entry.mkdir(parents=True)
        (entry / "ca.crt").write_bytes(endpoint.ca_file.read_bytes())
        login = daemon.docker(
            "login", host, "-u", endpoint.username, "--password-stdin", stdin=endpoint.password
        )
        if login.returncode != 0:
            output = redact(login.stdout + login.stderr, secrets)
            raise BenchError(f"docker login {host} failed: {output[-2000:]}")
        try:
            _no_images(daemon)
            _checked(daemon, "load", "--quiet", "--input", str(archive))
            _checked(daemon, "tag", LOCAL_REFERENCE, reference)
            _checked(daemon, "rmi", LOCAL_REFERENCE)
            push = run_child([str(DOCKER), "push", reference], timeout=TIMEOUT, env=daemon.env)
            push.checked("docker push", secrets)
            _checked(daemon, "rmi", reference)
            _no_images(daemon)
            pull = run_child([str(DOCKER), "pull", reference], timeout=TIMEOUT, env=daemon.env)
            pull.checked("docker pull", secrets)
            _checked(daemon, "rmi", reference)
        finally:
            daemon.docker("logout", host)
    return push.seconds, pull.seconds
