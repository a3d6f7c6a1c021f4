"""Node trust's own namespace, as the pure parts of provision and unprovision see it."""

from __future__ import annotations

from registry_provisioner import access, node_trust, provision, render, unprovision
from registry_provisioner.config import Settings, load_settings


def test_rights_cover_node_trust_namespace() -> None:
    settings = Settings()
    rights = access.required_rights(settings, render.render_manifests(settings, None))
    trust = settings.node_trust_namespace
    for right in (
        (trust, "apps", "daemonsets", "create"),
        (trust, "", "configmaps", "patch"),
        (trust, "", "pods", "list"),  # the diagnosis while waiting
        (trust, "", "events", "list"),
        ("", "", "namespaces", "create"),
    ):
        assert right in rights, right


def test_the_node_trust_namespace_goes_without_purge_the_registry_one_stays() -> None:
    settings = Settings()
    namespaces = [m for m in render.render_manifests(settings, None) if m["kind"] == "Namespace"]
    kept = {m["metadata"]["name"]: unprovision._kept(settings, m) for m in namespaces}
    assert kept == {"docker-registry": True, "docker-registry-node-trust": False}


def test_provision_holds_back_only_what_needs_the_ca() -> None:
    settings = load_settings(None, {"node_trust.namespace": "trust"})
    manifests = render.render_manifests(settings, None)
    later = provision._node_trust_workload(settings, manifests)
    assert [(m["kind"], m["metadata"]["namespace"]) for m in later] == [
        ("ConfigMap", "trust"),
        ("DaemonSet", "trust"),
    ]
    # The namespace goes first with everything else; the old layout's DaemonSet is
    # looked for in the registry's namespace.
    assert node_trust.previous_daemonset(settings)["metadata"]["namespace"] == settings.namespace
    off = load_settings(None, {"node_trust.enabled": "false"})
    assert provision._node_trust_workload(off, render.render_manifests(off, None)) == []
