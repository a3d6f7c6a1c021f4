"""Build the local cluster's container images without Docker, and import them.

Nothing can be pulled offline, so the few images the cluster runs are made
here with umoci from binaries built on this machine and Debian's static
busybox. Each is written as an OCI layout tar whose index names the image, so
`ctr images import` files it under the name the manifests use. Archives are
cached under a key of everything that goes into them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry_provisioner.images import Image
from registry_provisioner.progress import step
from registry_provisioner.references import sha256_digest

from . import build, components, versions
from .paths import CACHE_DIR

IMAGES_DIR = CACHE_DIR / "images"
BUSYBOX = Path("/bin/busybox")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Fixed timestamps keep layer digests stable across rebuilds.
EPOCH = 946684800  # 2000-01-01T00:00:00Z
EPOCH_RFC3339 = "2000-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the way images are assembled changes, so cached archives are rebuilt.
RECIPE_VERSION = "1"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
OCI_REF_ANNOTATION = "org.opencontainers.image.ref.name"

REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  tag:
    concurrencylimit: 8
http:
  addr: :5000
  debug:
    addr: :5001
    prometheus:
      enabled: true
      path: /metrics
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

# Same dispatch as the official image's entrypoint: a config path alone means
# `registry serve <path>`, a registry subcommand or flag gets `registry` put in
# front, anything else (sh, ls...) runs as given.
REGISTRY_ENTRYPOINT = """\
#!/bin/sh
set -e
case "$1" in
  *.yaml | *.yml) set -- registry serve "$@" ;;
  serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac
