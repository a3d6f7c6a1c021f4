"""Preflight's bucket check and purge's S3 cleanup reach an object store that only the
cluster can reach (versitygw behind a Service) through the API server.

The endpoint is named as users write it (`<svc>.<ns>.svc`, `.svc.cluster.local`) for
the refusals, which happen before anything on the cluster changes; the registry that
is provisioned and purged names the Service by its ClusterIP, because the local
cluster has no DNS for its pods. The bucket is looked into from versitygw's own pod
(posix mode keeps each object as a file), not through the code under test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Pod

from registry_provisioner import kube
from registry_provisioner.config import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
from registry_provisioner.images import push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from scripts.local_cluster import object_store
from tests.cluster.helpers import fresh_namespace, namespace_gone, object_store_in, set_args
from tests.support.registries import Registry, RegistryFactory, snapshot

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

STORE_NAMESPACE = "s3-route-store"
NAMESPACE = "s3-route-registry"
ROOT = "s3-route"
BUCKET_DIR = f"/data/buckets/{object_store.BUCKET}"
# Keys that are not distribution's: one beside its prefix, one elsewhere in the bucket.
FOREIGN = (f"{ROOT}/docker/registry/v2-old/keep.txt", "someone-else/keep.txt")
WRONG_LOGIN = "wrong-s3-login"


@pytest.fixture(scope="module")
async def store(api: kr8s.asyncio.Api) -> AsyncIterator[object_store.Store]:
    async with object_store_in(api, STORE_NAMESPACE) as started:
        yield started


@pytest.fixture(scope="module")
async def registry(
    api: kr8s.asyncio.Api, module_registries: RegistryFactory, store: object_store.Store
) -> AsyncIterator[Registry]:
    """One replica on the store's bucket, not yet provisioned; its namespace holds the
    right logins and a Secret with a wrong secret key."""
    overrides = {**store.registry_overrides(f"/{ROOT}"), "node_trust.enabled": "false"}
    made = await module_registries(
        NAMESPACE, provision=False, **{k.replace(".", "__"): v for k, v in overrides.items()}
    )
    namespace = await fresh_namespace(api, NAMESPACE)
    wrong = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": WRONG_LOGIN, "namespace": NAMESPACE},
        "stringData": {
            S3_ACCESS_KEY_ID: store.logins.access_key_id,
            S3_SECRET_ACCESS_KEY: "not-the-secret-key",
        },
    }
    try:
        secrets = object_store.registry_secrets(NAMESPACE, store.logins)
        await kube.apply_manifests(api, [*secrets, wrong])
        yield made
    finally:
        await namespace_gone(namespace)


async def _store_pod(api: kr8s.asyncio.Api) -> Pod:
    [pod] = await kube.running_pods(api, STORE_NAMESPACE, "app.kubernetes.io/name=versitygw")
    return pod


async def _in_store(api: kr8s.asyncio.Api, script: str) -> str:
    pod = await _store_pod(api)
    done = await pod.exec(["sh", "-c", script], check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def _keys(api: kr8s.asyncio.Api) -> set[str]:
    """Every object in the bucket, as versitygw keeps them on its volume."""
    listing = await _in_store(api, f"cd {BUCKET_DIR} && find . -type f")
    return {line.removeprefix("./") for line in listing.split()}


def _by_name(service: str, domain: str = "") -> str:
    return f"http://{service}.{STORE_NAMESPACE}.svc{domain}:{object_store.S3_PORT}"


# What is wrong, the settings that say it, and what the refusal must name.
REFUSALS = {
    "missing bucket": (
        {"storage.s3.endpoint": _by_name("versitygw"), "storage.s3.bucket": "no-such-bucket"},
        "storage.s3.bucket: bucket 'no-such-bucket' does not exist",
    ),
    "wrong credentials": (
        {
            "storage.s3.endpoint": _by_name("versitygw", ".cluster.local"),
            "storage.s3.credentials_secret": WRONG_LOGIN,
        },
        "storage.s3.credentials_secret: the endpoint refused to let these credentials",
    ),
    "no such Service": (
        {"storage.s3.endpoint": _by_name("nowhere")},
        f"storage.s3.endpoint: {_by_name('nowhere')} names Service {STORE_NAMESPACE}/nowhere, "
        "which does not exist",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_preflight_asks_the_in_cluster_store_and_refuses_before_any_change(
    api: kr8s.asyncio.Api, registry: Registry, case: str
) -> None:
    settings, expected = REFUSALS[case]
    before = await snapshot(api)
    result = registry.invoke("provision", *set_args(settings))
    assert result.returncode != 0, result.stdout
    assert expected in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr, result.stderr
    if case != "no such Service":
        assert "reaching it through the API server (port-forward to pod" in result.stderr
    assert "not-the-secret-key" not in result.stdout + result.stderr
    assert await snapshot(api) == before, f"{case}: the cluster changed"
    assert not await kube.get_all(api, "deployments", namespace=NAMESPACE)


async def test_purge_deletes_only_distributions_keys_through_the_api_server(
    api: kr8s.asyncio.Api, registry: Registry, module_registries: RegistryFactory
) -> None:
    provisioned = registry.invoke("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    # The ClusterIP endpoint is a Service too: its bucket was checked the same way.
    assert "reaching it through the API server" in provisioned.stderr, provisioned.stderr
    password = await module_registries.password(registry)
    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        await push_image(client, "route/image", "v1", random_image([64 * 1024, 1024]))
    await _in_store(
        api,
        " && ".join(
            f"mkdir -p {BUCKET_DIR}/{key.rsplit('/', 1)[0]} && echo kept > {BUCKET_DIR}/{key}"
            for key in FOREIGN
        ),
    )
    distribution = f"{ROOT}/docker/registry/v2/"
    before = await _keys(api)
    written = {key for key in before if key.startswith(distribution)}
    assert any("/repositories/route/image/" in key for key in written), before
    assert set(FOREIGN) <= before

    purged = registry.purge()
    assert purged.returncode == 0, purged.stderr
    assert "reaching it through the API server" in purged.stderr, purged.stderr
    deleted = re.search(r"deleted \((\d+); the bucket stays\)", purged.stdout)
    assert deleted, purged.stdout
    after = await _keys(api)
    assert not {key for key in after if key.startswith(distribution)}, after
    assert after == before - written, "keys other than distribution's changed"
    assert int(deleted.group(1)) == len(written)
