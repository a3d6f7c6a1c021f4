"""Push and pull throughput, many clients at once, and the raw disk for scale.

Images are made of fresh random bytes (incompressible, and new to every
registry, so each push really uploads). One image is pushed to both registries
of a comparison and written to the raw disk, so every side moves the same bytes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, pull_image, push_image, random_image
from registry_provisioner.oci_client import RegistryClient

LAYERS_PER_IMAGE = 8
READ_CHUNK = 8 * 1024 * 1024
REQUEST_TIMEOUT = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where a registry answers, and the login and CA to reach it with."""

    url: str
    username: str
    password: str = field(repr=False)
    ca_file: Path

    def client(self) -> RegistryClient:
        return RegistryClient(
            self.url, self.username, self.password, self.ca_file, timeout=REQUEST_TIMEOUT
        )


def make_image(size_bytes: int, layers: int = LAYERS_PER_IMAGE) -> Image:
    """A valid OCI image of `layers` random layers totalling about `size_bytes`."""
    layers = max(1, min(layers, size_bytes // 4096))
    each = size_bytes // layers
    return random_image([each] * layers)


def new_repository(prefix: str) -> str:
    return f"bench/{prefix}-{secrets.token_hex(4)}"


async def push_seconds(endpoint: Endpoint, repo: str, tag: str, image: Image) -> float:
    """Seconds to push every blob and the manifest, after a ping has set up the connection."""
    async with endpoint.client() as client:
        await client.ping()
        started = time.perf_counter()
        await push_image(client, repo, tag, image)
        return time.perf_counter() - started


async def pull_seconds(endpoint: Endpoint, repo: str, tag: str, image: Image) -> float:
    """Seconds to pull the image back, every digest verified; the bytes must match."""
    async with endpoint.client() as client:
        await client.ping()
        started = time.perf_counter()
        pulled = await pull_image(client, repo, tag)
        seconds = time.perf_counter() - started
    if pulled.layers != image.layers or pulled.config != image.config:
        raise RegistryError(f"{repo}:{tag} pulled back different bytes than were pushed")
    return seconds


@dataclass(frozen=True)
class ConcurrentResult:
    seconds: float
    pushed_bytes: int
    errors: tuple[str, ...]


async def concurrent_pushes(endpoint: Endpoint, images: list[Image]) -> ConcurrentResult:
    """One client per image, all pushing at once; errors are counted, not raised."""

    async def one(index: int, image: Image) -> str | None:
        try:
            await push_seconds(endpoint, new_repository(f"client{index}"), "v1", image)
        except (RegistryError, OSError) as error:
            return f"client {index}: {error}"
        return None

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(i, image) for i, image in enumerate(images)))
    seconds = time.perf_counter() - started
    errors = tuple(o for o in outcomes if o is not None)
    pushed = sum(image.size for image, o in zip(images, outcomes, strict=True) if o is None)
    return ConcurrentResult(seconds, pushed, errors)


def disk_write_read(directory: Path, image: Image) -> tuple[float, float]:
    """Seconds to write the image's blobs as files with fsync (as the registry commits
    them), then to read them back with their pages dropped from the cache."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"blob-{i}" for i in range(len(image.layers) + 1)]
    started = time.perf_counter()
    for path, data in zip(paths, (image.config, *image.layers), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    write = time.perf_counter() - started
    for path in paths:  # only these files leave the cache; nothing machine-wide is dropped
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    started = time.perf_counter()
    for path in paths:
        with path.open("rb", buffering=0) as file:
            while file.read(READ_CHUNK):
                pass
    read = time.perf_counter() - started
    for path in paths:
        path.unlink()
    return write, read


async def push_until_accepted(endpoint: Endpoint, image: Image, timeout: float) -> float:
    """The first push after ready: retried until it succeeds, as a user would; seconds taken."""
    started = time.monotonic()
    deadline = started + timeout
    repo = new_repository("first")
    while True:
        try:
            async with RegistryClient(
                endpoint.url, endpoint.username, endpoint.password, endpoint.ca_file, timeout=10
            ) as client:
                await push_image(client, repo, "v1", image)
            return time.monotonic() - started
        except RegistryError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
