"""Read-only checks that run before provision changes anything.

Every problem found is reported at once, each with what to do about it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable

import kr8s
import kr8s.asyncio

from . import access, bucket, kube, ownership, render
from .certificates import certificate_problems
from .config import REDIS_PASSWORD_KEY, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, Settings
from .errors import PreflightError


async def _issuer_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    if settings.tls.mode != "cert-manager":
        return []
    crd = await kube.read(
        api,
        "customresourcedefinitions/certificates.cert-manager.io",
        version="apiextensions.k8s.io/v1",
    )
    if crd is None:
        return [
            "cert-manager is not installed (no certificates.cert-manager.io CRD): install it, "
            "or set tls.mode to self-signed or existing-secret"
        ]
    kind = settings.tls.issuer_kind
    plural = "clusterissuers" if kind == "ClusterIssuer" else "issuers"
    issuer = await kube.read(
        api,
        f"{plural}/{settings.tls.issuer_name}",
        version="cert-manager.io/v1",
        namespace=None if kind == "ClusterIssuer" else settings.namespace,
    )
    field = "tls.issuer_name"
    if issuer is None:
        return [
            f"{field}: {kind} {settings.tls.issuer_name!r} does not exist: create it, or name "
            f"an existing one (kubectl get {plural.lower()})"
        ]
    conditions = issuer.get("status", {}).get("conditions", [])
    if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
        reason = next((c.get("message", "") for c in conditions if c["type"] == "Ready"), "")
        return [f"{field}: {kind} {settings.tls.issuer_name!r} is not Ready: {reason}".rstrip()]
    return []


async def _storage_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    if not settings.storage.on_claim:
        return []  # no claim is made, so no StorageClass is used
    name = settings.storage.storage_class
    found = await kube.read(api, f"storageclasses/{name}", version="storage.k8s.io/v1")
    if found is not None:
        return []
    classes = await kube.read(api, "storageclasses", version="storage.k8s.io/v1")
    names = ", ".join(c["metadata"]["name"] for c in (classes or {}).get("items", []))
    return [
        f"storage.storage_class: StorageClass {name!r} does not exist: "
        f"use one of: {names or '(none: install a provisioner such as Longhorn)'}"
    ]


def service_ips(service: dict) -> set[str]:
    ingress = service.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    ips = {entry.get("ip") for entry in ingress}
    ips.add(service.get("spec", {}).get("loadBalancerIP"))
    annotations = service["metadata"].get("annotations", {})
    for key in ("metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"):
        ips.update(ip.strip() for ip in annotations.get(key, "").split(","))
    return ips - {None, ""}


def _our_mirror(service: dict, settings: Settings) -> bool:
    """A mirror's Service that this install made, whether or not the settings list it."""
    meta = service["metadata"]
    component = (meta.get("labels") or {}).get("app.kubernetes.io/component")
    return (
        meta["namespace"] == settings.namespace
        and component == "mirror"
        and ownership.owner_of(service) == ownership.install_id(settings)
    )


async def _ip_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    services = await kube.read(api, "services")
    # The registry's Service, and its mirrors' that share the IP on purpose.
    ours = {(settings.namespace, settings.service.name)} | {
        (settings.namespace, settings.mirror_name(m)) for m in settings.mirrors
    }
    for service in (services or {}).get("items", []):
        meta = service["metadata"]
        if _our_mirror(service, settings):
            continue  # a mirror dropped from the settings: this provision deletes it
        if (meta["namespace"], meta["name"]) not in ours and settings.service.ip in service_ips(
            service
        ):
            return [
                f"service.ip: {settings.service.ip} is already used by Service "
                f"{meta['namespace']}/{meta['name']}: pick a free IP from your MetalLB pool"
            ]
    return []