exec "$@"
"""

# registry:2's own default config (its Dockerfile copies it to /etc/docker/registry).
NOTEBOOK_REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"

# A layer is filled in by a function that writes into an empty directory.
LayerWriter = Callable[[Path], None]


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one image: its layers, its config, and what the cache key covers."""

    name: str
    layers: tuple[LayerWriter, ...]
    inputs: tuple[Path, ...]  # files whose content the layers copy
    texts: tuple[str, ...] = ()  # literal contents the layers write
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (PATH_ENV,)
    user: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()

    def cache_key(self) -> str:
        digest = hashlib.sha256(RECIPE_VERSION.encode())
        config = (
            self.name,
            self.entrypoint,
            self.cmd,
            self.env,
            self.user,
            self.volumes,
            self.exposed_ports,
            [layer.__name__ for layer in self.layers],
        )
        digest.update(repr(config).encode())
        for text in self.texts:
            digest.update(text.encode())
        for path in self.inputs:
            digest.update(_file_digest(path).encode())
        return digest.hexdigest()[:16]

    def archive(self) -> Path:
        slug = self.name.rsplit("/", 1)[-1].replace(":", "-")
        return IMAGES_DIR / f"{slug}-{self.cache_key()}.tar"


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _tag_of(name: str) -> str:
    """The tag part of an image name; umoci tags may not contain / or :."""
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _install(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _write(target: Path, text: str, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def busybox_applets() -> list[str]:
    """Every applet this busybox build provides, as the upstream image links them."""
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True)
    return sorted({name for name in out.stdout.split() if name and name != "busybox"})


def busybox_layer(root: Path) -> None:
    """A minimal busybox userland: /bin with every applet, /tmp, /etc/passwd."""
    _install(BUSYBOX, root / "bin" / "busybox", 0o755)
    for applet in busybox_applets():
        (root / "bin" / applet).symlink_to("busybox")
    for directory in ("tmp", "var/tmp"):
        (root / directory).mkdir(parents=True)
        (root / directory).chmod(0o1777)
    (root / "root").mkdir(mode=0o700)
    _write(root / "etc" / "passwd", PASSWD)
    _write(root / "etc" / "group", GROUP)


def pause_layer(root: Path) -> None:
    _install(build.build(components.pause()), root / "pause", 0o755)


def registry_layer(root: Path) -> None:
    """The registry binary, its default config, and the upstream-like entrypoint."""
    _install(build.build(components.distribution()), root / "bin" / "registry", 0o755)
    _write(root / "etc" / "distribution" / "config.yml", REGISTRY_CONFIG)
    _write(root / "entrypoint.sh", REGISTRY_ENTRYPOINT, 0o755)
    (root / "var" / "lib" / "registry").mkdir(parents=True)
    _install_ca_bundle(root)


def notebook_registry_layer(root: Path) -> None:
    """distribution v2.8 laid out as registry:2 has it: /bin/registry, the config under
    /etc/docker/registry, the same entrypoint."""
    _install(build.build(components.distribution_v2()), root / "bin" / "registry", 0o755)
    _write(root / "etc" / "docker" / "registry" / "config.yml", NOTEBOOK_REGISTRY_CONFIG)
    _write(root / "entrypoint.sh", REGISTRY_ENTRYPOINT, 0o755)
    (root / "var" / "lib" / "registry").mkdir(parents=True)


def caddy_layer(root: Path) -> None:
    """Caddy where upstream's image has it, with its config and data directories."""
    _install(build.build(components.caddy()), root / "usr" / "bin" / "caddy", 0o755)
    for directory in ("etc/caddy", "config/caddy", "data/caddy"):
        (root / directory).mkdir(parents=True)
    _install_ca_bundle(root)


def _install_ca_bundle(root: Path) -> None:
    """This machine's CA bundle where upstream's images have ca-certificates', for the
    storage drivers and proxies that talk TLS; nothing where the machine has none."""
    if CA_BUNDLE.exists():
        _install(CA_BUNDLE, root / "etc" / "ssl" / "certs" / "ca-certificates.crt", 0o644)


def _with_ca_bundle(*inputs: Path) -> tuple[Path, ...]:
    """An image's inputs, with the CA bundle its layer copies when this machine has one."""
    return (*inputs, CA_BUNDLE) if CA_BUNDLE.exists() else inputs


def versitygw_layer(root: Path) -> None:
    """The S3 gateway, and the directory it serves buckets from (a volume in the pod)."""
    _install(build.build(components.versitygw()), root / "usr" / "bin" / "versitygw", 0o755)
    (root / "data").mkdir()


REDIS_SERVER = Path("/usr/bin/redis-server")


def redis_files() -> list[Path]:
    """Debian's redis-server and every shared library it loads, as this machine has them.

    The package's binary is dynamically linked; its libraries (and the loader) go into
    the image at the same paths, which is all a dynamically linked program needs.
    """
    out = subprocess.run(
        ["ldd", str(REDIS_SERVER)], check=True, capture_output=True, text=True
    ).stdout
    libraries = {Path(word) for word in out.split() if word.startswith("/")}
    return [REDIS_SERVER.resolve(), *sorted(libraries)]


def redis_layer(root: Path) -> None:
    """redis-server at Debian's path, with the libraries it links at theirs."""
    binary, *libraries = redis_files()
    _install(binary, root / "usr" / "bin" / "redis-server", 0o755)
    for library in libraries:
        _install(library.resolve(), root / library.relative_to("/"), 0o755)
    (root / "data").mkdir()


def versitygw_image() -> ImageSpec:
    """An S3-compatible server for the scale-out tests (issue 17), from its Go module."""
    return ImageSpec(
        name=versions.VERSITYGW_IMAGE,
        layers=(busybox_layer, versitygw_layer),
        inputs=(BUSYBOX, build.build(components.versitygw())),
        texts=(PASSWD, GROUP),
        entrypoint=("/usr/bin/versitygw",),
        user="65534:65534",
        exposed_ports=("7070/tcp",),
    )


def redis_image() -> ImageSpec:
    """Debian's redis server: the shared cache of several registry replicas (issue 17)."""
    return ImageSpec(
        name=versions.REDIS_IMAGE,
        layers=(busybox_layer, redis_layer),
        inputs=(BUSYBOX, *redis_files()),
        texts=(PASSWD, GROUP),
        entrypoint=("/usr/bin/redis-server",),
        user="65534:65534",
        exposed_ports=("6379/tcp",),
    )


def pause_image() -> ImageSpec:
    return ImageSpec(
        name=versions.PAUSE_IMAGE,
        layers=(pause_layer,),
        inputs=(build.build(components.pause()),),
        entrypoint=("/pause",),
        user="65535:65535",
    )


def helper_image() -> ImageSpec:
    """A busybox image: what local-path-provisioner's helper pods and tests run."""
    return ImageSpec(
        name=versions.HELPER_IMAGE,
        layers=(busybox_layer,),
        inputs=(BUSYBOX,),
        texts=(PASSWD, GROUP),
        cmd=("sh",),
    )


def registry_image() -> ImageSpec:
    return ImageSpec(
        name=versions.REGISTRY_IMAGE,
        layers=(busybox_layer, registry_layer),
        inputs=_with_ca_bundle(BUSYBOX, build.build(components.distribution())),
        texts=(PASSWD, GROUP, REGISTRY_CONFIG, REGISTRY_ENTRYPOINT),
        entrypoint=("/entrypoint.sh",),
        cmd=("/etc/distribution/config.yml",),
        env=(PATH_ENV, "OTEL_TRACES_EXPORTER=none"),
        volumes=("/var/lib/registry",),
        exposed_ports=("5000/tcp",),
    )


def notebook_registry_image() -> ImageSpec:
    """`registry:2` as the Ansible notebook runs it (as root, TLS from its env), for the
    tests that take over a notebook's registry."""
    return ImageSpec(
        name=versions.NOTEBOOK_REGISTRY_IMAGE,
        layers=(busybox_layer, notebook_registry_layer),
        inputs=(BUSYBOX, build.build(components.distribution_v2())),
        texts=(PASSWD, GROUP, NOTEBOOK_REGISTRY_CONFIG, REGISTRY_ENTRYPOINT),
        entrypoint=("/entrypoint.sh",),
        cmd=("/etc/docker/registry/config.yml",),
        volumes=("/var/lib/registry",),
        exposed_ports=("5000/tcp",),
    )


def caddy_image() -> ImageSpec:
    """The registry pod's authenticating proxy, named and laid out as upstream's image."""
    return ImageSpec(
        name=versions.CADDY_IMAGE,
        layers=(busybox_layer, caddy_layer),
        inputs=_with_ca_bundle(BUSYBOX, build.build(components.caddy())),
        texts=(PASSWD, GROUP),
        cmd=("caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"),
        env=(PATH_ENV, "XDG_CONFIG_HOME=/config", "XDG_DATA_HOME=/data"),
        volumes=("/config", "/data"),
        exposed_ports=("80/tcp", "443/tcp"),
    )


def image_specs() -> list[ImageSpec]:
    specs = [
        pause_image(),
        helper_image(),
        registry_image(),
        caddy_image(),
        notebook_registry_image(),
        versitygw_image(),
    ]
    if REDIS_SERVER.exists():
        specs.append(redis_image())
    else:  # only the scale-out tests need it; the rest of the cluster comes up without it
        print(
            f"note: no {REDIS_SERVER} (Debian's redis-server), so no redis image: "
            "run scripts/install-prerequisites.sh",
            flush=True,
        )
    return specs


def _umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, stdout=subprocess.DEVNULL)


