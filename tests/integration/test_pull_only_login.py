"""The pull-only login, prototyped: Caddy in front of distribution, both real binaries.

The admin may push, pull and delete; the pull login may only GET and HEAD under
/v2/, and anything else it asks gets distribution's own 403 DENIED. Our client
and skopeo (an independent one) both see it so. docs/pull-only-login.md has the
design this prototypes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, pull_image, push_image, random_image
from registry_provisioner.oci_client import MANIFEST_MEDIA_TYPES, RegistryClient
from scripts.loopback_proxy import (
    Login,
    RunningProxy,
    run_proxied_registry,
    write_secret,
)
from tests.support.oci_layout import read_oci_layout, write_oci_layout

pytestmark = pytest.mark.timeout(120, func_only=True)

SKOPEO_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, registry_binary_path: Path, caddy_binary_path: Path
) -> Iterator[RunningProxy]:
    """distribution on 127.0.0.1 behind Caddy, with the product's bcrypt cost."""
    with run_proxied_registry(
        tmp_path_factory.mktemp("proxied"),
        registry_binary=registry_binary_path,
        proxy_binary=caddy_binary_path,
        access_log=True,
    ) as running:
        yield running


def client_for(proxied: RunningProxy, login: Login) -> RegistryClient:
    return RegistryClient(proxied.url, login.username, login.password, proxied.ca_path)


@pytest.fixture
async def admin(proxied: RunningProxy) -> AsyncIterator[RegistryClient]:
    async with client_for(proxied, proxied.admin) as client:
        yield client


@pytest.fixture
async def puller(proxied: RunningProxy) -> AsyncIterator[RegistryClient]:
    async with client_for(proxied, proxied.puller) as client:
        yield client


@pytest.fixture
async def pushed(admin: RegistryClient, unique_repo: str) -> tuple[str, Image]:
    """An image the admin pushed as <unique_repo>:v1."""
    image = random_image([2048, 64 * 1024])
    await push_image(admin, unique_repo, "v1", image)
    return unique_repo, image


def raw_client(proxied: RunningProxy, login: Login | None) -> httpx.AsyncClient:
    """Plain httpx, for the requests the product's client has no method for."""
    auth = httpx.BasicAuth(login.username, login.password) if login else None
    verify = ssl.create_default_context(cafile=proxied.ca_path)
    return httpx.AsyncClient(base_url=proxied.url, auth=auth, verify=verify)


# -- the admin: everything --


async def test_admin_pushes_pulls_lists_and_deletes(
    admin: RegistryClient, unique_repo: str
) -> None:
    image = random_image([1024, 32 * 1024])
    digest = await push_image(admin, unique_repo, "v1", image)

    assert await pull_image(admin, unique_repo, "v1") == image
    assert await admin.list_tags(unique_repo) == ["v1"]
    assert unique_repo in await admin.catalog()
    assert await admin.accepts_pushes(unique_repo)
    await admin.delete_manifest(unique_repo, digest)
    with pytest.raises(RegistryError) as caught:
        await admin.get_manifest(unique_repo, digest)
    assert caught.value.status == 404


async def test_upload_locations_name_the_proxy(proxied: RunningProxy, unique_repo: str) -> None:
    """distribution builds them from the forwarded host and scheme: never its own port."""
    async with raw_client(proxied, proxied.admin) as http:
        started = await http.post(f"/v2/{unique_repo}/blobs/uploads/")
        await http.delete(started.headers["location"])
    assert started.status_code == 202
    assert started.headers["location"].startswith(f"{proxied.url}/v2/{unique_repo}/blobs/uploads/")


# -- the pull login: GET and HEAD only --


