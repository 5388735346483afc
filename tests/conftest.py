"""Core tests see only the plugins they create: the standard plugins installed in the venv are
blocked by name (before import) for every core test."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from ignite import TrainingEvents
from ignite._plugins import installed_plugin_names

_INSTALLED_AT_START = installed_plugin_names()


@pytest.fixture(autouse=True)
def _only_test_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", ",".join(_INSTALLED_AT_START))
    monkeypatch.delenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", raising=False)


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write an installed-looking distribution (a .dist-info with entry points and a module)
    into a folder on sys.path, as pip would have left it."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    made: list[str] = []

    def make(dist: str, version: str, entry_points: dict[str, str], module: str, source: str) -> Path:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[ignite.plugins]\n{lines}\n")
        made.append(module)
        return info

    yield make
    for module in made:
        sys.modules.pop(module, None)


@pytest.fixture
def recording_plugin():
    """A factory of plugins recording every hook call as ``prefix:EVENT`` in a list."""
    return _recording_plugin


def _recording_plugin(log: list[str], prefix: str = "plugin"):
    """An object implementing every hook, appending ``prefix:event`` to ``log``."""
    from ignite import hookimpl

    namespace = {}
    for event in TrainingEvents:
        if event is TrainingEvents.EXCEPTION_RAISED:

            def hook(self, trainer, exception, _e=event):
                log.append(f"{prefix}:{_e.name}")

        else:

            def hook(self, trainer, _e=event):
                log.append(f"{prefix}:{_e.name}")

        hook.__name__ = event.hook_name
        namespace[event.hook_name] = hookimpl(hook)
    return type("RecordingPlugin", (), namespace)()
