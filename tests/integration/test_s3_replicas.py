"""Two registry processes on one S3 bucket (versitygw) and one redis, on loopback.

They run distribution's config exactly as provision renders it for storage.backend
s3 with a redis cache; only the listen addresses differ from the pods'. The cluster
test (tests/cluster/test_scale_out.py) does the same with three pods behind a Service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from registry_provisioner import bucket, gc, load_settings, render
from registry_provisioner.config import Settings
from registry_provisioner.images import pull_image, push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from scripts.local_cluster import build, components
from scripts.local_cluster.images import BUSYBOX
from scripts.loopback_registry import free_port, registry_binary, start_server, stop

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
BUCKET = "registry-images"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Pair:
    urls: tuple[str, str]
    settings: Settings
    config: Path  # registry A's config.yml
    env: dict[str, str]  # what the pods get from their Secrets


def _listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, f"{what} exited with status {process.returncode}"
            assert time.monotonic() < deadline, f"{what} did not listen within {START_TIMEOUT}s"
            time.sleep(0.05)  # a port has nothing to wait on


def _spawn(stack: ExitStack, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    stack.callback(stop, process)
    return process


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp("s3-pair")
    access, secret, redis_password = "registry", secrets.token_hex(20), secrets.token_hex(20)
    s3_port, redis_port = free_port(), free_port()
    with ExitStack() as stack:
        (work / "buckets" / BUCKET).mkdir(parents=True)
        (work / "meta").mkdir()
        gateway = _spawn(
            stack,
            [
                str(build.build(components.versitygw())),
                "--port",
                f"127.0.0.1:{s3_port}",
                "posix",
                "--sidecar",
                str(work / "meta"),
                str(work / "buckets"),
            ],
            {"ROOT_ACCESS_KEY_ID": access, "ROOT_SECRET_ACCESS_KEY": secret},
            work / "versitygw.log",
        )
        conf = work / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(
            f'port {redis_port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {work}\n'
            f"requirepass {redis_password}\n"
        )
        cache = _spawn(stack, [str(REDIS_SERVER), str(conf)], {}, work / "redis.log")
        _listening(s3_port, gateway, "versitygw")
        _listening(redis_port, cache, "redis-server")

        settings = load_settings(
            None,
            {
                "replicas": 2,
                "storage.backend": "s3",
                "storage.s3.endpoint": f"http://127.0.0.1:{s3_port}",
                "storage.s3.secure": False,
                "storage.s3.bucket": BUCKET,
                "storage.s3.credentials_secret": "s3-login",
                "storage.s3.root_directory": "/loopback",
                "redis.address": f"127.0.0.1:{redis_port}",
                "redis.password_secret": "redis-login",
            },
        )
        [config_map] = [
            o
            for o in render.render_manifests(settings, None)
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == settings.registry_config_name
        ]
        rendered = yaml.safe_load(config_map["data"]["config.yml"])
        env = {
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "REGISTRY_REDIS_PASSWORD": redis_password,
            "REGISTRY_HTTP_SECRET": secrets.token_hex(16),  # shared, as the pods share it
            "OTEL_TRACES_EXPORTER": "none",
            "PATH": os.environ["PATH"],
        }
        urls, configs = [], []
        for name in ("a", "b"):
            config = work / f"{name}.yml"

            def prepare(ports: tuple[int, ...], config: Path = config) -> tuple[list[str], str]:
                rendered["http"]["addr"] = f"127.0.0.1:{ports[0]}"
                rendered["http"]["debug"]["addr"] = f"127.0.0.1:{ports[1]}"
                config.write_text(yaml.safe_dump(rendered))
                return [
                    str(registry_binary()),
                    "serve",
                    str(config),
                ], f"http://127.0.0.1:{ports[0]}"

            process, _, url = start_server(prepare, 2, work, env, work / f"{name}.log", name)
            stack.callback(stop, process)
            urls.append(url)
            configs.append(config)
        yield Pair((urls[0], urls[1]), settings, configs[0], env)


@pytest.mark.parametrize(
    "chunks",
    [(5, 5, 2), (1, 1, 1, 6)],
    ids=["parts of S3's minimum", "parts below S3's minimum"],
)
def test_an_upload_continues_on_the_other_replica(pair: Pair, chunks: tuple[int, ...]) -> None:
    """Each chunk (in MiB) goes to the other replica than the last; small parts are
    ones the s3 driver has to merge when the next replica resumes the upload."""
    data = os.urandom(sum(chunks) * 1024 * 1024 + 5)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo = f"app/cross-{len(chunks)}"
    a, b = pair.urls
    bounds = [0]
    for size in chunks:
        bounds.append(bounds[-1] + size * 1024 * 1024)
    bounds[-1] = len(data)
    with httpx.Client(timeout=60) as http:
        started = http.post(f"{a}/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        for turn, (start, end) in enumerate(itertools.pairwise(bounds)):
            base = (b, a)[turn % 2]
            response = http.patch(
                base + httpx.URL(location).raw_path.decode(),
                content=data[start:end],
                headers={"Content-Range": f"{start}-{end - 1}"},
            )
            assert response.status_code == 202, response.text
            location = response.headers["location"]
        done = http.put(f"{a}{httpx.URL(location).raw_path.decode()}&digest={digest}")
        assert done.status_code == 201, done.text
        for base in pair.urls:
            assert http.get(f"{base}/v2/{repo}/blobs/{digest}").content == data


async def test_gc_then_forgetting_the_cache_leaves_no_replica_a_stale_blob(pair: Pair) -> None:
    replaced, current = random_image([300_000]), random_image([200_000])
    a, b = pair.urls
    async with RegistryClient(a) as first, RegistryClient(b) as second:
        await push_image(first, "app/gc", "v1", replaced)
        await push_image(second, "app/gc", "v1", current)  # untags `replaced`
        for digest in replaced.blobs():  # both replicas have looked them up
            assert await first.blob_exists("app/gc", digest)
            assert await second.blob_exists("app/gc", digest)

        argv = [str(registry_binary()), *gc.garbage_collect_argv(False)[1:-1], str(pair.config)]
        swept = await asyncio.to_thread(_run, argv, pair.env)
        assert swept.returncode == 0, swept.stderr
        outcome = gc.parse_gc_output(swept.stdout)
        # The replaced image's manifest, config and layer (and any blob no manifest took).
        assert {replaced.digest, *replaced.blobs()} <= set(outcome.eligible_blobs)
        assert outcome.manifests_eligible == 1
        # What distribution's gc leaves: the cache still vouches for the deleted blobs.
        assert all([await second.blob_exists("app/gc", d) for d in replaced.blobs()])

        forget = gc.forget_cache_argv(pair.settings)
        cleared = await asyncio.to_thread(_run, [str(BUSYBOX), *forget], pair.env)
        assert gc.parse_forget_reply(cleared.stdout) > 0
        for client in (first, second):
            for digest in replaced.blobs():
                assert not await client.blob_exists("app/gc", digest), digest
            assert await pull_image(client, "app/gc", "v1") == current
        _, tags = await gc.check_tags(first)  # every tag resolves to blobs that all exist
        assert tags == 1


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_preflight_finds_the_bucket_writable(pair: Pair) -> None:
    login = bucket.Login(pair.env["AWS_ACCESS_KEY_ID"], pair.env["AWS_SECRET_ACCESS_KEY"])
    assert await bucket.bucket_problems(pair.settings.storage.s3, login) == []


async def test_preflight_names_a_missing_bucket_and_refused_credentials(pair: Pair) -> None:
    s3 = pair.settings.storage.s3
    login = bucket.Login(pair.env["AWS_ACCESS_KEY_ID"], pair.env["AWS_SECRET_ACCESS_KEY"])
    [missing] = await bucket.bucket_problems(dataclasses.replace(s3, bucket="absent"), login)
    assert missing.startswith("storage.s3.bucket: bucket 'absent' does not exist"), missing
    wrong = bucket.Login(login.access_key_id, "not-the-secret")
    [refused] = await bucket.bucket_problems(s3, wrong)
    assert refused.startswith("storage.s3.credentials_secret:"), refused
    assert "not-the-secret" not in refused


async def test_preflight_skips_an_endpoint_it_cannot_reach() -> None:
    s3 = load_settings(
        None,
        {
            "storage.backend": "s3",
            "storage.s3.endpoint": f"http://127.0.0.1:{free_port()}",
            "storage.s3.secure": False,
            "storage.s3.bucket": BUCKET,
            "storage.s3.credentials_secret": "s3-login",
        },
    ).storage.s3
    assert await bucket.bucket_problems(s3, bucket.Login("a", "b")) is None


async def test_purge_empties_only_what_the_registry_wrote(pair: Pair) -> None:
    """Last in this module: it deletes every image the tests above pushed."""
    s3 = pair.settings.storage.s3
    login = bucket.Login(pair.env["AWS_ACCESS_KEY_ID"], pair.env["AWS_SECRET_ACCESS_KEY"])
    base = f"{s3.endpoint}/{s3.bucket}"
    foreign = f"{base}/someone-else/keep.txt"

    async def send(method: str, url: str, body: bytes = b"") -> int:
        headers = bucket.signed_headers(
            method, url, s3.region, login, body, dt.datetime.now(dt.UTC)
        )
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.request(method, url, content=body, headers=headers)).status_code

    assert await send("PUT", foreign, b"not the registry's") == 200
    async with RegistryClient(pair.urls[0]) as client:
        assert await client.catalog()
        deleted = await bucket.empty_prefix(s3, login)
        assert deleted is not None and deleted > 0
        assert await client.catalog() == []
    assert await send("HEAD", foreign) == 200
    assert await send("HEAD", base) == 200  # the bucket itself stays
    assert await bucket.empty_prefix(s3, login) == 0
