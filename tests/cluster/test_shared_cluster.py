"""On a cluster shared with other things, an install changes and deletes only what it made."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap, Deployment, Secret

from registry_provisioner import kube
from registry_provisioner.certificates import CertificateAuthority, issue_server_cert
from registry_provisioner.ownership import OWNER_ANNOTATION
from scripts.kinds import KINDS
from scripts.local_cluster import images
from scripts.local_cluster.demo import demo_deployment, skopeo_push
from tests.cluster.fault_proxy import Fault, fault_proxy
from tests.cluster.helpers import PREFLIGHT_CLUSTER_READS, decoded, service_account_kubeconfig
from tests.support.registries import Registry, RegistryFactory, registry_password, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


def _suffix() -> str:
    return uuid.uuid4().hex[:6]


async def owned_by(api: kr8s.asyncio.Api, install: str) -> dict[str, str]:
    """resourceVersion of every object that carries `install`'s identity, cluster-wide."""
    found = {}
    for kind in KINDS:
        for obj in await kube.get_all(api, kind, namespace=kr8s.ALL):
            if obj.annotations.get(OWNER_ANNOTATION) == install:
                found[f"{obj.kind}/{obj.namespace}/{obj.name}"] = obj.metadata.resourceVersion
    return found


async def snapshot_of(api: kr8s.asyncio.Api, *namespaces: str) -> dict[str, str]:
    """`snapshot` of the namespaces a run may touch (and cluster-scoped objects of theirs);
    other tests may be changing the rest of the cluster meanwhile."""
    return {
        key: version
        for key, version in (await snapshot(api)).items()
        if key.split("/")[1] in namespaces or key.split("/")[2] in namespaces
    }


async def _secret(api: kr8s.asyncio.Api, namespace: str, name: str) -> dict:
    [secret] = await kube.get_all(api, "secrets", name, namespace=namespace)
    return secret.raw


# --- namespaces ------------------------------------------------------------------


async def test_purge_leaves_a_namespace_that_existed_before(
    api: kr8s.asyncio.Api, namespace: str, registries: RegistryFactory
) -> None:
    users = await ConfigMap(
        {"metadata": {"name": "user-data", "namespace": namespace}, "data": {"keep": "me"}},
        api=api,
    )
    await users.create()
    registry = await registries(namespace)
    assert await owned_by(api, f"{namespace}/docker-registry")

    purged = registry.purge()

    assert purged.returncode == 0, purged.stderr
    assert f"namespace {namespace} stays" in purged.stdout, purged.stdout
    [still] = await kube.get_all(api, "configmaps", "user-data", namespace=namespace)
    assert still.raw["data"] == {"keep": "me"}
    assert still.metadata.resourceVersion == users.metadata.resourceVersion
    [ns] = await kube.get_all(api, "namespaces", namespace)
    assert OWNER_ANNOTATION not in ns.annotations  # never labelled as ours
    assert await owned_by(api, f"{namespace}/docker-registry") == {}


