"""Provision the registry: preflight, apply, wait until it answers, hand clients the CA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import kr8s.asyncio

from . import (
    access,
    kube,
    lease,
    maintenance,
    node_probe,
    node_trust,
    notebook,
    ownership,
    progress,
    render,
    unprovision,
)
from .config import Settings
from .credentials import Credentials, credentials_for, tls_secret_value, write_client_ca
from .errors import ProvisionError, RegistryError
from .oci_client import RegistryClient
from .preflight import refuse, run_preflight
from .waiting import READY_TIMEOUT, all_of, alongside, diagnose_pods, poll, wait_for

PREFLIGHT_STEP = "checking the cluster before any change (rights, ownership, settings)"
# Asking whether the registry answers: each request's bound, the first connect's
# shorter one, and the pause between tries.
ANSWER_TIMEOUT = 5.0
FIRST_CONNECT_TIMEOUT = 0.25
ANSWER_POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class ProvisionResult:
    changes: list[kube.Change]
    ca_file: Path | None
    ready_seconds: float

    @property
    def changed(self) -> bool:
        return any(change.action != "unchanged" for change in self.changes)


async def provision(
    api: kr8s.asyncio.Api,
    settings: Settings,
    *,
    dry_run: bool = False,
    rotate_password: bool = False,
    rotate_pull_password: bool = False,
    adopt: bool = False,
    ca_dir: Path = Path("certs"),
    timeout: float = READY_TIMEOUT,
) -> ProvisionResult:
    """Apply the rendered manifests and wait until the registry answers with its credentials
    and, with node trust, until every node trusts it. `timeout` bounds each wait.

    A re-run keeps the stored password and CA, so clients keep working.
    """
    found: notebook.Notebook | None = None

    async def settle(settings: Settings) -> Settings:
        """The claim's recorded sub_path; the notebook's install, its plan, or the refusal."""
        nonlocal found
        settings = await notebook.settled(api, settings)
        found = await notebook.detect(api, settings)
        if found is None:
            return settings
        settings = notebook.adopting(settings, found)
        if not adopt:
            raise notebook.refusal(settings, found)
        lacking = await access.lacking(api, access.takeover_rights(settings))
        refuse(
            [
                f"taking over the notebook's registry (a one-off pod hands its files to the "
                f"registry's user): {line}"
                for line in lacking
            ]
        )
        print("\n".join(notebook.plan(settings, found)), flush=True)
        return settings

    # The credentials need only reads (and, on a first run, hashing): they overlap the
    # preflight, whose refusal still comes first. Its settling changes only sub_path.
    # What the preflight read of each object spares the apply a second read.
    read_versions: kube.Versions = {}
    with progress.step(PREFLIGHT_STEP):
        settings, (credentials, renewal) = await alongside(
            run_preflight(api, settings, adopt=adopt, settle=settle, versions=read_versions),
            credentials_for(api, settings, rotate_password, rotate_pull_password),
        )
    manifests = await _ours_to_apply(
        api, settings, render.render_manifests(settings, credentials), read_versions
    )
    # The last check before any change: it starts a pod on each node, so not in a dry run.
    probed = [] if dry_run else await node_probe.check_nodes(api, settings, manifests, timeout)
    # Node trust's CA copy and DaemonSet wait for the CA, which cert-manager issues
    # only after the Certificate is applied.
    later = _node_trust_workload(settings, manifests)
    manifests = [m for m in manifests if m not in later]
    released = await _end_stale_maintenance(api, settings, manifests, dry_run=dry_run)
    writable = manifests
    taking_over: list[kube.Change] = []
    if found is not None:
        if not dry_run:
            found = await notebook.prepare(api, settings, found)
        elif found.inventory is None:
            print("\n".join(await notebook.preview_inventory(api, found)), flush=True)
        manifests, taking_over = _taking_over(settings, manifests, found)

    async def apply(objects: list[dict], failpoint: str = "applied-stage") -> list[kube.Change]:
        adopted = await ownership.adopt(api, settings, objects, dry_run=dry_run) if adopt else []
        # Adopting replaces objects, so their versions from the preflight are stale.
        versions = None if adopt else read_versions
        applied = await kube.apply_manifests(
            api, objects, dry_run=dry_run, versions=versions, failpoint=failpoint
        )
        return applied + adopted

    held, held_claims = (
        ([], [])
        if dry_run or found is not None
        else await _held_for_claims(api, settings, manifests)
    )
    # Counted from the start, so a run cut short says that the held ones are still to go.
    progress.count_afresh("objects applied")
    progress.tally("objects applied", planned=map(kube.version_key, held))
    changes = _made_before(await apply([m for m in manifests if m not in held]), probed)
    changes += taking_over
    if released:
        action = "made writable again (an interrupted `invoke gc` had left it read-only)"
        changes.append(
            kube.Change(
                "Deployment",
                settings.name,
                settings.namespace,
                f"would be {action}" if dry_run else action,
            )
        )
    if renewal:
        changes = [_renewed(change, settings, renewal) for change in changes]
    if not settings.node_trust.enabled:
        # Turned off since the last run: the nodes' files and node trust's objects go.
        changes += await unprovision.switch_off_node_trust(api, settings, dry_run=dry_run)
    # Mirrors dropped from the settings since the last run go too.
    changes += await unprovision.drop_stray_mirrors(api, settings, dry_run=dry_run)
    if dry_run:
        if later:
            ca = credentials.ca_pem or await tls_secret_value(api, settings, "ca.crt")
            changes += await apply(await _with_ca(api, settings, credentials, later, ca))
        return ProvisionResult(changes, None, 0.0)
    started = time.monotonic()
    certificate, rest = _split_certificate(_readiness(api, settings))
    taken_over: list[kube.Change] = []
    applied_once_bound: list[kube.Change] = []
    await wait_ready(api, settings, certificate, timeout)

    async def registry_answers() -> Path:
        if held:
            await wait_ready(api, settings, [_claim_bound(c) for c in held_claims], timeout)
            applied_once_bound.extend(await apply(held))
        waited = {("persistentvolumeclaims", claim) for claim in held_claims}
        await wait_ready(
            api, settings, [s for s in rest if (s.kind, s.name) not in waited], timeout
        )
        ca_file = await write_client_ca(api, settings, ca_dir)
        if found is not None:
            # Read-only until every tag of the notebook's registry is seen served.
            taken_over.extend(
                await _check_taken_over(api, settings, found, writable, credentials, ca_file)
            )
        # Rolled out is not yet reachable: wait for each address to answer (mirrors anonymously).
        admin = (credentials.username, credentials.password)
        endpoints = [("the registry", settings.registry_url, admin)] + [
            (f"the mirror of {m.upstream}", settings.mirror_url(m), (None, None))
            for m in settings.mirrors
        ]
        for what, url, login in endpoints:
            await wait_for(
                f"{what} to answer on {url}",
                lambda url=url, login=login: _until_answers(url, ca_file, *login),
                timeout,
            )
        return ca_file

    async def nodes_trust() -> list[kube.Change]:
        # Needs only the CA: it starts while the registry's pod is still coming up.
        # Else "ready" would be followed by x509 errors on the first in-cluster pull.
        ca = await tls_secret_value(api, settings, "ca.crt")
        applied = await _retire_previous_node_trust(api, settings, deleting_files=True)
        # The new DaemonSet no longer mounts a dropped mirror's directory: empty it first.
        applied += await node_trust.remove_dropped_mirror_files(api, settings, timeout)
        applied += await apply(
            await _with_ca(api, settings, credentials, later, ca), "applied-node-trust-stage"
        )
        await node_trust.wait_on_every_node(api, settings, timeout)
        return applied

    if not later:
        ca_file = await registry_answers()
    else:
        ca_file, applied = await all_of(registry_answers(), nodes_trust())
        changes += applied
        changes += await _retire_previous_node_trust(api, settings, deleting_files=False)
        changes += await _drop_legacy_node_trust_config(api, settings)
    changes += applied_once_bound + taken_over
    return ProvisionResult(changes, ca_file, time.monotonic() - started)


def _made_before(changes: list[kube.Change], made: list[kube.Change]) -> list[kube.Change]:
    """`changes`, saying "created" for what the node probe created just before (which
    applying again found unchanged)."""
    first = {(c.kind, c.namespace, c.name): c for c in made}
    return [first.get((c.kind, c.namespace, c.name), c) for c in changes]


def _taking_over(
    settings: Settings, manifests: list[dict], found: notebook.Notebook
) -> tuple[list[dict], list[kube.Change]]:
    """The manifests for the first apply of a takeover of the notebook's registry.

    While its Deployment still stands (a dry run), ours cannot be applied over it (the
    selector cannot change): say what would happen instead. Otherwise ours starts
    read-only, until every image is seen served.
    """
    if found.deployment is not None:
        change = kube.Change(
            "Deployment",
            settings.name,
            settings.namespace,
            "would be replaced: the notebook's is scaled to 0 and deleted, then ours is "
            "created, read-only until every tag is checked",
        )
        return [m for m in manifests if m["kind"] != "Deployment"], [change]
    return [notebook.read_only(m) if m["kind"] == "Deployment" else m for m in manifests], []


async def _check_taken_over(
    api: kr8s.asyncio.Api,
    settings: Settings,
    found: notebook.Notebook,
    manifests: list[dict],
    credentials: Credentials,
    ca_file: Path,
) -> list[kube.Change]:
    """Every tag the notebook's registry served answers by the same digest on ours, which
    only then becomes writable; see notebook.verify."""
    [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
    async with RegistryClient(
        settings.registry_url, credentials.username, credentials.password, ca_file, timeout=30
    ) as client:

        async def release() -> None:
            await kube.apply_object(api, deployment)
            await wait_ready(api, settings, _readiness(api, settings), READY_TIMEOUT)
            await wait_for(
                f"the registry on {settings.registry_url} to accept pushes",
                lambda: poll(lambda: _accepts_pushes(client)),
                READY_TIMEOUT,
            )

        return await notebook.verify(api, settings, found, client, release)


async def _accepts_pushes(client: RegistryClient) -> bool:
    try:
        return await client.accepts_pushes(notebook.PUSH_PROBE)
    except RegistryError as error:
        if error.status is None or error.status >= 500:
            return False
        raise


async def _ours_to_apply(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict], versions: kube.Versions
) -> list[dict]:
    """The manifests without the Namespaces that existed before us: we put our objects
    in them, but never label (Pod Security included) or delete them.

    `versions` receives what each read found, so the apply need not read them again.
    """
    namespaces = [m for m in manifests if m["kind"] == "Namespace"]
    found = await asyncio.gather(*(ownership.live(api, m) for m in namespaces))
    kube.record_versions(versions, namespaces, found)
    foreign = {
        m["metadata"]["name"]
        for m, raw in zip(namespaces, found, strict=True)
        if raw is not None and ownership.foreign(raw, settings) is not None
    }
    return [
        m for m in manifests if not (m["kind"] == "Namespace" and m["metadata"]["name"] in foreign)
    ]


def _node_trust_workload(settings: Settings, manifests: list[dict]) -> list[dict]:
    """Node trust's CA copy and DaemonSet among `manifests` (none when it is off)."""
    refs = node_trust.owned_refs(settings)[1:]
    wanted = {(r["kind"], r["metadata"]["namespace"], r["metadata"]["name"]) for r in refs}
    return [
        m
        for m in manifests
        if (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) in wanted
    ]


