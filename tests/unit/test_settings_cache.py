"""Settings validated before: read back for the same input only, never for a rejected one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from registry_provisioner import settings_cache
from registry_provisioner.config import load_settings
from registry_provisioner.errors import ConfigError
from registry_provisioner.settings_cache import KEPT_ENTRIES, settings_cache_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entries() -> list[Path]:
    return sorted(settings_cache_dir().glob("*.pickle"))


def test_the_same_input_is_read_back_without_loading_pydantic(cache_home: Path) -> None:
    probe = (
        "import sys; from registry_provisioner.config import load_settings; "
        "s = load_settings(None, {'service.ip': '10.0.0.9'}); "
        "print(s.service.ip, 'pydantic' in sys.modules)"
    )
    env = {"XDG_CACHE_HOME": str(cache_home), "PATH": "/usr/bin:/bin", "HOME": str(cache_home)}

    def run() -> list[str]:
        result = subprocess.run(
            [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert run() == ["10.0.0.9", "True"]  # validated, and kept
    assert run() == ["10.0.0.9", "False"]  # read back


def test_read_back_settings_equal_validated_ones(cache_home: Path) -> None:
    first = load_settings(None, {"service.ip": "10.0.0.2"})
    assert len(_entries()) == 1
    assert load_settings(None, {"service.ip": "10.0.0.2"}) == first


def test_another_input_is_validated_afresh(cache_home: Path) -> None:
    load_settings(None, {"service.ip": "10.0.0.9"})
    assert load_settings(None, {"service.ip": "10.0.0.10"}).service.ip == "10.0.0.10"
    assert len(_entries()) == 2


def test_a_rejected_input_is_not_kept_and_is_reported_every_time(cache_home: Path) -> None:
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"service\.ip"):
            load_settings(None, {"service.ip": "not-an-ip"})
    assert _entries() == []


def test_a_damaged_entry_is_a_miss_and_is_replaced(cache_home: Path) -> None:
    first = load_settings(None, {"service.ip": "10.0.0.2"})
    [entry] = _entries()
    entry.write_bytes(b"not a pickle")
    assert load_settings(None, {"service.ip": "10.0.0.2"}) == first
    assert entry.read_bytes() != b"not a pickle"


def test_changed_validating_code_gives_the_input_a_new_entry(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_settings(None, {"service.ip": "10.0.0.2"})
    monkeypatch.setattr(settings_cache, "_code_fingerprint", lambda: b"other code")
    load_settings(None, {"service.ip": "10.0.0.2"})
    assert len(_entries()) == 2


def test_only_the_newest_entries_are_kept(cache_home: Path) -> None:
    for host in range(1, KEPT_ENTRIES + 4):
        load_settings(None, {"service.ip": f"10.0.0.{host}"})
    assert len(_entries()) == KEPT_ENTRIES


def test_a_directory_others_can_write_is_not_used(cache_home: Path) -> None:
    directory = settings_cache_dir()
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    load_settings(None, {"service.ip": "10.0.0.2"})
    assert _entries() == []


def test_a_failed_write_leaves_no_partial_file(cache_home: Path) -> None:
    first = load_settings(None, {"service.ip": "10.0.0.2"})
    [entry] = _entries()
    entry.unlink()
    entry.mkdir()  # the rename onto the entry now fails
    (entry / "keep").write_text("")
    assert load_settings(None, {"service.ip": "10.0.0.2"}) == first
    assert [path.name for path in settings_cache_dir().iterdir()] == [entry.name]