async def test_purge_deletes_a_namespace_the_install_created(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries(f"made-{_suffix()}")
    purged = registry.purge()
    assert purged.returncode == 0, purged.stderr
    assert await kube.get_all(api, "namespaces", registry.namespace) == []


# --- two installs ------------------------------------------------------------------


async def _pulling_deployment(
    api: kr8s.asyncio.Api, registry: Registry, namespace: str, pull_secret: str
) -> Deployment:
    """A Deployment in `namespace` running an image pushed to `registry`, Running."""
    password = await registry_password(api, registry.namespace)
    reference = f"{registry.host}/shared/hello:1"
    skopeo_push(
        images.build_image(images.helper_image()),
        reference,
        registry.ca_file.parent,
        "registry",
        password,
    )
    manifest = demo_deployment(reference, pull_secret, name="pulls-a", namespace=namespace)
    await kube.apply_manifests(api, [manifest])
    deployment = await Deployment.get("pulls-a", namespace=namespace, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)
    return deployment


async def test_two_installs_never_touch_each_other(
    api: kr8s.asyncio.Api, namespace: str, registries: RegistryFactory
) -> None:
    """Install A owns a pull Secret in a shared namespace; B is refused it, and B's purge
    leaves every object of A as it was, and A's workloads keep pulling."""
    pull, a_namespace = f"pull-{_suffix()}", f"reg-a-{_suffix()}"
    a = await registries(
        a_namespace, pull_secret__name=pull, pull_secret__namespaces=f"[{a_namespace}, {namespace}]"
    )
    deployment = await _pulling_deployment(api, a, namespace, pull)

    b = await registries(
        f"reg-b-{_suffix()}",
        provision=False,
        pull_secret__name=pull,
        pull_secret__namespaces=f"[{namespace}]",
    )
    before = await owned_by(api, f"{a.namespace}/docker-registry")
    refused = b.invoke("provision")
    assert refused.returncode == 1
    assert f"Secret {namespace}/{pull}" in refused.stderr, refused.stderr
    assert f"registry install {a.namespace}/docker-registry" in refused.stderr
    assert "pull_secret.name" in refused.stderr and "nothing was changed" in refused.stderr

    b.overrides["pull_secret.name"] = f"{pull}-b"
    provisioned = b.invoke("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    purged = b.purge()
    assert purged.returncode == 0, purged.stderr

    assert await owned_by(api, f"{a.namespace}/docker-registry") == before
    # A new pod of A's Deployment pulls again through A's Secret, untouched by B.
    for pod in await deployment.pods():
        await pod.delete()
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)
    await deployment.delete()


async def test_a_second_install_cannot_take_the_local_registry_configmap(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    """Only one registry is "the" KEP-1755 local registry: the first to publish it.

    The first is one this test makes, or the install that publishes it already (the
    demo's, when the suite runs beside it), which must come through untouched.
    """
    hosting = ("configmaps", "local-registry-hosting")
    first_host = None
    if not await kube.get_all(api, *hosting, namespace="kube-public"):
        first = await registries(
            f"hosting-a-{_suffix()}", discovery__publish_local_registry_hosting="true"
        )
        first_host = first.host
    [published] = await kube.get_all(api, *hosting, namespace="kube-public")
    second = await registries(
        f"hosting-b-{_suffix()}",
        provision=False,
        discovery__publish_local_registry_hosting="true",
    )
    refused = second.invoke("provision")
    assert refused.returncode == 1
    assert "ConfigMap kube-public/local-registry-hosting" in refused.stderr, refused.stderr
    assert "discovery.publish_local_registry_hosting=false" in refused.stderr
    purged = second.purge()
    assert purged.returncode == 0, purged.stderr
    [still] = await kube.get_all(api, *hosting, namespace="kube-public")
    assert still.metadata.resourceVersion == published.metadata.resourceVersion
    assert second.host not in json.dumps(still.raw["data"])
    if first_host is not None:
        assert first_host in json.dumps(still.raw["data"])


# --- objects someone else made ----------------------------------------------------


def _foreign_objects(namespace: str) -> list[dict]:
    """Objects a user made by hand, with the names provision would use."""
    meta = {"namespace": namespace, "labels": {"made-by": "the-user"}}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "docker-registry-auth", **meta},
            "stringData": {"note": "the user's own"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "docker-registry-service", **meta},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "theirs"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "docker-registry-config", **meta},
            "data": {"theirs": "yes"},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "docker-registry-pvc", **meta},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "longhorn",
                "resources": {"requests": {"storage": "5Gi"}},
            },
        },
    ]


async def test_foreign_objects_are_refused_then_adopted_on_request(
    api: kr8s.asyncio.Api, namespace: str, registries: RegistryFactory
) -> None:
    foreign = _foreign_objects(namespace)
    for manifest in foreign:
        obj = await kube.object_for(api, manifest)
        await obj.create()
    # The claim binds by itself (its class binds immediately): let it settle first.
    await asyncio.wait_for(kube.wait_until(obj, kube.field_is("status.phase", "Bound")), 120)
    registry = await registries(namespace, provision=False)
    touched = (namespace, "default", "kube-public")
    before = await snapshot_of(api, *touched)

    refused = registry.invoke("provision")

    assert refused.returncode == 1
    for manifest in foreign:
        where = f"{manifest['kind']} {namespace}/{manifest['metadata']['name']}"
        assert f"{where} exists and was made by someone else" in refused.stderr, refused.stderr
    assert "--adopt" in refused.stderr and "nothing was changed" in refused.stderr
    assert await snapshot_of(api, *touched) == before

    adopted = registry.invoke("provision", "--adopt")

    assert adopted.returncode == 0, adopted.stderr
    for manifest in foreign:
        obj = await kube.object_for(api, manifest)
        await obj.refresh()
        assert obj.annotations[OWNER_ANNOTATION] == f"{namespace}/docker-registry"
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr


# --- rights and failed reads --------------------------------------------------------

