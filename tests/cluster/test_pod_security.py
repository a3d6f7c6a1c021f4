"""Pod Security Admission (issue 11): on a cluster that enforces `restricted` by
default, the registry runs under `restricted`, node trust alone gets `privileged` in
a namespace of its own, and preflight names a namespace that would refuse the pods."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import kr8s.asyncio
import pytest
import yaml
from kr8s.asyncio.objects import DaemonSet, Deployment, Namespace

from registry_provisioner import kube, load_settings, node_trust, render
from registry_provisioner.ownership import OWNER_ANNOTATION
from scripts.local_cluster import addons, images
from scripts.local_cluster.demo import demo_deployment, skopeo_push
from tests.cluster.helpers import REPO
from tests.cluster.test_node_trust import NODE_CERTS_DIR, NODE_TRUST, PULL_SECRET, node_files
from tests.support.registries import RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

ENFORCE = "pod-security.kubernetes.io/enforce"
LOCAL_CONFIG = REPO / "scripts" / "local_cluster" / "registry-config.yaml"


def _root_pod(namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "local.test/busybox:static"}]},
    }


async def _dry_run_create(api: kr8s.asyncio.Api, pod: dict) -> tuple[int, str]:
    async with api.call_api(
        "POST",
        version="v1",
        url="pods",
        namespace=pod["metadata"]["namespace"],
        params={"dryRun": "All"},
        content=json.dumps(pod),
        raise_for_status=False,
    ) as response:
        return response.status_code, response.json().get("message", response.text)


async def _labels(api: kr8s.asyncio.Api, name: str) -> dict[str, str]:
    return (await Namespace.get(name, api=api)).labels


async def test_the_local_cluster_enforces_restricted_by_default(
    api: kr8s.asyncio.Api, namespace: str
) -> None:
    status, text = await _dry_run_create(api, _root_pod(namespace))
    assert status == 403, text
    assert 'violates PodSecurity "restricted:latest"' in text
    # Only the cluster's own add-ons are exempt (local-path's helper pods need a host path).
    status, text = await _dry_run_create(api, _root_pod(addons.LOCAL_PATH_NAMESPACE))
    assert status == 201, text


async def test_registry_runs_restricted_and_only_node_trust_is_privileged(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("psa-registry")
    ns, trust_ns = registry.namespace, f"{registry.namespace}-node-trust"
    assert (await _labels(api, ns))[ENFORCE] == "restricted"
    assert (await _labels(api, trust_ns))[ENFORCE] == "privileged"
    # The registry pod runs in the restricted namespace; node trust's pods only in theirs.
    components = {
        (pod.namespace, pod.labels.get("app.kubernetes.io/component"))
        for space in (ns, trust_ns)
        for pod in await kube.get_all(api, "pods", namespace=space)
    }
    assert components == {(ns, "registry"), (trust_ns, "node-trust")}, components
    # Nothing of ours is weaker than restricted except node trust's namespace.
    privileged = {
        n.name
        for n in await kube.get_all(api, "namespaces")
        if n.labels.get(ENFORCE) not in (None, "restricted")
    }
    assert trust_ns in privileged
    assert not any(name.startswith(ns) and name != trust_ns for name in privileged)

    # A restricted Deployment pulls from the registry through node trust.
    image = f"{registry.host}/psa/app:1"
    password = await registries.password(registry)
    archive = images.build_image(images.helper_image())
    await asyncio.to_thread(
        skopeo_push, archive, image, registry.ca_file.parent, "registry", password
    )
    app = demo_deployment(image, PULL_SECRET, name="app", namespace=ns, grace_seconds=1)
    await kube.apply_manifests(api, [app])
    deployment = await Deployment.get("app", namespace=ns, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 240)

    # The CA copy: status says when it no longer matches the TLS Secret; provision fixes it.
    status = registry.invoke("status")
    assert "node trust CA copy: current" in status.stdout, status.stdout + status.stderr
    [copy] = await kube.get_all(api, "configmaps", "docker-registry-ca", namespace=trust_ns)
    await copy.patch({"data": {"ca.crt": "an older CA"}})
    status = registry.invoke("status")
    assert "node trust CA copy: stale" in status.stdout, status.stdout + status.stderr
    again = registry.invoke("provision")
    assert again.returncode == 0, again.stderr
    assert "node trust CA copy: current" in registry.invoke("status").stdout
    await copy.refresh()
    assert copy.raw["data"]["ca.crt"] == registry.ca_file.read_text()

    # Unprovision (no purge) removes the files and node trust's namespace.
    removed = registry.invoke("unprovision")
    assert removed.returncode == 0, removed.stderr
    assert node_files(registry) == {}
    assert not await Namespace(trust_ns, api=api).exists()


async def test_preflight_refuses_node_trust_where_pod_security_forbids_it(
    api: kr8s.asyncio.Api, registries: RegistryFactory, namespace: str
) -> None:
    ns = await Namespace.get(namespace, api=api)
    await ns.label({ENFORCE: "baseline"})
    registry = await registries("psa-refused", provision=False, node_trust__namespace=namespace)
    before = await snapshot(api)
    refused = registry.invoke("provision")
    assert refused.returncode != 0
    assert "nothing was changed" in refused.stderr, refused.stderr
    assert f"DaemonSet {namespace}/{NODE_TRUST}" in refused.stderr
    assert f"Pod Security Admission in namespace {namespace} would reject" in refused.stderr
    assert 'policy "baseline:latest"' in refused.stderr
    assert "hostPath" in refused.stderr
    assert "node_trust.namespace" in refused.stderr
    assert f"{ENFORCE}=privileged" in refused.stderr
    assert await snapshot(api) == before
    assert node_files(registry) == {}


def _previous_layout_daemonset(settings, registry_namespace: str) -> dict:
    """Node trust as the release before its own namespace ran it: in the registry's
    namespace, mounting the CA from the TLS Secret."""
    [daemonset] = [m for m in render.render_manifests(settings, None) if m["kind"] == "DaemonSet"]
    daemonset["metadata"]["namespace"] = registry_namespace
    spec = daemonset["spec"]["template"]["spec"]
    [tls] = [v for v in spec["volumes"] if v["name"] == "registry-tls"]
    items = tls.pop("configMap")["items"]
    tls["secret"] = {"secretName": settings.tls.secret_name, "optional": True, "items": items}
    return daemonset


async def test_upgrade_moves_node_trust_without_the_files_ever_going(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("psa-upgrade", node_trust__enabled="false")
    ns = registry.namespace
    # A cluster without Pod Security, as the previous release ran on.
    await (await Namespace.get(ns, api=api)).label({ENFORCE: "privileged"})
    local = yaml.safe_load(Path(LOCAL_CONFIG).read_text())
    settings = load_settings(None, {**local, **registry.overrides, "node_trust.enabled": "true"})
    assert settings.node_trust.certs_dir == str(NODE_CERTS_DIR)
    await kube.apply_manifests(api, [_previous_layout_daemonset(settings, ns)])
    old = await DaemonSet.get(NODE_TRUST, namespace=ns, api=api)
    assert old.annotations[OWNER_ANNOTATION] == f"{ns}/docker-registry"
    await asyncio.wait_for(kube.wait_until(old, node_trust.on_every_node), 240)
    before = node_files(registry)
    assert set(before) == {"ca.crt", "hosts.toml"}

    del registry.overrides["node_trust.enabled"]
    upgraded = registry.invoke("provision")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"node trust runs in namespace {ns}-node-trust now" in upgraded.stdout
    assert not await DaemonSet(NODE_TRUST, namespace=ns, api=api).exists()
    new = await DaemonSet.get(NODE_TRUST, namespace=f"{ns}-node-trust", api=api)
    assert node_trust.on_every_node(new.raw)
    # Same inode, mtime and text: the files were never removed or rewritten.
    assert node_files(registry) == before
    assert (await _labels(api, ns))[ENFORCE] == "restricted"
