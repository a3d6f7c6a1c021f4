"""Taking over a registry the Ansible notebook installed, with every image kept.

The notebook (provision-docker-registry.org) ran `registry:2` as root, selected by
`run: <name>`, with its images under the subdirectory `registry` of the claim, TLS
from a Secret `<namespace>-secret` issued by the Certificate `<namespace>-certificate`,
and a Service pinned with `spec.loadBalancerIP`. Its Deployment, claim and Service have
our names, so provision would collide with them.

Taking over keeps the claim and its data where they are (`storage.sub_path`), and
goes in an order that never lets two pods write to the ReadWriteOnce claim: read what
the old registry serves (kept in a ConfigMap, so a re-run after a kill still knows it),
scale the old Deployment to 0 and wait until its pods are gone, delete it (its selector
cannot change), hand the files to the registry's non-root user, then start ours
read-only and check that every tag answers by the same digest before it accepts pushes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import kr8s
import kr8s.asyncio

from . import failpoints, gc, kube, maintenance, ownership, preflight, render
from .config import Settings
from .errors import PreflightError, ProvisionError, RegistryError
from .oci_client import RegistryClient
from .progress import step
from .waiting import READY_TIMEOUT, diagnose_pods, poll, wait_for

# On the claim: where its images are, so a later provision (or one after unprovision)
# mounts the same directory whatever the settings file says.
SUB_PATH_ANNOTATION = "registry-provisioner/storage-sub-path"
# The notebook's pod selector key (`run: <docker_reg_label>`).
NOTEBOOK_SELECTOR = "run"
CERT_MANAGER_CERTIFICATE = "cert-manager.io/certificate-name"
# distribution v3 no longer serves these (and v2 converted nothing on disk).
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
# runAsUser/fsGroup of the registry pod (manifests/deployment.yaml.j2); the notebook's
# registry wrote its files as root.
REGISTRY_UID = 1000
# What is pushed (an empty manifest, refused either way) to see if pushes are accepted.
PUSH_PROBE = "registry-provisioner/push-probe"
READ_ONLY_REASON = "taking over the Ansible notebook's registry: checking every tag first"


@dataclass(frozen=True)
class Notebook:
    """The notebook's objects found in the namespace (None: not there any more)."""

    sub_path: str
    deployment: dict | None
    claim: dict | None
    service: dict | None
    certificate: dict | None
    secret: dict | None
    inventory: Inventory | None  # what the old registry served, once read

    @property
    def leftovers(self) -> list[dict]:
        """What goes once the images are seen served: the notebook's TLS objects."""
        return [raw for raw in (self.certificate, self.secret) if raw is not None]


@dataclass(frozen=True)
class Inventory:
    """What a registry serves: repository -> tag -> digest, and what it cannot serve."""

    tags: dict[str, dict[str, str]]
    schema1: tuple[str, ...] = ()  # repo:tag
    missing: tuple[str, ...] = ()  # repo:tag: repo@digest (what of which manifest)

    @property
    def tag_count(self) -> int:
        return sum(len(tags) for tags in self.tags.values())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        data = json.loads(text)
        return cls(data["tags"], tuple(data["schema1"]), tuple(data["missing"]))


def _ref(kind: str, name: str, namespace: str, api_version: str = "v1") -> dict:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }


def _inventory_ref(settings: Settings) -> dict:
    """The ConfigMap that keeps the old registry's inventory while a takeover runs."""
    return _ref("ConfigMap", f"{settings.name}-notebook-inventory", settings.namespace)


