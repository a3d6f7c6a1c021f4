"""An OCI image layout on disk, the form skopeo reads and writes."""

from __future__ import annotations

import json
from pathlib import Path

from registry_provisioner.images import Image
from registry_provisioner.oci_client import OCI_INDEX
from registry_provisioner.references import sha256_digest


def write_oci_layout(image: Image, directory: Path, ref: str) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
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
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))


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
