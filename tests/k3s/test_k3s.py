"""Proven on k3s itself, with its embedded containerd (the k3s lane: `pytest --k3s`).

README's k3s claims, each shown here on k3s v1.34.3+k3s1: node trust writes into the
certs.d that k3s's containerd reads (its default `certs_dir`); the files survive a k3s
restart, and k3s, managing its own directories from registries.yaml, leaves ours alone;
containerd 2.1 (k3s's fork) pulls through our hosts.toml before and after; and a mirror
whose upstream registries.yaml configures is refused, k3s's file kept.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import kr8s.asyncio
import pytest
import yaml
from kr8s.asyncio.objects import Deployment, Pod

from registry_provisioner import kube, render
from registry_provisioner.config import Settings, load_settings
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.waiting import diagnose_pods, wait_for
from scripts.local_cluster import images, k3s
from scripts.local_cluster.demo import demo_deployment, ensure_namespace, skopeo_push
from tests.cluster.helpers import until_answers
from tests.support.mirrors import (
    K3S_HEADER,
    UPSTREAM_HOST,
    files_of,
    mirror_namespace,
    mirror_setting,
)
from tests.support.registries import Registry, RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.k3s, pytest.mark.timeout(1500)]

NAMESPACE = "k3s-registry"
OTHER = "k3s-other-registry"  # trusted through registries.yaml only
APPS = "k3s-apps"
PULL_SECRET = "docker-registry-pull"
MIRROR_MAIN = "k3s-mirror-registry"  # refused: k3s configures its upstream


@dataclass(frozen=True)
class Story:
    registry: Registry
    password: str
    first: Pod  # the Deployment's pod from before any restart


def image_variant(label: str) -> images.ImageSpec:
    """The helper image with one more environment line: a manifest the node has not seen."""
    base = images.helper_image()
    return images.ImageSpec(
        name=f"local.test/k3s-{label}:1",
        layers=base.layers,
        inputs=base.inputs,
        texts=base.texts,
        cmd=base.cmd,
        env=(*base.env, f"VARIANT={label}"),
    )


async def push(registry: Registry, password: str, spec: images.ImageSpec, repo: str) -> str:
    """Push from the host with skopeo (TLS verified, real login); return the image by digest."""
    reference = f"{registry.host}/{repo}:1"
    archive = images.build_image(spec)
    await asyncio.to_thread(
        skopeo_push, archive, reference, registry.ca_file.parent, "registry", password
    )
    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        digest = (await client.get_manifest(repo, "1")).digest
    return f"{registry.host}/{repo}@{digest}"


async def deploy(api: kr8s.asyncio.Api, name: str, image: str, pull_secret: str | None) -> Pod:
    """A Deployment in APPS whose pod pulls `image`; its Running pod, which ran that digest."""
    manifest = demo_deployment(image, pull_secret or "", name=name, namespace=APPS, grace_seconds=1)
    if pull_secret is None:
        del manifest["spec"]["template"]["spec"]["imagePullSecrets"]
    await kube.apply_manifests(api, [manifest])
    deployment = await Deployment.get(name, namespace=APPS, api=api)
    await wait_for(
        f"Deployment {APPS}/{name} to pull {image} and run",
        lambda: kube.wait_until(deployment, kube.rolled_out),
        180,
        lambda: diagnose_pods(api, APPS, f"app={name}"),
    )
    running = {"label_selector": f"app={name}", "field_selector": "status.phase=Running"}
    [pod] = await kube.get_all(api, "pods", namespace=APPS, **running)
    assert pod.raw["status"]["containerStatuses"][0]["imageID"].endswith(image.split("@")[1])
    return pod


async def restart_k3s(api: kr8s.asyncio.Api, *logins: tuple[Registry, str]) -> None:
    """Restart k3s, then wait until each registry is Ready again and answers.

    The restarted kubelet reports every pod unready until its probes pass again
    (they start after a random part of their period); meanwhile the Service has no
    endpoint and the address refuses connections. Until that report, kube-proxy's old
    rules still answer, so an answer alone comes too early: first a Ready that the
    restarted kubelet set, then the answer once kube-proxy has caught up.
    """
    restarted_at = datetime.now(UTC).replace(microsecond=0)
    await asyncio.to_thread(k3s.restart_server)
    for registry, password in logins:
        await until_ready_again(api, registry, restarted_at)
        async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
            await wait_for(
                f"{registry.host} to answer after the restart", lambda: until_answers(client), 120
            )


async def until_ready_again(api: kr8s.asyncio.Api, registry: Registry, since: datetime) -> None:
    settings = load_settings(None, {"namespace": registry.namespace})
    selector = render.component_selector(settings, "registry")
    for pod in await kube.running_pods(api, registry.namespace, selector):
        await wait_for(
            f"pod {pod.namespace}/{pod.name} to turn Ready after the restart",
            lambda pod=pod: kube.wait_until(pod, ready_since(since)),
            120,
            lambda: diagnose_pods(api, registry.namespace, selector),
        )


def ready_since(moment: datetime) -> Callable[[dict], bool]:
    """A pod predicate: Ready, by a transition at or after `moment` (whole seconds)."""

    def check(raw: dict) -> bool:
        conditions = (raw.get("status") or {}).get("conditions") or []
        return any(
            c.get("type") == "Ready"
            and c.get("status") == "True"
            and datetime.fromisoformat(c["lastTransitionTime"]) >= moment
            for c in conditions
        )

    return check


@pytest.fixture(scope="module")
async def story(api: kr8s.asyncio.Api, module_registries: RegistryFactory) -> Story:
    """Provision with the defaults' certs_dir, push from the host, a Deployment pulls."""
    await ensure_namespace(api, APPS)
    registry = await module_registries(
        NAMESPACE, provision=False, shared=True, pull_secret__namespaces=f"[{APPS}]"
    )
    provisioned = registry.invoke("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    password = await module_registries.password(registry)
    image = await push(registry, password, images.helper_image(), "k3s/app")
    first = await deploy(api, "app", image, PULL_SECRET)
    return Story(registry, password, first)


def our_directory(registry: Registry) -> Path:
    return k3s.certs_dir_on_host() / registry.host


async def test_node_trust_writes_into_the_certs_d_k3s_containerd_reads(story: Story) -> None:
    # Provision ran without any certs_dir setting: the default is k3s's own directory...
    assert Settings().node_trust.certs_dir == str(k3s.CERTS_DIR)
    assert "node_trust.certs_dir" not in " ".join(story.registry.set_args)
    # ...which is where k3s pointed its embedded containerd,
    config = k3s.host_path(k3s.DATA_DIR / "agent/etc/containerd/config.toml").read_text()
    assert f'config_path = "{k3s.CERTS_DIR}"' in config
    # and where our files are, carrying no k3s header; the Deployment pulled through them.
    ours = our_directory(story.registry)
    assert (ours / "ca.crt").read_text() == story.registry.ca_file.read_text()
    assert not (ours / "hosts.toml").read_text().startswith(K3S_HEADER)
    assert story.first.raw["status"]["phase"] == "Running"


async def test_a_k3s_restart_keeps_node_trust_and_a_new_pod_pulls(
    api: kr8s.asyncio.Api, story: Story
) -> None:
    ours = our_directory(story.registry)
    before = files_of(ours)
    node_trust = await kube.get_all(
        api, "pods", namespace=f"{NAMESPACE}-node-trust", field_selector="status.phase=Running"
    )
    assert node_trust, "no node-trust pod runs"

    await restart_k3s(api, (story.registry, story.password))

    # The files are the very same: k3s did not remove them, and nobody wrote them again.
    assert files_of(ours) == before
    # Nothing was re-provisioned: no new node-trust pod, and the old pod kept running.
    after = await kube.get_all(
        api, "pods", namespace=f"{NAMESPACE}-node-trust", field_selector="status.phase=Running"
    )
    assert [p.metadata.uid for p in after] == [p.metadata.uid for p in node_trust]
    await story.first.refresh()
    assert story.first.raw["status"]["containerStatuses"][0]["restartCount"] == 0
    # A new pod pulls a manifest the node has never seen, through the same hosts.toml.
    image = await push(story.registry, story.password, image_variant("after-restart"), "k3s/new")
    await deploy(api, "after-restart", image, PULL_SECRET)
    assert files_of(ours) == before


async def test_registries_yaml_k3s_manages_its_directory_and_leaves_ours(
    api: kr8s.asyncio.Api, story: Story, module_registries: RegistryFactory
) -> None:
    other = await module_registries(OTHER, node_trust__enabled="false")
    other_password = await module_registries.password(other)
    other_image = await push(other, other_password, image_variant("other"), "k3s/other")
    ours = our_directory(story.registry)
    before = files_of(ours)
    # The other registry as a k3s user configures it: CA and login in registries.yaml.
    ca_file = k3s.REGISTRIES_YAML.with_name("other-registry-ca.crt")
    k3s.host_path(ca_file).write_bytes(other.ca_file.read_bytes())
    login = {"username": "registry", "password": other_password}
    registries = {"configs": {other.host: {"auth": login, "tls": {"ca_file": str(ca_file)}}}}
    registries_yaml = k3s.registries_yaml_on_host()
    registries_yaml.touch(mode=0o600)
    registries_yaml.write_text(yaml.safe_dump(registries))
    theirs = k3s.certs_dir_on_host() / other.host
    logins = (story.registry, story.password), (other, other_password)
    try:
        await restart_k3s(api, *logins)

        assert (theirs / "hosts.toml").read_text().startswith(K3S_HEADER)
        assert files_of(ours) == before
        # Both work: ours through node trust and a pull Secret, the other through k3s alone.
        await deploy(api, "other", other_image, None)
        image = await push(story.registry, story.password, image_variant("beside"), "k3s/beside")
        await deploy(api, "beside", image, PULL_SECRET)
    finally:
        registries_yaml.unlink(missing_ok=True)
        k3s.host_path(ca_file).unlink(missing_ok=True)
        await restart_k3s(api, *logins)
    # Without registries.yaml, k3s removes the directory it made, and only that one.
    assert not theirs.exists()
    assert files_of(ours) == before


async def test_a_mirror_whose_upstream_registries_yaml_configures_is_refused(
    api: kr8s.asyncio.Api, story: Story, module_registries: RegistryFactory
) -> None:
    """k3s writes the upstream's hosts.toml from registries.yaml; provision with a mirror
    of that upstream fails before any change, naming the node, the file and the fix,
    and leaves the file.

    The mirror never has to pull, so the registry of the story stands in for its
    upstream (its login and CA fill the mirror's Secret and ConfigMap)."""
    registries_yaml = k3s.registries_yaml_on_host()
    registries_yaml.touch(mode=0o600)
    # As a user points k3s at a cache they run already. k3s writes no file for an entry
    # that only names the upstream's own address (nothing beyond containerd's default);
    # nothing here pulls from upstream.test, so the endpoint is never contacted.
    endpoint = {"endpoint": ["https://cache.lan.test:5000"]}
    registries_yaml.write_text(yaml.safe_dump({"mirrors": {UPSTREAM_HOST: endpoint}}))
    theirs = k3s.certs_dir_on_host() / UPSTREAM_HOST
    login = (story.registry, story.password)
    try:
        await restart_k3s(api, login)
        assert (theirs / "hosts.toml").read_text().startswith(K3S_HEADER)
        before = files_of(theirs)
        main = await module_registries(MIRROR_MAIN, provision=False)
        async with mirror_namespace(api, main, story.registry):
            main.overrides["mirrors"] = mirror_setting(story.registry)
            objects_before = _of_install(await snapshot(api), main)
            refused = main.invoke("provision", "--timeout", "240")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "preflight failed, nothing was changed" in refused.stderr, refused.stderr
            assert _of_install(await snapshot(api), main) == objects_before
            [node] = await kube.get_all(api, "nodes")
            node_file = k3s.CERTS_DIR / UPSTREAM_HOST / "hosts.toml"
            expected = f"node {node.name}: refused to replace {node_file}"
            assert expected in refused.stderr, refused.stderr
            assert "mirrors[0].replace_node_config: true" in refused.stderr, refused.stderr
            assert files_of(theirs) == before
            removed = main.invoke("unprovision")
            assert removed.returncode == 0, removed.stderr
            assert files_of(theirs) == before
    finally:
        registries_yaml.unlink(missing_ok=True)
        await restart_k3s(api, login)
    assert not theirs.exists()


def _of_install(versions: dict[str, str], registry: Registry) -> dict[str, str]:
    """The snapshot's entries in `registry`'s namespaces and those namespaces themselves.

    The rest of the cluster moves on its own here: the story's objects settle after a
    k3s restart, and kube-controller-manager adds kube-root-ca.crt to a new namespace."""
    settings = load_settings(None, {"namespace": registry.namespace})
    mine = {settings.namespace, settings.node_trust_namespace}
    return {
        key: version
        for key, version in versions.items()
        if (key.split("/")[1] in mine and not key.endswith("/kube-root-ca.crt"))
        or (key.startswith("Namespace/") and key.split("/")[2] in mine)
    }


def test_the_node_sees_k3s_defaults_and_the_host_none_of_them() -> None:
    """k3s's host paths are the cluster's own: nothing was written to the host's."""
    for path in (k3s.REGISTRIES_YAML.parent, k3s.DATA_DIR):
        assert not path.exists() or not os.listdir(path)
