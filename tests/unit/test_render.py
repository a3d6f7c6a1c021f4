"""Rendering: schema-valid objects, in dependency order, with the seed's defects fixed."""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate.utils import VersionNotSupportedError

from registry_provisioner.config import UPSTREAM_PORT, Settings, load_settings
from registry_provisioner.credentials import Credentials, generate_credentials
from registry_provisioner.errors import ProvisionError
from registry_provisioner.logins import hash_matches
from registry_provisioner.ownership import OWNER_ANNOTATION, foreign
from registry_provisioner.render import (
    APPLY_ORDER,
    CHECKSUM_ANNOTATION,
    PLACEHOLDER,
    common_labels,
    label_selector,
    manifests_yaml,
    node_trust_removal,
    render_manifests,
)

K8S_VERSION = "1.34"
NS_OBJ = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}}


def _schema_version() -> str:
    """1.34, or the newest schemas the installed kubernetes-validate bundles.

    kubernetes-validate 1.34.0 ships schemas only up to 1.33; the core kinds used
    here did not change between the two.
    """
    try:
        kubernetes_validate.validate(NS_OBJ, K8S_VERSION, strict=True)
    except VersionNotSupportedError:
        return kubernetes_validate.latest_version()
    return K8S_VERSION


SCHEMA_VERSION = _schema_version()


@pytest.fixture(scope="module", autouse=True)
def _cached_schemas() -> Iterator[None]:
    """kubernetes-validate rereads its large JSON schemas on every call; read them once."""
    original = kv_utils.schema_contents
    kv_utils.schema_contents = functools.cache(original)
    yield
    kv_utils.schema_contents = original


def _settings(**overrides: Any) -> Settings:
    return load_settings(None, overrides)


def _creds(settings: Settings, password: str = "pw-for-tests") -> Credentials:
    """Deterministic credentials; a real CA only where the mode needs one."""
    pem = ("", "", "")
    if settings.tls.mode == "self-signed":
        pem = ("CA PEM", "CERT PEM", "KEY PEM")
    return Credentials(
        username=settings.auth.username,
        password=password,
        password_hash="$2y$10$fixedadminhashfortests",
        pull_username=settings.auth.pull_username,
        pull_password="pull-pw-for-tests",
        pull_password_hash="$2y$10$fixedpullhashfortests",
        http_secret="http-secret-for-tests",
        ca_pem=pem[0],
        cert_pem=pem[1],
        key_pem=pem[2],
    )


def _find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def _pod_spec(objs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    return _find(objs, kind)["spec"]["template"]["spec"]


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "self-signed": {"tls.mode": "self-signed", "tls.extra_dns_names": ["registry.home.lan"]},
    "existing-secret": {"tls.mode": "existing-secret", "tls.secret_name": "my-cert"},
    "rwx-ha": {
        "replicas": 3,
        "storage.access_mode": "ReadWriteMany",
        "storage.storage_class": "",
        "service.address_pool": "lan",
        "metrics.allowed_namespaces": ["monitoring", "ops"],
        "resources.limits.cpu": "1",
        "scheduling.node_selector": {"kubernetes.io/arch": "amd64"},
        "scheduling.tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "scheduling.affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "r"}},
                        },
                    }
                ]
            }
        },
    },
    "notebook-data": {"storage.sub_path": "registry"},
    "mirrors": {
        "mirrors": [
            {"upstream": "https://registry-1.docker.io", "name": "docker.io", "port": 5002},
            {
                "upstream": "https://upstream.lan:5000",
                "port": 5003,
                "ttl": "30m",
                "size": "2Gi",
                "login_secret": "lan-login",
                "ca_config_map": "lan-ca",
                "upstream_ip": "192.168.1.20",
                "source_ranges": ["192.168.1.0/24"],
                "replace_node_config": True,
            },
        ],
    },
    "s3-scale-out": {
        "replicas": 3,
        "storage.backend": "s3",
        "storage.s3.endpoint": "https://s3.store.svc:7070",
        "storage.s3.bucket": "registry-images",
        "storage.s3.credentials_secret": "s3-login",
        "storage.s3.ca_configmap": "s3-ca",
        "storage.s3.root_directory": "/registry",
        "redis.address": "redis.store.svc:6379",
        "redis.password_secret": "redis-login",
        "redis.db": 2,
    },
    "ipv6-no-extras": {
        "service.ip": "fd00::62",
        "node_trust.enabled": False,
        "discovery.publish_local_registry_hosting": False,
        "pull_secret.namespaces": [],
        "namespace": "infra",
    },
}


