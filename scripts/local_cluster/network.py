"""The local cluster's addresses.

Everything runs in one network namespace joined to the host by a veth pair.
The namespace has no default route, so nothing the cluster does can leave the
machine; the host routes only the cluster's own ranges into it.
"""

NETNS = "registry-local-cluster"
HOST_VETH = "rlc-host"
NODE_VETH = "rlc-node"
LINK_CIDR = "10.213.0.0/24"
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
