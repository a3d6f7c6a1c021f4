"""The self-signed CA and server certificate, and why a server certificate would be refused.

Pure: nothing here talks to a cluster.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY_FACTOR = 10  # the CA outlives several server certs, so node trust survives renewals
_CLOCK_SKEW = dt.timedelta(minutes=5)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a server key signs only its TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A private CA: it outlives the server certificates it signs, so clients keep it."""

    cert_pem: str
    key_pem: str = field(repr=False)


def make_ca(
    *, days: int = 365 * CA_VALIDITY_FACTOR, not_before: dt.datetime | None = None
) -> CertificateAuthority:
    """A fresh CA, valid for `days`; ECDSA P-256 is fast and every client accepts it."""
    now = not_before or dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-provisioner CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(
        cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)
    )


def issue_server_cert(
    ca: CertificateAuthority,
    hosts: list[str],
    ips: list[str],
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
) -> tuple[str, str]:
    """A server certificate signed by `ca`: ``(cert_pem, key_pem)``.

    Clients check only SANs, so every host and IP goes there (IPs as IP SANs: an
    IP in a DNS SAN does not match). ``not_before`` backdates the certificate,
    which is how tests make an expired one.
    """
    if not hosts and not ips:
        raise ValueError("a server certificate needs at least one host name or IP")
    now = not_before or dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cn = next((h for h in hosts if len(h) <= 64), ips[0] if ips else hosts[0][:64])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def self_signed_ca_and_server_cert(
    hosts: list[str],
    ips: list[str],
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
) -> tuple[str, str, str]:
    """A new CA and a server certificate from it: ``(ca_pem, cert_pem, key_pem)``."""
    if not hosts and not ips:
        raise ValueError("a server certificate needs at least one host name or IP")
    ca = make_ca(days=days * CA_VALIDITY_FACTOR, not_before=not_before)
    cert_pem, key_pem = issue_server_cert(ca, hosts, ips, days=days, not_before=not_before)
    return ca.cert_pem, cert_pem, key_pem


def certificate_expiry(pem: str) -> dt.datetime:
    """When the PEM certificate stops being valid, in UTC."""
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def certificate_problems(
    cert_pem: str,
    ips: list[str],
    *,
    now: dt.datetime | None = None,
    renew_before: dt.timedelta = dt.timedelta(0),
) -> list[str]:
    """Why clients would refuse this server certificate for ``ips`` (empty if they would not).

    ``renew_before`` counts a certificate that expires within it as expired already.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return ["tls.crt is not a PEM certificate"]
    now = now or dt.datetime.now(dt.UTC)
    problems = []
    if cert.not_valid_after_utc <= now + renew_before:
        problems.append(f"the certificate expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        problems.append(
            f"the certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        named = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        named = set()
    missing = [ip for ip in ips if ip not in named]
    if missing:
        problems.append(f"the certificate has no IP SAN for {', '.join(missing)}")
    return problems
