"""Node trust (issue 11): trust never lapses, only unprovision takes it away, and
provision waits for it on every node or says which node failed and why."""

from __future__ import annotations

import asyncio
import json
import time

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import DaemonSet, Deployment, Namespace

from registry_provisioner import kube, node_trust
from scripts.local_cluster import images, node_config
from scripts.local_cluster.demo import demo_deployment, skopeo_push
from scripts.local_cluster.paths import STATE_DIR
from scripts.local_cluster.versions import HELPER_IMAGE
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

NODE_CERTS_DIR = node_config.NodeLayout(STATE_DIR / "node").registry_certs_dir
NODE_TRUST = "docker-registry-node-trust"
SELECTOR = "app.kubernetes.io/component=node-trust"
PULL_SECRET = "docker-registry-pull"


def node_files(registry: Registry) -> dict[str, tuple[int, int, str]]:
    """The registry's files on the node: inode, mtime and text of each.

    A file deleted and written again has a new inode (writes are a rename), so equal
    results before and after prove the files never went away in between.
    """
    found = {}
    for path in sorted((NODE_CERTS_DIR / registry.host).glob("*")):
        stat = path.stat()
        found[path.name] = (stat.st_ino, stat.st_mtime_ns, path.read_text())
    return found


async def node_trust_pod(api: kr8s.asyncio.Api, namespace: str):
    [pod] = [
        p
        for p in await kube.get_all(api, "pods", namespace=namespace, label_selector=SELECTOR)
        if not p.raw["metadata"].get("deletionTimestamp")
    ]
    return pod


async def pulls_again(api: kr8s.asyncio.Api, app: Deployment, round_: str) -> None:
    """A new pod of the app (imagePullPolicy Always, so a real pull) comes up Running."""
    await app.patch({"spec": {"template": {"metadata": {"annotations": {"test/round": round_}}}}})
    await asyncio.wait_for(kube.wait_until(app, kube.rolled_out), 240)
    pods = await kube.get_all(api, "pods", namespace=app.namespace, label_selector="app=app")
    current = [
        p
        for p in pods
        if p.raw["metadata"].get("annotations", {}).get("test/round") == round_
        and not p.raw["metadata"].get("deletionTimestamp")
    ]
    assert [p.raw["status"]["phase"] for p in current] == ["Running"], round_


async def every_node_trusts(api: kr8s.asyncio.Api, namespace: str) -> None:
    daemonset = await DaemonSet.get(NODE_TRUST, namespace=namespace, api=api)
    await asyncio.wait_for(kube.wait_until(daemonset, node_trust.on_every_node), 240)


async def evict(api: kr8s.asyncio.Api, pod) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
    }
    async with api.call_api(
        "POST",
        version="v1",
        url=f"pods/{pod.name}/eviction",
        namespace=pod.namespace,
        content=json.dumps(body),
    ) as response:
        assert response.status_code == 201, response.text


async def test_trust_never_lapses_and_only_unprovision_removes_it(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("node-trust-lapse")
    ns = registry.namespace
    trust_ns = f"{ns}-node-trust"  # node trust's own namespace
    before = node_files(registry)
    assert set(before) == {"ca.crt", "hosts.toml"}
    assert before["ca.crt"][2] == registry.ca_file.read_text()

    # An app that pulls from the registry through node trust.
    image = f"{registry.host}/node-trust/app:1"
    archive = images.build_image(images.helper_image())
    password = await registries.password(registry)
    await asyncio.to_thread(
        skopeo_push, archive, image, registry.ca_file.parent, "registry", password
    )
    await kube.apply_manifests(
        api, [demo_deployment(image, PULL_SECRET, name="app", namespace=ns, grace_seconds=1)]
    )
    app = await Deployment.get("app", namespace=ns, api=api)
    await asyncio.wait_for(kube.wait_until(app, kube.rolled_out), 240)

    # 1. A rollout: a setting that changes only the node-trust pod template.
    daemonset = await DaemonSet.get(NODE_TRUST, namespace=trust_ns, api=api)
    generation = daemonset.raw["metadata"]["generation"]
    with registry.start("provision", "--set", f"node_trust.image={HELPER_IMAGE}") as rollout:
        await asyncio.wait_for(
            kube.wait_until(daemonset, lambda raw: raw["metadata"]["generation"] > generation),
            240,
        )
        await pulls_again(api, app, "rollout")
        assert node_files(registry) == before
        finished = await asyncio.to_thread(rollout.finish, 600)
    assert finished.returncode == 0, finished.stderr
    pod = await node_trust_pod(api, trust_ns)
    assert pod.raw["spec"]["containers"][0]["image"] == HELPER_IMAGE
    assert node_files(registry) == before

    # 2. A pod deletion, and 3. an eviction: the app keeps pulling, the files stay.
    for round_ in ("deletion", "eviction"):
        pod = await node_trust_pod(api, trust_ns)
        await (pod.delete() if round_ == "deletion" else evict(api, pod))
        await asyncio.wait_for(kube.wait_deleted(pod), 120)
        assert node_files(registry) == before, round_
        await pulls_again(api, app, round_)
        await every_node_trusts(api, trust_ns)
        assert node_files(registry) == before, round_

    # 4. Unprovision takes the files away; the directory is left empty (the pods see
    # only inside it), which containerd reads as no configuration at all.
    registry.overrides["node_trust.image"] = HELPER_IMAGE
    removed = registry.invoke("unprovision")
    assert removed.returncode == 0, removed.stderr
    assert "may remain" not in removed.stdout
    assert node_files(registry) == {}
    assert not await DaemonSet(NODE_TRUST, namespace=trust_ns, api=api).exists()
    assert not await Namespace(trust_ns, api=api).exists()

    # 5. Provision after unprovision brings trust back, and pulls work again.
    again = registry.invoke("provision")
    assert again.returncode == 0, again.stderr
    assert set(node_files(registry)) == {"ca.crt", "hosts.toml"}
    await pulls_again(api, app, "again")


async def test_provision_names_the_node_and_why_node_trust_failed(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    # Nothing listens on the node's port 9, so the pull fails at once and offline.
    bad_image = "127.0.0.1:9/missing/node-trust:1"
    registry = await registries(
        "node-trust-bad-image", provision=False, node_trust__image=bad_image
    )
    [node] = [n.name for n in await kube.get_all(api, "nodes")]
    started = time.monotonic()
    failed = registry.invoke("provision", "--timeout", "60")
    assert failed.returncode == 1, failed.stderr
    assert time.monotonic() - started < 400
    assert "every node to trust the registry's CA" in failed.stderr
    assert f"node {node}: image pull error" in failed.stderr
    assert bad_image in failed.stderr
    assert "registry ready" not in failed.stdout

    # The fixed setting provisions, and unprovision can clean up with the live image.
    del registry.overrides["node_trust.image"]
    fixed = registry.invoke("provision")
    assert fixed.returncode == 0, fixed.stderr
    assert set(node_files(registry)) == {"ca.crt", "hosts.toml"}


async def test_switching_node_trust_off_takes_its_files_and_objects_away(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    registry = await registries("node-trust-off")
    trust_ns = f"{registry.namespace}-node-trust"
    assert set(node_files(registry)) == {"ca.crt", "hosts.toml"}
    registry.overrides["node_trust.enabled"] = "false"

    preview = registry.invoke("provision", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"DaemonSet/{NODE_TRUST} in {trust_ns}: would be deleted" in preview.stdout
    assert set(node_files(registry)) == {"ca.crt", "hosts.toml"}  # a preview changes nothing

    off = registry.invoke("provision")
    assert off.returncode == 0, off.stderr
    assert node_files(registry) == {}
    assert not await kube.get_all(api, "daemonsets", NODE_TRUST, namespace=trust_ns)
    assert not await Namespace(trust_ns, api=api).exists()
    again = registry.invoke("provision")
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
