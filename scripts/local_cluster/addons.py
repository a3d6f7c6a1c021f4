"""The cluster's addons: MetalLB, local-path-provisioner and cert-manager.

They run as host processes with the admin kubeconfig rather than as pods, so
no image has to be pulled for them. Bring them up in this order:

1. apply `crd_manifests()` and wait until every CRD is Established;
2. apply `addon_manifests(state_dir)` (namespaces first, in list order);
3. start `addon_processes(kubeconfig, state_dir)`.

Apply CRDs server-side (or create them): the Issuer and ClusterIssuer CRDs are
bigger than the 256 KiB client-side apply annotation allows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from . import build, components, network, versions
from .processes import ProcessSpec

Manifest = dict[str, Any]

METALLB_NAMESPACE = "metallb-system"
LOCAL_PATH_NAMESPACE = "local-path-storage"
CERT_MANAGER_NAMESPACE = "cert-manager"
# The addons' own namespaces: exempt from the cluster's Pod Security default.
NAMESPACES = (METALLB_NAMESPACE, LOCAL_PATH_NAMESPACE, CERT_MANAGER_NAMESPACE)

PROVISIONER_NAME = "rancher.io/local-path"
LOCAL_PATH_CONFIGMAP = "local-path-config"
LOCAL_PATH_SERVICE_ACCOUNT = "local-path-provisioner-service-account"
# The provisioner's key for "any node not listed by name".
ANY_NODE = "DEFAULT_PATH_FOR_NON_LISTED_NODES"

CLUSTER_ISSUER = "cert-manager-issuer"
SELF_SIGNED_ISSUER = "cert-manager-selfsigned"
CA_SECRET = "cert-manager-ca"

CERT_MANAGER_CRDS = ("certificates", "certificaterequests", "issuers", "clusterissuers")

# The helper pod's scripts: what upstream's ConfigMap ships, run by busybox sh.
SETUP_SCRIPT = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
TEARDOWN_SCRIPT = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'


# --- where things live -------------------------------------------------------


def module_dir(module: str, version: str) -> Path:
    """The module's source tree in the Go module cache, downloading it if needed."""
    return Path(build.download_module(module, version)["Dir"])


def local_path_data_dir(state_dir: Path) -> Path:
    """Where volumes of both StorageClasses are created, on this one node."""
    return state_dir / "local-path"


def local_path_config_dir(state_dir: Path) -> Path:
    return state_dir / "local-path-provisioner"


# --- CRDs --------------------------------------------------------------------

_TEMPLATE_ONLY_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_TEMPLATED_VALUE_LINE = re.compile(r"^\s*[\w./-]+:\s*.*\{\{.*\}\}.*$")


def strip_helm_templating(text: str) -> str:
    """Drop Helm template lines so a chart's CRD file parses as plain YAML.

    Lines that are only a template action (if/end/include) go, and so do
    mapping entries whose value is templated, such as chart labels; a CRD's
    schema never needs either.
    """
    if "{{" not in text:
        return text
    kept = [
        line
        for line in text.splitlines()
        if not _TEMPLATE_ONLY_LINE.match(line) and not _TEMPLATED_VALUE_LINE.match(line)
    ]
    leftover = [line for line in kept if "{{" in line]
    if leftover:
        raise ValueError(f"cannot strip Helm templating from: {leftover[0]!r}")
    return "\n".join(kept) + "\n"


def load_crds(path: Path) -> list[Manifest]:
    """The CustomResourceDefinitions in one YAML file, templated or not."""
    documents = yaml.safe_load_all(strip_helm_templating(path.read_text()))
    crds = [doc for doc in documents if doc and doc.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise ValueError(f"no CustomResourceDefinition in {path}")
    for crd in crds:
        # Stripping a templated block can leave `labels:` with nothing under it.
        metadata = crd["metadata"]
        for key in [key for key, value in metadata.items() if value is None]:
            del metadata[key]
    return crds


def metallb_crds() -> list[Manifest]:
    """All of MetalLB's CRDs: the controller caches every one of their kinds at start."""
    bases = module_dir("go.universe.tf/metallb", versions.METALLB) / "config" / "crd" / "bases"
    return [crd for path in sorted(bases.glob("*.yaml")) for crd in load_crds(path)]


def cert_manager_crds() -> list[Manifest]:
    crds_dir = module_dir("github.com/cert-manager/cert-manager", versions.CERT_MANAGER)
    crds_dir = crds_dir / "deploy" / "crds"
    return [
        crd
        for name in CERT_MANAGER_CRDS
        for crd in load_crds(crds_dir / f"cert-manager.io_{name}.yaml")
    ]


def crd_manifests() -> list[Manifest]:
    """Apply first, and wait for Established before anything that uses them."""
    return metallb_crds() + cert_manager_crds()


# --- manifests applied once the CRDs are Established -------------------------


def namespace(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def address_pool() -> Manifest:
    """The controller assigns LoadBalancer IPs from this; the speaker is not needed."""
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "default-pool", "namespace": METALLB_NAMESPACE},
        "spec": {"addresses": [network.LOADBALANCER_POOL]},
    }


def storage_class(name: str, binding_mode: str, default: bool = False) -> Manifest:
    metadata: Manifest = {"name": name}
    if default:
        metadata["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata,
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": binding_mode,
    }


def storage_classes() -> list[Manifest]:
    """`local-path` is the default; `longhorn` lets configs naming Longhorn work unchanged.

    longhorn binds Immediately, as Longhorn does. local-path's per-node paths
    cannot: the provisioner refuses a claim with no selected node. So longhorn
    uses the provisioner's shared-filesystem mode, which needs no node and is
    exact on a single-node cluster.
    """
    return [
        storage_class("local-path", "WaitForFirstConsumer", default=True),
        storage_class("longhorn", "Immediate"),
    ]


def local_path_config(state_dir: Path) -> Manifest:
    """The provisioner's config.json: which directory each StorageClass uses."""
    data_dir = str(local_path_data_dir(state_dir))
    return {
        "storageClassConfigs": {
            "local-path": {"nodePathMap": [{"node": ANY_NODE, "paths": [data_dir]}]},
            "longhorn": {"sharedFileSystemPath": data_dir},
        }
    }


