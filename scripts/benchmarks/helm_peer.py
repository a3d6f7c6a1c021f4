"""The helm peer: the path a helm user takes to the same registry, timed like ours.

A Certificate (and its namespace) applied with kubectl and waited for, then
`helm install --wait` of the twuni docker-registry chart as published, with the
same registry image, TLS from that Certificate's Secret, an htpasswd login at
the product's bcrypt cost, a longhorn volume and a LoadBalancer at the bench's
address through MetalLB's annotation; the clock stops when the same first push
is accepted. The chart is another project's code: it is read from
../shared/peers and never copied here; without it the figure is not measured.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from registry_provisioner import kube
from registry_provisioner.images import Image
from registry_provisioner.logins import BCRYPT_ROUNDS, htpasswd_line
from scripts.loopback_proxy import write_secret

from .children import REPO_ROOT, BenchError
from .data_plane import Endpoint, push_until_accepted
from .lifecycle import WAIT_TIMEOUT, Ready, Target, child

CHART_DIR = REPO_ROOT.parent / "shared" / "peers" / "twuni-docker-registry-3.0.0"
NAMESPACE = "bench-helm"
RELEASE = "registry"
CERTIFICATE = "registry-tls"  # and its Secret
USERNAME = "admin"
GONE_TIMEOUT = 300.0


def missing_reason(chart_dir: Path = CHART_DIR) -> str | None:
    """Why the helm figure cannot be measured here, or None when it can."""
    if not (chart_dir / "Chart.yaml").is_file():
        return f"the twuni chart is not at {chart_dir}"
    return None


def helm_binary() -> Path:
    from scripts.local_cluster import build, components

    return build.build(components.helm())


@dataclass(frozen=True)
class HelmUser:
    """What the helm user's run needs: their tools, their files and the login they chose."""

    target: Target
    helm: Path
    work_dir: Path
    password: str

    @property
    def ip(self) -> str:
        return self.target.settings.service.ip

    @property
    def certificate_file(self) -> Path:
        return self.work_dir / "certificate.yaml"

    @property
    def values_file(self) -> Path:
        return self.work_dir / "values.yaml"

    def helm_command(self, *args: str) -> list[str]:
        """helm with its state under work_dir, so nothing lands in the user's home."""
        home = self.work_dir / "helm-home"
        return [
            "env",
            f"HELM_CACHE_HOME={home / 'cache'}",
            f"HELM_CONFIG_HOME={home / 'config'}",
            f"HELM_DATA_HOME={home / 'data'}",
            str(self.helm),
            f"--kubeconfig={self.target.kubeconfig}",
            f"--namespace={NAMESPACE}",
            *args,
        ]


def certificate_manifests(target: Target) -> list[dict[str, Any]]:
    """The namespace and a Certificate for the address, from the cluster's issuer."""
    s = target.settings
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": CERTIFICATE, "namespace": NAMESPACE},
            "spec": {
                "secretName": CERTIFICATE,
                "ipAddresses": [s.service.ip],
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "usages": ["server auth", "digital signature"],
                "issuerRef": {
                    "name": s.tls.issuer_name,
                    "kind": s.tls.issuer_kind,
                    "group": "cert-manager.io",
                },
            },
        },
    ]


def chart_values(target: Target, htpasswd: str) -> dict[str, Any]:
    """Values that make the chart's registry like ours (../shared/peers/README.md)."""
    s = target.settings
    if "@" in s.image:
        raise BenchError(f"the chart takes repository:tag, not a digest: {s.image}")
    repository, _, tag = s.image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "tlsSecretName": CERTIFICATE,
        "secrets": {"htpasswd": htpasswd},
        "persistence": {
            "enabled": True,
            "storageClass": s.storage.storage_class,
            "size": s.storage.size,
            "accessMode": "ReadWriteOnce",
            "deleteEnabled": True,
        },
        "updateStrategy": {"type": "Recreate"},
        "service": {
            "type": "LoadBalancer",
            "port": s.service.port,
            "annotations": {"metallb.io/loadBalancerIPs": s.service.ip},
        },
    }


