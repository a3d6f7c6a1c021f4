"""The local cluster's addresses.

Everything runs in one network namespace joined to the host by a veth pair.
The namespace has no default route, so nothing the cluster does can leave the
machine; the host routes only the cluster's own ranges into it.
"""

import ipaddress
import json
import subprocess
from pathlib import Path

from registry_provisioner.errors import ProvisionError

NETNS = "registry-local-cluster"
HOST_VETH = "rlc-host"
NODE_VETH = "rlc-node"
# The host and the node share 10.213.0.0/24 over the veth pair.
HOST_IP = "10.213.0.1"
NODE_IP = "10.213.0.2"
NODE_NAME = "local-node"
# MetalLB hands LoadBalancer IPs out of this pool.
LOADBALANCER_CIDR = "10.213.1.0/24"
LOADBALANCER_POOL = "10.213.1.10-10.213.1.60"
POD_CIDR = "10.214.0.0/16"
SERVICE_CIDR = "10.215.0.0/16"
KUBERNETES_SERVICE_IP = "10.215.0.1"
APISERVER_PORT = 6443
# Ranges the host routes into the namespace; nothing else is routed there.
ROUTED_INTO_CLUSTER = (LOADBALANCER_CIDR, POD_CIDR, SERVICE_CIDR)
# Every range of the cluster's; while it is down they follow the default route.
CLUSTER_RANGES = ("10.213.0.0/16", POD_CIDR, SERVICE_CIDR)


class LeavesMachine(ProvisionError):
    """An address of the local cluster that would be sent off this machine."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespace_exists() -> bool:
    return Path("/var/run/netns", NETNS).exists()


def create_namespace() -> None:
    """The namespace, its veth link to the host, and host routes to the cluster's ranges."""
    _ip("netns", "add", NETNS)
    _ip("link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH, "netns", NETNS)
    _ip("addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH)
    _ip("link", "set", HOST_VETH, "up")
    _ip("-n", NETNS, "addr", "add", f"{NODE_IP}/24", "dev", NODE_VETH)
    _ip("-n", NETNS, "link", "set", NODE_VETH, "up")
    _ip("-n", NETNS, "link", "set", "lo", "up")
    # No default route inside: a packet for anywhere else has nowhere to go. The pool
    # is local inside, so the node itself (containerd pulling from a LoadBalancer IP)
    # gets a route that kube-proxy's DNAT can then rewrite; nothing leaves for it.
    _ip("-n", NETNS, "route", "add", "local", LOADBALANCER_CIDR, "dev", "lo")
    for cidr in ROUTED_INTO_CLUSTER:
        _ip("route", "replace", cidr, "via", NODE_IP, "dev", HOST_VETH)
    subprocess.run(
        ["ip", "netns", "exec", NETNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
    )


def delete_namespace() -> None:
    """Deleting the namespace takes its veth pair, routes and iptables rules with it."""
    if namespace_exists():
        _ip("netns", "delete", NETNS)
    # The kernel removes the pair a moment after the namespace: it may go between the
    # two commands. Gone is what counts.
    if _ip("link", "delete", HOST_VETH, check=False).returncode != 0 and _link_exists(HOST_VETH):
        raise RuntimeError(
            f"could not delete the host's link {HOST_VETH}: ip link delete {HOST_VETH}"
        )


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def route_device(address: str) -> str:
    """The interface the kernel would send a packet for `address` out of."""
    [route] = json.loads(_ip("-j", "route", "get", address).stdout)
    return route.get("dev", "")


def ensure_routed_into_cluster(*addresses: str, what: str = "") -> None:
    """Refuse before anything is sent to a cluster address that routes off the machine.

    While the local cluster is down, its ranges are not routed into its namespace
    and follow the host's default route: a packet for them would reach someone
    else's network. Loopback and addresses outside the cluster's ranges pass.
    `what` names where the address comes from, e.g. the setting.
    """
    ranges = [ipaddress.ip_network(cidr) for cidr in CLUSTER_RANGES]
    for address in addresses:
        if not any(ipaddress.ip_address(address) in cidr for cidr in ranges):
            continue
        device = route_device(address)
        if device != HOST_VETH:
            named = f"{what} {address}" if what else address
            raise LeavesMachine(
                f"{named} is a local-cluster address, but it routes out of {device}, off "
                "this machine, so nothing was sent: the local cluster is not up (start it "
                "with `invoke cluster.up`), or the address is in none of the ranges it "
                f"routes ({', '.join(ROUTED_INTO_CLUSTER)})"
            )
