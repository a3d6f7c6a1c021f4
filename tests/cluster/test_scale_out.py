"""Three registry replicas on S3 (versitygw) with a shared redis cache, on the local cluster.

Every request of these clients opens a new connection, so the Service spreads the
chunks of one upload over the replicas; the replicas' logs show where each went.
The tests of this module share one registry and build on each other's images.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Pod

from registry_provisioner import failpoints, gc, kube, load_settings, maintenance, render
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, pull_image, push_image, random_image
from registry_provisioner.waiting import diagnose_pods, wait_for
from scripts.benchmarks import skopeo
from scripts.benchmarks.data_plane import Endpoint
from scripts.local_cluster import object_store
from tests.cluster.helpers import Started, fresh_namespace, namespace_gone, object_store_in
from tests.support.chunked_client import ChunkedClient
from tests.support.oci_layout import read_oci_layout
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

STORE_NAMESPACE = "scale-out-store"
NAMESPACE = "scale-out-registry"
REPLICAS = 3
IMAGES = 20
CONCURRENT_CLIENTS = 8
LAYER = 3 * 1024 * 1024
CHUNK = 1024 * 1024
ROLLOUT_TIMEOUT = 300.0
LINE_TIMEOUT = 300.0
# distribution's own line for each request it answered (its access log is off).
_PATCH = re.compile(
    r'http\.request\.method=PATCH [^\n]*?http\.request\.uri="/v2/([^"\s]+?)/blobs/uploads/'
)


@pytest.fixture(scope="module")
async def store(api: kr8s.asyncio.Api) -> AsyncIterator[object_store.Store]:
    """versitygw and redis, in a namespace of their own."""
    async with object_store_in(api, STORE_NAMESPACE) as started:
        yield started


@pytest.fixture(scope="module")
async def scaled(
    api: kr8s.asyncio.Api, module_registries: RegistryFactory, store: object_store.Store
) -> AsyncIterator[Registry]:
    """Three replicas on the store's bucket; the logins' Secrets are the user's own."""
    overrides = {
        "replicas": str(REPLICAS),
        "node_trust.enabled": "false",
        **store.registry_overrides("/scale-out"),
    }
    registry = await module_registries(
        NAMESPACE, provision=False, **{k.replace(".", "__"): v for k, v in overrides.items()}
    )
    namespace = await fresh_namespace(api, NAMESPACE)
    try:
        await kube.apply_manifests(api, object_store.registry_secrets(NAMESPACE, store.logins))
        result = registry.invoke("provision")
        assert result.returncode == 0, result.stderr
        yield registry
        purged = registry.purge()
        assert purged.returncode == 0, purged.stderr
    finally:
        await namespace_gone(namespace)


@pytest.fixture(scope="module")
def pushed() -> dict[str, Image]:
    """What the first test pushed, by repository (tag v1), for the tests after it."""
    return {}


@pytest.fixture(scope="module")
async def password(module_registries: RegistryFactory, scaled: Registry) -> str:
    return await module_registries.password(scaled)


def _client(registry: Registry, password: str, timeout: float = 120) -> ChunkedClient:
    client = ChunkedClient(registry.url, "registry", password, registry.ca_file, timeout=timeout)
    client.reconnect_each_request()
    return client


async def _push_chunked(client: ChunkedClient, repo: str, image: Image) -> None:
    """Push `image`; layers bigger than a chunk go up in PATCH chunks."""
    for digest, data in image.blobs().items():
        if await client.blob_exists(repo, digest):
            continue
        if len(data) > CHUNK:
            await client.push_blob_in_chunks(repo, data, digest, chunk_size=CHUNK)
        else:
            await client.push_blob(repo, data, digest)
    await client.put_manifest(repo, "v1", image.manifest, image.media_type)


async def _registry_pods(api: kr8s.asyncio.Api) -> list[Pod]:
    settings = load_settings(None, {"namespace": NAMESPACE})
    selector = render.component_selector(settings, "registry")
    return await kube.running_pods(api, NAMESPACE, selector)


