"""One coroutine per task: connect, run the step, print the outcome.

tasks.py stays a thin shell over these; each task calls asyncio.run once.
"""

from __future__ import annotations

from pathlib import Path

import kr8s.asyncio

from . import gc, kube, provision, render, status, unprovision
from .config import Settings
from .credentials import required_credentials, write_client_ca
from .smoke import format_report, smoke_test


async def _reachable_api(context: str | None, kubeconfig: str | None) -> kr8s.asyncio.Api:
    """A client whose API server has answered, for the tasks without a preflight of their own."""
    api = await kube.connect(context, kubeconfig)
    await kube.check_reachable(api)
    return api


async def provision_command(
    settings: Settings,
    context: str | None,
    kubeconfig: str | None,
    *,
    dry_run: bool,
    rotate_password: bool,
    adopt: bool,
    rotate_pull_password: bool = False,
    ca_dir: Path,
    timeout: float = provision.READY_TIMEOUT,
) -> None:
    api = await kube.connect(context, kubeconfig)
    result = await provision.provision(
        api,
        settings,
        dry_run=dry_run,
        rotate_password=rotate_password,
        rotate_pull_password=rotate_pull_password,
        adopt=adopt,
        ca_dir=ca_dir,
        timeout=timeout,
    )
    print(kube.summarize(result.changes))
    if dry_run:
        verdict = "would change" if result.changed else "no changes"
        print(f"dry run (server-side), nothing was changed: {verdict}")
        return
    print(provision.summary(settings, result))


async def unprovision_command(
    settings: Settings, context: str | None, kubeconfig: str | None, *, purge: bool
) -> None:
    api = await _reachable_api(context, kubeconfig)
    changes = await unprovision.unprovision(api, settings, purge=purge)
    present = [c for c in changes if c.action != "absent"]
    if all(change.action == unprovision.LEFT_FOREIGN for change in present):
        print(f"nothing to remove: no registry is installed in namespace {settings.namespace}")
    if present:
        print(kube.summarize(present))
    if all(change.action == unprovision.LEFT_FOREIGN for change in present):
        return
    if purge:
        kept_namespace = any(c.action == unprovision.LEFT_NAMESPACE for c in changes)
        stored = (
            "the stored images are gone"
            if settings.storage.on_claim
            else f"the images in S3 bucket {settings.storage.s3.bucket} are as listed above"
        )
        print(
            f"purged: every object of this install is gone and {stored}"
            + (
                f"; namespace {settings.namespace} stays, as it existed before"
                if kept_namespace
                else ", the namespace too"
            )
        )
    else:
        data = (
            f"PersistentVolumeClaim {settings.storage.claim_name}"
            if settings.storage.on_claim
            else f"S3 bucket {settings.storage.s3.bucket}, which is never deleted"
        )
        print(
            f"registry removed; kept its data ({data})"
            f", login (Secret {settings.auth.secret_name}) and certificate in namespace"
            f" {settings.namespace}."
            " Provision again to bring it back as it was; add --purge to delete everything."
        )


async def smoke_test_command(
    settings: Settings, context: str | None, kubeconfig: str | None, ca_dir: Path
) -> None:
    api = await kube.connect(context, kubeconfig)
    credentials = await required_credentials(api, settings)
    ca_file = await write_client_ca(api, settings, ca_dir)
    report = await smoke_test(
        settings.registry_url, credentials.username, credentials.password, ca_file
    )
    print(format_report(report))


async def gc_command(
    settings: Settings, context: str | None, kubeconfig: str | None, *, dry_run: bool
) -> None:
    api = await _reachable_api(context, kubeconfig)
    report = await gc.garbage_collect(api, settings, dry_run=dry_run)
    print(gc.format_report(settings, report))
    note = gc.mirrors_note(settings)
    if note:
        print(note)


async def status_command(settings: Settings, context: str | None, kubeconfig: str | None) -> None:
    api = await _reachable_api(context, kubeconfig)
    for line in await status.status_lines(api, settings):
        print(line)


def render_command(settings: Settings) -> None:
    print(render.manifests_yaml(render.render_manifests(settings, None)), end="")
