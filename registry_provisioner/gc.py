"""Garbage collection: delete untagged manifests and the blobs nothing references.

Deleting a tag or a manifest frees no space; distribution's offline
``registry garbage-collect`` does, by marking every blob a manifest references
and sweeping the rest. A push during the sweep could lose a blob it had just
uploaded (unmarked, so swept) and leave a tag pointing at nothing. So the
registry is switched read-only first (see maintenance.py), is seen to refuse
pushes before anything is deleted, and is switched back however the run ends.
Every tag is then checked to still resolve to blobs that all exist.

With several replicas every one of them turns read-only (the Deployment's pods all
roll) and the collection runs once, in one of them. On S3 storage sizes are not
measured (`du` sees no bucket). A shared redis cache is emptied of distribution's
keys before the check: garbage-collect does not touch it, so every replica would
still "know" the blobs just deleted (an open distribution issue).

``dry_run`` only reports: it leaves the registry writable and nothing restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import httpx
import httpx_ws
import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import Pod

from . import failpoints, kube, lease, maintenance, render
from .config import Settings
from .credentials import required_credentials, write_client_ca
from .errors import ProvisionError, RegistryError
from .oci_client import IMAGE_MANIFEST_TYPES, RegistryClient
from .progress import step
from .references import split_digest
from .smoke import human_size
from .waiting import READY_TIMEOUT, diagnose_pods, poll, wait_for

if TYPE_CHECKING:
    from kr8s._exec import CompletedExec  # what Pod.exec returns

# storage.filesystem.rootdirectory in _distribution-config.yml.j2, the volume's mountPath.
STORAGE_ROOT = "/var/lib/registry"
CONFIG_FILE = "/etc/distribution/config.yml"
# garbage-collect fails on storage without both (before the first completed push).
REPOSITORIES = f"{STORAGE_ROOT}/docker/registry/v2/repositories"
BLOBS = f"{STORAGE_ROOT}/docker/registry/v2/blobs"
# Empty manifests are pushed here to see if pushes are refused; none is ever stored.
PROBE_REPOSITORY = "registry-provisioner/push-probe"
GC_TIMEOUT = 3600.0
DU_TIMEOUT = 300.0
# Paths per `du` exec when sizing the blobs a dry run would delete.
_DU_BATCH = 200

_SUMMARY = re.compile(
    r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion$", re.MULTILINE
)
_ELIGIBLE_BLOB = re.compile(r"^blob eligible for deletion: (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection did (or, in a dry run, would do)."""

    dry_run: bool
    blobs_kept: int
    blobs_deleted: int
    manifests_deleted: int
    used_before: int  # bytes on the volume, from `du`
    used_after: int
    # Measured (used_before - used_after); in a dry run, the size of the blobs that would go.
    reclaimed: int
    read_only_seconds: float = 0.0
    tags_checked: int = 0
    repositories_checked: int = 0
    nothing_pushed: bool = False  # an empty registry: nothing was run, nothing restarted


class GcOutcome(NamedTuple):
    """The counts `registry garbage-collect` prints, and the blobs it names."""

    blobs_marked: int
    blobs_eligible: int
    manifests_eligible: int
    eligible_blobs: tuple[str, ...]


def garbage_collect_argv(dry_run: bool) -> list[str]:
    """The command run in the registry container (the same binary, config and volume)."""
    return [
        "registry",
        "garbage-collect",
        "--delete-untagged",
        *(["--dry-run"] if dry_run else []),
        CONFIG_FILE,
    ]


def parse_gc_output(text: str) -> GcOutcome:
    """The summary line must be there: without it the run did not reach the sweep."""
    match = _SUMMARY.search(text)
    if match is None:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ProvisionError(
            f"registry garbage-collect printed no summary; its output ended:\n{tail}"
        )
    marked, blobs, manifests = (int(n) for n in match.groups())
    return GcOutcome(marked, blobs, manifests, tuple(_ELIGIBLE_BLOB.findall(text)))


def parse_du_kib(text: str) -> int:
    """Bytes from `du -sk PATH` or the total line of `du -ck PATHS...` (the last line)."""
    lines = text.strip().splitlines()
    try:
        return int(lines[-1].split()[0]) * 1024
    except (IndexError, ValueError):
        raise ProvisionError(f"cannot read a size from du's output: {text.strip()!r}") from None


