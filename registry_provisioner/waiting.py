"""Wait on real readiness, saying what is awaited, and diagnose what never came."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import Pod

from . import kube
from .errors import ReadinessTimeout
from .progress import step

T = TypeVar("T")
U = TypeVar("U")
# How long a rollout, a certificate or the registry's first answer may take.
READY_TIMEOUT = 300.0


async def wait_for(
    what: str,
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    diagnose: Callable[[], Awaitable[str]] | None = None,
) -> T:
    """Run `condition` (which itself waits) with a deadline and a progress heartbeat."""
    with step(f"waiting for {what} (up to {timeout:.0f}s)", every=10):
        try:
            return await asyncio.wait_for(condition(), timeout)
        except TimeoutError:
            diagnosis = await diagnose() if diagnose else ""
            raise ReadinessTimeout(what, timeout, diagnosis) from None


async def poll(check: Callable[[], Awaitable[bool]], interval: float = 0.5) -> None:
    """For conditions with nothing to watch (a socket answering); wrap in wait_for."""
    while not await check():  # noqa: ASYNC110 - the registry has no event to wait on
        await asyncio.sleep(interval)


async def diagnose_pods(api: kr8s.asyncio.Api, namespace: str, selector: str) -> str:
    """Pod phases, waiting reasons, recent events and a log tail: what a human would look at."""
    lines: list[str] = []
    pods = await kube.get_all(api, "pods", namespace=namespace, label_selector=selector)
    if not pods:
        lines.append(f"  no pods match {selector} in {namespace}")
    for pod in pods:
        lines += await _describe_pod(pod)
    events = await kube.get_all(api, "events", namespace=namespace)
    recent = sorted(events, key=lambda e: e.raw.get("lastTimestamp") or "")[-8:]
    lines += ["  recent events:"] + [
        f"    {e.raw.get('type')} {e.raw['involvedObject'].get('kind')}/"
        f"{e.raw['involvedObject'].get('name')}: {e.raw.get('reason')}: {e.raw.get('message')}"
        for e in recent
        if e.raw.get("type") != "Normal"
    ]
    return "\n".join(lines)


async def _describe_pod(pod: Pod) -> list[str]:
    status = pod.raw.get("status", {})
    lines = [f"  pod {pod.name}: {status.get('phase')}"]
    for container in status.get("containerStatuses", []):
        for state, detail in container.get("state", {}).items():
            reason = detail.get("reason", "")
            lines.append(f"    {container['name']}: {state} {reason} {detail.get('message', '')}")
    try:
        tail = [line async for line in pod.logs(tail_lines=10)]
    except (kr8s.ServerError, ValueError):
        tail = []
    lines += [f"    | {line}" for line in tail]
    return lines


async def all_of(*waits: Awaitable[Any]) -> list[Any]:
    """Run independent waits at once and return their results in order; the first failure
    stops the rest and is raised as is."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def alongside(main: Awaitable[T], side: Awaitable[U]) -> tuple[T, U]:
    """Both results, `side` running while `main` does; if `main` fails, its error is the one
    raised and `side` is stopped."""
    task = asyncio.ensure_future(side)
    try:
        first = await main
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    return first, await task


async def first_of(*waits: Awaitable[T]) -> T:
    """Run waits at once; the first to end decides (its result, or its failure raised
    as is), and the rest are stopped."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
