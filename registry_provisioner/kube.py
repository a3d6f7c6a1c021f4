"""Apply, wait on and delete manifests with kr8s, the one place that writes to the cluster.

Objects are applied server-side under our own field manager, so a re-run
with the same config is a no-op the API server itself confirms (the
resourceVersion does not move), and a dry run is the server's own dry run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
from kr8s._objects import get_class
from kr8s.asyncio.objects import APIObject, new_class

from . import failpoints, progress
from .errors import ClusterUnreachable, ReadFailed

# kr8s warns on stderr when its API discovery meets a group version the server no
# longer serves (e.g. a stale metallb.io/v1beta2) or a Kubernetes newer than it lists;
# the call still succeeds, and the person running a task can do nothing about either.
warnings.filterwarnings("ignore", category=UserWarning, module=r"kr8s\._api")

FIELD_MANAGER = "registry-provisioner"
# What a read found shortly before applying: each object's resourceVersion, None where
# it was absent. Keyed by kind, namespace and name (see `version_key`).
Versions = dict[tuple[str, str | None, str], str | None]
# Kinds kr8s has no class for, which this tool reads, writes or waits on. Known here, they
# skip kr8s's API discovery: one request per API group the server serves, on every run.
# kr8s finds classes among APIObject's subclasses, a weak list: this tuple keeps them.
KNOWN_CUSTOM_KINDS = tuple(
    new_class(kind, version, namespaced=namespaced, plural=plural)
    for kind, version, plural, namespaced in (
        ("Certificate", "cert-manager.io/v1", "certificates", True),
        ("StorageClass", "storage.k8s.io/v1", "storageclasses", False),
        ("Lease", "coordination.k8s.io/v1", "leases", True),
    )
)
# A watch can go quiet without ending (seen for a minute and more after an API server
# restart, while the object changed), so waits read the object again this often.
WATCH_WINDOW = 10.0
# Workloads go last, so their pods start with every volume they mount in place
# instead of backing off on a missing Secret or claim.
_STAGE_OF_KIND = {"Namespace": 0, "Deployment": 2, "DaemonSet": 2, "StatefulSet": 2}
# Inside a stage a claim is sent first: it is bound by a provisioner outside the API
# server, seconds that every pod mounting it waits, so that wait starts earliest.
_FIRST_IN_STAGE = frozenset({"PersistentVolumeClaim"})
# Fields the server owns; a dry run's answer is compared without them.
_SERVER_FIELDS = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid")


@dataclass(frozen=True)
class Change:
    """What applying (or deleting) one object did, or would do."""

    kind: str
    name: str
    namespace: str | None
    action: str  # created | configured | unchanged | deleted | absent (and "would ..." forms)

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where}: {self.action}"


async def connect(context: str | None = None, kubeconfig: str | None = None) -> kr8s.asyncio.Api:
    """An API client; KUBECONFIG is honoured when no kubeconfig path is given."""
    try:
        return await kr8s.asyncio.api(context=context, kubeconfig=kubeconfig)
    except (httpx.HTTPError, OSError, ValueError, KeyError) as error:
        raise unreachable(error, kubeconfig) from error


async def check_reachable(api: kr8s.asyncio.Api) -> None:
    """Ask for the server's version: the cheapest call that proves an API server answers."""
    try:
        await api.version()
    except (httpx.HTTPError, kr8s.ServerError, OSError, ValueError) as error:
        raise unreachable(error) from error


def unreachable(error: BaseException, kubeconfig: str | None = None) -> ClusterUnreachable:
    """The one wording of "no API server answered", wherever that is found out."""
    where = kubeconfig or "--kubeconfig, else $KUBECONFIG or ~/.kube/config"
    return ClusterUnreachable(
        f"cannot reach the Kubernetes API: {type(error).__name__}: {error}",
        f"check the kubeconfig ({where}), the context (--context), "
        "and that the API server is running",
    )


def stages(manifests: Sequence[dict]) -> list[list[dict]]:
    """Group manifests into apply stages: claims first inside each, then the rendered order."""
    grouped: dict[int, list[dict]] = {}
    for manifest in manifests:
        grouped.setdefault(stage_of(manifest), []).append(manifest)
    return [
        sorted(grouped[stage], key=lambda m: m["kind"] not in _FIRST_IN_STAGE)
        for stage in sorted(grouped)
    ]


def _claims_alone_first(stage: list[dict]) -> list[list[dict]]:
    """A stage's claims on their own, then the rest: sent among a dozen others, a claim
    waits its turn in a busy API server (100 ms against 20 ms alone, on 2 cores)."""
    claims = [m for m in stage if m["kind"] in _FIRST_IN_STAGE]
    rest = [m for m in stage if m["kind"] not in _FIRST_IN_STAGE]
    return [group for group in (claims, rest) if group]


def stage_of(manifest: dict) -> int:
    return _STAGE_OF_KIND.get(manifest["kind"], 1)


async def _class_for(api: kr8s.asyncio.Api, manifest: dict) -> type[APIObject]:
    """kr8s's class for the manifest's kind; custom kinds are scoped by asking the server."""
    try:
        return get_class(manifest["kind"], manifest["apiVersion"])
    except KeyError:
        pass
    kind = f"{manifest['kind']}.{manifest['apiVersion']}"
    try:
        _, plural, namespaced = await api.async_lookup_kind(kind)
    except ValueError:  # a CRD created moments ago is not in the discovery cache yet
        _, plural, namespaced = await api.async_lookup_kind(kind, skip_cache=True)
    return new_class(manifest["kind"], manifest["apiVersion"], namespaced=namespaced, plural=plural)


async def object_for(api: kr8s.asyncio.Api, manifest: dict) -> APIObject:
    """A kr8s object for any manifest, for waits and watches."""
    return (await _class_for(api, manifest))(manifest, api=api)


@dataclass(frozen=True)
class Location:
    """Where a manifest's object is served: all a GET, PATCH or DELETE needs.

    Cheaper than a kr8s object, which copies the whole manifest into a Box first.
    """

    kind: str
    version: str
    endpoint: str
    name: str
    namespace: str | None

    @property
    def path(self) -> str:
        return f"{self.endpoint}/{self.name}"


async def locate(api: kr8s.asyncio.Api, manifest: dict) -> Location:
    """The manifest's Location, from its kr8s class, without building the object."""
    known = await _class_for(api, manifest)
    metadata = manifest["metadata"]
    namespace = (metadata.get("namespace") or api.namespace) if known.namespaced else None
    return Location(manifest["kind"], known.version, known.endpoint, metadata["name"], namespace)


# A server that is starting, stopping or busy answers 429 or 5xx for a moment; a read
# is tried this many times, waiting as it asks (Retry-After) or doubling from 0.25 s.
READ_ATTEMPTS = 5
_MAX_RETRY_WAIT = 4.0


def _retry_after(response: httpx.Response, attempt: int) -> float:
    asked = response.headers.get("Retry-After", "")
    wait = float(asked) if asked.isdigit() else 0.25 * 2**attempt
    return min(wait, _MAX_RETRY_WAIT)


async def read(
    api: kr8s.asyncio.Api, path: str, *, version: str = "v1", namespace: str | None = None
) -> dict | None:
    """GET one object (``resource/name``) or a list (``resource``); None only on 404.

    404 means the object, its namespace or its CRD is absent. A 429 or 5xx is tried
    again a few times; any refusal that remains raises ReadFailed: absence cannot be
    assumed from a 403, 429 or 5xx. Transport errors propagate as they are.
    """
    for attempt in range(READ_ATTEMPTS):
        async with api.call_api(
            "GET", version=version, url=path, namespace=namespace, raise_for_status=False
        ) as response:
            status = response.status_code
            if status == 404:
                return None
            if status == 200:
                return response.json()
            transient = status == 429 or status >= 500
            if not transient or attempt + 1 == READ_ATTEMPTS:
                raise read_failure(
                    path, status, response.reason_phrase, version=version, namespace=namespace
                )
            wait = _retry_after(response, attempt)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def read_failure(
    path: str, status: int, reason: str, *, version: str = "v1", namespace: str | None = None
) -> ReadFailed:
    """The error for a read answered with neither the object nor 404: what, why, what to do."""
    resource, _, name = path.partition("/")
    group = version.rpartition("/")[0]
    qualified = f"{resource}.{group}" if group else resource
    where = f" in namespace {namespace}" if namespace else ""
    what = f"{qualified}/{name}{where}" if name else f"{qualified}{where}"
    verb = "get" if name else "list"
    return ReadFailed(what, status, reason, _read_hint(status, verb, qualified, namespace))