def blob_dir(digest: str) -> str:
    """Where the filesystem driver keeps a blob, as distribution lays it out."""
    try:
        algorithm, hex_ = split_digest(digest)
    except ValueError:
        raise ProvisionError(f"registry garbage-collect named an odd digest: {digest!r}") from None
    return f"{STORAGE_ROOT}/docker/registry/v2/blobs/{algorithm}/{hex_[:2]}/{hex_}"


async def _registry_pod(api: kr8s.asyncio.Api, settings: Settings, *, read_only: bool) -> Pod:
    """A running registry pod to exec in; when collecting, one that is read-only."""
    selector = render.component_selector(settings, "registry")
    for pod in await kube.running_pods(api, settings.namespace, selector):
        if read_only and not maintenance.pod_is_read_only(pod.raw):
            continue
        return pod
    state = "read-only " if read_only else ""
    raise ProvisionError(
        f"no running {state}registry pod in namespace {settings.namespace} "
        f"(selector {render.component_selector(settings, 'registry')})"
    )


async def _exec(pod: Pod, command: list[str], timeout: float) -> CompletedExec:
    """Exec in the registry container; a broken or endless exec becomes a ProvisionError."""
    shown = " ".join(command[:3])
    try:
        return await asyncio.wait_for(
            pod.exec(command, container=maintenance.CONTAINER, check=False), timeout
        )
    except TimeoutError:
        raise ProvisionError(f"`{shown}` in pod {pod.name} took over {timeout:g}s") from None
    except (
        kr8s.ExecError,
        kr8s.ConnectionClosedError,
        httpx_ws.HTTPXWSException,
        httpx.HTTPError,
    ) as error:
        raise ProvisionError(
            f"`{shown}` in pod {pod.name} broke off: {type(error).__name__}: {error} "
            "(was the pod restarted, e.g. by `invoke provision`?)"
        ) from error


async def _run_in(pod: Pod, command: list[str], timeout: float) -> str:
    """Its stdout; a non-zero exit is an error that quotes the end of stderr."""
    result = await _exec(pod, command, timeout)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.decode(errors="replace").strip().splitlines()[-10:])
        raise ProvisionError(
            f"`{' '.join(command[:3])}` in pod {pod.name} exited with status"
            f" {result.returncode}:\n{tail}"
        )
    return result.stdout.decode(errors="replace")


async def _anything_pushed(api: kr8s.asyncio.Api, settings: Settings, pod: Pod) -> bool:
    """garbage-collect fails on storage that never held a blob; skip it there.

    A bucket cannot be looked into from the pod, so on S3 the registry's catalog says.
    """
    if not settings.storage.on_claim:
        with tempfile.TemporaryDirectory(prefix="registry-gc-") as ca_dir:
            async with await _client(api, settings, Path(ca_dir)) as client:
                return bool(await client.catalog())
    result = await _exec(pod, ["test", "-d", REPOSITORIES, "-a", "-d", BLOBS], DU_TIMEOUT)
    return result.returncode == 0


async def _used(pod: Pod, settings: Settings) -> int:
    """Bytes on the volume; 0 on S3, where they are not measured."""
    if not settings.storage.on_claim:
        return 0
    with step(f"measuring the storage used in pod {pod.name}", every=30):
        return parse_du_kib(await _run_in(pod, ["du", "-sk", STORAGE_ROOT], DU_TIMEOUT))


async def _size_of(pod: Pod, settings: Settings, digests: tuple[str, ...]) -> int:
    """What the named blobs take on disk; blobs gone meanwhile count as nothing."""
    if not settings.storage.on_claim:
        return 0
    total = 0
    for start in range(0, len(digests), _DU_BATCH):
        paths = [blob_dir(d) for d in digests[start : start + _DU_BATCH]]
        output = (await _exec(pod, ["du", "-ck", *paths], DU_TIMEOUT)).stdout.decode()
        total += parse_du_kib(output) if output.strip() else 0
    return total


async def _collect(pod: Pod, dry_run: bool, timeout: float) -> GcOutcome:
    what = " ".join(garbage_collect_argv(dry_run)[:-1])
    with step(f"running `{what}` in pod {pod.name} (up to {timeout:.0f}s)", every=30):
        return parse_gc_output(await _run_in(pod, garbage_collect_argv(dry_run), timeout))


# --------------------------------------------------------------- the redis cache