async def _patches_by_pod(api: kr8s.asyncio.Api) -> dict[str, set[str]]:
    """For each repository, the registry pods that served a PATCH of one of its uploads."""
    served: dict[str, set[str]] = {}
    for pod in await _registry_pods(api):
        log = "\n".join([line async for line in pod.logs(container=maintenance.CONTAINER)])
        for repo in _PATCH.findall(log):
            served.setdefault(repo, set()).add(pod.name)
    return served


def _skopeo_pull(registry: Registry, password: str, repo: str, work: Path) -> Image:
    """The image as skopeo pulls it into an OCI layout (it checks every digest on the way)."""
    endpoint = Endpoint(registry.url, "registry", password, registry.ca_file)
    authfile = skopeo.auth_file(endpoint, work / "auth")
    certs = skopeo.cert_dir(endpoint, work / "certs")
    layout = work / "pulled"
    shutil.rmtree(layout, ignore_errors=True)
    source = f"docker://{registry.host}/{repo}:v1"
    argv = skopeo.copy_argv(source, f"oci:{layout}:v1", authfile=authfile, certs=certs, push=False)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=skopeo.TIMEOUT)
    assert done.returncode == 0, f"skopeo pull of {repo}: {done.stderr}"
    return read_oci_layout(layout, "v1")


async def _rolled_out(api: kr8s.asyncio.Api, what: str) -> None:
    [deployment] = await kube.get_all(api, "deployments", "docker-registry", namespace=NAMESPACE)
    await wait_for(
        f"Deployment {NAMESPACE}/docker-registry to {what}",
        lambda: kube.wait_until(deployment, kube.rolled_out),
        ROLLOUT_TIMEOUT,
        lambda: diagnose_pods(api, NAMESPACE, "app.kubernetes.io/component=registry"),
    )


async def test_concurrent_chunked_pushes_spread_over_replicas_and_pull_whole(
    api: kr8s.asyncio.Api, scaled: Registry, password: str, pushed: dict[str, Image], tmp_path: Path
) -> None:
    images = {f"scale/image-{i:02d}": random_image([LAYER, 64 * 1024]) for i in range(IMAGES)}
    clients = asyncio.Semaphore(CONCURRENT_CLIENTS)

    async def push(repo: str, image: Image) -> None:
        async with clients, _client(scaled, password) as client:
            await _push_chunked(client, repo, image)

    await asyncio.gather(*(push(repo, image) for repo, image in images.items()))
    pushed.update(images)

    # Each upload's chunks went where the Service sent them: to different replicas.
    served = await _patches_by_pod(api)
    pods = {pod.name for pod in await _registry_pods(api)}
    assert len(pods) == REPLICAS, pods
    assert set().union(*served.values()) == pods, f"not every replica took chunks: {served}"
    spread = [repo for repo in images if len(served.get(repo, ())) > 1]
    assert len(spread) >= IMAGES // 2, f"uploads whose chunks met one replica only: {served}"

    async with _client(scaled, password) as client:
        assert sorted(await client.catalog()) == sorted(images)
        for repo, image in images.items():
            assert await pull_image(client, repo, "v1") == image, f"{repo} changed"
    for repo, image in images.items():
        assert await asyncio.to_thread(_skopeo_pull, scaled, password, repo, tmp_path) == image


def _established_on(proc_net_tcp: str, port: int) -> set[str]:
    """Remote ends of the ESTABLISHED connections to local `port`, from /proc/net/tcp{,6}."""
    ends = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and fields[1].endswith(f":{port:04X}"):
            ends.add(fields[2])
    return ends


async def _pod_holding_the_upload(api: kr8s.asyncio.Api, port: int) -> Pod:
    """The replica that holds the one open upload request: the only pod with a client
    connection that stays ESTABLISHED from one look to the next (a probe's does not)."""
    seen: dict[tuple[str, str], Pod] = {}
    looks: list[str] = []

    async def look() -> Pod:
        nonlocal seen
        while True:
            now: dict[tuple[str, str], Pod] = {}
            for pod in await _registry_pods(api):
                done = await pod.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"], container="proxy")
                for end in _established_on(done.stdout.decode(), port):
                    now[(pod.name, end)] = pod
            looks.append(", ".join(sorted(f"{name}<-{end}" for name, end in now)) or "none")
            held = {key: pod for key, pod in now.items() if key in seen}
            if len({name for name, _ in held}) == 1:
                return next(iter(held.values()))
            seen = now

    try:
        return await asyncio.wait_for(look(), LINE_TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            f"no single replica held the open upload within {LINE_TIMEOUT}s; "
            f"connections seen on port {port}: {looks[-5:]}"
        ) from None