def _read_hint(status: int, verb: str, resource: str, namespace: str | None) -> str:
    if status == 401:
        return "the API server does not accept your credentials: renew them in the kubeconfig"
    if status == 403:
        scope = f" -n {namespace}" if namespace else " --all-namespaces" if verb == "list" else ""
        return f"check your rights: kubectl auth can-i {verb} {resource}{scope}"
    if status == 429 or status >= 500:
        return "the API server is overloaded or failing: run the same command again"
    return "unexpected for a read: run the same command again; if it persists, see the server's log"


async def _server_side_apply(
    api: kr8s.asyncio.Api,
    where: Location,
    manifest: dict,
    dry_run: bool,
    field_manager: str = FIELD_MANAGER,
    force: bool = True,
) -> tuple[bool, dict]:
    """Whether the apply created the object (201), and the object as it now is."""
    params = {"fieldManager": field_manager, "force": "true" if force else "false"}
    if dry_run:
        params["dryRun"] = "All"
    apply_patch = {"Content-Type": "application/apply-patch+yaml"}
    status, answer = await _exchange(
        api, where, "PATCH", manifest, params=params, headers=apply_patch
    )
    return status == 201, answer


async def _exchange(
    api: kr8s.asyncio.Api, where: Location, method: str, body: dict, **options: Any
) -> tuple[int, dict]:
    """One request on the object's own URL with a JSON body; the answer's status and JSON."""
    async with api.call_api(
        method,
        version=where.version,
        url=where.path,
        namespace=where.namespace,
        content=json.dumps(body),
        **options,
    ) as response:
        return response.status_code, response.json()


async def _send(
    api: kr8s.asyncio.Api, where: Location, method: str, body: dict, **options: Any
) -> dict:
    """One request on the object's own URL with a JSON body; the answer's JSON."""
    return (await _exchange(api, where, method, body, **options))[1]


def _comparable(obj: dict) -> dict:
    clean = {k: v for k, v in obj.items() if k != "status"}
    clean["metadata"] = {
        k: v for k, v in obj.get("metadata", {}).items() if k not in _SERVER_FIELDS
    }
    return clean


def version_key(manifest: dict) -> tuple[str, str | None, str]:
    metadata = manifest["metadata"]
    return manifest["kind"], metadata.get("namespace"), metadata["name"]


def record_versions(
    versions: Versions, manifests: Iterable[dict], found: Iterable[dict | None]
) -> None:
    """Note what a read of each manifest's object found, for the apply that follows."""
    for manifest, raw in zip(manifests, found, strict=True):
        versions[version_key(manifest)] = raw["metadata"]["resourceVersion"] if raw else None


async def apply_object(
    api: kr8s.asyncio.Api, manifest: dict, dry_run: bool = False, versions: Versions | None = None
) -> Change:
    """Server-side apply, saying whether that created, changed or left the object.

    `versions` saves the read before the apply for objects read moments ago (the
    preflight's ownership check): only the answer's resourceVersion is then compared.
    A dry run always reads, since it compares the objects themselves.
    """
    where = await locate(api, manifest)
    key = version_key(manifest)
    before: dict | None = None
    if dry_run or versions is None or key not in versions:
        before = await read(api, where.path, version=where.version, namespace=where.namespace)
        before_version = before["metadata"]["resourceVersion"] if before else None
    else:
        before_version = versions[key]
    try:
        created, after = await _server_side_apply(api, where, manifest, dry_run)
    except kr8s.ServerError as error:
        # A dry run cannot place objects in a namespace that is itself only dry-run created.
        missing_namespace = error.response is not None and error.response.status_code == 404
        if dry_run and before is None and missing_namespace:
            return Change(where.kind, where.name, where.namespace, "would be created")
        raise
    if dry_run:
        if before is None:
            action = "would be created"
        else:
            same = _comparable(before) == _comparable(after)
            action = "unchanged" if same else "would be configured"
    elif created:
        action = "created"
    else:
        same = before_version == after["metadata"]["resourceVersion"]
        action = "unchanged" if same else "configured"
    return Change(where.kind, where.name, where.namespace, action)


