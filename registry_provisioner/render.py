"""Settings + credentials -> Kubernetes objects, in the order they must be applied.

Pure: no cluster, no randomness. Credentials are passed in, so the same inputs
always give the same objects; with ``credentials=None`` Secrets hold a readable
placeholder, which is what ``invoke render`` prints.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from jinja2.bccache import Bucket

from . import ownership, proxy
from .cache_dir import cache_root, private_cache_dir
from .config import (
    REDIS_PASSWORD_KEY,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    UPSTREAM_PORT,
    YAML_LOADER,
    MirrorSettings,
    Settings,
)
from .credentials import ADMIN_HASH_KEY, PULL_HASH_KEY, Credentials
from .errors import ProvisionError
from .logins import dockerconfigjson

# An installed package carries the templates inside it; a checkout keeps them at its top.
_PACKAGED = Path(__file__).resolve().parent / "manifests"
MANIFESTS_DIR = (
    _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "manifests"
)
PLACEHOLDER = "<generated at provision>"
CHECKSUM_ANNOTATION = "registry-provisioner/config-checksum"
PSA_LABEL_PREFIX = "pod-security.kubernetes.io/"
# Which upstream a mirror's objects serve (its slug, e.g. docker-io).
MIRROR_LABEL = "registry-provisioner/mirror"


def _always(_: Settings) -> bool:
    return True


# Dependency order: everything a later object mounts or references exists before it.
# Deletion walks this list backwards.
APPLY_ORDER: tuple[tuple[str, Callable[[Settings], bool]], ...] = (
    ("namespace.yaml.j2", _always),
    ("node-trust-namespace.yaml.j2", lambda s: s.node_trust.enabled),
    ("certificate.yaml.j2", lambda s: s.tls.mode == "cert-manager"),
    ("tls-secret.yaml.j2", lambda s: s.tls.mode == "self-signed"),
    ("auth-secret.yaml.j2", _always),
    ("registry-config.yaml.j2", _always),
    ("pvc.yaml.j2", lambda s: s.storage.on_claim),
    # Before the pods it guards, so none runs unguarded; deleted after them.
    ("network-policy.yaml.j2", _always),
    ("deployment.yaml.j2", _always),
    ("pod-disruption-budget.yaml.j2", _always),
    ("service.yaml.j2", _always),
    ("mirrors.yaml.j2", lambda s: bool(s.mirrors)),
    ("pull-secrets.yaml.j2", _always),
    ("node-trust-ca.yaml.j2", lambda s: s.node_trust.enabled),
    ("node-trust.yaml.j2", lambda s: s.node_trust.enabled),
    ("local-registry-hosting.yaml.j2", lambda s: s.discovery.publish_local_registry_hosting),
)


def common_labels(settings: Settings) -> dict[str, str]:
    """Labels on every object; ``instance`` is the namespace, which finds the objects we
    put in other namespaces (pull secrets, kube-public) when deleting."""
    return {
        "app.kubernetes.io/name": settings.name,
        "app.kubernetes.io/instance": settings.namespace,
        "app.kubernetes.io/managed-by": ownership.MANAGED_BY,
    }


def selector_labels(settings: Settings, component: str) -> dict[str, str]:
    """Pod selector; ``component`` keeps the registry Service off the node-trust pods."""
    return {
        "app.kubernetes.io/name": settings.name,
        "app.kubernetes.io/instance": settings.namespace,
        "app.kubernetes.io/component": component,
    }


def namespace_labels(
    settings: Settings, level: str, component: str | None = None
) -> dict[str, str]:
    """A namespace's labels: ours, and the Pod Security level it enforces (warned and
    audited at the same level, so nothing weaker slips through unseen)."""
    labels = common_labels(settings)
    if component:
        labels["app.kubernetes.io/component"] = component
    for mode in ("enforce", "audit", "warn"):
        labels[f"{PSA_LABEL_PREFIX}{mode}"] = level
        labels[f"{PSA_LABEL_PREFIX}{mode}-version"] = "latest"
    return labels


def component_selector(settings: Settings, component: str) -> str:
    """``selector_labels`` as a ``key=value,...`` selector, to list one component's pods."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(settings, component).items())


def label_selector(settings: Settings) -> str:
    """A ``key=value,...`` selector matching every object of this installation."""
    return ",".join(f"{k}={v}" for k, v in common_labels(settings).items())


