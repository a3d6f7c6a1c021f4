"""Garbage collection's pure parts: the command, reading its output, the read-only override."""

from __future__ import annotations

import pytest

from registry_provisioner import gc, kube, maintenance
from registry_provisioner.config import Settings
from registry_provisioner.errors import ProvisionError
from registry_provisioner.render import render_manifests

KEPT = "sha256:" + "1" * 64
GONE = "sha256:" + "ab" * 32
# As distribution v3 prints it (a dry run with --delete-untagged).
OUTPUT = f"""app/one
app/one: marking manifest {KEPT}
app/one: marking blob sha256:{"2" * 64}
manifest eligible for deletion: {{app/one sha256:{"3" * 64} [v1]}}

2 blobs marked, 1 blobs and 1 manifests eligible for deletion
blob eligible for deletion: {GONE}
app/one: layer link eligible for deletion: {GONE}
"""


def test_command_collects_untagged_with_the_registry_config() -> None:
    assert gc.garbage_collect_argv(dry_run=False) == [
        "registry",
        "garbage-collect",
        "--delete-untagged",
        "/etc/distribution/config.yml",
    ]
    assert "--dry-run" in gc.garbage_collect_argv(dry_run=True)


def test_output_gives_counts_and_the_blobs_to_delete() -> None:
    assert gc.parse_gc_output(OUTPUT) == gc.GcOutcome(2, 1, 1, (GONE,))


def test_output_without_summary_is_an_error() -> None:
    with pytest.raises(ProvisionError, match="no summary"):
        gc.parse_gc_output("app/one\nfailed to garbage collect: boom\n")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("260\t/var/lib/registry\n", 260 * 1024),
        ("4\t/a\n8\t/b\n12\ttotal\n", 12 * 1024),
    ],
)
def test_du_sizes_are_bytes(text: str, size: int) -> None:
    assert gc.parse_du_kib(text) == size


def test_unreadable_du_output_is_an_error() -> None:
    with pytest.raises(ProvisionError, match="size"):
        gc.parse_du_kib("du: can't open '/x': No such file or directory")


def test_blob_dir_follows_the_filesystem_layout() -> None:
    assert gc.blob_dir(GONE) == (
        f"/var/lib/registry/docker/registry/v2/blobs/sha256/ab/{GONE.removeprefix('sha256:')}"
    )
    with pytest.raises(ProvisionError):
        gc.blob_dir("sha256:../../etc")


def test_read_only_override_targets_the_rendered_registry_container() -> None:
    settings = Settings(namespace="team", name="reg")
    [deployment] = [m for m in render_manifests(settings, None) if m["kind"] == "Deployment"]
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert maintenance.CONTAINER in names

    fields = maintenance.read_only_fields(settings, "garbage collection")
    assert fields["metadata"]["name"] == "reg" and fields["metadata"]["namespace"] == "team"
    [container] = fields["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [
        {"name": "REGISTRY_STORAGE_MAINTENANCE_READONLY", "value": '{"enabled": true}'}
    ]
    # Released, the maintenance manager keeps no field at all.
    assert set(maintenance.released_fields(settings)) == {"apiVersion", "kind", "metadata"}


def test_pod_read_only_is_read_from_its_registry_container() -> None:
    def pod(env: list[dict]) -> dict:
        return {"spec": {"containers": [{"name": "registry", "env": env}]}}

    override = {"name": maintenance.READ_ONLY_ENV, "value": maintenance.READ_ONLY_VALUE}
    assert maintenance.pod_is_read_only(pod([{"name": "A", "value": "1"}, override]))
    assert not maintenance.pod_is_read_only(pod([{"name": "A", "value": "1"}]))
    assert not maintenance.pod_is_read_only({"spec": {"containers": [{"name": "other"}]}})


def test_managed_by_ignores_managers_without_fields() -> None:
    raw = {
        "metadata": {
            "managedFields": [
                {"manager": "registry-provisioner", "fieldsV1": {"f:spec": {}}},
                {"manager": maintenance.FIELD_MANAGER, "fieldsV1": {}},
            ]
        }
    }
    assert kube.managed_by(raw, "registry-provisioner")
    assert not kube.managed_by(raw, maintenance.FIELD_MANAGER)
    assert not kube.managed_by({"metadata": {}}, "registry-provisioner")


def test_report_gives_the_space_reclaimed() -> None:
    report = gc.GcReport(
        dry_run=False,
        blobs_kept=3,
        blobs_deleted=1,
        manifests_deleted=2,
        used_before=260 * 1024,
        used_after=212 * 1024,
        reclaimed=48 * 1024,
        read_only_seconds=8.5,
        tags_checked=1,
        repositories_checked=1,
    )
    text = gc.format_report(Settings(), report)
    assert "48.0 KiB reclaimed (49152 bytes)" in text
    assert "260.0 KiB -> 212.0 KiB of 5Gi" in text
    assert "1 unreferenced blob and 2 untagged manifests" in text
    assert "1 tag in 1 repository" in text
    assert "accepts pushes again" in text


def test_dry_run_report_says_nothing_changed() -> None:
    report = gc.GcReport(True, 3, 2, 0, 100 * 1024, 100 * 1024, 8 * 1024)
    text = gc.format_report(Settings(), report)
    assert text.startswith("dry run: nothing was deleted")
    assert "would delete 2 unreferenced blobs (at least 8.0 KiB) and 0 untagged manifests" in text


def test_empty_registry_report_says_there_was_nothing_to_do() -> None:
    report = gc.GcReport(False, 0, 0, 0, 0, 0, 0, nothing_pushed=True)
    assert gc.format_report(Settings(), report).startswith("nothing to collect")
