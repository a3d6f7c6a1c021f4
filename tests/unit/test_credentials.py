"""Generated credentials follow the settings, hide in repr, and renew when due."""

from __future__ import annotations

import dataclasses
import ipaddress

import bcrypt
from cryptography import x509

from registry_provisioner.certificates import self_signed_ca_and_server_cert
from registry_provisioner.config import Settings
from registry_provisioner.credentials import (
    Credentials,
    generate_credentials,
    generate_http_secret,
    self_signed_renewal_reason,
)


def test_http_secrets_are_long_and_random() -> None:
    assert len(generate_http_secret()) >= 32
    assert generate_http_secret() != generate_http_secret()


def test_generate_credentials_matches_settings() -> None:
    creds = generate_credentials(Settings())
    assert creds.username == "registry"
    assert bcrypt.checkpw(creds.password.encode(), creds.htpasswd.split(":", 1)[1].encode())
    assert creds.ca_pem == creds.cert_pem == creds.key_pem == ""  # cert-manager mode


def test_generate_credentials_self_signed_covers_ip_and_service_names() -> None:
    base = Settings()
    settings = dataclasses.replace(base, tls=dataclasses.replace(base.tls, mode="self-signed"))
    creds = generate_credentials(settings)
    cert = x509.load_pem_x509_certificate(creds.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("172.17.1.62") in san.get_values_for_type(x509.IPAddress)
    assert set(settings.cluster_dns_names) <= set(san.get_values_for_type(x509.DNSName))


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("registry", "hunter2", "registry:$2y$hash", "httpsecret", "ca", "c", "k")
    text = repr(creds)
    assert "registry" in text
    for secret in ("hunter2", "$2y$hash", "httpsecret"):
        assert secret not in text


def test_a_self_signed_certificate_is_renewed_when_due_or_the_ip_moved() -> None:
    base = Settings()
    settings = dataclasses.replace(base, tls=dataclasses.replace(base.tls, mode="self-signed"))
    current = generate_credentials(settings)
    assert self_signed_renewal_reason(settings, current) is None
    moved = dataclasses.replace(
        settings, service=dataclasses.replace(settings.service, ip="172.17.1.63")
    )
    assert "no IP SAN for 172.17.1.63" in (self_signed_renewal_reason(moved, current) or "")
    _, soon, _ = self_signed_ca_and_server_cert([], ["172.17.1.62"], days=7)
    due = dataclasses.replace(current, cert_pem=soon)
    assert "expires" in (self_signed_renewal_reason(settings, due) or "")
    # cert-manager renews its own certificates; nothing here replaces them.
    assert self_signed_renewal_reason(base, due) is None
