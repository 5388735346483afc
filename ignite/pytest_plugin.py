"""Fixtures for testing ignite plugins, registered with pytest through the ``pytest11`` entry point
(``-p no:ignite.pytest_plugin`` turns them off).

- ``ignite_isolated``: trainers load only the plugins their ``plugins=`` names.
- ``ignite_autoload``: autoload as a user's machine would, with only the plugins you keep.
- ``ignite_trainer``: a :class:`~ignite.Trainer` built under ``ignite_isolated``.
- ``ignite_install``: ``pip install`` a distribution folder into a scratch site found by
  ``importlib.metadata``, in this process and in subprocesses.
- ``ignite_ranks``: run a script as two ranks of a real gloo group (:func:`ignite.testing.run_ranks`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import pytest

from ._config import CONFIG_ENV
from ._plugins import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV, ENTRY_POINT_GROUP
from .testing import run_ranks
from .trainer import Trainer

__all__ = ["IgniteAutoload", "IgniteInstall", "IgniteRanks", "IgniteTrainer"]

#: Left out of the copy that pip builds from: build output and environments.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


class IgniteTrainer(Protocol):
    """``ignite_trainer(training_data, training_update_function, plugins=None, **kwargs)``."""

    def __call__(
        self, training_data: Iterable[Any], training_update_function: Callable[[Any], Any], /,
        plugins: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Trainer: ...  # fmt: skip


class IgniteAutoload(Protocol):
    """``ignite_autoload(*keep)``: the names of the plugins it blocked."""

    def __call__(self, *keep: str) -> list[str]: ...


class IgniteInstall(Protocol):
    """``ignite_install(source)``: the scratch site folder the distribution was installed into."""

    def __call__(self, source: str | os.PathLike[str]) -> Path: ...


class IgniteRanks(Protocol):
    """``ignite_ranks(script, folder=None, world_size=2, timeout=180, env=None)``: outputs by rank."""

    def __call__(
        self, script: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None,
        world_size: int = 2, timeout: float = 180, env: Mapping[str, str] | None = None,
    ) -> list[str]: ...  # fmt: skip


@pytest.fixture
def ignite_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """For this test, trainers load exactly the installed plugins that their ``plugins=`` names:
    ``IGNITE_DISABLE_PLUGIN_AUTOLOAD=1``, no ``IGNITE_DISABLE_PLUGINS`` and no project file
    (``IGNITE_CONFIG=none``); subprocesses inherit it."""
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.delenv(DISABLE_PLUGINS_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, "none")


@pytest.fixture
def ignite_autoload(monkeypatch: pytest.MonkeyPatch) -> IgniteAutoload:
    """Call ``ignite_autoload(*keep)`` to turn autoload on for this test, blocking by name every
    plugin installed at that moment except ``keep``: trainers, ``ignite plugins`` and
    subprocesses see only those, plus what the test installs later (``ignite_install``). No
    project file is read (``IGNITE_CONFIG=none``)."""

    def autoload(*keep: str) -> list[str]:
        installed = {entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP)}
        missing = sorted(set(keep) - installed)
        if missing:
            raise ValueError(f"ignite_autoload: no installed plugin {missing}; installed: {sorted(installed)}")
        blocked = sorted(installed - set(keep))
        monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
        monkeypatch.setenv(DISABLE_PLUGINS_ENV, ",".join(blocked))
        monkeypatch.setenv(CONFIG_ENV, "none")  # a project file above the tests must not join in
        return blocked

    return autoload


@pytest.fixture
def ignite_trainer(ignite_isolated: None) -> IgniteTrainer:
    """A factory of trainers with only the plugins named in ``plugins=``, whatever else is
    installed: ``ignite_trainer(data, update, plugins={"checkpoint": {"dir": ...}})``."""

    def make(
        training_data: Iterable[Any], training_update_function: Callable[[Any], Any], /,
        plugins: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Trainer:  # fmt: skip
        return Trainer(training_data, training_update_function, plugins=plugins, **kwargs)

    return make


@pytest.fixture(scope="session")
def _ignite_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sites already installed in this session, by the digest of their source."""
    return {}


@pytest.fixture
def ignite_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, _ignite_sites: dict[str, Path]
) -> Iterator[IgniteInstall]:
    """Call ``ignite_install(folder)`` to ``pip install --no-deps --no-build-isolation`` the
    distribution in ``folder`` (built from a copy, so that the folder stays clean) into a scratch
    site, put first on ``sys.path`` and ``PYTHONPATH`` for this test; returns the site. Its entry
    points are then found like those of any installed distribution. A source already installed in
    this session (same files, same bytes) reuses its site; modules imported from a site are
    forgotten after the test, so the next test imports them afresh."""
    sites: list[Path] = []

    def install(source: str | os.PathLike[str]) -> Path:
        folder = Path(source).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"ignite_install: {folder} is not a folder")
        digest = _digest(folder)
        site = _ignite_sites.get(digest)
        if site is None:
            scratch = tmp_path_factory.mktemp("ignite-install")
            copy = scratch / folder.name
            shutil.copytree(folder, copy, ignore=_NOT_SOURCE)
            site = scratch / "site"
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                       "--no-index", "--disable-pip-version-check", "--target", str(site), str(copy)]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"ignite_install: pip could not install {folder}:\n{result.stdout}{result.stderr}")
            _ignite_sites[digest] = site
        monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        sites.append(site)
        return site

    yield install
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if where is not None and any(Path(where).is_relative_to(site) for site in sites):
            del sys.modules[name]


def _digest(folder: Path) -> str:
    """A digest of the files pip would build from: their paths and bytes."""
    digest = hashlib.sha256()
    for path in sorted(_source_files(folder)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_files(folder: Path) -> Iterator[Path]:
    for root, directories, files in os.walk(folder):
        ignored = _NOT_SOURCE(root, directories + files)
        directories[:] = [name for name in directories if name not in ignored]
        yield from (Path(root, name) for name in files if name not in ignored)


@pytest.fixture
def ignite_ranks(tmp_path: Path) -> IgniteRanks:
    """Call ``ignite_ranks(script)`` to run ``python SCRIPT RANK WORLD_SIZE FOLDER`` as two ranks
    of a gloo group (see :func:`ignite.testing.run_ranks`); ``folder`` defaults to ``tmp_path``.
    Returns the outputs by rank; any rank's failure raises AssertionError with every output."""

    def ranks(
        script: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None,
        world_size: int = 2, timeout: float = 180, env: Mapping[str, str] | None = None,
    ) -> list[str]:  # fmt: skip
        return run_ranks(script, tmp_path if folder is None else folder, world_size, timeout, env)

    return ranks