@pytest.mark.parametrize("with_creds", [True, False], ids=["credentials", "preview"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_object_is_schema_valid(variant: str, with_creds: bool) -> None:
    settings = _settings(**VARIANTS[variant])
    objs = render_manifests(settings, _creds(settings) if with_creds else None)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: its shape is checked in test_certificate_shape
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_certificate_shape() -> None:
    settings = _settings(namespace="infra", **{"tls.extra_dns_names": ["registry.home.lan"]})
    cert = _find(render_manifests(settings, None), "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["metadata"]["namespace"] == "infra"
    spec = cert["spec"]
    assert set(spec) == {
        "secretName",
        "secretTemplate",
        "commonName",
        "dnsNames",
        "ipAddresses",
        "duration",
        "renewBefore",
        "privateKey",
        "usages",
        "issuerRef",
    }
    assert spec["ipAddresses"] == ["172.17.1.62"]
    assert spec["commonName"] == "docker-registry-service.infra.svc"
    assert spec["commonName"] in spec["dnsNames"]
    assert spec["dnsNames"] == [*settings.cluster_dns_names, "registry.home.lan"]
    assert spec["issuerRef"] == {
        "name": "cert-manager-issuer",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    assert spec["duration"] == "8760h"
    assert spec["renewBefore"] == "720h"
    assert "server auth" in spec["usages"]
    assert spec["secretTemplate"]["labels"]["app.kubernetes.io/instance"] == "infra"


def test_issuer_kind_is_honoured() -> None:
    cert = _find(render_manifests(_settings(**{"tls.issuer_kind": "Issuer"}), None), "Certificate")
    assert cert["spec"]["issuerRef"]["kind"] == "Issuer"


def test_apply_order_for_defaults() -> None:
    objs = render_manifests(Settings(), None)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "docker-registry"),
        ("Namespace", "docker-registry-node-trust"),
        ("Certificate", "docker-registry"),
        ("Secret", "docker-registry-auth"),
        ("ConfigMap", "docker-registry-config"),
        ("PersistentVolumeClaim", "docker-registry-pvc"),
        ("NetworkPolicy", "docker-registry"),
        ("Deployment", "docker-registry"),
        ("PodDisruptionBudget", "docker-registry"),
        ("Service", "docker-registry-service"),
        ("Secret", "docker-registry-pull"),
        ("ConfigMap", "docker-registry-ca"),
        ("DaemonSet", "docker-registry-node-trust"),
        ("ConfigMap", "local-registry-hosting"),
    ]
    assert APPLY_ORDER[0][0] == "namespace.yaml.j2"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_everything_a_workload_uses_comes_before_it(variant: str) -> None:
    settings = _settings(**VARIANTS[variant])
    objs = render_manifests(settings, _creds(settings))
    position = {(o["kind"], o["metadata"]["name"]): i for i, o in enumerate(objs)}
    assert position[("Namespace", settings.namespace)] == 0
    # The user makes these before provision: an upstream's CA, the S3 endpoint's CA.
    theirs = {m.ca_config_map for m in settings.mirrors} | {settings.storage.s3.ca_configmap}
    for workload in (o for o in objs if o["kind"] in ("Deployment", "DaemonSet")):
        here = position[(workload["kind"], workload["metadata"]["name"])]
        for volume in workload["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume and volume["configMap"]["name"] not in theirs:
                assert position[("ConfigMap", volume["configMap"]["name"])] < here
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert position[("PersistentVolumeClaim", claim)] < here
            secret = volume.get("secret", {}).get("secretName")
            if secret and settings.tls.mode != "existing-secret":
                producer = ("Secret", secret)
                if secret == settings.tls.secret_name and settings.tls.mode == "cert-manager":
                    producer = ("Certificate", settings.name)
                assert position[producer] < here, secret


def test_certificate_and_deployment_share_the_secret_even_in_another_namespace() -> None:
    # The seed's Certificate wrote "<namespace>-secret" while its Deployment mounted the
    # literal "docker-registry-secret": they only matched for the default namespace.
    settings = _settings(namespace="infra")
    objs = render_manifests(settings, None)
    cert = _find(objs, "Certificate")
    volumes = {v["name"]: v for v in _pod_spec(objs)["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert cert["spec"]["secretName"] == settings.tls.secret_name
    # Node trust, in a namespace of its own, mounts the CA copy provision makes there.
    node_trust = _find(objs, "DaemonSet")
    assert node_trust["metadata"]["namespace"] == "infra-node-trust"
    copy = _find(objs, "ConfigMap", settings.node_trust_ca_name)
    assert copy["metadata"]["namespace"] == "infra-node-trust"
    node_trust_volumes = {v["name"]: v for v in _pod_spec(objs, "DaemonSet")["volumes"]}
    assert node_trust_volumes["registry-tls"]["configMap"]["name"] == copy["metadata"]["name"]


def test_no_node_selector_or_placement_by_default() -> None:
    spec = _pod_spec(render_manifests(Settings(), None))
    assert "nodeSelector" not in spec
    assert "tolerations" not in spec
    assert "affinity" not in spec


def test_placement_is_rendered_when_set() -> None:
    overrides = VARIANTS["rwx-ha"]
    spec = _pod_spec(render_manifests(_settings(**overrides), None))
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert spec["tolerations"] == overrides["scheduling.tolerations"]
    assert spec["affinity"] == overrides["scheduling.affinity"]


def test_service_pins_the_ip_with_metallb_annotation_only() -> None:
    svc = _find(render_manifests(Settings(), None), "Service")
    metallb = {k: v for k, v in svc["metadata"]["annotations"].items() if "metallb" in k}
    assert metallb == {"metallb.io/loadBalancerIPs": "172.17.1.62"}
    assert "loadBalancerIP" not in svc["spec"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
    pooled = _find(render_manifests(_settings(**{"service.address_pool": "lan"}), None), "Service")
    assert pooled["metadata"]["annotations"]["metallb.io/address-pool"] == "lan"


def test_service_exposes_only_the_registry_port() -> None:
    settings = _settings(**{"service.port": 443})
    objs = render_manifests(settings, None)
    svc = _find(objs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "registry", "protocol": "TCP", "port": 443, "targetPort": "registry"}
    ]
    ports = {
        p["name"]: (c["name"], p["containerPort"])
        for c in _pod_spec(objs)["containers"]
        for p in c["ports"]
    }
    assert ports == {"registry": ("proxy", 5000), "metrics": ("registry", 5001)}
    assert all(p["port"] != 5001 and p["targetPort"] != "metrics" for p in svc["spec"]["ports"])
    pod_labels = _find(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_ipv6_service_asks_for_the_ipv6_family() -> None:
    svc = _find(render_manifests(_settings(**{"service.ip": "fd00::62"}), None), "Service")
    assert svc["spec"]["ipFamilies"] == ["IPv6"]


def test_strategy_follows_access_mode() -> None:
    rwo = _find(render_manifests(Settings(), None), "Deployment")
    assert rwo["spec"]["strategy"] == {"type": "Recreate"}
    rwx = _find(render_manifests(_settings(**VARIANTS["rwx-ha"]), None), "Deployment")
    assert rwx["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rwx["spec"]["replicas"] == 3


def test_registry_pod_hardening_and_probes() -> None:
    objs = render_manifests(Settings(), None)
    spec = _pod_spec(objs)
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == 1000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    proxy, registry = spec["containers"]
    assert (proxy["name"], registry["name"]) == ("proxy", "registry")
    for container in (proxy, registry):
        assert container["securityContext"] == {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    # Ready means both serve: the proxy's probes pass through to distribution.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert proxy[probe]["httpGet"] == {"path": "/", "port": "registry", "scheme": "HTTPS"}
    assert registry["livenessProbe"]["httpGet"] == {"path": "/debug/health", "port": "metrics"}
    env = {e["name"]: e for e in registry["env"]}
    assert env["OTEL_TRACES_EXPORTER"]["value"] == "none"
    ref = env["REGISTRY_HTTP_SECRET"]["valueFrom"]["secretKeyRef"]
    auth = _find(objs, "Secret", ref["name"])
    assert ref["key"] in auth["stringData"]

    def mounts(container: dict[str, Any]) -> dict[str, str]:
        return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    # The certificate and the hashes reach the proxy only; the data, distribution only.
    assert mounts(proxy) == {
        "/etc/distribution": "config",
        "/certs": "certs",
        "/auth": "auth",
        "/tmp": "tmp",
    }
    assert mounts(registry) == {
        "/etc/distribution": "config",
        "/var/lib/registry": "data",
        "/tmp": "tmp",
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    items = volumes["auth"]["secret"]["items"]
    assert [item["key"] for item in items] == ["admin.bcrypt", "pull.bcrypt"]
    assert registry["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_distribution_config() -> None:
    objs = render_manifests(_settings(container_port=5443, metrics_port=5444), None)
    config_map = _find(objs, "ConfigMap", "docker-registry-config")
    config = yaml.safe_load(config_map["data"]["config.yml"])
    assert config["version"] == 0.1
    assert config["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"
    assert config["storage"]["delete"]["enabled"] is True
    http = config["http"]
    # Only the pod's own containers reach it; TLS and auth are the proxy's.
    assert http["addr"] == f"127.0.0.1:{UPSTREAM_PORT}"
    assert "secret" not in http  # it comes from REGISTRY_HTTP_SECRET
    assert "tls" not in http
    assert "auth" not in config
    assert http["debug"] == {
        "addr": ":5444",
        "prometheus": {"enabled": True, "path": "/metrics"},
    }
    assert config["health"]["storagedriver"]["enabled"] is True
    assert config["log"]["level"] == "info"


def test_proxy_config_serves_the_settings_port_with_both_logins() -> None:
    settings = _settings(container_port=5443, **{"auth.pull_username": "reader"})
    config_map = _find(render_manifests(settings, None), "ConfigMap", "docker-registry-config")
    caddy = json.loads(config_map["data"]["caddy.json"])
    assert caddy["admin"]["disabled"] is True
    server = caddy["apps"]["http"]["servers"]["registry"]
    assert server["listen"] == [":5443"]
    [v2] = [r for r in server["routes"] if r.get("match") == [{"path": ["/v2", "/v2/*"]}]]
    basic = v2["handle"][0]["providers"]["http_basic"]
    assert basic["hash_cache"] == {}
    assert basic["accounts"] == [
        {"username": "reader", "password": "{file./auth/pull.bcrypt}"},
        {"username": "registry", "password": "{file./auth/admin.bcrypt}"},
    ]
    rights = v2["handle"][1]["routes"]
    reader = [r for r in rights if r.get("match", [{}])[0].get("method")]
    assert reader[0]["match"][0] == {
        "vars": {"{http.auth.user.id}": ["reader"]},
        "method": ["GET", "HEAD"],
    }
    [upstream] = rights[0]["handle"][0]["upstreams"]
    assert upstream == {"dial": f"127.0.0.1:{UPSTREAM_PORT}"}
    loaded = caddy["apps"]["tls"]["certificates"]["load_files"]
    assert loaded == [{"certificate": "/certs/tls.crt", "key": "/certs/tls.key"}]


def test_credentials_land_in_secrets() -> None:
    settings = _settings(**{"pull_secret.namespaces": ["default", "apps"]})
    creds = generate_credentials(settings)
    objs = render_manifests(settings, creds)
    auth = _find(objs, "Secret", "docker-registry-auth")
    assert "stringData" not in auth
    assert _secret_value(auth, "username") == "registry"
    assert _secret_value(auth, "pull-username") == "puller"
    for password, hashed in (("password", "admin.bcrypt"), ("pull-password", "pull.bcrypt")):
        assert _secret_value(auth, hashed).startswith("$2y$10$")
        assert hash_matches(_secret_value(auth, password), _secret_value(auth, hashed))
    assert creds.password != creds.pull_password
    assert _secret_value(auth, "http-secret") == creds.http_secret
    pulls = [o for o in objs if o["metadata"]["name"] == "docker-registry-pull"]
    assert [p["metadata"]["namespace"] for p in pulls] == ["default", "apps"]
    for pull in pulls:
        assert pull["type"] == "kubernetes.io/dockerconfigjson"
        auths = json.loads(_secret_value(pull, ".dockerconfigjson"))["auths"]
        # Workloads get the pull login, never the admin's.
        assert auths["172.17.1.62:5000"]["username"] == "puller"
        assert auths["172.17.1.62:5000"]["password"] == creds.pull_password


def test_preview_needs_no_credentials() -> None:
    for variant in VARIANTS.values():
        objs = render_manifests(_settings(**variant), None)
        for secret in (o for o in objs if o["kind"] == "Secret"):
            assert "data" not in secret
            values = set(secret["stringData"].values()) - {"registry", "puller"}
            assert values == {PLACEHOLDER}


def test_pod_checksum_tracks_config_and_credentials() -> None:
    settings = Settings()

    def checksum(creds: Credentials | None, s: Settings = settings) -> str:
        deployment = _find(render_manifests(s, creds), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]

    creds = _creds(settings)
    assert checksum(creds) == checksum(creds)  # pure: same inputs, same objects
    for hashed in ("password_hash", "pull_password_hash"):
        assert checksum(creds) != checksum(dataclasses.replace(creds, **{hashed: "$2y$other"}))
    assert checksum(creds) != checksum(dataclasses.replace(creds, http_secret="rotated"))
    assert checksum(creds) != checksum(creds, _settings(metrics_port=5002))


def test_self_signed_mode_ships_its_own_tls_secret() -> None:
    settings = _settings(**{"tls.mode": "self-signed"})
    objs = render_manifests(settings, _creds(settings))
    assert not any(o["kind"] == "Certificate" for o in objs)
    tls = _find(objs, "Secret", settings.tls.secret_name)
    assert tls["type"] == "kubernetes.io/tls"
    assert {k: _secret_value(tls, k) for k in tls["data"]} == {
        "tls.crt": "CERT PEM",
        "tls.key": "KEY PEM",
        "ca.crt": "CA PEM",
    }
    with pytest.raises(ProvisionError, match="self-signed"):
        render_manifests(settings, dataclasses.replace(_creds(settings), ca_pem=""))


def test_existing_secret_mode_creates_no_tls_objects() -> None:
    settings = _settings(**VARIANTS["existing-secret"])
    objs = render_manifests(settings, None)
    assert not any(o["kind"] == "Certificate" for o in objs)
    assert not any(o["metadata"]["name"] == "my-cert" for o in objs)
    volumes = {v["name"]: v for v in _pod_spec(objs)["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == "my-cert"


def test_credentials_for_another_user_are_refused() -> None:
    settings = Settings()
    with pytest.raises(ProvisionError, match=r"auth\.username"):
        render_manifests(settings, dataclasses.replace(_creds(settings), username="admin"))
    with pytest.raises(ProvisionError, match=r"auth\.pull_username"):
        render_manifests(settings, dataclasses.replace(_creds(settings), pull_username="x"))


def test_node_trust_writes_host_port_dir_from_the_tls_secret_ca() -> None:
    certs_dir = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    settings = _settings(**{"node_trust.certs_dir": certs_dir + "/"})
    objs = render_manifests(settings, None)
    spec = _pod_spec(objs, "DaemonSet")
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    hosts = env["HOSTS_TOML"]
    assert 'server = "https://172.17.1.62:5000"' in hosts
    assert '[host."https://172.17.1.62:5000"]' in hosts
    assert 'capabilities = ["pull", "resolve", "push"]' in hosts
    assert f'ca = "{certs_dir}/172.17.1.62:5000/ca.crt"' in hosts
    assert "ca = " not in env["HOSTS_TOML_SYSTEM_TRUST"]
    for text in (hosts, env["HOSTS_TOML_SYSTEM_TRUST"]):
        assert "# File generated by k3s" not in text  # k3s would delete it on restart
    volumes = {v["name"]: v for v in spec["volumes"]}
    # The only host path is the registry's own directory, never certs.d as a whole.
    assert [v["hostPath"] for v in spec["volumes"] if "hostPath" in v] == [
        {"path": f"{certs_dir}/172.17.1.62:5000", "type": "DirectoryOrCreate"}
    ]
    # Only ca.crt reaches the nodes' pods; the private key never does.
    assert volumes["registry-tls"]["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert volumes["registry-tls"]["configMap"]["optional"] is True
    assert container["image"] == settings.image
    assert spec["tolerations"] == [{"operator": "Exists"}]


def test_node_trust_script_lives_in_the_pod_spec_and_keeps_files_when_stopping() -> None:
    objs = render_manifests(Settings(), None)
    # No ConfigMap holds what runs as root on the nodes: it is the DaemonSet's own spec;
    # the one it mounts holds nothing but the CA.
    spec = _pod_spec(objs, "DaemonSet")
    [mounted] = [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v]
    assert set(_find(objs, "ConfigMap", mounted)["data"]) == {"ca.crt"}
    (container,) = spec["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script, name, mode = container["args"]
    assert (name, mode) == ("node-trust", "sync")
    assert "while :" in script
    assert "trap 'exit 0' TERM INT" in script  # stopping deletes nothing
    assert "rm -rf" not in script.split("remove)")[0]


def test_namespaces_we_create_enforce_the_least_their_pods_need() -> None:
    objs = render_manifests(Settings(), None)
    registry = _find(objs, "Namespace", "docker-registry")["metadata"]["labels"]
    node_trust = _find(objs, "Namespace", "docker-registry-node-trust")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert registry[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert node_trust[f"pod-security.kubernetes.io/{mode}"] == "privileged"
    # Nothing but node trust goes into the privileged namespace.
    in_node_trust = {
        o["kind"] for o in objs if o["metadata"].get("namespace") == "docker-registry-node-trust"
    }
    assert in_node_trust == {"ConfigMap", "DaemonSet"}
    assert not any(
        o["kind"] == "Namespace"
        for o in render_manifests(_settings(**{"node_trust.enabled": False}), None)
        if o["metadata"]["name"].endswith("-node-trust")
    )


def test_a_new_ca_rolls_node_trust_so_provision_waits_for_it_on_every_node() -> None:
    def checksum(ca: str) -> str:
        template = _find(render_manifests(Settings(), None, ca), "DaemonSet")["spec"]["template"]
        return template["metadata"]["annotations"]["registry-provisioner/ca-checksum"]

    assert checksum("CA one") != checksum("CA two")
    assert checksum("CA one") == checksum("CA one")
    copy = _find(render_manifests(Settings(), None, ""), "ConfigMap", "docker-registry-ca")
    assert copy["data"] == {}  # no ca.crt in the TLS Secret: the nodes use system roots


def test_node_trust_pod_has_no_privilege_beyond_root_and_its_directory() -> None:
    spec = _pod_spec(render_manifests(Settings(), None), "DaemonSet")
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "ports" not in container


def test_node_trust_removal_empties_the_live_directory_with_the_live_image() -> None:
    settings = Settings()
    removal = node_trust_removal(settings, host_dir="/old/certs.d/10.0.0.1:5000", image="i:1")
    assert removal["metadata"]["name"] == settings.node_trust_name
    spec = removal["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "i:1"
    assert container["args"][1:] == ["node-trust", "remove"]
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == ["/old/certs.d/10.0.0.1:5000"]
    assert not any(e["name"].startswith("HOSTS_TOML") for e in container["env"])
    assert "ls -A" in container["readinessProbe"]["exec"]["command"][-1]


def test_node_trust_can_be_turned_off_and_use_its_own_image() -> None:
    off = render_manifests(_settings(**{"node_trust.enabled": False}), None)
    assert not any(o["kind"] == "DaemonSet" for o in off)
    own = render_manifests(_settings(**{"node_trust.image": "busybox:1.37"}), None)
    assert _pod_spec(own, "DaemonSet")["containers"][0]["image"] == "busybox:1.37"


def test_registry_and_node_trust_selectors_do_not_overlap() -> None:
    objs = render_manifests(Settings(), None)
    svc_selector = _find(objs, "Service")["spec"]["selector"]
    trust_labels = _find(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert not svc_selector.items() <= trust_labels.items()


def test_local_registry_hosting_configmap() -> None:
    settings = _settings(**{"discovery.help_url": "https://example.invalid/readme"})
    cm = _find(render_manifests(settings, None), "ConfigMap", "local-registry-hosting")
    assert cm["metadata"]["namespace"] == "kube-public"
    assert list(cm["data"]) == ["localRegistryHosting.v1"]
    assert yaml.safe_load(cm["data"]["localRegistryHosting.v1"]) == {
        "host": "172.17.1.62:5000",
        "hostFromContainerRuntime": "172.17.1.62:5000",
        "hostFromClusterNetwork": "docker-registry-service.docker-registry.svc:5000",
        "help": "https://example.invalid/readme",
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_common_labels_on_every_object(variant: str) -> None:
    settings = _settings(**VARIANTS[variant])
    labels = common_labels(settings)
    assert labels["app.kubernetes.io/managed-by"] == "registry-provisioner"
    for obj in render_manifests(settings, None):
        assert labels.items() <= obj["metadata"]["labels"].items(), obj["kind"]
    assert label_selector(settings).count("=") == 3


def test_manifests_yaml_round_trips() -> None:
    objs = render_manifests(Settings(), None)
    text = manifests_yaml(objs)
    assert list(yaml.safe_load_all(text)) == objs
    assert "config.yml: |" in text  # multi-line text prints as a readable block


# What the seed notebook's five objects meant, field by field (from its templates).
SEED_INTENT = {
    "namespace": "docker-registry",
    "dns_wildcards": ["*.docker-registry.svc.cluster.local", "*.docker-registry"],
    "ip": "172.17.1.62",
    "issuer": "cert-manager-issuer",
    "pvc": ("docker-registry-pvc", "5Gi", "longhorn", ["ReadWriteOnce"]),
    "deployment": "docker-registry",
    "replicas": 1,
    "container_port": 5000,
    "service": ("docker-registry-service", 5000),
}


def test_seed_variables_render_the_seeds_intent_with_defects_fixed() -> None:
    settings = load_settings(Path(__file__).resolve().parents[1] / "data/seed_group_vars.yaml")
    objs = render_manifests(settings, None)
    i = SEED_INTENT

    assert _find(objs, "Namespace", i["namespace"])

    cert = _find(objs, "Certificate")["spec"]
    assert cert["ipAddresses"] == [i["ip"]]
    assert cert["issuerRef"]["name"] == i["issuer"]
    # Every name we certify is one the seed's wildcards aimed at, but spelled out:
    # "*.ns" does not match "svc.ns.svc", and wildcards do not cover the bare service.
    for name in cert["dnsNames"]:
        assert name.startswith("docker-registry-service.docker-registry")
    assert any(fnmatch.fnmatch(n, i["dns_wildcards"][0]) for n in cert["dnsNames"])
    assert i["ip"] not in cert["dnsNames"]
    assert cert["commonName"] != i["ip"]  # fixed: the seed put the IP in the CN

    pvc = _find(objs, "PersistentVolumeClaim")
    name, size, storage_class, modes = i["pvc"]
    assert pvc["metadata"]["name"] == name
    assert pvc["metadata"]["namespace"] == i["namespace"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == size
    assert pvc["spec"]["storageClassName"] == storage_class
    assert pvc["spec"]["accessModes"] == modes

    deployment = _find(objs, "Deployment")
    assert deployment["metadata"]["name"] == i["deployment"]
    assert deployment["spec"]["replicas"] == i["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    proxy, registry = pod["containers"]
    assert proxy["ports"][0]["containerPort"] == i["container_port"]
    assert registry["image"] == "docker.io/library/registry:3.1.2"  # fixed: was registry:2
    assert "nodeSelector" not in pod  # fixed: was a hard-coded node-type: worker
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == cert["secretName"]  # fixed: mismatch
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == name
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # fixed: RWO + rolling

    svc = _find(objs, "Service")
    svc_name, svc_port = i["service"]
    assert svc["metadata"]["name"] == svc_name
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["port"] == svc_port
    assert svc["spec"]["ports"][0]["targetPort"] == "registry"
    assert "loadBalancerIP" not in svc["spec"]  # fixed: deprecated field
    assert svc["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] == i["ip"]
    assert not any(a.startswith("metallb.universe.tf/") for a in svc["metadata"]["annotations"])


def test_the_serve_script_follows_the_certificate_the_proxy_serves() -> None:
    """serve.sh watches the file caddy.json loads, and ships beside it in the ConfigMap."""
    manifests = render_manifests(Settings(), None)
    config_map = next(m for m in manifests if "caddy.json" in m.get("data", {}))
    assert "serve.sh" in config_map["data"]
    caddy = json.loads(config_map["data"]["caddy.json"])
    [served] = caddy["apps"]["tls"]["certificates"]["load_files"]
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    proxy = deployment["spec"]["template"]["spec"]["containers"][0]
    assert proxy["command"][:2] == ["/bin/sh", "/etc/distribution/serve.sh"]
    assert proxy["command"][2:] == ["caddy", "run", "--config", "/etc/distribution/caddy.json"]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["TLS_CERTIFICATE"] == served["certificate"]
    assert int(env["CERTIFICATE_CHECK_SECONDS"]) > 0


def test_every_object_carries_the_install_identity() -> None:
    settings = _settings(namespace="team-a", name="reg-a")
    for obj in render_manifests(settings, None):
        assert obj["metadata"]["annotations"][OWNER_ANNOTATION] == "team-a/reg-a", obj["kind"]
    certificate = _find(render_manifests(settings, None), "Certificate")
    template = certificate["spec"]["secretTemplate"]["annotations"]
    assert template[OWNER_ANNOTATION] == "team-a/reg-a"


def test_ownership_tells_ours_from_foreign_and_from_another_install() -> None:
    settings = _settings(namespace="team-a", name="reg-a")
    ours = render_manifests(settings, None)[0]
    assert foreign(ours, settings) is None
    other = render_manifests(_settings(namespace="team-b", name="reg-b"), None)[0]
    assert foreign(other, settings).owner == "team-b/reg-b"
    user_made = {"kind": "Secret", "metadata": {"name": "docker-registry-auth", "namespace": "x"}}
    assert foreign(user_made, settings).owner is None
    # An earlier release: our labels and field manager, no annotation.
    legacy = {
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "labels": {
                "app.kubernetes.io/managed-by": "registry-provisioner",
                "app.kubernetes.io/instance": "team-a",
                "app.kubernetes.io/name": "reg-a",
            },
            "managedFields": [{"manager": "registry-provisioner", "fieldsV1": {}}],
        },
    }
    assert foreign(legacy, settings) is None
    legacy["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {}}]
    assert foreign(legacy, settings) is not None


def test_no_printed_command_carries_the_password() -> None:
    """The lines provision prints pipe the login; none passes it as an argument."""
    from pathlib import Path

    from registry_provisioner.provision import ProvisionResult, summary

    text = summary(Settings(), ProvisionResult([], Path("certs/ca.crt"), 0.0))
    assert "--docker-password" not in text and "--password=" not in text
    assert "--password-stdin" in text and "--from-file=.dockerconfigjson=/dev/stdin" in text


def test_rules_grant_a_right_only_on_every_object_of_the_resource() -> None:
    from registry_provisioner.access import granted

    right = ("ns", "", "secrets", "get")
    assert granted([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}], right)
    assert granted([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], right)
    assert not granted([{"verbs": ["create"], "apiGroups": [""], "resources": ["secrets"]}], right)
    assert not granted([{"verbs": ["get"], "apiGroups": ["apps"], "resources": ["secrets"]}], right)
    named = {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}
    assert not granted([named], right)


MIRRORED = VARIANTS["mirrors"]


def test_each_mirror_is_distribution_in_proxy_mode_with_the_registrys_hardening() -> None:
    settings = _settings(**MIRRORED)
    objs = render_manifests(settings, _creds(settings))
    name = "docker-registry-mirror-upstream-lan-5000"
    config = yaml.safe_load(_find(objs, "ConfigMap", name)["data"]["config.yml"])
    assert config["proxy"] == {"remoteurl": "https://upstream.lan:5000", "ttl": "30m"}
    assert config["http"]["addr"] == ":5003"
    assert config["http"]["tls"] == {"certificate": "/certs/tls.crt", "key": "/certs/tls.key"}
    assert "password" not in json.dumps(config)  # the login comes from a Secret, as env
    claim = _find(objs, "PersistentVolumeClaim", name)
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    deployment = _find(objs, "Deployment", name)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    registry = _pod_spec([_find(objs, "Deployment", "docker-registry")])
    assert spec["securityContext"] == registry["securityContext"]
    [container] = spec["containers"]
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container
    env = {e["name"]: e for e in container["env"]}
    assert env["REGISTRY_PROXY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "lan-login",
        "key": "password",
    }
    assert env["SSL_CERT_FILE"]["value"] == "/upstream-ca/ca.crt"
    assert spec["hostAliases"] == [{"ip": "192.168.1.20", "hostnames": ["upstream.lan"]}]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == settings.tls.secret_name
    assert volumes["upstream-ca"]["configMap"]["name"] == "lan-ca"
    hub = _pod_spec([_find(objs, "Deployment", "docker-registry-mirror-docker-io")])
    hub_env = {e["name"] for e in hub["containers"][0]["env"]}
    assert not hub_env & {"REGISTRY_PROXY_USERNAME", "SSL_CERT_FILE"}
    assert "hostAliases" not in hub


def test_mirrors_share_the_registrys_ip_each_on_its_own_port() -> None:
    objs = render_manifests(_settings(**MIRRORED), None)
    services = [o for o in objs if o["kind"] == "Service"]
    assert len(services) == 3
    keys = {s["metadata"]["annotations"]["metallb.io/allow-shared-ip"] for s in services}
    ips = {s["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] for s in services}
    assert keys == {"docker-registry/docker-registry"} and ips == {"172.17.1.62"}
    assert sorted(s["spec"]["ports"][0]["port"] for s in services) == [5000, 5002, 5003]
    lan = _find(objs, "Service", "docker-registry-mirror-upstream-lan-5000")
    assert lan["spec"]["loadBalancerSourceRanges"] == ["192.168.1.0/24"]
    # Each Service selects its own pods only.
    selectors = [tuple(sorted(s["spec"]["selector"].items())) for s in services]
    assert len(set(selectors)) == 3
    # Without mirrors, the registry's Service is as before.
    plain = _find(render_manifests(Settings(), None), "Service")
    assert "metallb.io/allow-shared-ip" not in plain["metadata"]["annotations"]


def test_node_trust_sends_the_upstreams_images_through_the_mirror() -> None:
    settings = _settings(**MIRRORED)
    spec = _pod_spec(render_manifests(settings, None), "DaemonSet")
    [container] = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    certs_dir = settings.node_trust.certs_dir
    assert env["MIRRORS"] == "0 1"
    hub = env["HOSTS_TOML_0"]
    assert hub.startswith("# Managed by registry-provisioner")
    assert 'server = "https://registry-1.docker.io"' in hub
    assert '[host."https://172.17.1.62:5002"]' in hub
    assert 'capabilities = ["pull", "resolve"]' in hub
    assert f'ca = "{certs_dir}/docker.io/ca.crt"' in hub
    assert "ca = " not in env["HOSTS_TOML_SYSTEM_TRUST_0"]
    assert (env["REPLACE_0"], env["REPLACE_1"]) == ("false", "true")
    assert [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v] == [
        f"{certs_dir}/172.17.1.62:5000",
        f"{certs_dir}/docker.io",
        f"{certs_dir}/upstream.lan:5000",
    ]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert mounts[:3] == ["/host/registry", "/host/mirror-0", "/host/mirror-1"]


def test_node_trust_removal_empties_the_mirrors_directories_too() -> None:
    removal = node_trust_removal(
        Settings(),
        host_dir="/c/certs.d/10.0.0.1:5000",
        image="i:1",
        mirror_dirs=("/c/certs.d/docker.io",),
    )
    spec = removal["spec"]["template"]["spec"]
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == [
        "/c/certs.d/10.0.0.1:5000",
        "/c/certs.d/docker.io",
    ]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["MIRRORS"] == "0"


def test_nodes_trust_a_private_upstream_for_the_fallback() -> None:
    settings = _settings(**MIRRORED)
    objs = render_manifests(settings, None, "REGISTRY CA", {1: "UPSTREAM CA"})
    copy = _find(objs, "ConfigMap", settings.node_trust_ca_name)
    assert copy["data"] == {"ca.crt": "REGISTRY CA", "upstream-1.crt": "UPSTREAM CA"}
    spec = _pod_spec(objs, "DaemonSet")
    [items] = [v["configMap"]["items"] for v in spec["volumes"] if "configMap" in v]
    assert {"key": "upstream-1.crt", "path": "upstream-1.crt"} in items
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    lan_dir = settings.node_mirror_dir(settings.mirrors[1])
    assert f'ca = "{lan_dir}/upstream-ca.crt"' in env["HOSTS_TOML_1"].split("[host.")[0]
    assert "upstream-ca.crt" not in env["HOSTS_TOML_0"]  # Docker Hub: the public roots


S3_SCALE_OUT = VARIANTS["s3-scale-out"]


def _distribution_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = _find(objs, "ConfigMap", "docker-registry-config")
    return yaml.safe_load(config_map["data"]["config.yml"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_s3_storage_config_has_no_secret_and_no_redirect() -> None:
    settings = _settings(**S3_SCALE_OUT)
    objs = render_manifests(settings, _creds(settings))
    config = _distribution_config(objs)
    assert "filesystem" not in config["storage"]
    assert config["storage"]["s3"] == {
        "regionendpoint": "https://s3.store.svc:7070",
        "region": "us-east-1",
        "bucket": "registry-images",
        "forcepathstyle": True,
        "secure": True,
        "v4auth": True,
        "chunksize": 10 * 1024 * 1024,
        "rootdirectory": "/registry",
    }
    assert config["storage"]["redirect"] == {"disable": True}
    assert config["storage"]["cache"] == {"blobdescriptor": "redis"}
    assert config["redis"]["addrs"] == ["redis.store.svc:6379"]
    assert config["redis"]["db"] == 2
    # Credentials reach the pod from the user's Secrets only, never through the ConfigMap.
    text = _find(objs, "ConfigMap", "docker-registry-config")["data"]["config.yml"]
    for key in ("password:", "accesskey:", "secretkey:"):
        assert key not in text


def test_s3_redirect_can_be_switched_on() -> None:
    settings = _settings(**{**S3_SCALE_OUT, "storage.s3.redirect": True})
    assert _distribution_config(render_manifests(settings, None))["storage"]["redirect"] == {
        "disable": False
    }


def test_s3_scale_out_pod_reads_its_secrets_and_ca_and_mounts_no_claim() -> None:
    objs = render_manifests(_settings(**S3_SCALE_OUT), None)
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    spec = _pod_spec(objs)
    registry = spec["containers"][1]
    env = _env(registry)
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "s3-login", "key": "access-key-id"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-login", "key": "secret-access-key"}
    }
    assert env["REGISTRY_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-login", "key": "password"}
    }
    assert env["SSL_CERT_DIR"] == "/etc/ssl/certs:/etc/registry-s3-ca"
    mounts = {m["name"]: m["mountPath"] for m in registry["volumeMounts"]}
    assert "data" not in mounts and mounts["s3-ca"] == "/etc/registry-s3-ca"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "data" not in volumes
    assert volumes["s3-ca"]["configMap"]["name"] == "s3-ca"


def test_s3_scale_out_rolls_without_unavailability_and_spreads() -> None:
    objs = render_manifests(_settings(**S3_SCALE_OUT), None)
    deployment = _find(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    budget = _find(objs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_one_replica_has_no_spread_and_keeps_its_claim() -> None:
    objs = render_manifests(Settings(), None)
    spec = _pod_spec(objs)
    assert "topologySpreadConstraints" not in spec
    assert not [c for c in spec["containers"] if "lifecycle" in c]
    assert _find(objs, "PersistentVolumeClaim")
    config = _distribution_config(objs)
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    assert "redis" not in config and "cache" not in config["storage"]
    assert not {"AWS_ACCESS_KEY_ID", "REGISTRY_REDIS_PASSWORD"} & set(_env(spec["containers"][1]))


def test_redis_without_password_sets_no_password_env() -> None:
    settings = _settings(**{"redis.address": "redis.store.svc:6379"})
    objs = render_manifests(settings, None)
    assert "REGISTRY_REDIS_PASSWORD" not in _env(_pod_spec(objs)["containers"][1])
    assert _distribution_config(objs)["storage"]["cache"] == {"blobdescriptor": "redis"}


def test_storage_change_rolls_the_pods() -> None:
    checksum = _find(render_manifests(Settings(), None), "Deployment")["spec"]["template"][
        "metadata"
    ]["annotations"][CHECKSUM_ANNOTATION]
    s3 = _find(render_manifests(_settings(**S3_SCALE_OUT), None), "Deployment")
    assert s3["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] != checksum
