"""Taking over the registry the Ansible notebook installed keeps every image.

The start is the notebook's real state: its own templates rendered with its own
group_vars, applied as it applies them, `registry:2` (distribution v2.8.3) serving
images pushed through its LoadBalancer IP, in a namespace from before Pod Security
(labelled `privileged`, as such a cluster admits the notebook's root pod), on a node
labelled `node-type=worker` as its users' nodes are. The tests run in order: the dry
run and the refusal leave that state as it is, the takeover then keeps every image,
and the way back re-applies the notebook's manifests over the same data.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment

from registry_provisioner import kube
from registry_provisioner.images import Image, assemble_image, push_image, random_layer
from registry_provisioner.oci_client import OCI_INDEX, RegistryClient
from registry_provisioner.ownership import OWNER_ANNOTATION
from registry_provisioner.references import sha256_digest
from scripts.local_cluster import images
from scripts.local_cluster.addresses import OVERLAY_IP
from scripts.local_cluster.demo import demo_deployment
from tests.support import notebook
from tests.support.oci_layout import read_oci_layout
from tests.support.registries import registry_password, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


@dataclass
class Pushed:
    """What went into the notebook's registry, to be found again byte for byte."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> tag -> digest
    digests: dict[str, set[str]] = field(default_factory=dict)  # repo -> every manifest
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    def image(self, repo: str, image: Image, tag: str | None) -> None:
        self.manifests[image.digest] = image.manifest
        self.blobs.update(image.blobs())
        self.digests.setdefault(repo, set()).add(image.digest)
        if tag:
            self.tags.setdefault(repo, {})[tag] = image.digest


@dataclass
class Start:
    old: notebook.Running
    pushed: Pushed
    claim_uid: str

    @property
    def namespace(self) -> str:
        return self.old.namespace

    @property
    def tmp(self) -> Path:
        return self.old.tmp

    def invoke(self, task: str, *extra: str, **options: Any) -> subprocess.CompletedProcess:
        return self.old.invoke(task, *extra, **options)


def _one_layer_image(n: int, size: int) -> Image:
    layer, diff_id = random_layer(n, size)
    return assemble_image([layer], [diff_id])


def _images() -> list[tuple[str, str, Image]]:
    """At least ten images: two repositories sharing layers, a tag that moves later."""
    shared = [random_layer(0, 256 * 1024), random_layer(1, 64 * 1024)]
    out = []
    for n, (repo, tag) in enumerate(
        [
            ("apps/web", "1.0"),
            ("apps/web", "1.1"),
            ("apps/worker", "1.0"),  # the shared base, as web's
            ("tools/debug", "latest"),
            ("tools/debug", "2024"),
            ("team/a/api", "v3"),
            ("lib/base", "bookworm"),
            ("moving", "stable"),  # moved to a new manifest below
        ]
    ):
        own = random_layer(n + 2, 32 * 1024)
        layers = [*shared, own] if repo.startswith("apps/") else [own]
        image = assemble_image([layer for layer, _ in layers], [d for _, d in layers])
        out.append((repo, tag, image))
    return out


def _platform_image(arch: str) -> Image:
    layer, diff_id = random_layer(0, 16 * 1024)
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    image = assemble_image([layer], [diff_id])
    manifest = json.loads(image.manifest)
    manifest["config"]["digest"] = sha256_digest(config)
    manifest["config"]["size"] = len(config)
    return Image(json.dumps(manifest).encode(), config, (layer,))


def _runnable() -> Image:
    """The local cluster's busybox image, for the Deployment that runs one of them."""
    with tarfile.open(images.build_image(images.helper_image())) as tar:
        layout = Path(tempfile.mkdtemp())
        tar.extractall(layout, filter="data")
    return read_oci_layout(layout, "static")


async def _push_all(client: RegistryClient) -> Pushed:
    pushed = Pushed()
    busybox = _runnable()
    await push_image(client, "tools/busybox", "static", busybox)
    pushed.image("tools/busybox", busybox, "static")
    for repo, tag, image in _images():
        await push_image(client, repo, tag, image)
        pushed.image(repo, image, tag)
    # The tag moves: the old manifest stays, by digest only.
    moved = _one_layer_image(99, 8 * 1024)
    await push_image(client, "moving", "stable", moved)
    pushed.image("moving", moved, "stable")
    # Pushed by digest only: no tag ever names it.
    lonely = _one_layer_image(98, 8 * 1024)
    await push_image(client, "by-digest", lonely.digest, lonely)
    pushed.image("by-digest", lonely, None)
    # A multi-arch index over two platform images.
    children = [_platform_image("amd64"), _platform_image("arm64")]
    for child in children:
        await push_image(client, "multi/arch", child.digest, child)
        pushed.image("multi/arch", child, None)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": c.media_type,
                    "digest": c.digest,
                    "size": len(c.manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for c, arch in zip(children, ("amd64", "arm64"), strict=True)
            ],
        }
    ).encode()
    await client.put_manifest("multi/arch", "1", index, OCI_INDEX)
    pushed.manifests[sha256_digest(index)] = index
    pushed.digests.setdefault("multi/arch", set()).add(sha256_digest(index))
    pushed.tags.setdefault("multi/arch", {})["1"] = sha256_digest(index)
    return pushed


