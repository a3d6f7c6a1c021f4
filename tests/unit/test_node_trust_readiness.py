"""Node trust's readiness rule and the reasons it gives per node (no cluster)."""

from __future__ import annotations

from registry_provisioner import node_trust
from registry_provisioner.config import Settings


def _daemonset(generation: int = 2, **status: int) -> dict:
    return {"metadata": {"generation": generation}, "status": status}


def test_ready_only_when_every_node_runs_the_current_template_ready() -> None:
    done = {"observedGeneration": 2, "desiredNumberScheduled": 2}
    assert node_trust.on_every_node(_daemonset(**done, numberReady=2, updatedNumberScheduled=2))
    assert not node_trust.on_every_node(_daemonset())  # status not filled in yet
    assert not node_trust.on_every_node(  # an old pod is ready, the new one is not there
        _daemonset(**done, numberReady=2, updatedNumberScheduled=1)
    )
    assert not node_trust.on_every_node(  # PSA refused every pod
        _daemonset(**done, numberReady=0, updatedNumberScheduled=0)
    )
    assert not node_trust.on_every_node(  # the controller has not seen the new spec
        _daemonset(3, **done, numberReady=2, updatedNumberScheduled=2)
    )


def _pod(**container: object) -> dict:
    phase = "Running" if "running" in container["state"] else "Pending"  # type: ignore[operator]
    return {
        "metadata": {"name": "p"},
        "status": {"phase": phase, "containerStatuses": [{"image": "x:1", **container}]},
    }


def test_pod_reasons_name_pull_errors_crashes_and_missing_files() -> None:
    s = Settings()
    pull = _pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "refused"}})
    assert node_trust._pod_reason(pull, s, removing=False).startswith("image pull error")
    crash = _pod(
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"exitCode": 1}},
    )
    assert "exit code 1" in node_trust._pod_reason(crash, s, removing=False)
    running = _pod(state={"running": {}}, ready=False)
    assert node_trust._pod_reason(running, s, removing=False).startswith("files not written")
    assert s.node_registry_dir in node_trust._pod_reason(running, s, removing=False)
    assert node_trust._pod_reason(running, s, removing=True) == "files not removed yet"
    assert node_trust._pod_reason(_pod(state={"running": {}}, ready=True), s, removing=False) == ""


def test_a_daemonset_pod_not_yet_bound_is_found_by_its_node_affinity() -> None:
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }
    assert node_trust._node_of({"spec": {"affinity": affinity}}) == "n1"
    assert node_trust._node_of({"spec": {"nodeName": "n2"}}) == "n2"
    assert node_trust._node_of({"spec": {}}) is None
