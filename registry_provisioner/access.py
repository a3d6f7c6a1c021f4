"""Which rights a run uses, and which of them the kubeconfig's user lacks.

Asked of the API server itself: one SelfSubjectRulesReview per namespace lists
what the user may do there, and a SelfSubjectAccessReview settles each right that
the rules leave in doubt (a right they do not show, an incomplete answer, and every
cluster-scoped right, which rules read in a namespace cannot prove).
"""

from __future__ import annotations

import asyncio
import json

import kr8s.asyncio

from . import bucket, render
from .config import Settings

AUTHORIZATION = "authorization.k8s.io/v1"
# Where each kind lives in the API: (group, resource).
_RESOURCE_OF_KIND = {
    "Namespace": ("", "namespaces"),
    "Secret": ("", "secrets"),
    "ConfigMap": ("", "configmaps"),
    "Service": ("", "services"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "DaemonSet": ("apps", "daemonsets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Certificate": ("cert-manager.io", "certificates"),
}
# A run reads, creates, updates and deletes each kind it touches, and waits on it.
_VERBS = ("get", "list", "watch", "create", "patch", "delete")

Right = tuple[str, str, str, str]  # namespace ("" for the cluster), group, resource, verb


def required_rights(settings: Settings, manifests: list[dict]) -> list[Right]:
    """Every right a provision or unprovision uses.

    An empty namespace is the whole cluster: cluster-scoped kinds, and lists across
    every namespace.
    """
    needed = {
        (m["metadata"].get("namespace", ""), *_RESOURCE_OF_KIND[m["kind"]], verb)
        for m in manifests
        for verb in _VERBS
    }
    ns = settings.namespace
    needed |= {
        ("", "", "services", "list"),  # who else holds service.ip
        ("", "storage.k8s.io", "storageclasses", "get"),
        ("", "metallb.io", "ipaddresspools", "list"),
        (ns, "", "pods", "list"),  # diagnosis while waiting
        (ns, "", "events", "list"),
        (ns, "coordination.k8s.io", "leases", "get"),  # is a gc running?
    }
    if settings.node_trust.enabled:
        trust = settings.node_trust_namespace
        needed |= {(trust, "", "pods", "list"), (trust, "", "events", "list")}
    if settings.probes_nodes:
        # One read-only pod per node, before any change (node_probe.py).
        needed |= {(trust, "", "pods", verb) for verb in ("create", "get", "watch", "delete")}
        needed |= {(trust, "", "pods/log", "get"), ("", "", "nodes", "list")}
    needed |= _object_store_rights(settings)
    if settings.tls.mode == "cert-manager":
        needed.add(("", "apiextensions.k8s.io", "customresourcedefinitions", "get"))
        issuers = "clusterissuers" if settings.tls.issuer_kind == "ClusterIssuer" else "issuers"
        needed.add(("" if issuers == "clusterissuers" else ns, "cert-manager.io", issuers, "get"))
    return sorted(needed)


def _object_store_rights(settings: Settings) -> set[Right]:
    """An S3 endpoint named `<svc>.<ns>.svc` is asked through a port-forward to a ready
    pod behind that Service (bucket.route): the bucket check and `--purge` need it."""
    s3 = settings.storage.s3
    named = bucket.service_name(bucket.endpoint_url(s3)) if s3.endpoint else None
    if settings.storage.backend != "s3" or named is None:
        return set()
    ns = named.namespace
    return {
        (ns, "", "services", "list"),
        (ns, "", "pods", "list"),
        (ns, "", "pods/portforward", "create"),
    }


async def _review(api: kr8s.asyncio.Api, kind: str, spec: dict) -> dict:
    body = {"apiVersion": AUTHORIZATION, "kind": kind, "spec": spec}
    async with api.call_api(
        "POST", version=AUTHORIZATION, url=kind.lower() + "s", content=json.dumps(body)
    ) as response:
        return response.json()["status"]


async def _allowed(api: kr8s.asyncio.Api, right: Right) -> bool:
    namespace, group, resource, verb = right
    attributes = {"namespace": namespace, "group": group, "resource": resource, "verb": verb}
    status = await _review(api, "SelfSubjectAccessReview", {"resourceAttributes": attributes})
    return bool(status.get("allowed"))


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def granted(rules: list[dict], right: Right) -> bool:
    """Whether a rule grants the right on every object of the resource.

    A rule limited to some resourceNames grants no list or create, so it counts as no.
    """
    _, group, resource, verb = right
    return any(
        _matches(rule.get("verbs", []), verb)
        and _matches(rule.get("apiGroups", []), group)
        and _matches(rule.get("resources", []), resource)
        and not rule.get("resourceNames")
        for rule in rules
    )


async def _rules(api: kr8s.asyncio.Api, namespace: str) -> list[dict] | None:
    """The user's rules in a namespace; None when the server's answer is incomplete."""
    status = await _review(api, "SelfSubjectRulesReview", {"namespace": namespace})
    return None if status.get("incomplete") else status.get("resourceRules", [])


async def missing_rights(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict] | None = None
) -> list[str]:
    """Every right the run will use and the kubeconfig lacks, one line per resource.

    `manifests` is the preview render when the caller has one, so it is not rendered twice.
    """
    if manifests is None:
        manifests = render.render_manifests(settings, None)
    return await lacking(api, required_rights(settings, manifests))


def takeover_rights(settings: Settings) -> list[Right]:
    """What taking over the notebook's registry uses beyond a provision: the one-off pod
    that hands its files to the registry's user (the other objects are kinds we manage)."""
    return [(settings.namespace, "", "pods", verb) for verb in ("create", "get", "watch", "delete")]


async def lacking(api: kr8s.asyncio.Api, wanted: list[Right]) -> list[str]:
    """The rights among `wanted` that the kubeconfig's user lacks, one line per resource."""
    namespaces = sorted({namespace for namespace, *_ in wanted if namespace})
    found = await asyncio.gather(*(_rules(api, namespace) for namespace in namespaces))
    rules = dict(zip(namespaces, found, strict=True))
    doubtful = [
        right
        for right in wanted
        if not right[0] or rules[right[0]] is None or not granted(rules[right[0]], right)
    ]
    answers = await asyncio.gather(*(_allowed(api, right) for right in doubtful))
    missing: dict[tuple[str, str, str], list[str]] = {}
    for (namespace, group, resource, verb), allowed in zip(doubtful, answers, strict=True):
        if not allowed:
            missing.setdefault((namespace, group, resource), []).append(verb)
    return [
        f"not allowed to {', '.join(verbs)} {resource}{'.' + group if group else ''}"
        f"{f' in namespace {namespace}' if namespace else ''}: "
        "grant these rights to the kubeconfig's user, or use one with cluster-admin rights"
        for (namespace, group, resource), verbs in missing.items()
    ]