async def replace_object(api: kr8s.asyncio.Api, manifest: dict, resource_version: str) -> dict:
    """PUT the manifest over the object read at `resource_version` (409 if it moved since).

    Fields the manifest leaves out are dropped; the server keeps what it allocated
    (a Service's cluster IP).
    """
    where = await locate(api, manifest)
    body = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": resource_version}}
    return await _send(api, where, "PUT", body, params={"fieldManager": FIELD_MANAGER})


async def apply_fields(
    api: kr8s.asyncio.Api, manifest: dict, field_manager: str, *, dry_run: bool = False
) -> dict:
    """Apply a partial object under another field manager, without force; return the result.

    That manager then owns exactly these fields: applying it again with fewer fields
    removes the rest from the object, and our own full applies never touch them.
    A field some other manager set to a different value is a conflict (409), not
    an overwrite.
    """
    where = await locate(api, manifest)
    _, answer = await _server_side_apply(api, where, manifest, dry_run, field_manager, force=False)
    return answer


def managed_by(raw: dict, field_manager: str) -> bool:
    """Whether `field_manager` owns any field of the object (from metadata.managedFields)."""
    return any(
        entry.get("manager") == field_manager and entry.get("fieldsV1")
        for entry in raw.get("metadata", {}).get("managedFields") or []
    )


async def apply_manifests(
    api: kr8s.asyncio.Api,
    manifests: Sequence[dict],
    dry_run: bool = False,
    versions: Versions | None = None,
    failpoint: str = "applied-stage",
) -> list[Change]:
    """Apply stage by stage; the objects inside a stage are independent and go at once.

    After each stage, the failpoint `<failpoint>-<stage>` (0 namespaces, 1 most, 2
    workloads), which the workloads reach also when they are applied on their own.
    """
    changes: list[Change] = []
    progress.tally("objects applied", planned=map(version_key, manifests))
    for stage in stages(manifests):
        for group in _claims_alone_first(stage):
            changes += await asyncio.gather(
                *(apply_object(api, m, dry_run, versions) for m in group)
            )
        progress.tally("objects applied", done=map(version_key, stage))
        if not dry_run:
            failpoints.reached(f"{failpoint}-{stage_of(stage[0])}")
    return changes


async def delete_object(api: kr8s.asyncio.Api, manifest: dict, timeout: float) -> Change:
    """Delete and wait until it is gone, so an immediate re-provision does not collide.

    A ``metadata.uid`` in the manifest is a precondition: the object is deleted only
    if it is still the one that was read, not one someone made since under that name.
    """
    where = await locate(api, manifest)
    options: dict[str, Any] = {"propagationPolicy": "Foreground"}
    if uid := manifest["metadata"].get("uid"):
        options["preconditions"] = {"uid": uid}
    try:
        await _send(api, where, "DELETE", options)
    except kr8s.ServerError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 404:
            return Change(where.kind, where.name, where.namespace, "absent")
        if status == 409:
            action = "left alone: someone made a new object of that name meanwhile"
            return Change(where.kind, where.name, where.namespace, action)
        raise
    await asyncio.wait_for(wait_deleted(await object_for(api, manifest)), timeout)
    return Change(where.kind, where.name, where.namespace, "deleted")


async def delete_manifests(
    api: kr8s.asyncio.Api, manifests: Sequence[dict], timeout: float = 180
) -> list[Change]:
    """Delete in reverse apply order, each stage at once."""
    changes: list[Change] = []
    for stage in reversed(stages(manifests)):
        changes += await asyncio.gather(*(delete_object(api, m, timeout) for m in stage))
    return changes


