"""The end-to-end check that a provisioned registry works: push, pull back, delete.

A green pod and an answering port do not prove that storage is writable, that
auth accepts the generated credentials, or that deletes are enabled; a real
round trip through the LoadBalancer IP does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import RegistryError
from .images import Image, pull_image, push_image, random_image
from .oci_client import RegistryClient

# Small, so the test is quick, but two layers so multi-blob pushes are exercised.
DEFAULT_LAYER_SIZES = (64 * 1024, 512 * 1024)
SMOKE_TAG = "smoke"
PHASES = ("ping", "push", "pull", "delete")


@dataclass(frozen=True)
class SmokeReport:
    """What the smoke test did and how long each phase took (seconds)."""

    base_url: str
    repository: str
    tag: str
    digest: str
    blob_sizes: tuple[int, ...]  # config then layers, as stored (compressed)
    pushed_bytes: int
    pulled_bytes: int
    timings: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[phase] = time.perf_counter() - started


def _check_same(pushed: Image, pulled: Image, how: str) -> None:
    """pull_image verified each blob against the manifest; this ties it to what we sent."""
    if pulled.manifest != pushed.manifest:
        raise RegistryError(
            f"the manifest pulled {how} is {pulled.digest}, but {pushed.digest} was pushed",
            hint="another writer replaced the tag, or a proxy serves stale content",
        )
    if pulled.config != pushed.config or pulled.layers != pushed.layers:
        raise RegistryError(
            f"the blobs pulled {how} differ from those pushed",
            hint="the registry served corrupt content",
        )


async def _expect_gone(client: RegistryClient, repo: str, ref: str) -> None:
    try:
        await client.get_manifest(repo, ref)
    except RegistryError as exc:
        if exc.status == 404:
            return
        raise
    raise RegistryError(
        f"{repo}:{ref} is still served after its manifest was deleted",
        status=200,
        hint="a caching proxy sits in front of the registry, or it ignored the delete",
    )


async def smoke_test(
    base_url: str,
    username: str | None,
    password: str | None,
    ca_file: str | os.PathLike[str] | None,
    repo: str | None = None,
    *,
    layer_sizes: tuple[int, ...] = DEFAULT_LAYER_SIZES,
    request_timeout: float = 30.0,
) -> SmokeReport:
    """Ping, push a fresh random image, pull it by tag and digest, then delete it.

    `repo` defaults to smoke-test/<random>, so runs never collide. Any failure raises
    RegistryError with the HTTP status and a hint; the image is deleted on the way
    out when it got pushed, so failed runs leave only blobs for garbage collection.
    `request_timeout` bounds each HTTP request, not the whole test.
    """
    repo = repo or f"smoke-test/{secrets.token_hex(6)}"
    image = random_image(list(layer_sizes))
    timings: dict[str, float] = {}
    client = RegistryClient(base_url, username, password, ca_file, timeout=request_timeout)
    async with client:
        with _timed(timings, "ping"):
            await client.ping()
        with _timed(timings, "push"):
            digest = await push_image(client, repo, SMOKE_TAG, image)
        deleted = False
        try:
            with _timed(timings, "pull"):
                by_tag = await pull_image(client, repo, SMOKE_TAG)
                by_digest = await pull_image(client, repo, digest)
            _check_same(image, by_tag, "by tag")
            _check_same(image, by_digest, "by digest")
            with _timed(timings, "delete"):
                await client.delete_manifest(repo, digest)
                deleted = True
                await _expect_gone(client, repo, digest)
                await _expect_gone(client, repo, SMOKE_TAG)
        finally:
            if not deleted:
                with contextlib.suppress(RegistryError):
                    await client.delete_manifest(repo, digest)
    return SmokeReport(
        base_url=base_url,
        repository=repo,
        tag=SMOKE_TAG,
        digest=digest,
        blob_sizes=(len(image.config), *(len(layer) for layer in image.layers)),
        pushed_bytes=image.size,
        pulled_bytes=by_tag.size + by_digest.size,
        timings=timings,
    )


def human_size(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number readable."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _rate(n: int, seconds: float) -> str:
    return f"{human_size(n / seconds)}/s" if seconds > 0 else "-"


def format_report(report: SmokeReport) -> str:
    """A few lines for humans: what was pushed where, and how long each phase took."""
    layers = report.blob_sizes[1:]
    t = report.timings
    pushed = report.pushed_bytes
    notes = {
        "ping": "GET /v2/ with credentials",
        "push": f"{human_size(pushed)}, {_rate(pushed, t.get('push', 0))}",
        "pull": f"by tag and by digest, {human_size(report.pulled_bytes)}, digests verified",
        "delete": "manifest gone (404 by digest and by tag)",
    }
    lines = [
        f"registry smoke test passed: {report.base_url}",
        f"  image   {report.repository}:{report.tag}@{report.digest}",
        f"  layers  {len(layers)} ({', '.join(human_size(s) for s in layers)})",
    ]
    lines += [
        f"  {phase:<7} {t[phase] * 1000:7.0f} ms  {notes[phase]}" for phase in PHASES if phase in t
    ]
    lines.append("  blobs stay in storage until `registry garbage-collect` runs")
    return "\n".join(lines)
