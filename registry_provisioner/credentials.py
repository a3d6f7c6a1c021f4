"""The registry's credentials: generated once, then read back so a re-run keeps them.

Provision generates ``Credentials`` on the first run and hands them to
``render_manifests``; later runs read them from the cluster's Secrets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .certificates import self_signed_ca_and_server_cert
from .config import Settings
from .logins import generate_password, htpasswd_line


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
