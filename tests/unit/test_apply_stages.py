"""The order objects are applied in: what others mount goes in an earlier stage, and a
claim leads its stage, on its own, since its binding is the longest wait of a provision."""

from __future__ import annotations

from registry_provisioner import kube


def _manifest(kind: str, name: str) -> dict:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"name": name}}


def _names(stages: list[list[dict]]) -> list[list[str]]:
    return [[m["metadata"]["name"] for m in stage] for stage in stages]


def test_namespaces_first_workloads_last_and_the_rendered_order_between() -> None:
    rendered = [
        _manifest("Namespace", "ns"),
        _manifest("Certificate", "cert"),
        _manifest("Deployment", "registry"),
        _manifest("Secret", "auth"),
        _manifest("DaemonSet", "trust"),
        _manifest("ConfigMap", "config"),
    ]
    assert _names(kube.stages(rendered)) == [
        ["ns"],
        ["cert", "auth", "config"],
        ["registry", "trust"],
    ]


def test_a_claim_leads_its_stage_and_the_rest_keep_their_order() -> None:
    rendered = [
        _manifest("Namespace", "ns"),
        _manifest("Certificate", "cert"),
        _manifest("Secret", "auth"),
        _manifest("PersistentVolumeClaim", "data"),
        _manifest("Service", "svc"),
        _manifest("PersistentVolumeClaim", "cache"),
    ]
    assert _names(kube.stages(rendered))[1] == ["data", "cache", "cert", "auth", "svc"]


def test_a_stage_sends_its_claims_on_their_own_before_the_rest() -> None:
    rendered = [
        _manifest("Secret", "auth"),
        _manifest("PersistentVolumeClaim", "data"),
        _manifest("Service", "svc"),
    ]
    [stage] = kube.stages(rendered)
    assert _names(kube._claims_alone_first(stage)) == [["data"], ["auth", "svc"]]
    without_claims = [_manifest("Secret", "auth")]
    assert _names(kube._claims_alone_first(without_claims)) == [["auth"]]
