"""The bench's pure parts: its settings, how it reads progress lines, judges and reports.

No figure is asserted here: benchmarks print figures and ratios, they are not timed tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from registry_provisioner.config import load_settings
from registry_provisioner.images import random_image
from registry_provisioner.provision import PREFLIGHT_STEP
from scripts.benchmarks import children, data_plane, loopback, pod_cost, report
from scripts.benchmarks.children import BenchError, ChildRun, redact, run_child
from scripts.benchmarks.lifecycle import Target, provision_phases
from scripts.benchmarks.run import at_address, bench_set_args, given_address
from scripts.byte_compile import byte_compile
from scripts.local_cluster.addresses import OVERLAY_IP, pool_addresses
from scripts.local_cluster.paths import REPO_ROOT
from scripts.loopback_proxy import relocate
from scripts.loopback_registry import on_loopback


def _settings(pairs: tuple[str, ...]):
    return load_settings(None, dict(pair.split("=", 1) for pair in pairs))


def test_bench_settings_keep_shared_names_out_of_other_namespaces() -> None:
    pairs = bench_set_args([])
    assert "namespace=bench-registry" in pairs
    assert "pull_secret.namespaces=[bench-registry]" in pairs
    assert "discovery.publish_local_registry_hosting=false" in pairs
    settings = _settings(pairs)
    assert list(settings.pull_secret.namespaces) == ["bench-registry"]
    assert settings.discovery.publish_local_registry_hosting is False


def test_bench_settings_follow_an_overridden_namespace_and_address() -> None:
    ip = pool_addresses()[-1]
    pairs = bench_set_args(["namespace=bench-two", f"service.ip={ip}"])
    assert "pull_secret.namespaces=[bench-two]" in pairs
    assert [pair for pair in pairs if pair.startswith("service.ip=")] == [f"service.ip={ip}"]
    assert given_address(pairs) == ip  # so the bench claims none from the pool


def test_without_an_address_the_bench_claims_one_and_uses_it_everywhere(tmp_path: Path) -> None:
    pairs = bench_set_args([])
    assert given_address(pairs) is None
    assert not [pair for pair in pairs if pair.startswith("service.ip=")]
    ip = pool_addresses()[0]
    assert OVERLAY_IP not in pool_addresses()  # the demo's address is never handed out
    target = Target(_settings(pairs), pairs, "kubeconfig", ("kubectl",), None, tmp_path)
    moved = at_address(target, ip)
    assert moved.settings.registry_url == f"https://{ip}:5000"
    assert given_address(moved.set_args) == ip
    # What the bench renders itself and what its `invoke` runs see is the same registry.
    assert _settings(moved.set_args) == moved.settings
    assert moved.settings.namespace == target.settings.namespace == "bench-registry"


def test_bench_refuses_to_purge_a_namespace_it_does_not_own() -> None:
    with pytest.raises(BenchError, match="must start bench-"):
        bench_set_args(["namespace=docker-registry"])


def _run_with(lines: list[tuple[float, str]], seconds: float) -> ChildRun:
    return ChildRun(("invoke",), seconds, 0, "", tuple(lines), 0, 0.0)


_WAITS = [
    (2.0, "==> waiting for Certificate r to be Ready (up to 300s)"),
    (2.5, "    done in 0.5s: waiting for Certificate r to be Ready (up to 300s)"),
    (2.5, "==> waiting for Deployment r to roll out (up to 300s)"),
    (6.5, "    ... still waiting for Deployment r to roll out (4s)"),
    (7.0, "    done in 4.5s: waiting for Deployment r to roll out (up to 300s)"),
    (7.0, "==> waiting for Service s to get LoadBalancer IP 10.0.0.1 (up to 9s)"),
    (7.0, "    done in 0.0s: waiting for Service s to get LoadBalancer IP 10.0.0.1 (up to 9s)"),
    (7.0, "==> waiting for the registry to answer on https://x (up to 300s)"),
    (8.0, "    done in 1.0s: waiting for the registry to answer on https://x (up to 300s)"),
]
_WAIT_PHASES = {
    "wait: Certificate Ready": 0.5,
    "wait: Deployment rolled out": 4.5,
    "wait: LoadBalancer IP": 0.0,
    "wait: registry answers on the IP": 1.0,
    "after the waits (CA file, summary, exit)": 0.25,
}


def test_provision_phases_come_from_its_progress_lines() -> None:
    lines = [
        (0.75, f"==> {PREFLIGHT_STEP}"),
        (1.5, f"    done in 0.7s: {PREFLIGHT_STEP}"),
        *_WAITS,
    ]
    phases = provision_phases(_run_with(lines, 8.25))
    assert phases == {
        "interpreter, imports, settings, connect": 0.75,
        "preflight (and the logins, alongside)": 0.75,
        "render, node probe, apply": 0.5,
        **_WAIT_PHASES,
    }


def test_provision_phases_without_the_preflight_line_keep_start_up_whole() -> None:
    phases = provision_phases(_run_with(_WAITS, 8.25))
    assert phases == {"interpreter and imports, preflight, render, apply": 2.0, **_WAIT_PHASES}


def test_targets_are_judged_on_the_median_or_on_every_run() -> None:
    results = report.Results(parameters={"size_mib": 8, "clients": 8})
    for value in (0.9, 1.1, 0.95):
        results.add("provision_vs_floor", value)
    assert results.figures["provision_vs_floor"].median == 0.95
    assert results.figures["provision_vs_floor"].met is True
    for errors in (0, 1, 0):
        results.add("concurrent_errors", errors)
    assert results.figures["concurrent_errors"].median == 0
    assert results.figures["concurrent_errors"].met is False  # one failed run fails it
    assert results.figures["dry_run"].met is None  # no target, no verdict


def test_a_ratio_over_nothing_is_left_out() -> None:
    results = report.Results(parameters={})
    results.add_ratio("push_vs_loopback", 10.0, 0.0)
    results.add_ratio("push_vs_loopback", 9.0, 10.0)
    assert results.figures["push_vs_loopback"].samples == [0.9]


def test_markdown_shows_each_figure_its_runs_target_and_verdict(tmp_path: Path) -> None:
    results = report.Results(parameters={"repeat": 2, "size_mib": 64, "clients": 8})
    results.add("noop_provision", 1.0)
    results.add("noop_provision", 3.0)
    results.add("push_vs_loopback", 0.7)
    results.add_phases("invoke provision", {"wait: Deployment rolled out": 4.0})
    text = report.markdown(results)
    assert "| no-op re-provision | 2.00 s | 1.00 s, 3.00 s | ≤ 2 s | yes |" in text
    assert "| push: cluster / loopback | 0.70x | 0.70x | ≥ 0.80x | **no** |" in text
    assert "push 64 MiB through the LoadBalancer IP" in text
    assert "| invoke provision | wait: Deployment rolled out | 4.00 | 4.00 |" in text
    json_path, md_path = report.write(results, tmp_path)
    assert json_path.exists() and md_path.read_text() == text


def test_pod_cgroups_follow_the_cgroupfs_layout() -> None:
    root = Path("/sys/fs/cgroup")
    cpu, memory = pod_cost.cgroup_dirs("u-1", "Burstable", root)
    assert cpu == root / "cpuacct/kubepods/burstable/podu-1"
    assert memory == root / "memory/kubepods/burstable/podu-1"
    cpu, _ = pod_cost.cgroup_dirs("u-1", "Guaranteed", root)
    assert cpu == root / "cpuacct/kubepods/podu-1"


def test_loopback_config_is_the_cluster_config_moved_to_loopback(tmp_path: Path) -> None:
    settings = _settings(bench_set_args([]))
    cluster = loopback.cluster_config(settings)
    tls = (tmp_path / "tls.crt", tmp_path / "tls.key")
    local = on_loopback(cluster, tmp_path, (5555, 5556), tls, tmp_path / "htpasswd")
    assert local["http"]["addr"] == "127.0.0.1:5555"
    assert local["http"]["debug"]["addr"] == "127.0.0.1:5556"
    assert local["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "storage")
    assert local["auth"]["htpasswd"]["path"] == str(tmp_path / "htpasswd")
    # Everything that shapes performance is unchanged.
    for key in ("health", "log", "version"):
        assert local[key] == cluster[key]
    assert local["storage"]["delete"] == cluster["storage"]["delete"]
    assert local["http"]["headers"] == cluster["http"]["headers"]


def test_loopback_proxy_runs_the_rendered_caddy_config_moved_to_loopback(tmp_path: Path) -> None:
    settings = _settings(bench_set_args([]))
    rendered = loopback.proxy_config(settings)
    auth = settings.auth
    files = {auth.username: "/tmp/x/a.bcrypt", auth.pull_username: "/tmp/x/p.bcrypt"}
    local = relocate(
        rendered,
        listen="127.0.0.1:7000",
        upstream="127.0.0.1:7001",
        certificate="/tmp/x/tls.crt",
        key="/tmp/x/tls.key",
        hash_files=files,
        address="127.0.0.1",
    )
    text = json.dumps(local)
    assert '"127.0.0.1:7001"' in text and "5080" not in text
    assert "/auth/" not in text and "/certs/" not in text
    assert "{file./tmp/x/p.bcrypt}" in text
    [server] = local["apps"]["http"]["servers"].values()
    assert server["listen"] == ["127.0.0.1:7000"]
    # Routes, rights, errors and the hash cache are the pod's, untouched.
    [rendered_server] = rendered["apps"]["http"]["servers"].values()
    assert len(server["routes"]) == len(rendered_server["routes"])
    assert server["errors"] == rendered_server["errors"]
    assert "hash_cache" in text and local["admin"] == rendered["admin"]
    assert "5080" in json.dumps(rendered)  # the original is left as it was


def test_disk_round_trip_leaves_nothing_behind(tmp_path: Path) -> None:
    write, read = data_plane.disk_write_read(tmp_path, random_image([4096, 8192]))
    assert write > 0 and read > 0
    assert list(tmp_path.iterdir()) == []


def test_make_image_splits_the_size_into_layers() -> None:
    image = data_plane.make_image(64 * 1024, layers=4)
    assert len(image.layers) == 4
    assert image.size > 64 * 1024


def test_a_child_is_measured_and_its_secrets_never_shown() -> None:
    code = "import sys; print('out'); print('the s3cret', file=sys.stderr); sys.exit(3)"
    run = run_child([sys.executable, "-c", code], timeout=60)
    assert run.returncode == 3 and run.stdout == "out\n"
    assert run.max_rss_bytes > 0 and run.seconds > 0
    assert run.stderr_lines[0][1] == "the s3cret"
    with pytest.raises(BenchError) as error:
        run.checked("the child", secrets=["s3cret"])
    assert "s3cret" not in str(error.value) and "<redacted>" in str(error.value)
    assert redact("a b", ["", "b"]) == "a <redacted>"


def test_a_child_past_its_timeout_is_stopped_with_the_command_it_runs(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # sh, not Python: it writes its PID within the timeout even on a loaded machine.
    with pytest.raises(BenchError, match="timed out"):
        run_child(["sh", "-c", f'echo $$ > "{pid_file}" && exec sleep 30'], timeout=2)
    pid = int(pid_file.read_text())
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.mark.skipif(not children.GNU_TIME.exists(), reason="needs GNU time")
def test_a_childs_peak_memory_is_its_own_not_the_benchs() -> None:
    ballast = bytearray(400 * 1024 * 1024)  # what the bench holds while images are in memory
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page, so it is resident
    run = run_child([sys.executable, "-c", "pass"], timeout=60)
    assert 0 < run.max_rss_bytes < 200 * 1024 * 1024
    del ballast


def test_the_bench_times_tasks_from_bytecode_of_the_current_sources() -> None:
    byte_compile()
    for source in (REPO_ROOT / "tasks.py", REPO_ROOT / "registry_provisioner" / "provision.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.stat().st_mtime >= source.stat().st_mtime, cached