def _pool_contains(pool: dict, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for block in pool.get("spec", {}).get("addresses", []):
        if "-" in block:
            first, last = (ipaddress.ip_address(part.strip()) for part in block.split("-"))
            if first.version == ip.version and first <= ip <= last:
                return True
        elif ip in ipaddress.ip_network(block, strict=False):
            return True
    return False


async def _pool_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """An IP outside every MetalLB pool would stay pending forever; say so up front."""
    # 404 when MetalLB's CRD is not installed: absent, like an empty list.
    pools = await kube.read(api, "ipaddresspools", version="metallb.io/v1beta1")
    if pools is None or not pools.get("items"):
        return []  # not MetalLB, or MetalLB without pools: nothing to check against
    ip = ipaddress.ip_address(settings.service.ip)
    items = pools["items"]
    if settings.service.address_pool:
        items = [p for p in items if p["metadata"]["name"] == settings.service.address_pool]
        if not items:
            return [
                f"service.address_pool: MetalLB has no IPAddressPool "
                f"{settings.service.address_pool!r}: leave it empty or name an existing pool"
            ]
    if any(_pool_contains(pool, ip) for pool in items):
        return []
    ranges = "; ".join(
        f"{p['metadata']['name']}: {', '.join(p['spec'].get('addresses', []))}" for p in items
    )
    return [
        f"service.ip: {ip} is in no MetalLB IPAddressPool ({ranges}): pick an IP from a pool, "
        "or add one that covers it"
    ]


async def _secret_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    if settings.tls.mode != "existing-secret":
        return []
    name = settings.tls.secret_name
    secret = await kube.read(api, f"secrets/{name}", namespace=settings.namespace)
    if secret is None or not {"tls.crt", "tls.key"} <= set(secret.get("data", {})):
        return [
            f"tls.secret_name: Secret {name!r} with tls.crt and tls.key not found in namespace "
            f"{settings.namespace}: create it (kubectl create secret tls ...)"
        ]
    cert_pem = base64.b64decode(secret["data"]["tls.crt"]).decode(errors="replace")
    return [
        f"tls.secret_name: Secret {name!r}: {problem}: replace its tls.crt and tls.key with a "
        f"current certificate whose SANs include {settings.service.ip}"
        for problem in certificate_problems(cert_pem, [settings.service.ip])
    ]


async def _has_keys(
    api: kr8s.asyncio.Api, kind: str, name: str, namespace: str, keys: tuple[str, ...]
) -> bool:
    found = await kube.read(api, f"{kind.lower()}s/{name}", namespace=namespace)
    return found is not None and set(keys) <= set(found.get("data") or {})


async def _user_object_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """The Secrets and ConfigMap that S3 storage and redis read are the user's: they must
    exist, with their keys, before the pods that mount them are rolled out."""
    ns, s3 = settings.namespace, settings.storage.s3
    wanted: list[tuple[str, str, str, tuple[str, ...], str]] = []
    if settings.storage.backend == "s3":
        keys = (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)
        hint = (
            f"kubectl -n {ns} create secret generic {s3.credentials_secret} "
            f"--from-file={keys[0]}=... --from-file={keys[1]}=..."
        )
        wanted.append(
            ("storage.s3.credentials_secret", "Secret", s3.credentials_secret, keys, hint)
        )
        if s3.ca_configmap:
            hint = f"kubectl -n {ns} create configmap {s3.ca_configmap} --from-file=ca.crt=..."
            wanted.append(
                ("storage.s3.ca_configmap", "ConfigMap", s3.ca_configmap, ("ca.crt",), hint)
            )
    if settings.redis.password_secret:
        secret = settings.redis.password_secret
        hint = (
            f"kubectl -n {ns} create secret generic {secret} --from-file={REDIS_PASSWORD_KEY}=..."
        )
        wanted.append(("redis.password_secret", "Secret", secret, (REDIS_PASSWORD_KEY,), hint))
    found = await asyncio.gather(
        *(_has_keys(api, kind, name, ns, keys) for _, kind, name, keys, _ in wanted)
    )
    return [
        f"{field}: {kind} {name!r} with key(s) {', '.join(keys)} not found in namespace {ns}: "
        f"create it ({hint})"
        for (field, kind, name, keys, hint), ok in zip(wanted, found, strict=True)
        if not ok
    ]


async def _bucket_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """The bucket exists and the Secret's credentials may write to it, where the endpoint
    answers from here or is an in-cluster Service (reached through the API server); a
    missing Secret is _user_object_problems' to report."""
    if settings.storage.backend != "s3":
        return []
    s3, ns = settings.storage.s3, settings.namespace
    secret = await kube.read(api, f"secrets/{s3.credentials_secret}", namespace=ns)
    data = (secret or {}).get("data") or {}
    if not {S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY} <= set(data):
        return []
    login = bucket.Login(
        base64.b64decode(data[S3_ACCESS_KEY_ID]).decode(),
        base64.b64decode(data[S3_SECRET_ACCESS_KEY]).decode(),
    )
    ca_pem = ""
    if s3.ca_configmap:
        ca = await kube.read(api, f"configmaps/{s3.ca_configmap}", namespace=ns)
        ca_pem = ((ca or {}).get("data") or {}).get("ca.crt", "")
        if not ca_pem:
            return []  # reported by _user_object_problems
    return await bucket.bucket_problems(s3, login, ca_pem, api) or []


async def _namespace_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    missing = []
    for namespace in settings.pull_secret.namespaces:
        if (
            namespace != settings.namespace
            and await kube.read(api, f"namespaces/{namespace}") is None
        ):
            missing.append(namespace)
    if missing:
        return [
            f"pull_secret.namespaces: {', '.join(missing)} do not exist: create them first "
            "or remove them from the list"
        ]
    return []


async def _mirror_problems(api: kr8s.asyncio.Api, settings: Settings) -> list[str]:
    """A mirror's upstream login or CA that is missing would leave its pod unable to
    start (CreateContainerConfigError) or to reach the upstream: say so up front."""
    problems = []
    ns = settings.namespace
    for i, mirror in enumerate(settings.mirrors):
        wanted = (
            ("login_secret", "secrets", mirror.login_secret, ("username", "password")),
            ("ca_config_map", "configmaps", mirror.ca_config_map, ("ca.crt",)),
        )
        for field, plural, name, keys in wanted:
            if not name:
                continue
            found = await kube.read(api, f"{plural}/{name}", namespace=ns)
            missing = [k for k in keys if k not in (found or {}).get("data", {})]
            if found is None or missing:
                kind = "Secret" if plural == "secrets" else "ConfigMap"
                yet = "does not exist" if found is None else f"has no {', '.join(missing)}"
                problems.append(
                    f"mirrors[{i}].{field}: {kind} {name!r} in namespace {ns} {yet}: create it "
                    f'with the keys {", ".join(keys)}, or set {field} to ""'
                )
    return problems


_PSA_REJECTION = re.compile(r'violates PodSecurity "([^"]+)": (.*)', re.DOTALL)
# What each workload's pods need, for the hint: the level and why.
_NEEDS = {
    "Deployment": ("restricted", "the registry pod meets `restricted`"),
    "DaemonSet": (
        "privileged",
        "node trust mounts a host directory, which only `privileged` allows",
    ),
}


async def admission_rejects(api: kr8s.asyncio.Api, workload: dict) -> str | None:
    """Pod Security's verdict on one pod of `workload`: the policy and why, or None.

    A server-side dry run of the pod itself runs admission, PodSecurity's enforce mode
    included, and stores nothing (a Deployment or DaemonSet is only warned about).
    A refusal for another reason (no right to create pods) proves nothing: None.
    """
    template = workload["spec"]["template"]
    namespace = workload["metadata"]["namespace"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{workload['metadata']['name']}-preflight-",
            "namespace": namespace,
            "labels": template["metadata"].get("labels", {}),
        },
        "spec": template["spec"],
    }
    async with api.call_api(
        "POST",
        version="v1",
        url="pods",
        namespace=namespace,
        params={"dryRun": "All"},
        content=json.dumps(pod),
        raise_for_status=False,
    ) as response:
        if response.status_code != 403:
            return None
        found = _PSA_REJECTION.search(response.json().get("message", ""))
    return f'policy "{found[1]}": {found[2]}' if found else None