@pytest.fixture(scope="module")
async def start(
    api: kr8s.asyncio.Api, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Start]:
    async with notebook.running(api, kubeconfig, tmp_path_factory.mktemp("notebook")) as old:
        async with RegistryClient(old.url, ca_file=old.ca_file) as client:
            pushed = await _push_all(client)
        [claim] = await kube.get_all(api, "persistentvolumeclaims", namespace=old.namespace)
        yield Start(old, pushed, claim.metadata.uid)


def _skopeo(*args: str, cert_dir: Path, authfile: Path | None) -> subprocess.CompletedProcess:
    auth = ["--authfile", str(authfile)] if authfile else []
    return subprocess.run(
        ["skopeo", *args[:1], *auth, "--cert-dir", str(cert_dir), *args[1:]],
        capture_output=True,
        check=False,
        timeout=120,
    )


def _check_byte_for_byte(pushed: Pushed, cert_dir: Path, authfile: Path | None) -> None:
    """skopeo finds every tag and every digest, with the bytes that were pushed."""
    host = f"{OVERLAY_IP}:5000"
    refs = [f"{repo}:{tag}" for repo, tags in pushed.tags.items() for tag in tags]
    refs += [f"{repo}@{d}" for repo, digests in pushed.digests.items() for d in digests]
    for ref in refs:
        raw = _skopeo(
            "inspect", "--raw", f"docker://{host}/{ref}", cert_dir=cert_dir, authfile=authfile
        )
        assert raw.returncode == 0, f"{ref}: {raw.stderr.decode()}"
        assert hashlib.sha256(raw.stdout).hexdigest() in {
            d.removeprefix("sha256:") for d in pushed.manifests
        }, ref
        repo, _, tagged = ref.partition(":")
        if "@" not in ref:
            assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == pushed.tags[repo][tagged]
        document = json.loads(raw.stdout)
        if "layers" not in document:
            continue
        layout = Path(tempfile.mkdtemp())
        copied = subprocess.run(
            ["skopeo", "copy", "--quiet", "--preserve-digests",
             *(["--src-authfile", str(authfile)] if authfile else []),
             "--src-cert-dir", str(cert_dir), f"docker://{host}/{ref}", f"oci:{layout}:x"],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip
        assert copied.returncode == 0, f"{ref}: {copied.stderr.decode()}"
        for descriptor in [document["config"], *document["layers"]]:
            digest = descriptor["digest"]
            data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
            assert data == pushed.blobs[digest], f"{ref}: blob {digest} differs"


def _auth_file(directory: Path, user: str, password: str) -> Path:
    path = directory / "auth.json"
    path.touch(mode=0o600)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {f"{OVERLAY_IP}:5000": {"auth": token}}}))
    return path


# --------------------------------------------------------------------------- the tests


async def test_dry_run_prints_the_plan_and_changes_nothing(
    api: kr8s.asyncio.Api, kubeconfig: str, start: Start
) -> None:
    before = await snapshot(api)

    result = start.invoke("provision", "--dry-run", "--adopt", kubeconfig=kubeconfig)

    assert result.returncode == 0, result.stderr
    assert "the Ansible notebook's registry is installed" in result.stdout, result.stdout
    for line in (
        f"keeps    PersistentVolumeClaim docker-registry-pvc (uid {start.claim_uid})",
        "storage.sub_path='registry'",
        "replaces Deployment docker-registry",
        "replaces Service docker-registry-service",
        "deletes  Certificate docker-registry-certificate",
        "deletes  Secret docker-registry-secret",
    ):
        assert line in result.stdout, result.stdout
    tags, repos = sum(len(t) for t in start.pushed.tags.values()), len(start.pushed.tags)
    assert f"found    {tags} tags in {repos} repositories" in result.stdout, result.stdout
    assert "Deployment/docker-registry in docker-registry: would be replaced" in result.stdout
    assert await snapshot(api) == before


