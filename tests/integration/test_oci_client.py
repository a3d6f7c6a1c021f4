"""The OCI client and smoke test against the real registry binary on loopback.

skopeo is the independent client: what ours pushes it must read, and what it
pushes ours must read, so the two cannot agree on a private misreading of the spec.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from registry_provisioner.errors import RegistryError
from registry_provisioner.images import pull_image, push_image, random_image
from registry_provisioner.oci_client import OCI_MANIFEST, RegistryClient
from registry_provisioner.references import sha256_digest
from registry_provisioner.smoke import PHASES, format_report, smoke_test
from scripts.loopback_registry import RunningRegistry, free_port, run_registry, write_tls_files
from tests.support.chunked_client import ChunkedClient
from tests.support.oci_layout import read_oci_layout, write_oci_layout

pytestmark = pytest.mark.timeout(120, func_only=True)

MiB = 1024 * 1024
SKOPEO_TIMEOUT = 60.0


# -- skopeo, with the CA and an auth file; TLS verification stays on --


@dataclass(frozen=True)
class Skopeo:
    path: str
    cert_dir: Path
    authfile: Path
    policy: Path
    registries_conf: Path

    async def run(self, *args: str) -> str:
        # An empty registries.conf keeps the host's mirrors and search lists out of it.
        env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf)}
        process = await asyncio.create_subprocess_exec(
            self.path,
            "--policy",
            str(self.policy),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            async with asyncio.timeout(SKOPEO_TIMEOUT):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode == 0, f"skopeo {args[0]} failed: {err.decode()}"
        return out.decode()

    def src(self) -> list[str]:
        return [
            f"--src-cert-dir={self.cert_dir}",
            f"--src-authfile={self.authfile}",
            "--src-tls-verify=true",
        ]

    def dest(self) -> list[str]:
        return [
            f"--dest-cert-dir={self.cert_dir}",
            f"--dest-authfile={self.authfile}",
            "--dest-tls-verify=true",
        ]


@pytest.fixture
def skopeo(skopeo_path: str, registry_on_loopback: RunningRegistry, tmp_path: Path) -> Skopeo:
    reg = registry_on_loopback
    assert reg.ca_path is not None and reg.password is not None
    # An auth file rather than --creds keeps the password off the command line.
    token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.touch(mode=0o600)
    authfile.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text("")
    return Skopeo(skopeo_path, reg.ca_path.parent, authfile, policy, registries_conf)


# -- round trips --


async def test_ping(registry_client: RegistryClient) -> None:
    await registry_client.ping()


async def test_push_pull_round_trip(registry_client: RegistryClient, unique_repo: str) -> None:
    image = random_image([1024, 200 * 1024, 0])
    digest = await push_image(registry_client, unique_repo, "v1", image)
    assert digest == image.digest

    assert await pull_image(registry_client, unique_repo, "v1") == image
    assert await pull_image(registry_client, unique_repo, digest) == image
    manifest = await registry_client.get_manifest(unique_repo, "v1")
    assert manifest == (image.manifest, OCI_MANIFEST, digest)
    assert await registry_client.list_tags(unique_repo) == ["v1"]
    assert unique_repo in await registry_client.catalog()
    # A second push finds every blob present and only writes the new tag.
    await push_image(registry_client, unique_repo, "v2", image)
    assert sorted(await registry_client.list_tags(unique_repo)) == ["v1", "v2"]


async def test_skopeo_reads_what_we_push(
    registry_client: RegistryClient,
    registry_on_loopback: RunningRegistry,
    skopeo: Skopeo,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = random_image([4096, 64 * 1024])
    await push_image(registry_client, unique_repo, "ours", image)
    reference = f"docker://{registry_on_loopback.host}/{unique_repo}:ours"
    access = [
        f"--cert-dir={skopeo.cert_dir}",
        f"--authfile={skopeo.authfile}",
        "--tls-verify=true",
    ]

    raw = await skopeo.run("inspect", "--raw", *access, reference)
    assert raw.encode() == image.manifest
    info = json.loads(await skopeo.run("inspect", *access, reference))
    assert (info["Digest"], info["Os"], info["Architecture"]) == (image.digest, "linux", "amd64")
    assert info["Layers"] == [layer["digest"] for layer in image.manifest_json["layers"]]

    layout = tmp_path / "layout"
    await skopeo.run("copy", "--quiet", *skopeo.src(), reference, f"oci:{layout}:copied")
    assert read_oci_layout(layout, "copied") == image


async def test_we_read_what_skopeo_pushes(
    registry_client: RegistryClient,
    registry_on_loopback: RunningRegistry,
    skopeo: Skopeo,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = random_image([8192, 32 * 1024])
    layout = tmp_path / "layout"
    write_oci_layout(image, layout, "theirs")
    reference = f"docker://{registry_on_loopback.host}/{unique_repo}:theirs"
    await skopeo.run(
        "copy", "--quiet", "--preserve-digests", *skopeo.dest(), f"oci:{layout}:theirs", reference
    )

    assert await pull_image(registry_client, unique_repo, "theirs") == image
    assert await registry_client.list_tags(unique_repo) == ["theirs"]


async def test_delete_manifest_then_get_is_404(
    registry_client: RegistryClient, unique_repo: str
) -> None:
    image = random_image([1024])
    digest = await push_image(registry_client, unique_repo, "doomed", image)
    await registry_client.delete_manifest(unique_repo, digest)

    for ref in (digest, "doomed"):
        with pytest.raises(RegistryError) as caught:
            await registry_client.get_manifest(unique_repo, ref)
        assert caught.value.status == 404
    assert "doomed" not in await registry_client.list_tags(unique_repo)


async def test_large_blob_goes_up_in_chunks(
    chunked_client: ChunkedClient, registry_on_loopback: RunningRegistry, unique_repo: str
) -> None:
    data = os.urandom(64 * MiB)
    digest = await chunked_client.push_blob_in_chunks(unique_repo, data, chunk_size=16 * MiB)
    assert digest == sha256_digest(data)
    assert await chunked_client.blob_exists(unique_repo, digest)

    hasher, size = hashlib.sha256(), 0
    async for chunk in chunked_client.stream_blob(unique_repo, digest):
        hasher.update(chunk)
        size += len(chunk)
    assert (size, f"sha256:{hasher.hexdigest()}") == (len(data), digest)
    # The access log shows the upload really was split.
    log = registry_on_loopback.log_path.read_text()
    assert log.count(f'"PATCH /v2/{unique_repo}/blobs/uploads/') == 4


async def test_async_iterable_upload_is_rechunked(
    chunked_client: ChunkedClient, unique_repo: str
) -> None:
    data = os.urandom(3 * MiB + 123)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    digest = await chunked_client.push_blob_in_chunks(
        unique_repo, pieces(), sha256_digest(data), chunk_size=MiB
    )
    assert await chunked_client.get_blob(unique_repo, digest) == data


async def test_mismatched_digest_is_refused_before_upload(
    registry_client: RegistryClient, unique_repo: str
) -> None:
    with pytest.raises(ValueError, match="does not match"):
        await registry_client.push_blob(unique_repo, b"abc", sha256_digest(b"abd"))


async def test_corrupt_blob_is_detected(
    chunked_client: ChunkedClient, registry_on_loopback: RunningRegistry, unique_repo: str
) -> None:
    data = os.urandom(4096)
    digest = await chunked_client.push_blob(unique_repo, data)
    hex_digest = digest.removeprefix("sha256:")
    stored = (
        registry_on_loopback.storage_dir
        / f"docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"
    )
    stored.write_bytes(os.urandom(len(data)))

    with pytest.raises(RegistryError, match="expected " + digest):
        await chunked_client.get_blob(unique_repo, digest)
    with pytest.raises(RegistryError, match="expected " + digest):
        async for _ in chunked_client.stream_blob(unique_repo, digest):
            pass


# -- failures carry a status and a hint --


async def test_anonymous_request_is_401(registry_on_loopback: RunningRegistry) -> None:
    reg = registry_on_loopback
    async with RegistryClient(reg.url, None, None, reg.ca_path) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status == 401
    assert "requires credentials" in caught.value.hint


async def test_wrong_password_is_401_and_not_echoed(
    registry_on_loopback: RunningRegistry,
) -> None:
    reg = registry_on_loopback
    wrong = "not-the-password-" + os.urandom(6).hex()
    async with RegistryClient(reg.url, reg.username, wrong, reg.ca_path) as client:
        assert wrong not in repr(client)
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status == 401
    assert caught.value.hint == "wrong credentials"
    assert wrong not in str(caught.value)
    assert reg.password is not None and reg.password not in repr(reg)


@pytest.mark.parametrize("ca", ["other CA", "system trust store"])
async def test_wrong_ca_is_a_tls_error(
    registry_on_loopback: RunningRegistry, tmp_path: Path, ca: str
) -> None:
    reg = registry_on_loopback
    ca_file = write_tls_files(tmp_path)[0] if ca == "other CA" else None
    async with RegistryClient(reg.url, reg.username, reg.password, ca_file) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status is None
    assert "the CA does not match" in caught.value.hint


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (dt.timedelta(days=-2), "has expired"),  # valid for one day, two days ago
        (dt.timedelta(days=2), "not valid yet"),  # a clock behind the issuer's
    ],
    ids=["expired", "not-yet-valid"],
)
async def test_certificate_outside_its_validity_is_named(
    tmp_path: Path, registry_binary_path: Path, shift: dt.timedelta, expected: str
) -> None:
    not_before = dt.datetime.now(dt.UTC) + shift
    with run_registry(
        tmp_path, binary=registry_binary_path, cert_not_before=not_before, cert_days=1
    ) as reg:
        async with RegistryClient(reg.url, reg.username, reg.password, reg.ca_path) as client:
            with pytest.raises(RegistryError) as caught:
                await client.ping()
    assert caught.value.status is None
    assert expected in caught.value.hint
    assert "CA does not match" not in caught.value.hint


async def test_plain_http_to_tls_port(registry_on_loopback: RunningRegistry) -> None:
    reg = registry_on_loopback
    async with RegistryClient(f"http://{reg.host}", None, None, None) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status == 400
    assert "https://" in caught.value.hint


async def test_tls_to_plain_http_port(plain_registry_on_loopback: RunningRegistry) -> None:
    reg = plain_registry_on_loopback
    async with RegistryClient(f"https://{reg.host}", None, None, None) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status is None
    assert "plain HTTP" in caught.value.hint


async def test_connection_refused() -> None:
    async with RegistryClient(f"https://127.0.0.1:{free_port()}", "u", "p", None) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status is None
    assert "is the IP reachable" in caught.value.hint


async def test_invalid_names_never_reach_the_url(registry_client: RegistryClient) -> None:
    with pytest.raises(ValueError):
        await registry_client.list_tags("../v2/_catalog")
    with pytest.raises(ValueError):
        await registry_client.get_manifest("ok", "../../x")


# -- the smoke test --


async def test_smoke_test_passes_and_reports_timings(
    registry_on_loopback: RunningRegistry,
) -> None:
    reg = registry_on_loopback
    report = await smoke_test(reg.url, reg.username, reg.password, reg.ca_path)

    assert set(report.timings) == set(PHASES)
    assert all(seconds > 0 for seconds in report.timings.values())
    assert report.repository.startswith("smoke-test/")
    assert report.pulled_bytes == 2 * report.pushed_bytes
    text = format_report(report)
    assert "passed" in text and report.digest in text
    assert reg.password is not None and reg.password not in text


async def test_smoke_test_with_wrong_password_fails_at_ping(
    registry_on_loopback: RunningRegistry,
) -> None:
    reg = registry_on_loopback
    with pytest.raises(RegistryError) as caught:
        await smoke_test(reg.url, reg.username, "wrong", reg.ca_path)
    assert (caught.value.status, caught.value.hint) == (401, "wrong credentials")


async def test_debug_port_serves_prometheus_metrics(
    registry_on_loopback: RunningRegistry,
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(registry_on_loopback.debug_url + "/metrics")
    assert response.status_code == 200
    assert "registry_" in response.text
