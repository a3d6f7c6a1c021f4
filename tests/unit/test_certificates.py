"""The self-signed CA and server certificate: checked with the same libraries clients use."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from registry_provisioner.certificates import certificate_problems, self_signed_ca_and_server_cert

HOSTS = ["docker-registry-service.docker-registry.svc", "registry.home.lan"]
IPS = ["172.17.1.62", "fd00::62"]


@pytest.fixture(scope="module")
def pems() -> tuple[str, str, str]:
    return self_signed_ca_and_server_cert(HOSTS, IPS)


@pytest.fixture(scope="module")
def chain(pems: tuple[str, str, str]) -> tuple[x509.Certificate, x509.Certificate, str]:
    ca_pem, cert_pem, key_pem = pems
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return ca, cert, key_pem


def test_server_cert_chains_to_the_ca(
    chain: tuple[x509.Certificate, x509.Certificate, str],
) -> None:
    ca, cert, _ = chain
    cert.verify_directly_issued_by(ca)  # raises on a bad signature or issuer mismatch
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_constraints.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_server_cert_has_dns_and_ip_sans(
    chain: tuple[x509.Certificate, x509.Certificate, str],
) -> None:
    _, cert, _ = chain
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == HOSTS
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip) for ip in IPS]
    # An IP must never hide in a DNS SAN: clients would not match it.
    assert not set(IPS) & set(san.get_values_for_type(x509.DNSName))


def test_server_cert_validity_is_a_year_and_key_matches(
    chain: tuple[x509.Certificate, x509.Certificate, str],
) -> None:
    ca, cert, key_pem = chain
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= lifetime <= dt.timedelta(days=366)
    assert ca.not_valid_after_utc > cert.not_valid_after_utc
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC)
    key = load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def _handshake(ca_pem: str, cert_pem: str, key_pem: str, tmp_path: Path, name: str) -> None:
    """A TLS handshake in memory (no sockets), verified the way clients verify."""
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_text(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("name", ["172.17.1.62", "fd00::62", "registry.home.lan"])
def test_clients_accept_the_cert_for_each_san(
    pems: tuple[str, str, str], tmp_path: Path, name: str
) -> None:
    _handshake(*pems, tmp_path, name)


def test_clients_reject_a_name_not_in_the_sans(pems: tuple[str, str, str], tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(*pems, tmp_path, "172.17.1.63")


def test_self_signed_needs_a_name() -> None:
    with pytest.raises(ValueError):
        self_signed_ca_and_server_cert([], [])


def test_a_current_certificate_naming_the_ip_has_no_problems(pems: tuple[str, str, str]) -> None:
    _, cert, _ = pems
    assert certificate_problems(cert, ["172.17.1.62", "fd00::62"]) == []


def test_an_expired_certificate_is_named_with_its_date() -> None:
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    _, cert, _ = self_signed_ca_and_server_cert([], ["10.0.0.5"], not_before=two_days_ago, days=1)
    [problem] = certificate_problems(cert, ["10.0.0.5"])
    expired_on = (two_days_ago + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert problem.startswith(f"the certificate expires {expired_on}")


def test_renew_before_counts_a_soon_expiring_certificate() -> None:
    _, cert, _ = self_signed_ca_and_server_cert([], ["10.0.0.5"], days=10)
    assert certificate_problems(cert, ["10.0.0.5"], renew_before=dt.timedelta(days=9)) == []
    assert certificate_problems(cert, ["10.0.0.5"], renew_before=dt.timedelta(days=11))


def test_a_future_certificate_and_a_missing_ip_are_both_named() -> None:
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    _, cert, _ = self_signed_ca_and_server_cert(["r.test"], ["10.0.0.5"], not_before=tomorrow)
    not_yet, missing_ip = certificate_problems(cert, ["10.0.0.6"])
    assert not_yet.startswith("the certificate is not valid until")
    assert missing_ip == "the certificate has no IP SAN for 10.0.0.6"


def test_garbage_is_not_a_certificate() -> None:
    assert certificate_problems("not a pem", ["10.0.0.5"]) == ["tls.crt is not a PEM certificate"]
