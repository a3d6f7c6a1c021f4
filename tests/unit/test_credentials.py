"""Generated credentials follow the settings, hide in repr, and renew when due."""

from __future__ import annotations

import dataclasses
import ipaddress

from cryptography import x509

from registry_provisioner.certificates import self_signed_ca_and_server_cert
from registry_provisioner.config import Settings
from registry_provisioner.credentials import (
    Credentials,
    generate_credentials,
    generate_http_secret,
    self_signed_renewal_reason,
    with_pull_password,
)
from registry_provisioner.logins import hash_matches


def test_http_secrets_are_long_and_random() -> None:
    assert len(generate_http_secret()) >= 32
    assert generate_http_secret() != generate_http_secret()


def test_generate_credentials_matches_settings() -> None:
    creds = generate_credentials(Settings())
    assert (creds.username, creds.pull_username) == ("registry", "puller")
    assert hash_matches(creds.password, creds.password_hash)
    assert hash_matches(creds.pull_password, creds.pull_password_hash)
    assert not hash_matches(creds.pull_password, creds.password_hash)
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
    creds = Credentials(
        username="registry",
        password="hunter2",
        password_hash="$2y$hash",
        pull_username="puller",
        pull_password="pullpass",
        pull_password_hash="$2y$pullhash",
        http_secret="httpsecret",
        ca_pem="ca",
        cert_pem="c",
        key_pem="k",
    )
    text = repr(creds)
    assert "registry" in text and "puller" in text
    for secret in ("hunter2", "$2y$hash", "pullpass", "$2y$pullhash", "httpsecret"):
        assert secret not in text


def test_a_pull_rotation_leaves_the_admin_login_alone() -> None:
    creds = generate_credentials(Settings())
    rotated = with_pull_password(creds, "new-pull-password")
    assert hash_matches("new-pull-password", rotated.pull_password_hash)
    assert (rotated.password, rotated.password_hash) == (creds.password, creds.password_hash)


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