@dataclass(frozen=True)
class _SecretValues:
    """What templates see: the real credentials, or placeholders for a preview."""

    username: str
    pull_username: str
    password: str
    password_hash: str
    pull_password: str
    pull_password_hash: str
    http_secret: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    ca_key_pem: str
    dockerconfigjson: str


def _secret_values(settings: Settings, creds: Credentials | None) -> _SecretValues:
    if creds is None:
        return _SecretValues(
            settings.auth.username, settings.auth.pull_username, *([PLACEHOLDER] * 10)
        )
    names = (creds.username, creds.pull_username)
    if names != (settings.auth.username, settings.auth.pull_username):
        raise ProvisionError(
            f"credentials are for users {names} but auth.username and auth.pull_username "
            f"are {(settings.auth.username, settings.auth.pull_username)}; regenerate them"
        )
    has_pair = creds.ca_pem and creds.cert_pem and creds.key_pem
    if settings.tls.mode == "self-signed" and not has_pair:
        raise ProvisionError("tls.mode self-signed needs a CA, certificate and key in credentials")
    return _SecretValues(
        username=creds.username,
        pull_username=creds.pull_username,
        password=creds.password,
        password_hash=creds.password_hash,
        pull_password=creds.pull_password,
        pull_password_hash=creds.pull_password_hash,
        http_secret=creds.http_secret,
        ca_pem=creds.ca_pem,
        cert_pem=creds.cert_pem,
        key_pem=creds.key_pem,
        ca_key_pem=creds.ca_key_pem,
        # Workloads only pull: what goes into their namespaces is the pull login.
        dockerconfigjson=dockerconfigjson(
            settings.registry_host, creds.pull_username, creds.pull_password
        ),
    )


def _quote(value: Any) -> str:
    """JSON is valid YAML and TOML here: quoting every value stops ``on``/``1e3`` surprises."""
    return json.dumps(value, ensure_ascii=False)


class _CompiledTemplates(FileSystemBytecodeCache):
    """Compiled templates kept between runs: compiling is most of a task's first render.

    Jinja checks each entry against its template's source, so an edited template is
    compiled afresh. Keeping them is only a saving: when the cache cannot be written,
    every run compiles, as it would without one.
    """

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def template_cache_dir() -> Path:
    """Per Jinja version, since the cached code calls into Jinja's runtime."""
    return cache_root() / f"jinja2-{jinja2.__version__}"


def _template_cache() -> FileSystemBytecodeCache | None:
    directory = private_cache_dir(template_cache_dir())
    return None if directory is None else _CompiledTemplates(str(directory))


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(MANIFESTS_DIR),
        bytecode_cache=_template_cache(),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = _quote
    return env


