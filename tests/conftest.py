"""The cluster the integration tests run on.

By default the project's own local cluster (started if it is not running).
`--kubeconfig PATH` uses an existing cluster instead, `--k3s` the k3s lane's cluster
(`invoke cluster.up --k3s`), and `--use-kind` (or
REGISTRY_TEST_CLUSTER=kind) a kind cluster through pytest-kind, for machines
with Docker, privileged containers and internet (README, "The local cluster",
says why these machines cannot run kind).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Namespace

from registry_provisioner.kube import wait_deleted
from tests.support.registries import RegistryFactory


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--k3s",
        action="store_true",
        help=(
            "the k3s lane: run on the k3s cluster of `invoke cluster.up --k3s` (started if "
            "not running), and run the k3s tests (tests/k3s), which are skipped otherwise"
        ),
    )
    parser.addoption(
        "--use-kind",
        action="store_true",
        default=os.environ.get("REGISTRY_TEST_CLUSTER") == "kind",
        help=(
            "run cluster tests on a kind cluster (pytest-kind; needs Docker with privileged "
            "containers, and internet)"
        ),
    )


class ExistingCluster:
    """A cluster someone else runs, named by a kubeconfig."""

    name = "existing"

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig_path = kubeconfig

    def kubectl(self, *args: str) -> str:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig_path}", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    """Anything with .kubeconfig_path and .kubectl(*args), like pytest-kind's KindCluster."""
    if request.config.getoption("use_kind"):
        yield request.getfixturevalue("kind_cluster")
        return
    if request.config.getoption("k3s"):
        yield _k3s_cluster()
        return
    kubeconfig = request.config.getoption("kubeconfig")
    if kubeconfig:
        yield ExistingCluster(Path(kubeconfig))
        return
    from scripts.local_cluster.cluster import LocalCluster

    local = LocalCluster()
    local.create()  # idempotent: a running cluster is reused
    yield local


def _k3s_cluster():
    """The k3s lane's cluster, started if it is not running; skipped, saying why, without
    the k3s source tree."""
    from scripts.local_cluster import k3s_build
    from scripts.local_cluster.k3s import K3sCluster

    reason = k3s_build.source_missing_reason()
    if reason:
        pytest.skip(reason)
    k3s = K3sCluster()
    k3s.create()  # idempotent: a running k3s cluster is reused
    return k3s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The k3s tests restart k3s: they run only in the k3s lane."""
    if config.getoption("k3s"):
        return
    skip = pytest.mark.skip(reason="k3s lane: runs with --k3s (invoke test runs it)")
    for item in items:
        if item.get_closest_marker("k3s"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kubeconfig(cluster) -> str:
    return str(cluster.kubeconfig_path)


@pytest.fixture(scope="session")
async def api(kubeconfig: str) -> kr8s.asyncio.Api:
    return await kr8s.asyncio.api(kubeconfig=kubeconfig)


@pytest.fixture
async def namespace(api: kr8s.asyncio.Api) -> AsyncIterator[str]:
    """A fresh namespace, deleted (and waited out) after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    ns = await Namespace({"metadata": {"name": name}}, api=api)
    await ns.create()
    yield name
    await ns.delete()
    await asyncio.wait_for(wait_deleted(ns), 120)


@pytest.fixture(scope="module")
async def module_registries(
    api: kr8s.asyncio.Api, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RegistryFactory]:
    """Registries shared by the tests of one module, purged after its last test."""
    async with RegistryFactory(api, kubeconfig, tmp_path_factory) as factory:
        yield factory


@pytest.fixture
async def registries(
    api: kr8s.asyncio.Api, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RegistryFactory]:
    """Registries of one test, purged after it."""
    async with RegistryFactory(api, kubeconfig, tmp_path_factory) as factory:
        yield factory
