"""The pure parts of the bench's newer figures: helm peer, skopeo, cluster pull, auth, report.

No figure is asserted here: the bench measures, tests check what it builds and how it reports.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import yaml

from registry_provisioner.config import load_settings
from registry_provisioner.images import random_image
from scripts.benchmarks import cluster_pull, helm_peer, report, skopeo
from scripts.benchmarks.data_plane import Endpoint
from scripts.benchmarks.lifecycle import Target
from scripts.benchmarks.run import HELM_FIGURES, bench_set_args, missed_notes, path_order

IP = "10.213.1.60"


def _target(tmp_path: Path) -> Target:
    pairs = (*bench_set_args([]), f"service.ip={IP}")
    settings = load_settings(None, dict(pair.split("=", 1) for pair in pairs))
    return Target(settings, pairs, "/nonexistent", ("kubectl",), None, tmp_path)  # type: ignore[arg-type]


def test_paths_rotate_so_none_always_goes_first() -> None:
    names = ("floor", "ours", "helm")
    orders = [path_order(i, names) for i in range(3)]
    assert [order[0] for order in orders] == ["floor", "ours", "helm"]
    assert all(sorted(order) == sorted(names) for order in orders)
    assert path_order(3, names) == orders[0]


def test_helm_values_make_the_chart_like_ours_and_keep_the_login_in_a_private_file(
    tmp_path: Path,
) -> None:
    target = _target(tmp_path)
    user = helm_peer.prepare(target, Path("/bin/true"))
    assert user.values_file.stat().st_mode & 0o777 == 0o600
    values = yaml.safe_load(user.values_file.read_text())
    assert values["image"] == {
        "repository": "docker.io/library/registry",
        "tag": "3.1.2",
        "pullPolicy": "IfNotPresent",
    }
    assert values["service"]["annotations"] == {"metallb.io/loadBalancerIPs": IP}
    assert values["service"]["type"] == "LoadBalancer"
    assert values["persistence"]["storageClass"] == "longhorn"
    assert values["tlsSecretName"] == helm_peer.CERTIFICATE
    line = values["secrets"]["htpasswd"]
    assert line.startswith(f"{helm_peer.USERNAME}:$2") and user.password not in line
    argv = " ".join(user.helm_command("install", "x"))
    assert user.password not in argv and "HELM_CONFIG_HOME" in argv
    namespace, certificate = yaml.safe_load_all(user.certificate_file.read_text())
    assert namespace["metadata"]["name"] == helm_peer.NAMESPACE
    assert certificate["spec"]["ipAddresses"] == [IP]
    assert certificate["spec"]["secretName"] == helm_peer.CERTIFICATE


def test_the_helm_peer_says_why_it_is_not_measured(tmp_path: Path) -> None:
    assert "not at" in (helm_peer.missing_reason(tmp_path / "absent") or "")
    (tmp_path / "Chart.yaml").write_text("name: x\n")
    assert helm_peer.missing_reason(tmp_path) is None
    results = report.Results(parameters={})
    results.skip(HELM_FIGURES, "the twuni chart is not at /x")
    text = report.markdown(results)
    assert "| not measured | the twuni chart is not at /x |" in text
    assert (
        results.to_json()["figures"]["helm_ready"]["not_measured"] == "the twuni chart is not at /x"
    )


def test_targets_are_the_issues() -> None:
    specs = {spec.key: spec for spec in report.SPECS}
    assert specs["provision_vs_floor"].target == ("<=", 1.0)
    assert specs["provision_vs_helm"].target == ("<=", 0.9)
    assert specs["noop_provision"].target == ("<=", 2.0)
    assert specs["skopeo_push_vs_loopback"].target == (">=", 0.9)
    assert specs["skopeo_pull_vs_loopback"].target == (">=", 0.9)
    # The target is on the ratio that isolates authentication, not on request weight.
    assert specs["auth_vs_noauth_loopback"].target == (">=", 0.8)
    assert specs["auth_vs_root_cluster"].target is None


def test_a_missed_target_gets_a_note() -> None:
    results = report.Results(parameters={})
    results.add("noop_provision", 2.5)
    results.add("provision_vs_floor", 0.9)
    notes = missed_notes(results)
    assert len(notes) == 1 and notes[0].startswith("no-op re-provision missed")


def test_skopeo_gets_a_layout_and_its_login_from_a_private_file(tmp_path: Path) -> None:
    image = random_image([1024, 2048])
    layout = skopeo.write_layout(image, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    blobs = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert len(blobs) == 4  # manifest, config, two layers
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    endpoint = Endpoint(f"https://{IP}:5000", "admin", "s3cret-pw", ca)
    authfile = skopeo.auth_file(endpoint, tmp_path / "auth")
    assert authfile.stat().st_mode & 0o777 == 0o600
    assert f"{IP}:5000" in json.loads(authfile.read_text())["auths"]
    certs = skopeo.cert_dir(endpoint, tmp_path / "certs")
    assert [p.name for p in certs.iterdir()] == ["ca.crt"]
    argv = skopeo.copy_argv(
        "oci:x:v1", "docker://h/r:v1", authfile=authfile, certs=certs, push=True
    )
    assert "--dest-authfile" in argv and "s3cret-pw" not in " ".join(argv)
    pull = skopeo.copy_argv(
        "docker://h/r:v1", "oci:y:v1", authfile=authfile, certs=certs, push=False
    )
    assert "--src-cert-dir" in pull


def test_cluster_pull_images_run_pause_as_nobody_with_true_diff_ids() -> None:
    image = cluster_pull.runnable_image(b"\x7fELF-pause", layers=3, layer_bytes=4096)
    assert len(image.layers) == 3
    config = json.loads(image.config)
    assert config["config"]["Entrypoint"] == ["/pause"]
    diff_ids = [
        "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() for layer in image.layers
    ]
    assert config["rootfs"]["diff_ids"] == diff_ids
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0]))) as tar:
        assert tar.getmember("pause").mode == 0o755


def test_runnable_images_share_no_layer_not_even_pause() -> None:
    first, second = (cluster_pull.runnable_image(b"\x7fELF-pause", 2, 4096) for _ in range(2))
    assert not set(first.layers) & set(second.layers)


def test_cluster_pull_pods_meet_restricted_and_use_the_pull_secret() -> None:
    pod = cluster_pull.pod_manifest("p", "bench-registry", f"{IP}:5000/r:v1", "pull")
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "pull"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_a_failed_pull_is_named_not_waited_out() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": "x509: unknown authority"}
    pods = [
        {
            "metadata": {"name": "a"},
            "status": {"containerStatuses": [{"state": {"waiting": waiting}}]},
        },
        {"metadata": {"name": "b"}, "status": {"phase": "Pending"}},
    ]
    assert cluster_pull.pull_failures(pods) == ["a: ImagePullBackOff: x509: unknown authority"]
    assert cluster_pull.retried_pulls(pods) == set()


def test_a_pull_without_the_secret_is_waited_out_as_kubelet_retries_it() -> None:
    """kubelet pulls anonymously when its Secret cache has not synced: 401, then a retry."""
    message = 'failed to resolve reference "x": ... [manifests v1]: 401 Unauthorized'
    waiting = {"reason": "ErrImagePull", "message": message}
    pods = [
        {
            "metadata": {"name": "a"},
            "status": {"containerStatuses": [{"state": {"waiting": waiting}}]},
        }
    ]
    assert cluster_pull.pull_failures(pods) == []
    assert cluster_pull.retried_pulls(pods) == {"a"}


def test_the_floor_waits_on_what_provision_waits_on_node_trust_included(tmp_path: Path) -> None:
    from scripts.benchmarks.lifecycle import floor_steps

    target = _target(tmp_path)
    names = [name for name, _ in floor_steps(target, tmp_path / "m.yaml")]
    assert names[0] == "kubectl apply --server-side"
    assert "kubectl rollout status: node trust" in names
    [argv] = [argv for name, argv in floor_steps(target, tmp_path / "m.yaml") if "node" in name]
    assert argv[-1] == f"daemonset/{target.settings.node_trust_name}"
