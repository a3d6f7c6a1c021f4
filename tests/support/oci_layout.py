"""An OCI image layout on disk, the form skopeo reads and writes."""

from __future__ import annotations

import json
from pathlib import Path

from registry_provisioner.images import Image
from registry_provisioner.references import sha256_digest
from scripts.benchmarks.skopeo import write_layout as write_oci_layout

__all__ = ["read_oci_layout", "write_oci_layout"]


def read_oci_layout(directory: Path, ref: str) -> Image:
    def blob(digest: str) -> bytes:
        data = (directory / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert sha256_digest(data) == digest
        return data

    index = json.loads((directory / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    ]
    manifest = blob(entry["digest"])
    document = json.loads(manifest)
    return Image(
        manifest=manifest,
        config=blob(document["config"]["digest"]),
        layers=tuple(blob(layer["digest"]) for layer in document["layers"]),
        media_type=entry["mediaType"],
    )
