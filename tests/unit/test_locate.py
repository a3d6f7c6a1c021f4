"""kube.locate: the URL parts of built-in kinds, read from kr8s's classes without the server."""

from __future__ import annotations

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
    ],
)
async def test_built_in_kinds_are_located_without_asking_the_server(
    manifest: dict, expected: kube.Location
) -> None:
    assert await kube.locate(API, manifest) == expected  # type: ignore[arg-type]
    assert expected.path == f"{expected.endpoint}/{expected.name}"