def helper_pod_template() -> Manifest:
    """The pod that creates and deletes volume directories; the image is imported, never pulled."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "containers": [
                {
                    "name": "helper-pod",
                    "image": versions.HELPER_IMAGE,
                    "imagePullPolicy": "Never",
                }
            ],
        },
    }


def local_path_manifests(state_dir: Path) -> list[Manifest]:
    """The helper pods mount setup/teardown from the ConfigMap and run as its ServiceAccount.

    config.json and helperPod.yaml are in the ConfigMap too, as upstream has
    them, although the process reads its own copies from state_dir.
    """
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LOCAL_PATH_CONFIGMAP, "namespace": LOCAL_PATH_NAMESPACE},
        "data": {
            "config.json": json.dumps(local_path_config(state_dir), indent=2),
            "helperPod.yaml": yaml.safe_dump(helper_pod_template(), sort_keys=False),
            "setup": SETUP_SCRIPT,
            "teardown": TEARDOWN_SCRIPT,
        },
    }
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": LOCAL_PATH_SERVICE_ACCOUNT, "namespace": LOCAL_PATH_NAMESPACE},
    }
    return [service_account, config_map]


def issuer_ref(name: str) -> Manifest:
    return {"name": name, "kind": "ClusterIssuer", "group": "cert-manager.io"}


def cluster_issuers() -> list[Manifest]:
    """A CA ClusterIssuer whose CA a SelfSigned ClusterIssuer issues in the cert-manager namespace.

    ClusterIssuers read their Secrets from the cluster resource namespace,
    which the controller is started with as cert-manager.
    """
    self_signed = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": SELF_SIGNED_ISSUER},
        "spec": {"selfSigned": {}},
    }
    ca_certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": CA_SECRET, "namespace": CERT_MANAGER_NAMESPACE},
        "spec": {
            "isCA": True,
            "commonName": "local-cluster-ca",
            "secretName": CA_SECRET,
            "duration": "87600h",
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": issuer_ref(SELF_SIGNED_ISSUER),
        },
    }
    ca_issuer = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": CLUSTER_ISSUER},
        "spec": {"ca": {"secretName": CA_SECRET}},
    }
    return [self_signed, ca_certificate, ca_issuer]


def namespaces() -> list[Manifest]:
    return [namespace(name) for name in NAMESPACES]


def addon_manifests(state_dir: Path) -> list[Manifest]:
    """Everything else the addons need, namespaces first; apply after crd_manifests()."""
    return [
        *namespaces(),
        address_pool(),
        *storage_classes(),
        *local_path_manifests(state_dir),
        *cluster_issuers(),
    ]


# --- processes ---------------------------------------------------------------


def metallb_process(kubeconfig: Path) -> ProcessSpec:
    """MetalLB's controller without its webhooks, which would need serving certificates."""
    return ProcessSpec(
        name="metallb-controller",
        argv=(
            str(build.build(components.metallb())),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={METALLB_NAMESPACE}",
            "--webhook-mode=disabled",
            "--port=7472",
            "--log-level=info",
        ),
        env={"METALLB_NAMESPACE": METALLB_NAMESPACE},
    )


def write_local_path_files(state_dir: Path) -> tuple[Path, Path]:
    """Write the provisioner's config and helper pod template; return their paths.

    The config file name must end in .json: otherwise the provisioner parses the
    --config value itself as JSON.
    """
    config_dir = local_path_config_dir(state_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    local_path_data_dir(state_dir).mkdir(parents=True, exist_ok=True)
    config = config_dir / "config.json"
    config.write_text(json.dumps(local_path_config(state_dir), indent=2) + "\n")
    helper_pod = config_dir / "helperPod.yaml"
    helper_pod.write_text(yaml.safe_dump(helper_pod_template(), sort_keys=False))
    return config, helper_pod


def local_path_process(kubeconfig: Path, state_dir: Path) -> ProcessSpec:
    config, helper_pod = write_local_path_files(state_dir)
    return ProcessSpec(
        name="local-path-provisioner",
        argv=(
            str(build.build(components.local_path_provisioner())),
            "--debug",
            "start",
            f"--kubeconfig={kubeconfig}",
            f"--config={config}",
            f"--helper-pod-file={helper_pod}",
            f"--provisioner-name={PROVISIONER_NAME}",
            f"--namespace={LOCAL_PATH_NAMESPACE}",
            f"--configmap-name={LOCAL_PATH_CONFIGMAP}",
            f"--service-account-name={LOCAL_PATH_SERVICE_ACCOUNT}",
            f"--helper-image={versions.HELPER_IMAGE}",
        ),
    )


def cert_manager_process(kubeconfig: Path) -> ProcessSpec:
    return ProcessSpec(
        name="cert-manager-controller",
        argv=(
            str(build.build(components.cert_manager())),
            f"--kubeconfig={kubeconfig}",
            f"--cluster-resource-namespace={CERT_MANAGER_NAMESPACE}",
            "--leader-elect=false",
            "--v=2",
        ),
    )


def addon_processes(kubeconfig: Path, state_dir: Path) -> list[ProcessSpec]:
    """The addon controllers; start them once crd_manifests() are Established.

    Builds any binary not yet cached, which takes minutes the first time.
    """
    return [
        metallb_process(kubeconfig),
        local_path_process(kubeconfig, state_dir),
        cert_manager_process(kubeconfig),
    ]