def _pin_mtimes(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


def _repeat(flag: str, values: Iterable[str]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]


def _config_args(spec: ImageSpec) -> list[str]:
    args = ["--os", "linux", "--architecture", "amd64"]
    args += ["--created", EPOCH_RFC3339, "--history.created", EPOCH_RFC3339]
    args += _repeat("--config.entrypoint", spec.entrypoint)
    args += _repeat("--config.cmd", spec.cmd)
    args += _repeat("--config.env", spec.env)
    args += _repeat("--config.volume", spec.volumes)
    args += _repeat("--config.exposedports", spec.exposed_ports)
    if spec.user:
        args += ["--config.user", spec.user]
    return args


def _assemble_layout(spec: ImageSpec, workdir: Path) -> Path:
    """Write the image as an OCI layout under workdir, and return the layout dir."""
    layout = workdir / "layout"
    image = f"{layout}:{_tag_of(spec.name)}"
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", image)
    for index, write_layer in enumerate(spec.layers):
        root = workdir / f"layer{index}"
        root.mkdir()
        write_layer(root)
        _pin_mtimes(root)
        _umoci("insert", "--image", image, "--history.created", EPOCH_RFC3339, str(root), "/")
    _umoci("config", "--image", image, *_config_args(spec))
    _umoci("gc", "--layout", str(layout))
    _name_in_index(layout / "index.json", spec.name)
    return layout


def _name_in_index(index_path: Path, name: str) -> None:
    """Annotate the manifest with the full name, which `ctr images import` uses as is."""
    index = json.loads(index_path.read_text())
    (manifest,) = index["manifests"]
    manifest.setdefault("annotations", {})
    manifest["annotations"][CONTAINERD_NAME_ANNOTATION] = name
    manifest["annotations"][OCI_REF_ANNOTATION] = _tag_of(name)
    index_path.write_text(json.dumps(index))


def _write_tar(layout: Path, target: Path) -> None:
    """Tar the layout with its files at the archive root, in a stable order."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = EPOCH
        return info

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(
                path, arcname=path.relative_to(layout).as_posix(), recursive=False, filter=normalise
            )


def build_image(spec: ImageSpec) -> Path:
    """Build one image archive, or return the cached one."""
    target = spec.archive()
    if target.exists():
        return target
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with (
        step(f"building image {spec.name}"),
        tempfile.TemporaryDirectory(prefix="image-", dir=IMAGES_DIR) as tmp,
    ):
        layout = _assemble_layout(spec, Path(tmp))
        partial = Path(tmp) / "image.tar"
        _write_tar(layout, partial)
        partial.rename(target)
    return target


def build_images() -> list[Path]:
    """Build (or reuse) every image archive the cluster imports."""
    return [build_image(spec) for spec in image_specs()]


def import_images(containerd_socket: Path, archives: Sequence[Path]) -> None:
    """Import archives into containerd's k8s.io namespace, where the CRI looks for images.

    The archives name their images in the index, so no --index-name or
    --base-name is needed; the images are unpacked for the default snapshotter.
    """
    for archive in archives:
        subprocess.run(
            [
                "ctr",
                "--address",
                str(containerd_socket),
                "-n",
                "k8s.io",
                "images",
                "import",
                str(archive),
            ],
            check=True,
        )


def _ctr(containerd_socket: Path, *args: str, check: bool = True) -> str:
    """`ctr` in the CRI's namespace; with check=False a refusal (already gone) is fine."""
    command = ["ctr", "--address", str(containerd_socket), "-n", "k8s.io", *args]
    return subprocess.run(command, check=check, capture_output=True, text=True).stdout


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain IDs of an image's layers: the names of their committed snapshots."""
    chain: list[str] = []
    for diff_id in diff_ids:
        text = f"{chain[-1]} {diff_id}" if chain else diff_id
        chain.append(
            diff_id if not chain else "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        )
    return chain


def _snapshots(containerd_socket: Path) -> dict[str, str]:
    """Every snapshot of the default snapshotter: key -> parent."""
    lines = _ctr(containerd_socket, "snapshots", "ls").splitlines()[1:]
    return {fields[0]: (fields[1] if len(fields) > 2 else "") for fields in map(str.split, lines)}


def _holders(containerd_socket: Path, held: Sequence[str]) -> str:
    """containerd's leases and containers, and the held items' own lines, for a human."""
    lines = []
    for kind in ("leases", "containers"):
        listed = _ctr(containerd_socket, kind, "ls").splitlines()
        lines += [f"  ctr {kind} ls:"] + [f"    {line}" for line in listed]
    for kind in ("content", "snapshots"):
        listed = _ctr(containerd_socket, kind, "ls").splitlines()
        lines += [f"  {kind}: {line}" for line in listed if any(h in line for h in held)]
    return "\n".join(lines)


def remove_image(
    containerd_socket: Path, reference: str, image: Image, timeout: float = 90
) -> None:
    """Forget `reference` in the node's containerd, so the next pod must fetch every blob
    of `image` again: its records, its content and its unpacked layers.

    The CRI records an image under its tag, its digest and its id: every record with
    the same target goes. containerd skips fetching a layer whose snapshot exists, so
    the snapshots go too, with the stopped containers of deleted pods still on them.
    """
    records = [line.split() for line in _ctr(containerd_socket, "images", "ls").splitlines()[1:]]
    targets = {fields[2] for fields in records if fields and fields[0] == reference}
    names = [fields[0] for fields in records if fields and fields[2] in targets]
    if names:
        _ctr(containerd_socket, "images", "rm", "--sync", *names)
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    layers = chain_ids(diff_ids)
    digests = [sha256_digest(blob) for blob in (*image.layers, image.config)]
    deadline = time.monotonic() + timeout
    while True:
        snapshots = _snapshots(containerd_socket)
        for key, parent in snapshots.items():
            if parent == layers[-1]:  # a container's root filesystem on the image
                _ctr(containerd_socket, "containers", "rm", key, check=False)
                _ctr(containerd_socket, "snapshots", "rm", key, check=False)
        for key in reversed(layers):
            if key in snapshots:
                _ctr(containerd_socket, "snapshots", "rm", key, check=False)
        held = set(_ctr(containerd_socket, "content", "ls", "-q").split())
        left = [d for d in digests if d in held] + [
            k for k in layers if k in _snapshots(containerd_socket)
        ]
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the node's containerd still holds {left} {timeout:g}s after removing "
                f"{', '.join(names) or reference}; what may hold them:\n"
                + _holders(containerd_socket, left)
            )
        time.sleep(1)
