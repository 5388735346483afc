"""Plugin discovery, loading and registration: entry points of group ``ignite.plugins``."""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .events import TrainingEvents

from importlib.metadata import EntryPoint, entry_points

__all__ = ["PluginError", "PluginInactive", "PluginRecord"]

ENTRY_POINT_GROUP = "ignite.plugins"
DISABLE_AUTOLOAD_ENV = "IGNITE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "IGNITE_DISABLE_PLUGINS"
HOOK_NAMES = frozenset(event.hook_name for event in TrainingEvents)


class PluginError(Exception):
    """A plugin could not be found, loaded, configured or registered. The message names the
    plugin, where it comes from, the cause and what to do."""


class PluginInactive(Exception):
    """Raised by a plugin's ``__init__`` when it lacks what it needs to act (an optimizer, a
    folder). The plugin is then not registered; the message is logged once as the reason."""


@dataclass
class PluginRecord:
    """What became of one plugin: where it comes from and its status."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: str = "active"  # active | inactive | disabled | failed
    reason: str = ""
    plugin: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        """``ignite-visdom 0.1.0`` for an installed plugin, ``registered in code`` otherwise."""
        if self.distribution is None:
            return "registered in code"
        return f"{self.distribution} {self.version}"

    def hooks(self) -> list[str]:
        """The hooks the loaded plugin implements, in event order."""
        if self.plugin is None:
            return []
        return [event.hook_name for event in TrainingEvents if _is_hookimpl(self.plugin, event.hook_name)]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as ``ignite plugins --json`` prints it."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "status": self.status,
            "reason": self.reason,
            "hooks": self.hooks(),
        }


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the hookspecs; each Trainer has its own."""
    manager = pluggy.PluginManager("ignite")
    manager.add_hookspecs(hookspecs)
    return manager


def _is_hookimpl(plugin: Any, attribute: str) -> bool:
    return hasattr(getattr(plugin, attribute, None), "ignite_impl")


def _installed_entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can be seen twice on sys.path (e.g. an editable install and a
        # build folder); keep the first, as the import system would.
        found.setdefault(entry_point.name, entry_point)
    return found


def installed_plugin_names() -> list[str]:
    """Names of the plugins installed in this environment, sorted."""
    return sorted(_installed_entry_points())


def _names_hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    listed = ", ".join(known) if known else "none"
    return (f" Did you mean {close[0]!r}?" if close else "") + f" Installed plugins: {listed}."


def _env_names(variable: str) -> set[str]:
    return {name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()}


def _check_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"plugins= must be a dict of plugin name to options, e.g. {{'early_stopping': {{'patience': 3}}, "
            f"'visdom': False}}; got {type(options).__name__}"
        )
    for name, value in options.items():
        if not isinstance(value, (Mapping, bool)) and value is not None:
            raise TypeError(
                f"plugins={{{name!r}: ...}} must be a dict of options, True (defaults) or False (disabled); "
                f"got {type(value).__name__}"
            )
    return dict(options)


def load_plugins(options: Any, *, registered_names: frozenset[str] = frozenset()) -> list[PluginRecord]:
    """Find every installed plugin and load, configure or skip it as ``options`` and the
    environment say. Failures are returned as records with status ``failed`` and an error.

    ``options`` is ``Trainer(plugins=...)``: name -> dict of options, True or False. A name
    that is neither installed nor in ``registered_names`` raises :class:`PluginError`.
    """
    options = _check_options(options)
    installed = _installed_entry_points()
    unknown = [name for name in options if name not in installed and name not in registered_names]
    if unknown:
        raise PluginError(f"plugins= names an unknown plugin {unknown[0]!r}." + _names_hint(unknown[0], sorted(installed)))
    blocked = _env_names(DISABLE_PLUGINS_ENV)
    autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    return [_load_one(name, entry_point, options.get(name), blocked, autoload) for name, entry_point in installed.items()]


