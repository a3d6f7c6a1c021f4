"""all_of and alongside: independent waits overlap, and a failure ends the others."""

from __future__ import annotations

import asyncio

import pytest

from registry_provisioner.errors import ReadinessTimeout
from registry_provisioner.waiting import all_of, alongside, first_of


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


async def test_alongside_overlaps_and_returns_both_results_in_order() -> None:
    side_started = asyncio.Event()

    async def main() -> str:
        await side_started.wait()  # only returns if the side runs meanwhile
        return "main"

    async def side() -> str:
        side_started.set()
        return "side"

    assert await asyncio.wait_for(alongside(main(), side()), 5) == ("main", "side")


async def test_alongside_raises_mains_failure_and_stops_the_side() -> None:
    side_stopped = asyncio.Event()
    side_running = asyncio.Event()

    async def main() -> None:
        await side_running.wait()
        raise ReadinessTimeout("the preflight", 1.0, "refused")

    async def side() -> None:
        side_running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            side_stopped.set()
            raise

    with pytest.raises(ReadinessTimeout):
        await asyncio.wait_for(alongside(main(), side()), 5)
    assert side_stopped.is_set()


async def test_first_of_returns_the_first_to_end_and_stops_the_rest() -> None:
    slow_stopped = asyncio.Event()

    async def quick() -> str:
        return "quick"

    async def slow() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            slow_stopped.set()
            raise
        return "slow"

    assert await asyncio.wait_for(first_of(slow(), quick()), 5) == "quick"
    assert slow_stopped.is_set()


async def test_first_of_raises_the_first_failure_as_is() -> None:
    async def fails() -> str:
        raise ReadinessTimeout("node trust", 1.0, "refused")

    with pytest.raises(ReadinessTimeout):
        await asyncio.wait_for(first_of(fails(), asyncio.Event().wait()), 5)
