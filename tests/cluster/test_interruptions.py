"""Runs cut short: killed after each apply stage or while waiting, Ctrl-C, a gc killed
read-only. Every re-run converges and keeps the credentials; gc is exclusive."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import kr8s.asyncio
import pytest

from registry_provisioner import failpoints, kube, lease, load_settings, maintenance
from registry_provisioner.config import Settings
from registry_provisioner.errors import RegistryError
from registry_provisioner.images import Image, pull_image, push_image, random_image
from registry_provisioner.oci_client import RegistryClient
from tests.cluster.helpers import Started, decoded, until_answers
from tests.support.registries import Registry, RegistryFactory, registry_password

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

AUTH_SECRET = "docker-registry-auth"
WAITING = "==> waiting for"
# Kills while a run waits: for the claim to bind, before the Deployment that mounts it
# goes out; and for the rollout, after every apply, before the registry answers.
KILLED_WAITING_FOR = {
    "waits-claim": f"{WAITING} PersistentVolumeClaim",
    "waits-rollout": f"{WAITING} Deployment",
}
# How long a line of a healthy run may take to come on this (slow, shared) machine.
LINE_TIMEOUT = 600
# Tags pushed before a gc that a push should meet: gc checks each of them read-only.


def _settings(registry: Registry) -> Settings:
    return load_settings(None, registry.overrides)


async def _auth_secret(api: kr8s.asyncio.Api, namespace: str) -> dict | None:
    return await kube.read(api, f"secrets/{AUTH_SECRET}", namespace=namespace)


def _login(secret: dict) -> dict[str, str]:
    """What every client holds: the password, and the http secret upload state is signed with."""
    return {key: decoded(secret, key) for key in ("username", "password", "http-secret")}


def _signal(started: Started, sig: signal.Signals) -> None:
    """Signal our own task by its pid (never by name)."""
    os.kill(started.pid, sig)


async def _converges(api: kr8s.asyncio.Api, registry: Registry) -> dict[str, str]:
    """Provision again without any failpoint: it finishes, and a smoke test passes."""
    rerun = registry.invoke("provision")
    assert rerun.returncode == 0, rerun.stderr
    assert f"registry ready at {registry.url}" in rerun.stdout, rerun.stdout
    smoke = registry.invoke("smoke-test")
    assert smoke.returncode == 0, smoke.stderr
    assert "registry smoke test passed" in smoke.stdout, smoke.stdout
    secret = await _auth_secret(api, registry.namespace)
    assert secret is not None
    return _login(secret)


async def _accepts_old_login(registry: Registry, login: dict[str, str]) -> None:
    """A client that logged in before the kill still pushes and pulls."""
    image = random_image([4 * 1024])
    async with RegistryClient(
        registry.url, login["username"], login["password"], registry.ca_file
    ) as client:
        await asyncio.wait_for(until_answers(client), 120)
        await push_image(client, "interrupted/old-login", "v1", image)
        assert await pull_image(client, "interrupted/old-login", "v1") == image


# --- kill at each stage ---------------------------------------------------------


async def _state_after_kill(api: kr8s.asyncio.Api, namespace: str) -> tuple[bool, bool, bool]:
    """(namespace, auth Secret, Deployment) as the killed run left them: which exist."""
    ns = await kube.read(api, f"namespaces/{namespace}")
    secret = await _auth_secret(api, namespace) if ns else None
    deployment = (
        await kube.read(api, "deployments/docker-registry", version="apps/v1", namespace=namespace)
        if ns
        else None
    )
    return ns is not None, secret is not None, deployment is not None


# What each kill point leaves: stage 0 the Namespace, 1 the Secrets and the rest, 2 the
# workloads; the Deployment waits for the claim to bind.
LEFT_BY = {
    "applied-stage-0": (True, False, False),
    "applied-stage-1": (True, True, False),
    "waits-claim": (True, True, False),
    "applied-stage-2": (True, True, True),
    "waits-rollout": (True, True, True),
}


@pytest.mark.parametrize("kill_point", list(LEFT_BY))
async def test_provision_killed_then_rerun_converges_with_the_same_credentials(
    api: kr8s.asyncio.Api, registries: RegistryFactory, kill_point: str
) -> None:
    registry = await registries(f"killed-{kill_point}", provision=False)
    if kill_point in KILLED_WAITING_FOR:
        prefix = KILLED_WAITING_FOR[kill_point]
        with registry.start("provision") as started:
            await asyncio.to_thread(
                started.wait_for_line, lambda line: line.startswith(prefix), LINE_TIMEOUT
            )
            _signal(started, signal.SIGKILL)
            killed = await asyncio.to_thread(started.finish, 60)
    else:
        killed = registry.invoke("provision", env={failpoints.ENV: kill_point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert "registry ready" not in killed.stdout

    # The kill came exactly where it was meant to: nothing of a later stage exists.
    assert await _state_after_kill(api, registry.namespace) == LEFT_BY[kill_point]
    secret = await _auth_secret(api, registry.namespace)
    before = _login(secret) if secret else None

    after = await _converges(api, registry)
    if before is not None:
        assert after == before, "the re-run replaced credentials the killed run had made"
        await _accepts_old_login(registry, before)

    # The killed run created the namespace, so it is this install's and --purge deletes it.
    purged = registry.purge()
    assert purged.returncode == 0, purged.stderr
    assert "the namespace too" in purged.stdout, purged.stdout


# --- Ctrl-C ---------------------------------------------------------------------


@pytest.fixture
def ctrl_c_reaches_children() -> Iterator[None]:
    """Ctrl-C as a terminal sends it. A job started in the background by a shell without
    job control ignores SIGINT, and its children inherit that: the task would never see it."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