async def test_a_replica_killed_mid_push_loses_nothing(
    api: kr8s.asyncio.Api,
    scaled: Registry,
    password: str,
    pushed: dict[str, Image],
) -> None:
    """The replica serving the push dies while the layer is on its way: that push
    attempt fails, a new one goes through, and nothing stored is corrupt."""
    image = random_image([6 * CHUNK, 16 * 1024])
    layer = image.layers[0]
    half_sent, killed = asyncio.Event(), asyncio.Event()
    attempts: list[str] = []
    victims: list[str] = []

    async def layer_pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(layer), CHUNK):
            if start == 2 * CHUNK and not killed.is_set():
                half_sent.set()
                await killed.wait()  # the request stays open until its replica is gone
            yield layer[start : start + CHUNK]

    async def kill_the_replica_holding_it() -> None:
        await asyncio.wait_for(half_sent.wait(), LINE_TIMEOUT)
        port = load_settings(None, {}).container_port
        victim = await _pod_holding_the_upload(api, port)
        victims.append(victim.name)
        # A force delete (grace 0) only removes the object: the containers die later,
        # and the rest of the body could still reach them. With a grace of 1 s the pod
        # is gone only once its containers are dead, and only then does the body resume.
        await victim.delete(grace_period=1)
        await wait_for(
            f"the killed replica {victim.name} to be gone",
            lambda: kube.wait_deleted(victim),
            ROLLOUT_TIMEOUT,
            lambda: diagnose_pods(api, NAMESPACE, "app.kubernetes.io/component=registry"),
        )
        killed.set()

    async def push_until_through() -> None:
        async with _client(scaled, password, timeout=30) as client:
            while True:  # as a user would: push again until it goes through
                try:
                    await client.push_blob_streamed("scale/killed", layer_pieces())
                    await push_image(client, "scale/killed", "v1", image)
                    attempts.append("pushed")
                    return
                except RegistryError as error:
                    attempts.append(f"failed: {error}")
                    assert len(attempts) < 5, f"the push kept failing: {attempts}"

    # Either failing cancels the other: a push never waits on a kill that cannot come.
    async with asyncio.TaskGroup() as both:
        both.create_task(kill_the_replica_holding_it())
        both.create_task(push_until_through())
    print(f"push attempts after killing {victims}: {attempts}")  # shown by pytest -rA
    # The first attempt was cut off by the kill; only a retry put the image there.
    [victim] = victims
    assert attempts[0].startswith("failed: "), f"the kill of {victim} cut nothing: {attempts}"
    assert attempts[-1] == "pushed" and len(attempts) >= 2, attempts
    await _rolled_out(api, f"replace the killed replica {victim}")
    pushed["scale/killed"] = image

    async with _client(scaled, password) as client:
        assert await pull_image(client, "scale/killed", "v1") == image
        repositories, tags = await gc.check_tags(client)
        assert (repositories, tags) == (len(pushed), len(pushed))
        for repo, kept in pushed.items():
            assert await pull_image(client, repo, "v1") == kept, f"{repo} changed"