def summarize(changes: Iterable[Change]) -> str:
    return "\n".join(f"  {change}" for change in changes)


def condition_is(condition: str, status: str = "True") -> Callable[[dict], bool]:
    """A predicate on an object's status.conditions, e.g. condition_is("Ready")."""

    def check(raw: dict) -> bool:
        conditions = (raw.get("status") or {}).get("conditions") or []
        return any(c.get("type") == condition and c.get("status") == status for c in conditions)

    return check


def field_is(path: str, expected: object) -> Callable[[dict], bool]:
    """A predicate on a dotted path (list indexes as numbers), absent counting as unequal."""

    def check(raw: dict) -> bool:
        value: Any = raw
        for part in path.split("."):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return False
        return value == expected

    return check


async def wait_until(
    obj: APIObject, predicate: Callable[[dict], bool], window: float = WATCH_WINDOW
) -> None:
    """Watch the object until `predicate(raw)` holds; bound it with a timeout outside.

    kr8s's own wait() raises on objects whose status is not filled in yet, which
    is exactly when one waits on them.
    """
    while True:
        await obj.refresh()
        if predicate(obj.raw):
            return
        if await _watch_for(obj, window, lambda _event: predicate(obj.raw)):
            return


async def _watch_for(obj: APIObject, window: float, done: Callable[[str], bool]) -> bool:
    """Watch for at most `window` seconds: True once `done(event)` holds, else False."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(window), contextlib.aclosing(_events(obj)) as events:
            async for event in events:
                if done(event):
                    return True
    return False


async def _events(obj: APIObject) -> AsyncIterator[str]:
    """The object's watch events, keeping `obj.raw` current: kr8s's `obj.async_watch()`,
    but by class, which spares kr8s's API discovery."""
    assert obj.api is not None
    async for event, seen in obj.api.async_watch(
        type(obj),  # type: ignore[arg-type]  # kr8s takes a class as well as a name
        namespace=obj.namespace,
        field_selector=f"metadata.name={obj.name}",
        since=obj.metadata.get("resourceVersion"),
    ):
        obj.raw = seen.raw
        yield event


async def get_all(api: kr8s.asyncio.Api, kind: str, *names: str, **selectors: Any) -> list:
    """kr8s's get as a list; a named object that does not exist gives an empty list."""
    try:
        known: str | type[APIObject] = get_class(kind)
    except KeyError:
        known = kind  # kr8s finds it by API discovery
    try:
        return [obj async for obj in api.async_get(known, *names, **selectors)]
    except kr8s.NotFoundError:
        return []


async def running_pods(api: kr8s.asyncio.Api, namespace: str, label_selector: str) -> list:
    """The pods that run and are not being deleted: the ones to exec in, measure or count."""
    pods = await get_all(
        api,
        "pods",
        namespace=namespace,
        label_selector=label_selector,
        field_selector="status.phase=Running",
    )
    return [pod for pod in pods if not pod.raw["metadata"].get("deletionTimestamp")]


async def events_about(
    api: kr8s.asyncio.Api, namespace: str, name: str, kind: str | None = None
) -> list[dict]:
    """The events recorded about one object: what a waiting task shows when it gives up."""
    selector = f"involvedObject.name={name}"
    if kind:
        selector = f"involvedObject.kind={kind},{selector}"
    events = await get_all(api, "events", namespace=namespace, field_selector=selector)
    return [event.raw for event in events]


def rolled_out(raw: dict) -> bool:
    """Every replica updated to the current spec and available: what `rollout status` checks.

    The Available condition alone can still be true of the previous pods.
    """
    spec, status = raw.get("spec", {}), raw.get("status") or {}
    wanted = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= raw["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


async def wait_deleted(obj: APIObject, window: float = WATCH_WINDOW) -> None:
    """Watch until the object is gone; bound it with a timeout outside.

    The watch starts at the resourceVersion just read, so a deletion that lands
    in between is still seen.
    """
    while True:
        try:
            await obj.refresh()
        except kr8s.NotFoundError:
            return
        if await _watch_for(obj, window, lambda event: event == "DELETED"):
            return
