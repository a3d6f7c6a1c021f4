"""Loading and validating settings: defaults, both file shapes, and every rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry_provisioner.config import (
    DEFAULT_CONFIG,
    SEED_KEYS,
    Settings,
    load_settings,
    parse_quantity,
)
from registry_provisioner.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data"
SEED_VARS = DATA / "seed_group_vars.yaml"
SEED_ORG = Path("/work/shared/seed/provision-docker-registry.org")


def _get(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_code_defaults_are_the_seeds_values() -> None:
    seed = yaml.safe_load(SEED_VARS.read_text(encoding="utf-8"))
    assert set(seed) == set(SEED_KEYS)
    defaults = Settings()
    for seed_key, dotted in SEED_KEYS.items():
        assert _get(defaults, dotted) == seed[seed_key], seed_key


def test_seed_data_copy_matches_the_notebook() -> None:
    if not SEED_ORG.is_file():
        pytest.skip("the seed notebook is not on this machine")
    block = re.search(
        r"#\+begin_src yaml :tangle group_vars/all\n(.*?)#\+end_src", SEED_ORG.read_text(), re.S
    )
    assert block is not None
    assert yaml.safe_load(block.group(1)) == yaml.safe_load(SEED_VARS.read_text())


def test_config_yaml_documents_every_setting_at_its_default() -> None:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert load_settings(DEFAULT_CONFIG) == Settings()
    assert load_settings(None) == Settings()

    def keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in tree.items():
            if isinstance(v, dict) and v and k not in ("node_selector", "affinity"):
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")
        return out

    def fields(value: Any, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for name, v in vars(value).items():
            if hasattr(v, "__dataclass_fields__"):
                out |= fields(v, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    assert keys(data) == fields(Settings())


def test_seed_group_vars_load_as_is() -> None:
    settings = load_settings(SEED_VARS)
    assert settings == Settings()
    assert settings.service.ip == "172.17.1.62"
    assert settings.tls.issuer_name == "cert-manager-issuer"


def test_seed_group_vars_map_onto_settings(tmp_path: Path) -> None:
    custom = {
        "docker_reg_label": "reg",
        "docker_reg_namespace": "infra",
        "docker_reg_pvc_name": "reg-data",
        "docker_reg_pvc_size": "20Gi",
        "docker_reg_replicas": 1,
        "docker_reg_container_port": 5443,
        "docker_reg_service_name": "reg-svc",
        "docker_reg_service_ip": "192.168.10.5",
        "cert_manager_issuer": "home-ca",
    }
    settings = load_settings(_write(tmp_path, custom))
    for seed_key, dotted in SEED_KEYS.items():
        assert _get(settings, dotted) == custom[seed_key]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, "")) == Settings()


def test_overrides_accept_dotted_keys_and_cli_strings(tmp_path: Path) -> None:
    settings = load_settings(
        _write(tmp_path, {"namespace": "infra"}),
        {
            "service.ip": "10.0.0.9",
            "replicas": "2",
            "storage": {"access_mode": "ReadWriteMany"},
            "node_trust.enabled": "false",
            "tls.mode": None,  # an unset CLI option
        },
    )
    assert settings.namespace == "infra"
    assert settings.service.ip == "10.0.0.9"
    assert settings.replicas == 2
    assert settings.storage.access_mode == "ReadWriteMany"
    assert settings.storage.size == "5Gi"  # siblings of an override keep their values
    assert settings.node_trust.enabled is False
    assert settings.tls.mode == "cert-manager"


def test_derived_helpers() -> None:
    s = Settings()
    assert s.registry_host == "172.17.1.62:5000"
    assert s.cluster_dns_names == (
        "docker-registry-service.docker-registry.svc",
        "docker-registry-service.docker-registry.svc.cluster.local",
        "docker-registry-service.docker-registry",
    )
    assert s.cluster_host == "docker-registry-service.docker-registry.svc:5000"
    assert s.deployment_strategy == "Recreate"
    assert s.node_trust_image == s.image
    assert s.node_registry_dir == (
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d/172.17.1.62:5000"
    )
    v6 = load_settings(None, {"service.ip": "fd00::62"})
    assert v6.registry_host == "[fd00::62]:5000"
    assert v6.ip_family == "IPv6"
    rwx = load_settings(None, {"replicas": 2, "storage.access_mode": "ReadWriteMany"})
    assert rwx.deployment_strategy == "RollingUpdate"
    rwop = load_settings(None, {"storage.access_mode": "ReadWriteOncePod"})
    assert rwop.deployment_strategy == "Recreate"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5Gi", 5 * 1024**3),
        ("500m", 0.5),
        ("1.5G", 1.5e9),
        ("2e3", 2000),
        ("64Mi", 64 * 2**20),
        ("1Ei", 2**60),
        ("1E", 1e18),
        ("1E-3", 0.001),
    ],
)
def test_parse_quantity(text: str, expected: float) -> None:
    assert float(parse_quantity(text) or 0) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "5 Gi", "5GB", "Gi", "-1Gi", "5gi", "1.2.3", "1e", "1Eii", "1e99999999", "5Gi\n"]
)
def test_parse_quantity_rejects(text: str) -> None:
    assert parse_quantity(text) is None


_S3 = {
    "storage.backend": "s3",
    "storage.s3.bucket": "registry-images",
    "storage.s3.credentials_secret": "s3-login",
}

# (overrides, field named in the message, words the message must contain)
BAD_CONFIGS: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"namespace": "Docker_Registry"}, "namespace", ["DNS-1123 label"]),
    ({"namespace": "a" * 64}, "namespace", ["1-63 chars"]),
    ({"name": "-registry"}, "name", ["DNS-1123 label"]),
    ({"replicas": 0}, "replicas", ["at least 1"]),
    ({"replicas": 3}, "replicas", ["ReadWriteMany", "share the same storage", "ReadWriteOnce"]),
    ({"replicas": 3}, "replicas", ["storage.backend is s3"]),
    ({"storage.backend": "S3"}, "storage.backend", ["one of filesystem, s3"]),
    ({"storage.backend": "s3"}, "storage.s3.bucket", ["existing S3 bucket", "backend is s3"]),
    (
        {"storage.backend": "s3"},
        "storage.s3.credentials_secret",
        ["existing Secret", "access-key-id", "secret-access-key"],
    ),
    ({**_S3, "storage.s3.bucket": "Images"}, "storage.s3.bucket", ["lowercase"]),
    ({**_S3, "storage.s3.endpoint": "s3.lan:9000"}, "storage.s3.endpoint", ["http(s)://"]),
    ({**_S3, "storage.s3.endpoint": "http://s3.lan/b"}, "storage.s3.endpoint", ["without a path"]),
    (
        {**_S3, "storage.s3.endpoint": "http://s3.lan:9000"},
        "storage.s3.secure",
        ["false for an http endpoint"],
    ),
    (
        {
            **_S3,
            "storage.s3.endpoint": "http://s3.lan:9000",
            "storage.s3.secure": False,
            "storage.s3.ca_configmap": "s3-ca",
        },
        "storage.s3.ca_configmap",
        ["only used over https"],
    ),
    ({**_S3, "storage.s3.chunk_size": "1Mi"}, "storage.s3.chunk_size", ["from 5Mi"]),
    ({**_S3, "storage.s3.chunk_size": "2Gi"}, "storage.s3.chunk_size", ["below 2Gi"]),
    ({**_S3, "storage.s3.root_directory": "registry"}, "storage.s3.root_directory", ["/registry"]),
    (
        {**_S3, "storage.s3.credentials_secret": "docker-registry-auth"},
        "storage.s3.credentials_secret",
        ["not one this install writes"],
    ),
    ({**_S3, "storage.s3.secure": 1}, "storage.s3.secure", ["true or false"]),
    ({"redis.address": "redis"}, "redis.address", ["host:port"]),
    ({"redis.address": "redis:99999"}, "redis.address", ["host:port"]),
    ({"redis.db": 16}, "redis.db", ["0 to 15"]),
    ({"redis.password_secret": "redis-login"}, "redis.password_secret", ["redis.address"]),
    ({"replicas": "three"}, "replicas", ["whole number"]),
    ({"replicas": True}, "replicas", ["whole number"]),
    ({"image": "docker.io/library/registry"}, "image", ["pinned tag or digest"]),
    ({"image": "registry:latest"}, "image", ["pinned version tag"]),
    ({"image": "registry@sha256:abc"}, "image", ["sha256"]),
    ({"container_port": 80}, "container_port", ["1024 to 65535", "non-root"]),
    ({"container_port": 70000}, "container_port", ["1024 to 65535"]),
    ({"metrics_port": 5000}, "metrics_port", ["other than container_port (5000)"]),
    ({"service.port": 0}, "service.port", ["1 to 65535"]),
    ({"service.port": "https"}, "service.port", ["whole number"]),
    ({"service.name": "1registry"}, "service.name", ["DNS-1035", "start with a letter"]),
    ({"service.ip": "172.17.1.300"}, "service.ip", ["IPv4 or IPv6", "MetalLB"]),
    ({"service.ip": "registry.lan"}, "service.ip", ["IPv4 or IPv6"]),
    ({"service.ip": "127.0.0.1"}, "service.ip", ["loopback"]),
    ({"service.ip": "0.0.0.0"}, "service.ip", ["unspecified"]),
    ({"service.address_pool": "Default Pool"}, "service.address_pool", ["IPAddressPool"]),
    ({"storage.size": "5GB"}, "storage.size", ["quantity", "5Gi"]),
    ({"storage.size": "512m"}, "storage.size", ["'m' means milli"]),
    ({"storage.size": 5}, "storage.size", ["a string"]),
    ({"storage.claim_name": "Data_PVC"}, "storage.claim_name", ["DNS-1123 subdomain"]),
    ({"storage.sub_path": "/registry"}, "storage.sub_path", ["relative", "notebook"]),
    ({"storage.sub_path": "../registry"}, "storage.sub_path", ["without '..'"]),
    ({"storage.sub_path": "a/../../b"}, "storage.sub_path", ["without '..'"]),
    ({"storage.sub_path": "registry/"}, "storage.sub_path", ["relative"]),
    ({"storage.sub_path": 7}, "storage.sub_path", ["a string"]),
    ({"storage.storage_class": "Longhorn"}, "storage.storage_class", ["default class"]),
    (
        {"storage.access_mode": "RWO"},
        "storage.access_mode",
        ["ReadWriteOnce, ReadWriteMany, ReadWriteOncePod"],
    ),
    ({"tls.mode": "letsencrypt"}, "tls.mode", ["cert-manager, self-signed, existing-secret"]),
    ({"tls.issuer_kind": "clusterissuer"}, "tls.issuer_kind", ["Issuer, ClusterIssuer"]),
    ({"tls.issuer_name": ""}, "tls.issuer_name", ["existing cert-manager ClusterIssuer"]),
    (
        {"tls.mode": "existing-secret", "tls.secret_name": ""},
        "tls.secret_name",
        ["existing kubernetes.io/tls Secret"],
    ),
    ({"tls.extra_dns_names": ["172.17.1.62"]}, "tls.extra_dns_names[0]", ["service.ip"]),
    ({"tls.extra_dns_names": ["bad name"]}, "tls.extra_dns_names[0]", ["DNS name"]),
    ({"tls.extra_dns_names": "registry.lan"}, "tls.extra_dns_names", ["list of strings"]),
    ({"auth.username": "re:gistry"}, "auth.username", ["htpasswd forbids ':'"]),
    ({"auth.secret_name": "docker-registry-tls"}, "auth.secret_name", ["different from"]),
    ({"pull_secret.namespaces": ["default", "Apps"]}, "pull_secret.namespaces[1]", ["label"]),
    ({"pull_secret.namespaces": ["a", "a"]}, "pull_secret.namespaces[1]", ["each namespace once"]),
    (
        {"metrics.allowed_namespaces": ["monitoring", "Ops"]},
        "metrics.allowed_namespaces[1]",
        ["a namespace name", "DNS-1123 label"],
    ),
    (
        {"metrics.allowed_namespaces": "monitoring"},
        "metrics.allowed_namespaces",
        ["a list of strings"],
    ),
    ({"node_trust.certs_dir": "etc/containerd/certs.d"}, "node_trust.certs_dir", ["absolute"]),
    ({"node_trust.certs_dir": "/"}, "node_trust.certs_dir", ["certs.d", "config_path"]),
    ({"node_trust.certs_dir": "//"}, "node_trust.certs_dir", ["certs.d", "k3s:"]),
    ({"node_trust.certs_dir": "/etc"}, "node_trust.certs_dir", ["certs.d", "RKE2:"]),
    ({"node_trust.certs_dir": "/var/lib/kubelet"}, "node_trust.certs_dir", ["certs.d"]),
    ({"node_trust.certs_dir": "/etc/containerd/certs.d/.."}, "node_trust.certs_dir", ["'..'"]),
    ({"node_trust.certs_dir": "/x/../etc/certs.d"}, "node_trust.certs_dir", ["'..'"]),
    ({"node_trust.enabled": "maybe"}, "node_trust.enabled", ["true or false"]),
    ({"node_trust.image": "busybox"}, "node_trust.image", ["reuse the registry image"]),
    ({"node_trust.namespace": "Trust"}, "node_trust.namespace", ["<namespace>-node-trust"]),
    (
        {"node_trust.namespace": "docker-registry"},
        "node_trust.namespace",
        ["other than the registry's", "privileged"],
    ),
    ({"namespace": "n" * 60}, "node_trust.namespace", ["over 63 characters"]),
    ({"discovery.help_url": "README.md"}, "discovery.help_url", ["http(s) URL"]),
    ({"resources.requests.cpu": "fast"}, "resources.requests.cpu", ["quantity", "50m"]),
    ({"resources.limits.memory": "512m"}, "resources.limits.memory", ["'m' means milli"]),
    ({"resources.requests.memory": "1Gi"}, "resources.requests.memory", ["at most the limit"]),
    ({"resources.requests.gpu": "1"}, "resources.requests.gpu", ["unknown setting"]),
    ({"redis.tls": "true"}, "redis.tls", ["not supported", "plain TCP inside the cluster"]),
    ({"redis.tls.rootcas": "ca.crt"}, "redis.tls", ["not supported", "gc empties"]),
    (
        {"scheduling.node_selector": {"node-type": True}},
        "scheduling.node_selector",
        ["mapping of strings to strings"],
    ),
    (
        {"scheduling.tolerations": [{"key": "x", "operator": "Is"}]},
        "scheduling.tolerations[0].operator",
        ["Exists, Equal"],
    ),
    (
        {"scheduling.affinity": {"nodeAfinity": {}}},
        "scheduling.affinity.nodeAfinity",
        ["nodeAffinity"],
    ),
    ({"storage.szie": "10Gi"}, "storage.szie", ["did you mean 'storage.size'?"]),
    ({"replica": 2}, "replica", ["did you mean 'replicas'?"]),
    ({"servce": {"ip": "10.0.0.1"}}, "servce", ["did you mean 'service'?"]),
    ({"storage": "10Gi"}, "storage", ["mapping of storage settings"]),
    ({"mirrors": "docker.io"}, "mirrors", ["list of mirrors"]),
    ({"mirrors": [5]}, "mirrors[0]", ["mapping of settings", "upstream, port"]),
    ({"mirrors": [{"port": 5002}]}, "mirrors[0].upstream", ["required", "https://"]),
    ({"mirrors": [{"upstream": "https://h.io"}]}, "mirrors[0].port", ["1024 to 65535"]),
    (
        {"mirrors": [{"upstream": "https://h.io/v2/x", "port": 5002}]},
        "mirrors[0].upstream",
        ["without a path"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5002, "ttl": "7d"}]},
        "mirrors[0].ttl",
        ["Go duration", "168h"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5002, "name": "h.io/x"}]},
        "mirrors[0].name",
        ["docker.io"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5002, "sise": "1Gi"}]},
        "mirrors[0].sise",
        ["did you mean 'mirrors[0].size'?"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": "high"}]},
        "mirrors[0].port",
        ["whole number"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5002, "source_ranges": ["lan"]}]},
        "mirrors[0].source_ranges[0]",
        ["CIDR"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5002, "upstream_ip": "h"}]},
        "mirrors[0].upstream_ip",
        ["IP address"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5000}]},
        "mirrors[0].port",
        ["service.port does not use"],
    ),
    (
        {"mirrors": [{"upstream": "https://h.io", "port": 5001}]},
        "mirrors[0].port",
        ["metrics_port"],
    ),
    (
        {
            "mirrors": [
                {"upstream": "https://h.io", "port": 5002},
                {"upstream": "https://x.io", "name": "h.io", "port": 5003},
            ]
        },
        "mirrors[1].name",
        ["other than mirrors[0]"],
    ),
    (
        {"mirrors": [{"upstream": "https://" + "h" * 60 + ".io", "port": 5002}]},
        "mirrors[0].name",
        ["63 characters"],
    ),
]


def test_mirrors_load_with_their_defaults_and_derived_names() -> None:
    settings = load_settings(
        None,
        {
            "service.ip": "192.168.1.240",
            "mirrors": "[{upstream: https://registry-1.docker.io, name: docker.io, port: 5002},"
            " {upstream: 'https://upstream.lan:5000', port: 5003}]",
        },
    )
    hub, lan = settings.mirrors
    assert (hub.host, hub.ttl, hub.size, hub.source_ranges) == ("docker.io", "168h", "10Gi", ())
    assert lan.host == "upstream.lan:5000"
    assert settings.mirror_name(lan) == "docker-registry-mirror-upstream-lan-5000"
    assert settings.mirror_url(hub) == "https://192.168.1.240:5002"
    assert settings.node_mirror_dir(hub).endswith("/containerd/certs.d/docker.io")


def test_s3_allows_replicas_on_any_access_mode() -> None:
    settings = load_settings(None, {**_S3, "replicas": 3, "redis.address": "redis.r.svc:6379"})
    assert settings.replicas == 3
    assert settings.deployment_strategy == "RollingUpdate"
    assert not settings.storage.on_claim
    assert settings.storage.s3.chunk_bytes == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("overrides", "field", "words"), BAD_CONFIGS, ids=[c[1] for c in BAD_CONFIGS]
)
def test_each_rule_names_field_value_and_fix(
    tmp_path: Path, overrides: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, ""), overrides)
    error = info.value
    assert field in error.fields, str(error)
    line = next(str(p) for p in error.problems if p.field == field)
    assert line.startswith(f"config: {field}: ")
    assert " is not valid: " in line
    for word in words:
        assert word in line, line
    assert "\n" not in line


# A pattern anchored with `$` accepts a trailing newline; names must match as a whole.
TRAILING_NEWLINES: list[tuple[str, Any, str]] = [
    ("namespace", "docker-registry\n", "namespace"),
    ("name", "docker-registry\n", "name"),
    ("auth.username", "registry\n", "auth.username"),
    ("storage.claim_name", "docker-registry-pvc\n", "storage.claim_name"),
    ("storage.size", "5Gi\n", "storage.size"),
    ("service.name", "docker-registry-service\n", "service.name"),
    ("pull_secret.name", "docker-registry-pull\n", "pull_secret.name"),
    ("pull_secret.namespaces", ["default\n"], "pull_secret.namespaces[0]"),
    ("tls.extra_dns_names", ["registry.lan\n"], "tls.extra_dns_names[0]"),
    ("image", "docker.io/library/registry:3.1.2\n", "image"),
    ("scheduling.node_selector", {"disktype": "ssd\n"}, "scheduling.node_selector.disktype"),
]


@pytest.mark.parametrize(
    ("key", "value", "field"), TRAILING_NEWLINES, ids=[c[0] for c in TRAILING_NEWLINES]
)
def test_trailing_newline_is_refused(tmp_path: Path, key: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, ""), {key: value})
    assert field in info.value.fields, str(info.value)
    assert "\\n" in str(info.value)


def test_bad_file_values_are_reported_too(tmp_path: Path) -> None:
    path = _write(tmp_path, {"service": {"ip": "10.0.0.256"}})
    with pytest.raises(ConfigError, match=r"config: service\.ip: '10\.0\.0\.256' is not valid"):
        load_settings(path)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"namespace": "Bad", "storage": {"size": "lots", "acess_mode": "ReadWriteOnce"}},
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, {"service.ip": "nope"})
    assert set(info.value.fields) == {
        "namespace",
        "storage.size",
        "storage.acess_mode",
        "service.ip",
    }
    assert len(str(info.value).splitlines()) == 4


def test_seed_shape_typos_suggest_the_seed_name(tmp_path: Path) -> None:
    seed = yaml.safe_load(SEED_VARS.read_text())
    seed["docker_reg_servce_ip"] = seed.pop("docker_reg_service_ip")
    seed["docker_reg_pvc_size"] = "5 GB"
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, seed))
    text = str(info.value)
    assert "did you mean 'docker_reg_service_ip'?" in text
    # Problems in a seed file quote the name the user actually wrote.
    assert "config: docker_reg_pvc_size (storage.size): '5 GB' is not valid" in text


def test_seed_shape_mixed_with_sections_is_explained(tmp_path: Path) -> None:
    seed = yaml.safe_load(SEED_VARS.read_text())
    seed["storage"] = {"access_mode": "ReadWriteMany"}
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, seed))
    assert info.value.fields == ("storage",)
    assert "flat docker_reg_* names" in str(info.value)


@pytest.mark.parametrize(
    ("content", "accepted"),
    [
        # Where the mistake is, from the Python parser, though libyaml's parses first.
        ("a: 1\nb: [unclosed", r"(?s)valid YAML \(line 2, column \d+\): .*\n +b: \[unclosed\n +\^"),
        ("- a\n- b\n", "mapping of settings, not a list"),
    ],
)
def test_unusable_files(tmp_path: Path, content: str, accepted: str) -> None:
    with pytest.raises(ConfigError, match=accepted):
        load_settings(_write(tmp_path, content))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config: file: .* readable YAML file"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("/var/lib/rancher/k3s/agent/etc/containerd/certs.d", None),
        ("/var/lib/rancher/rke2/agent/etc/containerd/certs.d", None),
        ("/etc/containerd/certs.d", None),
        ("/etc/containerd/certs.d/", "/etc/containerd/certs.d"),
        ("//etc//containerd/./certs.d", "/etc/containerd/certs.d"),
    ],
)
def test_certs_dir_accepts_containerd_hosts_dirs_normalised(
    given: str, normalised: str | None
) -> None:
    settings = load_settings(None, {"node_trust.certs_dir": given})
    assert settings.node_trust.certs_dir == (normalised or given)
    assert settings.node_registry_dir == f"{normalised or given}/172.17.1.62:5000"


def test_good_non_default_values_pass() -> None:
    settings = load_settings(
        None,
        {
            "image": "registry.lan:5000/mirror/registry@sha256:" + "a" * 64,
            "service.ip": "fd00::10",
            "service.port": 443,
            "tls.mode": "self-signed",
            "tls.extra_dns_names": ["registry.home.lan", "*.home.lan"],
            "storage.storage_class": "",
            "resources.limits.cpu": "1",
            "scheduling.tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "scheduling.node_selector": {"kubernetes.io/arch": "amd64"},
            "node_trust.certs_dir": "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
        },
    )
    assert settings.registry_host == "[fd00::10]:443"
    assert settings.tls.extra_dns_names == ("registry.home.lan", "*.home.lan")
