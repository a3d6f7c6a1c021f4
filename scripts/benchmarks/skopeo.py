"""A standard OCI client in the throughput figures: skopeo push and pull, timed.

The same image our client moves is written once as an OCI layout and copied
with `skopeo copy` to the cluster and to the loopback pair, then copied back
into a fresh layout (skopeo verifies every digest on the way). Both sides pay
skopeo's start-up and the local disk alike, so their ratio compares the paths.
The login goes in an auth file of mode 0600, never on the command line.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from registry_provisioner.images import Image
from registry_provisioner.oci_client import OCI_INDEX
from registry_provisioner.references import sha256_digest

from .children import BenchError, run_child
from .data_plane import Endpoint

SKOPEO = "skopeo"
TIMEOUT = 900.0


def available() -> bool:
    return shutil.which(SKOPEO) is not None


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def write_layout(image: Image, directory: Path, tag: str = "v1") -> Path:
    """The image as an OCI image layout (oci-layout, index.json, blobs), for `oci:DIR:TAG`."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in (image.manifest, image.config, *image.layers):
        (blobs / sha256_digest(data).removeprefix("sha256:")).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def host_of(url: str) -> str:
    return url.removeprefix("https://").rstrip("/")


def auth_file(endpoint: Endpoint, directory: Path) -> Path:
    """containers-auth.json holding the endpoint's login, readable by its owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode()).decode()
    path = directory / "auth.json"
    _write_private(path, json.dumps({"auths": {host_of(endpoint.url): {"auth": token}}}).encode())
    return path


def cert_dir(endpoint: Endpoint, directory: Path) -> Path:
    """A directory holding only the CA: skopeo reads every file of --cert-dir."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(endpoint.ca_file, directory / "ca.crt")
    return directory


def copy_argv(source: str, dest: str, *, authfile: Path, certs: Path, push: bool) -> list[str]:
    """`skopeo copy` with the login and CA on the registry's side of the copy."""
    side = "dest" if push else "src"
    return [
        SKOPEO,
        "copy",
        "--quiet",
        f"--{side}-authfile",
        str(authfile),
        f"--{side}-cert-dir",
        str(certs),
        source,
        dest,
    ]


class Copies(NamedTuple):
    """One push and pull: their seconds, and the CPU skopeo itself spent on both."""

    push_seconds: float
    pull_seconds: float
    cpu_seconds: float


def push_pull(endpoint: Endpoint, layout: Path, repo: str, work_dir: Path) -> Copies:
    """skopeo pushes the layout's image to `repo`, then pulls it back."""
    authfile = auth_file(endpoint, work_dir / "auth")
    certs = cert_dir(endpoint, work_dir / "certs")
    reference = f"docker://{host_of(endpoint.url)}/{repo}:v1"
    secrets = (endpoint.password,)
    push = run_child(
        copy_argv(f"oci:{layout}:v1", reference, authfile=authfile, certs=certs, push=True),
        timeout=TIMEOUT,
    ).checked("skopeo push", secrets)
    pulled = work_dir / "pulled"
    shutil.rmtree(pulled, ignore_errors=True)
    pull = run_child(
        copy_argv(reference, f"oci:{pulled}:v1", authfile=authfile, certs=certs, push=False),
        timeout=TIMEOUT,
    ).checked("skopeo pull", secrets)
    if not any((pulled / "blobs").rglob("*")):
        raise BenchError(f"skopeo pulled nothing into {pulled}")
    shutil.rmtree(pulled, ignore_errors=True)
    shutil.rmtree(work_dir / "auth", ignore_errors=True)
    return Copies(push.seconds, pull.seconds, push.cpu_seconds + pull.cpu_seconds)
