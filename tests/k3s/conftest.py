"""The k3s lane's tests: they run only with `pytest --k3s` (invoke test does)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def k3s_cluster(cluster):
    """Every test here runs on the k3s cluster, even one that asks the API nothing; without
    the k3s source tree the `cluster` fixture skips them all, saying why."""
    return cluster
