"""The registry's credentials: generated once, read back so a re-run keeps them, rotated.

Provision generates ``Credentials`` on the first run and hands them to
``render_manifests``; later runs read them from the cluster's Secrets. Clients
get the CA that signed the serving certificate from here too.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import kr8s.asyncio

from . import kube
from .certificates import certificate_problems, self_signed_ca_and_server_cert
from .config import Settings
from .errors import ProvisionError
from .logins import generate_password, htpasswd_line

# A stored self-signed certificate this close to expiry (or already past it) is replaced.
SELF_SIGNED_RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class Credentials:
    """Generated secret material; ``repr`` hides it so it never lands in a log."""

    username: str
    password: str = field(repr=False)
    htpasswd: str = field(repr=False)
    http_secret: str = field(repr=False)
    ca_pem: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)


def generate_http_secret() -> str:
    """The secret every replica must share to sign upload state (else "blob upload unknown")."""
    return secrets.token_urlsafe(32)


def generate_credentials(settings: Settings) -> Credentials:
    """Fresh credentials for ``settings``, with a CA and cert in ``self-signed`` mode."""
    password = generate_password()
    ca_pem = cert_pem = key_pem = ""
    if settings.tls.mode == "self-signed":
        ca_pem, cert_pem, key_pem = self_signed_ca_and_server_cert(
            list(settings.tls_dns_names), [settings.service.ip]
        )
    return Credentials(
        username=settings.auth.username,
        password=password,
        htpasswd=htpasswd_line(settings.auth.username, password),
        http_secret=generate_http_secret(),
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
    )


def _decode(secret: dict, key: str) -> str:
    return base64.b64decode(secret.get("data", {}).get(key, "")).decode()


async def existing_credentials(api: kr8s.asyncio.Api, settings: Settings) -> Credentials | None:
    """Credentials from an earlier run, so a re-run keeps the password and the CA."""
    auth = await kube.read(
        api, f"secrets/{settings.auth.secret_name}", namespace=settings.namespace
    )
    if auth is None or not _decode(auth, "password"):
        return None
    credentials = Credentials(
        username=_decode(auth, "username"),
        password=_decode(auth, "password"),
        htpasswd=_decode(auth, "htpasswd"),
        http_secret=_decode(auth, "http-secret"),
    )
    if credentials.username != settings.auth.username:
        # The user name changed: keep the password, re-hash it for the new name.
        credentials = replace(
            credentials,
            username=settings.auth.username,
            htpasswd=htpasswd_line(settings.auth.username, credentials.password),
        )
    if settings.tls.mode == "self-signed":
        tls = await kube.read(
            api, f"secrets/{settings.tls.secret_name}", namespace=settings.namespace
        )
        if tls is None:
            return None
        credentials = replace(
            credentials,
            ca_pem=_decode(tls, "ca.crt"),
            cert_pem=_decode(tls, "tls.crt"),
            key_pem=_decode(tls, "tls.key"),
        )
    return credentials


async def required_credentials(api: kr8s.asyncio.Api, settings: Settings) -> Credentials:
    """The stored credentials, for the tasks that need an installed registry."""
    credentials = await existing_credentials(api, settings)
    if credentials is None:
        raise ProvisionError(
            f"no registry credentials in namespace {settings.namespace}: run `invoke provision`"
        )
    return credentials


def self_signed_renewal_reason(settings: Settings, credentials: Credentials) -> str | None:
    """Why a stored self-signed certificate must be replaced, or None to keep it."""
    if settings.tls.mode != "self-signed":
        return None
    problems = certificate_problems(
        credentials.cert_pem, [settings.service.ip], renew_before=SELF_SIGNED_RENEW_BEFORE
    )
    return "; ".join(problems) or None


async def credentials_for(
    api: kr8s.asyncio.Api, settings: Settings, rotate_password: bool
) -> tuple[Credentials, str | None]:
    """The credentials to apply, and why the self-signed certificate was renewed (if it was)."""
    existing = await existing_credentials(api, settings)
    fresh = generate_credentials(settings)
    if existing is None:
        return fresh, None
    if rotate_password:
        existing = replace(existing, password=fresh.password, htpasswd=fresh.htpasswd)
    renewal = self_signed_renewal_reason(settings, existing)
    if renewal:
        existing = replace(
            existing, ca_pem=fresh.ca_pem, cert_pem=fresh.cert_pem, key_pem=fresh.key_pem
        )
    return existing, renewal


async def tls_secret_value(api: kr8s.asyncio.Api, settings: Settings, key: str) -> str:
    """One PEM from the TLS Secret (ca.crt, tls.crt), or "" when it or the Secret is absent."""
    tls = await kube.read(api, f"secrets/{settings.tls.secret_name}", namespace=settings.namespace)
    return _decode(tls, key) if tls else ""


async def fetch_ca(api: kr8s.asyncio.Api, settings: Settings) -> str:
    """The CA that signed the serving certificate, as issued into the TLS Secret."""
    ca = await tls_secret_value(api, settings, "ca.crt")
    if not ca:
        raise ProvisionError(
            f"Secret {settings.namespace}/{settings.tls.secret_name} has no ca.crt: "
            "clients need the CA; with a public issuer, the system trust store is used"
        )
    return ca


async def write_client_ca(api: kr8s.asyncio.Api, settings: Settings, ca_dir: Path) -> Path:
    """Write the CA where docker expects it, laid out as /etc/docker/certs.d/<host>/ca.crt."""
    path = ca_dir / settings.registry_host / "ca.crt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(await fetch_ca(api, settings))
    return path
