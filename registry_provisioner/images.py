"""Whole OCI images as bytes: make a random one, push it and pull it back through the client.

The smoke test and the benchmarks need images that are new to every registry, so
each push really uploads; the client itself deals only in blobs and manifests.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import RegistryError
from .oci_client import (
    IMAGE_MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    RegistryClient,
)
from .references import sha256_digest


@dataclass(frozen=True)
class Image:
    """An image as the bytes that make it up; every digest is derived from them."""

    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def manifest_json(self) -> dict[str, Any]:
        return json.loads(self.manifest)

    @property
    def size(self) -> int:
        """Bytes of manifest, config and layers together."""
        return len(self.manifest) + len(self.config) + sum(len(layer) for layer in self.layers)

    def blobs(self) -> dict[str, bytes]:
        """Config and layers by digest."""
        return {sha256_digest(b): b for b in (self.config, *self.layers)}


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def _compact_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def assemble_image(layers: Sequence[bytes], diff_ids: Sequence[str]) -> Image:
    """A linux/amd64 OCI image of gzip'd tar `layers`; `diff_ids` are their tars' digests."""
    config = _compact_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }
    )
    manifest = _compact_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER_GZIP, layer) for layer in layers],
        }
    )
    return Image(manifest=manifest, config=config, layers=tuple(layers))


def random_layer(index: int, size: int) -> tuple[bytes, str]:
    """A gzip'd tar holding `size` random bytes, and the digest of the tar (its diff_id)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"random-{index}.bin")
        info.size = size
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    tar_bytes = buffer.getvalue()
    # Random bytes do not compress, so the fastest level loses nothing.
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), sha256_digest(tar_bytes)


def random_image(layer_sizes: list[int]) -> Image:
    """A valid linux/amd64 OCI image whose layers hold fresh random bytes.

    Random content makes every blob new to the registry, so a push really uploads.
    """
    made = [random_layer(index, size) for index, size in enumerate(layer_sizes)]
    return assemble_image([layer for layer, _ in made], [diff_id for _, diff_id in made])


async def push_image(client: RegistryClient, repo: str, tag: str, image: Image) -> str:
    """Push blobs the registry lacks, then the manifest under `tag`; return its digest."""
    for digest, data in image.blobs().items():
        if not await client.blob_exists(repo, digest):
            await client.push_blob(repo, data, digest)
    return await client.put_manifest(repo, tag, image.manifest, image.media_type)


async def pull_image(client: RegistryClient, repo: str, ref: str) -> Image:
    """Fetch an image by tag or digest, verifying every digest and size on the way."""
    manifest = await client.get_manifest(repo, ref)
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        raise RegistryError(
            f"{repo}:{ref} is a {manifest.media_type or 'untyped'} manifest, not an image",
            hint="multi-platform indexes are not supported; pull a platform's digest",
        )
    document = json.loads(manifest.data)
    config = await _fetch_described(client, repo, document["config"])
    layers = [await _fetch_described(client, repo, d) for d in document.get("layers", [])]
    return Image(
        manifest=manifest.data, config=config, layers=tuple(layers), media_type=manifest.media_type
    )


async def _fetch_described(client: RegistryClient, repo: str, descriptor: dict[str, Any]) -> bytes:
    data = await client.get_blob(repo, descriptor["digest"])
    if len(data) != descriptor["size"]:
        raise RegistryError(
            f"blob {descriptor['digest']} is {len(data)} bytes; its descriptor says "
            f"{descriptor['size']}",
            hint="the manifest and the stored blob disagree",
        )
    return data