async def _pod_security_problems(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict]
) -> list[str]:
    """Pods that Pod Security Admission would refuse in a namespace that exists already.

    A namespace provision creates gets our labels (`restricted` for the registry,
    `privileged` for node trust), so only the ones made before us can refuse.
    """
    problems = []
    for workload in (m for m in manifests if m["kind"] in _NEEDS):
        namespace = workload["metadata"]["namespace"]
        raw = await kube.read(api, f"namespaces/{namespace}")
        if raw is None or ownership.foreign(raw, settings) is None:
            continue
        rejected = await admission_rejects(api, workload)
        if rejected is None:
            continue
        level, why = _NEEDS[workload["kind"]]
        fix = (
            f"label namespace {namespace} pod-security.kubernetes.io/enforce={level}"
            if workload["kind"] == "Deployment"
            else f"set node_trust.namespace to a namespace provision creates (it labels it "
            f"`privileged`, and it holds nothing else), or label namespace {namespace} "
            f"pod-security.kubernetes.io/enforce={level}"
        )
        problems.append(
            f"{workload['kind']} {namespace}/{workload['metadata']['name']}: Pod Security "
            f"Admission in namespace {namespace} would reject its pods ({rejected}); "
            f"{why}: {fix}"
        )
    return problems


def refuse(problems: list[str]) -> None:
    """Raise one PreflightError listing `problems`, if there are any."""
    if problems:
        raise PreflightError("preflight failed, nothing was changed:\n  " + "\n  ".join(problems))


async def run_preflight(
    api: kr8s.asyncio.Api,
    settings: Settings,
    *,
    adopt: bool = False,
    settle: Callable[[Settings], Awaitable[Settings]] | None = None,
    versions: kube.Versions | None = None,
) -> Settings:
    """Raise one PreflightError listing every problem, or return the settings checked.

    Missing rights come first and alone: the other checks read with those rights.
    `settle`, run right after them, may complete the settings from what is on the
    cluster (the notebook's storage.sub_path) or refuse. `versions` receives what the
    ownership check read of each object.
    """
    await kube.check_reachable(api)
    # One preview render serves the rights, Pod Security and ownership checks alike.
    manifests = render.render_manifests(settings, None)
    refuse(await access.missing_rights(api, settings, manifests))
    if settle is not None:
        settled = await settle(settings)
        if settled != settings:
            settings, manifests = settled, render.render_manifests(settled, None)
    checks = (
        _issuer_problems,
        _storage_problems,
        _ip_problems,
        _pool_problems,
        _secret_problems,
        _user_object_problems,
        _bucket_problems,
        _namespace_problems,
        _mirror_problems,
    )
    # The Pod Security and ownership reads are independent of the other checks: they overlap.
    found = await asyncio.gather(
        *(check(api, settings) for check in checks),
        _pod_security_problems(api, settings, manifests),
        ownership.takeover_problems(api, settings, manifests, adopt=adopt, versions=versions),
    )
    refuse([problem for problems in found for problem in problems])
    return settings
