"""The Go components of the local cluster: which modules, versions and flags."""

from __future__ import annotations

import re
from pathlib import Path

from . import versions
from .build import GoComponent, download_module


def _staging_replaces(kubernetes_version: str) -> dict[str, str]:
    """k8s.io/kubernetes points its staging modules at ./staging; point them at the proxy."""
    mod_file = Path(download_module("k8s.io/kubernetes", kubernetes_version)["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", mod_file, re.MULTILINE)
    staging_version = "v0." + kubernetes_version.removeprefix("v1.")
    return {module: staging_version for module in staging}


def _version_ldflags(package: str, version: str) -> tuple[str, ...]:
    major, minor = version.removeprefix("v").split(".")[:2]
    return (
        f"-X {package}.gitVersion={version}",
        f"-X {package}.gitMajor={major}",
        f"-X {package}.gitMinor={minor}",
        f"-X {package}.gitTreeState=clean",
    )


def kubernetes() -> GoComponent:
    version = versions.KUBERNETES
    return GoComponent(
        name="kubernetes",
        requires={"k8s.io/kubernetes": version, "go.etcd.io/etcd/server/v3": versions.ETCD},
        replaces=_staging_replaces(version),
        tags=("providerless",),
        ldflags=_version_ldflags("k8s.io/component-base/version", version)
        + _version_ldflags("k8s.io/client-go/pkg/version", version),
        godebug="default=go1.24",
    )


def distribution() -> GoComponent:
    """The registry binary, the same one the registry image runs."""
    return GoComponent(
        name="distribution",
        requires={"github.com/distribution/distribution/v3": versions.DISTRIBUTION},
        package="github.com/distribution/distribution/v3/cmd/registry",
    )


def distribution_v2() -> GoComponent:
    """The registry binary of distribution v2.8, which the Ansible notebook ran as `registry:2`.

    Our main (go/distribution2) is upstream's cmd/registry without the cloud storage
    drivers, whose SDKs' old APIs the proxy no longer serves. rsc.io/letsencrypt is not
    served either: a local stand-in refuses Let's Encrypt, which nothing here configures.
    The logstash hook is held at the API v2.8 was written against.
    """
    return GoComponent(
        name="distribution2",
        requires={
            "github.com/docker/distribution": versions.DISTRIBUTION_V2,
            "rsc.io/letsencrypt": "v0.0.0",
        },
        replaces={
            "rsc.io/letsencrypt": "./letsencrypt",
            "github.com/bshuster-repo/logrus-logstash-hook": "v0.4.1",
        },
        ldflags=(
            "-X github.com/docker/distribution/version.Version="
            + versions.DISTRIBUTION_V2.removesuffix("+incompatible"),
        ),
    )


def caddy() -> GoComponent:
    """Caddy as upstream's own main builds it, with the standard modules.

    It terminates TLS in front of the registry and gives each login its rights;
    see docs/pull-only-login.md.
    """
    return GoComponent(
        name="caddy",
        requires={"github.com/caddyserver/caddy/v2": versions.CADDY},
        package="github.com/caddyserver/caddy/v2/cmd/caddy",
        # Go records caddy as the main module here, where `caddy version` does not look.
        ldflags=(f"-X github.com/caddyserver/caddy/v2.CustomVersion={versions.CADDY}",),
        # The module itself declares go 1.26.0; ours may not be older.
        go_directive="1.26.0",
    )


def helm() -> GoComponent:
    """helm v3, built like the cluster's other binaries, for the bench's helm peer.

    The bench installs the twuni chart with it to time the path a helm user takes.
    """
    return GoComponent(
        name="helm",
        requires={"helm.sh/helm/v3": versions.HELM},
        package="helm.sh/helm/v3/cmd/helm",
        # Without it `helm version` reports only the minor ("v3.22").
        ldflags=(f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}",),
        # The module itself declares go 1.26.0; ours may not be older.
        go_directive="1.26.0",
    )


def conformance() -> GoComponent:
    """The OCI distribution-spec conformance suite: its module root is the main package."""
    module = "github.com/opencontainers/distribution-spec/conformance"
    return GoComponent(
        name="oci-conformance",
        requires={module: versions.OCI_CONFORMANCE},
        package=module,
        # Built from the proxy there is no VCS stamp; record the version in the reports.
        ldflags=(f"-X main.Version={versions.OCI_CONFORMANCE}",),
    )


def versitygw() -> GoComponent:
    """versitygw, an S3 gateway over a POSIX directory: the object store of the scale-out tests."""
    package = "github.com/versity/versitygw/cmd/versitygw"
    return GoComponent(
        name="versitygw",
        requires={"github.com/versity/versitygw": versions.VERSITYGW},
        package=package,
        ldflags=(f"-X main.Version={versions.VERSITYGW}",),
        # The module itself declares go 1.25.0; ours may not be older.
        go_directive="1.25.0",
    )


def metallb() -> GoComponent:
    """MetalLB's controller alone: it assigns LoadBalancer IPs, nothing needs announcing."""
    # v0.15.2's go.mod has no replace lines, so its main builds from a plain require.
    return GoComponent(
        name="metallb",
        requires={"go.universe.tf/metallb": versions.METALLB},
        package="go.universe.tf/metallb/controller",
    )


def local_path_provisioner() -> GoComponent:
    """The dynamic provisioner behind the local-path and longhorn StorageClasses."""
    return GoComponent(
        name="local-path-provisioner",
        requires={"github.com/rancher/local-path-provisioner": versions.LOCAL_PATH_PROVISIONER},
        package="github.com/rancher/local-path-provisioner",
        ldflags=(f"-X main.VERSION={versions.LOCAL_PATH_PROVISIONER}",),
    )


def cert_manager() -> GoComponent:
    """cert-manager's controllers, from our own main in go/cert-manager.

    Upstream's main is a nested module the proxy cannot serve, so go/cert-manager
    wires the root module's public pkg/controller packages itself.
    """
    return GoComponent(
        name="cert-manager",
        requires={"github.com/cert-manager/cert-manager": versions.CERT_MANAGER},
        ldflags=(
            f"-X github.com/cert-manager/cert-manager/pkg/util.AppVersion={versions.CERT_MANAGER}",
        ),
        # The module itself declares go 1.26.0; ours may not be older.
        go_directive="1.26.0",
    )


def kube_router_netpol() -> GoComponent:
    """kube-router's network policy controller alone, from our main in go/kube-router-netpol.

    The module is k3s's fork at the version k3s pins, which is what k3s users run;
    client-go is the cluster's own version, as in k3s.
    """
    upstream = "github.com/cloudnativelabs/kube-router/v2"
    fork, version = versions.KUBE_ROUTER_FORK, versions.KUBE_ROUTER
    staging = "v0." + versions.KUBERNETES.removeprefix("v1.")
    module_sum, mod_sum = versions.KUBE_ROUTER_SUMS
    return GoComponent(
        name="kube-router-netpol",
        requires={
            upstream: version,
            "k8s.io/api": staging,
            "k8s.io/apimachinery": staging,
            "k8s.io/client-go": staging,
        },
        replaces={upstream: f"{fork} {version}"},
        go_sum=(f"{fork} {version} {module_sum}", f"{fork} {version}/go.mod {mod_sum}"),
        ldflags=(f"-X {upstream}/pkg/version.Version={version}",),
    )


def pause() -> GoComponent:
    """The pause image's only binary; offline, the upstream image cannot be pulled."""
    return GoComponent(name="pause", requires={})
