"""Config files for the node: containerd, the pod network, kubelet and kube-proxy.

Every path points into the cluster's state dir, so nothing is written to the
host's own containerd or kubelet locations and `cluster.down` can remove it all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import network, versions
from .pki import Pki

POD_SUBNET = "10.214.0.0/24"  # the one node's slice of network.POD_CIDR
CNI_BIN_DIR = "/usr/lib/cni"


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps its state; all under one root."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def registry_certs_dir(self) -> Path:
        """containerd's per-registry hosts.toml directory (what node trust writes)."""
        return self.root / "containerd" / "certs.d"

    @property
    def hosts_file(self) -> Path:
        """The node's /etc/hosts (bind-mounted there in the cluster's mount namespace)."""
        return self.root / "hosts"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"


def containerd_toml(node: NodeLayout) -> str:
    # Debian's containerd 1.6 speaks config version 2. Image GC is kept off the
    # pause image by the kubelet's thresholds (nothing could pull it again).
    return f"""version = 2
root = "{node.containerd_root}"
state = "{node.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{node.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{versions.PAUSE_IMAGE}"
  # This machine withholds CAP_SYS_RESOURCE, so the kubelet's negative OOM scores
  # for pods cannot be set; clamp them to containerd's own instead of failing.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{node.containerd_state / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{node.cni_conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{node.registry_certs_dir}"
"""


def cni_conflist(node: NodeLayout) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "local-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "rlc-pods0",
                    "isGateway": True,
                    "ipMasq": False,  # there is nowhere outside to masquerade to
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(node.root / "cni" / "ipam"),
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(node: NodeLayout, pki: Pki) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki.cert("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this machine has cgroup v1 hierarchies
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "podLogsDir": str(node.root / "pod-logs"),
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        # The pause image cannot be pulled again offline: never collect images.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    return yaml.safe_dump(config)


def kube_proxy_config(pki: Pki) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(pki.kubeconfig("admin"))},
        "hostnameOverride": network.NODE_NAME,
        "clusterCIDR": network.POD_CIDR,
        "bindAddress": network.NODE_IP,
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        # Without br_netfilter, a pod reaching a Service backed by a pod on the
        # same bridge needs SNAT for the reply to come back through iptables.
        "iptables": {"masqueradeAll": True, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        # Leave the kernel's conntrack sysctls alone: the namespace may not own them.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(config)


def write_node_config(node: NodeLayout, pki: Pki) -> None:
    node.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    node.registry_certs_dir.mkdir(parents=True, exist_ok=True)
    node.containerd_config.parent.mkdir(parents=True, exist_ok=True)
    node.containerd_config.write_text(containerd_toml(node))
    # The host's names, to which tests add their own (node_hosts.py): the host's
    # /etc/hosts itself is never changed.
    node.hosts_file.write_text(Path("/etc/hosts").read_text())
    (node.cni_conf_dir / "10-local-pods.conflist").write_text(cni_conflist(node))
    node.kubelet_config.write_text(kubelet_config(node, pki))
    node.kube_proxy_config.write_text(kube_proxy_config(pki))
