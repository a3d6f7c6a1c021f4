#!/usr/bin/env bash
# Installs what the tasks and the local cluster need on a Debian machine:
# the node's runtime pieces from Debian, and the Python packages.
# Go (>= 1.24) must already be on PATH: it builds the cluster's components.
set -euo pipefail

debian_packages=(
  containerd runc containernetworking-plugins  # the node's container runtime and pod network
  iptables conntrack iproute2 util-linux       # kube-proxy, namespaces (nsenter, unshare)
  ipset                                         # kube-router's NetworkPolicy enforcement
  umoci busybox-static                          # building the cluster's images without Docker
  skopeo                                        # a real OCI client for the tests and the demo
  redis-server                                  # copied into the cluster's redis image (the
                                                # replicas' shared cache); never run as a service
  docker.io                                     # the client README tells users to run; tests start
                                                # their own dockerd, never the packaged service
)

if ! command -v go >/dev/null; then
  echo "error: Go is not on PATH; install Go 1.24 or newer first" >&2
  exit 1
fi

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  # Keep the packaged containerd and docker services from starting: the cluster runs its
  # own containerd, and the Docker test its own dockerd.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "==> installing Python packages from requirements.txt"
python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/../requirements.txt"

echo "==> byte-compiling the project"
(cd "$(dirname "$0")/.." && python3 -m scripts.byte_compile)
