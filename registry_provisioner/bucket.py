"""Preflight for S3 storage: the bucket exists and the credentials may write to it.

Asked of the endpoint itself with SigV4-signed requests (HEAD the bucket, then PUT and
DELETE one probe object under storage.s3.root_directory), before anything on the
cluster changes. An endpoint that is an in-cluster Service (a `<svc>.<ns>.svc` name or
a Service's ClusterIP) is reached through the API server with a port-forward to one of
its ready pods; the requests still name and sign the endpoint's own host. Any other
endpoint is asked directly; one that does not answer from here is reported as not
checked, never as a missing bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import kr8s
import kr8s.asyncio

from . import kube
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


class EndpointProblem(OSError):
    """The endpoint names an in-cluster Service that cannot be reached through the API."""


@dataclass(frozen=True)
class ServiceName:
    """An in-cluster Service an endpoint names by DNS, and the Service port it uses."""

    name: str
    namespace: str
    port: int


def endpoint_host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of an http(s)://host[:port] endpoint; the scheme's port by default."""
    parts = urlsplit(endpoint)
    default = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "").lower(), parts.port or default


def service_name(endpoint: str) -> ServiceName | None:
    """The Service an endpoint names as `<svc>.<ns>.svc` or `<svc>.<ns>.svc.<cluster domain>`
    (e.g. cluster.local); None for any other host, which is asked directly."""
    host, port = endpoint_host_port(endpoint)
    labels = host.rstrip(".").split(".")
    if len(labels) < 3 or labels[2] != "svc" or not all(labels[:2]):
        return None
    return ServiceName(labels[0], labels[1], port)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Route:
    """Where this machine sends an endpoint's requests: `base` on the wire, while the
    Host header, the signature and the TLS name stay the endpoint's own (`host`)."""

    base: str
    host: str
    via: str = ""  # "": direct; else the Service/pod forwarded to, for messages

    def wire(self, url: str) -> str:
        """`url` (on the endpoint) as sent on this route."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return f"{self.base}{target}"

    def extensions(self) -> dict[str, Any]:
        return {"sni_hostname": urlsplit(f"//{self.host}").hostname} if self.via else {}


async def _service(api: kr8s.asyncio.Api, endpoint: str) -> tuple[Any, int] | None:
    """The Service an endpoint names (by DNS name or ClusterIP) and the port asked of it."""
    named = service_name(endpoint)
    if named is not None:
        found = await kube.get_all(api, "services", named.name, namespace=named.namespace)
        if not found:
            raise EndpointProblem(
                f"storage.s3.endpoint: {endpoint} names Service {named.namespace}/{named.name}, "
                "which does not exist: start the object store first or fix the endpoint"
            )
        return found[0], named.port
    host, port = endpoint_host_port(endpoint)
    if not _ip_literal(host):
        return None
    try:
        services = await kube.get_all(api, "services", namespace=kr8s.ALL)
    except kr8s.ServerError:
        return None  # not allowed to list Services: asked directly, as any other address
    for service in services:
        if host in (service.spec.get("clusterIPs") or [service.spec.get("clusterIP")]):
            return service, port
    return None


async def _target(service: Any, port: int, endpoint: str) -> tuple[Any, int]:
    """A ready pod behind `service` and the container port its `port` leads to."""
    where = f"Service {service.namespace}/{service.name}"
    spec_ports = [p for p in service.spec.get("ports") or [] if p.get("port") == port]
    if not spec_ports:
        raise EndpointProblem(
            f"storage.s3.endpoint: {where} has no port {port}: fix the port in {endpoint}"
        )
    pods = await service.ready_pods()
    if not pods:
        raise EndpointProblem(
            f"storage.s3.endpoint: no ready pod behind {where} ({endpoint}): "
            "start the object store first"
        )
    pod, target = pods[0], spec_ports[0].get("targetPort", port)
    if isinstance(target, str):  # a named container port
        named = [
            p["containerPort"]
            for container in pod.spec.get("containers", [])
            for p in container.get("ports") or []
            if p.get("name") == target
        ]
        if not named:
            raise EndpointProblem(f"storage.s3.endpoint: pod {pod.name} has no port {target!r}")
        target = named[0]
    return pod, int(target)


@contextlib.asynccontextmanager
async def route(api: kr8s.asyncio.Api | None, s3: S3Settings) -> AsyncIterator[Route]:
    """How this machine reaches the endpoint: through a port-forward when it is an
    in-cluster Service, directly otherwise (AWS, a LAN host, a node port)."""
    endpoint = endpoint_url(s3)
    netloc = urlsplit(endpoint).netloc
    found = await _service(api, endpoint) if api is not None and s3.endpoint else None
    if found is None:
        yield Route(endpoint.rstrip("/"), netloc)
        return
    service, asked = found
    pod, port = await _target(service, asked, endpoint)
    print(
        f"storage.s3: {endpoint} is Service {service.namespace}/{service.name} in the cluster: "
        f"reaching it through the API server (port-forward to pod {pod.name}, port {port})",
        file=sys.stderr,
        flush=True,
    )
    scheme = urlsplit(endpoint).scheme
    async with pod.portforward(port, local_port="auto") as local:
        yield Route(f"{scheme}://127.0.0.1:{local}", netloc, f"pod {pod.namespace}/{pod.name}")


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


def _unreachable(route: Route, error: httpx.TransportError, s3: S3Settings) -> str:
    """Why an in-cluster endpoint could not be asked through its port-forward."""
    return (
        f"storage.s3.endpoint: {endpoint_url(s3)} did not answer through a port-forward to "
        f"{route.via} ({type(error).__name__}): check that it serves S3 on that port and "
        "that your kubeconfig may create pods/portforward"
    )


def _verify(ca_pem: str) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else True


async def bucket_problems(
    s3: S3Settings, login: Login, ca_pem: str = "", api: kr8s.asyncio.Api | None = None
) -> list[str] | None:
    """What is wrong with the bucket or the credentials, or None when the endpoint
    cannot be reached from here (so nothing could be checked). With `api`, an
    in-cluster Service endpoint is asked through the API server."""
    root = s3.root_directory.strip("/")
    probe = f"{root}/{PROBE_PREFIX}{secrets.token_hex(8)}".lstrip("/")
    base = endpoint_url(s3).rstrip("/")
    try:
        async with (
            route(api, s3) as way,
            httpx.AsyncClient(timeout=TIMEOUT, verify=_verify(ca_pem)) as http,
        ):

            async def send(method: str, path: str, body: bytes = b"") -> int:
                url = f"{base}/{s3.bucket}{path}"
                now = dt.datetime.now(dt.UTC)
                headers = signed_headers(method, url, s3.region, login, body, now)
                response = await http.request(
                    method,
                    way.wire(url),
                    content=body,
                    headers=headers,
                    extensions=way.extensions(),
                )
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
                if way.via:
                    return [_unreachable(way, error, s3)]
                print(
                    f"note: storage.s3: {base} does not answer from here "
                    f"({type(error).__name__}) and is not an in-cluster Service; the bucket "
                    "is not checked before provisioning (an object store in the cluster is "
                    "checked through the API server when the endpoint names its Service: "
                    "http://<svc>.<ns>.svc:<port> or its ClusterIP)",
                    file=sys.stderr,
                    flush=True,
                )
                return None
    except EndpointProblem as problem:
        return [str(problem)]
    return []


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def storage_prefix(s3: S3Settings) -> str:
    """Where distribution writes in the bucket: the only keys an install's purge deletes."""
    root = s3.root_directory.strip("/")
    return f"{root}/docker/registry/v2/".lstrip("/")


