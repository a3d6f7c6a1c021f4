"""The Ansible notebook's registry, installed as the notebook installs it.

Its manifests come from the notebook itself: the org file's Jinja2 templates are
tangled and rendered with its own group_vars, as `ansible-playbook` would, defects
included (`node-type: worker`, `spec.loadBalancerIP`, `registry:2` as root). Only the
service IP is the local cluster's instead of the author's LAN address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import kr8s.asyncio
import yaml
from jinja2 import Environment, StrictUndefined

from registry_provisioner import kube

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
