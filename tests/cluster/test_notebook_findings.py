"""What taking over the notebook's registry finds that it cannot move, on a real registry:2.

The notebook's registry is started as in test_notebook_adoption.py, then its storage is
given what years of use leave behind: a tag whose manifest is schema 1 (written on the
volume as distribution 2.x stored one, since registry:2 refuses schema 1 pushes by
default and signs such manifests itself when it serves them) and a tag whose layer's
data file is gone. The takeover names each by tag, with what to do, and refuses before
any change while a schema 1 tag is left; a takeover's extra right (the one-off pod)
missing is refused the same way. Following the printed advice then lets it through.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import kr8s.asyncio
import pytest

from registry_provisioner import kube
from registry_provisioner.images import (
    Image,
    assemble_image,
    pull_image,
    push_image,
    random_layer,
)
from registry_provisioner.notebook import SCHEMA1_TYPES
from registry_provisioner.oci_client import DOCKER_MANIFEST, OCI_MANIFEST, RegistryClient
from registry_provisioner.references import sha256_digest
from scripts.local_cluster.addresses import OVERLAY_IP
from tests.cluster.helpers import PREFLIGHT_CLUSTER_READS, service_account_kubeconfig
from tests.support import notebook
from tests.support.registries import registry_password, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

HOST = f"{OVERLAY_IP}:5000"
STORAGE = "/var/lib/registry/docker/registry/v2"  # in the notebook's registry:2 pod
LEGACY, LEGACY_TAG = "legacy/app", "2016"  # schema 1 under this tag
BROKEN, BROKEN_TAG = "broken/app", "1"  # its layer's data file is gone


@dataclass
class Findings:
    old: notebook.Running
    current: str  # legacy/app:current, pushed today on the layer the schema 1 tag uses
    schema1: str  # digest of the schema 1 manifest
    broken: Image  # broken/app:1, as pushed
    lost_layer: str


def _schema1(repo: str, tag: str, layer: str) -> bytes:
    """A schema 1 manifest as a Docker 1.x client pushed it (unsigned: distribution 2.x
    stored the payload and signed it anew on each GET)."""
    v1 = {
        "id": hashlib.sha256(layer.encode()).hexdigest(),
        "created": "2016-06-01T12:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "container_config": {"Cmd": ["/bin/sh -c #(nop) ADD file in /"]},
    }
    manifest = {
        "schemaVersion": 1,
        "name": repo,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer}],
        "history": [{"v1Compatibility": json.dumps(v1, separators=(",", ":"))}],
    }
    return json.dumps(manifest, indent=3).encode()


def _link(path: str, digest: str) -> str:
    return f"mkdir -p {path} && printf %s {digest} > {path}/link"


def _aged_storage(schema1: bytes, lost_layer: str) -> str:
    """The shell that leaves on the volume what an old registry left: the schema 1
    manifest under its tag, and one layer's data file gone."""
    hex_ = sha256_digest(schema1).removeprefix("sha256:")
    digest = f"sha256:{hex_}"
    blob = f"blobs/sha256/{hex_[:2]}/{hex_}"
    manifests = f"repositories/{LEGACY}/_manifests"
    lost = lost_layer.removeprefix("sha256:")
    return " && ".join(
        [
            f"cd {STORAGE}",
            f"mkdir -p {blob}",
            f"printf %s {shlex.quote(schema1.decode())} > {blob}/data",
            _link(f"{manifests}/revisions/sha256/{hex_}", digest),
            _link(f"{manifests}/tags/{LEGACY_TAG}/current", digest),
            _link(f"{manifests}/tags/{LEGACY_TAG}/index/sha256/{hex_}", digest),
            f"rm blobs/sha256/{lost[:2]}/{lost}/data",
        ]
    )


async def _restart_old(api: kr8s.asyncio.Api, namespace: str) -> Path:
    """A new registry:2 process, with none of the old one's in-memory blob cache."""
    [pod] = await kube.running_pods(api, namespace, "run=docker-registry")
    await pod.delete()
    await kube.wait_deleted(pod)
    return await notebook.serving(api, namespace)