async def test_ctrl_c_says_what_was_left_in_one_line_and_a_rerun_converges(
    api: kr8s.asyncio.Api, registries: RegistryFactory, ctrl_c_reaches_children: None
) -> None:
    registry = await registries("interrupted-ctrl-c", provision=False)
    with registry.start("provision") as started:
        # The claim's bind is a wait of seconds, with the registry's Deployment held back.
        claim_wait = KILLED_WAITING_FOR["waits-claim"]
        await asyncio.to_thread(
            started.wait_for_line, lambda line: line.startswith(claim_wait), LINE_TIMEOUT
        )
        _signal(started, signal.SIGINT)
        interrupted = await asyncio.to_thread(started.finish, 120)

    assert interrupted.returncode == 130, (interrupted.returncode, interrupted.stderr)
    assert "Traceback" not in interrupted.stderr, interrupted.stderr
    last = interrupted.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted"), interrupted.stderr
    assert "running the same command again is safe" in last, last
    assert f"while {claim_wait.removeprefix('==> ')}" in last, last  # where it stopped
    # What it had left behind, the held Deployment among what is still to go.
    counted = re.search(r"(\d+) of (\d+) objects applied", last)
    assert counted is not None, last
    assert 0 < int(counted[1]) < int(counted[2]), last
    assert "registry ready" not in interrupted.stdout

    secret = await _auth_secret(api, registry.namespace)
    assert secret is not None, "Ctrl-C came while waiting, after the Secrets were applied"
    before = _login(secret)
    assert await _converges(api, registry) == before


# --- gc is exclusive ------------------------------------------------------------


async def _with_content(client: RegistryClient) -> tuple[dict[tuple[str, str], Image], Image]:
    """Tagged images, and one manifest left untagged so gc has something to delete."""
    untagged = random_image([24 * 1024])
    kept = {
        ("app/one", "v1"): random_image([32 * 1024, 16 * 1024]),
        ("app/one", "v2"): random_image([16 * 1024]),
        ("app/two", "latest"): random_image([8 * 1024]),
    }
    await push_image(client, "app/one", "v1", untagged)
    for (repo, tag), image in kept.items():
        await push_image(client, repo, tag, image)  # app/one:v1 now leaves `untagged`
    return kept, untagged


async def _every_tag_pulls(client: RegistryClient, kept: dict[tuple[str, str], Image]) -> None:
    """Each tag gives back its image byte for byte; pull_image verifies every digest."""
    for (repo, tag), image in kept.items():
        assert await pull_image(client, repo, tag) == image, f"{repo}:{tag} changed"


def _new_client(registry: Registry, password: str, timeout: float = 10.0) -> RegistryClient:
    """A client without pooled connections.

    A connection kept alive to a pod that a rollout has since removed can hang until its
    timeout; a new one reaches whichever pod serves now.
    """
    return RegistryClient(registry.url, "registry", password, registry.ca_file, timeout=timeout)


def _expiry(raw: dict) -> dt.datetime:
    holder = lease.holder_of(raw)
    assert holder is not None, raw
    return holder.expires


async def _until_expired(api: kr8s.asyncio.Api, settings: Settings, holder: str) -> None:
    """Wait out the killed holder's Lease: its deadline, read again each time.

    Bounded: the Lease lasts LEASE_SECONDS from its last renewal, and nobody renews it.
    """
    bound = time.monotonic() + lease.LEASE_SECONDS + 60
    while True:
        raw = await lease.current(api, settings)
        assert raw is not None, "the killed gc's Lease vanished before it expired"
        assert raw["spec"]["holderIdentity"] == holder, raw["spec"]
        left = (_expiry(raw) - dt.datetime.now(dt.UTC)).total_seconds()
        if left < 0:
            return
        assert time.monotonic() < bound, f"the Lease is still being renewed: {raw['spec']}"
        await asyncio.sleep(min(left, 5.0) + 0.2)  # a deadline, read again after it


def _refusing_pushes(line: str) -> bool:
    """gc has seen the registry refuse pushes: its read-only window has begun."""
    return "done in" in line and "to refuse pushes" in line


