"""What the registry pod's programs log, run on loopback with the pod's own configs.

kubelet probes "/" every few seconds, day and night; those probes must not fill
the logs, while every request to the registry's API still leaves a line.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from registry_provisioner.config import load_settings
from registry_provisioner.oci_client import RegistryClient
from scripts.benchmarks import loopback
from scripts.benchmarks.run import bench_set_args

PROBE_HEADERS = {"User-Agent": "kube-probe/1.34"}


async def test_probes_of_root_write_no_log_line_while_api_requests_do(
    tmp_path: Path, registry_binary_path: Path, caddy_binary_path: Path
) -> None:
    settings = load_settings(None, dict(p.split("=", 1) for p in bench_set_args([])))
    with loopback.run_loopback(settings, tmp_path) as pod:
        logs = (pod.log_path, pod.registry.log_path)
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=pod.ca_path)
        ) as probe:
            for _ in range(5):
                answer = await probe.get(f"{pod.url}/", headers=PROBE_HEADERS)
                assert answer.status_code == 200
        after_probes = [log.read_text() for log in logs]
        assert not any("kube-probe" in text for text in after_probes), after_probes

        async with RegistryClient(
            pod.url, pod.admin.username, pod.admin.password, ca_file=pod.ca_path
        ) as admin:
            await admin.ping()
        # distribution writes the line as it answers: the client has it by then.
        api_lines = pod.registry.log_path.read_text()[len(after_probes[1]) :]
        assert "response completed" in api_lines and "uri=/v2/" in api_lines, api_lines