def claim_mount(deployment: dict, claim: str) -> str | None:
    """The subPath at which the Deployment's pods mount `claim` ("" for its root), or None."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {
        v["name"]
        for v in spec.get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }
    for container in spec.get("containers", []):
        for mount in container.get("volumeMounts", []):
            if mount["name"] in volumes:
                return mount.get("subPath", "")
    return None


def _secret_volume(deployment: dict | None, settings: Settings) -> str:
    if deployment is not None:
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                return volume["secret"]["secretName"]
    return f"{settings.namespace}-secret"


def is_notebooks(deployment: dict, settings: Settings) -> bool:
    """The notebook's Deployment: not ours, selected by `run: <name>`, mounting our claim."""
    selector = deployment["spec"].get("selector", {}).get("matchLabels", {})
    return (
        ownership.owner_of(deployment) is None
        and selector == {NOTEBOOK_SELECTOR: settings.name}
        and claim_mount(deployment, settings.storage.claim_name) is not None
    )


async def _live(api: kr8s.asyncio.Api, ref: dict) -> dict | None:
    return await ownership.live(api, ref)


async def _foreign(api: kr8s.asyncio.Api, ref: dict) -> dict | None:
    raw = await _live(api, ref)
    return raw if raw is not None and ownership.owner_of(raw) is None else None


async def detect(api: kr8s.asyncio.Api, settings: Settings) -> Notebook | None:
    """The notebook's install in the target namespace, or None.

    Also found half taken over (a run that was killed): then the old Deployment may be
    gone, but the inventory ConfigMap says a takeover is under way.
    """
    ns = settings.namespace
    deployment, stored = await asyncio.gather(
        _live(api, _ref("Deployment", settings.name, ns, "apps/v1")),
        _live(api, _inventory_ref(settings)),
    )
    if deployment is not None and not is_notebooks(deployment, settings):
        deployment = None
    if deployment is None and stored is None:
        return None
    if deployment is not None:
        sub_path = claim_mount(deployment, settings.storage.claim_name) or ""
    else:
        sub_path = stored["data"]["sub-path"]
    secret = await _foreign(api, _ref("Secret", _secret_volume(deployment, settings), ns))
    certificate_name = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(
        CERT_MANAGER_CERTIFICATE, f"{ns}-certificate"
    )
    certificate = await _foreign(
        api, _ref("Certificate", certificate_name, ns, "cert-manager.io/v1")
    )
    return Notebook(
        sub_path=sub_path,
        deployment=deployment,
        claim=await _foreign(api, _ref("PersistentVolumeClaim", settings.storage.claim_name, ns)),
        service=await _foreign(api, _ref("Service", settings.service.name, ns)),
        certificate=certificate,
        secret=secret,
        inventory=Inventory.from_json(stored["data"]["inventory"]) if stored else None,
    )


async def settled(api: kr8s.asyncio.Api, settings: Settings) -> Settings:
    """`settings` with the claim's recorded sub_path when the settings leave it at "".

    After a takeover the claim says where its images are, so a provision with the
    notebook's group_vars (which cannot name sub_path) mounts the same directory.
    """
    claim = await _live(
        api, _ref("PersistentVolumeClaim", settings.storage.claim_name, settings.namespace)
    )
    recorded = ((claim or {}).get("metadata", {}).get("annotations") or {}).get(SUB_PATH_ANNOTATION)
    if recorded is None or settings.storage.sub_path == recorded:
        return settings
    if settings.storage.sub_path:
        raise PreflightError(
            f"storage.sub_path: {settings.storage.sub_path!r}, but the images on "
            f"PersistentVolumeClaim {settings.namespace}/{settings.storage.claim_name} are "
            f"under {recorded!r} (its annotation {SUB_PATH_ANNOTATION}): set {recorded!r}, "
            "or leave storage.sub_path out"
        )
    return with_sub_path(settings, recorded)


def with_sub_path(settings: Settings, sub_path: str) -> Settings:
    storage = dataclasses.replace(settings.storage, sub_path=sub_path)
    return dataclasses.replace(settings, storage=storage)


def adopting(settings: Settings, notebook: Notebook) -> Settings:
    """The settings that mount the notebook's directory of the claim."""
    wanted = settings.storage.sub_path
    if wanted and wanted != notebook.sub_path:
        raise PreflightError(
            f"storage.sub_path: {wanted!r}, but the Ansible notebook's registry keeps its "
            f"images under {notebook.sub_path!r} of the claim: leave storage.sub_path out "
            "(taking over sets it)"
        )
    return with_sub_path(settings, notebook.sub_path)


