"""The cluster pull: N pods at once, each pulling its own fresh image through the node.

Each image is runnable (the pause binary as its entrypoint) and has 10 layers:
pause, then random ones, so every layer is new to the node and the pull really
moves bytes. The images are pushed untimed; then N pods are created at once
with the pull Secret and the clock runs until every one is Running. The node's
containerd pulls them through the LoadBalancer IP, trusting the registry via
node trust, as an application's pods would.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import kr8s.asyncio
from kr8s.asyncio.objects import Pod

from registry_provisioner import kube
from registry_provisioner.config import Settings
from registry_provisioner.images import Image, push_image
from registry_provisioner.oci_client import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from registry_provisioner.references import sha256_digest

from .children import BenchError
from .data_plane import Endpoint

PODS = 10
LAYERS = 10
LAYER_BYTES = 1024 * 1024
TIMEOUT = 300.0
LABEL = "registry-bench/cluster-pull"
# Image pulls that will not heal by waiting: the bench stops and says why.
_FAILED = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError"}
# kubelet waits one second for its cache of a pull Secret to sync, then pulls without it
# ("Unable to retrieve pull secret"); the registry answers 401 and kubelet tries again,
# with the Secret, after its back-off. On a busy node that happens: a retry, not a failure.
_RETRIED_BY_KUBELET = "401 Unauthorized"


def _layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, str]:
    """A gzip'd tar of `files` (name -> (content, mode)), and its tar's digest (diff_id)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = buffer.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), sha256_digest(tar_bytes)


def runnable_image(pause: bytes, layers: int = LAYERS, layer_bytes: int = LAYER_BYTES) -> Image:
    """A linux/amd64 image of `layers` layers whose entrypoint is /pause, run as nobody.

    No layer is shared with another image, the first (pause's) included: containerd
    skips fetching a layer it holds for any image, and keeps it while any image uses it.
    """
    made = [_layer({"pause": (pause, 0o755), "image-id": (os.urandom(16), 0o644)})]
    made += [_layer({f"data/{i}.bin": (os.urandom(layer_bytes), 0o644)}) for i in range(layers - 1)]

    def compact(document: dict[str, Any]) -> bytes:
        return json.dumps(document, separators=(",", ":")).encode()

    config = compact(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65534:65534"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in made]},
        }
    )

    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}

    manifest = compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER_GZIP, layer) for layer, _ in made],
        }
    )
    return Image(manifest=manifest, config=config, layers=tuple(layer for layer, _ in made))


def pod_manifest(name: str, namespace: str, image: str, pull_secret: str) -> dict[str, Any]:
    """A pod that pulls `image` with the pull Secret and meets Pod Security `restricted`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "spec": {
            "imagePullSecrets": [{"name": pull_secret}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "pause",
                    "image": image,
                    "imagePullPolicy": "Always",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _failed_pulls(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(pod name, `reason: message`) for each container waiting on a failed pull."""
    failed = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _FAILED:
                failed.append(
                    (pod["metadata"]["name"], f"{waiting['reason']}: {waiting.get('message', '')}")
                )
    return failed


def pull_failures(pods: list[dict[str, Any]]) -> list[str]:
    """`name: reason: message` for each pod stuck on a pull that kubelet will not retry."""
    return [f"{n}: {why}" for n, why in _failed_pulls(pods) if _RETRIED_BY_KUBELET not in why]


def retried_pulls(pods: list[dict[str, Any]]) -> set[str]:
    """Pods whose pull went out without the Secret (401) and that kubelet pulls again."""
    return {n for n, why in _failed_pulls(pods) if _RETRIED_BY_KUBELET in why}


def pause_binary() -> bytes:
    from scripts.local_cluster import build, components

    return Path(build.build(components.pause())).read_bytes()


async def measure(
    api: kr8s.asyncio.Api, settings: Settings, endpoint: Endpoint, images: list[Image]
) -> tuple[float, set[str]]:
    """Seconds from creating len(images) pods at once until every one is Running, and the
    pods kubelet had to pull again after an anonymous first try."""
    ns, tag = settings.namespace, "v1"
    references = []
    async with endpoint.client() as client:
        for index, image in enumerate(images):
            repo = f"bench/pull-{index}-{time.time_ns() % 10**9}"
            await push_image(client, repo, tag, image)
            references.append(f"{settings.registry_host}/{repo}:{tag}")
    manifests = [
        pod_manifest(f"bench-pull-{i}", ns, ref, settings.pull_secret.name)
        for i, ref in enumerate(references)
    ]
    started = time.monotonic()
    pods = [await Pod(m, api=api) for m in manifests]
    await asyncio.gather(*(pod.create() for pod in pods))
    retried: set[str] = set()
    try:
        while True:
            found = await kube.get_all(api, "pods", namespace=ns, label_selector=LABEL)
            raws = [pod.raw for pod in found]
            retried |= retried_pulls(raws)
            if len(raws) == len(manifests) and all(
                raw.get("status", {}).get("phase") == "Running" for raw in raws
            ):
                return time.monotonic() - started, retried
            failures = pull_failures(raws)
            if failures:
                raise BenchError("cluster pull failed:\n" + "\n".join(failures))
            if time.monotonic() - started > TIMEOUT:
                raise BenchError(f"not every pod Running after {TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await asyncio.gather(*(pod.delete(grace_period=0) for pod in pods), return_exceptions=True)
