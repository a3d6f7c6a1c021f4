"""The one line a run cut short prints: where it stopped and how far it got."""

from __future__ import annotations

import pytest

from registry_provisioner import progress


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_tallies", {})
    monkeypatch.setattr(progress, "_cut_short", [])


def test_nothing_ran_says_nothing() -> None:
    assert progress.cut_short() == ""


def test_applies_at_once_add_up_and_held_objects_stay_planned() -> None:
    registry = [("ConfigMap", "ns", f"c{i}") for i in range(10)]
    held = [("Deployment", "ns", "registry")]
    trust = [("DaemonSet", "trust", "node-trust"), ("ConfigMap", "trust", "ca")]
    progress.tally("objects applied", planned=held)
    progress.tally("objects applied", planned=registry)
    progress.tally("objects applied", planned=trust)
    progress.tally("objects applied", done=trust)
    progress.tally("objects applied", done=registry)
    assert progress.cut_short() == "12 of 13 objects applied"

    # The held Deployment's own apply plans it again: it still counts once.
    progress.tally("objects applied", planned=held)
    progress.tally("objects applied", done=held)
    assert progress.cut_short() == "13 of 13 objects applied"


def test_a_count_afresh_leaves_out_what_an_earlier_task_applied() -> None:
    progress.tally("objects applied", planned=["add-on-1", "add-on-2"], done=["add-on-1"])
    progress.count_afresh("objects applied")
    progress.tally("objects applied", planned=["registry", "claim"], done=["claim"])
    assert progress.cut_short() == "1 of 2 objects applied"


def test_the_innermost_step_cut_short_comes_first() -> None:
    progress.tally("objects applied", planned=["a", "b"], done=["a"])
    with (
        pytest.raises(KeyboardInterrupt),
        progress.step("waiting for the outer"),
        progress.step("waiting for the inner"),
    ):
        raise KeyboardInterrupt
    assert progress.cut_short() == "while waiting for the inner; 1 of 2 objects applied"