# distribution's blob-descriptor keys (registry/storage/cache/redis); nothing else in
# the database is touched, so a redis shared with other users keeps their keys.
CACHE_KEY_PATTERNS = ("blobs::*", "repository::*::blobs*")
_FORGET_SCRIPT = (
    "local n = 0 "
    "for _, pattern in ipairs(ARGV) do "
    "for _, key in ipairs(redis.call('KEYS', pattern)) do "
    "n = n + redis.call('DEL', key) end end "
    "return n"
)
# Speaks RESP through busybox nc from the registry container, whose environment
# already holds the password: it never appears on a command line.
_REDIS_CALL = r"""set -eu
resp() { printf '*%d\r\n' "$#"; for a in "$@"; do printf '$%d\r\n%s\r\n' "${#a}" "$a"; done; }
db="$1" script="$2" host="$3" port="$4"
shift 4
{
  if [ -n "${REGISTRY_REDIS_PASSWORD:-}" ]; then resp AUTH "$REGISTRY_REDIS_PASSWORD"; fi
  resp SELECT "$db"
  resp EVAL "$script" 0 "$@"
  resp QUIT
} | nc -w 10 "$host" "$port"
"""


def forget_cache_argv(settings: Settings) -> list[str]:
    """The command that deletes distribution's cache keys from the shared redis."""
    host, _, port = settings.redis.address.rpartition(":")
    return [
        "sh",
        "-c",
        _REDIS_CALL,
        "forget-cache",
        str(settings.redis.db),
        _FORGET_SCRIPT,
        host.strip("[]"),
        port,
        *CACHE_KEY_PATTERNS,
    ]


def parse_forget_reply(text: str) -> int:
    """The number of keys deleted, from redis's replies; an error reply is an error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("-")]
    counts = [int(line[1:]) for line in lines if line.startswith(":")]
    if errors or len(counts) != 1:
        raise ProvisionError(
            f"emptying the redis cache failed: {'; '.join(errors) or 'no reply from redis'}"
        )
    return counts[0]


async def _forget_cache(pod: Pod, settings: Settings) -> int:
    """Delete distribution's cache keys from the shared redis; 0 when there is none."""
    if not settings.redis.address:
        return 0
    with step(f"emptying distribution's cache in redis {settings.redis.address}"):
        return parse_forget_reply(await _run_in(pod, forget_cache_argv(settings), DU_TIMEOUT))


# -------------------------------------------------------------- read-only window


async def _client(api: kr8s.asyncio.Api, settings: Settings, ca_dir: Path) -> RegistryClient:
    """A client through the LoadBalancer IP: what every pushing client sees."""
    credentials = await required_credentials(api, settings)
    ca_file = await write_client_ca(api, settings, ca_dir)
    return RegistryClient(
        settings.registry_url, credentials.username, credentials.password, ca_file, timeout=10
    )


def _answers(client: RegistryClient, accepting: bool) -> Callable[[], Awaitable[bool]]:
    """A check for poll(): does the registry now accept (or refuse) pushes?

    No answer (pods restarting, endpoints moving) counts as not yet.
    """

    async def check() -> bool:
        try:
            return await client.accepts_pushes(PROBE_REPOSITORY) == accepting
        except RegistryError as error:
            if error.status is None or error.status >= 500:
                return False
            raise

    return check


async def _roll_out(api: kr8s.asyncio.Api, settings: Settings, deployment, state: str) -> None:
    await wait_for(
        f"Deployment {settings.name} to roll out {state}",
        lambda: kube.wait_until(deployment, kube.rolled_out),
        READY_TIMEOUT,
        lambda: diagnose_pods(
            api, settings.namespace, render.component_selector(settings, "registry")
        ),
    )


@contextlib.asynccontextmanager
async def read_only(
    api: kr8s.asyncio.Api, settings: Settings, client: RegistryClient
) -> AsyncIterator[None]:
    """The registry refuses pushes inside the block and accepts them again after it.

    Writability comes back also when the block fails or is interrupted; if even
    that fails, the error says so (`invoke provision` restores it too).
    """
    deployment = await maintenance.deployment_of(api, settings)
    if deployment is None:
        raise ProvisionError(
            f"no Deployment {settings.name} in namespace {settings.namespace}: "
            "run `invoke provision` first"
        )
    url = settings.registry_url
    since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    failure: BaseException | None = None
    try:
        await maintenance.enter_read_only(api, settings, f"garbage collection since {since}")
        await _roll_out(api, settings, deployment, "read-only")
        await wait_for(
            f"the registry on {url} to refuse pushes",
            lambda: poll(_answers(client, accepting=False)),
            READY_TIMEOUT,
        )
        yield
    except BaseException as error:
        failure = error
        raise
    finally:
        try:
            await maintenance.leave_read_only(api, settings)
            await _roll_out(api, settings, deployment, "writable again")
            await wait_for(
                f"the registry on {url} to accept pushes again",
                lambda: poll(_answers(client, accepting=True)),
                READY_TIMEOUT,
            )
        except (ProvisionError, kr8s.ServerError, httpx.HTTPError, OSError) as error:
            also = f"; before that, the run failed: {failure}" if failure else ""
            raise ProvisionError(
                f"the registry may still be read-only: {error}{also}. "
                "`invoke provision` makes it writable again"
            ) from error


