"""Provisioned registries for the cluster and end-to-end tests, from one factory.

Every registry gets a namespace of its own and an address from one pool, is purged
before it is provisioned (whatever an earlier run left) and always purged afterwards,
and a purge that fails fails the test. The fixtures that hand out the factory,
`registries` and `module_registries`, are in tests/conftest.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import kr8s
import kr8s.asyncio
import pytest

from registry_provisioner import kube
from registry_provisioner.config import Settings
from scripts.kinds import KINDS
from scripts.local_cluster.addresses import OVERLAY_IP, AddressPool
from tests.cluster.helpers import (
    Started,
    decoded,
    invoke,
    isolated_overrides,
    set_args,
    start,
)

__all__ = [
    "ADDRESSES",
    "KINDS",
    "Registry",
    "RegistryFactory",
    "registry_password",
    "skip_unless_free",
    "snapshot",
]

ADDRESSES = AddressPool()


async def skip_unless_free(api: kr8s.asyncio.Api, namespace: str) -> None:
    """Skip, saying why, when `namespace` is on the cluster already: a test that would
    purge whatever is there never does so to an install it did not make."""
    if await kube.get_all(api, "namespaces", namespace):
        pytest.skip(
            f"namespace {namespace} is on the cluster already (`invoke demo`'s install, or "
            "a killed test run's): this test would purge it. Free it with "
            f"`invoke unprovision --local --set namespace={namespace} --purge`, or run the "
            "suite on a fresh cluster"
        )


async def registry_password(api: kr8s.asyncio.Api, namespace: str, key: str = "password") -> str:
    """A password provision generated (the admin's, or ``pull-password``), from its Secret."""
    [secret] = await kube.get_all(api, "secrets", "docker-registry-auth", namespace=namespace)
    return decoded(secret.raw, key)


async def snapshot(api: kr8s.asyncio.Api) -> dict[str, str]:
    """resourceVersion of everything a provision could touch, cluster-wide."""
    versions = {}
    for kind in KINDS:
        for obj in await kube.get_all(api, kind, namespace=kr8s.ALL):
            versions[f"{obj.kind}/{obj.namespace}/{obj.name}"] = obj.metadata.resourceVersion
    return versions


@dataclass
class Registry:
    """One registry on the cluster, and the settings that name it."""

    namespace: str
    ip: str
    kubeconfig: str
    ca_dir: Path
    overrides: dict[str, str]
    outputs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"{self.ip}:5000"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / self.host / "ca.crt"

    @property
    def set_args(self) -> list[str]:
        return set_args(self.overrides)

    def _args(self, task: str, extra: tuple[str, ...]) -> tuple[str, ...]:
        ca_dir = ["--ca-dir", str(self.ca_dir)] if task in ("provision", "smoke-test") else []
        return (task, *self.set_args, *ca_dir, *extra)

    def invoke(
        self,
        task: str,
        *extra: str,
        timeout: float = 600,
        env: dict[str, str] | None = None,
        kubeconfig: str | None = None,
    ) -> subprocess.CompletedProcess:
        """`invoke TASK --local` with this registry's settings; `--ca-dir` where it takes one.

        `env` adds variables to the task's environment (a failpoint, say); `kubeconfig`
        runs it as another user or through a proxy.
        """
        args = self._args(task, extra)
        config = kubeconfig or self.kubeconfig
        return invoke(*args, kubeconfig=config, timeout=timeout, env=env)

    def start(self, task: str, *extra: str, env: dict[str, str] | None = None) -> Started:
        """The same as `invoke`, in the background: signal it, wait for its lines."""
        return start(*self._args(task, extra), kubeconfig=self.kubeconfig, env=env)

    def purge(self) -> subprocess.CompletedProcess:
        return self.invoke("unprovision", "--purge")


class RegistryFactory:
    """Makes registries; `close` purges every one it made and checks that it worked."""

    def __init__(self, api: kr8s.asyncio.Api, kubeconfig: str, tmp: pytest.TempPathFactory):
        self.api = api
        self.kubeconfig = kubeconfig
        self.tmp = tmp
        self.made: list[Registry] = []

    async def __call__(
        self, namespace: str, *, provision: bool = True, shared: bool = False, **overrides: str
    ) -> Registry:
        """A purged namespace with an address of the pool; provisioned unless `provision=False`.

        `shared=True` keeps the defaults that every install shares (the pull Secret in
        `default`, the KEP-1755 ConfigMap); otherwise the registry keeps to itself.
        `overrides` are extra settings, with dots written as double underscores.
        """
        extra = {key.replace("__", "."): value for key, value in overrides.items()}

        def settings(ip: str) -> dict[str, str]:
            base = {"namespace": namespace, "service.ip": ip}
            return {**(base if shared else isolated_overrides(namespace, ip)), **extra}

        # Whatever an earlier run left goes first, so that it holds no address.
        registry = Registry(namespace, OVERLAY_IP, self.kubeconfig, self.tmp.mktemp("certs"), {})
        registry.overrides = settings(OVERLAY_IP)
        self._purged_first(registry)
        registry.ip = await ADDRESSES.claim(self.api)
        registry.overrides = settings(registry.ip)
        return self._made(registry, provision)

    async def local_defaults(self, *, provision: bool = True) -> Registry:
        """The registry `--local` makes with no --set at all: the default namespace at the
        overlay's own address (OVERLAY_IP, which the pool never hands out), as the demo.

        That is also where `invoke demo` puts its registry: a test never purges one it
        did not make, so with that namespace present it is skipped, saying why.
        """
        namespace = Settings().namespace
        await skip_unless_free(self.api, namespace)
        registry = Registry(namespace, OVERLAY_IP, self.kubeconfig, self.tmp.mktemp("certs"), {})
        self._purged_first(registry)  # what a killed run left outside the namespace
        return self._made(registry, provision)

    @staticmethod
    def _purged_first(registry: Registry) -> None:
        purged = registry.purge()
        assert purged.returncode == 0, purged.stderr

    def _made(self, registry: Registry, provision: bool) -> Registry:
        self.made.append(registry)
        if provision:
            result = registry.invoke("provision")
            registry.outputs.append(result)
            assert result.returncode == 0, result.stderr
        return registry

    async def password(self, registry: Registry) -> str:
        return await registry_password(self.api, registry.namespace)

    async def pull_password(self, registry: Registry) -> str:
        return await registry_password(self.api, registry.namespace, "pull-password")

    async def __aenter__(self) -> RegistryFactory:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        failures = []
        for registry in reversed(self.made):
            try:
                result = registry.purge()
            except subprocess.TimeoutExpired as error:
                failures.append(f"{registry.namespace}: {error}")
                continue
            finally:
                ADDRESSES.release(registry.ip)
            if result.returncode != 0:
                failures.append(f"{registry.namespace}: {result.stderr.strip()}")
        self.made.clear()
        assert not failures, "purge failed:\n" + "\n".join(failures)