async def test_pull_login_pulls_heads_and_lists(
    puller: RegistryClient, proxied: RunningProxy, pushed: tuple[str, Image]
) -> None:
    repo, image = pushed
    await puller.ping()
    assert await pull_image(puller, repo, "v1") == image
    assert await pull_image(puller, repo, image.digest) == image
    for digest in image.blobs():
        assert await puller.blob_exists(repo, digest)
    assert await puller.list_tags(repo) == ["v1"]
    assert repo in await puller.catalog()
    # A HEAD on the manifest is what kubelet (containerd) asks first.
    async with raw_client(proxied, proxied.puller) as http:
        head = await http.head(
            f"/v2/{repo}/manifests/v1", headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        )
    assert head.status_code == 200
    assert head.headers["docker-content-digest"] == image.digest


async def test_pull_login_cannot_push(puller: RegistryClient, pushed: tuple[str, Image]) -> None:
    repo, _ = pushed
    other = random_image([1024])
    with pytest.raises(RegistryError) as caught:
        await puller.push_blob(repo, other.layers[0])
    assert caught.value.status == 403
    assert "DENIED" in str(caught.value)
    assert "authorization" in caught.value.hint
    # Overwriting the tag a workload pulls is the attack a pull-only login prevents.
    with pytest.raises(RegistryError) as caught:
        await puller.put_manifest(repo, "v1", other.manifest)
    assert caught.value.status == 403
    with pytest.raises(RegistryError) as caught:
        await puller.accepts_pushes(repo)
    assert caught.value.status == 403


async def test_pull_login_cannot_delete(
    puller: RegistryClient, admin: RegistryClient, pushed: tuple[str, Image]
) -> None:
    repo, image = pushed
    with pytest.raises(RegistryError) as caught:
        await puller.delete_manifest(repo, image.digest)
    assert caught.value.status == 403
    # The admin still sees the image whole, under the same tag.
    assert await pull_image(admin, repo, "v1") == image


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/{repo}/blobs/uploads/"),
        ("PATCH", "{upload}"),
        ("PUT", "{upload}"),
        ("DELETE", "{upload}"),
        ("PUT", "/v2/{repo}/manifests/v1"),
        ("DELETE", "/v2/{repo}/manifests/{digest}"),
        ("DELETE", "/v2/{repo}/blobs/{layer}"),
        ("OPTIONS", "/v2/"),
    ],
)
async def test_pull_login_is_denied_every_write(
    proxied: RunningProxy, pushed: tuple[str, Image], method: str, path: str
) -> None:
    """Every method but GET and HEAD, on an upload the admin has open too."""
    repo, image = pushed
    async with raw_client(proxied, proxied.admin) as http:
        started = await http.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202
    target = path.format(
        repo=repo,
        upload=httpx.URL(started.headers["location"]).raw_path.decode(),
        digest=image.digest,
        layer=image.manifest_json["layers"][0]["digest"],
    )
    async with raw_client(proxied, proxied.puller) as http:
        response = await http.request(method, target, content=b"x")
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "DENIED"
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


# -- logins that fail --


@pytest.mark.parametrize("who", ["admin", "puller", "nobody"])
async def test_wrong_password_is_401(proxied: RunningProxy, who: str) -> None:
    wrong = "not-the-password-" + os.urandom(6).hex()
    async with RegistryClient(proxied.url, who, wrong, proxied.ca_path) as client:
        with pytest.raises(RegistryError) as caught:
            await client.ping()
    assert caught.value.status == 401
    assert caught.value.hint == "wrong credentials"
    assert wrong not in str(caught.value)