def prepare(target: Target, helm: Path) -> HelmUser:
    """What the user writes before starting: the Certificate and a values file (0600)."""
    work_dir = target.work_dir / "helm"
    work_dir.mkdir(parents=True, exist_ok=True)
    user = HelmUser(target, helm, work_dir, secrets.token_urlsafe(24))
    user.certificate_file.write_text(yaml.safe_dump_all(certificate_manifests(target)))
    line = htpasswd_line(USERNAME, user.password, BCRYPT_ROUNDS)
    write_secret(user.values_file, yaml.safe_dump(chart_values(target, line + "\n")))
    return user


async def install_to_first_push(user: HelmUser, image: Image) -> Ready:
    """From nothing until the first push through the chart's LoadBalancer is accepted."""
    target, ns, k = user.target, NAMESPACE, user.target.kubectl
    hidden = (user.password,)
    phases: dict[str, float] = {}
    started = time.monotonic()
    run = await child([*k, "apply", "-f", str(user.certificate_file)], "kubectl apply")
    phases["kubectl apply: Namespace + Certificate"] = run.seconds
    wait = [*k, "-n", ns, "wait", f"--timeout={WAIT_TIMEOUT}", "--for=condition=Ready"]
    run = await child([*wait, f"certificates.cert-manager.io/{CERTIFICATE}"], "Certificate")
    phases["kubectl wait: Certificate Ready"] = run.seconds
    install = user.helm_command(
        "install", RELEASE, str(CHART_DIR), "--wait", f"--timeout={WAIT_TIMEOUT}"
    )
    run = await child([*install, "-f", str(user.values_file)], "helm install --wait", hidden)
    phases["helm install --wait"] = run.seconds
    ca = await child(
        [*k, "-n", ns, "get", "secret", CERTIFICATE, "-o", r"jsonpath={.data.ca\.crt}"],
        "kubectl get the CA",
    )
    phases["kubectl get the CA"] = ca.seconds
    ca_file = user.work_dir / "ca" / "ca.crt"
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(base64.b64decode(ca.stdout))
    endpoint = Endpoint(target.settings.registry_url, USERNAME, user.password, ca_file)
    phases["first push"] = await push_until_accepted(endpoint, image, timeout=120)
    return Ready(time.monotonic() - started, phases, None, endpoint)


async def uninstall_until_gone(user: HelmUser) -> float:
    """`helm uninstall --wait`, then the user's Certificate, Secret and namespace, until gone."""
    started = time.monotonic()
    await child(user.helm_command("uninstall", RELEASE, "--wait"), "helm uninstall --wait")
    await delete_namespace(user.target)
    return time.monotonic() - started


async def delete_namespace(target: Target) -> None:
    """The namespace and all in it (the Certificate and its Secret), waited for until gone."""
    await child(
        [*target.kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true"],
        "kubectl delete namespace",
    )
    deadline = time.monotonic() + GONE_TIMEOUT
    while await kube.get_all(target.api, "namespaces", NAMESPACE):
        if time.monotonic() > deadline:
            raise BenchError(f"namespace {NAMESPACE} still present after {GONE_TIMEOUT:.0f}s")
        await asyncio.sleep(0.2)


async def ensure_clean(target: Target, helm: Path | None) -> None:
    """Whatever an earlier run left: the release if helm is at hand, then the namespace."""
    if not await kube.get_all(target.api, "namespaces", NAMESPACE):
        return
    if helm is not None:
        user = HelmUser(target, helm, target.work_dir / "helm", "")
        await child(
            user.helm_command("uninstall", RELEASE, "--wait", "--ignore-not-found"),
            "helm uninstall (cleanup)",
        )
    await delete_namespace(target)
