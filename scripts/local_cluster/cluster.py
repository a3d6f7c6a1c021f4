"""Bring the local cluster up and down.

`up` is idempotent: a healthy cluster is left alone, the remains of a crashed
one are cleared first. `down` leaves no process, mount, interface, iptables
rule, cgroup or namespace behind.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import kr8s.asyncio

from registry_provisioner import kube
from registry_provisioner.progress import step
from registry_provisioner.waiting import wait_for

from . import addons, control_plane, images, network, supervisor
from .build import build
from .components import kube_router_netpol, kubernetes
from .node_config import NodeLayout, write_node_config
from .paths import KUBECONFIG, LOG_DIR, STATE_DIR
from .pki import Pki, ensure_pki
from .processes import ProcessSpec
from .supervisor import Supervisor

CORE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "kube-router-netpol",
)


class ClusterStartError(RuntimeError):
    """A component did not come up; carries the tail of its log."""


def _layout() -> tuple[Supervisor, NodeLayout, Pki]:
    return Supervisor(STATE_DIR, LOG_DIR), NodeLayout(STATE_DIR / "node"), Pki(STATE_DIR / "pki")


def is_running() -> bool:
    processes, _, _ = _layout()
    return all(processes.running(name) for name in (supervisor.HOLDER, *CORE))


def _api_client(pki: Pki) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.cert("admin"), pki.key("admin"))
    return httpx.Client(
        base_url=f"https://{network.NODE_IP}:{network.APISERVER_PORT}", verify=context, timeout=5
    )


def poll_while_running(
    what: str, check: Callable[[], bool], timeout: float, processes: Supervisor, component: str
) -> None:
    """Block, calling `check` every half second, until it is true.

    Raises with `component`'s log on timeout, or as soon as it dies. (The async
    watch on a Kubernetes object is kube.wait_until.)
    """
    with step(f"waiting for {what} (up to {timeout:.0f}s)", every=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not processes.running(component):
                raise ClusterStartError(
                    f"{component} exited while waiting for {what}. Last lines of "
                    f"{processes.log_path(component)}:\n{processes.log_tail(component)}"
                )
            try:
                if check():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.5)
    raise ClusterStartError(
        f"timed out after {timeout:.0f}s waiting for {what}. Last lines of "
        f"{processes.log_path(component)}:\n{processes.log_tail(component)}"
    )


def node_ready(api: httpx.Client, since: str = "") -> bool:
    """The node reports Ready; with `since` (RFC 3339, UTC), in a heartbeat from then on."""
    node = api.get(f"/api/v1/nodes/{network.NODE_NAME}")
    if node.status_code != 200:
        return False
    conditions = node.json().get("status", {}).get("conditions", [])
    return any(
        c["type"] == "Ready" and c["status"] == "True" and c.get("lastHeartbeatTime", "") >= since
        for c in conditions
    )


def netpol_chains_present() -> bool:
    """kube-router hooks its chains into FORWARD as it starts enforcing."""
    rules = subprocess.run(
        ["ip", "netns", "exec", network.NETNS, "iptables", "-S", "FORWARD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "KUBE-ROUTER-FORWARD" in rules


def build_all() -> tuple[Path, Path, list[Path], list[ProcessSpec]]:
    """Every binary and image the cluster runs, built once and cached by version."""
    kube = build(kubernetes())
    netpol = build(kube_router_netpol())
    archives = images.build_images()
    addon_specs = addons.addon_processes(KUBECONFIG, STATE_DIR)  # builds the addons
    return kube, netpol, archives, addon_specs


def up() -> Path:
    """Start the cluster (building what is missing) and return the kubeconfig path."""
    if is_running():
        print(f"local cluster already running; kubeconfig: {KUBECONFIG}")
        return KUBECONFIG
    if STATE_DIR.exists() or network.namespace_exists():
        with step("clearing the remains of an earlier run"):
            down()
    kube, netpol, archives, addon_specs = build_all()
    started = time.monotonic()
    processes, node, _ = _layout()
    pki = ensure_pki(STATE_DIR / "pki")
    write_node_config(node, pki)
    network.create_namespace()
    processes.start_holder(node.hosts_file)
    processes.start(control_plane.etcd(kube, STATE_DIR / "etcd"))
    _start_apiserver(processes, kube, pki)
    with _api_client(pki) as api:
        processes.start(control_plane.kube_controller_manager(kube, pki))
        processes.start(control_plane.kube_scheduler(kube, pki))
        processes.start(control_plane.containerd(node))
        socket = node.containerd_socket
        poll_while_running("containerd's socket", socket.exists, 60, processes, "containerd")
        with step("importing the cluster's images into containerd"):
            images.import_images(socket, archives)
        processes.start(control_plane.kubelet(kube, node, pki))
        processes.start(control_plane.kube_proxy(kube, node))
        poll_while_running(
            "the node to be Ready", lambda: node_ready(api), 120, processes, "kubelet"
        )
        # NetworkPolicy is enforced from here on, before any addon or test pod runs.
        processes.start(control_plane.network_policy(netpol, pki))
        poll_while_running(
            "the network policy controller's chains",
            netpol_chains_present,
            60,
            processes,
            "kube-router-netpol",
        )
    shutil.copy(pki.kubeconfig("admin"), KUBECONFIG)
    asyncio.run(start_addons(processes, KUBECONFIG, addon_specs))
    print(f"local cluster up in {time.monotonic() - started:.0f}s; kubeconfig: {KUBECONFIG}")
    return KUBECONFIG


async def start_addons(processes: Supervisor, kubeconfig: Path, specs: list[ProcessSpec]) -> None:
    """CRDs, then the addons' objects and controllers, then proof that each works."""
    api = await kr8s.asyncio.api(kubeconfig=str(kubeconfig))
    crds = addons.crd_manifests()
    await kube.apply_manifests(api, crds)
    for crd in crds:
        found = await kube.object_for(api, crd)
        await wait_for(
            f"CRD {crd['metadata']['name']} to be established",
            lambda found=found: kube.wait_until(found, kube.condition_is("Established")),
            60,
        )
    await kube.apply_manifests(api, addons.addon_manifests(STATE_DIR))
    for spec in specs:
        processes.start(spec)
    issuer = await kube.object_for(api, addons.cluster_issuers()[-1])
    await wait_for(
        f"cert-manager's ClusterIssuer {addons.CLUSTER_ISSUER} to be Ready",
        lambda: kube.wait_until(issuer, kube.condition_is("Ready")),
        120,
        lambda: _log_tails(processes, "cert-manager-controller"),
    )


