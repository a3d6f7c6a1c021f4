"""`invoke gc` on the real local cluster: space comes back, tagged images stay whole."""

from __future__ import annotations

import json
import re

import kr8s.asyncio
import pytest

from registry_provisioner import gc, kube, load_settings, maintenance
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, assemble_image, pull_image, push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.references import sha256_digest
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

NAMESPACE = "gc-registry"


@pytest.fixture
async def registry(registries: RegistryFactory) -> Registry:
    """A freshly provisioned registry, purged afterwards."""
    return await registries(NAMESPACE)


def sharing_first_layer(first: Image, second: Image) -> Image:
    """An image of first's and second's first layers: it shares a blob with `first`."""
    layers = (first.layers[0], second.layers[0])
    diff_ids = [json.loads(image.config)["rootfs"]["diff_ids"][0] for image in (first, second)]
    return assemble_image(layers, diff_ids)


async def _on_disk(api: kr8s.asyncio.Api, digest: str) -> bool:
    """Whether the blob is still in the registry's storage, whichever repository had it."""
    pods = await kube.get_all(
        api,
        "pods",
        namespace=NAMESPACE,
        label_selector="app.kubernetes.io/component=registry",
        field_selector="status.phase=Running",
    )
    [pod] = [p for p in pods if not p.raw["metadata"].get("deletionTimestamp")]
    result = await pod.exec(
        ["test", "-e", gc.blob_dir(digest)], container=maintenance.CONTAINER, check=False
    )
    return result.returncode == 0


class Interrupted(Exception):
    """Stands for anything that goes wrong while the registry is read-only."""


async def test_gc_reclaims_space_and_keeps_every_tagged_image(
    api: kr8s.asyncio.Api, registries: RegistryFactory, registry: Registry
) -> None:
    password = await registries.password(registry)
    settings = load_settings(None, registry.overrides)
    replaced = random_image([48 * 1024, 48 * 1024])
    current = sharing_first_layer(replaced, random_image([32 * 1024]))
    other = random_image([16 * 1024])
    latest = random_image([16 * 1024])
    deleted = random_image([64 * 1024])
    kept = {("app/one", "v1"): current, ("app/one", "v2"): other, ("app/two", "latest"): latest}

    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        await push_image(client, "app/one", "v1", replaced)
        for (repo, tag), image in kept.items():
            await push_image(client, repo, tag, image)  # app/one:v1 now untags `replaced`
        await push_image(client, "app/two", "old", deleted)
        await client.delete_manifest("app/two", deleted.digest)

        # Read-only means refused pushes but served pulls; a failure inside still ends it.
        with pytest.raises(Interrupted):
            async with gc.read_only(api, settings, client):
                with pytest.raises(RegistryError) as refused:
                    await push_image(client, "app/during", "v1", random_image([1024]))
                assert refused.value.status == 405
                assert await pull_image(client, "app/two", "latest") == latest
                raise Interrupted
        assert await client.accepts_pushes("app/probe")

        dry = registry.invoke("gc", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: nothing was deleted" in dry.stdout
        assert (await client.get_manifest("app/one", replaced.digest)).digest == replaced.digest
        assert await _on_disk(api, sha256_digest(deleted.layers[0]))

        result = registry.invoke("gc")
        assert result.returncode == 0, result.stderr
        leaked = password in result.stdout + result.stderr + dry.stdout + dry.stderr
        assert not leaked, "the registry password appears in gc's output"
        reclaimed = re.search(r"reclaimed \((\d+) bytes\)", result.stdout)
        assert reclaimed and int(reclaimed.group(1)) > 0, result.stdout
        # `replaced` (manifest, config, own layer) and `deleted` (its manifest was
        # already removed by the API, its blobs not); `replaced` is the one untagged manifest.
        assert "6 unreferenced blobs and 1 untagged manifest;" in result.stdout, result.stdout
        assert "kept 10 blobs in use" in result.stdout, result.stdout
        assert "roll out read-only" in result.stderr
        assert "accept pushes again" in result.stderr

        # Every tag pulls back byte for byte; nothing else is tagged.
        for repo in await client.catalog():
            for tag in await client.list_tags(repo):
                assert (repo, tag) in kept, f"{repo}:{tag} was never pushed"
        for (repo, tag), image in kept.items():
            assert await pull_image(client, repo, tag) == image, f"{repo}:{tag} changed"

        # The untagged and the deleted image are gone, manifests and blobs alike,
        # except the layer `replaced` shared with the tagged `current`.
        for repo, image in (("app/one", replaced), ("app/two", deleted)):
            with pytest.raises(RegistryError) as missing:
                await client.get_manifest(repo, image.digest)
            assert missing.value.status == 404
        gone = [replaced.digest, sha256_digest(replaced.config), sha256_digest(replaced.layers[1])]
        gone += [deleted.digest, sha256_digest(deleted.config), sha256_digest(deleted.layers[0])]
        for digest in gone:
            assert not await _on_disk(api, digest), f"{digest} survived gc"
        assert await _on_disk(api, sha256_digest(replaced.layers[0]))

        # Writable again, and no trace of the read-only override is left.
        after = random_image([8 * 1024])
        await push_image(client, "app/after", "v1", after)
        assert await pull_image(client, "app/after", "v1") == after
    deployment = await maintenance.deployment_of(api, settings)
    assert deployment is not None
    assert not kube.managed_by(deployment.raw, maintenance.FIELD_MANAGER)
    [container] = [
        c
        for c in deployment.raw["spec"]["template"]["spec"]["containers"]
        if c["name"] == maintenance.CONTAINER
    ]
    assert maintenance.READ_ONLY_ENV not in {e["name"] for e in container.get("env", [])}
