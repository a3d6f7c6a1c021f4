"""Settings: load, map the seed's group_vars, and validate before touching a cluster.

Every problem is collected and raised in one ``ConfigError`` so the user fixes
the whole file in one pass instead of one typo per run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError, ConfigProblem

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"

DEFAULT_IMAGE = "docker.io/library/registry:3.1.2"
TLS_MODES = ("cert-manager", "self-signed", "existing-secret")
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")
AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")

# The seed's flat group_vars names and where each lands; anything else there is a typo.
SEED_KEYS: dict[str, str] = {
    "docker_reg_label": "name",
    "docker_reg_namespace": "namespace",
    "docker_reg_pvc_name": "storage.claim_name",
    "docker_reg_pvc_size": "storage.size",
    "docker_reg_replicas": "replicas",
    "docker_reg_container_port": "container_port",
    "docker_reg_service_name": "service.name",
    "docker_reg_service_ip": "service.ip",
    "cert_manager_issuer": "tls.issuer_name",
}


@dataclass(frozen=True)
class StorageSettings:
    """The PersistentVolumeClaim that holds the images."""

    claim_name: str = "docker-registry-pvc"
    size: str = "5Gi"
    storage_class: str = "longhorn"
    access_mode: str = "ReadWriteOnce"


@dataclass(frozen=True)
class ServiceSettings:
    """The LoadBalancer Service that MetalLB pins to a fixed LAN address."""

    name: str = "docker-registry-service"
    ip: str = "172.17.1.62"
    port: int = 5000
    address_pool: str = ""


@dataclass(frozen=True)
class TLSSettings:
    """Where the serving certificate comes from; ``secret_name`` is shared by all users."""

    mode: str = "cert-manager"
    issuer_name: str = "cert-manager-issuer"
    issuer_kind: str = "ClusterIssuer"
    secret_name: str = "docker-registry-tls"
    extra_dns_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthSettings:
    """The single htpasswd user; its Secret also carries the shared http secret."""

    username: str = "registry"
    secret_name: str = "docker-registry-auth"


@dataclass(frozen=True)
class PullSecretSettings:
    """A dockerconfigjson Secret copied into each namespace whose pods pull from us."""

    name: str = "docker-registry-pull"
    namespaces: tuple[str, ...] = ("default",)


@dataclass(frozen=True)
class NodeTrustSettings:
    """The DaemonSet that teaches each node's containerd to trust the registry's CA."""

    enabled: bool = True
    certs_dir: str = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    image: str = ""  # empty: reuse the registry image, which ships a busybox sh


@dataclass(frozen=True)
class DiscoverySettings:
    """KEP-1755 publication so tools (Tilt, skaffold, ...) find the registry."""

    publish_local_registry_hosting: bool = True
    help_url: str = ""


@dataclass(frozen=True)
class Quantities:
    """CPU and memory amounts; an empty string leaves that entry out."""

    cpu: str = ""
    memory: str = ""

    def as_k8s(self) -> dict[str, str]:
        """Only the set entries, as a Kubernetes ResourceList."""
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}


@dataclass(frozen=True)
class ResourceSettings:
    """Container requests and limits; no CPU limit by default to avoid throttling pushes."""

    requests: Quantities = field(default_factory=lambda: Quantities(cpu="50m", memory="64Mi"))
    limits: Quantities = field(default_factory=lambda: Quantities(memory="512Mi"))

    def as_k8s(self) -> dict[str, dict[str, str]]:
        """The container ``resources`` block, leaving out empty halves."""
        out = {"requests": self.requests.as_k8s(), "limits": self.limits.as_k8s()}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class SchedulingSettings:
    """Pod placement; empty by default so no node needs a particular label."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Everything the provisioner needs; the defaults are the seed notebook's values."""

    namespace: str = "docker-registry"
    name: str = "docker-registry"
    replicas: int = 1
    image: str = DEFAULT_IMAGE
    container_port: int = 5000
    metrics_port: int = 5001
    storage: StorageSettings = field(default_factory=StorageSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    pull_secret: PullSecretSettings = field(default_factory=PullSecretSettings)
    node_trust: NodeTrustSettings = field(default_factory=NodeTrustSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)

    @property
    def ip_family(self) -> str:
        """IPv4 or IPv6, so the Service asks for the family its address belongs to."""
        return "IPv6" if ":" in self.service.ip else "IPv4"

    @property
    def registry_host(self) -> str:
        """What outside machines and node containerd use: ``ip:port``, IPv6 bracketed."""
        ip = f"[{self.service.ip}]" if self.ip_family == "IPv6" else self.service.ip
        return f"{ip}:{self.service.port}"

    @property
    def registry_url(self) -> str:
        """The https base URL of the registry on the LAN."""
        return f"https://{self.registry_host}"

    @property
    def cluster_dns_names(self) -> tuple[str, ...]:
        """Names pods can use; nodes cannot resolve them, hence the IP for containerd."""
        svc, ns = self.service.name, self.namespace
        return (f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local", f"{svc}.{ns}")

    @property
    def cluster_host(self) -> str:
        """``name:port`` for pushes from inside the cluster; ``.svc`` avoids the cluster domain."""
        return f"{self.cluster_dns_names[0]}:{self.service.port}"

    @property
    def tls_dns_names(self) -> tuple[str, ...]:
        """DNS SANs for the serving certificate (never the IP: that goes in IP SANs)."""
        return tuple(dict.fromkeys((*self.cluster_dns_names, *self.tls.extra_dns_names)))

    @property
    def common_name(self) -> str | None:
        """A DNS name short enough for a CN (64 chars); clients only check SANs anyway."""
        return next((n for n in self.tls_dns_names if len(n) <= 64 and "*" not in n), None)

    @property
    def deployment_strategy(self) -> str:
        """Recreate unless the volume can attach to many nodes (RWO + rolling deadlocks)."""
        return "RollingUpdate" if self.storage.access_mode == "ReadWriteMany" else "Recreate"

    @property
    def node_trust_image(self) -> str:
        """The helper image, defaulting to the registry image already on the nodes."""
        return self.node_trust.image or self.image

    @property
    def registry_config_name(self) -> str:
        """ConfigMap holding distribution's config.yml."""
        return f"{self.name}-config"

    @property
    def node_trust_name(self) -> str:
        """DaemonSet and ConfigMap name of the node-trust helper."""
        return f"{self.name}-node-trust"

    @property
    def node_registry_dir(self) -> str:
        """The per-registry directory containerd reads on every node (``host:port`` form)."""
        return str(PurePosixPath(self.node_trust.certs_dir) / self.registry_host)


# --------------------------------------------------------------------------- loading


def load_settings(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load defaults, overlay a config file and overrides, and validate the result.

    ``path=None`` reads ``DEFAULT_CONFIG`` when it exists. ``overrides`` may be nested
    or use dotted keys (``{"service.ip": "10.0.0.9"}``); string values for non-string
    settings are parsed as YAML scalars so command-line values work; ``None`` values
    mean "not given" and are skipped, so unset CLI options can be passed straight in.
    """
    problems: list[ConfigProblem] = []
    aliases: dict[str, str] = {}
    data: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        data = _read_file(Path(path))
        if _looks_like_seed(data):
            data, aliases = _from_seed(data, problems)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    override_tree = _expand_dotted(given)
    merged = _deep_merge(data, override_tree)
    bad_paths: set[str] = set()
    settings = _build(Settings, merged, "", problems, bad_paths, _leaf_paths(override_tree))
    problems.extend(p for p in _validate(settings) if p.field not in bad_paths)
    if problems:
        raise ConfigError(problems=[_aliased(p, aliases) for p in problems])
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    """Parse the file; a missing or malformed file is a config problem like any other."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("file", str(path), f"a readable YAML file ({e.strerror})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError("file", str(path), f"valid YAML{at}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        found = type(data).__name__
        raise ConfigError("file", str(path), f"a YAML mapping of settings, not a {found}")
    return data


def _looks_like_seed(data: Mapping[str, Any]) -> bool:
    """The seed's group_vars are flat ``docker_reg_*`` names; ours are nested sections."""
    return any(str(k) in SEED_KEYS or str(k).startswith("docker_reg_") for k in data)


def _from_seed(
    data: Mapping[str, Any], problems: list[ConfigProblem]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Translate the seed's names, remembering them so messages quote what the user wrote."""
    nested: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    sections = {f.name for f in dataclasses.fields(Settings)}
    for key, value in data.items():
        target = SEED_KEYS.get(str(key))
        if target is None and str(key) in sections:
            problems.append(
                ConfigProblem(
                    str(key),
                    value,
                    "a seed group_vars name: this file uses the seed's flat docker_reg_* "
                    "names, so write config.yaml settings in a separate config.yaml file",
                )
            )
        elif target is None:
            problems.append(_unknown(str(key), value, list(SEED_KEYS), "the seed's group_vars"))
        else:
            aliases[target] = str(key)
            *parents, leaf = target.split(".")
            nested = _deep_merge(nested, _nest(parents, {leaf: value}))
    return nested, aliases


def _aliased(problem: ConfigProblem, aliases: Mapping[str, str]) -> ConfigProblem:
    seed_name = aliases.get(problem.field)
    if seed_name is None:
        return problem
    return dataclasses.replace(problem, field=f"{seed_name} ({problem.field})")


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Split top-level dotted keys only: values such as node selectors have dots in keys."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        out = _deep_merge(out, _nest(parents, {leaf: value}))
    return out


def _nest(parents: list[str], leaf: dict[str, Any]) -> dict[str, Any]:
    for part in reversed(parents):
        leaf = {part: leaf}
    return leaf


def _leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            paths |= _leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _unknown(path: str, value: object, known: list[str], where: str) -> ConfigProblem:
    """An unknown key, with the closest known name: most unknown keys are typos."""
    leaf = path.rsplit(".", 1)[-1]
    prefix = path[: len(path) - len(leaf)]
    match = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    if match:
        return ConfigProblem(path, value, f"unknown setting; did you mean '{prefix}{match[0]}'?")
    return ConfigProblem(path, value, f"unknown setting; {where} has: {', '.join(known)}")


# --------------------------------------------------------------------------- typing


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is str:
        return 'a string (quote it; "" for none)'
    if origin is tuple and get_args(tp)[0] is str:
        return "a list of strings, e.g. [a, b]"
    if origin is tuple:
        return "a list of mappings"
    if origin is dict and get_args(tp)[1] is str:
        return "a mapping of strings to strings (quote values like true or 1)"
    return "a mapping"


def _check_type(tp: Any, value: Any) -> tuple[bool, Any]:
    """Check ``value`` against a field type; lists become tuples so Settings stay frozen."""
    origin = get_origin(tp)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        item = get_args(tp)[0]
        ok_items = (
            (lambda v: isinstance(v, str)) if item is str else (lambda v: isinstance(v, dict))
        )
        ok = isinstance(value, list | tuple) and all(ok_items(v) for v in value)
        return ok, tuple(value) if ok else value
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        if get_args(tp)[1] is str:
            return all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()), value
        return all(isinstance(k, str) for k in value), value
    raise TypeError(f"unsupported settings type {tp!r}")


def _build(
    cls: type,
    data: Mapping[str, Any],
    prefix: str,
    problems: list[ConfigProblem],
    bad_paths: set[str],
    from_overrides: set[str],
) -> Any:
    """Build one (nested) settings dataclass, recording type problems instead of raising."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in hints:
            where = f"'{prefix[:-1]}'" if prefix else "the top level"
            problems.append(_unknown(path, value, names, where))
            bad_paths.add(path)
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(ConfigProblem(path, value, f"a mapping of {key} settings"))
                bad_paths.add(path)
                continue
            kwargs[key] = _build(tp, value, f"{path}.", problems, bad_paths, from_overrides)
            continue
        if path in from_overrides and isinstance(value, str) and tp is not str:
            # Unparsable text is reported below as a type problem, quoting the original.
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        ok, converted = _check_type(tp, value)
        if not ok:
            problems.append(ConfigProblem(path, value, _type_name(tp)))
            bad_paths.add(path)
            continue
        kwargs[key] = converted
    return cls(**kwargs)


# --------------------------------------------------------------------------- rules

# Patterns are applied with fullmatch: `$` would accept a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPO_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_QUANTITY = re.compile(
    r"(?P<num>\+?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:[eE](?P<exponent>[+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?"
)
_SUFFIX_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
_MEBI = Decimal(1024) ** 2
_MILLI = Decimal("1e-3")

DNS_LABEL_HELP = "a DNS-1123 label: lowercase letters, digits and '-', 1-63 chars, e.g. my-name"
DNS_SUBDOMAIN_HELP = (
    "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 chars, "
    "e.g. my-secret"
)
DNS_1035_HELP = (
    "a DNS-1035 label (Service names must start with a letter): lowercase letters, "
    "digits and '-', 1-63 chars, e.g. docker-registry-service"
)


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity's value (``5Gi`` -> 5368709120), or None if malformed."""
    m = _QUANTITY.fullmatch(text)
    if not m:
        return None
    try:
        if m["exponent"] is not None:
            return Decimal(m["num"]).scaleb(int(m["exponent"]))
        return Decimal(m["num"]) * _SUFFIX_FACTORS[m["suffix"] or ""]
    except (ValueError, ArithmeticError):  # an exponent beyond any real quantity
        return None


def is_dns_label(text: str) -> bool:
    """RFC 1123 label, the rule for namespaces and label-like names."""
    return len(text) <= 63 and bool(_DNS_LABEL.fullmatch(text))


def is_dns_subdomain(text: str) -> bool:
    """RFC 1123 subdomain, the rule for most object names (Secrets, PVCs, ...)."""
    return len(text) <= 253 and all(is_dns_label(part) for part in text.split("."))


def _is_hostname(text: str) -> bool:
    """A certificate DNS name; a leading ``*.`` wildcard is allowed."""
    name = text[2:] if text.startswith("*.") else text
    parts = name.split(".")
    return len(text) <= 253 and all(_HOST_LABEL.fullmatch(p) and len(p) <= 63 for p in parts)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def image_problem(image: str) -> str | None:
    """Why an image reference is unusable, or None; floating tags are refused on purpose."""
    if not image or any(c.isspace() for c in image):
        return "an image reference without spaces, e.g. docker.io/library/registry:3.1.2"
    name, _, digest = image.partition("@")
    if digest:
        if not _DIGEST.fullmatch(digest):
            return "a digest of the form @sha256:<64 hex digits>"
    else:
        last_slash = name.rfind("/")
        colon = name.rfind(":")
        tag = name[colon + 1 :] if colon > last_slash else None
        if tag is None:
            return (
                "a pinned tag or digest, e.g. docker.io/library/registry:3.1.2 (no implicit latest)"
            )
        name = name[:colon]
        if not _TAG.fullmatch(tag):
            return "a valid tag: letters, digits, '_', '.', '-', at most 128 chars"
        if tag == "latest":
            return "a pinned version tag such as registry:3.1.2; 'latest' floats between pulls"
    parts = name.split("/")
    path_parts = parts[1:] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]) else parts
    if not all(_REPO_PART.fullmatch(p) for p in path_parts):
        return "a repository path in lowercase letters, digits and separators"
    return None


_Report = Callable[[str, object, str], None]


def _validate(s: Settings) -> list[ConfigProblem]:
    """Every semantic and cross-field rule; type problems were caught by ``_build``."""
    p: list[ConfigProblem] = []

    def bad(path: str, value: object, accepted: str) -> None:
        p.append(ConfigProblem(path, value, accepted))

    for path, value in (("namespace", s.namespace), ("name", s.name)):
        if not is_dns_label(value):
            bad(path, value, DNS_LABEL_HELP)
    if s.replicas < 1:
        bad("replicas", s.replicas, "a whole number of at least 1")
    elif s.replicas > 1 and s.storage.access_mode != "ReadWriteMany":
        bad(
            "replicas",
            s.replicas,
            "1 unless storage.access_mode is ReadWriteMany: every replica must share the same "
            f"storage, and a {s.storage.access_mode} volume attaches to one node only, so it is "
            "refused for more than one replica",
        )
    if problem := image_problem(s.image):
        bad("image", s.image, problem)

    for path, port in (("container_port", s.container_port), ("metrics_port", s.metrics_port)):
        if not 1024 <= port <= 65535:
            bad(
                path,
                port,
                "a port from 1024 to 65535: the registry runs as non-root without "
                "capabilities (set service.port for a low port such as 443)",
            )
    if s.metrics_port == s.container_port:
        other = f"a port other than container_port ({s.container_port})"
        bad("metrics_port", s.metrics_port, other)
    if not 1 <= s.service.port <= 65535:
        bad("service.port", s.service.port, "a port from 1 to 65535")

    _validate_storage(s, bad)
    _validate_service(s, bad)
    _validate_tls(s, bad)
    _validate_names(s, bad)
    _validate_node_trust(s, bad)
    if s.discovery.help_url and not s.discovery.help_url.startswith(("https://", "http://")):
        bad("discovery.help_url", s.discovery.help_url, 'an http(s) URL, or "" to leave it out')
    _validate_resources(s, bad)
    _validate_scheduling(s, bad)
    return p


def _validate_storage(s: Settings, bad: _Report) -> None:
    st = s.storage
    if not is_dns_subdomain(st.claim_name):
        bad("storage.claim_name", st.claim_name, DNS_SUBDOMAIN_HELP)
    size = parse_quantity(st.size)
    if size is None or size < _MEBI:
        bad(
            "storage.size",
            st.size,
            "a Kubernetes quantity of at least 1Mi, e.g. 5Gi or 500Mi ('m' means milli; use Mi)",
        )
    if st.storage_class and not is_dns_subdomain(st.storage_class):
        bad(
            "storage.storage_class",
            st.storage_class,
            f'{DNS_SUBDOMAIN_HELP}, or "" for the default class',
        )
    if st.access_mode not in ACCESS_MODES:
        bad("storage.access_mode", st.access_mode, f"one of {', '.join(ACCESS_MODES)}")


def _validate_service(s: Settings, bad: _Report) -> None:
    svc = s.service
    if not (len(svc.name) <= 63 and _DNS_1035.fullmatch(svc.name)):
        bad("service.name", svc.name, DNS_1035_HELP)
    try:
        ip = ipaddress.ip_address(svc.ip)
    except ValueError:
        bad(
            "service.ip",
            svc.ip,
            "an IPv4 or IPv6 address (e.g. 192.168.1.240) that is free in your MetalLB pool",
        )
    else:
        if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
            bad(
                "service.ip",
                svc.ip,
                "a routable LAN address from your MetalLB pool, not an unspecified, loopback, "
                "multicast or link-local one",
            )
    if svc.address_pool and not is_dns_subdomain(svc.address_pool):
        bad(
            "service.address_pool",
            svc.address_pool,
            f'the name of a MetalLB IPAddressPool ({DNS_SUBDOMAIN_HELP}), or "" for any pool',
        )


def _validate_tls(s: Settings, bad: _Report) -> None:
    tls = s.tls
    if tls.mode not in TLS_MODES:
        bad("tls.mode", tls.mode, f"one of {', '.join(TLS_MODES)}")
    if tls.issuer_kind not in ISSUER_KINDS:
        bad("tls.issuer_kind", tls.issuer_kind, f"one of {', '.join(ISSUER_KINDS)}")
    if tls.mode == "cert-manager" and not is_dns_subdomain(tls.issuer_name):
        bad(
            "tls.issuer_name",
            tls.issuer_name,
            f"the name of an existing cert-manager {tls.issuer_kind} ({DNS_SUBDOMAIN_HELP})",
        )
    if not is_dns_subdomain(tls.secret_name):
        needs = (
            f"the name of an existing kubernetes.io/tls Secret in namespace {s.namespace} "
            "(tls.mode is existing-secret)"
            if tls.mode == "existing-secret"
            else DNS_SUBDOMAIN_HELP
        )
        bad("tls.secret_name", tls.secret_name, needs)
    for i, name in enumerate(tls.extra_dns_names):
        path = f"tls.extra_dns_names[{i}]"
        if _is_ip(name):
            bad(path, name, "a DNS name; IP addresses belong in service.ip (they become IP SANs)")
        elif not _is_hostname(name):
            bad(path, name, "a DNS name such as registry.home.lan (a leading '*.' is allowed)")


def _validate_names(s: Settings, bad: _Report) -> None:
    if not _USERNAME.fullmatch(s.auth.username):
        bad(
            "auth.username",
            s.auth.username,
            "1-64 letters, digits, '.', '_', '@' or '-' (htpasswd forbids ':')",
        )
    for path, value in (
        ("auth.secret_name", s.auth.secret_name),
        ("pull_secret.name", s.pull_secret.name),
    ):
        if not is_dns_subdomain(value):
            bad(path, value, DNS_SUBDOMAIN_HELP)
    seen: set[str] = set()
    for i, ns in enumerate(s.pull_secret.namespaces):
        path = f"pull_secret.namespaces[{i}]"
        if not is_dns_label(ns):
            bad(path, ns, f"a namespace name, {DNS_LABEL_HELP}")
        elif ns in seen:
            bad(path, ns, "each namespace once")
        seen.add(ns)
    # These Secrets share the registry namespace; one name for two would overwrite a Secret.
    owners: dict[str, str] = {}
    candidates = [("tls.secret_name", s.tls.secret_name), ("auth.secret_name", s.auth.secret_name)]
    if s.namespace in s.pull_secret.namespaces:
        candidates.append(("pull_secret.name", s.pull_secret.name))
    for path, value in candidates:
        if value in owners:
            bad(path, value, f"a name different from {owners[value]} (both are Secrets here)")
        owners.setdefault(value, path)


def _validate_node_trust(s: Settings, bad: _Report) -> None:
    nt = s.node_trust
    certs = PurePosixPath(nt.certs_dir)
    if not nt.certs_dir.startswith("/") or ".." in certs.parts or certs == PurePosixPath("/"):
        bad(
            "node_trust.certs_dir",
            nt.certs_dir,
            "an absolute directory path on the nodes, not '/', e.g. /etc/containerd/certs.d "
            "(k3s: /var/lib/rancher/k3s/agent/etc/containerd/certs.d)",
        )
    if nt.image and (problem := image_problem(nt.image)):
        bad("node_trust.image", nt.image, f'{problem}, or "" to reuse the registry image')


def _validate_resources(s: Settings, bad: _Report) -> None:
    values: dict[str, Decimal] = {}
    for half in ("requests", "limits"):
        q: Quantities = getattr(s.resources, half)
        for kind, text, minimum, example in (
            ("cpu", q.cpu, _MILLI, "50m or 0.5"),
            ("memory", q.memory, _MEBI, "64Mi or 1Gi ('m' means milli; use Mi)"),
        ):
            if not text:
                continue
            path = f"resources.{half}.{kind}"
            amount = parse_quantity(text)
            if amount is None or amount < minimum:
                low = "1m" if kind == "cpu" else "1Mi"
                bad(path, text, f"a Kubernetes quantity of at least {low}, e.g. {example}")
            else:
                values[path] = amount
    for kind in ("cpu", "memory"):
        req, lim = values.get(f"resources.requests.{kind}"), values.get(f"resources.limits.{kind}")
        if req is not None and lim is not None and req > lim:
            text = getattr(s.resources.requests, kind)
            limit_text = getattr(s.resources.limits, kind)
            bad(f"resources.requests.{kind}", text, f"at most the limit ({limit_text})")


def _validate_scheduling(s: Settings, bad: _Report) -> None:
    sc = s.scheduling
    for key, value in sc.node_selector.items():
        path = f"scheduling.node_selector.{key}"
        prefix, _, name = key.rpartition("/")
        if (prefix and not is_dns_subdomain(prefix)) or not (
            len(name) <= 63 and _LABEL_NAME.fullmatch(name)
        ):
            bad(path, key, "a label key such as kubernetes.io/arch or disktype")
        elif value and not (len(value) <= 63 and _LABEL_NAME.fullmatch(value)):
            bad(path, value, "a label value: at most 63 letters, digits, '-', '_' or '.'")
    for i, tol in enumerate(sc.tolerations):
        path = f"scheduling.tolerations[{i}]"
        unknown = sorted(set(tol) - set(TOLERATION_KEYS))
        if unknown:
            known = f"a toleration key: {', '.join(TOLERATION_KEYS)}"
            bad(f"{path}.{unknown[0]}", tol[unknown[0]], known)
            continue
        op = tol.get("operator", "Equal")
        if op not in TOLERATION_OPERATORS:
            bad(f"{path}.operator", op, f"one of {', '.join(TOLERATION_OPERATORS)}")
        if tol.get("effect", "") not in TOLERATION_EFFECTS:
            bad(
                f"{path}.effect",
                tol.get("effect"),
                "one of NoSchedule, PreferNoSchedule, NoExecute (or leave it out)",
            )
        if op == "Exists" and tol.get("value"):
            bad(f"{path}.value", tol["value"], "no value when operator is Exists")
        for key in ("key", "value"):
            if key in tol and not isinstance(tol[key], str):
                bad(f"{path}.{key}", tol[key], "a string")
        seconds = tol.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            bad(f"{path}.tolerationSeconds", seconds, "a whole number of seconds")
    for key, value in sc.affinity.items():
        if key not in AFFINITY_KEYS:
            bad(f"scheduling.affinity.{key}", value, f"one of {', '.join(AFFINITY_KEYS)}")
        elif not isinstance(value, dict):
            bad(f"scheduling.affinity.{key}", value, "a mapping, as in a Pod's spec.affinity")