async def _log_tails(processes: Supervisor, *names: str) -> str:
    return "\n".join(f"{name}:\n{processes.log_tail(name)}" for name in names)


def down() -> None:
    """Stop everything and remove all state except the build cache (either cluster's)."""
    from . import k3s  # the k3s lane shares this state directory and namespace

    processes, _, _ = _layout()
    # The kubelet first, so it does not restart containers as they are ended.
    for name in ("kubelet", "kube-proxy", "kube-router-netpol", k3s.PROCESS):
        processes.stop(name)
    supervisor.stop_all()
    network.delete_namespace()
    _unmount_under(STATE_DIR)
    k3s.remove_created_mount_points()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    print("local cluster down; no process, namespace or state left behind")


def _unmount_under(root: Path) -> None:
    """Mounts live in the holder's namespace, but a crash may have left some here."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def stop_apiserver() -> None:
    """For fault tests: the API server goes away as if it had crashed."""
    processes, _, _ = _layout()
    processes.stop("kube-apiserver")


def start_apiserver() -> None:
    """Bring the API server back after stop_apiserver, and wait until it is ready."""
    processes, _, pki = _layout()
    _start_apiserver(processes, build(kubernetes()), pki)


def _start_apiserver(processes: Supervisor, kubernetes_binary: Path, pki: Pki) -> None:
    admission = control_plane.write_admission_config(
        STATE_DIR / "admission.yaml", ("kube-system", *addons.NAMESPACES)
    )
    processes.start(control_plane.kube_apiserver(kubernetes_binary, pki, admission))
    with _api_client(pki) as api:
        poll_while_running(
            "the API server to be ready",
            lambda: api.get("/readyz").status_code == 200,
            120,
            processes,
            "kube-apiserver",
        )


class LocalCluster:
    """What the tests' `cluster` fixture uses of pytest-kind's KindCluster, for the local cluster.

    One fixture can then hand tests either cluster.
    """

    name = "registry-local-cluster"
    kubeconfig_path = KUBECONFIG

    def create(self) -> None:
        up()

    def kubectl(self, *args: str) -> str:
        command = [str(build(kubernetes())), "kubectl", f"--kubeconfig={self.kubeconfig_path}"]
        return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout
