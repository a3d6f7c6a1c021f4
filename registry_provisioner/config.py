"""Settings: load, map the seed's group_vars, and validate before touching a cluster.

Settings are frozen dataclasses whose field types carry their rules; pydantic checks
types and rules and reports every failure at once, so the user fixes the whole file in
one pass. pydantic loads on the first ``load_settings()``: importing it costs more than
this module, and ``invoke --list`` or code that only needs ``Settings`` should not pay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, get_type_hints

import yaml

from .errors import ConfigError, ConfigProblem
from .references import DIGEST, PATH_COMPONENT, TAG

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema, ErrorDetails

# libyaml's safe loader when PyYAML was built with it: the same results, many times faster.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"

DEFAULT_IMAGE = "docker.io/library/registry:3.1.2"
DEFAULT_PROXY_IMAGE = "docker.io/library/caddy:2.11.9"
# distribution listens here, on the pod's loopback, behind the proxy; no setting may take it.
UPSTREAM_PORT = 5080
TLS_MODES = ("cert-manager", "self-signed", "existing-secret")
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
STORAGE_BACKENDS = ("filesystem", "s3")
# distribution's s3 driver refuses multipart chunks below 5 MiB (S3's own minimum part).
S3_MIN_CHUNK = 5 * 1024 * 1024
# The keys the S3 credentials Secret and the redis password Secret must hold.
S3_ACCESS_KEY_ID = "access-key-id"
S3_SECRET_ACCESS_KEY = "secret-access-key"
REDIS_PASSWORD_KEY = "password"
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

# --------------------------------------------------------------------------- grammar
# Patterns are applied with fullmatch: `$` would accept a trailing newline.

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
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


def _is_label_name(text: str) -> bool:
    """The name part of a label key, and a label value (which may also be empty)."""
    return len(text) <= 63 and bool(_LABEL_NAME.fullmatch(text))


def _dns_name_problem(name: str) -> str | None:
    """Why a certificate DNS name is unusable; a leading ``*.`` wildcard is allowed."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return "a DNS name; IP addresses belong in service.ip (they become IP SANs)"
    labels = (name[2:] if name.startswith("*.") else name).split(".")
    if len(name) <= 253 and all(len(p) <= 63 and _HOST_LABEL.fullmatch(p) for p in labels):
        return None
    return "a DNS name such as registry.home.lan (a leading '*.' is allowed)"


# Image references: this function and its patterns can move to a shared references module.


def image_problem(image: str) -> str | None:
    """Why an image reference is unusable, or None; floating tags are refused on purpose."""
    if not image or any(c.isspace() for c in image):
        return "an image reference without spaces, e.g. docker.io/library/registry:3.1.2"
    name, _, digest = image.partition("@")
    if digest:
        if not DIGEST.fullmatch(digest):
            return "a digest of the form @sha256:<64 hex digits> or @sha512:<128 hex digits>"
    else:
        colon = name.rfind(":")
        if colon < name.rfind("/") + 1:
            return (
                "a pinned tag or digest, e.g. docker.io/library/registry:3.1.2 (no implicit latest)"
            )
        name, tag = name[:colon], name[colon + 1 :]
        if not TAG.fullmatch(tag):
            return "a valid tag: letters, digits, '_', '.', '-', at most 128 chars"
        if tag == "latest":
            return "a pinned version tag such as registry:3.1.2; 'latest' floats between pulls"
    parts = name.split("/")
    path_parts = parts[1:] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]) else parts
    if not all(PATH_COMPONENT.fullmatch(p) for p in path_parts):
        return "a repository path in lowercase letters, digits and separators"
    return None


# --------------------------------------------------------------------------- rules

# What a rule found: where below its setting ("", "[1]", ".disktype"), the value there,
# and what is accepted instead.
Found = tuple[str, object, str]


class Rule:
    """Field metadata pydantic runs after the type check (skipped in ``types_only`` context)."""

    __slots__ = ("problems",)

    def __init__(self, problems: Callable[[Any], Iterable[Found]]) -> None:
        self.problems = problems

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import PydanticCustomError, core_schema

        def check(value: Any, info: core_schema.ValidationInfo) -> Any:
            if (info.context or {}).get("types_only"):
                return value
            try:
                found = list(self.problems(value))
            except (ValueError, AssertionError) as bug:  # else pydantic calls it a bad value
                raise RuntimeError(f"settings rule failed on {value!r}") from bug
            if found:
                raise PydanticCustomError("rule", "{found}", {"found": found})
            return value

        return core_schema.with_info_after_validator_function(check, handler(source))


