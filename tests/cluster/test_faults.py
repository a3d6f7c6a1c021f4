"""Faults during uploads and provisioning lose no data, and a re-run completes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Deployment

from registry_provisioner import kube
from registry_provisioner.errors import RegistryError
from registry_provisioner.references import sha256_digest
from scripts.local_cluster import cluster as local_cluster
from tests.cluster.helpers import REPO, until_answers
from tests.support.chunked_client import ChunkedClient
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

NAMESPACE = "fault-registry"
CHUNK = 8 * 1024 * 1024


@pytest.fixture
async def fresh(registries: RegistryFactory) -> Registry:
    """A purged namespace and an address; each test provisions (or tries to) itself."""
    return await registries(NAMESPACE, provision=False, shared=True)


async def _restart_registry(api: kr8s.asyncio.Api) -> None:
    selector = "app.kubernetes.io/component=registry"
    [pod] = await kube.get_all(api, "pods", namespace=NAMESPACE, label_selector=selector)
    await pod.delete(grace_period=1)
    await asyncio.wait_for(kube.wait_deleted(pod), 120)
    deployment = await Deployment.get("docker-registry", namespace=NAMESPACE, api=api)
    await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 180)


async def test_pod_killed_mid_upload_then_retry_succeeds(
    api: kr8s.asyncio.Api, registries: RegistryFactory, fresh: Registry
) -> None:
    assert fresh.invoke("provision").returncode == 0
    ca_file, password = fresh.ca_file, await registries.password(fresh)
    blob = os.urandom(12 * CHUNK)
    two_chunks_sent, pod_replaced = asyncio.Event(), asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(0, len(blob), CHUNK):
            if index == 2 * CHUNK:
                two_chunks_sent.set()
                await pod_replaced.wait()  # the rest goes only once the pod is gone
            yield blob[index : index + CHUNK]

    digest = sha256_digest(blob)
    async with ChunkedClient(fresh.url, "registry", password, ca_file) as client:
        upload = asyncio.create_task(client.push_blob_in_chunks("faults/big", chunks()))
        await asyncio.wait_for(two_chunks_sent.wait(), 120)
        await _restart_registry(api)
        pod_replaced.set()
        # Upload state lives on the shared volume, signed with the shared http secret,
        # so the new pod may even resume the upload; or the upload fails.
        try:
            completed = await upload == digest
        except RegistryError:
            completed = False

    async with ChunkedClient(fresh.url, "registry", password, ca_file) as client:
        await asyncio.wait_for(until_answers(client), 60)
        # Nothing partial is stored: the digest is absent, or served whole and matching.
        # (get_blob fails on content that does not hash to the digest.)
        stored = await client.blob_exists("faults/big", digest)
        assert stored or not completed, "the upload was acknowledged, yet the blob is missing"
        if stored:
            assert await client.get_blob("faults/big", digest) == blob
        else:
            with pytest.raises(RegistryError) as absent:
                await client.get_blob("faults/big", digest)
            assert absent.value.status == 404
        # Whichever it was, the retry completes and the blob verifies by digest.
        assert await client.push_blob_in_chunks("faults/big", blob, chunk_size=CHUNK) == digest
        assert await client.get_blob("faults/big", digest) == blob


def provision_until_waiting(registry: Registry) -> subprocess.Popen[str]:
    """Start `invoke provision` and return once it has applied and is waiting on readiness."""
    command = [sys.executable, "-m", "invoke", "provision", "--local", "--kubeconfig"]
    command += [registry.kubeconfig, *registry.set_args, "--ca-dir", str(registry.ca_dir)]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        if line.startswith("==> waiting for"):
            return process
        seen.append(line)
    process.wait()
    raise AssertionError("provision ended before it waited on anything:\n" + "".join(seen))


def test_api_server_stopped_during_provision(cluster, fresh: Registry) -> None:
    if not isinstance(cluster, local_cluster.LocalCluster):
        pytest.skip("stops the API server, which only the local cluster lets a test do")
    process = provision_until_waiting(fresh)
    assert process.stderr is not None
    local_cluster.stop_apiserver()
    try:
        rest = process.stderr.read()
        assert process.wait(timeout=300) != 0
        assert "Traceback" not in rest, rest
        assert "error: lost the Kubernetes API server" in rest, rest
        assert "run the same command again" in rest, rest
    finally:
        local_cluster.start_apiserver()
    rerun = fresh.invoke("provision")
    assert rerun.returncode == 0, rerun.stderr