async def _upstream_cas(api: kr8s.asyncio.Api, settings: Settings) -> dict[int, str]:
    """Each mirror's upstream CA (its ca_config_map's ca.crt), by mirror index."""
    cas = {}
    for i, mirror in enumerate(settings.mirrors):
        if mirror.ca_config_map:
            found = await kube.read(
                api, f"configmaps/{mirror.ca_config_map}", namespace=settings.namespace
            )
            cas[i] = ((found or {}).get("data") or {}).get("ca.crt", "")
    return cas


async def _with_ca(
    api: kr8s.asyncio.Api,
    settings: Settings,
    credentials: Credentials,
    workload: list[dict],
    ca: str,
) -> list[dict]:
    """The node-trust objects rendered again with the CA copied from the TLS Secret, and
    the mirrors' upstream CAs."""
    keys = {(m["kind"], m["metadata"]["name"]) for m in workload}
    upstream_cas = await _upstream_cas(api, settings)
    rendered = render.render_manifests(settings, credentials, ca, upstream_cas)
    return [m for m in rendered if (m["kind"], m["metadata"]["name"]) in keys]


async def _retire_previous_node_trust(
    api: kr8s.asyncio.Api, settings: Settings, *, deleting_files: bool
) -> list[kube.Change]:
    """Delete the DaemonSet earlier releases ran in the registry's namespace.

    Called twice. Pods of releases since issue 11 leave the files as they stop (both
    DaemonSets write the same files, the same way), so theirs goes only once the new
    one holds the files on every node, and trust never lapses. Older pods delete the
    files as they stop (`deleting_files`), so theirs goes before the new one starts,
    whose wait then covers the files. A DaemonSet not ours is left alone.
    """
    previous = node_trust.previous_daemonset(settings)
    raw = await ownership.live(api, previous)
    if raw is None or ownership.foreign(raw, settings) is not None:
        return []
    if node_trust.keeps_files(raw) == deleting_files:
        return []
    previous["metadata"]["uid"] = raw["metadata"]["uid"]
    [change] = await kube.delete_manifests(api, [previous])
    if change.action == "deleted":
        action = f"deleted: node trust runs in namespace {settings.node_trust_namespace} now"
        change = kube.Change(change.kind, change.name, change.namespace, action)
    return [change]


