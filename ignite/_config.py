"""Project configuration: ``[tool.ignite]`` in ``pyproject.toml``, or an ``ignite.toml``.

Found as pytest finds its ini file: from the working directory upward, the first folder holding
an ``ignite.toml`` (any content, even empty) or a ``pyproject.toml`` with a ``[tool.ignite]``
table; in one folder ``ignite.toml`` wins. A ``pyproject.toml`` without the table is skipped and
the search goes on upward. ``IGNITE_CONFIG=PATH`` names the file instead (no search);
``IGNITE_CONFIG=none`` reads no file.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_ENV", "ConfigError", "ProjectConfig", "load_config"]

CONFIG_ENV = "IGNITE_CONFIG"
CONFIG_NAME = "ignite.toml"
PYPROJECT_NAME = "pyproject.toml"

#: Every key the file may hold, with what it must be (for the error naming a wrong one).
KEYS: dict[str, str] = {
    "autoload": "a boolean, e.g. autoload = false",
    "disable_plugins": 'a list of plugin names, e.g. disable_plugins = ["visdom"]',
    "plugins": "a table of one table of options per plugin, e.g. [{prefix}plugins.early_stopping] then patience = 5",
    "required_plugins": 'a list of requirements on distributions, e.g. required_plugins = ["ignite-checkpoint>=0.1"]',
}


class ConfigError(Exception):
    """The configuration file is unreadable or holds a wrong key or value (raised as a
    :class:`~ignite.PluginError` by the loader)."""


@dataclass(frozen=True)
class ProjectConfig:
    """What the project file says; empty (``path`` None) when no file is used."""

    path: Path | None = None
    #: ``tool.ignite.`` in a pyproject.toml, empty in an ignite.toml: how keys are named in messages.
    prefix: str = ""
    required_plugins: tuple[str, ...] = ()
    disable_plugins: tuple[str, ...] = ()
    autoload: bool | None = None
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Why no file is used, or how it was found, for ``ignite plugins``.
    found_by: str = ""

    def where(self, key: str = "") -> str:
        """``/p/pyproject.toml [tool.ignite]`` or, with a key, ``... key tool.ignite.KEY``."""
        table = "[tool.ignite]" if self.prefix else ""
        if not key:
            return f"{self.path} {table}".rstrip()
        return f"{self.path}, key {self.prefix}{key}"

    def plugin_table(self, name: str) -> str:
        """The TOML table header of one plugin's options, e.g. ``[tool.ignite.plugins.tensorboard]``."""
        return f"[{self.prefix}plugins.{name}] in {self.path}"


def load_config(start: Path | None = None) -> ProjectConfig:
    """The project configuration for a process whose working directory is ``start`` (default:
    the current one), as :envvar:`IGNITE_CONFIG` and the upward search decide.
    Raises :class:`ConfigError` naming the file, the key and the fix."""
    chosen = os.environ.get(CONFIG_ENV, "").strip()
    if chosen.lower() == "none":
        return ProjectConfig(found_by=f"none ({CONFIG_ENV}=none)")
    if chosen:
        path = Path(chosen).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_ENV}={chosen!r} names no file ({path}). "
                f"Name an existing file, or set {CONFIG_ENV}=none to read none."
            )
        data = _read(path)
        if path.name != PYPROJECT_NAME:
            return _parse(path, data, "", f"{CONFIG_ENV}={chosen}")
        tool = data.get("tool")
        if not isinstance(tool, Mapping) or "ignite" not in tool:
            raise ConfigError(f"{path} (named by {CONFIG_ENV}) has no [tool.ignite] table. Add one, or name an ignite.toml.")
        return _parse(path, tool["ignite"], "tool.ignite.", f"{CONFIG_ENV}={chosen}")
    start = (start or Path.cwd()).absolute()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return _parse(candidate, _read(candidate), "", f"found upward from {start}")
        candidate = folder / PYPROJECT_NAME
        if candidate.is_file():
            tool = _read(candidate).get("tool", {})
            if isinstance(tool, Mapping) and "ignite" in tool:
                return _parse(candidate, tool["ignite"], "tool.ignite.", f"found upward from {start}")
    return ProjectConfig(found_by=f"none (no {CONFIG_NAME}, no {PYPROJECT_NAME} with [tool.ignite] from {start} upward)")


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:  # its message ends "(at line L, column C)"
        fix = f"Fix the file, or set {CONFIG_ENV}=none to read none."
        raise ConfigError(f"{path} is not valid TOML: {error}. {fix}") from error
    except OSError as error:
        fix = f"Fix its permissions, or set {CONFIG_ENV}=none to read none."
        raise ConfigError(f"{path} cannot be read: {error}. {fix}") from error


def _parse(path: Path, table: Any, prefix: str, found_by: str) -> ProjectConfig:
    where = ProjectConfig(path=path, prefix=prefix)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: {prefix.rstrip('.') or 'the file'} must be a table of {', '.join(KEYS)}; got {_kind(table)}.")
    for key in table:
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else ""
            if key == "tool" and not prefix:  # [tool.ignite] copied from a pyproject.toml
                hint = f" In {CONFIG_NAME} the keys are at the top level, without [tool.ignite]."
            raise ConfigError(f"{where.where(key)}: unknown key.{hint} Known keys: {', '.join(KEYS)}.")
    autoload = table.get("autoload")
    if autoload is not None and not isinstance(autoload, bool):
        raise _wrong_type(where, "autoload", autoload)
    plugins = table.get("plugins", {})
    if not isinstance(plugins, Mapping):
        raise _wrong_type(where, "plugins", plugins)
    for name, options in plugins.items():
        if not isinstance(options, Mapping):
            # false/true here would be a second way to say what disable_plugins and an empty table say
            fix = (
                f' To turn it off write {prefix}disable_plugins = ["{name}"]; an empty table loads it with its defaults.'
                if isinstance(options, bool)
                else ""
            )
            raise ConfigError(
                f"{where.where('plugins.' + name)}: must be a table of the plugin's options, e.g. "
                f"[{prefix}plugins.{name}] then option = value; got {_kind(options)}.{fix}"
            )
    return ProjectConfig(
        path=path,
        prefix=prefix,
        required_plugins=_strings(where, table, "required_plugins"),
        disable_plugins=_strings(where, table, "disable_plugins"),
        autoload=autoload,
        plugins={name: dict(options) for name, options in plugins.items()},
        found_by=found_by,
    )


def _strings(where: ProjectConfig, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise _wrong_type(where, key, value)
    return tuple(item.strip() for item in value)


def _wrong_type(where: ProjectConfig, key: str, value: Any) -> ConfigError:
    expected = KEYS[key].format(prefix=where.prefix)
    return ConfigError(f"{where.where(key)}: must be {expected}; got {_kind(value)}.")


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"