def _load_one(name: str, entry_point: EntryPoint, option: Any, blocked: set[str], autoload: bool) -> PluginRecord:
    dist = entry_point.dist
    record = PluginRecord(
        name=name,
        distribution=dist.name if dist is not None else "unknown distribution",
        version=dist.version if dist is not None else "?",
        entry_point=entry_point.value,
    )
    # Blocked plugins are decided on before import: their code never runs.
    if option is False:
        record.status, record.reason = "disabled", f"plugins={{{name!r}: False}}"
        return record
    if name in blocked:
        record.status, record.reason = "disabled", f"{DISABLE_PLUGINS_ENV} names it"
        return record
    if not autoload and option is None:
        record.status, record.reason = "disabled", f"{DISABLE_AUTOLOAD_ENV}=1 and plugins= does not name it"
        return record
    try:
        loaded = entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit from an import is a plugin failure too
        return _failed(record, "failed to import", error)
    return instantiate(record, loaded, option if isinstance(option, Mapping) else {})


def instantiate(record: PluginRecord, loaded: Any, options: Mapping[str, Any]) -> PluginRecord:
    """Make the plugin object: a module as it is, a class called with the options."""
    if not isinstance(loaded, type):
        if options:
            return _failed(record, "takes no options (it is a module, not a class)", None)
        record.plugin = loaded
        return record
    unknown_option = _unknown_option(loaded, options)
    if unknown_option is not None:
        return _failed(record, unknown_option, None)
    try:
        record.plugin = loaded(**options)
    except PluginInactive as inactive:
        record.status, record.reason = "inactive", str(inactive)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit from a constructor is a plugin failure too
        return _failed(record, "failed to construct", error)
    return record


def _unknown_option(cls: type, options: Mapping[str, Any]) -> str | None:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - classes implemented in C
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    accepted = [n for n, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for option in options:
        if option not in accepted:
            close = difflib.get_close_matches(option, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return f"has no option {option!r}.{hint} Its options: {', '.join(accepted) or 'none'}"
    return None


def _failed(record: PluginRecord, what: str, cause: BaseException | None) -> PluginRecord:
    because = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    record.status = "failed"
    record.reason = f"{what}{because}"
    where = f"entry point {record.entry_point!r} of {record.origin}" if record.entry_point else record.origin
    error = PluginError(
        f"Plugin {record.name!r} ({where}) {record.reason}. "
        f"Fix or uninstall it, or disable it with Trainer(..., plugins={{{record.name!r}: False}}) "
        f"or {DISABLE_PLUGINS_ENV}={record.name}."
    )
    error.__cause__ = cause
    record.error = error
    return record


def check_hookimpls(plugin: Any, name: str, origin: str) -> None:
    """Refuse a plugin with a hook name that no event has (likely a typo)."""
    for attribute in dir(plugin):
        if attribute.startswith("ignite_") and attribute not in HOOK_NAMES and _is_hookimpl(plugin, attribute):
            raise PluginError(
                f"Plugin {name!r} ({origin}) implements {attribute!r}, which is not an ignite hook."
                + (
                    f" Did you mean {close[0]!r}?"
                    if (close := difflib.get_close_matches(attribute, sorted(HOOK_NAMES), n=1))
                    else ""
                )
                + " The hooks are listed in ignite/hookspecs.py."
            )


def register(manager: pluggy.PluginManager, record: PluginRecord) -> None:
    """Register a loaded plugin, turning pluggy's validation errors into ones naming it."""
    check_hookimpls(record.plugin, record.name, record.origin)
    if manager.has_plugin(record.name):
        raise PluginError(
            f"A plugin named {record.name!r} is already registered with this trainer; pass another name=."
        )
    try:
        manager.register(record.plugin, name=record.name)
    except pluggy.PluginValidationError as error:
        raise PluginError(
            f"Plugin {record.name!r} ({record.origin}) has a hook that does not match its spec: {error}. "
            "A hook may take only the arguments its spec names in ignite/hookspecs.py."
        ) from error


def culprit(manager: pluggy.PluginManager, error: BaseException) -> tuple[str, str] | None:
    """The plugin and hook names of the implementation that ``error`` was raised in, found by
    matching its traceback frames against the code of every registered implementation."""
    codes = {}
    for event in TrainingEvents:
        for impl in getattr(manager.hook, event.hook_name).get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                codes[code] = (impl.plugin_name, event.hook_name)
    traceback = error.__traceback__
    while traceback is not None:
        found = codes.get(traceback.tb_frame.f_code)
        if found is not None:
            return found
        traceback = traceback.tb_next
    return None
