"""Every pinned version of the local cluster, in one place.

Build artefacts are cached under a key made from these, so bumping a version
here is all it takes to rebuild that component.
"""

KUBERNETES = "v1.34.4"
# etcd is linked into the kubernetes binary at the server version that
# k8s.io/kubernetes itself requires, so client and server match.
ETCD = "v3.6.4"
METALLB = "v0.15.2"
LOCAL_PATH_PROVISIONER = "v0.0.30"
CERT_MANAGER = "v1.21.2"
DISTRIBUTION = "v3.1.2"
# The Ansible notebook's `registry:2`: distribution v2.8 as its last release under
# the old module path (no go.mod, so +incompatible). Only the tests of taking over
# a notebook's registry run it.
DISTRIBUTION_V2 = "v2.8.3+incompatible"
# The authenticating TLS proxy in front of the registry: per-login rights (a
# pull-only login) and a cache of bcrypt checks. Its go.mod has no replace lines.
CADDY = "v2.11.9"
# NetworkPolicy enforcement: kube-router's network policy controller as k3s
# v1.34.3+k3s1 embeds it, from k3s's fork (its go.mod replaces
# github.com/cloudnativelabs/kube-router/v2 with this). The checksums are the ones
# k3s's go.sum pins; the checksum database does not list the fork.
KUBE_ROUTER_FORK = "github.com/k3s-io/kube-router/v2"
KUBE_ROUTER = "v2.6.3-k3s1"
KUBE_ROUTER_SUMS = (
    "h1:RZjUBIuitXCuYoCzm1aM6p5EgQFC5k3N72j4pBIc2j4=",
    "h1:RaxDc+SBKB33+fjao+LeDue4CaUajk02eCHXVK/V4YE=",  # its go.mod
)
# helm, for the bench's peer figure (the twuni chart's install path). Its
# go.mod has no replace lines, so it builds from a plain require.
HELM = "v3.22.0"
# The S3-compatible object store the scale-out tests put the registry's images in
# (Apache-2.0; its go.mod has no replace lines, so it builds from a plain require).
VERSITYGW = "v1.8.0"
# The shared blob-descriptor cache of several registry replicas: Debian's redis
# server package, copied into an image with the libraries it links.
REDIS_DEB = "redis-server"
# The OCI distribution-spec conformance suite has no release tags for its Go
# module; the proxy serves only this pseudo-version (its `@latest`).
OCI_CONFORMANCE = "v0.0.0-20260831232431-97274622c111"

# The image names the manifests use. The registry's is the upstream name, so
# the default config works unchanged on a real cluster.
REGISTRY_IMAGE = "docker.io/library/registry:3.1.2"
# Upstream's name for the Caddy release pinned above: the default proxy.image.
CADDY_IMAGE = "docker.io/library/caddy:2.11.9"
# The name the notebook's Deployment gives (`registry:2`), as containerd spells it.
NOTEBOOK_REGISTRY_IMAGE = "docker.io/library/registry:2"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
HELPER_IMAGE = "local.test/busybox:static"
VERSITYGW_IMAGE = f"local.test/versitygw:{VERSITYGW}"
REDIS_IMAGE = "local.test/redis:debian"

# The k3s lane (`invoke cluster.up --k3s`): k3s built from its source tree, which the
# proxy does not serve (paths.K3S_SOURCE), at this release and commit. Its go.sum pins
# the rest, the containerd fork it embeds and whose shim is built beside it included.
K3S = "v1.34.3+k3s1"
K3S_COMMIT = "151ca514ec7c7c7565d693f9e6b72ea53c70be55"
K3S_CONTAINERD = "v2.1.5-k3s1"