async def test_without_adopt_provision_refuses_and_status_tells(
    api: kr8s.asyncio.Api, kubeconfig: str, start: Start
) -> None:
    before = await snapshot(api)

    result = start.invoke("provision", kubeconfig=kubeconfig)

    assert result.returncode != 0
    assert "invoke provision --adopt" in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    status = start.invoke("status", kubeconfig=kubeconfig)
    assert status.returncode == 0, status.stderr
    assert "the Ansible notebook's registry is installed" in status.stdout, status.stdout
    assert "`invoke provision --adopt` takes it over" in status.stdout
    assert await snapshot(api) == before


async def test_adoption_keeps_every_image_on_the_same_claim(
    api: kr8s.asyncio.Api, kubeconfig: str, start: Start
) -> None:
    # Killed once the old registry is gone, and again once every tag was checked: each
    # run picks up where the last stopped.
    for point in ("notebook-stopped", "notebook-checked"):
        killed = start.invoke("provision", "--adopt", kubeconfig=kubeconfig, failpoint=point)
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        [claim] = await kube.get_all(api, "persistentvolumeclaims", namespace=start.namespace)
        assert claim.metadata.uid == start.claim_uid
        assert not await kube.get_all(
            api, "pods", namespace=start.namespace, label_selector="run=docker-registry"
        )

    result = start.invoke("provision", "--adopt", kubeconfig=kubeconfig)

    assert result.returncode == 0, result.stdout + result.stderr
    tags = sum(len(t) for t in start.pushed.tags.values())
    assert f"taken over: {tags} tags checked" in result.stdout, result.stdout
    ns = start.namespace
    [claim] = await kube.get_all(api, "persistentvolumeclaims", namespace=ns)
    assert claim.metadata.uid == start.claim_uid
    assert claim.annotations["registry-provisioner/storage-sub-path"] == "registry"
    # The notebook's leftovers are gone, or ours now.
    for kind, name in (
        ("certificates.cert-manager.io", "docker-registry-certificate"),
        ("secrets", "docker-registry-secret"),
    ):
        assert not await kube.get_all(api, kind, name, namespace=ns), name
    for kind in ("deployments", "services", "persistentvolumeclaims"):
        for obj in await kube.get_all(api, kind, namespace=ns):
            assert obj.annotations.get(OWNER_ANNOTATION) == f"{ns}/docker-registry", obj.name
    [deployment] = await kube.get_all(api, "deployments", namespace=ns)
    assert "nodeSelector" not in deployment.raw["spec"]["template"]["spec"]
    [service] = await kube.get_all(api, "services", namespace=ns)
    assert "loadBalancerIP" not in service.raw["spec"]

    cert_dir = start.tmp / "certs" / f"{OVERLAY_IP}:5000"
    password = await registry_password(api, ns)
    authfile = _auth_file(start.tmp, "registry", password)
    await asyncio.to_thread(_check_byte_for_byte, start.pushed, cert_dir, authfile)

    # It accepts pushes now (the notebook's files were handed to its user).
    async with RegistryClient(
        f"https://{OVERLAY_IP}:5000", "registry", password, cert_dir / "ca.crt"
    ) as client:
        fresh = _one_layer_image(7, 4096)
        await push_image(client, "apps/web", "after-takeover", fresh)

    # A Deployment pulls one of the notebook's images through the cluster's login.
    image = f"{OVERLAY_IP}:5000/tools/busybox@{start.pushed.tags['tools/busybox']['static']}"
    app = await Deployment(
        demo_deployment(image, "docker-registry-pull", name="notebook-app", namespace=ns,
                        grace_seconds=1),
        api=api,
    )  # fmt: skip
    await app.create()

    async def available() -> object:
        await app.refresh()
        if kube.rolled_out(app.raw):
            return True
        pods = await kube.get_all(api, "pods", namespace=ns, label_selector="app=notebook-app")
        return [p.raw.get("status", {}).get("containerStatuses") for p in pods]

    await notebook.wait_for_state(f"Deployment notebook-app to run {image}", available)
    await app.delete()


async def test_way_back_to_the_notebook_keeps_every_image(
    api: kr8s.asyncio.Api, kubeconfig: str, start: Start
) -> None:
    removed = start.invoke("unprovision", kubeconfig=kubeconfig)
    assert removed.returncode == 0, removed.stderr

    await notebook.apply(api, start.old.install)
    ca_file = await notebook.serving(api, start.namespace)

    [claim] = await kube.get_all(api, "persistentvolumeclaims", namespace=start.namespace)
    assert claim.metadata.uid == start.claim_uid
    await asyncio.to_thread(_check_byte_for_byte, start.pushed, ca_file.parent, None)
    async with RegistryClient(f"https://{OVERLAY_IP}:5000", ca_file=ca_file) as client:
        fresh = _one_layer_image(8, 4096)
        await push_image(client, "apps/web", "back-on-the-notebook", fresh)
