"""The scale-out figure's summary: ratios of 3 replicas to 1 within one run."""

from __future__ import annotations

import pytest

from scripts.benchmarks.scale_out import ReplicaCost, Side, summary


def test_ratios_compare_three_replicas_to_one() -> None:
    one = Side(1, 100.0, 200.0, (), (ReplicaCost("a", 0.9, 120.0),))
    three = Side(3, 80.0, 260.0, ("pull x: broke off",), (ReplicaCost("b", 0.4, 90.0),) * 3)
    figures = summary([one, three])
    assert figures["push_ratio_3_vs_1"] == pytest.approx(0.8)
    assert figures["pull_ratio_3_vs_1"] == pytest.approx(1.3)
    assert figures["errors"] == 1
    assert [len(side["cost"]) for side in figures["sides"]] == [1, 3]
