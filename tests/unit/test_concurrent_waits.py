"""all_of: independent waits overlap, and the first failure ends the others."""

from __future__ import annotations

import asyncio

import pytest

from registry_provisioner.errors import ReadinessTimeout
from registry_provisioner.waiting import all_of


async def test_waits_overlap_and_all_finish() -> None:
    started: list[str] = []
    both_started = asyncio.Event()

    async def wait(name: str) -> None:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await both_started.wait()  # only returns if the other one runs meanwhile

    await asyncio.wait_for(all_of(wait("a"), wait("b")), 5)
    assert sorted(started) == ["a", "b"]


async def test_the_first_failure_is_raised_as_is_and_the_other_wait_is_stopped() -> None:
    other_stopped = asyncio.Event()

    async def fails() -> None:
        raise ReadinessTimeout("the registry to answer", 1.0, "no answer")

    async def never_ends() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            other_stopped.set()
            raise

    with pytest.raises(ReadinessTimeout):
        await asyncio.wait_for(all_of(never_ends(), fails()), 5)
    assert other_stopped.is_set()
