"""`invoke demo`, as README tells a newcomer to run it: the story end to end, cleanly told."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kr8s.asyncio
import pytest

from registry_provisioner import kube
from registry_provisioner.config import Settings
from scripts.local_cluster.demo import DEMO_NAMESPACE
from tests.cluster.helpers import invoke
from tests.support.registries import skip_unless_free

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
# The demo's own settings (tasks.demo): the overlay's registry, pulls in two namespaces.
DEMO_SETTINGS = ["--set", f"pull_secret.namespaces=[default, {DEMO_NAMESPACE}]"]


@pytest.fixture
async def demo_cleanup(api: kr8s.asyncio.Api, kubeconfig: str):
    """Whatever an earlier demo left goes first; the demo's registry goes afterwards, and
    its app's namespace too when the demo made it.

    A demo install already on the cluster is the user's: the test is skipped instead.
    """
    await skip_unless_free(api, Settings().namespace)
    purge = ["unprovision", *DEMO_SETTINGS, "--purge"]
    assert invoke(*purge, kubeconfig=kubeconfig).returncode == 0
    app_namespace_before = await kube.get_all(api, "namespaces", DEMO_NAMESPACE)
    yield
    result = invoke(*purge, kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    if not app_namespace_before:
        for namespace in await kube.get_all(api, "namespaces", DEMO_NAMESPACE):
            await namespace.delete()


def run_demo() -> subprocess.CompletedProcess[str]:
    """`invoke demo` exactly as typed (it uses the running local cluster)."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )


async def test_demo_runs_the_story_and_prints_no_library_warnings(
    api: kr8s.asyncio.Api, demo_cleanup: None
) -> None:
    demo = run_demo()
    assert demo.returncode == 0, demo.stderr
    assert "image pulled from" in demo.stdout, demo.stdout
    output = demo.stdout + demo.stderr
    for noise in ("Warning", "warnings.warn", "Traceback"):
        assert noise not in output, output
    pods = await kube.get_all(api, "pods", namespace=DEMO_NAMESPACE, label_selector="app=hello")
    assert [pod.raw["status"]["phase"] for pod in pods] == ["Running"]
    for deployment in await kube.get_all(api, "deployments", "hello", namespace=DEMO_NAMESPACE):
        await deployment.delete()
