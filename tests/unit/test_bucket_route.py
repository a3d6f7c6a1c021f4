"""Which S3 endpoints preflight and purge reach through the API server (in-cluster
Service names) and how a forwarded request keeps the endpoint's own host."""

from __future__ import annotations

import pytest

from registry_provisioner import access, bucket, render
from registry_provisioner.config import load_settings


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://versitygw.s3.svc:7070", bucket.ServiceName("versitygw", "s3", 7070)),
        ("https://minio.store.svc.cluster.local", bucket.ServiceName("minio", "store", 443)),
        ("http://minio.store.svc.homelab.internal", bucket.ServiceName("minio", "store", 80)),
        ("http://MinIO.Store.svc:9000", bucket.ServiceName("minio", "store", 9000)),
    ],
)
def test_in_cluster_service_names(endpoint: str, expected: bucket.ServiceName) -> None:
    assert bucket.service_name(endpoint) == expected


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://10.43.12.7:7070",  # an address: matched against ClusterIPs on the cluster
        "https://s3.us-east-1.amazonaws.com",
        "http://minio.lan:9000",
        "http://svc.example.com",
        "http://minio.store:9000",  # a two-label name is not taken for a Service
        "http://svc:9000",
    ],
)
def test_other_endpoints_are_asked_directly(endpoint: str) -> None:
    assert bucket.service_name(endpoint) is None


def test_default_ports_follow_the_scheme() -> None:
    assert bucket.endpoint_host_port("https://store.lan") == ("store.lan", 443)
    assert bucket.endpoint_host_port("http://store.lan") == ("store.lan", 80)
    assert bucket.endpoint_host_port("http://[fd00::1]:7070") == ("fd00::1", 7070)


def test_a_forwarded_request_keeps_path_query_and_the_endpoints_tls_name() -> None:
    way = bucket.Route("https://127.0.0.1:40001", "minio.store.svc:9000", "pod store/minio-0")
    url = "https://minio.store.svc:9000/images/a%20b?list-type=2&prefix=x%2F"
    assert way.wire(url) == "https://127.0.0.1:40001/images/a%20b?list-type=2&prefix=x%2F"
    assert way.extensions() == {"sni_hostname": "minio.store.svc"}


def test_a_direct_route_changes_nothing() -> None:
    way = bucket.Route("http://10.0.0.5:7070", "10.0.0.5:7070")
    assert way.wire("http://10.0.0.5:7070/images/k") == "http://10.0.0.5:7070/images/k"
    assert way.extensions() == {}


@pytest.mark.parametrize(
    ("endpoint", "forwarded"),
    [("https://versitygw.store.svc:7070", True), ("https://minio.lan:9000", False)],
)
def test_preflight_asks_for_the_port_forward_an_in_cluster_store_needs(
    endpoint: str, forwarded: bool
) -> None:
    settings = load_settings(
        None,
        {
            "storage.backend": "s3",
            "storage.s3.endpoint": endpoint,
            "storage.s3.bucket": "registry-images",
            "storage.s3.credentials_secret": "s3-login",
        },
    )
    rights = set(access.required_rights(settings, render.render_manifests(settings, None)))
    forward = {
        ("store", "", "pods/portforward", "create"),
        ("store", "", "pods", "list"),
        ("store", "", "services", "list"),
    }
    assert (forward <= rights) is forwarded
    assert any(resource == "pods/portforward" for _, _, resource, _ in rights) is forwarded
