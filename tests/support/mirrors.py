"""A pull-through mirror's upstream and prerequisites, for the local cluster and k3s lanes.

A second registry plays the upstream: its own CA (tls.mode self-signed) and the name
upstream.test, which the mirror pod resolves through `upstream_ip` (hostAliases).
Node trust then owns `<certs_dir>/upstream.test:5000/` on every node.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import kr8s.asyncio
from kr8s.asyncio.objects import ConfigMap, Namespace, Secret

from registry_provisioner import kube
from tests.cluster.helpers import decoded
from tests.support.registries import Registry, RegistryFactory

UPSTREAM_NAME = "upstream.test"
UPSTREAM_HOST = f"{UPSTREAM_NAME}:5000"
MIRROR_PORT = 5002


def mirror_setting(upstream: Registry, ttl: str = "168h", **extra: object) -> str:
    """`mirrors` as --set takes it: the upstream by name, its login, its CA, its IP."""
    mirror = {
        "upstream": f"https://{UPSTREAM_HOST}",
        "port": MIRROR_PORT,
        "ttl": ttl,
        "login_secret": "upstream-login",
        "ca_config_map": "upstream-ca",
        "upstream_ip": upstream.ip,
        **extra,
    }
    return json.dumps([mirror])


async def upstream_registry(registries: RegistryFactory, namespace: str) -> Registry:
    """The registry that plays the upstream, answering as upstream.test with its own CA."""
    return await registries(
        namespace, tls__mode="self-signed", tls__extra_dns_names=f"[{UPSTREAM_NAME}]"
    )


@asynccontextmanager
async def mirror_namespace(
    api: kr8s.asyncio.Api, main: Registry, upstream: Registry
) -> AsyncIterator[dict[str, str]]:
    """`main`'s namespace, holding the upstream's pull login (Secret upstream-login) and
    CA (ConfigMap upstream-ca) before provision; yields the login, deletes it all after."""
    namespace = await Namespace({"metadata": {"name": main.namespace}}, api=api)
    await namespace.create()
    try:
        [auth] = await kube.get_all(
            api, "secrets", "docker-registry-auth", namespace=upstream.namespace
        )
        pull_login = {
            "username": decoded(auth.raw, "pull-username"),
            "password": decoded(auth.raw, "pull-password"),
        }
        meta = {"namespace": main.namespace}
        secret = await Secret(
            {"metadata": {**meta, "name": "upstream-login"}, "stringData": pull_login}, api=api
        )
        await secret.create()
        ca = {"ca.crt": upstream.ca_file.read_text()}
        config_map = await ConfigMap(
            {"metadata": {**meta, "name": "upstream-ca"}, "data": ca}, api=api
        )
        await config_map.create()
        yield pull_login
    finally:
        await namespace.delete()
        await asyncio.wait_for(kube.wait_deleted(namespace), 180)


def files_of(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Each file's content, inode and mtime: a rewrite changes one of them."""
    return {
        path.name: (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
    }
