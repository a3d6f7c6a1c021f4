"""Errors from the API server say what failed and what to do, on one line each."""

from __future__ import annotations

import pytest

from registry_provisioner.errors import ClusterUnreachable, ProvisionError, ReadFailed
from registry_provisioner.kube import read_failure, unreachable


def test_a_forbidden_secret_read_says_which_right_to_check() -> None:
    error = read_failure("secrets/docker-registry-auth", 403, "Forbidden", namespace="registry")
    assert isinstance(error, ProvisionError)
    assert str(error) == (
        "cannot read secrets/docker-registry-auth in namespace registry: HTTP 403 Forbidden "
        "(check your rights: kubectl auth can-i get secrets -n registry)"
    )


def test_a_custom_resource_is_named_with_its_api_group() -> None:
    error = read_failure("clusterissuers/ca", 403, "Forbidden", version="cert-manager.io/v1")
    assert error.what == "clusterissuers.cert-manager.io/ca"
    assert error.hint == "check your rights: kubectl auth can-i get clusterissuers.cert-manager.io"


def test_a_cluster_wide_list_asks_about_every_namespace() -> None:
    error = read_failure("ipaddresspools", 403, "Forbidden", version="metallb.io/v1beta1")
    assert error.what == "ipaddresspools.metallb.io"
    assert error.hint.endswith("kubectl auth can-i list ipaddresspools.metallb.io --all-namespaces")


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "Too Many Requests"), (500, "Internal Server Error"), (503, "Service Unavailable")],
)
def test_an_overloaded_or_failing_server_means_run_again(status: int, reason: str) -> None:
    error = read_failure("namespaces/apps", status, reason)
    assert (error.status, error.reason) == (status, reason)
    assert str(error) == (
        f"cannot read namespaces/apps: HTTP {status} {reason} "
        "(the API server is overloaded or failing: run the same command again)"
    )


def test_rejected_credentials_are_not_a_rights_problem() -> None:
    error = read_failure("secrets/x", 401, "Unauthorized", namespace="registry")
    assert "renew them in the kubeconfig" in error.hint
    assert "can-i" not in error.hint


def test_any_other_answer_is_still_an_error_on_one_line() -> None:
    error = read_failure("storageclasses/fast", 400, "Bad Request", version="storage.k8s.io/v1")
    assert isinstance(error, ReadFailed)
    assert "\n" not in str(error)
    assert str(error).startswith("cannot read storageclasses.storage.k8s.io/fast: HTTP 400")


def test_an_unreachable_cluster_names_the_kubeconfig_given() -> None:
    error = unreachable(ConnectionRefusedError("refused"), "/tmp/kubeconfig")
    assert isinstance(error, ClusterUnreachable)
    assert str(error) == (
        "cannot reach the Kubernetes API: ConnectionRefusedError: refused (check the kubeconfig "
        "(/tmp/kubeconfig), the context (--context), and that the API server is running)"
    )


def test_without_a_kubeconfig_path_it_names_where_one_is_looked_for() -> None:
    error = unreachable(TimeoutError("timed out"))
    assert "(--kubeconfig, else $KUBECONFIG or ~/.kube/config)" in error.hint
