"""A small async client for the OCI distribution API, enough to push and pull images.

It exists so the smoke test can prove, from outside the cluster, that the registry
accepts pushes and serves pulls over TLS with htpasswd (Basic) auth, and so that
failures come back as one error type carrying the HTTP status and a hint at the
usual cause, rather than as raw transport exceptions.

Blobs go up in one PUT: what the product pushes is small. The chunked uploads and
streamed downloads that only tests need are in tests/support/chunked_client.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterable, Mapping
from types import TracebackType
from typing import NamedTuple, Self

import httpx

from .errors import RegistryError
from .references import (
    DIGEST,
    check_digest,
    check_reference,
    check_repository,
    digest_like,
    sha256_digest,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
# Image manifests whose layers pull_image knows how to fetch.
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

_ERROR_BODY_LIMIT = 2048


class Manifest(NamedTuple):
    """A manifest exactly as the registry stored it: its digest covers these bytes."""

    data: bytes
    media_type: str
    digest: str


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes; httpx wraps the ssl/socket error two levels down."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _transport_hint(exc: httpx.TransportError) -> str:
    """Name the likely cause of a failure that produced no HTTP response."""
    causes = _chain(exc)
    text = " ".join(str(c) for c in causes)
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or ""
            if "mismatch" in reason:
                return (
                    "the registry's certificate does not name this address; "
                    "its SANs must include the IP or host you connect to"
                )
            if "expired" in reason:
                return (
                    "the registry's certificate has expired (or this machine's clock is wrong);"
                    " renew it, then restart the registry pod so it serves the new one"
                )
            if "not yet valid" in reason:
                return "the registry's certificate is not valid yet: check both machines' clocks"
            return "the CA does not match; pass the registry's CA certificate as ca_file"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "the port answers plain HTTP, not TLS; use an http:// URL or enable TLS"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect timed out: is the IP reachable / service pending?"
    if isinstance(exc, httpx.TimeoutException):
        return "the registry stopped answering mid-request; check its log and storage"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in text.lower():
        return "connection refused: is the IP reachable / service pending?"
    if isinstance(exc, httpx.ConnectError):
        return "is the IP reachable / service pending?"
    return "the connection failed; check the address and the registry's log"


def _error_codes(body: bytes) -> str:
    """The distribution error codes and messages from a JSON error body, if any."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError):
        return ""


def _status_hint(response: httpx.Response, has_credentials: bool) -> str:
    """Name the likely cause of an HTTP error status."""
    status = response.status_code
    body = response.content[:_ERROR_BODY_LIMIT]
    if status == 400 and b"HTTPS server" in body:
        return "the port speaks TLS; use an https:// URL"
    if status == 401:
        challenge = response.headers.get("www-authenticate", "")
        if challenge.lower().startswith("bearer"):
            return "the registry wants token (Bearer) auth, which this client does not support"
        return "wrong credentials" if has_credentials else "the registry requires credentials"
    if status == 403:
        return "the user may not do this (authorization), or the registry is read-only"
    if status == 404:
        return "no such repository, manifest or blob"
    if status == 405:
        return (
            "the registry does not allow this: it is read-only (maintenance such as "
            "`invoke gc`), or, for deletes, storage.delete.enabled is off"
        )
    if status == 413:
        return "a proxy in front of the registry limits the body size"
    if status == 416:
        return "the upload's byte ranges got out of step with the registry"
    if status == 429:
        return "the registry is rate limiting; retry later"
    if status >= 500:
        return "the registry failed internally; see its log (storage full or unwritable?)"
    return ""


