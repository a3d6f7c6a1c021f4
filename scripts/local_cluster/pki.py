"""The local cluster's certificates and kubeconfigs.

One CA signs everything. Every component authenticates with the admin
identity except the kubelet, which uses its node identity so the Node
authorizer sees a real node.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry_provisioner.certificates import key_usage

from . import network

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    """Paths of everything this module writes under <state>/pki."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def kubeconfig(self, name: str) -> Path:
        return self.root / f"{name}.kubeconfig"

    @property
    def service_account_key(self) -> Path:
        return self.root / "service-account.key"

    @property
    def service_account_pub(self) -> Path:
        return self.root / "service-account.pub"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _create_ca(pki: Pki) -> None:
    key = _new_key()
    subject = _name("registry-local-cluster-ca")
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            key_usage(ca=True),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(key), private=True)
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    pki: Pki,
    name: str,
    common_name: str,
    organization: str | None = None,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = _new_key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = _builder(_name(common_name, organization), ca_cert.subject, key.public_key())
    if dns_names or ips:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
        ca_key, hashes.SHA256()
    )
    _write(pki.key(name), _key_pem(key), private=True)
    _write(pki.cert(name), cert.public_bytes(serialization.Encoding.PEM))


def _write_kubeconfig(pki: Pki, name: str, server: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "registry-local-cluster",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate": str(pki.cert(name)),
                    "client-key": str(pki.key(name)),
                },
            }
        ],
        "contexts": [
            {
                "name": "registry-local-cluster",
                "context": {"cluster": "registry-local-cluster", "user": name},
            }
        ],
        "current-context": "registry-local-cluster",
    }
    _write(pki.kubeconfig(name), yaml.safe_dump(config).encode(), private=True)


def _create_service_account_keys(pki: Pki) -> None:
    key = _new_key()
    _write(pki.service_account_key, _key_pem(key), private=True)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(pki.service_account_pub, public)


def ensure_pki(root: Path) -> Pki:
    """Create the PKI once; a restart of the cluster reuses it."""
    pki = Pki(root)
    if pki.kubeconfig("admin").exists():
        return pki
    root.mkdir(parents=True, exist_ok=True)
    server = f"https://{network.NODE_IP}:{network.APISERVER_PORT}"
    _create_ca(pki)
    _create_service_account_keys(pki)
    _issue(
        pki,
        "apiserver",
        "kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=(network.NODE_IP, network.KUBERNETES_SERVICE_IP, "127.0.0.1"),
    )
    _issue(pki, "admin", "registry-local-admin", "system:masters")
    _issue(pki, "kubelet", f"system:node:{network.NODE_NAME}", "system:nodes")
    _issue(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
    _issue(pki, "kubelet-serving", network.NODE_NAME, ips=(network.NODE_IP,))
    for name in ("admin", "kubelet"):
        _write_kubeconfig(pki, name, server)
    return pki