class _Strict:
    """Field metadata: no ``"3"`` -> 3 or ``"yes"`` -> True; YAML has typed the value."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return {**handler(source), "strict": True}


STRICT = _Strict()


def explain(why_not: Callable[[Any], str | None]) -> Rule:
    """A rule from a function saying what is accepted instead, or None."""
    return Rule(lambda value: [("", value, accepted)] if (accepted := why_not(value)) else ())


def must(ok: Callable[[Any], object], accepted: str) -> Rule:
    return Rule(lambda value: () if ok(value) else [("", value, accepted)])


def each(why_not: Callable[[Any], str | None]) -> Rule:
    """A rule for every entry of a list, reported as ``setting[i]``."""
    return Rule(lambda items: [(f"[{i}]", x, a) for i, x in enumerate(items) if (a := why_not(x))])


def one_of(choices: tuple[str, ...]) -> Rule:
    return must(lambda value: value in choices, f"one of {', '.join(choices)}")


def _or_empty(ok: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: not value or ok(value)


def _amount(text: str, minimum: Decimal) -> Decimal | None:
    amount = parse_quantity(text)
    return amount if amount is not None and amount >= minimum else None


def _at_least(minimum: Decimal) -> Callable[[str], bool]:
    return lambda text: _amount(text, minimum) is not None


def _service_ip_problem(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return "an IPv4 or IPv6 address (e.g. 192.168.1.240) that is free in your MetalLB pool"
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return (
            "a routable LAN address from your MetalLB pool, not an unspecified, loopback, "
            "multicast or link-local one"
        )
    return None


def _helper_image_problem(image: str) -> str | None:
    problem = image_problem(image) if image else None
    return f'{problem}, or "" to reuse the registry image' if problem else None


def normalise_certs_dir(text: str) -> str:
    """``certs_dir`` with ``//`` collapsed and ``.`` parts and a trailing ``/`` dropped.

    ``..`` is kept (and refused by the rule): on the node it would follow symlinks,
    so it cannot be resolved here.
    """
    parts = [part for part in text.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts) if text.startswith("/") else "/".join(parts)


def _certs_dir_ok(text: str) -> bool:
    """A containerd hosts directory (config_path): absolute, no ``..``, named certs.d.

    Node trust mounts ``<certs_dir>/<ip:port>`` read-write on every node, so a path
    such as ``//``, ``/etc`` or ``/var/lib/kubelet`` must never get that far.
    """
    path = PurePosixPath(normalise_certs_dir(text))
    return text.startswith("/") and ".." not in path.parts and path.name == "certs.d"


class _Normalised:
    """Field metadata: replace the value by ``normalise(value)`` once its rules passed."""

    __slots__ = ("normalise",)

    def __init__(self, normalise: Callable[[str], str]) -> None:
        self.normalise = normalise

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.normalise, handler(source))


def _sub_path_ok(text: str) -> bool:
    """A directory inside the claim: relative, no ``..`` (it must stay inside), no empty
    or ``.`` parts, which Kubernetes would accept but spell the same directory twice."""
    parts = text.split("/")
    return not text or all(part not in ("", ".", "..") and part.strip() == part for part in parts)


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")


def _s3_endpoint_problem(url: str) -> str | None:
    """An S3 endpoint is a bare http(s)://host[:port] URL; "" means AWS itself."""
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    host = rest.split(":")[0] if not rest.startswith("[") else rest
    if scheme not in ("http", "https") or not sep or not host or "/" in rest or "?" in rest:
        return (
            "an http(s)://host[:port] URL without a path, e.g. "
            'http://versitygw.s3.svc:7070, or "" for AWS S3 (then set region)'
        )
    return None


def _s3_bucket_ok(name: str) -> bool:
    return not name or (bool(_S3_BUCKET.fullmatch(name)) and ".." not in name)


def _redis_address_ok(text: str) -> bool:
    match = _HOST_PORT.fullmatch(text)
    return not text or (match is not None and 1 <= int(match["port"]) <= 65535)


def _chunk_size_ok(text: str) -> bool:
    amount = parse_quantity(text)
    return amount is not None and amount == int(amount) and S3_MIN_CHUNK <= amount < 2**31


def _namespaces_problems(namespaces: tuple[str, ...]) -> Iterator[Found]:
    seen: set[str] = set()
    for i, ns in enumerate(namespaces):
        if not is_dns_label(ns):
            yield f"[{i}]", ns, f"a namespace name, {DNS_LABEL_HELP}"
        elif ns in seen:
            yield f"[{i}]", ns, "each namespace once"
        seen.add(ns)


def _node_selector_problems(selector: dict[str, str]) -> Iterator[Found]:
    for key, value in selector.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not is_dns_subdomain(prefix)) or not _is_label_name(name):
            yield f".{key}", key, "a label key such as kubernetes.io/arch or disktype"
        elif value and not _is_label_name(value):
            yield f".{key}", value, "a label value: at most 63 letters, digits, '-', '_' or '.'"


def _tolerations_problems(tolerations: tuple[dict[str, Any], ...]) -> Iterator[Found]:
    """The Pod spec's fields, checked so a typo fails before anything is applied."""
    for i, tol in enumerate(tolerations):
        at = f"[{i}]."
        if unknown := sorted(set(tol) - set(TOLERATION_KEYS)):
            known = f"a toleration key: {', '.join(TOLERATION_KEYS)}"
            yield at + unknown[0], tol[unknown[0]], known
            continue
        op = tol.get("operator", "Equal")
        if op not in TOLERATION_OPERATORS:
            yield at + "operator", op, f"one of {', '.join(TOLERATION_OPERATORS)}"
        if tol.get("effect", "") not in TOLERATION_EFFECTS:
            effects = "one of NoSchedule, PreferNoSchedule, NoExecute (or leave it out)"
            yield at + "effect", tol.get("effect"), effects
        if op == "Exists" and tol.get("value"):
            yield at + "value", tol["value"], "no value when operator is Exists"
        for key in ("key", "value"):
            if key in tol and not isinstance(tol[key], str):
                yield at + key, tol[key], "a string"
        seconds = tol.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            yield at + "tolerationSeconds", seconds, "a whole number of seconds"


def _affinity_problems(affinity: dict[str, Any]) -> Iterator[Found]:
    for key, value in affinity.items():
        if key not in AFFINITY_KEYS:
            yield f".{key}", value, f"one of {', '.join(AFFINITY_KEYS)}"
        elif not isinstance(value, dict):
            yield f".{key}", value, "a mapping, as in a Pod's spec.affinity"


