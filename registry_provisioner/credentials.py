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
from .certificates import (
    CertificateAuthority,
    certificate_problems,
    issue_server_cert,
    make_ca,
)
from .config import Settings
from .errors import ProvisionError
from .logins import generate_password, htpasswd_line

# A stored self-signed certificate this close to expiry (or already past it) is replaced.
SELF_SIGNED_RENEW_BEFORE = dt.timedelta(days=30)
# A CA this close to its end is replaced along with the certificate it would sign.
CA_RENEW_BEFORE = dt.timedelta(days=400)


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
    ca_key_pem: str = field(default="", repr=False)


def generate_http_secret() -> str:
    """The secret every replica must share to sign upload state (else "blob upload unknown")."""
    return secrets.token_urlsafe(32)


def _login(username: str, password: str, http_secret: str) -> Credentials:
    return Credentials(username, password, htpasswd_line(username, password), http_secret)


def _with_server_cert(
    settings: Settings, credentials: Credentials, ca: CertificateAuthority
) -> Credentials:
    cert_pem, key_pem = issue_server_cert(ca, list(settings.tls_dns_names), [settings.service.ip])
    return replace(
        credentials, ca_pem=ca.cert_pem, ca_key_pem=ca.key_pem, cert_pem=cert_pem, key_pem=key_pem
    )


def generate_credentials(settings: Settings) -> Credentials:
    """Fresh credentials for ``settings``, with a CA and cert in ``self-signed`` mode."""
    fresh = _login(settings.auth.username, generate_password(), generate_http_secret())
    if settings.tls.mode == "self-signed":
        fresh = _with_server_cert(settings, fresh, make_ca())
    return fresh


def _decode(secret: dict, key: str) -> str:
    return base64.b64decode(secret.get("data", {}).get(key, "")).decode()


def ca_secret_name(settings: Settings) -> str:
    """Where self-signed mode keeps its CA's key (manifests/tls-secret.yaml.j2)."""
    return f"{settings.tls.secret_name}-ca"


async def _secret(api: kr8s.asyncio.Api, settings: Settings, name: str) -> dict | None:
    return await kube.read(api, f"secrets/{name}", namespace=settings.namespace)


async def existing_credentials(api: kr8s.asyncio.Api, settings: Settings) -> Credentials | None:
    """The stored login (and in self-signed mode the stored pair and CA), or None.

    Only a Secret that is really absent gives None; a failed read raises.
    """
    auth = await _secret(api, settings, settings.auth.secret_name)
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
        credentials = _login(settings.auth.username, credentials.password, credentials.http_secret)
    if settings.tls.mode == "self-signed":
        tls = await _secret(api, settings, settings.tls.secret_name) or {}
        ca = await _secret(api, settings, ca_secret_name(settings)) or {}
        credentials = replace(
            credentials,
            ca_pem=_decode(ca, "tls.crt") or _decode(tls, "ca.crt"),
            ca_key_pem=_decode(ca, "tls.key"),
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
    """Why the stored self-signed server certificate must be replaced, or None to keep it."""
    if settings.tls.mode != "self-signed":
        return None
    if not credentials.cert_pem:
        return "there is no server certificate yet"
    problems = certificate_problems(
        credentials.cert_pem, [settings.service.ip], renew_before=SELF_SIGNED_RENEW_BEFORE
    )
    return "; ".join(problems) or None


def _usable_ca(credentials: Credentials) -> CertificateAuthority | None:
    """The stored CA, when its key is stored too and it outlives the next certificate."""
    if not (credentials.ca_pem and credentials.ca_key_pem):
        return None
    if certificate_problems(credentials.ca_pem, [], renew_before=CA_RENEW_BEFORE):
        return None
    return CertificateAuthority(credentials.ca_pem, credentials.ca_key_pem)


async def credentials_for(
    api: kr8s.asyncio.Api, settings: Settings, rotate_password: bool
) -> tuple[Credentials, str | None]:
    """The credentials to apply, and what a self-signed renewal changed (if one happened).

    Nothing is generated that is stored already: the password only when the login
    Secret is absent or on rotation, the server certificate only when it is due,
    and the CA only when it is missing or itself about to expire.
    """
    existing = await existing_credentials(api, settings)
    if existing is None:
        return generate_credentials(settings), None
    if rotate_password:
        password = generate_password()
        existing = replace(
            existing, password=password, htpasswd=htpasswd_line(existing.username, password)
        )
    reason = self_signed_renewal_reason(settings, existing)
    if reason is None:
        return existing, None
    ca = _usable_ca(existing)
    if ca is not None:
        renewed = _with_server_cert(settings, existing, ca)
        return renewed, f"new certificate from the same CA, clients keep their ca.crt ({reason})"
    renewed = _with_server_cert(settings, existing, make_ca())
    return renewed, f"new CA and certificate ({reason}); give clients the new ca.crt"


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
