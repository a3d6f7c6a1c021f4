"""What `invoke status` and `invoke gc` say about mirrors, from distribution's own text."""

from __future__ import annotations

from registry_provisioner.config import load_settings
from registry_provisioner.gc import mirrors_note
from registry_provisioner.status import proxy_counts

# As distribution v3.1.2 serves them on its debug port (trimmed).
METRICS = """\
# HELP registry_proxy_hits_total The number of total proxy request hits
# TYPE registry_proxy_hits_total counter
registry_proxy_hits_total{type="blob"} 3
registry_proxy_hits_total{type="manifest"} 2
# HELP registry_proxy_misses_total The number of total proxy request misses
# TYPE registry_proxy_misses_total counter
registry_proxy_misses_total{type="blob"} 1e+01
registry_proxy_misses_total{type="manifest"} 1
registry_proxy_pulled_bytes_total{type="blob"} 2.68435456e+08
"""


def test_hit_and_miss_counts_per_type() -> None:
    assert proxy_counts(METRICS) == {
        "hits": {"blob": 3, "manifest": 2},
        "misses": {"blob": 10, "manifest": 1},
    }
    assert proxy_counts("") == {"hits": {}, "misses": {}}


def test_gc_says_why_mirrors_need_none() -> None:
    assert mirrors_note(load_settings(None, {})) is None
    mirrored = load_settings(
        None, {"mirrors": "[{upstream: https://registry-1.docker.io, name: docker.io, port: 5002}]"}
    )
    note = mirrors_note(mirrored)
    assert note is not None
    assert "docker.io 168h" in note and "ttl" in note


def test_preflight_lets_a_dropped_mirror_of_this_install_keep_the_ip() -> None:
    from registry_provisioner.ownership import OWNER_ANNOTATION, install_id
    from registry_provisioner.preflight import _our_mirror

    settings = load_settings(None, {})

    def service(namespace: str, component: str, owner: str) -> dict:
        labels = {"app.kubernetes.io/component": component}
        meta = {"name": "m", "namespace": namespace, "labels": labels}
        return {"metadata": {**meta, "annotations": {OWNER_ANNOTATION: owner}}}

    ours = install_id(settings)
    assert _our_mirror(service(settings.namespace, "mirror", ours), settings)
    assert not _our_mirror(service(settings.namespace, "mirror", "other/install"), settings)
    assert not _our_mirror(service("elsewhere", "mirror", ours), settings)
    assert not _our_mirror(service(settings.namespace, "registry", ours), settings)
