"""Chunked uploads and streamed downloads, for tests only.

The product pushes small blobs in one PUT. The tests also need the registry's
PATCH upload path (to cut an upload off mid-blob, and to check chunk ranges) and
a download that is verified only at its end, so those live here, on top of the
product's client and with its error wording.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator

import httpx

from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient, _transport_hint, _verify
from registry_provisioner.references import (
    check_digest,
    check_repository,
    digest_like,
    hasher_for,
)

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024


class ChunkedClient(RegistryClient):
    """RegistryClient plus PATCH-chunked uploads and streamed, end-verified downloads."""

    def reconnect_each_request(self) -> None:
        """Ask for a new connection per request, so a Service balances every request
        (each chunk of an upload, too) across the replicas behind it."""
        self._http.headers["Connection"] = "close"

    async def push_blob_in_chunks(
        self,
        repo: str,
        data: bytes | AsyncIterable[bytes],
        digest: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> str:
        """Upload a blob as PATCH chunks of `chunk_size` (bar the last); return its digest.

        Bytes are checked against `digest` before anything goes up; an async
        iterable's digest is known only at the end, so it is checked then.
        """
        check_repository(repo)
        if digest is not None:
            check_digest(digest)
        if isinstance(data, bytes):
            if digest is not None and (actual := digest_like(digest, data)) != digest:
                raise ValueError(f"data does not match digest {digest} (it is {actual})")
            chunks = _chunks_of(data, chunk_size)
        else:
            chunks = _rechunk(data, chunk_size)
        return await self._push_chunked(repo, chunks, digest=digest)

    async def _push_chunked(
        self, repo: str, chunks: AsyncIterator[bytes], *, digest: str | None
    ) -> str:
        location = await self._start_upload(repo)
        hasher = hasher_for(digest) if digest else hashlib.sha256()
        offset = 0
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                response = await self._send(
                    "PATCH",
                    location,
                    expect=(202,),
                    content=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    },
                )
                offset += len(chunk)
                location = self._location(response)
            actual = f"{hasher.name}:{hasher.hexdigest()}"
            if digest is not None and actual != digest:
                raise ValueError(f"data does not match digest {digest} (it is {actual})")
            return await self._finish_upload(location, actual, b"")
        except BaseException:
            await self._cancel_upload(location)
            raise

    async def push_blob_streamed(self, repo: str, pieces: AsyncIterable[bytes]) -> str:
        """Upload a blob as docker does: one PATCH whose body streams from `pieces`
        (chunked transfer, so the request stays open while they come), then the PUT
        with the digest of what went by. A test can hold the request open mid-body."""
        check_repository(repo)
        location = await self._start_upload(repo)
        hasher = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            async for piece in pieces:
                hasher.update(piece)
                yield piece

        try:
            response = await self._send(
                "PATCH",
                location,
                expect=(202,),
                content=body(),
                headers={"Content-Type": "application/octet-stream"},
            )
            digest = f"sha256:{hasher.hexdigest()}"
            return await self._finish_upload(self._location(response), digest, b"")
        except BaseException:
            await self._cancel_upload(location)
            raise

    async def stream_blob(
        self, repo: str, digest: str, *, chunk_size: int = 1024 * 1024
    ) -> AsyncIterator[bytes]:
        """Download a blob piece by piece, for blobs too big to hold in memory.

        The digest can only be checked once every byte has gone by, so a mismatch
        raises RegistryError at the end of iteration: discard what was written then.
        """
        check_repository(repo)
        check_digest(digest)
        response = await self._send(
            "GET", f"/v2/{repo}/blobs/{digest}", expect=(200,), stream=True, follow_redirects=True
        )
        hasher = hasher_for(digest)
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                hasher.update(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise RegistryError(
                f"GET blob {digest} in {repo} broke off: {exc}", hint=_transport_hint(exc)
            ) from exc
        finally:
            await response.aclose()
        _verify(digest, f"{hasher.name}:{hasher.hexdigest()}", f"blob in {repo}")


async def _chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    if size <= 0:
        raise ValueError("chunk_size must be positive")
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup an iterable's pieces into chunks of exactly `size` (bar the last)."""
    if size <= 0:
        raise ValueError("chunk_size must be positive")
    pending = bytearray()
    async for piece in source:
        pending += piece
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