@pytest.fixture(scope="module")
async def found(
    api: kr8s.asyncio.Api, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Findings]:
    async with notebook.running(api, kubeconfig, tmp_path_factory.mktemp("findings")) as old:
        layer, diff_id = random_layer(0, 32 * 1024)
        current = assemble_image([layer], [diff_id])
        lost, lost_diff_id = random_layer(1, 32 * 1024)
        broken = assemble_image([lost], [lost_diff_id])
        async with RegistryClient(old.url, ca_file=old.ca_file) as client:
            await push_image(client, LEGACY, "current", current)
            await push_image(client, BROKEN, BROKEN_TAG, broken)
        schema1 = _schema1(LEGACY, LEGACY_TAG, sha256_digest(layer))
        [pod] = await kube.running_pods(api, old.namespace, "run=docker-registry")
        lost_layer = sha256_digest(lost)
        await pod.exec(
            ["sh", "-c", _aged_storage(schema1, lost_layer)], container="docker-registry"
        )
        old.ca_file = await _restart_old(api, old.namespace)
        yield Findings(old, current.digest, sha256_digest(schema1), broken, lost_layer)


def _expected_lines(found: Findings) -> list[str]:
    ref = f"{LEGACY}:{LEGACY_TAG}"
    return [
        f"schema 1 {ref}: distribution v3 does not serve it; convert it while the old "
        f"registry runs: skopeo copy --format v2s2 docker://<old>/{ref} docker://<old>/{ref}",
        f"missing  {BROKEN}:{BROKEN_TAG}: {BROKEN}@{found.lost_layer} "
        f"(blob of {found.broken.digest}): already absent in the old registry",
    ]


# --------------------------------------------------------------------------- the tests


async def test_registry2_serves_the_schema1_tag_and_lacks_the_layer(found: Findings) -> None:
    old = found.old
    accept = ", ".join((DOCKER_MANIFEST, *SCHEMA1_TYPES))
    tls = ssl.create_default_context(cafile=old.ca_file)
    async with httpx.AsyncClient(verify=tls, timeout=30) as http:
        got = await http.get(
            f"{old.url}/v2/{LEGACY}/manifests/{LEGACY_TAG}", headers={"Accept": accept}
        )
        assert got.status_code == 200, got.text
        assert (
            got.headers["content-type"]
            == "application/vnd.docker.distribution.manifest.v1+prettyjws"
        )
        assert got.headers["docker-content-digest"] == found.schema1
        assert json.loads(got.content)["signatures"], "registry:2 signs schema 1 when serving it"
        layer = await http.head(f"{old.url}/v2/{BROKEN}/blobs/{found.lost_layer}")
        assert layer.status_code == 404
    async with RegistryClient(old.url, ca_file=old.ca_file) as client:
        assert await client.manifest_digest(BROKEN, BROKEN_TAG) == (
            found.broken.digest,
            OCI_MANIFEST,
        )