def plan(settings: Settings, notebook: Notebook) -> list[str]:
    """What a takeover keeps, replaces and deletes, one line each, for the user to read first."""
    ns, claim = settings.namespace, settings.storage.claim_name
    where = f"under {notebook.sub_path}/" if notebook.sub_path else "at its root"
    lines = [f"the Ansible notebook's registry is installed in namespace {ns}; taking it over:"]
    if notebook.claim is not None:
        uid = notebook.claim["metadata"]["uid"]
        lines.append(
            f"  keeps    PersistentVolumeClaim {claim} (uid {uid}) and its images {where}: "
            f"storage.sub_path={notebook.sub_path!r}"
        )
    else:
        lines.append(f"  keeps    PersistentVolumeClaim {claim}, its images {where}")
    if notebook.deployment is not None:
        lines.append(
            f"  replaces Deployment {settings.name}: scaled to 0 and deleted (its selector "
            "cannot change) before ours mounts the claim; its files are handed to the "
            f"registry's user (uid {REGISTRY_UID})"
        )
    if notebook.service is not None:
        old = notebook.service["spec"].get("loadBalancerIP") or "(none)"
        moved = "same IP" if old == settings.service.ip else f"IP {old} -> {settings.service.ip}"
        lines.append(
            f"  replaces Service {settings.service.name}: spec.loadBalancerIP becomes MetalLB's "
            f"annotation ({moved})"
        )
    for raw in notebook.leftovers:
        lines.append(
            f"  deletes  {raw['kind']} {raw['metadata']['name']} once every image is seen "
            f"served (ours: Certificate {settings.name}, Secret {settings.tls.secret_name})"
        )
    lines.append(
        "  checks   every repository and tag answers by the same digest, while the new "
        "registry is read-only, before it accepts pushes"
    )
    if notebook.inventory is not None:
        lines += inventory_lines(notebook.inventory)
    return lines


def inventory_lines(inventory: Inventory) -> list[str]:
    """What was found in the old registry, and what to do about what cannot move."""
    lines = [f"  found    {inventory.tag_count} tags in {len(inventory.tags)} repositories"]
    for ref in inventory.schema1:
        lines.append(
            f"  schema 1 {ref}: distribution v3 does not serve it; convert it while the old "
            f"registry runs: skopeo copy --format v2s2 docker://<old>/{ref} docker://<old>/{ref}"
        )
    for ref in inventory.missing:
        lines.append(
            f"  missing  {ref}: already absent in the old registry, so neither registry can "
            "serve that image; push it again once taken over"
        )
    return lines


def refusal(settings: Settings, notebook: Notebook) -> PreflightError:
    """Without --adopt: say what was found, what taking over would do, and the flag."""
    return PreflightError(
        "\n".join(
            [
                *plan(settings, notebook),
                "nothing was changed: run `invoke provision --adopt` to take it over "
                "(README: Coming from the Ansible notebook)",
            ]
        )
    )


# ----------------------------------------------------------------- reading a registry


async def _digest(client: RegistryClient, repo: str, ref: str) -> tuple[str, str]:
    """The digest the registry answers for `ref`, and its media type (schema 1 included)."""
    return await client.manifest_digest(repo, ref, accept=(*SCHEMA1_TYPES,))


async def read_inventory(client: RegistryClient) -> Inventory:
    """Every repository, tag and digest the registry serves, and what it cannot serve."""
    tags: dict[str, dict[str, str]] = {}
    schema1: list[str] = []
    missing: list[str] = []
    for repo in await client.catalog():
        try:
            repo_tags = await client.list_tags(repo)
        except RegistryError as error:
            if error.status != 404:
                raise
            repo_tags = []
        for tag in repo_tags:
            digest, media_type = await _digest(client, repo, tag)
            if media_type in SCHEMA1_TYPES:
                schema1.append(f"{repo}:{tag}")
                continue
            tags.setdefault(repo, {})[tag] = digest
            missing += [
                f"{repo}:{tag}: {m}" for m in await gc.missing_content(client, repo, digest)
            ]
    return Inventory(tags, tuple(schema1), tuple(missing))