_GO_DURATION = re.compile(r"0|(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|ns))+")
_MIRROR_HOST = re.compile(
    r"(?P<host>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)(:(?P<port>\d{1,5}))?"
)
_UPSTREAM_HELP = (
    "the upstream registry's base URL: https://host[:port] without a path, "
    "e.g. https://registry-1.docker.io"
)
_MIRROR_NAME_HELP = (
    "the registry host as image names spell it, e.g. docker.io or ghcr.io or upstream.lan:5000 "
    '(lowercase, an optional :port), or "" for the upstream URL\'s host[:port]'
)
_TTL_HELP = (
    "a Go duration such as 168h, 30m or 90s: how long a pulled blob or manifest stays "
    "cached; 0 keeps it for ever"
)
_MIRROR_PORT_HELP = (
    "the mirror's port on the registry's IP, from 1024 to 65535 and other than service.port, "
    "e.g. 5001 (it runs as non-root without capabilities)"
)


def upstream_problem(url: str) -> str | None:
    """Why a mirror's upstream URL is unusable (distribution's proxy.remoteurl), or None."""
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        return _UPSTREAM_HELP
    ok = (
        parsed.scheme in ("https", "http")
        and parsed.hostname
        and parsed.path in ("", "/")
        and not (parsed.query or parsed.fragment or parsed.username or parsed.password)
        and (port is None or 0 < port < 65536)
    )
    return None if ok else _UPSTREAM_HELP


def upstream_host(url: str) -> str:
    """``host[:port]`` of an upstream URL, as an image name would spell that registry."""
    return urllib.parse.urlsplit(url).netloc.lower()


def _mirror_name_ok(text: str) -> bool:
    m = _MIRROR_HOST.fullmatch(text)
    return bool(m) and len(m["host"]) <= 253 and (not m["port"] or 0 < int(m["port"]) < 65536)


