"""kube.locate: the URL parts of built-in kinds, and of the custom kinds this tool knows,
read from kr8s's classes without the server (API discovery costs a request per group)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

from registry_provisioner import kube

API = SimpleNamespace(namespace="default")  # only read for a namespaced kind without one


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "r", "namespace": "n"},
            },
            kube.Location("Deployment", "apps/v1", "deployments", "r", "n"),
        ),
        (
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
            kube.Location("Secret", "v1", "secrets", "s", "default"),
        ),
        (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}},
            kube.Location("Namespace", "v1", "namespaces", "n", None),
        ),
        (
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {"name": "c", "namespace": "n"},
            },
            kube.Location("Certificate", "cert-manager.io/v1", "certificates", "c", "n"),
        ),
    ],
)
async def test_built_in_kinds_are_located_without_asking_the_server(
    manifest: dict, expected: kube.Location
) -> None:
    gc.collect()  # kr8s holds its classes weakly: ours must outlive a collection
    assert await kube.locate(API, manifest) == expected  # type: ignore[arg-type]
    assert expected.path == f"{expected.endpoint}/{expected.name}"