async def test_rolling_restart_under_a_pull_loop_fails_no_pull(
    api: kr8s.asyncio.Api, scaled: Registry, password: str, pushed: dict[str, Image]
) -> None:
    repos = sorted(pushed)
    pulls: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def pull_loop() -> None:
        async with _client(scaled, password) as client:
            while not stop.is_set():
                repo = repos[len(pulls) % len(repos)]
                try:
                    assert await pull_image(client, repo, "v1") == pushed[repo]
                except (RegistryError, AssertionError) as error:
                    failures.append(f"{repo}: {error}")
                pulls.append(repo)

    [deployment] = await kube.get_all(api, "deployments", "docker-registry", namespace=NAMESPACE)
    before = {pod.name for pod in await _registry_pods(api)}
    loop = asyncio.create_task(pull_loop())
    try:
        started = time.monotonic()
        restarted = {"kubectl.kubernetes.io/restartedAt": f"scale-out-test-{started}"}
        await deployment.patch({"spec": {"template": {"metadata": {"annotations": restarted}}}})
        await _rolled_out(api, "restart all replicas")
    finally:
        stop.set()
        await loop
    after = {pod.name for pod in await _registry_pods(api)}
    assert not before & after, f"pods not replaced: {before & after}"
    assert len(pulls) >= len(repos), f"only {len(pulls)} pulls during the restart"
    assert not failures, f"{len(failures)} of {len(pulls)} pulls failed: {failures[:5]}"


async def test_gc_with_three_replicas_runs_once_while_all_are_read_only(
    api: kr8s.asyncio.Api, scaled: Registry, password: str, pushed: dict[str, Image], tmp_path: Path
) -> None:
    replaced = pushed["scale/image-00"]
    newer = random_image([32 * 1024])
    async with _client(scaled, password) as client:
        await push_image(client, "scale/image-00", "v1", newer)  # untags `replaced`
        gone = replaced.blobs()
        for digest in gone:  # fills every replica's view of the shared cache
            assert await client.blob_exists("scale/image-00", digest)
    pushed["scale/image-00"] = newer

    release = tmp_path / "release-gc"
    os.mkfifo(release, 0o600)
    with scaled.start("gc", env={failpoints.PAUSE_ENV: f"gc-read-only:{release}"}) as run:
        await asyncio.to_thread(_paused, run)
        pods = await _registry_pods(api)
        assert len(pods) == REPLICAS
        assert all(maintenance.pod_is_read_only(pod.raw) for pod in pods), "a writable replica"
        async with _client(scaled, password) as client:
            for attempt in range(2 * REPLICAS):  # new connections: each may meet another pod
                with pytest.raises(RegistryError) as refused:
                    await push_image(client, f"scale/during-{attempt}", "v1", random_image([512]))
                assert refused.value.status == 405, refused.value
        await asyncio.to_thread(release.write_bytes, b"go")
        done = await asyncio.to_thread(run.finish, LINE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "garbage collection done in S3 bucket" in done.stdout, done.stdout
    assert re.search(r"deleted [1-9]\d* unreferenced blobs?", done.stdout), done.stdout
    assert "emptying distribution's cache in redis" in done.stderr
    assert password not in done.stdout + done.stderr

    pods = await _registry_pods(api)
    assert len(pods) == REPLICAS
    assert not any(maintenance.pod_is_read_only(pod.raw) for pod in pods)
    async with _client(scaled, password) as client:
        # The collected blobs are gone on every replica: none answers from a stale cache.
        for _ in range(REPLICAS):
            for digest in gone:
                if digest not in newer.blobs():
                    assert not await client.blob_exists("scale/image-00", digest), digest
        for repo, image in pushed.items():
            assert await pull_image(client, repo, "v1") == image, f"{repo} changed"
        await push_image(client, "scale/after-gc", "v1", random_image([1024]))


def _paused(run: Started) -> str:
    return run.wait_for_line(lambda line: "paused at gc-read-only" in line, LINE_TIMEOUT)


async def test_missing_logins_are_refused_before_anything_changes(
    module_registries: RegistryFactory, store: object_store.Store
) -> None:
    overrides = {**store.registry_overrides("/refused"), "node_trust.enabled": "false"}
    overrides["storage.s3.credentials_secret"] = "no-such-login"
    registry = await module_registries(
        "scale-out-refused",
        provision=False,
        **{k.replace(".", "__"): v for k, v in overrides.items()},
    )
    result = registry.invoke("provision")
    assert result.returncode != 0
    assert "nothing was changed" in result.stderr, result.stderr
    assert "storage.s3.credentials_secret: Secret 'no-such-login'" in result.stderr
    assert "redis.password_secret: Secret 'redis-login'" in result.stderr
