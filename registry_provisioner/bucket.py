"""Preflight for S3 storage: the bucket exists and the credentials may write to it.

Asked of the endpoint itself with SigV4-signed requests (HEAD the bucket, then PUT and
DELETE one probe object under storage.s3.root_directory), before anything on the
cluster changes. An endpoint only the cluster can reach (an in-cluster Service) does
not answer from here: that is reported as not checked, never as a missing bucket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import ssl
import sys
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

from .config import S3Settings

TIMEOUT = 5.0
PROBE_PREFIX = "registry-provisioner-preflight-"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Login:
    access_key_id: str
    secret_access_key: str = field(repr=False)


def endpoint_url(s3: S3Settings) -> str:
    """The endpoint as distribution uses it; "" is AWS S3 in the region."""
    return s3.endpoint or f"https://s3.{s3.region}.amazonaws.com"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_query(query: dict[str, str]) -> str:
    """SigV4's query string: names and values percent-encoded, sorted by name."""
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in encoded)


def signed_headers(
    method: str,
    url: str,
    region: str,
    login: Login,
    body: bytes,
    now: dt.datetime,
    query: dict[str, str] | None = None,
) -> dict[str, str]:
    """AWS Signature Version 4 headers for one path-style S3 request."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    names = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            quote(parts.path or "/", safe="/-_.~"),
            canonical_query(query or {}),
            *(f"{name}:{headers[name]}" for name in sorted(headers)),
            "",
            names,
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = b"AWS4" + login.secret_access_key.encode()
    for part in (day, region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={login.access_key_id}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    return {**headers, "authorization": authorization}


def _why(status: int, action: str, s3: S3Settings) -> str:
    if status == 404:
        return (
            f"storage.s3.bucket: bucket {s3.bucket!r} does not exist at {endpoint_url(s3)}: "
            "create it first (provisioning never creates or deletes a bucket)"
        )
    if status in (401, 403):
        return (
            f"storage.s3.credentials_secret: the endpoint refused to let these credentials "
            f"{action} (HTTP {status}): check the keys in the Secret and their rights"
        )
    if status == 301:
        return f"storage.s3.region: bucket {s3.bucket!r} is in another region than {s3.region}"
    return f"storage.s3: {action} answered HTTP {status} at {endpoint_url(s3)}"


async def bucket_problems(s3: S3Settings, login: Login, ca_pem: str = "") -> list[str] | None:
    """What is wrong with the bucket or the credentials, or None when the endpoint
    cannot be reached from here (so nothing could be checked)."""
    verify: ssl.SSLContext | bool = True
    if ca_pem:
        verify = ssl.create_default_context(cadata=ca_pem)
    base = endpoint_url(s3).rstrip("/")
    root = s3.root_directory.strip("/")
    probe = f"{root}/{PROBE_PREFIX}{secrets.token_hex(8)}".lstrip("/")
    async with httpx.AsyncClient(timeout=TIMEOUT, verify=verify) as http:

        async def send(method: str, path: str, body: bytes = b"") -> int:
            url = f"{base}/{s3.bucket}{path}"
            now = dt.datetime.now(dt.UTC)
            headers = signed_headers(method, url, s3.region, login, body, now)
            response = await http.request(method, url, content=body, headers=headers)
            return response.status_code

        try:
            status = await send("HEAD", "")
            if status != 200:
                return [_why(status, "read the bucket", s3)]
            status = await send("PUT", f"/{probe}", b"registry-provisioner preflight\n")
            if status != 200:
                return [_why(status, "write to the bucket", s3)]
            status = await send("DELETE", f"/{probe}")
            if status not in (200, 204):
                return [_why(status, f"delete the probe object {probe}", s3)]
        except httpx.TransportError as error:
            print(
                f"note: storage.s3: {base} does not answer from here ({type(error).__name__}); "
                "the bucket is not checked before provisioning",
                file=sys.stderr,
                flush=True,
            )
            return None
    return []


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def storage_prefix(s3: S3Settings) -> str:
    """Where distribution writes in the bucket: the only keys an install's purge deletes."""
    root = s3.root_directory.strip("/")
    return f"{root}/docker/registry/v2/".lstrip("/")


async def empty_prefix(s3: S3Settings, login: Login, ca_pem: str = "") -> int | None:
    """Delete every object under storage_prefix (never the bucket); how many, or None
    when the endpoint cannot be reached from here."""
    from xml.etree import ElementTree

    verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=ca_pem) if ca_pem else True
    base = f"{endpoint_url(s3).rstrip('/')}/{s3.bucket}"
    prefix = storage_prefix(s3)
    deleted = 0
    async with httpx.AsyncClient(timeout=TIMEOUT * 6, verify=verify) as http:

        async def send(method: str, url: str, query: dict[str, str] | None = None):
            now = dt.datetime.now(dt.UTC)
            headers = signed_headers(method, url, s3.region, login, b"", now, query)
            target = f"{url}?{canonical_query(query)}" if query else url
            return await http.request(method, target, headers=headers)

        try:
            token = ""
            while True:
                query = {"list-type": "2", "prefix": prefix}
                if token:
                    query["continuation-token"] = token
                listing = await send("GET", base, query)
                if listing.status_code != 200:
                    raise OSError(_why(listing.status_code, "list the bucket", s3))
                root = ElementTree.fromstring(listing.content)
                keys = [e.text or "" for e in root.iter(f"{_S3_NS}Key")]
                for key in keys:
                    if not key.startswith(prefix):  # never outside what the install wrote
                        continue
                    gone = await send("DELETE", f"{base}/{quote(key, safe='/-_.~')}")
                    if gone.status_code not in (200, 204):
                        raise OSError(_why(gone.status_code, f"delete {key}", s3))
                    deleted += 1
                token = root.findtext(f"{_S3_NS}NextContinuationToken") or ""
                if not token:
                    return deleted
        except httpx.TransportError:
            return None