async def compare(client: RegistryClient, expected: Inventory) -> list[str]:
    """Every tag of `expected` that the registry does not answer by the same digest."""
    wrong = []
    for repo, tags in sorted(expected.tags.items()):
        for tag, digest in sorted(tags.items()):
            try:
                answered, _ = await _digest(client, repo, tag)
            except RegistryError as error:
                wrong.append(f"{repo}:{tag}: {error}")
                continue
            if answered != digest:
                wrong.append(f"{repo}:{tag}: answers {answered}, the notebook's had {digest}")
                continue
            # Absent already in the old registry: reported then, not a loss of the takeover's.
            found = [f"{repo}:{tag}: {m}" for m in await gc.missing_content(client, repo, digest)]
            wrong += [m for m in found if m not in expected.missing]
    return wrong


async def _old_registry(api: kr8s.asyncio.Api, notebook: Notebook) -> tuple[str, str | None]:
    """The notebook registry's URL (its LoadBalancer address) and its CA, if the Secret has one."""
    service = notebook.service
    ingress = (service or {}).get("status", {}).get("loadBalancer", {}).get("ingress", [])
    if not ingress:
        raise ProvisionError(
            "cannot read the Ansible notebook's registry before taking it over: its Service "
            "has no LoadBalancer address; nothing was changed"
        )
    port = service["spec"]["ports"][0]["port"]
    host = ingress[0].get("ip") or ingress[0].get("hostname")
    ca = None
    if notebook.secret is not None:
        data = notebook.secret.get("data") or {}
        if "ca.crt" in data:
            ca = base64.b64decode(data["ca.crt"]).decode()
    return f"https://{host}:{port}", ca


async def inventory_of_old(api: kr8s.asyncio.Api, notebook: Notebook) -> Inventory:
    """Read the old registry through its own Service address, as its clients do."""
    url, ca = await _old_registry(api, notebook)
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = None
        if ca:
            ca_file = Path(tmp) / "ca.crt"
            ca_file.write_text(ca)
        with step(f"reading every repository, tag and digest of the notebook's registry at {url}"):
            async with RegistryClient(url, ca_file=ca_file, timeout=30) as client:
                try:
                    return await read_inventory(client)
                except RegistryError as error:
                    raise ProvisionError(
                        f"cannot read the Ansible notebook's registry at {url} before taking "
                        f"it over, so nothing was changed: {error}"
                    ) from error


async def preview_inventory(api: kr8s.asyncio.Api, notebook: Notebook) -> list[str]:
    """For a dry run: what the old registry holds, or why it could not be read."""
    try:
        inventory = await inventory_of_old(api, notebook)
    except ProvisionError as error:
        return [f"  unread   {error}"]
    refusal = [
        "  refuses  to take over while a tag is schema 1: `invoke provision --adopt` stops "
        "before any change until each is converted"
    ]
    return inventory_lines(inventory) + (refusal if inventory.schema1 else [])


# ----------------------------------------------------------------- the takeover


async def _store(api: kr8s.asyncio.Api, settings: Settings, notebook: Notebook, inv: Inventory):
    manifest = _inventory_ref(settings)
    manifest["metadata"]["labels"] = render.common_labels(settings)
    manifest["data"] = {"sub-path": notebook.sub_path, "inventory": inv.to_json()}
    await kube.apply_object(api, ownership.stamp(manifest, settings))


async def _pods_gone(api: kr8s.asyncio.Api, settings: Settings) -> None:
    selector = f"{NOTEBOOK_SELECTOR}={settings.name}"

    async def none_left() -> bool:
        return not await kube.get_all(
            api, "pods", namespace=settings.namespace, label_selector=selector
        )

    await wait_for(
        f"the notebook's registry pods ({selector}) to be gone",
        lambda: poll(none_left),
        READY_TIMEOUT,
        lambda: diagnose_pods(api, settings.namespace, selector),
    )


