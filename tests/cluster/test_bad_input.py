"""Every invalid setting, given as task arguments, is refused before the cluster changes."""

from __future__ import annotations

import json

import kr8s.asyncio
import pytest

from tests.cluster.helpers import invoke
from tests.support.registries import snapshot
from tests.unit.test_config import BAD_CONFIGS

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def as_arguments(overrides: dict) -> list[str]:
    """`--set key=value` pairs: strings as typed, anything else as JSON (which is YAML)."""
    arguments = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        arguments += ["--set", f"{key}={text}"]
    return arguments


@pytest.fixture(scope="module")
async def cluster_before(api: kr8s.asyncio.Api) -> dict[str, str]:
    return await snapshot(api)


# A wrong YAML type for a string setting (storage.size: 5) cannot be typed on the
# command line, where every value is text; the unit tests cover it.
CLI_CASES = [case for case in BAD_CONFIGS if "a string" not in case[2]]


@pytest.mark.parametrize(("overrides", "field", "words"), CLI_CASES, ids=[c[1] for c in CLI_CASES])
async def test_bad_setting_is_refused_and_names_the_field(
    api: kr8s.asyncio.Api,
    kubeconfig: str,
    cluster_before: dict[str, str],
    overrides: dict,
    field: str,
    words: list[str],
) -> None:
    result = invoke("provision", *as_arguments(overrides), kubeconfig=kubeconfig)
    assert result.returncode != 0
    assert f"config: {field}" in result.stderr, result.stderr
    assert all(word in result.stderr for word in words), result.stderr


async def test_nothing_changed_after_all_bad_settings(
    api: kr8s.asyncio.Api, cluster_before: dict[str, str]
) -> None:
    assert await snapshot(api) == cluster_before


def test_unreadable_kubeconfig_is_a_clear_error(tmp_path) -> None:
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("this: [is not a kubeconfig")
    result = invoke("provision", kubeconfig=str(garbage), timeout=120)
    assert result.returncode != 0
    assert "kubeconfig" in result.stderr, result.stderr
