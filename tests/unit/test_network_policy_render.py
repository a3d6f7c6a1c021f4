"""The registry's NetworkPolicy: the registry port open to all, metrics only to the listed
namespaces, and nothing else about the pods' traffic restricted."""

from __future__ import annotations

from typing import Any

import pytest

from registry_provisioner.config import load_settings
from registry_provisioner.ownership import OWNER_ANNOTATION
from registry_provisioner.render import render_manifests, selector_labels


def _policy(**overrides: Any) -> dict[str, Any]:
    objs = render_manifests(load_settings(None, overrides), None)
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy"]
    return policy


def _rule_for_port(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [
        rule
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == port for p in rule.get("ports", []))
    ]


def test_guards_only_the_registry_pods_and_only_their_ingress() -> None:
    settings = load_settings(None, {"namespace": "infra"})
    policy = _policy(namespace="infra")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == "infra"
    assert policy["metadata"]["annotations"][OWNER_ANNOTATION] == "infra/docker-registry"
    assert policy["spec"]["podSelector"] == {"matchLabels": selector_labels(settings, "registry")}
    # Egress is not listed, so the registry's own outgoing traffic is left alone.
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_registry_port_is_open_to_every_source() -> None:
    policy = _policy(container_port=5443)
    [rule] = _rule_for_port(policy, 5443)
    assert "from" not in rule  # no peers: LoadBalancer clients, nodes, any pod
    assert rule["ports"] == [{"protocol": "TCP", "port": 5443}]


def test_metrics_port_has_no_rule_by_default() -> None:
    policy = _policy()
    assert _rule_for_port(policy, 5001) == []
    assert len(policy["spec"]["ingress"]) == 1


@pytest.mark.parametrize("namespaces", [["monitoring"], ["monitoring", "ops"]])
def test_metrics_port_is_open_to_the_listed_namespaces_only(namespaces: list[str]) -> None:
    policy = _policy(metrics_port=9100, **{"metrics.allowed_namespaces": namespaces})
    [rule] = _rule_for_port(policy, 9100)
    assert rule["ports"] == [{"protocol": "TCP", "port": 9100}]
    # One peer, by namespace name only: no podSelector, no ipBlock.
    assert rule["from"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
                ]
            }
        }
    ]
    # The registry port's rule is not widened or narrowed by it.
    [registry_rule] = _rule_for_port(policy, 5000)
    assert "from" not in registry_rule


def test_no_probe_needs_a_policy_rule_for_the_node() -> None:
    """Probes come from the pod's own node, which NetworkPolicy never blocks; whatever
    port they use, the policy carries no ipBlock for node addresses."""
    policy = _policy(**{"metrics.allowed_namespaces": ["monitoring"]})
    for rule in policy["spec"]["ingress"]:
        assert all("ipBlock" not in peer for peer in rule.get("from", []))
