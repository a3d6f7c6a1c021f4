"""The Ansible notebook's registry, installed as the notebook installs it.

Its manifests come from the notebook itself: the org file's Jinja2 templates are
tangled and rendered with its own group_vars, as `ansible-playbook` would, defects
included (`node-type: worker`, `spec.loadBalancerIP`, `registry:2` as root). Only the
service IP is the local cluster's instead of the author's LAN address.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import kr8s.asyncio
import yaml
from jinja2 import Environment, StrictUndefined
from kr8s.asyncio.objects import Namespace, Node

from registry_provisioner import failpoints, kube
from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.waiting import poll
from scripts.local_cluster.addresses import OVERLAY_IP
from scripts.local_cluster.network import NODE_NAME
from tests.cluster.helpers import decoded, invoke, isolated_overrides, set_args

SEED_ORG = Path("/work/shared/seed/provision-docker-registry.org")
# What kubernetes.core.k8s applies with (`state: present`): the notebook's field manager.
FIELD_MANAGER = "ansible-kubernetes.core.k8s"
# The roles in the order provision-docker-registry.yml runs them, and their templates.
TEMPLATES = (
    "roles/create-certificate/templates/docker-registry-cert.yml",
    "roles/create-pvc/templates/create-pvc.yml",
    "roles/deploy-registry/templates/deploy-registry.yml",
    "roles/create-service/templates/registry-service.yml",
)
# The label the notebook's nodeSelector asks for, as its users' nodes have it.
WORKER_LABEL = "node-type"
_BLOCK = re.compile(r"^#\+begin_src \S+ (?P<args>[^\n]*)\n(?P<body>.*?)^#\+end_src", re.M | re.S)


def tangle(org: Path = SEED_ORG) -> dict[str, str]:
    """Each `:tangle` target of the org file and its text, as org-babel-tangle writes them.

    The Service block says `:tangle :tangle <path>`: the path is the last word.
    """
    files: dict[str, str] = {}
    for block in _BLOCK.finditer(org.read_text(encoding="utf-8")):
        words = block["args"].split()
        if ":tangle" in words:
            files[words[-1]] = files.get(words[-1], "") + block["body"]
    return files


@dataclass(frozen=True)
class NotebookInstall:
    """The rendered group_vars and manifests of one notebook install."""

    group_vars: dict
    manifests: list[dict]

    @property
    def namespace(self) -> str:
        return self.group_vars["docker_reg_namespace"]

    def write_group_vars(self, directory: Path) -> Path:
        """group_vars/all as the notebook's users keep it, for `--config`."""
        path = directory / "group_vars" / "all"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.group_vars, sort_keys=False))
        return path


def render(service_ip: str) -> NotebookInstall:
    """The notebook's manifests rendered with its own group_vars, at `service_ip`."""
    files = tangle()
    group_vars = yaml.safe_load(files["group_vars/all"])
    group_vars["docker_reg_service_ip"] = service_ip
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    manifests = [yaml.safe_load(env.from_string(files[t]).render(group_vars)) for t in TEMPLATES]
    return NotebookInstall(group_vars, manifests)


async def apply(api: kr8s.asyncio.Api, install: NotebookInstall) -> None:
    """Apply the manifests in the playbook's order, as `k8s: definition:` does."""
    for manifest in install.manifests:
        await kube.apply_fields(api, manifest, FIELD_MANAGER)


# ------------------------------------------------------------- on the local cluster


async def wait_for_state(
    what: str, check: Callable[[], Awaitable[object]], timeout: float = 180
) -> None:
    """Poll `check` (True when done, else the state seen); on a timeout, say what was seen."""
    seen: object = None

    async def holds() -> bool:
        nonlocal seen
        seen = await check()
        return seen is True

    try:
        await asyncio.wait_for(poll(holds, 1), timeout)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g}s for {what}; last seen: {seen}") from None


async def label_node(api: kr8s.asyncio.Api, value: str | None) -> None:
    node = await Node.get(NODE_NAME, api=api)
    await node.patch({"metadata": {"labels": {WORKER_LABEL: value}}})


async def remove_namespace(api: kr8s.asyncio.Api, namespace: str) -> None:
    found = await kube.get_all(api, "namespaces", namespace)
    if not found:
        return
    await found[0].delete()
    await asyncio.wait_for(kube.wait_deleted(found[0]), 180)


async def serving(api: kr8s.asyncio.Api, namespace: str) -> Path:
    """Wait for the notebook's registry to answer on its IP; its CA file."""

    async def secret() -> object:
        found = await kube.get_all(api, "secrets", "docker-registry-secret", namespace=namespace)
        return True if found and "ca.crt" in found[0].raw.get("data", {}) else "no CA yet"

    await wait_for_state("the notebook's Secret", secret)
    [raw] = await kube.get_all(api, "secrets", "docker-registry-secret", namespace=namespace)
    ca_file = Path(tempfile.mkdtemp()) / "ca.crt"
    ca_file.write_text(decoded(raw.raw, "ca.crt"))

    async def answers() -> object:
        async with RegistryClient(f"https://{OVERLAY_IP}:5000", ca_file=ca_file, timeout=5) as c:
            try:
                await c.ping()
                return True
            except RegistryError as error:
                pods = await kube.get_all(api, "pods", namespace=namespace)
                phases = [(p.name, p.raw.get("status", {}).get("phase")) for p in pods]
                return f"{error}; pods {phases}"

    await wait_for_state(f"the notebook's registry on {OVERLAY_IP}:5000", answers)
    return ca_file


@dataclass
class Running:
    """The notebook's registry serving on the local cluster, and how to run our tasks on it."""

    install: NotebookInstall
    group_vars: Path
    ca_file: Path  # the notebook's CA, to talk to its registry
    tmp: Path

    @property
    def namespace(self) -> str:
        return self.install.namespace

    @property
    def url(self) -> str:
        return f"https://{OVERLAY_IP}:5000"

    @property
    def overrides(self) -> list[str]:
        return set_args(isolated_overrides(self.namespace, OVERLAY_IP))

    def invoke(
        self, task: str, *extra: str, kubeconfig: str, failpoint: str | None = None
    ) -> subprocess.CompletedProcess:
        """`invoke <task>` with the notebook's group_vars, as its users run it."""
        ca_dir = ["--ca-dir", str(self.tmp / "certs")] if task == "provision" else []
        args = (task, "--config", str(self.group_vars), *self.overrides, *ca_dir, *extra)
        env = {failpoints.ENV: failpoint} if failpoint else None
        return invoke(*args, kubeconfig=kubeconfig, timeout=600, env=env)


@asynccontextmanager
async def running(api: kr8s.asyncio.Api, kubeconfig: str, tmp: Path) -> AsyncIterator[Running]:
    """The notebook's install, applied as it applies it; afterwards all of it is gone.

    Its namespace is from before Pod Security (labelled `privileged`, as such a cluster
    admits the notebook's root pod), and the node is labelled `node-type=worker`.
    """
    install = render(OVERLAY_IP)
    group_vars = install.write_group_vars(tmp)
    ns = install.namespace
    await remove_namespace(api, ns)  # an earlier run's
    labels = {"pod-security.kubernetes.io/enforce": "privileged"}
    await Namespace({"metadata": {"name": ns, "labels": labels}}, api=api).create()
    await label_node(api, "worker")
    try:
        await apply(api, install)
        yield Running(install, group_vars, await serving(api, ns), tmp)
    finally:
        await label_node(api, None)
        # The namespace first: the notebook's pod, back after the way back, holds the claim.
        await remove_namespace(api, ns)
        purged = Running(install, group_vars, Path(), tmp).invoke(
            "unprovision", "--purge", kubeconfig=kubeconfig
        )
        assert purged.returncode == 0, purged.stderr
