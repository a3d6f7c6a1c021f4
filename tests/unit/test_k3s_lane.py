"""The k3s lane's pure parts: k3s's containerd template, its flags, the missing source."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from scripts.local_cluster import k3s, k3s_build, network, node_config

# The parts of k3s's version-3 template (pkg/agent/templates) the lane changes.
TEMPLATE = """\
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = {{ .NodeConfig.SELinux }}

{{ if .IsRunningInUserNS }}
  disable_apparmor = true
  restrict_oom_score_adj = true
{{ end }}

{{- if or .NodeConfig.AgentConfig.CNIBinDir .NodeConfig.AgentConfig.CNIConfDir }}
[plugins.'io.containerd.cri.v1.runtime'.cni]
  {{ with .NodeConfig.AgentConfig.CNIBinDir }}bin_dirs = [{{ printf "%q" . }}]{{ end }}
  {{ with .NodeConfig.AgentConfig.CNIConfDir }}conf_dir = {{ printf "%q" . }}{{ end }}
{{ end }}

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = {{ printf "%q" .NodeConfig.Containerd.Registry }}
"""


def test_template_clamps_oom_scores_and_names_the_bridge_config() -> None:
    text = k3s.containerd_config_template(TEMPLATE)
    runtime = text.split("[plugins.'io.containerd.cri.v1.runtime']\n", 1)[1]
    assert runtime.startswith("  restrict_oom_score_adj = true\n")
    assert text.count("restrict_oom_score_adj") == 1
    assert f'bin_dirs = ["{node_config.CNI_BIN_DIR}"]' in text
    assert f'conf_dir = "{k3s.NODE.cni_conf_dir}"' in text
    assert "CNIBinDir" not in text and "CNIConfDir" not in text
    # What k3s fills in itself stays its own: config_path comes from k3s.
    assert "config_path = {{ printf" in text


def test_template_from_another_k3s_is_refused_not_guessed() -> None:
    changed = TEMPLATE.replace("  restrict_oom_score_adj = true\n", "")
    with pytest.raises(RuntimeError, match="user-namespace block found 0 times"):
        k3s.containerd_config_template(changed)


def test_server_keeps_network_policy_and_disables_what_needs_images() -> None:
    spec = k3s.server_spec(
        k3s_build.K3sBinaries(Path("/k3s"), Path("/shim")), Path("/bin-dir"), Path("/adm.yaml")
    )
    args = spec.argv
    assert args[:2] == ("/bin-dir/k3s", "server")
    assert not any(arg.startswith("--disable-network-policy") for arg in args)
    assert "--flannel-backend=none" in args
    assert "--disable=traefik,servicelb,metrics-server,local-storage,coredns" in args
    assert "--disable-helm-controller" in args
    assert f"--node-ip={network.NODE_IP}" in args
    assert not any(arg.startswith("--data-dir") for arg in args)  # k3s's default
    # The containerd k3s runs is the link to itself, first on its PATH.
    assert spec.env["PATH"].startswith("/bin-dir:")


def test_node_trust_default_is_where_k3s_puts_certs_d() -> None:
    from registry_provisioner.config import Settings

    assert Settings().node_trust.certs_dir == str(k3s.CERTS_DIR)


def test_missing_source_names_the_path_and_the_setting(tmp_path: Path) -> None:
    reason = k3s_build.source_missing_reason(tmp_path / "absent")
    assert reason is not None
    assert str(tmp_path / "absent") in reason and "LOCAL_CLUSTER_K3S_SOURCE" in reason
    with pytest.raises(k3s_build.K3sSourceMissing, match="k3s lane not run"):
        k3s_build.build_k3s(tmp_path / "absent")


def test_node_paths_map_under_the_state_dir() -> None:
    assert k3s.certs_dir_on_host() == (
        k3s.K3S_ROOT / "root/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    )
    assert all(path.is_absolute() for path in k3s.PRIVATE_PATHS)


@pytest.mark.parametrize(
    ("flavor", "overlay"), [("k3s\n", "registry-config-k3s.yaml"), (None, "registry-config.yaml")]
)
def test_local_overlay_follows_the_running_cluster(
    flavor: str | None, overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks
    from scripts.local_cluster import paths

    flavor_file = tmp_path / "flavor"
    if flavor is not None:
        flavor_file.write_text(flavor)
    monkeypatch.setattr(paths, "FLAVOR_FILE", flavor_file)
    assert tasks._local_overlay().name == overlay


def test_k3s_overlay_keeps_the_default_certs_dir() -> None:
    import yaml

    import tasks

    overlay = yaml.safe_load(tasks.K3S_LOCAL_CONFIG.read_text())
    assert "certs_dir" not in overlay.get("node_trust", {})
    home_built = yaml.safe_load(tasks.LOCAL_CONFIG.read_text())
    assert overlay["service"] == home_built["service"]


def _started(command: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(["sh", "-c", command], stdout=out, stderr=subprocess.STDOUT)


def test_a_failed_background_build_raises_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    build = _started("echo compiling; echo 'go: cannot find module'; exit 3", log)
    with pytest.raises(k3s_build.K3sBuildFailed, match="exit 3") as raised:
        k3s_build.finish_background_build(build, log, report_every=0.05)
    assert "go: cannot find module" in str(raised.value)


def test_waiting_on_the_background_build_says_what_and_how_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "build.log"
    fifo = tmp_path / "go-on"
    os.mkfifo(fifo)
    build = _started(f"read line < {fifo}", log)  # runs until the test lets it end
    waiter = threading.Thread(target=k3s_build.finish_background_build, args=(build, log, 0.05))
    waiter.start()
    while "waiting for the k3s build" not in capsys.readouterr().out:
        assert waiter.is_alive()
    fifo.write_text("done\n")
    waiter.join(10)
    assert not waiter.is_alive() and build.returncode == 0
