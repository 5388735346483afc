"""Core tests see only the plugins they install: every plugin installed before a test is
blocked by name (before import), with autoload on. The fixtures come from ignite.pytest_plugin."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ignite import TrainingEvents
from ignite.pytest_plugin import IgniteAutoload, IgniteInstall


@pytest.fixture(autouse=True)
def _only_test_plugins(ignite_autoload: IgniteAutoload) -> None:
    ignite_autoload()


@pytest.fixture
def make_distribution(tmp_path: Path, ignite_install: IgniteInstall) -> Callable[..., Path]:
    """Write a distribution's source (setup.cfg with its entry points, one module) and install it
    with pip into a scratch site (``ignite_install``); returns its .dist-info folder."""

    def make(dist: str, version: str, entry_points: dict[str, str], module: str, source: str) -> Path:
        folder = tmp_path / "sources" / dist
        folder.mkdir(parents=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        lines = "".join(f"\n    {name} = {target}" for name, target in entry_points.items())
        (folder / "setup.cfg").write_text(
            f"[metadata]\nname = {dist}\nversion = {version}\n\n[options]\npy_modules = {module}\n\n"
            f"[options.entry_points]\nignite.plugins ={lines}\n"
        )
        (folder / "setup.py").write_text("from setuptools import setup\nsetup()\n")
        site = ignite_install(folder)
        (info,) = site.glob(f"{dist.replace('-', '_')}-{version}.dist-info")
        return info

    return make


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