async def _stop_old(api: kr8s.asyncio.Api, settings: Settings, deployment: dict) -> None:
    """Scale to 0, wait until no pod of it is left, then delete it (same uid only)."""
    ref = _ref("Deployment", settings.name, settings.namespace, "apps/v1")
    obj = await kube.object_for(api, ref)
    await obj.scale(0)
    await _pods_gone(api, settings)
    ref["metadata"]["uid"] = deployment["metadata"]["uid"]
    await kube.delete_manifests(api, [ref])


def _chown_pod(settings: Settings) -> dict:
    """A pod that hands the notebook's files (written as root) to the registry's user."""
    mount = {"name": "data", "mountPath": "/data"}
    if settings.storage.sub_path:
        mount["subPath"] = settings.storage.sub_path
    return ownership.stamp(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{settings.name}-notebook-files",
                "namespace": settings.namespace,
                "labels": render.common_labels(settings),
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "containers": [
                    {
                        "name": "chown",
                        "image": settings.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["chown", "-R", f"{REGISTRY_UID}:{REGISTRY_UID}", "/data"],
                        # Root, but with nothing beyond changing owners.
                        "securityContext": {
                            "runAsUser": 0,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                        },
                        "volumeMounts": [mount],
                    }
                ],
                "volumes": [
                    {
                        "name": "data",
                        "persistentVolumeClaim": {"claimName": settings.storage.claim_name},
                    }
                ],
            },
        },
        settings,
    )


async def _hand_over_admitted(api: kr8s.asyncio.Api, settings: Settings) -> None:
    """Pod Security must let the one-off root pod run; ask before anything changes."""
    pod = _chown_pod(settings)
    workload = {"metadata": pod["metadata"], "spec": {"template": pod}}
    rejected = await preflight.admission_rejects(api, workload)
    if rejected is not None:
        raise PreflightError(
            f"Pod {settings.namespace}/{pod['metadata']['name']}, which hands the notebook's "
            f"files (written as root) to the registry's user, would be refused by Pod Security "
            f"({rejected}); nothing was changed: allow root pods with only CHOWN while taking "
            f"over, e.g. kubectl label namespace {settings.namespace} --overwrite "
            "pod-security.kubernetes.io/enforce=baseline (the notebook's own pod needed it)"
        )


async def _hand_over_files(api: kr8s.asyncio.Api, settings: Settings) -> None:
    manifest = _chown_pod(settings)
    await kube.delete_manifests(api, [manifest])  # a killed run's
    obj = await kube.object_for(api, manifest)
    await obj.create()
    phase = kube.field_is("status.phase", "Succeeded")
    await wait_for(
        f"pod {manifest['metadata']['name']} to hand the images to uid {REGISTRY_UID}",
        lambda: kube.wait_until(obj, lambda raw: phase(raw) or _failed(raw)),
        READY_TIMEOUT,
        lambda: diagnose_pods(api, settings.namespace, f"app.kubernetes.io/name={settings.name}"),
    )
    await obj.refresh()
    if _failed(obj.raw):
        raise ProvisionError(
            f"pod {obj.name} could not hand the notebook's files to uid {REGISTRY_UID}: "
            f"kubectl -n {settings.namespace} logs {obj.name}"
        )
    await kube.delete_manifests(api, [manifest])


def _failed(raw: dict) -> bool:
    return raw.get("status", {}).get("phase") == "Failed"