# -------------------------------------------------------------------- the check


async def missing_content(client: RegistryClient, repo: str, ref: str) -> list[str]:
    """What the manifest `ref` references that the registry does not have (any more)."""
    try:
        manifest = await client.get_manifest(repo, ref)
    except RegistryError as error:
        if error.status == 404:
            return [f"{repo}@{ref} (manifest)"]
        raise
    document = json.loads(manifest.data)
    missing: list[str] = []
    if manifest.media_type in IMAGE_MANIFEST_TYPES:
        for descriptor in [document["config"], *document.get("layers", [])]:
            if not await client.blob_exists(repo, descriptor["digest"]):
                missing.append(f"{repo}@{descriptor['digest']} (blob of {ref})")
    for child in document.get("manifests", []):
        missing += await missing_content(client, repo, child["digest"])
    return missing


async def check_tags(client: RegistryClient) -> tuple[int, int]:
    """Every tag still resolves and every blob it needs exists; (repositories, tags)."""
    repositories = await client.catalog()
    tags = 0
    missing: list[str] = []
    for repo in repositories:
        try:
            repo_tags = await client.list_tags(repo)
        except RegistryError as error:
            if error.status != 404:
                raise
            repo_tags = []  # every manifest of the repository was deleted
        for tag in repo_tags:
            tags += 1
            missing += await missing_content(client, repo, tag)
    if missing:
        raise ProvisionError(
            "after garbage collection, tagged images miss content: " + ", ".join(missing[:10])
        )
    return len(repositories), tags


# --------------------------------------------------------------------- the run


async def garbage_collect(
    api: kr8s.asyncio.Api, settings: Settings, *, dry_run: bool = False, timeout: float = GC_TIMEOUT
) -> GcReport:
    """Delete untagged manifests and unreferenced blobs with the registry read-only.

    The run holds the maintenance Lease throughout: a second gc, or a provision that
    would restart the registry, is refused while it lasts.
    """
    if dry_run:
        pod = await _registry_pod(api, settings, read_only=False)
        if not await _anything_pushed(api, settings, pod):
            return _report(_NOTHING, dry_run=True, before=0, after=0, reclaimed=0, nothing=True)
        return await _size_up(pod, settings, timeout)
    async with lease.held(api, settings, "invoke gc"):
        pod = await _registry_pod(api, settings, read_only=False)
        if await _anything_pushed(api, settings, pod):
            return await _collect_while_read_only(api, settings, timeout)
        await _writable_again(api, settings)
        return _report(_NOTHING, dry_run=False, before=0, after=0, reclaimed=0, nothing=True)


async def _writable_again(api: kr8s.asyncio.Api, settings: Settings) -> None:
    """Undo the read-only mode a killed run left (its Lease expired, ours now)."""
    deployment = await maintenance.deployment_of(api, settings)
    if deployment is not None and await maintenance.leave_read_only(api, settings):
        await _roll_out(api, settings, deployment, "writable again")


async def _size_up(pod: Pod, settings: Settings, timeout: float) -> GcReport:
    """What a run would delete and about how much space that frees; the registry stays writable."""
    used = await _used(pod, settings)
    outcome = await _collect(pod, dry_run=True, timeout=timeout)
    with step(f"sizing the {len(outcome.eligible_blobs)} blobs that would be deleted"):
        reclaimable = await _size_of(pod, settings, outcome.eligible_blobs)
    return _report(outcome, dry_run=True, before=used, after=used, reclaimed=reclaimable)