TAKEOVER_RULES = [
    # Everything a provision uses, pods only read: not the takeover's one-off pod.
    {
        "apiGroups": [""],
        "resources": [
            "namespaces",
            "secrets",
            "configmaps",
            "services",
            "persistentvolumeclaims",
            "events",
        ],
        "verbs": ["*"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["*"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["*"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
    {
        "apiGroups": ["cert-manager.io"],
        "resources": ["certificates", "issuers", "clusterissuers"],
        "verbs": ["*"],
    },
    *PREFLIGHT_CLUSTER_READS,
]


async def test_adopt_without_the_takeovers_rights_is_refused_before_any_change(
    api: kr8s.asyncio.Api, kubeconfig: str, namespace: str, tmp_path: Path, found: Findings
) -> None:
    path = tmp_path / "kubeconfig"
    async with service_account_kubeconfig(api, kubeconfig, namespace, TAKEOVER_RULES, path):
        before = await snapshot(api)

        # A provision's own rights are there: only the notebook's install stops it.
        plain = found.old.invoke("provision", kubeconfig=str(path))
        assert plain.returncode != 0
        assert "run `invoke provision --adopt`" in plain.stderr, plain.stderr
        assert "not allowed" not in plain.stderr, plain.stderr

        refused = found.old.invoke("provision", "--adopt", kubeconfig=str(path))

        assert refused.returncode != 0
        assert "nothing was changed" in refused.stderr, refused.stderr
        assert (
            "taking over the notebook's registry (a one-off pod hands its files to the "
            f"registry's user): not allowed to create, delete pods in namespace "
            f"{found.old.namespace}: grant these rights to the kubeconfig's user"
        ) in refused.stderr, refused.stderr
        assert await snapshot(api) == before


async def test_dry_run_names_each_finding_by_tag_and_changes_nothing(
    api: kr8s.asyncio.Api, kubeconfig: str, found: Findings
) -> None:
    before = await snapshot(api)

    result = found.old.invoke("provision", "--dry-run", "--adopt", kubeconfig=kubeconfig)

    assert result.returncode == 0, result.stderr
    for line in _expected_lines(found):
        assert line in result.stdout, result.stdout
    assert "found    2 tags in 2 repositories" in result.stdout, result.stdout
    assert "refuses  to take over while a tag is schema 1" in result.stdout, result.stdout
    assert await snapshot(api) == before


async def test_adopt_refuses_schema1_before_any_change(
    api: kr8s.asyncio.Api, kubeconfig: str, found: Findings
) -> None:
    before = await snapshot(api)

    result = found.old.invoke("provision", "--adopt", kubeconfig=kubeconfig)

    assert result.returncode != 0
    assert "holds schema 1 manifests" in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    for line in _expected_lines(found):
        assert line in result.stdout + result.stderr, result.stdout + result.stderr
    assert await snapshot(api) == before
    async with RegistryClient(found.old.url, ca_file=found.old.ca_file) as client:
        # The old registry still serves it all, the schema 1 tag too.
        answer = await client.manifest_digest(LEGACY, LEGACY_TAG, accept=SCHEMA1_TYPES)
        assert answer == (found.schema1, SCHEMA1_TYPES[0])


async def test_once_converted_the_takeover_keeps_the_broken_tag_and_says_so(
    api: kr8s.asyncio.Api, kubeconfig: str, found: Findings
) -> None:
    old, ref = found.old, f"{LEGACY}:{LEGACY_TAG}"
    # The printed advice, as a user runs it against the old registry.
    certs = str(old.ca_file.parent)
    converted = await asyncio.to_thread(
        subprocess.run,
        ["skopeo", "copy", "--quiet", "--format", "v2s2", "--src-cert-dir", certs,
         "--dest-cert-dir", certs, f"docker://{HOST}/{ref}", f"docker://{HOST}/{ref}"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    async with RegistryClient(old.url, ca_file=old.ca_file) as client:
        v2s2, media_type = await client.manifest_digest(LEGACY, LEGACY_TAG)
    assert media_type == DOCKER_MANIFEST

    result = old.invoke("provision", "--adopt", kubeconfig=kubeconfig)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "schema 1" not in result.stdout
    assert _expected_lines(found)[1] in result.stdout, result.stdout
    assert (
        "taken over: 3 tags checked, served by the same digests; 1 blobs were already "
        "missing in the old registry"
    ) in result.stdout, result.stdout
    ca_file = old.tmp / "certs" / HOST / "ca.crt"
    password = await registry_password(api, old.namespace)
    async with RegistryClient(old.url, "registry", password, ca_file) as client:
        assert await client.accepts_pushes(BROKEN)
        assert (await client.manifest_digest(LEGACY, LEGACY_TAG))[0] == v2s2
        assert (await client.manifest_digest(LEGACY, "current"))[0] == found.current
        assert (await client.manifest_digest(BROKEN, BROKEN_TAG))[0] == found.broken.digest
        assert not await client.blob_exists(BROKEN, found.lost_layer)
        # What the report says to do: push that image again, and it is whole.
        await push_image(client, BROKEN, BROKEN_TAG, found.broken)
        assert await client.blob_exists(BROKEN, found.lost_layer)
        assert (await pull_image(client, BROKEN, BROKEN_TAG)).digest == found.broken.digest