async def test_no_credentials_get_distributions_challenge(proxied: RunningProxy) -> None:
    async with raw_client(proxied, None) as http:
        response = await http.get("/v2/")
        root = await http.get("/")
        elsewhere = await http.get("/debug/pprof/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # "/" stays open for the pod's probes; nothing else outside /v2/ is served.
    assert root.status_code == 200
    assert elsewhere.status_code == 404


async def test_passwords_stay_out_of_logs_config_and_command_lines(
    proxied: RunningProxy, puller: RegistryClient, pushed: tuple[str, Image]
) -> None:
    repo, _ = pushed
    await puller.list_tags(repo)
    passwords = [proxied.admin.password, proxied.puller.password]
    texts = {
        "proxy log": proxied.log_path.read_text(),
        "registry log": proxied.registry.log_path.read_text(),
        "proxy config": (proxied.log_path.parent / "caddy.json").read_text(),
        "proxy command line": Path(f"/proc/{proxied.pid}/cmdline").read_text(),
        "registry command line": Path(f"/proc/{proxied.registry.pid}/cmdline").read_text(),
        "repr": repr(proxied),
    }
    # The access log is on, so the log really shows requests, credentials redacted.
    assert f"/v2/{repo}/tags/list" in texts["proxy log"]
    for what, text in texts.items():
        for password in passwords:
            assert password not in text, what
            assert base64.b64encode(password.encode()).decode() not in text, what
    # distribution itself listens on loopback only.
    assert proxied.registry.host.startswith("127.0.0.1:")


# -- skopeo, an independent client, with auth files rather than --creds --


def skopeo_authfile(path: Path, proxied: RunningProxy, login: Login) -> Path:
    token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    return write_secret(path, json.dumps({"auths": {proxied.host: {"auth": token}}}))


async def skopeo_copy(
    skopeo_path: str, tmp_path: Path, proxied: RunningProxy, *args: str
) -> tuple[int, str]:
    """Run `skopeo copy`, TLS verified against the proxy's CA; (exit status, stderr)."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text("")
    cert_dir = str(proxied.ca_path.parent)
    process = await asyncio.create_subprocess_exec(
        skopeo_path,
        "--policy",
        str(policy),
        "copy",
        "--quiet",
        f"--src-cert-dir={cert_dir}",
        f"--dest-cert-dir={cert_dir}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries_conf)},
    )
    try:
        async with asyncio.timeout(SKOPEO_TIMEOUT):
            _, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_skopeo_admin_pushes_and_pull_login_pulls_it_back(
    skopeo_path: str,
    proxied: RunningProxy,
    puller: RegistryClient,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = random_image([4096, 32 * 1024])
    write_oci_layout(image, tmp_path / "source", "v1")
    reference = f"docker://{proxied.host}/{unique_repo}:v1"
    admin_auth = skopeo_authfile(tmp_path / "admin.json", proxied, proxied.admin)
    pull_auth = skopeo_authfile(tmp_path / "pull.json", proxied, proxied.puller)

    status, err = await skopeo_copy(
        skopeo_path,
        tmp_path,
        proxied,
        "--preserve-digests",
        f"--dest-authfile={admin_auth}",
        f"oci:{tmp_path / 'source'}:v1",
        reference,
    )
    assert status == 0, err
    assert await pull_image(puller, unique_repo, "v1") == image

    status, err = await skopeo_copy(
        skopeo_path,
        tmp_path,
        proxied,
        f"--src-authfile={pull_auth}",
        reference,
        f"oci:{tmp_path / 'pulled'}:v1",
    )
    assert status == 0, err
    assert read_oci_layout(tmp_path / "pulled", "v1") == image


async def test_skopeo_push_with_the_pull_login_is_denied(
    skopeo_path: str,
    proxied: RunningProxy,
    admin: RegistryClient,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = random_image([4096])
    write_oci_layout(image, tmp_path / "source", "v1")
    pull_auth = skopeo_authfile(tmp_path / "pull.json", proxied, proxied.puller)

    status, err = await skopeo_copy(
        skopeo_path,
        tmp_path,
        proxied,
        f"--dest-authfile={pull_auth}",
        f"oci:{tmp_path / 'source'}:v1",
        f"docker://{proxied.host}/{unique_repo}:v1",
    )
    assert status != 0
    assert "denied" in err.lower(), err
    assert proxied.puller.password not in err
    # Nothing was written: the repository does not exist.
    with pytest.raises(RegistryError) as caught:
        await admin.list_tags(unique_repo)
    assert caught.value.status == 404