async def _collect_while_read_only(
    api: kr8s.asyncio.Api, settings: Settings, timeout: float
) -> GcReport:
    """Collect, measure and check every tag inside the read-only window."""
    with tempfile.TemporaryDirectory(prefix="registry-gc-") as ca_dir:
        async with await _client(api, settings, Path(ca_dir)) as client:
            started = time.monotonic()
            async with read_only(api, settings, client):
                pod = await _registry_pod(api, settings, read_only=True)
                await failpoints.pause("gc-read-only")
                before = await _used(pod, settings)
                outcome = await _collect(pod, dry_run=False, timeout=timeout)
                after = await _used(pod, settings)
                # Before the check, which would otherwise be answered from the cache.
                await _forget_cache(pod, settings)
                with step("checking that every tag resolves to blobs that all exist"):
                    checked = await check_tags(client)
            read_only_seconds = time.monotonic() - started
    return _report(
        outcome,
        dry_run=False,
        before=before,
        after=after,
        reclaimed=max(0, before - after),
        read_only_seconds=read_only_seconds,
        checked=checked,
    )


_NOTHING = GcOutcome(0, 0, 0, ())


def _report(
    outcome: GcOutcome,
    *,
    dry_run: bool,
    before: int,
    after: int,
    reclaimed: int,
    read_only_seconds: float = 0.0,
    checked: tuple[int, int] = (0, 0),
    nothing: bool = False,
) -> GcReport:
    """The one place a report is made: garbage-collect's counts beside what was measured."""
    repositories, tags = checked
    return GcReport(
        dry_run=dry_run,
        blobs_kept=outcome.blobs_marked,
        blobs_deleted=outcome.blobs_eligible,
        manifests_deleted=outcome.manifests_eligible,
        used_before=before,
        used_after=after,
        reclaimed=reclaimed,
        read_only_seconds=read_only_seconds,
        tags_checked=tags,
        repositories_checked=repositories,
        nothing_pushed=nothing,
    )


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def format_report(settings: Settings, report: GcReport) -> str:
    """A few lines for humans; the progress lines went to stderr already."""
    blobs = _count(report.blobs_deleted, "unreferenced blob")
    manifests = _count(report.manifests_deleted, "untagged manifest")
    kept = _count(report.blobs_kept, "blob")
    before, after = human_size(report.used_before), human_size(report.used_after)
    if not settings.storage.on_claim:
        return _format_s3_report(settings, report, blobs, manifests, kept)
    if report.nothing_pushed:
        return "nothing to collect: no image was ever pushed to this registry"
    if report.dry_run:
        return "\n".join(
            [
                "dry run: nothing was deleted and the registry stayed writable",
                f"  would delete {blobs} (at least {human_size(report.reclaimed)}) and {manifests};"
                f" {kept} in use",
                f"  storage used: {before} of {settings.storage.size}",
            ]
        )
    tags = _count(report.tags_checked, "tag")
    repositories = _count(report.repositories_checked, "repository", "repositories")
    return "\n".join(
        [
            f"garbage collection done: {human_size(report.reclaimed)} reclaimed"
            f" ({report.reclaimed} bytes)",
            f"  storage used: {before} -> {after} of {settings.storage.size}",
            f"  deleted {blobs} and {manifests}; kept {kept} in use",
            f"  checked {tags} in {repositories}: every blob they reference is there",
            f"  read-only for {report.read_only_seconds:.1f}s; the registry accepts pushes again",
        ]
    )


def mirrors_note(settings: Settings) -> str | None:
    """Why gc leaves the mirrors alone: their proxy expires what it cached by itself."""
    if not settings.mirrors:
        return None
    ttls = ", ".join(f"{m.host} {m.ttl}" for m in settings.mirrors)
    return (
        "mirrors: not collected, none needed: each mirror deletes a cached blob, data "
        f"included, once its ttl has passed since it was fetched ({ttls}), and nothing is "
        "ever pushed to a mirror"
    )


def _format_s3_report(
    settings: Settings, report: GcReport, blobs: str, manifests: str, kept: str
) -> str:
    """As format_report, without sizes: a bucket's usage is not measured from the pod."""
    bucket = f"S3 bucket {settings.storage.s3.bucket} (sizes not measured)"
    if report.nothing_pushed:
        return "nothing to collect: no image was ever pushed to this registry"
    if report.dry_run:
        return "\n".join(
            [
                "dry run: nothing was deleted and the registry stayed writable",
                f"  would delete {blobs} and {manifests}; {kept} in use, in {bucket}",
            ]
        )
    tags = _count(report.tags_checked, "tag")
    repositories = _count(report.repositories_checked, "repository", "repositories")
    return "\n".join(
        [
            f"garbage collection done in {bucket}",
            f"  deleted {blobs} and {manifests}; kept {kept} in use",
            f"  checked {tags} in {repositories}: every blob they reference is there",
            f"  read-only for {report.read_only_seconds:.1f}s; the registry accepts pushes again",
        ]
    )
