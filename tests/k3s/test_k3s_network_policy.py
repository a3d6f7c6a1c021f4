"""The registry's NetworkPolicy, enforced by k3s's own controller (kube-router in k3s).

The same tests as on the home-built cluster, whose kube-router runs beside it as a
process of its own; here nothing but k3s enforces.
"""

from __future__ import annotations

import pytest

from scripts.local_cluster import cluster, k3s
from scripts.local_cluster.paths import LOG_DIR, STATE_DIR
from scripts.local_cluster.supervisor import Supervisor
from tests.cluster.test_network_policy import (  # noqa: F401 - the same tests, on k3s
    setup,
    test_metrics_port_refuses_a_namespace_not_listed,
    test_metrics_port_serves_the_allowed_namespace,
    test_provision_applied_the_policy_with_the_allowed_namespace,
    test_push_through_the_loadbalancer_and_node_pull_still_work,
    test_registry_port_answers_pods_of_any_namespace,
    test_the_node_reaches_both_ports,
)

pytestmark = [pytest.mark.cluster, pytest.mark.k3s, pytest.mark.timeout(900)]


def test_k3s_itself_enforces_network_policy() -> None:
    processes = Supervisor(STATE_DIR, LOG_DIR)
    assert processes.running(k3s.PROCESS)
    assert not processes.running("kube-router-netpol")  # the home-built cluster's
    assert cluster.netpol_chains_present()
    log = processes.log_path(k3s.PROCESS).read_text(errors="replace")
    assert "Skipping network policy controller start" not in log
