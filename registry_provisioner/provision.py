"""Provision, unprovision and inspect the registry: the steps behind the tasks."""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass, replace
from pathlib import Path

import kr8s
import kr8s.asyncio
from cryptography import x509

from . import kube, maintenance, render
from .certificates import certificate_problems
from .config import Settings
from .credentials import Credentials, generate_credentials
from .errors import ProvisionError, RegistryError
from .logins import htpasswd_line
from .oci_client import RegistryClient
from .preflight import run_preflight
from .waiting import diagnose_pods, poll, wait_for

READY_TIMEOUT = 300.0
# A stored self-signed certificate this close to expiry (or already past it) is replaced.
SELF_SIGNED_RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class ProvisionResult:
    changes: list[kube.Change]
    ca_file: Path | None
    ready_seconds: float

    @property
    def changed(self) -> bool:
        return any(change.action != "unchanged" for change in self.changes)


def _decode(secret: dict, key: str) -> str:
    return base64.b64decode(secret.get("data", {}).get(key, "")).decode()


async def _secret(api: kr8s.asyncio.Api, namespace: str, name: str) -> dict | None:
    async with api.call_api(
        "GET", url=f"secrets/{name}", namespace=namespace, raise_for_status=False
    ) as response:
        return response.json() if response.status_code == 200 else None