async def empty_prefix(
    s3: S3Settings, login: Login, ca_pem: str = "", api: kr8s.asyncio.Api | None = None
) -> int | None:
    """Delete every object under storage_prefix (never the bucket); how many, or None
    when the endpoint cannot be reached from here. With `api`, an in-cluster Service
    endpoint is reached through the API server."""
    base = f"{endpoint_url(s3).rstrip('/')}/{s3.bucket}"
    async with (
        route(api, s3) as way,
        httpx.AsyncClient(timeout=TIMEOUT * 6, verify=_verify(ca_pem)) as http,
    ):

        async def send(method: str, url: str, query: dict[str, str] | None = None):
            now = dt.datetime.now(dt.UTC)
            headers = signed_headers(method, url, s3.region, login, b"", now, query)
            target = f"{url}?{canonical_query(query)}" if query else url
            return await http.request(
                method, way.wire(target), headers=headers, extensions=way.extensions()
            )

        try:
            return await _delete_listed(send, base, s3)
        except httpx.TransportError as error:
            if way.via:
                raise EndpointProblem(_unreachable(way, error, s3)) from error
            return None


async def _delete_listed(send: Any, base: str, s3: S3Settings) -> int:
    """List storage_prefix page by page and delete each key found under it."""
    from xml.etree import ElementTree

    prefix = storage_prefix(s3)
    deleted = 0
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