class RegistryClient:
    """An async client for one registry; use it as `async with RegistryClient(...) as c`.

    `ca_file` names the PEM CA that signed the registry's certificate; None uses the
    system trust store. Credentials go out as Basic auth, which is what htpasswd expects.
    """

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._has_credentials = username is not None and password is not None
        auth = httpx.BasicAuth(username, password) if self._has_credentials else None
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=os.fspath(ca_file)) if ca_file else True
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            verify=verify,
            http1=True,
            http2=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"User-Agent": "registry-provisioner-oci-client"},
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r}, username={self.username!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    # -- the one place HTTP and transport failures become RegistryError --

    async def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        expect: tuple[int, ...],
        stream: bool = False,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        request = self._http.build_request(
            method, url, content=content, headers=headers, params=params
        )
        what = f"{method} {request.url.copy_with(query=None)}"
        try:
            response = await self._http.send(
                request, stream=stream, follow_redirects=follow_redirects
            )
        except httpx.TransportError as exc:
            raise RegistryError(
                f"{what} failed: {type(exc).__name__}: {exc}", hint=_transport_hint(exc)
            ) from exc
        if response.status_code in expect:
            return response
        try:
            await response.aread()
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        detail = _error_codes(response.content) or response.reason_phrase
        raise RegistryError(
            f"{what}: {detail}",
            status=response.status_code,
            hint=_status_hint(response, self._has_credentials),
        )

    # -- API --

    async def ping(self) -> None:
        """Check that a registry answers at base_url and accepts our credentials."""
        response = await self._send("GET", "/v2/", expect=(200, 404))
        if response.status_code == 404 or "docker-distribution-api-version" not in response.headers:
            raise RegistryError(
                f"GET {self.base_url}/v2/ did not answer like a registry",
                status=response.status_code,
                hint="something other than a registry answers on this address",
            )

    async def accepts_pushes(self, repo: str) -> bool:
        """Whether a push would be accepted now: False while the registry is read-only.

        Pushes an empty manifest, which a writable registry rejects as invalid (400)
        before it stores anything, and a read-only one refuses outright (405).
        """
        check_repository(repo)
        response = await self._send(
            "PUT",
            f"/v2/{repo}/manifests/push-probe",
            expect=(400, 405),
            content=b"",
            headers={"Content-Type": OCI_MANIFEST},
        )
        if response.status_code == 405:
            return False
        if "MANIFEST_INVALID" not in _error_codes(response.content):
            raise RegistryError(
                f"PUT {self.base_url}/v2/{repo}/manifests/push-probe: "
                f"{_error_codes(response.content) or response.reason_phrase}",
                status=400,
                hint="an empty manifest should be refused as MANIFEST_INVALID",
            )
        return True

    async def blob_exists(self, repo: str, digest: str) -> bool:
        """Whether the repository holds the blob, so a push can skip it."""
        check_repository(repo)
        check_digest(digest)
        response = await self._send(
            "HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404), follow_redirects=True
        )
        return response.status_code == 200

    async def push_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        """Upload a blob in one PUT and return its digest.

        The digest is computed here and, when `digest` is given, must match it.
        """
        check_repository(repo)
        if digest is not None:
            check_digest(digest)
        actual = sha256_digest(data) if digest is None else digest_like(digest, data)
        if digest is not None and actual != digest:
            raise ValueError(f"data does not match digest {digest} (it is {actual})")
        location = await self._start_upload(repo)
        try:
            return await self._finish_upload(location, actual, data)
        except BaseException:
            await self._cancel_upload(location)
            raise

    async def _start_upload(self, repo: str) -> httpx.URL:
        response = await self._send("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        return self._location(response)

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                f"{response.request.method} {response.request.url.path}: no Location header",
                status=response.status_code,
                hint="a proxy in front of the registry may be stripping headers",
            )
        return response.request.url.join(location)

    async def _cancel_upload(self, location: httpx.URL) -> None:
        """Free the registry's upload state after a failure; best effort."""
        with contextlib.suppress(RegistryError):
            await self._send("DELETE", location, expect=(204, 404))

    async def _finish_upload(self, location: httpx.URL, digest: str, body: bytes) -> str:
        return await self._put_checked(
            location.copy_merge_params({"digest": digest}),
            body,
            "application/octet-stream",
            digest,
            what="blob",
            hint="the upload was altered in transit",
        )

    async def _put_checked(
        self,
        url: str | httpx.URL,
        body: bytes,
        content_type: str,
        digest: str,
        *,
        what: str,
        hint: str,
    ) -> str:
        """PUT `body` and check that the registry stored it under `digest`."""
        response = await self._send(
            "PUT", url, expect=(201,), content=body, headers={"Content-Type": content_type}
        )
        stored = response.headers.get("docker-content-digest", digest)
        if stored != digest:
            raise RegistryError(
                f"registry stored {what} as {stored}, expected {digest}",
                status=response.status_code,
                hint=hint,
            )
        return digest

    async def get_blob(self, repo: str, digest: str) -> bytes:
        """Download a blob whole, verifying it against its digest."""
        check_repository(repo)
        check_digest(digest)
        response = await self._send(
            "GET", f"/v2/{repo}/blobs/{digest}", expect=(200,), follow_redirects=True
        )
        _verify(digest, digest_like(digest, response.content), f"blob in {repo}")
        return response.content

    async def put_manifest(
        self, repo: str, ref: str, manifest: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """Store a manifest under a tag (or its digest) and return its digest."""
        check_repository(repo)
        check_reference(ref)
        return await self._put_checked(
            f"/v2/{repo}/manifests/{ref}",
            manifest,
            media_type,
            sha256_digest(manifest),
            what="the manifest",
            hint="the registry rewrote the manifest; is the media type right?",
        )

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """Fetch a manifest by tag or digest, verifying its digest."""
        check_repository(repo)
        check_reference(ref)
        response = await self._send(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            expect=(200,),
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        data = response.content
        claimed = ref if DIGEST.fullmatch(ref) else response.headers.get("docker-content-digest")
        digest = digest_like(claimed, data) if claimed else sha256_digest(data)
        if claimed:
            _verify(claimed, digest, f"manifest {repo}:{ref}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return Manifest(data, media_type, digest)

    async def manifest_digest(
        self, repo: str, ref: str, accept: tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """The digest and media type the registry answers for `ref`, without the body.

        `accept` adds media types (say, the schema 1 ones) to those this client reads.
        """
        check_repository(repo)
        check_reference(ref)
        response = await self._send(
            "HEAD",
            f"/v2/{repo}/manifests/{ref}",
            expect=(200,),
            headers={"Accept": ", ".join((*MANIFEST_MEDIA_TYPES, *accept))},
        )
        digest = response.headers.get("docker-content-digest", "")
        if not DIGEST.fullmatch(digest):
            raise RegistryError(
                f"HEAD {self.base_url}/v2/{repo}/manifests/{ref}: no digest in the answer",
                status=response.status_code,
                hint="a registry answers a manifest HEAD with Docker-Content-Digest",
            )
        return digest, response.headers.get("content-type", "").split(";")[0].strip()

    async def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest (and so every tag on it); blobs stay until garbage collection."""
        check_repository(repo)
        check_digest(digest)
        await self._send("DELETE", f"/v2/{repo}/manifests/{digest}", expect=(202,))

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag in the repository, following pagination."""
        check_repository(repo)
        return await self._paged(f"/v2/{repo}/tags/list", "tags")

    async def catalog(self) -> list[str]:
        """Every repository name, following pagination."""
        return await self._paged("/v2/_catalog", "repositories")

    async def _paged(self, path: str, key: str) -> list[str]:
        items: list[str] = []
        url: str | httpx.URL = path
        while True:
            response = await self._send("GET", url, expect=(200,))
            items.extend(response.json().get(key) or [])
            following = response.links.get("next", {}).get("url")
            if not following:
                return items
            url = response.request.url.join(following)


def _verify(expected: str, actual: str, what: str) -> None:
    if actual != expected:
        raise RegistryError(
            f"{what}: content digest is {actual}, expected {expected}",
            hint="the registry served corrupt content, or a proxy altered it",
        )
