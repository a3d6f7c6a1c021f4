"""The registry's credentials: generated once, read back so a re-run keeps them, rotated.

Provision generates ``Credentials`` on the first run and hands them to
``render_manifests``; later runs read them from the cluster's Secrets. Clients
get the CA that signed the serving certificate from here too.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
from concurrent.futures import ThreadPoolExecutor
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
from .logins import bcrypt_hash, generate_password

# Keys of the auth Secret that hold each login's hash: the files the proxy reads.
ADMIN_HASH_KEY = "admin.bcrypt"
PULL_HASH_KEY = "pull.bcrypt"
# A stored self-signed certificate this close to expiry (or already past it) is replaced.
SELF_SIGNED_RENEW_BEFORE = dt.timedelta(days=30)
# A CA this close to its end is replaced along with the certificate it would sign.
CA_RENEW_BEFORE = dt.timedelta(days=400)


@dataclass(frozen=True)
class Credentials:
    """Generated secret material; ``repr`` hides it so it never lands in a log.

    Two logins: the admin (``username``) may do anything, the pull login only read.
    Each password's bcrypt hash is stored beside it, so a re-run renders the same
    hash and the registry pod is not rolled for nothing.
    """

    username: str
    password: str = field(repr=False)
    password_hash: str = field(repr=False)
    pull_username: str
    pull_password: str = field(repr=False)
    pull_password_hash: str = field(repr=False)
    http_secret: str = field(repr=False)
    ca_pem: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)
    ca_key_pem: str = field(default="", repr=False)


def generate_http_secret() -> str:
    """The secret every replica must share to sign upload state (else "blob upload unknown")."""
    return secrets.token_urlsafe(32)


def with_admin_password(credentials: Credentials, password: str) -> Credentials:
    return replace(credentials, password=password, password_hash=bcrypt_hash(password))


def with_pull_password(credentials: Credentials, password: str) -> Credentials:
    return replace(credentials, pull_password=password, pull_password_hash=bcrypt_hash(password))


def _with_server_cert(
    settings: Settings, credentials: Credentials, ca: CertificateAuthority
) -> Credentials:
    cert_pem, key_pem = issue_server_cert(ca, list(settings.tls_dns_names), [settings.service.ip])
    return replace(
        credentials, ca_pem=ca.cert_pem, ca_key_pem=ca.key_pem, cert_pem=cert_pem, key_pem=key_pem
    )


def generate_credentials(settings: Settings) -> Credentials:
    """Fresh credentials for ``settings``, with a CA and cert in ``self-signed`` mode."""
    admin, puller = generate_password(), generate_password()
    # bcrypt releases the GIL: the two hashes take one hash's time, on provision's path.
    with ThreadPoolExecutor(max_workers=2) as pool:
        admin_hash, pull_hash = pool.map(bcrypt_hash, (admin, puller))
    fresh = Credentials(
        username=settings.auth.username,
        password=admin,
        password_hash=admin_hash,
        pull_username=settings.auth.pull_username,
        pull_password=puller,
        pull_password_hash=pull_hash,
        http_secret=generate_http_secret(),
    )
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
    # A renamed login keeps its password: the hash covers the password alone.
    credentials = Credentials(
        username=settings.auth.username,
        password=_decode(auth, "password"),
        password_hash=_decode(auth, ADMIN_HASH_KEY),
        pull_username=settings.auth.pull_username,
        pull_password=_decode(auth, "pull-password"),
        pull_password_hash=_decode(auth, PULL_HASH_KEY),
        http_secret=_decode(auth, "http-secret"),
    )
    if not credentials.password_hash:  # stored before the proxy: only an htpasswd line
        credentials = with_admin_password(credentials, credentials.password)
    if not credentials.pull_password:  # stored before there was a pull login
        credentials = with_pull_password(credentials, generate_password())
    elif not credentials.pull_password_hash:
        credentials = with_pull_password(credentials, credentials.pull_password)
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
    api: kr8s.asyncio.Api,
    settings: Settings,
    rotate_password: bool,
    rotate_pull_password: bool = False,
) -> tuple[Credentials, str | None]:
    """The credentials to apply, and what a self-signed renewal changed (if one happened).

    Nothing is generated that is stored already: a password only when the login
    Secret is absent or on rotation, the server certificate only when it is due,
    and the CA only when it is missing or itself about to expire.
    """
    existing = await existing_credentials(api, settings)
    if existing is None:
        # bcrypt and key generation release the GIL: a caller's reads go on meanwhile.
        return await asyncio.to_thread(generate_credentials, settings), None
    if rotate_password:
        existing = with_admin_password(existing, generate_password())
    if rotate_pull_password:
        existing = with_pull_password(existing, generate_password())
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