def _checksum(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _context(
    settings: Settings,
    credentials: Credentials | None,
    node_trust_ca: str | None = None,
    upstream_cas: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    env = _environment()
    values = _secret_values(settings, credentials)
    preview = credentials is None

    def secret_data(data: Mapping[str, str]) -> str:
        # Placeholders stay readable in a preview; real values go base64 in ``data``.
        if preview:
            return f"stringData: {_quote(dict(data))}"
        encoded = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
        return f"data: {_quote(encoded)}"

    base = {
        "s": settings,
        "labels": lambda component=None: (
            {**common_labels(settings), "app.kubernetes.io/component": component}
            if component
            else common_labels(settings)
        ),
        "selector": lambda component: selector_labels(settings, component),
        "upstream_port": UPSTREAM_PORT,
        "namespace_labels": lambda level, component=None: namespace_labels(
            settings, level, component
        ),
    }
    registry_config = env.get_template("_distribution-config.yml.j2").render(base)
    hosts = env.get_template("_hosts.toml.j2")
    hosts_toml = hosts.render(base, with_ca=True)
    hosts_system = hosts.render(base, with_ca=False)
    sync_script = (MANIFESTS_DIR / "_node-trust-sync.sh").read_text(encoding="utf-8")
    serve_script = (MANIFESTS_DIR / "_proxy-serve.sh").read_text(encoding="utf-8")
    mirrors = [_mirror_values(settings, m, serve_script, values.cert_pem) for m in settings.mirrors]
    proxy_config = json.dumps(_proxy_config(settings), indent=2, sort_keys=True) + "\n"
    return {
        **base,
        "creds": values,
        "secret_data": secret_data,
        "registry_config": registry_config,
        "proxy_config": proxy_config,
        "serve_script": serve_script,
        "hash_keys": {"admin": ADMIN_HASH_KEY, "pull": PULL_HASH_KEY},
        "s3_keys": {
            "access_key_id": S3_ACCESS_KEY_ID,
            "secret_access_key": S3_SECRET_ACCESS_KEY,
            "redis_password": REDIS_PASSWORD_KEY,
        },
        # A new hash or certificate must reach the proxy, which reads them only at start.
        "config_checksum": _checksum(
            registry_config,
            proxy_config,
            serve_script,
            values.password_hash,
            values.pull_password_hash,
            values.http_secret,
            values.cert_pem,
        ),
        "hosts_toml": hosts_toml,
        "hosts_toml_system_trust": hosts_system,
        "sync_script": sync_script,
        "mirrors": mirrors,
        "node_trust_mirrors": [
            {
                "index": i,
                "node_dir": m["node_dir"],
                "replace": m["replace_node_config"],
                "hosts_toml": m["hosts_toml"],
                "hosts_toml_system": m["hosts_toml_system"],
                "upstream_ca": upstream_ca_key(i) if m["ca_config_map"] else "",
            }
            for i, m in enumerate(mirrors)
        ],
        # Everything node trust runs is in its pod spec, so any change rolls it out.
        "node_trust_mode": "sync",
        "node_trust_keep_registry": False,
        "node_trust_image": settings.node_trust_image,
        "node_trust_dir": settings.node_registry_dir,
        **node_trust_ca_values(node_trust_ca, upstream_cas),
    }


def mirror_selector(settings: Settings, mirror: MirrorSettings) -> dict[str, str]:
    """One mirror's pods: the mirror component, and which upstream."""
    return {**selector_labels(settings, "mirror"), MIRROR_LABEL: mirror.slug}


def mirror_pod_selector(settings: Settings, mirror: MirrorSettings) -> str:
    """``mirror_selector`` as a ``key=value,...`` selector, to list one mirror's pods."""
    return ",".join(f"{k}={v}" for k, v in mirror_selector(settings, mirror).items())


def _mirror_values(
    settings: Settings, mirror: MirrorSettings, serve_script: str, cert_pem: str
) -> dict[str, Any]:
    """What mirrors.yaml.j2 and node trust need to know about one mirror."""
    env = _environment()
    url = settings.mirror_url(mirror)
    values = {
        **dataclasses.asdict(mirror),
        "host": mirror.host,
        "url": url,
        "object_name": settings.mirror_name(mirror),
        "node_dir": settings.node_mirror_dir(mirror),
        "upstream_hostname": urllib.parse.urlsplit(mirror.upstream).hostname,
    }
    values["upstream_ca_file"] = f"{values['node_dir']}/upstream-ca.crt"
    config = env.get_template("_mirror-config.yml.j2").render(s=settings, m=values)
    hosts = env.get_template("_mirror-hosts.toml.j2")
    return {
        **values,
        "labels": {**common_labels(settings), **mirror_selector(settings, mirror)},
        "selector": mirror_selector(settings, mirror),
        "config": config,
        "checksum": _checksum(config, serve_script, cert_pem),
        "hosts_toml": hosts.render(s=settings, m=values, with_ca=True),
        "hosts_toml_system": hosts.render(s=settings, m=values, with_ca=False),
    }


# Where the registry pod mounts what the proxy reads (manifests/deployment.yaml.j2).
PROXY_CERTS_DIR = "/certs"
PROXY_AUTH_DIR = "/auth"


def _proxy_config(settings: Settings) -> dict[str, Any]:
    """Caddy's config as the registry pod runs it."""
    auth = settings.auth
    return proxy.caddy_config(
        listen=f":{settings.container_port}",
        upstream=f"127.0.0.1:{UPSTREAM_PORT}",
        certificate=f"{PROXY_CERTS_DIR}/tls.crt",
        key=f"{PROXY_CERTS_DIR}/tls.key",
        hash_files={
            auth.username: f"{PROXY_AUTH_DIR}/{ADMIN_HASH_KEY}",
            auth.pull_username: f"{PROXY_AUTH_DIR}/{PULL_HASH_KEY}",
        },
        pull_users=(auth.pull_username,),
        realm=settings.name,
        address=settings.service.ip,
    )


def upstream_ca_key(index: int) -> str:
    """Where node trust's CA copy keeps mirror `index`'s upstream CA (ca_config_map)."""
    return f"upstream-{index}.crt"


def node_trust_ca_values(
    ca_pem: str | None, upstream_cas: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """The CA copy's data and its checksum; None (not known yet) renders a placeholder.

    `upstream_cas` are mirrors' upstream CAs by mirror index: the nodes trust them for
    the fallback to the upstream when the mirror does not answer.
    """
    data = {"ca.crt": PLACEHOLDER if ca_pem is None else ca_pem} if ca_pem != "" else {}
    data |= {upstream_ca_key(i): pem for i, pem in sorted((upstream_cas or {}).items()) if pem}
    return {"node_trust_ca_data": data, "node_trust_ca_checksum": _checksum(json.dumps(data))}


def templates_for(settings: Settings) -> list[str]:
    """The templates that apply to ``settings``, in apply order."""
    return [name for name, wanted in APPLY_ORDER if wanted(settings)]


def render_manifests(
    settings: Settings,
    credentials: Credentials | None,
    node_trust_ca: str | None = None,
    upstream_cas: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Every object to apply, in apply order. ``credentials=None`` renders a preview.

    ``node_trust_ca`` is the TLS Secret's ca.crt ("" when it has none), which only
    exists once the certificate is issued; None renders a placeholder in its place.
    ``upstream_cas`` are the mirrors' upstream CAs (their ca_config_map's ca.crt) by index.
    """
    env = _environment()
    context = _context(settings, credentials, node_trust_ca, upstream_cas)
    objects: list[dict[str, Any]] = []
    for name in templates_for(settings):
        text = env.get_template(name).render(context)
        try:
            docs = list(yaml.load_all(text, Loader=YAML_LOADER))
        except yaml.YAMLError as e:  # a template bug, not a user error
            raise ProvisionError(f"template {name} rendered invalid YAML: {e}") from e
        objects.extend(ownership.stamp(doc, settings) for doc in docs if doc)
    return objects


def node_trust_removal(
    settings: Settings,
    *,
    host_dir: str,
    image: str,
    mirror_dirs: tuple[str, ...] = (),
    keep_registry: bool = False,
) -> dict[str, Any]:
    """The node-trust DaemonSet in `remove` mode: each pod empties `host_dir` and the
    mirrors' `mirror_dirs`, and idles.

    Unprovision rolls this out before deleting the DaemonSet; the directories and
    `image` are the live DaemonSet's, so the directories the files went to are the ones
    emptied, and by an image the nodes already hold, whatever the settings say now.
    `keep_registry` empties the mirrors' directories only (a mirror was dropped).
    """
    context = {
        **_context(settings, None),
        "node_trust_mode": "remove",
        "node_trust_keep_registry": keep_registry,
        "node_trust_image": image,
        "node_trust_dir": host_dir,
        "node_trust_mirrors": [
            {"index": i, "node_dir": path} for i, path in enumerate(mirror_dirs)
        ],
    }
    text = _environment().get_template("node-trust.yaml.j2").render(context)
    [daemonset] = [doc for doc in yaml.load_all(text, Loader=YAML_LOADER) if doc]
    return ownership.stamp(daemonset, settings)


def node_probe_name(settings: Settings, node: str) -> str:
    """One node's probe pod: named by a digest, as node names may be long."""
    digest = hashlib.sha256(node.encode("utf-8")).hexdigest()[:10]
    return f"{settings.node_trust_name}-probe-{digest}"


def node_probe(settings: Settings, node: str) -> dict[str, Any]:
    """The one-off pod that reads `node`'s containerd hosts directory before provision
    changes anything (node-probe.yaml.j2 says why)."""
    context = {**_context(settings, None), "node": node}
    context["probe_name"] = node_probe_name(settings, node)
    text = _environment().get_template("node-probe.yaml.j2").render(context)
    [pod] = [doc for doc in yaml.load_all(text, Loader=YAML_LOADER) if doc]
    return ownership.stamp(pod, settings)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (config.yml, scripts, PEM) print as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def manifests_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream for people to read (or pipe to kubectl)."""
    return yaml.dump_all(
        objs,
        Dumper=_BlockDumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        allow_unicode=True,
    )
