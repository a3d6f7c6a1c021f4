"""The compiled-template cache: used when safe, refreshed when a template changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from registry_provisioner import render
from registry_provisioner.render import _CompiledTemplates, _template_cache, template_cache_dir


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _render(templates: Path, cache: _CompiledTemplates) -> str:
    env = Environment(loader=FileSystemLoader(templates), bytecode_cache=cache)
    return env.get_template("t.j2").render(name="registry")


def test_compiled_templates_are_kept_in_a_private_directory(cache_home: Path) -> None:
    render._environment.cache_clear()
    try:
        env = render._environment()
        assert isinstance(env.bytecode_cache, _CompiledTemplates)
        env.get_template("deployment.yaml.j2")
    finally:
        render._environment.cache_clear()
    entries = list(template_cache_dir().iterdir())
    assert entries, "compiling a template wrote nothing to the cache"
    assert template_cache_dir().is_relative_to(cache_home)
    assert oct(template_cache_dir().stat().st_mode & 0o777) == oct(0o700)


def test_an_edited_template_is_compiled_afresh(cache_home: Path, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text("old {{ name }}")
    cache = _template_cache()
    assert cache is not None
    assert _render(templates, cache) == "old registry"
    (templates / "t.j2").write_text("new {{ name }}")
    assert _render(templates, cache) == "new registry"


def test_a_cache_directory_others_can_write_is_not_used(cache_home: Path) -> None:
    directory = template_cache_dir()
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    assert _template_cache() is None


def test_rendering_works_when_the_cache_cannot_be_written(cache_home: Path, tmp_path: Path) -> None:
    cache_home.write_text("a file where the cache directory would be")
    assert _template_cache() is None
    # A directory that vanished after start-up: writing an entry fails even for root.
    cache = _CompiledTemplates(str(tmp_path / "vanished"))
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text("hello {{ name }}")
    assert _render(templates, cache) == "hello registry"
    assert not (tmp_path / "vanished").exists()