async def _drop_legacy_node_trust_config(
    api: kr8s.asyncio.Api, settings: Settings
) -> list[kube.Change]:
    """Delete the ConfigMap that held node trust's script before issue 11, once no pod
    of the DaemonSet mounts it any more (every node runs the current template)."""
    legacy = node_trust.legacy_config_map(settings)
    raw = await ownership.live(api, legacy)
    if raw is None or ownership.foreign(raw, settings) is not None:
        return []
    legacy["metadata"]["uid"] = raw["metadata"]["uid"]
    [change] = await kube.delete_manifests(api, [legacy])
    if change.action == "deleted":
        action = "deleted: node trust's script is in its DaemonSet now"
        change = kube.Change(change.kind, change.name, change.namespace, action)
    return [change]


async def _end_stale_maintenance(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict], *, dry_run: bool
) -> bool:
    """Leave a running gc alone; undo what a killed one left. True if the registry was released.

    Our apply never touches the read-only override (another field manager owns it),
    so an interrupted `invoke gc` would otherwise leave the registry read-only for good.
    While a gc holds its live Lease, only a provision that leaves the Deployment as it
    is may go ahead: a rollout would restart the registry in the middle of the sweep.
    """
    holder = await lease.live_holder(api, settings)
    if holder is not None:
        [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
        change = await kube.apply_object(api, deployment, dry_run=True)
        if change.action != "unchanged":
            raise lease.MaintenanceBusy(
                f"Deployment {settings.namespace}/{settings.name} would change while "
                f"{holder} holds the maintenance lease: wait for it to finish and run this again"
            )
        return False
    released = await maintenance.leave_read_only(api, settings, dry_run=dry_run)
    if not dry_run:
        await lease.release(api, settings)  # an expired Lease of a killed run
    return released


def _renewed(change: kube.Change, settings: Settings, renewal: str) -> kube.Change:
    if (change.kind, change.name) != ("Secret", settings.tls.secret_name):
        return change
    return replace(change, action=f"{change.action}: {renewal}")


async def _answers(
    url: str,
    ca_file: Path,
    username: str | None = None,
    password: str | None = None,
    connect_timeout: float = ANSWER_TIMEOUT,
) -> bool:
    """Whether a registry answers at `url` (with the login, if given)."""
    async with RegistryClient(
        url, username, password, ca_file, timeout=ANSWER_TIMEOUT, connect_timeout=connect_timeout
    ) as client:
        try:
            await client.ping()
        except RegistryError:
            return False
    return True


async def _until_answers(
    url: str, ca_file: Path, username: str | None, password: str | None
) -> None:
    """Ask again and again; a connect that timed out is given longer the next time.

    Right after a rollout, kube-proxy first refuses connections to the address, and
    for a moment while it programs the new endpoint, drops them; the kernel would
    resend a dropped one only after a second. A short first connect notices the open
    path within a fraction of that; across a slow network the connects that time
    out grow, by half each time, up to the usual bound.
    """
    connect_timeout = FIRST_CONNECT_TIMEOUT

    async def answers() -> bool:
        nonlocal connect_timeout
        started = time.monotonic()
        if await _answers(url, ca_file, username, password, connect_timeout):
            return True
        if time.monotonic() - started >= connect_timeout:
            connect_timeout = min(connect_timeout * 1.5, ANSWER_TIMEOUT)
        return False

    await poll(answers, ANSWER_POLL_INTERVAL)


CERTIFICATES = "certificates.cert-manager.io"


@dataclass(frozen=True)
class _Readiness:
    """One object provision waits on, what it must show, and what to say if it never does."""

    what: str
    kind: str
    name: str
    holds: Callable[[dict], bool]
    diagnose: Callable[[], Awaitable[str]] | None = None


def _readiness(api: kr8s.asyncio.Api, settings: Settings) -> list[_Readiness]:
    """What provision waits on, in the order it comes."""
    ns, selector = settings.namespace, render.label_selector(settings)
    steps = []
    if settings.tls.mode == "cert-manager":
        steps.append(
            _Readiness(
                f"Certificate {settings.name} to be Ready",
                CERTIFICATES,
                settings.name,
                kube.condition_is("Ready"),
            )
        )
    if settings.storage.on_claim:  # on S3 there is no claim to wait for
        steps.append(_claim_bound(settings.storage.claim_name))
    return [
        *steps,
        _Readiness(
            f"Deployment {settings.name} to roll out",
            "deployments",
            settings.name,
            kube.rolled_out,
            lambda: diagnose_pods(api, ns, selector),
        ),
        _Readiness(
            f"Service {settings.service.name} to get LoadBalancer IP {settings.service.ip}",
            "services",
            settings.service.name,
            kube.field_is("status.loadBalancer.ingress.0.ip", settings.service.ip),
            lambda: _service_diagnosis(api, settings),
        ),
        *_mirror_readiness(api, settings),
    ]


def _split_certificate(steps: list[_Readiness]) -> tuple[list[_Readiness], list[_Readiness]]:
    """The Certificate's wait (what node trust needs) apart from the registry's own."""
    certificate = [step for step in steps if step.kind == CERTIFICATES]
    return certificate, [step for step in steps if step.kind != CERTIFICATES]


_BOUND = kube.field_is("status.phase", "Bound")


async def _held_for_claims(
    api: kr8s.asyncio.Api, settings: Settings, manifests: list[dict]
) -> tuple[list[dict], list[str]]:
    """The Deployments to create once their claims are Bound, and those claims.

    On a class that binds at once (Longhorn's default), a pod created before its claim
    is Bound is unschedulable; the scheduler tries it again only after a backoff that
    grows with each try, seconds after the claim binds. Created once the claim is
    Bound, the pod is scheduled at once. A claim bound already holds nothing back, nor
    does the cluster's default class, whose binding mode provision does not look up.
    """
    claims = [m["metadata"]["name"] for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    storage_class = settings.storage.storage_class
    if not claims or not storage_class:
        return [], []
    binds_now, *live = await asyncio.gather(
        _binds_immediately(api, storage_class),
        *(
            kube.read(api, f"persistentvolumeclaims/{name}", namespace=settings.namespace)
            for name in claims
        ),
    )
    if not binds_now:
        return [], []
    unbound = {name for name, raw in zip(claims, live, strict=True) if not _BOUND(raw or {})}
    held = [m for m in manifests if m["kind"] == "Deployment" and _claims_of(m) & unbound]
    return held, sorted({claim for m in held for claim in _claims_of(m)} & unbound)


def _claims_of(deployment: dict) -> set[str]:
    volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
    return {
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    }


def _claim_bound(name: str) -> _Readiness:
    return _Readiness(
        f"PersistentVolumeClaim {name} to be Bound", "persistentvolumeclaims", name, _BOUND
    )


def _mirror_readiness(api: kr8s.asyncio.Api, settings: Settings) -> list[_Readiness]:
    """Each mirror's rollout and its share of the registry's LoadBalancer IP."""
    ns = settings.namespace
    mirrors: list[_Readiness] = []
    for mirror in settings.mirrors:
        name = settings.mirror_name(mirror)
        selector = render.mirror_pod_selector(settings, mirror)
        mirrors += [
            _Readiness(
                f"Deployment {name} (the mirror of {mirror.upstream}) to roll out",
                "deployments",
                name,
                kube.rolled_out,
                lambda selector=selector: diagnose_pods(api, ns, selector),
            ),
            _Readiness(
                f"Service {name} to share LoadBalancer IP {settings.service.ip}",
                "services",
                name,
                kube.field_is("status.loadBalancer.ingress.0.ip", settings.service.ip),
                lambda name=name: _service_diagnosis(api, settings, name),
            ),
        ]
    return mirrors


async def wait_ready(
    api: kr8s.asyncio.Api, settings: Settings, steps: list[_Readiness], timeout: float
) -> None:
    """Wait on `steps` in the order they come; a re-run reads them all at once instead."""
    ns = settings.namespace

    async def holds(step: _Readiness) -> bool:
        found = await kube.get_all(api, step.kind, step.name, namespace=ns)
        return bool(found) and step.holds(found[0].raw)

    if all(await asyncio.gather(*(holds(step) for step in steps))):
        return  # a re-run: one round of reads at once, not a wait on each in turn
    claims = any(step.kind == "persistentvolumeclaims" for step in steps)
    binds_now = (
        claims
        and settings.storage.on_claim
        and await _binds_immediately(api, settings.storage.storage_class)
    )
    for step in steps:
        if step.kind == "persistentvolumeclaims" and not binds_now:
            continue  # it binds once the pod is scheduled: the rollout's wait covers it
        obj = await _one(api, step.kind, step.name, ns)
        await wait_for(
            step.what,
            lambda obj=obj, step=step: kube.wait_until(obj, step.holds),
            timeout,
            step.diagnose,
        )


async def _binds_immediately(api: kr8s.asyncio.Api, storage_class: str) -> bool:
    """WaitForFirstConsumer claims bind only once the pod is scheduled: no point waiting first."""
    found = await kube.get_all(api, "storageclasses", storage_class)
    return bool(found) and found[0].raw.get("volumeBindingMode", "Immediate") == "Immediate"


async def _one(api: kr8s.asyncio.Api, kind: str, name: str, namespace: str):
    found = await kube.get_all(api, kind, name, namespace=namespace)
    if not found:
        raise ProvisionError(f"{kind} {namespace}/{name} vanished right after it was applied")
    return found[0] if isinstance(found, list) else found


async def _service_diagnosis(
    api: kr8s.asyncio.Api, settings: Settings, name: str | None = None
) -> str:
    events = await kube.events_about(api, settings.namespace, name or settings.service.name)
    messages = [f"    {e.get('reason')}: {e.get('message')}" for e in events]
    hint = "  is the IP inside one of MetalLB's IPAddressPools, and is service.address_pool right?"
    return "\n".join([hint, *messages])


def summary(settings: Settings, result: ProvisionResult) -> str:
    """What clients need, as lines to paste; no password ever lands on a command line."""
    ns, secret, host = settings.namespace, settings.auth.secret_name, settings.registry_host
    state = "changed" if result.changed else "no changes: everything was already as configured"
    read_password = (
        f"kubectl -n {ns} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d"
    )
    lines = [
        f"registry ready at {settings.registry_url} ({state})",
        f"  user:      {settings.auth.username}",
        f"  password:  {read_password}",
        f"  CA cert:   {result.ca_file}",
        "  docker:    sudo mkdir -p /etc/docker/certs.d/"
        f"{host} && sudo cp {result.ca_file} /etc/docker/certs.d/{host}/ca.crt",
        f"             {read_password} | docker login {host} -u {settings.auth.username} "
        "--password-stdin",
        f"  in-cluster pulls: imagePullSecrets: [{{name: {settings.pull_secret.name}}}] "
        f"(in {', '.join(settings.pull_secret.namespaces) or 'no namespace yet'}), "
        f"with the pull-only login {settings.auth.pull_username}",
    ]
    lines += [
        f"  mirror:    {settings.mirror_url(m)} caches {m.upstream}: every node pulls "
        f"{m.host}/... through it (anonymously), the upstream as fallback"
        for m in settings.mirrors
    ]
    if settings.pull_secret.namespaces:
        source, name = settings.pull_secret.namespaces[0], settings.pull_secret.name
        lines.append(
            f"  elsewhere: kubectl -n {source} get secret {name} "
            "-o jsonpath='{.data.\\.dockerconfigjson}'"
            f" | base64 -d | kubectl create secret docker-registry {name} -n NAMESPACE "
            "--from-file=.dockerconfigjson=/dev/stdin"
        )
    return "\n".join(lines)
