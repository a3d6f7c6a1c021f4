"""The pure parts of the bench's docker figures: the archive docker loads, and the report.

No figure is asserted here: the bench measures, tests check what it builds and how it reports.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

from registry_provisioner.images import random_image
from scripts.benchmarks import docker_client, report
from scripts.benchmarks.run import DOCKER_FIGURES, MISSED


def test_the_archive_holds_the_very_bytes_the_other_clients_push(tmp_path: Path) -> None:
    image = random_image([4096, 8192])
    path = docker_client.write_archive(image, tmp_path / "a.tar", "x/y:v1")
    with tarfile.open(path) as tar:
        [entry] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == ["x/y:v1"]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layers = [tar.extractfile(name).read() for name in entry["Layers"]]  # type: ignore[union-attr]
    assert config == image.config
    assert layers == list(image.layers)
    # docker load checks each unpacked layer against the config's diff_ids.
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert diff_ids == [
        "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() for layer in layers
    ]


def test_docker_figures_say_why_they_are_not_measured(tmp_path: Path) -> None:
    reason = docker_client.missing_reason((tmp_path / "dockerd",))
    assert reason is not None and "docker.io is not installed" in reason
    assert str(tmp_path / "dockerd") in reason
    results = report.Results(parameters={"size_mib": 512})
    results.skip(DOCKER_FIGURES, reason)
    text = report.markdown(results)
    assert f"| docker push 512 MiB through the LoadBalancer IP | not measured | {reason} |" in text
    assert results.to_json()["figures"]["docker_pull_vs_loopback"]["not_measured"] == reason


def test_docker_figures_are_in_the_table_with_skopeos_targets() -> None:
    results = report.Results(parameters={"size_mib": 64})
    for key in DOCKER_FIGURES:
        assert results.figures[key].spec.section == report.THROUGHPUT
    for verb in ("push", "pull"):
        ratio = results.figures[f"docker_{verb}_vs_loopback"].spec
        assert ratio.target == results.figures[f"skopeo_{verb}_vs_loopback"].spec.target
        assert ratio.target == (">=", 0.9)
        assert f"docker_{verb}_vs_loopback" in MISSED
    results.add("docker_push_cluster", 100.0)
    results.add_ratio("docker_push_vs_loopback", 85.0, 100.0)
    text = report.markdown(results)
    assert "| docker push 64 MiB through the LoadBalancer IP | 100.0 MiB/s |" in text
    assert "| docker push: cluster / loopback | 0.85x | 0.85x | ≥ 0.90x | **no** |" in text