@pytest.mark.parametrize("next_run", ["provision", "gc"])
async def test_gc_killed_while_read_only_then_the_next_run_makes_it_writable(
    api: kr8s.asyncio.Api, registries: RegistryFactory, next_run: str
) -> None:
    registry = await registries(f"gc-killed-then-{next_run}")
    settings = _settings(registry)
    password = await registry_password(api, registry.namespace)
    async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
        kept, untagged = await _with_content(client)

        with registry.start("gc") as gc_run:
            await asyncio.to_thread(gc_run.wait_for_line, _refusing_pushes, LINE_TIMEOUT)
            _signal(gc_run, signal.SIGKILL)
            killed = await asyncio.to_thread(gc_run.finish, 60)
        assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)

        # Killed inside the window: read-only, a live Lease in the killed run's name.
        deployment = await maintenance.deployment_of(api, settings)
        assert deployment is not None
        assert maintenance.REASON_ANNOTATION in deployment.annotations
        raw = await lease.current(api, settings)
        assert raw is not None
        holder = raw["spec"]["holderIdentity"]
        assert holder.startswith(f"invoke gc by pid {gc_run.pid} on "), holder

        # While it lives: a second gc, and a provision that would restart the registry,
        # both refuse and name the holder; neither touches the Deployment.
        second = registry.invoke("gc")
        assert dt.datetime.now(dt.UTC) < _expiry(raw), "the Lease expired before gc ran"
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"invoke gc by pid {gc_run.pid} on " in second.stderr, second.stderr
        assert "holds the registry's maintenance lease" in second.stderr, second.stderr
        changing = registry.invoke("provision", "--set", "resources.requests.memory=65Mi")
        assert dt.datetime.now(dt.UTC) < _expiry(raw), "the Lease expired before provision ran"
        assert changing.returncode == 1, changing.stdout + changing.stderr
        assert f"invoke gc by pid {gc_run.pid} on " in changing.stderr, changing.stderr
        assert "would change while" in changing.stderr, changing.stderr
        unchanged = await maintenance.deployment_of(api, settings)
        assert unchanged is not None
        assert unchanged.metadata.resourceVersion == deployment.metadata.resourceVersion
        await asyncio.wait_for(until_answers(client), 120)  # the read-only pod
        with pytest.raises(RegistryError) as refused:
            await push_image(client, "app/during", "v1", random_image([1024]))
        assert refused.value.status == 405

        await _until_expired(api, settings, holder)
        result = registry.invoke(next_run)
        assert result.returncode == 0, result.stderr
        if next_run == "provision":
            assert "made writable again" in result.stdout, result.stdout
        else:
            assert "garbage collection done" in result.stdout, result.stdout
            assert "1 untagged manifest" in result.stdout, result.stdout
        assert await lease.current(api, settings) is None, (
            "the Lease outlived the run that ended it"
        )

        # Writable again, with no trace of the override; nothing was lost.
        await asyncio.wait_for(until_answers(client), 120)
        assert await client.accepts_pushes("interrupted/probe")
        after = random_image([8 * 1024])
        await push_image(client, "app/after", "v1", after)
        kept[("app/after", "v1")] = after
        await _every_tag_pulls(client, kept)
        with pytest.raises(RegistryError) as never_stored:
            await client.get_manifest("app/during", "v1")
        assert never_stored.value.status == 404
        if next_run == "provision":  # the killed gc deleted nothing; provision sweeps nothing
            assert await pull_image(client, "app/one", untagged.digest) == untagged
    deployment = await maintenance.deployment_of(api, settings)
    assert deployment is not None
    assert maintenance.REASON_ANNOTATION not in deployment.annotations
    assert not kube.managed_by(deployment.raw, maintenance.FIELD_MANAGER)


async def test_a_push_during_gc_is_refused_then_accepted_after(
    api: kr8s.asyncio.Api, registries: RegistryFactory, tmp_path: Path
) -> None:
    registry = await registries("gc-push-refused")
    password = await registry_password(api, registry.namespace)
    async with _new_client(registry, password) as client:
        kept, _ = await _with_content(client)
    during = random_image([2 * 1024])
    # gc waits inside its read-only window until the test has pushed: however short
    # the window (the proxy answers a tag check in about a millisecond), no race.
    release = tmp_path / "release-gc"
    os.mkfifo(release, 0o600)
    pause = {failpoints.PAUSE_ENV: f"gc-read-only:{release}"}

    with registry.start("gc", env=pause) as gc_run:
        await asyncio.to_thread(
            gc_run.wait_for_line, lambda line: "paused at gc-read-only" in line, LINE_TIMEOUT
        )
        async with _new_client(registry, password) as client:
            with pytest.raises(RegistryError) as refused:
                await push_image(client, "app/during", "v1", during)
            assert refused.value.status == 405, refused.value
            # Pulls are served meanwhile.
            assert await pull_image(client, "app/two", "latest") == kept[("app/two", "latest")]
        await asyncio.to_thread(release.write_bytes, b"go")
        done = await asyncio.to_thread(gc_run.finish, LINE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "garbage collection done" in done.stdout, done.stdout

    async with _new_client(registry, password) as client:
        with pytest.raises(RegistryError) as never_stored:
            await client.get_manifest("app/during", "v1")
        assert never_stored.value.status == 404
        await push_image(client, "app/during", "v1", during)
        assert await pull_image(client, "app/during", "v1") == during
        await _every_tag_pulls(client, kept)
