"""The pull-through mirror (issue 13) on the local cluster, fully offline.

A second registry plays the upstream (tests/support/mirrors.py). Pods name
`upstream.test:5000/...` and nothing else; node trust's hosts.toml sends the node's
containerd to the mirror.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment, Pod, Secret

from registry_provisioner import kube, node_probe, render, status
from registry_provisioner.config import load_settings
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, push_image, random_image
from registry_provisioner.logins import dockerconfigjson
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.references import sha256_digest
from scripts.benchmarks.cluster_pull import pause_binary, runnable_image
from scripts.local_cluster import images, node_config, node_hosts
from scripts.local_cluster.paths import LOCAL_OVERLAY, LOG_DIR, STATE_DIR
from scripts.local_cluster.pods import restricted
from tests.support.mirrors import (
    K3S_HEADER,
    MIRROR_PORT,
    UPSTREAM_HOST,
    UPSTREAM_NAME,
    files_of,
    mirror_namespace,
    mirror_setting,
    plant_foreign_hosts_toml,
    upstream_registry,
)
from tests.support.registries import Registry, RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

NODE = node_config.NodeLayout(STATE_DIR / "node")
WAIT = 240.0


async def until(what: str, check: Callable[[], Awaitable[object]], timeout: float = WAIT):
    """Poll `check` until it returns something truthy; fail naming what and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


async def pod_state(api: kr8s.asyncio.Api, namespace: str, name: str) -> str:
    """The pod's phase, or its container's waiting reason and message (a failed pull)."""
    [pod] = await kube.get_all(api, "pods", name, namespace=namespace)
    raw = pod.raw.get("status", {})
    for container in raw.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason')}: {waiting.get('message', '')}"
    return raw.get("phase", "")


def containerd_lines(about: str, count: int = 8) -> str:
    """The node's containerd log lines that mention `about` (which hosts it tried)."""
    log = LOG_DIR / "containerd.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join([line for line in lines if about in line][-count:])


async def run_pod(
    api: kr8s.asyncio.Api,
    namespace: str,
    image: str,
    pull_secret: str | None = None,
    *,
    retried: bool = False,
) -> None:
    """A pod naming `image` and nothing else (no pull Secret unless given) runs.

    A failed pull fails at once, unless `retried`: kubelet may pull once before it has
    synced the pod's pull Secret, and then again, with it, after its back-off.
    """
    name = f"app-{uuid.uuid4().hex[:6]}"
    spec = restricted(
        {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}],
        }
    )
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    pod = await Pod({"metadata": {"name": name, "namespace": namespace}, "spec": spec}, api=api)
    await pod.create()

    async def running() -> bool:
        state = await pod_state(api, namespace, name)
        failed = "ErrImagePull" in state or "BackOff" in state
        assert retried or not failed, f"{state}\ncontainerd:\n{containerd_lines(UPSTREAM_NAME)}"
        return state == "Running"

    try:
        await until(f"pod {namespace}/{name} running {image}", running)
    except AssertionError as error:
        raise AssertionError(f"{error}\ncontainerd:\n{containerd_lines(UPSTREAM_NAME)}") from None
    finally:
        await pod.delete(grace_period=0)


def skopeo_push(host: str, cert_dir) -> subprocess.CompletedProcess[str]:
    """skopeo pushes an image anonymously, as a node would reach the mirror."""
    archive = images.build_image(images.helper_image())
    return subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-cert-dir",
            str(cert_dir),
            f"oci-archive:{archive}",
            f"docker://{host}/library/other:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def counts(api: kr8s.asyncio.Api, registry: Registry) -> dict[str, dict[str, int]]:
    settings = load_settings(overrides=registry.overrides)
    [mirror] = settings.mirrors
    return status.proxy_counts(await status.mirror_metrics(api, settings, mirror))


async def mirror_exec(api: kr8s.asyncio.Api, registry: Registry, command: str) -> str:
    pods = await kube.running_pods(api, registry.namespace, "app.kubernetes.io/component=mirror")
    result = await pods[0].exec(["sh", "-c", command], container="registry", check=False)
    return result.stdout.decode()


async def scale(
    api: kr8s.asyncio.Api, namespace: str, name: str, component: str, replicas: int
) -> None:
    """Scale a Deployment and wait until its pods are gone, or Ready."""
    deployment = await Deployment.get(name, namespace=namespace, api=api)
    await deployment.scale(replicas)

    async def settled() -> bool:
        pods = await kube.get_all(
            api,
            "pods",
            namespace=namespace,
            label_selector=f"app.kubernetes.io/component={component}",
        )
        if replicas == 0:
            return not pods
        live = [p for p in pods if p.raw["metadata"].get("deletionTimestamp") is None]
        return await _ready(live)

    await until(f"Deployment {namespace}/{name} scaled to {replicas}", settled)


async def _ready(pods) -> bool:
    return bool(pods) and all(
        c.get("ready") for p in pods for c in p.raw["status"].get("containerStatuses") or []
    )


async def push_to(upstream: Registry, password: str, repo: str, image: Image) -> None:
    async with RegistryClient(upstream.url, "registry", password, upstream.ca_file) as client:
        await push_image(client, repo, "1", image)


async def test_pull_through_mirror(
    api: kr8s.asyncio.Api, registries: RegistryFactory, tmp_path
) -> None:
    upstream = await upstream_registry(registries, "mirror-upstream")
    app = await pushed_app(registries, upstream)
    # The mirror's registry: its namespace, with the upstream's pull login and CA, first.
    main = await registries("mirror-main", provision=False)
    async with mirror_namespace(api, main, upstream) as pull_login:
        await _with_mirror(api, registries, upstream, main, app, pull_login)


async def pushed_app(registries: RegistryFactory, upstream: Registry) -> Image:
    """A runnable image of two layers, pushed to the upstream as library/app:1."""
    app = runnable_image(pause_binary(), layers=2, layer_bytes=256 * 1024)
    await push_to(upstream, await registries.password(upstream), "library/app", app)
    return app


async def _with_mirror(
    api: kr8s.asyncio.Api,
    registries: RegistryFactory,
    upstream: Registry,
    main: Registry,
    app: Image,
    pull_login: dict[str, str],
) -> None:
    ca_pem = upstream.ca_file.read_text()
    main.overrides["mirrors"] = mirror_setting(upstream, "168h")
    provisioned = main.invoke("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    hosts = NODE.registry_certs_dir / UPSTREAM_HOST / "hosts.toml"
    assert f'server = "https://{UPSTREAM_HOST}"' in hosts.read_text()
    assert f'[host."https://{main.ip}:{MIRROR_PORT}"]' in hosts.read_text()

    # 1. A pod naming the upstream, and nothing else, runs; the pull went through the mirror.
    image = f"{UPSTREAM_HOST}/library/app:1"
    before = await counts(api, main)
    await run_pod(api, main.namespace, image)
    after = await counts(api, main)
    assert after["misses"]["blob"] - before["misses"].get("blob", 0) >= len(app.layers), after
    stored = await mirror_exec(api, main, "ls /var/lib/registry/docker/registry/v2/repositories")
    assert "library" in stored
    shown = main.invoke("status")
    assert shown.returncode == 0, shown.stderr
    assert f"mirror of https://{UPSTREAM_HOST} for {UPSTREAM_HOST}/..." in shown.stdout
    assert "storage used:" in shown.stdout

    # 2. Upstream stopped, the image gone from the node: a new pod starts from the mirror.
    await scale(api, upstream.namespace, "docker-registry", "registry", 0)
    await asyncio.to_thread(images.remove_image, NODE.containerd_socket, image, app)
    hits = after["hits"].get("blob", 0)
    await run_pod(api, main.namespace, image)
    served = await counts(api, main)
    assert served["hits"]["blob"] - hits >= len(app.layers), served

    # 3. A push to the mirror is refused (our client, anonymous like the nodes).
    mirror_url = f"https://{main.ip}:{MIRROR_PORT}"
    ca_file = main.ca_file
    async with RegistryClient(mirror_url, ca_file=ca_file) as client:
        await client.ping()
        with pytest.raises(RegistryError) as refused:
            await client.push_blob("library/app", b"not welcome")
    assert refused.value.status == 405 and "UNSUPPORTED" in str(refused.value), refused.value
    pushed = await asyncio.to_thread(skopeo_push, f"{main.ip}:{MIRROR_PORT}", ca_file.parent)
    assert pushed.returncode != 0, pushed.stderr
    # skopeo stops at its first request (whether the blob exists, which the mirror asks
    # the upstream about); either way nothing reaches the mirror's storage.
    repositories = await mirror_exec(
        api, main, "ls /var/lib/registry/docker/registry/v2/repositories/library"
    )
    assert repositories.split() == ["app"], repositories

    # 4. The mirror down: containerd falls back to the upstream, which the node reaches
    # by name (node_hosts) and trusts with the CA node trust copied from ca_config_map.
    await scale(api, upstream.namespace, "docker-registry", "registry", 1)
    mirror_name = "docker-registry-mirror-upstream-test-5000"
    await scale(api, main.namespace, mirror_name, "mirror", 0)
    assert (NODE.registry_certs_dir / UPSTREAM_HOST / "upstream-ca.crt").read_text() == ca_pem
    login = dockerconfigjson(UPSTREAM_HOST, pull_login["username"], pull_login["password"])
    pull_secret = await Secret(
        {
            "metadata": {"namespace": main.namespace, "name": "upstream-pull"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": login},
        },
        api=api,
    )
    await pull_secret.create()
    await asyncio.to_thread(images.remove_image, NODE.containerd_socket, image, app)
    node_hosts.add(UPSTREAM_NAME, upstream.ip)
    try:
        await run_pod(api, main.namespace, image, pull_secret="upstream-pull", retried=True)
    finally:
        node_hosts.remove(UPSTREAM_NAME)
    await scale(api, main.namespace, mirror_name, "mirror", 1)

    # 5. ttl: what is fetched now expires after 20s, data included.
    main.overrides["mirrors"] = mirror_setting(upstream, "20s")
    again = main.invoke("provision")
    assert again.returncode == 0, again.stderr
    fresh = random_image([64 * 1024])
    await push_to(upstream, await registries.password(upstream), "library/fresh", fresh)
    layer = sha256_digest(fresh.layers[0]).split(":")[1]
    blob = f"/var/lib/registry/docker/registry/v2/blobs/sha256/{layer[:2]}/{layer}/data"
    async with RegistryClient(mirror_url, ca_file=ca_file) as client:
        await client.get_manifest("library/fresh", "1")
        await client.get_blob("library/fresh", "sha256:" + layer)
    assert (await mirror_exec(api, main, f"ls {blob}")).strip() == blob

    async def expired() -> bool:
        return not (await mirror_exec(api, main, f"ls {blob} 2>/dev/null")).strip()

    await until(f"the mirror to expire {blob}", expired, timeout=180)

    # 6. A mirror dropped from the settings: its objects and node files go, its claim
    # stays, the registry's own files stay; adding it again brings it back.
    mirror_dir = NODE.registry_certs_dir / UPSTREAM_HOST
    registry_files = files_of(NODE.registry_certs_dir / main.host)
    main.overrides["mirrors"] = "[]"
    dropped = main.invoke("provision")
    assert dropped.returncode == 0, dropped.stderr
    name = f"docker-registry-mirror-upstream-test-{UPSTREAM_HOST.rsplit(':', 1)[1]}"
    assert f"Deployment/{name} in {main.namespace}: deleted" in dropped.stdout, dropped.stdout
    assert not list(mirror_dir.glob("*"))
    assert files_of(NODE.registry_certs_dir / main.host) == registry_files
    ns = main.namespace
    assert not await kube.get_all(api, "deployments", name, namespace=ns)
    assert await kube.get_all(api, "persistentvolumeclaims", name, namespace=ns)
    main.overrides["mirrors"] = mirror_setting(upstream, "168h")
    back = main.invoke("provision")
    assert back.returncode == 0, back.stderr
    assert (mirror_dir / "hosts.toml").is_file()

    # 7. Unprovision leaves no node file behind.
    removed = main.invoke("unprovision")
    assert removed.returncode == 0, removed.stderr
    assert not list((NODE.registry_certs_dir / UPSTREAM_HOST).glob("*"))
    assert not list((NODE.registry_certs_dir / main.host).glob("*"))


async def test_a_hosts_toml_not_ours_is_left_and_provision_says_how_to_proceed(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    """As when k3s's registries.yaml configures the upstream: its hosts.toml stays as it
    is, provision fails at once naming node, file and fix; replace_node_config takes over."""
    upstream = await upstream_registry(registries, "refusal-upstream")
    app = await pushed_app(registries, upstream)
    main = await registries("refusal-main", provision=False)
    theirs = plant_foreign_hosts_toml(NODE.registry_certs_dir / UPSTREAM_HOST)
    try:
        async with mirror_namespace(api, main, upstream):
            await _refused_then_replaced(api, upstream, main, theirs, app)
    finally:
        if theirs.exists() and theirs.read_text().startswith(K3S_HEADER):
            theirs.unlink()


async def _refused_then_replaced(
    api: kr8s.asyncio.Api, upstream: Registry, main: Registry, theirs: Path, app: Image
) -> None:
    mirror_dir = theirs.parent
    before = files_of(mirror_dir)
    [node] = await kube.get_all(api, "nodes")

    # 1. Refused before any change: the node, the file, why and the fix.
    main.overrides["mirrors"] = mirror_setting(upstream)
    settings = load_settings(LOCAL_OVERLAY, main.overrides)
    objects_before = await snapshot(api)
    started = time.monotonic()
    refused = main.invoke("provision", "--timeout", "240")
    took = time.monotonic() - started
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = refused.stderr
    print(f"provision refused after {took:.0f}s:\n{message}")  # shown by pytest -rP
    assert "preflight failed, nothing was changed" in message, message
    assert f"node {node.name}: refused to replace {theirs}: this tool did not write it" in message
    for fix in ("registries.yaml", "restart k3s", "mirrors[0].replace_node_config: true"):
        assert fix in message, message
    assert files_of(mirror_dir) == before  # bytes, inode and mtime
    # The probe's pods and the namespace it made for them are gone again.
    assert await snapshot(api) == objects_before
    assert await kube.read(api, f"namespaces/{settings.node_trust_namespace}") is None
    assert not list((NODE.registry_certs_dir / main.host).glob("*"))

    # 2. Unprovision removes what it wrote, and leaves the file it did not write.
    removed = main.invoke("unprovision")
    assert removed.returncode == 0, removed.stderr
    assert files_of(mirror_dir) == before
    assert not list((NODE.registry_certs_dir / main.host).glob("*"))

    # 3. Told to proceed, it replaces the file, and a pod pulls through the mirror.
    main.overrides["mirrors"] = mirror_setting(upstream, replace_node_config=True)
    replaced = main.invoke("provision")
    assert replaced.returncode == 0, replaced.stderr
    ours = theirs.read_text()
    assert ours.startswith("# Managed by registry-provisioner"), ours
    assert f'[host."https://{main.ip}:{MIRROR_PORT}"]' in ours
    pulled_before = await counts(api, main)
    await run_pod(api, main.namespace, f"{UPSTREAM_HOST}/library/app:1")
    pulled = await counts(api, main)
    misses = pulled["misses"]["blob"] - pulled_before["misses"].get("blob", 0)
    assert misses >= len(app.layers), pulled

    # 4. Once node trust holds the file on every node, a re-provision asks the nodes
    # nothing (no probe pod), even with replace_node_config false again.
    main.overrides["mirrors"] = mirror_setting(upstream)
    again = main.invoke("provision")
    assert again.returncode == 0, again.stderr
    probe = render.node_probe_name(settings, node.name)
    assert not await kube.events_about(api, settings.node_trust_namespace, probe, "Pod")
    assert theirs.read_text() == ours

    # 5. What it wrote, it removes.
    removed = main.invoke("unprovision")
    assert removed.returncode == 0, removed.stderr
    assert not list(mirror_dir.glob("*"))


async def test_the_node_probe_creates_no_certs_directory_where_there_is_none(
    api: kr8s.asyncio.Api, registries: RegistryFactory
) -> None:
    """A node without <certs_dir> holds no hosts.toml to conflict with: the probe says
    so from kubelet's report, without waiting out its timeout, and makes no directory."""
    upstream = await upstream_registry(registries, "probe-upstream")
    main = await registries("probe-main", provision=False)
    absent = NODE.registry_certs_dir.parent / f"absent-{uuid.uuid4().hex[:8]}"
    missing = absent / "certs.d"
    overrides = {
        **main.overrides,
        "mirrors": mirror_setting(upstream),
        "node_trust.certs_dir": str(missing),
    }
    settings = load_settings(LOCAL_OVERLAY, overrides)
    manifests = render.render_manifests(settings, None)
    try:
        made = await node_probe.check_nodes(api, settings, manifests, timeout=WAIT)
        assert [(c.kind, c.name, c.action) for c in made] == [
            ("Namespace", settings.node_trust_namespace, "created")
        ]
        assert not absent.exists()
        selector = render.component_selector(settings, node_probe.COMPONENT)
        left = await kube.get_all(
            api, "pods", namespace=settings.node_trust_namespace, label_selector=selector
        )
        assert not left
    finally:
        [namespace] = [
            m for m in manifests if m["metadata"]["name"] == settings.node_trust_namespace
        ]
        await kube.delete_manifests(api, [namespace])