# What the test's ServiceAccount may do: everything a provision needs, except reading
# Secrets (it may still create, patch and delete them).
_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
    {
        "apiGroups": ["", "apps", "cert-manager.io", "coordination.k8s.io"],
        "resources": [
            "namespaces",
            "configmaps",
            "services",
            "persistentvolumeclaims",
            "pods",
            "events",
            "deployments",
            "daemonsets",
            "certificates",
            "clusterissuers",
            "leases",
        ],
        "verbs": ["*"],
    },
    *PREFLIGHT_CLUSTER_READS,
]


@pytest.fixture
async def restricted_kubeconfig(
    api: kr8s.asyncio.Api, kubeconfig: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Path]:
    """A kubeconfig for a ServiceAccount bound to _RULES."""
    path = tmp_path / "kubeconfig"
    async with service_account_kubeconfig(api, kubeconfig, namespace, _RULES, path):
        yield path


async def test_preflight_lists_missing_rights_and_changes_nothing(
    api: kr8s.asyncio.Api, restricted_kubeconfig: Path, registries: RegistryFactory
) -> None:
    registry = await registries(f"rights-{_suffix()}", provision=False)
    touched = (registry.namespace, "default", "kube-public")
    before = await snapshot_of(api, *touched)

    refused = registry.invoke("provision", kubeconfig=str(restricted_kubeconfig))

    assert refused.returncode == 1
    missing = f"not allowed to get, list, watch secrets in namespace {registry.namespace}"
    assert missing in refused.stderr, refused.stderr
    assert "nothing was changed" in refused.stderr
    # The other checks would meet 403s: the refusal names the rights alone.
    assert "Traceback" not in refused.stderr
    problems = refused.stderr.split("nothing was changed:", 1)[1].strip().splitlines()
    assert all(line.strip().startswith("not allowed to ") for line in problems), problems
    assert await snapshot_of(api, *touched) == before


@pytest.fixture(scope="module")
async def installed(module_registries: RegistryFactory) -> Registry:
    return await module_registries(f"reads-{_suffix()}")


@pytest.mark.parametrize("status", [503, 429])
async def test_a_failed_read_keeps_the_password(
    api: kr8s.asyncio.Api, kubeconfig: str, installed: Registry, status: int
) -> None:
    """A 5xx or 429 on the login Secret's read is not "absent": nothing is regenerated."""
    registry = installed
    before = await _secret(api, registry.namespace, "docker-registry-auth")
    path = f"/api/v1/namespaces/{registry.namespace}/secrets/docker-registry-auth"
    with fault_proxy(Path(kubeconfig), [Fault("GET", path, status)]) as proxy:
        result = registry.invoke("provision", kubeconfig=str(proxy.kubeconfig))
        hits = proxy.faults[0].hits
    assert hits >= 1  # the read really went through the proxy and failed
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert f"secrets/docker-registry-auth in namespace {registry.namespace}" in lines[-1]
    assert str(status) in lines[-1], lines[-1]
    after = await _secret(api, registry.namespace, "docker-registry-auth")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert decoded(after, "password") == decoded(before, "password")


# --- self-signed CA -------------------------------------------------------------------


async def test_self_signed_renewal_keeps_the_ca(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries(f"selfsigned-{_suffix()}", tls__mode="self-signed")
    tls = await _secret(api, registry.namespace, "docker-registry-tls")
    ca_secret = await _secret(api, registry.namespace, "docker-registry-tls-ca")
    assert decoded(ca_secret, "tls.crt") == decoded(tls, "ca.crt")
    # Make the served certificate one that expires within the renewal window.
    ca = CertificateAuthority(decoded(ca_secret, "tls.crt"), decoded(ca_secret, "tls.key"))
    soon, key = issue_server_cert(ca, [], [registry.ip], days=7)
    patch = {"stringData": {"tls.crt": soon, "tls.key": key}}
    secret = await Secret.get("docker-registry-tls", namespace=registry.namespace, api=api)
    await secret.patch(patch)

    renewed = registry.invoke("provision")

    assert renewed.returncode == 0, renewed.stderr
    assert "new certificate from the same CA" in renewed.stdout, renewed.stdout
    after = await _secret(api, registry.namespace, "docker-registry-tls")
    assert decoded(after, "ca.crt") == decoded(tls, "ca.crt")
    assert decoded(after, "tls.crt") not in (soon, decoded(tls, "tls.crt"))
    # A client that kept the CA file from the first provision still trusts the registry.
    old_ca = registry.ca_file.read_text()
    assert old_ca == decoded(tls, "ca.crt")
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr
