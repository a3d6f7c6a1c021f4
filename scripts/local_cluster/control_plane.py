"""The command lines of the cluster's core processes, in start order."""

from __future__ import annotations

from pathlib import Path

import yaml

from . import network
from .node_config import NodeLayout
from .pki import Pki
from .processes import ProcessSpec


def etcd(kube: Path, data_dir: Path) -> ProcessSpec:
    # Loopback only: inside the namespace, nothing but the apiserver reaches it.
    return ProcessSpec(
        "etcd",
        (
            str(kube),
            "etcd",
            "--data-dir",
            str(data_dir),
            "--listen-client-urls",
            "http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "default=http://127.0.0.1:2380",
            "--listen-metrics-urls",
            "http://127.0.0.1:2381",
            "--quota-backend-bytes",
            str(2 * 1024**3),
            "--unsafe-no-fsync",  # a throwaway test cluster: speed over crash safety
        ),
    )


def write_admission_config(path: Path, exempt_namespaces: tuple[str, ...]) -> Path:
    """Pod Security Admission enforcing `restricted` wherever a namespace says nothing.

    A hardened homelab (k3s with the same AdmissionConfiguration) looks like this, so
    every test and the demo run under it. Only the cluster's own namespaces are exempt:
    local-path's helper pods run as root with a host path.
    """
    levels = {
        f"{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn")
        for suffix, value in (("", "restricted"), ("-version", "latest"))
    }
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1",
                    "kind": "PodSecurityConfiguration",
                    "defaults": levels,
                    "exemptions": {
                        "usernames": [],
                        "runtimeClasses": [],
                        "namespaces": sorted(exempt_namespaces),
                    },
                },
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def kube_apiserver(kube: Path, pki: Pki, admission_config: Path) -> ProcessSpec:
    return ProcessSpec(
        "kube-apiserver",
        (
            str(kube),
            "kube-apiserver",
            "--etcd-servers",
            "http://127.0.0.1:2379",
            "--advertise-address",
            network.NODE_IP,
            "--bind-address",
            "0.0.0.0",
            "--secure-port",
            str(network.APISERVER_PORT),
            "--service-cluster-ip-range",
            network.SERVICE_CIDR,
            "--client-ca-file",
            str(pki.ca_cert),
            "--tls-cert-file",
            str(pki.cert("apiserver")),
            "--tls-private-key-file",
            str(pki.key("apiserver")),
            "--kubelet-client-certificate",
            str(pki.cert("apiserver-kubelet-client")),
            "--kubelet-client-key",
            str(pki.key("apiserver-kubelet-client")),
            # The node's name resolves nowhere; its InternalIP is routable.
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            str(pki.service_account_pub),
            "--service-account-signing-key-file",
            str(pki.service_account_key),
            "--authorization-mode",
            "Node,RBAC",
            "--allow-privileged=true",
            "--admission-control-config-file",
            str(admission_config),
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ),
    )


def _controller_flags(pki: Pki) -> tuple[str, ...]:
    """What the controller-manager and the scheduler share: one identity, loopback, no election."""
    admin = str(pki.kubeconfig("admin"))
    return (
        f"--kubeconfig={admin}",
        f"--authentication-kubeconfig={admin}",
        f"--authorization-kubeconfig={admin}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    )


def kube_controller_manager(kube: Path, pki: Pki) -> ProcessSpec:
    return ProcessSpec(
        "kube-controller-manager",
        (
            str(kube),
            "kube-controller-manager",
            *_controller_flags(pki),
            "--service-account-private-key-file",
            str(pki.service_account_key),
            "--root-ca-file",
            str(pki.ca_cert),
            "--cluster-signing-cert-file",
            str(pki.ca_cert),
            "--cluster-signing-key-file",
            str(pki.ca_key),
            "--service-cluster-ip-range",
            network.SERVICE_CIDR,
            "--controllers",
            "*,-cloud-node-lifecycle,-service-lb-controller,-route",
        ),
    )


def kube_scheduler(kube: Path, pki: Pki) -> ProcessSpec:
    return ProcessSpec(
        "kube-scheduler",
        (
            str(kube),
            "kube-scheduler",
            *_controller_flags(pki),
            # A pod whose binding failed while the API server was away waits for an event
            # to be retried, 5 min at most by default; a test cluster should recover fast.
            "--pod-max-in-unschedulable-pods-duration=10s",
        ),
    )


def containerd(node: NodeLayout) -> ProcessSpec:
    return ProcessSpec("containerd", ("containerd", "--config", str(node.containerd_config)))


def kubelet(kube: Path, node: NodeLayout, pki: Pki) -> ProcessSpec:
    return ProcessSpec(
        "kubelet",
        (
            str(kube),
            "kubelet",
            "--config",
            str(node.kubelet_config),
            "--kubeconfig",
            str(pki.kubeconfig("kubelet")),
            "--root-dir",
            str(node.kubelet_root),
            "--cert-dir",
            str(node.kubelet_root / "pki"),
            "--hostname-override",
            network.NODE_NAME,
            "--node-ip",
            network.NODE_IP,
        ),
    )


def kube_proxy(kube: Path, node: NodeLayout) -> ProcessSpec:
    return ProcessSpec(
        "kube-proxy", (str(kube), "kube-proxy", "--config", str(node.kube_proxy_config))
    )


def network_policy(binary: Path, pki: Pki) -> ProcessSpec:
    """kube-router's firewall alone, in the node's namespace like kube-proxy (which stays).

    Its iptables chains and ipsets live in that namespace and go with it.
    """
    return ProcessSpec(
        "kube-router-netpol",
        (
            str(binary),
            f"--kubeconfig={pki.kubeconfig('admin')}",
            f"--hostname-override={network.NODE_NAME}",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        ),
    )
