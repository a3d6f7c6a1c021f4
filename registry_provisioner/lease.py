"""One maintenance run at a time: a Kubernetes Lease held for the whole of it.

`invoke gc` holds the Lease while the registry is read-only. A second gc, or a
provision that would change the Deployment, sees a live holder and refuses with
its name. The holder renews the Lease while it works; a run killed outright
stops renewing, the Lease expires, and the next provision or gc takes over and
makes the registry writable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import kr8s
import kr8s.asyncio

from . import kube
from .config import Settings
from .errors import ProvisionError

LEASE_SECONDS = 30
RENEW_EVERY = 10.0


class MaintenanceBusy(ProvisionError):
    """A live maintenance Lease is held by someone else."""


def lease_name(settings: Settings) -> str:
    return f"{settings.name}-maintenance"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(moment: dt.datetime) -> str:
    """MicroTime, the format Lease times are written in."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Holder:
    identity: str
    expires: dt.datetime

    def live(self, now: dt.datetime | None = None) -> bool:
        return self.expires > (now or _now())

    def __str__(self) -> str:
        return f"{self.identity} (lease until {self.expires:%H:%M:%S} UTC)"


def holder_of(raw: dict) -> Holder | None:
    """Who holds the Lease and until when; None for a Lease without a holder."""
    spec = raw.get("spec") or {}
    identity = spec.get("holderIdentity")
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not identity or not renewed:
        return None
    expires = _parse(renewed) + dt.timedelta(seconds=spec.get("leaseDurationSeconds", 0))
    return Holder(identity, expires)


def _lease(settings: Settings, identity: str, resource_version: str | None = None) -> dict:
    now = _micro(_now())
    metadata: dict = {"name": lease_name(settings), "namespace": settings.namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": now,
            "renewTime": now,
        },
    }


async def _call(api: kr8s.asyncio.Api, method: str, settings: Settings, body: dict | None = None):
    url = "leases" if method == "POST" else f"leases/{lease_name(settings)}"
    async with api.call_api(
        method,
        version="coordination.k8s.io/v1",
        url=url,
        namespace=settings.namespace,
        content=json.dumps(body) if body else None,
    ) as response:
        return response.json()


async def current(api: kr8s.asyncio.Api, settings: Settings) -> dict | None:
    """The Lease, or None when there is none (only a 404 means none)."""
    return await kube.read(
        api,
        f"leases/{lease_name(settings)}",
        version="coordination.k8s.io/v1",
        namespace=settings.namespace,
    )


async def live_holder(api: kr8s.asyncio.Api, settings: Settings) -> Holder | None:
    """The holder of a live Lease, or None when nobody holds one."""
    raw = await current(api, settings)
    holder = holder_of(raw) if raw else None
    return holder if holder and holder.live() else None


def _conflict(error: kr8s.ServerError) -> bool:
    return error.response is not None and error.response.status_code == 409


async def acquire(api: kr8s.asyncio.Api, settings: Settings, purpose: str) -> str:
    """Take the Lease, or raise MaintenanceBusy naming its live holder; our identity."""
    identity = f"{purpose} by pid {os.getpid()} on {socket.gethostname()}"
    try:
        await _call(api, "POST", settings, _lease(settings, identity))
        return identity
    except kr8s.ServerError as error:
        if not _conflict(error):
            raise
    raw = await current(api, settings)
    holder = holder_of(raw) if raw else None
    if holder and holder.live():
        raise MaintenanceBusy(
            f"{purpose} cannot start: {holder} holds the registry's maintenance lease "
            f"in namespace {settings.namespace}; wait for it to finish and run this again"
        )
    version = raw["metadata"]["resourceVersion"] if raw else None
    try:  # an expired Lease: take it over, unless another taker was quicker
        await _call(api, "PUT", settings, _lease(settings, identity, version))
    except kr8s.ServerError as error:
        if _conflict(error):
            raise MaintenanceBusy(
                f"{purpose} cannot start: another run took the maintenance lease just now"
            ) from error
        raise
    return identity


async def _renew(api: kr8s.asyncio.Api, settings: Settings, identity: str) -> None:
    """Renew until cancelled; a failed renewal is tried again at the next tick."""
    while True:
        await asyncio.sleep(RENEW_EVERY)
        try:
            raw = await current(api, settings)
            if raw is None or (raw.get("spec") or {}).get("holderIdentity") != identity:
                return  # released, or taken over after we stalled: nothing of ours to renew
            raw["spec"]["renewTime"] = _micro(_now())
            await _call(api, "PUT", settings, raw)
        except (ProvisionError, kr8s.ServerError, httpx.HTTPError, OSError):
            continue


async def release(api: kr8s.asyncio.Api, settings: Settings, identity: str | None = None) -> None:
    """Delete the Lease if `identity` holds it, or (identity None) if it has expired.

    The delete is conditional on the version read, so a Lease someone renewed or
    took over in between is left alone.
    """
    raw = await current(api, settings)
    if raw is None:
        return
    holder = holder_of(raw)
    mine = identity is not None and holder is not None and holder.identity == identity
    expired = identity is None and (holder is None or not holder.live())
    if not (mine or expired):
        return
    options = {"preconditions": {"resourceVersion": raw["metadata"]["resourceVersion"]}}
    try:
        await _call(api, "DELETE", settings, options)
    except kr8s.ServerError as error:
        status = error.response.status_code if error.response is not None else None
        if status not in (404, 409):
            raise


@contextlib.asynccontextmanager
async def held(api: kr8s.asyncio.Api, settings: Settings, purpose: str) -> AsyncIterator[str]:
    """Hold the Lease for the block, renewing it; released however the block ends."""
    identity = await acquire(api, settings, purpose)
    renewer = asyncio.create_task(_renew(api, settings, identity))
    try:
        yield identity
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await release(api, settings, identity)