async def prepare(api: kr8s.asyncio.Api, settings: Settings, notebook: Notebook) -> Notebook:
    """Read and store what the old registry serves, then stop it and free the claim.

    Refuses before any change when the old registry holds schema 1 manifests. Each step
    is skipped when a killed run got past it: the stored inventory, the old Deployment
    gone, our Deployment there (it is applied only after the files were handed over).
    """
    hand_over = not await _ours_deployed(api, settings)
    if hand_over:
        await _hand_over_admitted(api, settings)
    inventory = notebook.inventory
    if inventory is None:
        inventory = await inventory_of_old(api, notebook)
        if inventory.schema1:
            raise PreflightError(
                "\n".join(
                    [
                        "the Ansible notebook's registry holds schema 1 manifests, which "
                        "distribution v3 cannot serve; nothing was changed:",
                        *inventory_lines(inventory),
                        "then run `invoke provision --adopt` again",
                    ]
                )
            )
        print("\n".join(inventory_lines(inventory)), flush=True)
        await _store(api, settings, notebook, inventory)
    if notebook.deployment is not None:
        with step(f"stopping the notebook's Deployment {settings.name}"):
            await _stop_old(api, settings, notebook.deployment)
        failpoints.reached("notebook-stopped")
    if hand_over:
        await _hand_over_files(api, settings)
    return dataclasses.replace(notebook, deployment=None, inventory=inventory)


async def _ours_deployed(api: kr8s.asyncio.Api, settings: Settings) -> bool:
    raw = await _live(api, _ref("Deployment", settings.name, settings.namespace, "apps/v1"))
    return raw is not None and ownership.owner_of(raw) == ownership.install_id(settings)


def read_only(deployment: dict) -> dict:
    """Our Deployment with the registry read-only, for its first start on the old data.

    The override is in our own apply, not the maintenance manager's, so the pods are
    read-only from the very first one, and our next apply without it removes it.
    """
    out = copy.deepcopy(deployment)
    out["metadata"].setdefault("annotations", {})[maintenance.REASON_ANNOTATION] = READ_ONLY_REASON
    for container in out["spec"]["template"]["spec"]["containers"]:
        if container["name"] == maintenance.CONTAINER:
            override = {"name": maintenance.READ_ONLY_ENV, "value": maintenance.READ_ONLY_VALUE}
            container["env"] = [*container.get("env", []), override]
    return out


async def verify(
    api: kr8s.asyncio.Api,
    settings: Settings,
    notebook: Notebook,
    client: RegistryClient,
    release: Callable[[], Awaitable[None]],
) -> list[kube.Change]:
    """Check every tag on the new, read-only registry; then delete the notebook's TLS
    objects and the stored inventory, and let `release` make the registry writable."""
    assert notebook.inventory is not None
    with step("checking that the new registry refuses pushes while it is checked"):
        await wait_for(
            f"the registry on {settings.registry_url} to answer read-only",
            lambda: poll(_refuses_pushes(client)),
            READY_TIMEOUT,
        )
    count, missing = notebook.inventory.tag_count, len(notebook.inventory.missing)
    with step(f"checking {count} tags answer by the notebook's digests"):
        wrong = await compare(client, notebook.inventory)
    if wrong:
        raise ProvisionError(
            "the new registry does not serve every image the notebook's did; it stays "
            "read-only and nothing was deleted:\n  " + "\n  ".join(wrong[:20])
        )
    failpoints.reached("notebook-checked")
    changes = []
    for raw in notebook.leftovers:
        ref = _ref(raw["kind"], raw["metadata"]["name"], settings.namespace, raw["apiVersion"])
        ref["metadata"]["uid"] = raw["metadata"]["uid"]
        changes += await kube.delete_manifests(api, [ref])
    await release()
    await kube.delete_manifests(api, [_inventory_ref(settings)])
    return [
        *[dataclasses.replace(c, action=f"{c.action}: the notebook's") for c in changes],
        kube.Change(
            "PersistentVolumeClaim",
            settings.storage.claim_name,
            settings.namespace,
            f"taken over: {count} tags checked, served by the same digests"
            + (f"; {missing} blobs were already missing in the old registry" if missing else ""),
        ),
    ]


def _refuses_pushes(client: RegistryClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            return not await client.accepts_pushes(PUSH_PROBE)
        except RegistryError as error:
            if error.status is None or error.status >= 500:
                return False
            raise

    return check
