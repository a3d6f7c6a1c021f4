"""Recognising the Ansible notebook's registry, and what taking it over does (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry_provisioner import maintenance, notebook
from registry_provisioner.config import Settings, load_settings
from registry_provisioner.errors import PreflightError
from registry_provisioner.render import render_manifests
from tests.support import notebook as seed

SEED_VARS = Path(__file__).resolve().parents[1] / "data/seed_group_vars.yaml"
needs_seed = pytest.mark.skipif(not seed.SEED_ORG.is_file(), reason="no seed notebook here")


def _rendered(kind: str) -> dict[str, Any]:
    [manifest] = [m for m in seed.render("10.213.1.50").manifests if m["kind"] == kind]
    return manifest


def _found(**objects: Any) -> notebook.Notebook:
    fields: dict[str, Any] = {
        "sub_path": "registry",
        "deployment": None,
        "claim": None,
        "service": None,
        "certificate": None,
        "secret": None,
        "inventory": None,
    }
    return notebook.Notebook(**{**fields, **objects})


@needs_seed
def test_the_notebooks_own_deployment_is_recognised_with_its_sub_path() -> None:
    deployment = _rendered("Deployment")
    settings = load_settings(SEED_VARS)

    assert notebook.is_notebooks(deployment, settings)
    assert notebook.claim_mount(deployment, settings.storage.claim_name) == "registry"


@needs_seed
def test_our_own_deployment_is_not_the_notebooks() -> None:
    settings = load_settings(SEED_VARS)
    [ours] = [m for m in render_manifests(settings, None) if m["kind"] == "Deployment"]
    other_claim = load_settings(SEED_VARS, {"storage.claim_name": "elsewhere"})

    assert not notebook.is_notebooks(ours, settings)
    assert not notebook.is_notebooks(_rendered("Deployment"), other_claim)


@needs_seed
def test_the_plan_says_what_is_kept_replaced_and_deleted() -> None:
    settings = notebook.with_sub_path(load_settings(SEED_VARS), "registry")
    claim = {"metadata": {"uid": "uid-1"}}
    service = _rendered("Service")
    certificate = _rendered("Certificate")
    secret = {"kind": "Secret", "metadata": {"name": "docker-registry-secret"}}
    found = _found(
        deployment=_rendered("Deployment"),
        claim=claim,
        service=service,
        certificate=certificate,
        secret=secret,
    )

    lines = "\n".join(notebook.plan(settings, found))

    assert "keeps    PersistentVolumeClaim docker-registry-pvc (uid uid-1)" in lines
    assert "storage.sub_path='registry'" in lines
    assert "replaces Deployment docker-registry: scaled to 0 and deleted" in lines
    assert "replaces Service docker-registry-service" in lines
    assert "IP 10.213.1.50 -> 172.17.1.62" in lines  # the seed's IP is not this one
    assert "deletes  Certificate docker-registry-certificate" in lines
    assert "deletes  Secret docker-registry-secret" in lines


def test_without_adopt_the_refusal_names_the_flag() -> None:
    error = notebook.refusal(Settings(), _found())

    assert isinstance(error, PreflightError)
    assert "invoke provision --adopt" in str(error)
    assert "nothing was changed" in str(error)


def test_schema1_and_missing_blobs_are_named_with_what_to_do() -> None:
    inventory = notebook.Inventory(
        {"apps/web": {"1.0": "sha256:" + "a" * 64}},
        schema1=("old/app:2016",),
        missing=(
            "apps/web:1.0: apps/web@sha256:" + "b" * 64 + " (blob of sha256:" + "a" * 64 + ")",
        ),
    )

    lines = "\n".join(notebook.inventory_lines(inventory))

    assert "found    1 tags in 1 repositories" in lines
    assert "schema 1 old/app:2016" in lines
    assert "skopeo copy --format v2s2" in lines
    assert "missing  apps/web:1.0: apps/web@sha256:" in lines
    assert "push it again" in lines
    assert notebook.Inventory.from_json(inventory.to_json()) == inventory


def test_a_sub_path_other_than_the_notebooks_is_refused() -> None:
    settings = load_settings(None, {"storage.sub_path": "images"})

    with pytest.raises(PreflightError, match=r"leave storage\.sub_path out"):
        notebook.adopting(settings, _found())
    assert notebook.adopting(Settings(), _found()).storage.sub_path == "registry"


def test_first_start_is_read_only_and_mounts_the_sub_path() -> None:
    settings = notebook.with_sub_path(Settings(), "registry")
    [deployment] = [m for m in render_manifests(settings, None) if m["kind"] == "Deployment"]

    locked = notebook.read_only(deployment)

    [registry] = [
        c for c in locked["spec"]["template"]["spec"]["containers"] if c["name"] == "registry"
    ]
    assert maintenance.pod_is_read_only(locked["spec"]["template"])
    assert not maintenance.pod_is_read_only(deployment["spec"]["template"])
    [data] = [m for m in registry["volumeMounts"] if m["name"] == "data"]
    assert data["subPath"] == "registry"
    [claim] = [m for m in render_manifests(settings, None) if m["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["annotations"][notebook.SUB_PATH_ANNOTATION] == "registry"


@needs_seed
def test_tangle_finds_every_template_and_the_group_vars() -> None:
    files = seed.tangle()

    assert set(seed.TEMPLATES) <= set(files)
    assert "docker_reg_service_ip" in files["group_vars/all"]