async def existing_credentials(api: kr8s.asyncio.Api, settings: Settings) -> Credentials | None:
    """Credentials from an earlier run, so a re-run keeps the password and the CA."""
    auth = await _secret(api, settings.namespace, settings.auth.secret_name)
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
        tls = await _secret(api, settings.namespace, settings.tls.secret_name)
        if tls is None:
            return None
        credentials = replace(
            credentials,
            ca_pem=_decode(tls, "ca.crt"),
            cert_pem=_decode(tls, "tls.crt"),
            key_pem=_decode(tls, "tls.key"),
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


async def provision(
    api: kr8s.asyncio.Api,
    settings: Settings,
    *,
    dry_run: bool = False,
    rotate_password: bool = False,
    ca_dir: Path = Path("certs"),
) -> ProvisionResult:
    await run_preflight(api, settings)
    credentials, renewal = await credentials_for(api, settings, rotate_password)
    manifests = render.render_manifests(settings, credentials)
    # Our apply never touches the read-only override (another field manager owns it),
    # so an interrupted `invoke gc` would otherwise leave the registry read-only for good.
    released = await maintenance.leave_read_only(api, settings, dry_run=dry_run)
    changes = await kube.apply_manifests(api, manifests, dry_run=dry_run)
    if released:
        action = "made writable again (an interrupted `invoke gc` had left it read-only)"
        changes.append(
            kube.Change(
                "Deployment",
                settings.name,
                settings.namespace,
                f"would be {action}" if dry_run else action,
            )
        )
    if renewal:
        changes = [_renewed(change, settings, renewal) for change in changes]
    if dry_run:
        return ProvisionResult(changes, None, 0.0)
    started = time.monotonic()
    await wait_ready(api, settings)
    ca_file = await write_client_ca(api, settings, ca_dir)
    await wait_for(
        f"the registry to answer on {settings.registry_url}",
        lambda: poll(lambda: _registry_answers(settings, credentials, ca_file)),
        READY_TIMEOUT,
    )
    return ProvisionResult(changes, ca_file, time.monotonic() - started)


def _renewed(change: kube.Change, settings: Settings, reason: str) -> kube.Change:
    if (change.kind, change.name) != ("Secret", settings.tls.secret_name):
        return change
    note = f"new CA and certificate ({reason}); give clients the new ca.crt"
    return replace(change, action=f"{change.action}: {note}")


async def _registry_answers(settings: Settings, credentials: Credentials, ca_file: Path) -> bool:
    async with RegistryClient(
        settings.registry_url, credentials.username, credentials.password, ca_file, timeout=5
    ) as client:
        try:
            await client.ping()
        except RegistryError:
            return False
    return True


async def wait_ready(api: kr8s.asyncio.Api, settings: Settings) -> None:
    """Certificate, volume, Deployment and LoadBalancer IP, in the order they come."""
    ns = settings.namespace
    selector = render.label_selector(settings)

    async def diagnose() -> str:
        return await diagnose_pods(api, ns, selector)

    if settings.tls.mode == "cert-manager":
        certificate = await _one(api, "certificates.cert-manager.io", settings.name, ns)
        await wait_for(
            f"Certificate {settings.name} to be Ready",
            lambda: kube.wait_until(certificate, kube.condition_is("Ready")),
            READY_TIMEOUT,
        )
    if await _binds_immediately(api, settings.storage.storage_class):
        claim = await _one(api, "persistentvolumeclaims", settings.storage.claim_name, ns)
        await wait_for(
            f"PersistentVolumeClaim {settings.storage.claim_name} to be Bound",
            lambda: kube.wait_until(claim, kube.field_is("status.phase", "Bound")),
            READY_TIMEOUT,
        )
    deployment = await _one(api, "deployments", settings.name, ns)
    await wait_for(
        f"Deployment {settings.name} to roll out",
        lambda: kube.wait_until(deployment, kube.rolled_out),
        READY_TIMEOUT,
        diagnose,
    )
    service = await _one(api, "services", settings.service.name, ns)
    await wait_for(
        f"Service {settings.service.name} to get LoadBalancer IP {settings.service.ip}",
        lambda: kube.wait_until(
            service, kube.field_is("status.loadBalancer.ingress.0.ip", settings.service.ip)
        ),
        READY_TIMEOUT,
        lambda: _service_diagnosis(api, settings),
    )


async def _binds_immediately(api: kr8s.asyncio.Api, storage_class: str) -> bool:
    """WaitForFirstConsumer claims bind only once the pod is scheduled: no point waiting first."""
    found = await kube.get_all(api, "storageclasses", storage_class)
    return bool(found) and found[0].raw.get("volumeBindingMode", "Immediate") == "Immediate"


async def _one(api: kr8s.asyncio.Api, kind: str, name: str, namespace: str):
    found = await kube.get_all(api, kind, name, namespace=namespace)
    if not found:
        raise ProvisionError(f"{kind} {namespace}/{name} vanished right after it was applied")
    return found[0] if isinstance(found, list) else found


async def _service_diagnosis(api: kr8s.asyncio.Api, settings: Settings) -> str:
    events = await kube.get_all(
        api,
        "events",
        namespace=settings.namespace,
        field_selector=f"involvedObject.name={settings.service.name}",
    )
    messages = [f"    {e.raw.get('reason')}: {e.raw.get('message')}" for e in events]
    hint = "  is the IP inside one of MetalLB's IPAddressPools, and is service.address_pool right?"
    return "\n".join([hint, *messages])


async def fetch_ca(api: kr8s.asyncio.Api, settings: Settings) -> str:
    """The CA that signed the serving certificate, as issued into the TLS Secret."""
    tls = await _secret(api, settings.namespace, settings.tls.secret_name)
    ca = _decode(tls, "ca.crt") if tls else ""
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


def summary(settings: Settings, result: ProvisionResult) -> str:
    ns, secret, host = settings.namespace, settings.auth.secret_name, settings.registry_host
    state = "changed" if result.changed else "no changes: everything was already as configured"
    return "\n".join(
        [
            f"registry ready at {settings.registry_url} ({state})",
            f"  user:      {settings.auth.username}",
            "  password:  kubectl -n "
            f"{ns} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d",
            f"  CA cert:   {result.ca_file}",
            "  docker:    sudo mkdir -p /etc/docker/certs.d/"
            f"{host} && sudo cp {result.ca_file} /etc/docker/certs.d/{host}/ca.crt",
            f"             docker login {host} -u {settings.auth.username}",
            f"  in-cluster pulls: imagePullSecrets: [{{name: {settings.pull_secret.name}}}] "
            f"(in {', '.join(settings.pull_secret.namespaces) or 'no namespace yet'})",
            "  elsewhere: kubectl create secret docker-registry "
            f"{settings.pull_secret.name} -n NAMESPACE --docker-server={host} "
            f'--docker-username={settings.auth.username} --docker-password="$(kubectl -n {ns} '
            f"get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d)\"",
        ]
    )


def _kept(settings: Settings, manifest: dict) -> bool:
    """Unprovision without purge keeps the data and the login that protects it."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    return (
        kind == "Namespace"
        or kind == "PersistentVolumeClaim"
        or (kind == "Secret" and name == settings.auth.secret_name)
        or (kind == "Secret" and name == settings.tls.secret_name)
    )


async def unprovision(
    api: kr8s.asyncio.Api, settings: Settings, *, purge: bool = False
) -> list[kube.Change]:
    manifests = render.render_manifests(settings, None) + await _strays(api, settings)
    if purge:
        # Deleting the namespace takes what cert-manager made in it (the TLS Secret).
        return await kube.delete_manifests(api, manifests)
    return await kube.delete_manifests(api, [m for m in manifests if not _kept(settings, m)])


async def _strays(api: kr8s.asyncio.Api, settings: Settings) -> list[dict]:
    """Our objects in other namespaces that the current config no longer names.

    A namespace dropped from pull_secret.namespaces still holds its pull Secret.
    """
    rendered = {
        (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"])
        for m in render.render_manifests(settings, None)
    }
    found = []
    for kind in ("Secret", "ConfigMap"):
        for obj in await kube.get_all(
            api,
            kind.lower() + "s",
            namespace=kr8s.ALL,
            label_selector=render.label_selector(settings),
        ):
            key = (kind, obj.namespace, obj.name)
            if obj.namespace != settings.namespace and key not in rendered:
                found.append(
                    {
                        "apiVersion": "v1",
                        "kind": kind,
                        "metadata": {"name": obj.name, "namespace": obj.namespace},
                    }
                )
    return found


def certificate_expiry(pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


async def status_lines(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """What is installed and how it is doing, for `invoke status`."""
    lines = [f"registry {settings.name} in namespace {settings.namespace}:"]
    for manifest in render.render_manifests(settings, None):
        meta = manifest["metadata"]
        found = await kube.get_all(
            api, manifest["kind"], meta["name"], namespace=meta.get("namespace")
        )
        lines.append(f"  {manifest['kind']}/{meta['name']}: {_state(found)}")
    tls = await _secret(api, settings.namespace, settings.tls.secret_name)
    if tls and _decode(tls, "tls.crt"):
        expiry = certificate_expiry(_decode(tls, "tls.crt"))
        lines.append(f"  certificate expires: {expiry:%Y-%m-%d %H:%M} UTC")
    lines.append(f"  storage used: {await _storage_used(api, settings)}")
    deployment = await maintenance.deployment_of(api, settings)
    if deployment is not None and kube.managed_by(deployment.raw, maintenance.FIELD_MANAGER):
        reason = deployment.annotations.get(maintenance.REASON_ANNOTATION, "maintenance")
        lines.append(f"  read-only: {reason} (if no `invoke gc` runs, `invoke provision` ends it)")
    return lines


def _state(found) -> str:
    if not found:
        return "absent"
    raw = (found[0] if isinstance(found, list) else found).raw
    status = raw.get("status", {})
    if raw["kind"] == "Deployment":
        return f"{status.get('readyReplicas', 0)}/{raw['spec']['replicas']} ready"
    if raw["kind"] == "Service":
        ingress = status.get("loadBalancer", {}).get("ingress", [])
        return f"LoadBalancer IP {ingress[0]['ip']}" if ingress else "LoadBalancer IP pending"
    if raw["kind"] == "PersistentVolumeClaim":
        return f"{status.get('phase')} ({status.get('capacity', {}).get('storage', '?')})"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if "Ready" in conditions:
        return "Ready" if conditions["Ready"] == "True" else "not Ready"
    return "present"


async def _storage_used(api: kr8s.asyncio.Api, settings: Settings) -> str:
    pods = await kube.get_all(
        api,
        "pods",
        namespace=settings.namespace,
        label_selector=render.label_selector(settings),
        field_selector="status.phase=Running",
    )
    registry_pods = [
        p for p in pods if p.name.startswith(f"{settings.name}-") and "node-trust" not in p.name
    ]
    if not registry_pods:
        return "unknown (no running registry pod)"
    result = await registry_pods[0].exec(["du", "-sh", "/var/lib/registry"], check=False)
    used = result.stdout.decode().split()
    return f"{used[0]} of {settings.storage.size}" if used else "unknown"