def _cidr_problem(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return "a CIDR such as 192.168.1.0/24 (the LAN) or 10.42.0.0/16"
    return None


def _ip_or_empty_problem(text: str) -> str | None:
    if not text:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return 'an IP address for the upstream\'s host name, or "" to resolve it through DNS'
    return None


# --------------------------------------------------------------------------- setting types

_POD_PORT = (
    "a port from 1024 to 65535: the registry runs as non-root without capabilities "
    "(set service.port for a low port such as 443)"
)
_STORAGE_SIZE = "a Kubernetes quantity of at least 1Mi, e.g. 5Gi or 500Mi ('m' means milli; use Mi)"
_CPU = "a Kubernetes quantity of at least 1m, e.g. 50m or 0.5"
_MEMORY = "a Kubernetes quantity of at least 1Mi, e.g. 64Mi or 1Gi ('m' means milli; use Mi)"
_SUB_PATH = (
    "a directory inside the claim, relative and without '..', e.g. registry (the Ansible "
    "notebook's), or \"\" for the claim's root"
)
_USERNAME_HELP = "1-64 letters, digits, '.', '_', '@' or '-' (htpasswd forbids ':')"
_STORAGE_CLASS = f'{DNS_SUBDOMAIN_HELP}, or "" for the default class'
_ADDRESS_POOL = f'the name of a MetalLB IPAddressPool ({DNS_SUBDOMAIN_HELP}), or "" for any pool'
_HELP_URL = 'an http(s) URL, or "" to leave it out'
_CERTS_DIR = (
    "containerd's hosts directory on the nodes (its config_path): an absolute path "
    "without '..' whose last part is certs.d, e.g. /etc/containerd/certs.d "
    "(k3s: /var/lib/rancher/k3s/agent/etc/containerd/certs.d, "
    "RKE2: /var/lib/rancher/rke2/agent/etc/containerd/certs.d)"
)

_S3_BUCKET_HELP = (
    "an existing S3 bucket's name: 3-63 lowercase letters, digits, '.' and '-', "
    "e.g. registry-images"
)
_CHUNK_SIZE = (
    "a whole number of bytes as a quantity from 5Mi (S3's smallest multipart part) "
    "to below 2Gi, e.g. 10Mi"
)
_ROOT_DIRECTORY = (
    'a key prefix in the bucket such as /registry (letters, digits, "/", "-", "_", "."), '
    'or "" for the bucket\'s root'
)

Flag = Annotated[bool, STRICT]
DnsLabel = Annotated[str, must(is_dns_label, DNS_LABEL_HELP)]
ObjectName = Annotated[str, must(is_dns_subdomain, DNS_SUBDOMAIN_HELP)]
Image = Annotated[str, explain(image_problem)]
Replicas = Annotated[int, STRICT, must(lambda n: n >= 1, "a whole number of at least 1")]
PodPort = Annotated[int, STRICT, must(lambda p: 1024 <= p <= 65535, _POD_PORT)]
StorageSize = Annotated[str, must(_at_least(_MEBI), _STORAGE_SIZE)]
StorageClass = Annotated[str, must(_or_empty(is_dns_subdomain), _STORAGE_CLASS)]
SubPath = Annotated[str, must(_sub_path_ok, _SUB_PATH)]
AccessMode = Annotated[str, one_of(ACCESS_MODES)]
ServiceName = Annotated[str, must(lambda n: len(n) <= 63 and _DNS_1035.fullmatch(n), DNS_1035_HELP)]
ServiceIP = Annotated[str, explain(_service_ip_problem)]
ServicePort = Annotated[int, STRICT, must(lambda p: 1 <= p <= 65535, "a port from 1 to 65535")]
AddressPool = Annotated[str, must(_or_empty(is_dns_subdomain), _ADDRESS_POOL)]
TLSMode = Annotated[str, one_of(TLS_MODES)]
IssuerKind = Annotated[str, one_of(ISSUER_KINDS)]
DnsNames = Annotated[tuple[str, ...], each(_dns_name_problem)]
Username = Annotated[str, must(_USERNAME.fullmatch, _USERNAME_HELP)]
Namespaces = Annotated[tuple[str, ...], Rule(_namespaces_problems)]
NodeTrustNamespace = Annotated[
    str, must(_or_empty(is_dns_label), f'"" for <namespace>-node-trust, or {DNS_LABEL_HELP}')
]
CertsDir = Annotated[str, must(_certs_dir_ok, _CERTS_DIR), _Normalised(normalise_certs_dir)]
HelperImage = Annotated[str, explain(_helper_image_problem)]
HelpURL = Annotated[
    str, must(_or_empty(lambda url: url.startswith(("https://", "http://"))), _HELP_URL)
]
Cpu = Annotated[str, must(_or_empty(_at_least(_MILLI)), _CPU)]
Memory = Annotated[str, must(_or_empty(_at_least(_MEBI)), _MEMORY)]
NodeSelector = Annotated[dict[str, str], Rule(_node_selector_problems)]
Tolerations = Annotated[tuple[dict[str, Any], ...], Rule(_tolerations_problems)]
Affinity = Annotated[dict[str, Any], Rule(_affinity_problems)]
UpstreamURL = Annotated[str, explain(upstream_problem)]
MirrorName = Annotated[str, must(_or_empty(_mirror_name_ok), _MIRROR_NAME_HELP)]
Duration = Annotated[str, must(_GO_DURATION.fullmatch, _TTL_HELP)]
MirrorPort = Annotated[int, STRICT, must(lambda p: 1024 <= p <= 65535, _MIRROR_PORT_HELP)]
OptionalObjectName = Annotated[
    str, must(_or_empty(is_dns_subdomain), f'{DNS_SUBDOMAIN_HELP}, or "" for none')
]
SourceRanges = Annotated[tuple[str, ...], each(_cidr_problem)]
UpstreamIP = Annotated[str, explain(_ip_or_empty_problem)]
StorageBackend = Annotated[str, one_of(STORAGE_BACKENDS)]
S3Endpoint = Annotated[str, explain(_s3_endpoint_problem)]
S3Bucket = Annotated[str, must(_s3_bucket_ok, _S3_BUCKET_HELP)]
S3Region = Annotated[
    str, must(lambda r: bool(re.fullmatch(r"[a-z0-9-]{1,32}", r)), "a region such as us-east-1")
]
ChunkSize = Annotated[str, must(_chunk_size_ok, _CHUNK_SIZE)]
RootDirectory = Annotated[
    str, must(lambda p: not p or bool(re.fullmatch(r"/[A-Za-z0-9/._-]*", p)), _ROOT_DIRECTORY)
]
RedisAddress = Annotated[
    str,
    must(
        _redis_address_ok,
        'host:port of a redis server, e.g. redis.redis.svc:6379, or "" for a cache in each pod',
    ),
]
RedisDb = Annotated[int, STRICT, must(lambda n: 0 <= n <= 15, "a database number from 0 to 15")]


# --------------------------------------------------------------------------- settings


class _Section:
    """pydantic refuses keys it does not know (they are typos, see ``_unknown``)."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}


@dataclass(frozen=True)
class S3Settings(_Section):
    """An S3-compatible bucket that holds the images when storage.backend is s3.

    The credentials come from an existing Secret (keys access-key-id and
    secret-access-key) in the registry's namespace; they never enter a ConfigMap.
    """

    endpoint: S3Endpoint = ""  # "": AWS S3 in `region`
    bucket: S3Bucket = ""
    region: S3Region = "us-east-1"
    credentials_secret: OptionalObjectName = ""
    # distribution v3 needs path-style requests with a custom endpoint (no bucket DNS).
    force_path_style: Flag = True
    secure: Flag = True
    # A ConfigMap (key ca.crt) with the CA of a private https endpoint.
    ca_configmap: OptionalObjectName = ""
    chunk_size: ChunkSize = "10Mi"
    root_directory: RootDirectory = ""
    # Clients would fetch blobs from the bucket itself; they usually cannot reach it.
    redirect: Flag = False

    @property
    def chunk_bytes(self) -> int:
        amount = parse_quantity(self.chunk_size)
        return int(amount) if amount is not None else 0


@dataclass(frozen=True)
class StorageSettings(_Section):
    """Where the images live: a PersistentVolumeClaim (filesystem) or an S3 bucket."""

    backend: StorageBackend = "filesystem"
    claim_name: ObjectName = "docker-registry-pvc"
    size: StorageSize = "5Gi"
    storage_class: StorageClass = "longhorn"
    access_mode: AccessMode = "ReadWriteOnce"
    # Where in the claim the images are: "" its root, "registry" for the notebook's.
    sub_path: SubPath = ""
    s3: S3Settings = field(default_factory=S3Settings)

    @property
    def on_claim(self) -> bool:
        """Whether the images are on the PersistentVolumeClaim (and so `du` can size them)."""
        return self.backend == "filesystem"


@dataclass(frozen=True)
class RedisSettings(_Section):
    """A redis server the replicas share for distribution's blob-descriptor cache.

    "" keeps a cache in each pod. Flushed of distribution's keys after every gc.
    """

    address: RedisAddress = ""
    # An existing Secret (key password) in the registry's namespace; "" for none.
    password_secret: OptionalObjectName = ""
    db: RedisDb = 0


@dataclass(frozen=True)
class ServiceSettings(_Section):
    """The LoadBalancer Service that MetalLB pins to a fixed LAN address."""

    name: ServiceName = "docker-registry-service"
    ip: ServiceIP = "172.17.1.62"
    port: ServicePort = 5000
    address_pool: AddressPool = ""


@dataclass(frozen=True)
class TLSSettings(_Section):
    """Where the serving certificate comes from; ``secret_name`` is shared by all users."""

    mode: TLSMode = "cert-manager"
    issuer_name: str = "cert-manager-issuer"  # checked in cert-manager mode only
    issuer_kind: IssuerKind = "ClusterIssuer"
    secret_name: str = "docker-registry-tls"  # the message depends on the mode
    extra_dns_names: DnsNames = ()


@dataclass(frozen=True)
class AuthSettings(_Section):
    """Two logins: the admin pushes and deletes, the pull login (in pull Secrets) only reads.

    Their Secret also carries the http secret all registry pods share.
    """

    username: Username = "registry"
    pull_username: Username = "puller"
    secret_name: ObjectName = "docker-registry-auth"


@dataclass(frozen=True)
class ProxySettings(_Section):
    """The authenticating TLS proxy (Caddy) that runs beside the registry in its pod."""

    image: Image = DEFAULT_PROXY_IMAGE


@dataclass(frozen=True)
class PullSecretSettings(_Section):
    """A dockerconfigjson Secret copied into each namespace whose pods pull from us."""

    name: ObjectName = "docker-registry-pull"
    namespaces: Namespaces = ("default",)


@dataclass(frozen=True)
class MetricsSettings(_Section):
    """Who may reach the metrics/debug port (``metrics_port``) under the NetworkPolicy."""

    # Pods in these namespaces may scrape it; none by default. Nodes always may.
    allowed_namespaces: Namespaces = ()


@dataclass(frozen=True)
class NodeTrustSettings(_Section):
    """The DaemonSet that teaches each node's containerd to trust the registry's CA."""

    enabled: Flag = True
    certs_dir: CertsDir = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    image: HelperImage = ""  # "": reuse the registry image
    # Its own namespace, Pod Security `privileged` (a host path needs it), so the
    # registry's namespace can enforce `restricted`. "": <namespace>-node-trust.
    namespace: NodeTrustNamespace = ""


@dataclass(frozen=True)
class DiscoverySettings(_Section):
    """KEP-1755 publication so tools (Tilt, skaffold, ...) find the registry."""

    publish_local_registry_hosting: Flag = True
    help_url: HelpURL = ""


@dataclass(frozen=True)
class Quantities(_Section):
    """CPU and memory amounts; an empty string leaves that entry out."""

    cpu: Cpu = ""
    memory: Memory = ""

    def as_k8s(self) -> dict[str, str]:
        """Only the set entries, as a Kubernetes ResourceList."""
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}


@dataclass(frozen=True)
class ResourceSettings(_Section):
    """Container requests and limits; no CPU limit by default to avoid throttling pushes."""

    requests: Quantities = field(default_factory=lambda: Quantities(cpu="50m", memory="64Mi"))
    limits: Quantities = field(default_factory=lambda: Quantities(memory="512Mi"))

    def as_k8s(self) -> dict[str, dict[str, str]]:
        """The container ``resources`` block, leaving out empty halves."""
        out = {"requests": self.requests.as_k8s(), "limits": self.limits.as_k8s()}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class SchedulingSettings(_Section):
    """Pod placement in the Pod spec's own format; empty so no node needs a particular label."""

    node_selector: NodeSelector = field(default_factory=dict)
    tolerations: Tolerations = ()
    affinity: Affinity = field(default_factory=dict)


@dataclass(frozen=True)
class MirrorSettings(_Section):
    """One pull-through mirror: a distribution instance in proxy mode for one upstream."""

    upstream: UpstreamURL = ""  # required; "" is refused with the help text
    port: MirrorPort = 0  # required; 0 is refused with the help text
    name: MirrorName = ""  # "": the upstream's host[:port]
    ttl: Duration = "168h"
    size: StorageSize = "10Gi"
    # A Secret in the registry's namespace with keys `username` and `password`.
    login_secret: OptionalObjectName = ""
    # A ConfigMap in the registry's namespace whose `ca.crt` the mirror trusts for the
    # upstream, instead of the public roots.
    ca_config_map: OptionalObjectName = ""
    # Where the upstream's name points, for the mirror pod (hostAliases) when DNS lacks it.
    upstream_ip: UpstreamIP = ""
    # loadBalancerSourceRanges: who may pull from the mirror (anonymous pulls).
    source_ranges: SourceRanges = ()
    # Overwrite a hosts.toml on the nodes that this tool did not write (k3s's, say).
    replace_node_config: Flag = False

    @property
    def host(self) -> str:
        """The registry host images name (the nodes' hosts directory): name, or the URL's."""
        return self.name or upstream_host(self.upstream)

    @property
    def slug(self) -> str:
        """``host`` as a DNS label part: docker.io -> docker-io, a.lan:5000 -> a-lan-5000."""
        return re.sub(r"[^a-z0-9]+", "-", self.host.lower()).strip("-")


@dataclass(frozen=True)
class Settings(_Section):
    """Everything the provisioner needs; the defaults are the seed notebook's values."""

    namespace: DnsLabel = "docker-registry"
    name: DnsLabel = "docker-registry"
    replicas: Replicas = 1
    image: Image = DEFAULT_IMAGE
    container_port: PodPort = 5000
    metrics_port: PodPort = 5001
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    pull_secret: PullSecretSettings = field(default_factory=PullSecretSettings)
    node_trust: NodeTrustSettings = field(default_factory=NodeTrustSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    mirrors: tuple[MirrorSettings, ...] = ()

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
        """Recreate unless the storage can be shared (an RWO volume + rolling deadlocks)."""
        shared = not self.storage.on_claim or self.storage.access_mode == "ReadWriteMany"
        return "RollingUpdate" if shared else "Recreate"

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
    def node_trust_namespace(self) -> str:
        """Where the node-trust DaemonSet and its CA copy live: never the registry's own."""
        return self.node_trust.namespace or f"{self.namespace}-node-trust"

    @property
    def node_trust_ca_name(self) -> str:
        """ConfigMap holding the copy of the registry's CA that node trust mounts."""
        return f"{self.name}-ca"

    @property
    def node_registry_dir(self) -> str:
        """The per-registry directory containerd reads on every node (``host:port`` form)."""
        return str(PurePosixPath(self.node_trust.certs_dir) / self.registry_host)

    def mirror_name(self, mirror: MirrorSettings) -> str:
        """The name of each object of one mirror (ConfigMap, claim, Deployment, Service...)."""
        return f"{self.name}-mirror-{mirror.slug}"

    def mirror_url(self, mirror: MirrorSettings) -> str:
        """Where nodes reach the mirror: the registry's IP, at the mirror's own port."""
        ip = f"[{self.service.ip}]" if self.ip_family == "IPv6" else self.service.ip
        return f"https://{ip}:{mirror.port}"

    def node_mirror_dir(self, mirror: MirrorSettings) -> str:
        """The hosts directory containerd reads for images named ``<mirror.host>/...``."""
        return str(PurePosixPath(self.node_trust.certs_dir) / mirror.host)

    @property
    def probes_nodes(self) -> bool:
        """Whether provision first reads each node's hosts directories (node_probe.py):
        only node trust's mirrors can meet someone else's hosts.toml, and only those not
        told to replace it."""
        return self.node_trust.enabled and any(
            not mirror.replace_node_config for mirror in self.mirrors
        )

    @property
    def ip_sharing_key(self) -> str:
        """MetalLB's allow-shared-ip key: the registry and its mirrors share one IP."""
        return f"{self.namespace}/{self.name}"


def _cross_field_problems(s: Settings) -> Iterator[ConfigProblem]:
    """Rules that read two settings; values that broke their own rules are still seen."""
    if s.replicas > 1 and s.storage.on_claim and s.storage.access_mode != "ReadWriteMany":
        yield ConfigProblem(
            "replicas",
            s.replicas,
            "1 unless storage.backend is s3 or storage.access_mode is ReadWriteMany: every "
            f"replica must share the same storage, and a {s.storage.access_mode} volume "
            "attaches to one node only, so it is refused for more than one replica",
        )
    yield from _s3_problems(s)
    if s.redis.password_secret and not s.redis.address:
        yield ConfigProblem(
            "redis.password_secret",
            s.redis.password_secret,
            '"" while redis.address is "": set redis.address to the server this password is for',
        )
    if s.metrics_port == s.container_port:
        other = f"a port other than container_port ({s.container_port})"
        yield ConfigProblem("metrics_port", s.metrics_port, other)
    for path, port in (("container_port", s.container_port), ("metrics_port", s.metrics_port)):
        if port == UPSTREAM_PORT:
            internal = f"a port other than {UPSTREAM_PORT} (the registry's, behind its proxy)"
            yield ConfigProblem(path, port, internal)
    if s.auth.pull_username == s.auth.username:
        other = f"a user name other than auth.username ({s.auth.username}): it may only pull"
        yield ConfigProblem("auth.pull_username", s.auth.pull_username, other)

    tls = s.tls
    if tls.mode == "cert-manager" and not is_dns_subdomain(tls.issuer_name):
        yield ConfigProblem(
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
        yield ConfigProblem("tls.secret_name", tls.secret_name, needs)

    # These Secrets share the registry namespace; one name for two would overwrite a Secret.
    owners: dict[str, str] = {}
    secrets = [("tls.secret_name", tls.secret_name), ("auth.secret_name", s.auth.secret_name)]
    if s.namespace in s.pull_secret.namespaces:
        secrets.append(("pull_secret.name", s.pull_secret.name))
    for path, name in secrets:
        if name in owners:
            yield ConfigProblem(
                path, name, f"a name different from {owners[name]} (both are Secrets here)"
            )
        owners.setdefault(name, path)

    if s.node_trust.enabled and s.node_trust_namespace == s.namespace:
        yield ConfigProblem(
            "node_trust.namespace",
            s.node_trust.namespace,
            f"a namespace other than the registry's ({s.namespace}): node trust mounts a host "
            "directory, which only Pod Security `privileged` allows, and the registry's "
            'namespace enforces `restricted`; "" gives <namespace>-node-trust',
        )
    elif (
        s.node_trust.enabled
        and is_dns_label(s.namespace)  # else `namespace` itself is the problem to report
        and not is_dns_label(s.node_trust_namespace)
    ):
        yield ConfigProblem(
            "node_trust.namespace",
            s.node_trust.namespace,
            f"a shorter namespace ({s.node_trust_namespace!r} is over 63 characters): "
            f"set one, {DNS_LABEL_HELP}",
        )

    yield from _mirror_problems(s)

    for kind, minimum in (("cpu", _MILLI), ("memory", _MEBI)):
        request, limit = getattr(s.resources.requests, kind), getattr(s.resources.limits, kind)
        low, high = _amount(request, minimum), _amount(limit, minimum)
        if low is not None and high is not None and low > high:
            yield ConfigProblem(
                f"resources.requests.{kind}", request, f"at most the limit ({limit})"
            )


def _mirror_problems(s: Settings) -> Iterator[ConfigProblem]:
    """Mirrors share the registry's IP and the nodes' hosts directories: no two may clash."""
    hosts: dict[str, str] = {s.registry_host: "the registry itself (service.ip:service.port)"}
    ports: dict[int, str] = {s.service.port: "service.port"}
    for i, mirror in enumerate(s.mirrors):
        at = f"mirrors[{i}]"
        # Defaults are not checked by the fields' rules: these two have none that works.
        if not mirror.port:
            yield ConfigProblem(f"{at}.port", mirror.port, f"required: {_MIRROR_PORT_HELP}")
        if not mirror.upstream:
            yield ConfigProblem(f"{at}.upstream", mirror.upstream, f"required: {_UPSTREAM_HELP}")
        if not mirror.upstream or not mirror.port:
            continue
        if upstream_problem(mirror.upstream) or not _mirror_name_ok(mirror.host):
            continue  # reported by the field's own rule
        if mirror.host in hosts:
            yield ConfigProblem(
                f"{at}.name", mirror.host, f"a registry host other than {hosts[mirror.host]}'s"
            )
        hosts.setdefault(mirror.host, at)
        if mirror.port in ports:
            yield ConfigProblem(
                f"{at}.port", mirror.port, f"a port that {ports[mirror.port]} does not use"
            )
        elif mirror.port == s.metrics_port:
            yield ConfigProblem(
                f"{at}.port", mirror.port, f"a port other than metrics_port ({s.metrics_port})"
            )
        ports.setdefault(mirror.port, at)
        name = s.mirror_name(mirror)
        if len(name) > 63 or not _DNS_1035.fullmatch(name):
            yield ConfigProblem(
                f"{at}.name",
                mirror.host,
                f"a shorter registry host: the mirror's objects are named {name!r}, over 63 "
                "characters or not a DNS-1035 label; shorten `name` (or the registry's)",
            )


def _s3_problems(s: Settings) -> Iterator[ConfigProblem]:
    """With storage.backend s3, the bucket and its credentials are required."""
    if s.storage.backend != "s3":
        return
    s3 = s.storage.s3
    if not s3.bucket:
        yield ConfigProblem("storage.s3.bucket", s3.bucket, _S3_BUCKET_HELP + " (backend is s3)")
    if not s3.credentials_secret:
        yield ConfigProblem(
            "storage.s3.credentials_secret",
            s3.credentials_secret,
            "the name of an existing Secret in the registry's namespace with keys "
            f"{S3_ACCESS_KEY_ID} and {S3_SECRET_ACCESS_KEY} (backend is s3)",
        )
    scheme = s3.endpoint.partition("://")[0]
    if scheme in ("http", "https") and s3.secure != (scheme == "https"):
        yield ConfigProblem(
            "storage.s3.secure",
            s3.secure,
            f"{str(scheme == 'https').lower()} for an {scheme} endpoint ({s3.endpoint})",
        )
    if s3.ca_configmap and scheme == "http":
        yield ConfigProblem(
            "storage.s3.ca_configmap",
            s3.ca_configmap,
            '"" with an http endpoint: a CA is only used over https',
        )
    if s.storage.s3.credentials_secret and s.storage.s3.credentials_secret in (
        s.auth.secret_name,
        s.tls.secret_name,
    ):
        yield ConfigProblem(
            "storage.s3.credentials_secret",
            s3.credentials_secret,
            "a Secret of your own, not one this install writes (auth.secret_name, tls.secret_name)",
        )


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
    given = _expand_dotted({k: v for k, v in (overrides or {}).items() if v is not None})
    merged = _deep_merge(_prepare(data, Settings), _prepare(given, Settings, cli=True))
    settings = _validate(merged, problems)
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
        return _settings_mapping(path, yaml.load(text, Loader=YAML_LOADER))
    except yaml.YAMLError:
        pass  # parsed again below: the Python parser's message quotes the offending line
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError("file", str(path), f"valid YAML{at}: {e}") from e
    return _settings_mapping(path, data)


def _settings_mapping(path: Path, data: Any) -> dict[str, Any]:
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
    for key, value in data.items():
        target = SEED_KEYS.get(str(key))
        if target is None and str(key) in _field_types(Settings):
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
            nested = _deep_merge(nested, _expand_dotted({target: value}))
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
        tree: dict[str, Any] = {leaf: value}
        for part in reversed(parents):
            tree = {part: tree}
        out = _deep_merge(out, tree)
    return out


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field names and plain types (rules stripped) of a settings dataclass."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _prepare(tree: Mapping[str, Any], cls: type, *, cli: bool = False) -> dict[str, Any]:
    """An empty section means defaults; CLI text is YAML unless the setting is a string."""
    types = _field_types(cls)
    out = dict(tree)
    for key, value in tree.items():
        tp = types.get(key)
        if dataclasses.is_dataclass(tp):
            if value is None:
                out[key] = {}
            elif isinstance(value, Mapping):
                out[key] = _prepare(value, tp, cli=cli)
        elif cli and tp not in (None, str) and isinstance(value, str):
            # Unparsable text is kept, to be reported as the wrong type.
            with contextlib.suppress(yaml.YAMLError):
                out[key] = yaml.safe_load(value)
    return out


_TYPE_HELP: dict[Any, str] = {
    bool: "true or false",
    int: "a whole number",
    str: 'a string (quote it; "" for none)',
    tuple[str, ...]: "a list of strings, e.g. [a, b]",
    tuple[dict[str, Any], ...]: "a list of mappings",
    dict[str, str]: "a mapping of strings to strings (quote values like true or 1)",
    dict[str, Any]: "a mapping",
    tuple[MirrorSettings, ...]: "a list of mirrors, each a mapping with at least upstream and port",
}


@functools.cache
def _adapter() -> TypeAdapter[Settings]:
    from pydantic import TypeAdapter

    return TypeAdapter(Settings)


def _validate(data: Mapping[str, Any], problems: list[ConfigProblem]) -> Settings:
    """Settings from the same input's last validation, else from pydantic (kept if they
    passed), every problem added to ``problems``."""
    from . import settings_cache

    entry = settings_cache.entry_for(data)
    known = None if entry is None else settings_cache.recall(entry)
    if isinstance(known, Settings):
        return known
    found: list[ConfigProblem] = []
    settings = _validated(data, found)
    if entry is not None and not found:
        settings_cache.remember(entry, settings)
    problems.extend(found)
    return settings


def _validated(data: Mapping[str, Any], problems: list[ConfigProblem]) -> Settings:
    """Settings from pydantic, every problem added to ``problems``.

    After errors, the mistyped and unknown keys are dropped and the rest is validated
    again without rules, so that cross-field rules still run in the same pass.
    """
    from pydantic import ValidationError

    try:
        settings = _adapter().validate_python(data)
    except ValidationError as error:
        mistyped: list[tuple[Any, ...]] = []
        for detail in error.errors(include_url=False):
            keys, found = _problems(detail, data)
            problems.extend(found)
            if detail["type"] != "rule":
                mistyped.append(keys)
        settings = _adapter().validate_python(
            _without(data, mistyped), context={"types_only": True}
        )
        skip = {_path(keys) for keys in mistyped}
    else:
        skip = set()
    problems.extend(p for p in _cross_field_problems(settings) if p.field not in skip)
    return settings


def _problems(
    detail: ErrorDetails, data: Mapping[str, Any]
) -> tuple[tuple[Any, ...], list[ConfigProblem]]:
    """A pydantic error as config problems, and the keys of the setting at fault."""
    cls: Any = Settings
    keys: tuple[Any, ...] = ()
    value: Any = data
    path = ""
    loc = list(detail["loc"])
    while loc:  # down to the setting; any further keys are inside it
        key = loc.pop(0)
        types = _field_types(cls)
        keys += (key,)
        value = value.get(key) if isinstance(value, Mapping) else None
        path = _path(keys)
        if key not in types:
            where = f"'{path.rpartition('.')[0]}'" if len(keys) > 1 else "the top level"
            return keys, [_unknown(path, value, list(types), where)]
        cls = types[key]
        item = _item_type(cls)
        if item is not None and loc and isinstance(loc[0], int):
            # A list of sections (mirrors): go on into the entry at fault.
            index = loc.pop(0)
            keys += (index,)
            value = value[index] if isinstance(value, list) and index < len(value) else None
            path, cls = _path(keys), item
        if not dataclasses.is_dataclass(cls):
            break
    if detail["type"] == "rule":
        found: list[Found] = detail["ctx"]["found"]
        return keys, [ConfigProblem(path + below, bad, accepted) for below, bad, accepted in found]
    if dataclasses.is_dataclass(cls):
        if isinstance(keys[-1], int):  # an entry of a list of sections
            known = ", ".join(_field_types(cls))
            return keys, [ConfigProblem(path, value, f"a mapping of settings: {known}")]
        return keys, [ConfigProblem(path, value, f"a mapping of {keys[-1]} settings")]
    return keys, [ConfigProblem(path, value, _TYPE_HELP[cls])]


def _path(keys: tuple[Any, ...]) -> str:
    """``mirrors[0].ttl`` from ``("mirrors", 0, "ttl")``."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


@functools.cache
def _item_type(tp: Any) -> type | None:
    """The section type of a ``tuple[Section, ...]`` setting, else None."""
    args = getattr(tp, "__args__", ())
    if getattr(tp, "__origin__", None) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0] if dataclasses.is_dataclass(args[0]) else None
    return None


def _without(data: Any, paths: Iterable[tuple[Any, ...]]) -> Any:
    """``data`` without the values at ``paths`` (keys into mappings, indexes into lists)."""
    out: Any = list(data) if isinstance(data, list) else dict(data)
    dropped: set[int] = set()
    for first, *rest in paths:
        if isinstance(out, list):
            if not isinstance(first, int) or first >= len(out):
                continue
            if not rest or not isinstance(out[first], Mapping):
                dropped.add(first)
            else:
                out[first] = _without(out[first], [tuple(rest)])
            continue
        if not rest:
            out.pop(first, None)
        elif isinstance(out.get(first), Mapping | list):
            out[first] = _without(out[first], [tuple(rest)])
    return [x for i, x in enumerate(out) if i not in dropped] if dropped else out


# Settings users look for that are left out on purpose, and why.
_UNSUPPORTED = {
    "redis.tls": (
        "not supported: distribution v3 can reach redis over TLS (its redis.tls.rootcas, "
        "certificate and key), but gc empties the shared cache with plain RESP from the "
        "registry pod, which cannot speak TLS. Use a redis that answers plain TCP inside "
        'the cluster only (restrict it with a NetworkPolicy), or set redis.address to "" '
        "for a cache in each pod"
    ),
}


def _unknown(path: str, value: object, known: list[str], where: str) -> ConfigProblem:
    """An unknown key, with the closest known name: most unknown keys are typos."""
    if path in _UNSUPPORTED:
        return ConfigProblem(path, value, _UNSUPPORTED[path])
    leaf = path.rsplit(".", 1)[-1]
    prefix = path[: len(path) - len(leaf)]
    match = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    if match:
        return ConfigProblem(path, value, f"unknown setting; did you mean '{prefix}{match[0]}'?")
    return ConfigProblem(path, value, f"unknown setting; {where} has: {', '.join(known)}")
