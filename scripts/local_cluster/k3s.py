"""The k3s lane: a single-node k3s in the local cluster's network-namespace design.

`invoke cluster.up --k3s` runs k3s (built from source by k3s_build.py) with its
embedded containerd, in the same network namespace, holder process, cgroup and state
directory as the home-built cluster (network.py, supervisor.py, paths.py), so the same
guarantees hold and `cluster.down` ends either one. Only one of the two runs at a time:
they share the namespace, the address ranges and the kubeconfig path.

k3s writes to host paths of its own (/etc/rancher, /var/lib/rancher, /var/lib/kubelet,
/var/lib/cni, /var/log, /run). Inside the holder's private mount namespace each of
them is a directory under K3S_ROOT (/run a tmpfs), so the node sees k3s's defaults,
node trust's default certs_dir included, while the host sees none of it and
`cluster.down` removes it with the state directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from registry_provisioner.progress import step

from . import addons, cluster, control_plane, images, network, node_config, supervisor, versions
from .k3s_build import K3sBinaries, build_k3s, cache_key, containerd_template, go_version
from .node_config import NodeLayout
from .paths import FLAVOR_FILE, KUBECONFIG, LOG_DIR, STATE_DIR
from .processes import ProcessSpec
from .supervisor import Supervisor

FLAVOR = "k3s"
PROCESS = "k3s"
K3S_ROOT = STATE_DIR / "k3s"
# The node's view: k3s's own defaults.
DATA_DIR = Path("/var/lib/rancher/k3s")
CERTS_DIR = DATA_DIR / "agent" / "etc" / "containerd" / "certs.d"
REGISTRIES_YAML = Path("/etc/rancher/k3s/registries.yaml")
# Host paths k3s writes to; inside the cluster each is a directory under K3S_ROOT/root.
PRIVATE_PATHS = (
    Path("/etc/rancher"),
    Path("/var/lib/rancher"),
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/var/log"),
)
# Mount points this lane had to create on the host (removed, if empty, by down()).
CREATED_MOUNT_POINTS = K3S_ROOT / "created-mount-points"
# The node's pod network: the home-built cluster's bridge CNI config, under K3S_ROOT.
NODE = NodeLayout(K3S_ROOT / "node")
CLUSTER_DNS = "10.215.0.10"  # unused: CoreDNS is off, as no image for it is built
DISABLED = ("traefik", "servicelb", "metrics-server", "local-storage", "coredns")


def host_path(node_path: Path) -> Path:
    """Where a path the k3s node sees under one of PRIVATE_PATHS lives on the host."""
    return K3S_ROOT / "root" / node_path.relative_to("/")


def certs_dir_on_host() -> Path:
    return host_path(CERTS_DIR)


def registries_yaml_on_host() -> Path:
    return host_path(REGISTRIES_YAML)


def is_running() -> bool:
    processes = Supervisor(STATE_DIR, LOG_DIR)
    return processes.running(supervisor.HOLDER) and processes.running(PROCESS)


# --- files k3s reads -----------------------------------------------------------


def containerd_config_template(k3s_template: str) -> str:
    """k3s's own version-3 template with two changes it has no flag for.

    `restrict_oom_score_adj`, which k3s sets only in a user namespace: this machine
    withholds CAP_SYS_RESOURCE, so the pause container's negative OOM score cannot be
    set (the home-built cluster's containerd clamps it the same way). And the CNI
    directories, which k3s fills in only with flannel: Debian's plugins and the bridge
    config. k3s renders the rest (config_path, registries.yaml's auth) as usual.
    """
    runtime = re.compile(r"^\[plugins\.'io\.containerd\.cri\.v1\.runtime'\]\n", re.MULTILINE)
    in_userns = "  disable_apparmor = true\n  restrict_oom_score_adj = true\n"
    cni = re.compile(r"\{\{- if or \.NodeConfig\.AgentConfig\.CNIBinDir .*?\n\{\{ end \}\}", re.S)
    for name, count in (
        ("the CRI runtime table", len(runtime.findall(k3s_template))),
        ("the user-namespace block", k3s_template.count(in_userns)),
        ("the CNI block", len(cni.findall(k3s_template))),
    ):
        if count != 1:
            raise RuntimeError(f"k3s's containerd template changed: {name} found {count} times")
    text = runtime.sub(
        "[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n",
        k3s_template,
    )
    text = text.replace(in_userns, "  disable_apparmor = true\n")
    section = (
        "[plugins.'io.containerd.cri.v1.runtime'.cni]\n"
        f'  bin_dirs = ["{node_config.CNI_BIN_DIR}"]\n'
        f'  conf_dir = "{NODE.cni_conf_dir}"'
    )
    return cni.sub(lambda _: section, text)


def _write_node_files(binaries: K3sBinaries, archives: list[Path]) -> Path:
    """Links on k3s's PATH, the containerd template, the CNI config and the images to
    preload; returns the PATH directory."""
    bin_dir = K3S_ROOT / "bin"
    bin_dir.mkdir(parents=True)
    # k3s runs the containerd on its PATH; its bundle would link it to k3s itself.
    for name in ("k3s", "containerd", "ctr", "kubectl"):
        (bin_dir / name).symlink_to(binaries.k3s)
    (bin_dir / "containerd-shim-runc-v2").symlink_to(binaries.shim)
    template = host_path(DATA_DIR / "agent" / "etc" / "containerd" / "config-v3.toml.tmpl")
    template.parent.mkdir(parents=True)
    k3s_template = containerd_template(cache_key(go_version())).read_text()
    template.write_text(containerd_config_template(k3s_template))
    NODE.cni_conf_dir.mkdir(parents=True)
    (NODE.cni_conf_dir / "10-local-pods.conflist").write_text(node_config.cni_conflist(NODE))
    # The k3s way to preload: tarballs in the agent's images directory.
    images_dir = host_path(DATA_DIR / "agent" / "images")
    images_dir.mkdir(parents=True)
    for archive in archives:
        os.link(archive, images_dir / archive.name)
    # k3s replaces a resolv.conf naming a loopback server with one naming a public one.
    (K3S_ROOT / "resolv.conf").write_text(f"nameserver {CLUSTER_DNS}\n")
    return bin_dir


def _private_mounts(processes: Supervisor) -> None:
    """Give the holder's mount namespace k3s's host paths, kept under K3S_ROOT."""
    holder = processes.pid(supervisor.HOLDER)
    if holder is None:
        raise cluster.ClusterStartError(f"the namespace holder is not running; see {LOG_DIR}")

    def inside(*command: str) -> None:
        subprocess.run(["nsenter", f"--target={holder}", "--mount", "--", *command], check=True)

    created = []
    for path in PRIVATE_PATHS:
        host_path(path).mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.mkdir(parents=True)
            created.append(str(path))
            CREATED_MOUNT_POINTS.write_text("\n".join(created) + "\n")
        inside("mount", "--bind", str(host_path(path)), str(path))
    # /run: sockets, runc's state, pod network namespaces; a tmpfs of the cluster's own.
    inside("mount", "-t", "tmpfs", "tmpfs", "/run")
    inside("mkdir", "-p", "/run/netns")


def remove_created_mount_points() -> None:
    """The empty directories up() had to make on the host as mount points."""
    try:
        created = CREATED_MOUNT_POINTS.read_text().split()
    except FileNotFoundError:
        return
    for path in reversed(created):
        try:
            Path(path).rmdir()
        except FileNotFoundError:
            pass
        except OSError as error:  # not empty: not ours to remove
            print(f"left {path} in place: {error.strerror}")


def server_spec(binaries: K3sBinaries, bin_dir: Path, admission: Path) -> ProcessSpec:
    """`k3s server` with k3s's defaults, less what needs images or cloud; netpol stays on."""
    args = [
        str(bin_dir / "k3s"),
        "server",
        f"--node-name={network.NODE_NAME}",
        f"--node-ip={network.NODE_IP}",
        f"--advertise-address={network.NODE_IP}",
        f"--tls-san={network.NODE_IP}",
        f"--cluster-cidr={network.POD_CIDR}",
        f"--service-cidr={network.SERVICE_CIDR}",
        f"--cluster-dns={CLUSTER_DNS}",
        "--flannel-backend=none",
        f"--disable={','.join(DISABLED)}",
        "--disable-helm-controller",
        f"--pause-image={versions.PAUSE_IMAGE}",
        f"--resolv-conf={K3S_ROOT / 'resolv.conf'}",
        f"--write-kubeconfig={K3S_ROOT / 'k3s.yaml'}",
        "--write-kubeconfig-mode=0600",
        f"--kube-apiserver-arg=admission-control-config-file={admission}",
        "--kubelet-arg=fail-cgroupv1=false",
        # Nothing could pull the pause image again offline: never collect images.
        "--kubelet-arg=image-gc-high-threshold=100",
        "--kubelet-arg=image-gc-low-threshold=99",
        "--kubelet-arg=eviction-hard=memory.available<100Mi,nodefs.available<1%,"
        "imagefs.available<1%",
        "--kubelet-arg=serialize-image-pulls=false",
        # As the home-built cluster's kube-proxy: no br_netfilter, no conntrack sysctls.
        "--kube-proxy-arg=masquerade-all=true",
        "--kube-proxy-arg=conntrack-max-per-core=0",
        "--kube-proxy-arg=conntrack-min=0",
        "--kube-proxy-arg=conntrack-tcp-timeout-established=0s",
        "--kube-proxy-arg=conntrack-tcp-timeout-close-wait=0s",
    ]
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return ProcessSpec(PROCESS, tuple(args), env={"PATH": path})


# --- up, restart, down -------------------------------------------------------


def _api_client() -> httpx.Client:
    """The API server as k3s's admin, from the certificates k3s wrote."""
    tls = DATA_DIR / "server" / "tls"
    context = ssl.create_default_context(cafile=str(host_path(tls / "server-ca.crt")))
    context.load_cert_chain(
        host_path(tls / "client-admin.crt"), host_path(tls / "client-admin.key")
    )
    return httpx.Client(
        base_url=f"https://{network.NODE_IP}:{network.APISERVER_PORT}", verify=context, timeout=5
    )


def _write_kubeconfig() -> None:
    """k3s's kubeconfig, naming the node's address: its 127.0.0.1 is inside the namespace."""
    text = (K3S_ROOT / "k3s.yaml").read_text()
    server = f"https://{network.NODE_IP}:{network.APISERVER_PORT}"
    KUBECONFIG.touch(mode=0o600)
    KUBECONFIG.write_text(re.sub(r"https://127\.0\.0\.1:\d+", server, text))


def _wait_for_node(processes: Supervisor, since: str = "") -> None:
    """Until k3s has written its kubeconfig, the node is Ready (with a heartbeat from
    `since` on) and kube-router enforces NetworkPolicy."""
    kubeconfig = K3S_ROOT / "k3s.yaml"
    cluster.poll_while_running("k3s's kubeconfig", kubeconfig.exists, 180, processes, PROCESS)
    _write_kubeconfig()
    with _api_client() as api:
        cluster.poll_while_running(
            "the API server to be ready",
            lambda: api.get("/readyz").status_code == 200,
            120,
            processes,
            PROCESS,
        )
        cluster.poll_while_running(
            "the node to be Ready",
            lambda: cluster.node_ready(api, since),
            180,
            processes,
            PROCESS,
        )
    cluster.poll_while_running(
        "k3s's network policy controller's chains",
        cluster.netpol_chains_present,
        60,
        processes,
        PROCESS,
    )


def build_all() -> tuple[K3sBinaries, list[Path], list[ProcessSpec]]:
    """Every binary and image the k3s lane runs, built once and cached by version."""
    binaries = build_k3s()
    archives = images.build_images()
    addon_specs = addons.addon_processes(KUBECONFIG, STATE_DIR)  # builds the addons
    return binaries, archives, addon_specs


def up() -> Path:
    """Start the k3s cluster (building what is missing) and return the kubeconfig path."""
    if is_running():
        print(f"k3s cluster already running; kubeconfig: {KUBECONFIG}")
        return KUBECONFIG
    if STATE_DIR.exists() or network.namespace_exists():
        with step("clearing the remains of an earlier run"):
            cluster.down()
    binaries, archives, addon_specs = build_all()
    started = time.monotonic()
    processes = Supervisor(STATE_DIR, LOG_DIR)
    K3S_ROOT.mkdir(parents=True)
    FLAVOR_FILE.write_text(f"{FLAVOR}\n")
    bin_dir = _write_node_files(binaries, archives)
    admission = control_plane.write_admission_config(
        STATE_DIR / "admission.yaml", ("kube-system", *addons.NAMESPACES)
    )
    network.create_namespace()
    processes.start_holder()
    _private_mounts(processes)
    processes.start(server_spec(binaries, bin_dir, admission))
    _wait_for_node(processes)
    asyncio.run(cluster.start_addons(processes, KUBECONFIG, addon_specs))
    print(f"k3s cluster up in {time.monotonic() - started:.0f}s; kubeconfig: {KUBECONFIG}")
    return KUBECONFIG


def restart_server() -> None:
    """Stop the k3s server process and start it again, as `systemctl restart k3s` does.

    Its embedded containerd goes with it; the pods' shims and containers stay.
    """
    processes = Supervisor(STATE_DIR, LOG_DIR)
    processes.stop(PROCESS)
    # k3s writes its kubeconfig anew as it starts: waiting for it waits for this start.
    (K3S_ROOT / "k3s.yaml").unlink(missing_ok=True)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    admission = STATE_DIR / "admission.yaml"
    processes.start(server_spec(build_k3s(), K3S_ROOT / "bin", admission))
    _wait_for_node(processes, since)


class K3sCluster:
    """The `cluster` fixture's view of the k3s lane, as LocalCluster is of the home-built one."""

    name = "registry-local-k3s"
    kubeconfig_path = KUBECONFIG

    def create(self) -> None:
        up()

    def kubectl(self, *args: str) -> str:
        command = [str(build_k3s().k3s), "kubectl", f"--kubeconfig={self.kubeconfig_path}"]
        return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout
