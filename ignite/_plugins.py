"""Plugin discovery, loading and registration: entry points of group ``ignite.plugins``."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .events import TrainingEvents

from importlib.metadata import EntryPoint, entry_points

__all__ = ["PluginError", "PluginInactive", "PluginRecord"]

logger = logging.getLogger("ignite")

ENTRY_POINT_GROUP = "ignite.plugins"
DISABLE_AUTOLOAD_ENV = "IGNITE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "IGNITE_DISABLE_PLUGINS"
HOOK_NAMES = frozenset(event.hook_name for event in TrainingEvents)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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
            "error": str(self.error) if self.error is not None else None,
            "hooks": self.hooks(),
        }


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the hookspecs; each Trainer has its own."""
    manager = pluggy.PluginManager("ignite")
    manager.add_hookspecs(hookspecs)
    return manager


def _is_hookimpl(plugin: Any, attribute: str) -> bool:
    return hasattr(getattr(plugin, attribute, None), "ignite_impl")


def _distribution_key(entry_point: EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    if dist is None:
        return ("", entry_point.value)
    return (re.sub(r"[-_.]+", "-", dist.name).lower(), dist.version)


def _installed_entry_points() -> dict[str, list[EntryPoint]]:
    """Entry points by name: one per distinct distribution (normalised name and version)."""
    found: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        claimants = found.setdefault(entry_point.name, [])
        # The same distribution seen twice on sys.path (editable install and build folder) is one
        # claimant; keep the first, as the import system would.
        if all(_distribution_key(other) != _distribution_key(entry_point) for other in claimants):
            claimants.append(entry_point)
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


def _env_flag(variable: str) -> bool:
    """A boolean environment variable: 1/0, true/false, yes/no, on/off (any case); unset or
    empty is False. Anything else raises PluginError naming the variable."""
    value = os.environ.get(variable, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not value:
        return False
    raise PluginError(
        f"{variable}={os.environ[variable]!r} is not a boolean. Accepted values, in any case: "
        f"{', '.join(_TRUE)} (yes); {', '.join(_FALSE)} (no); empty or unset (no)."
    )


def _warn_unmatched_blocks(blocked: set[str], installed: list[str]) -> None:
    """Warn about names in IGNITE_DISABLE_PLUGINS that block nothing (a typo blocks nothing)."""
    for name in sorted(blocked.difference(installed)):
        parts = [part for part in re.split(r"[;:|\s]+", name) if part]
        separator = f" Separate names with commas: {DISABLE_PLUGINS_ENV}={','.join(parts)}." if len(parts) > 1 else ""
        logger.warning(
            "%s names %r, which is no installed plugin: it blocks nothing.%s%s",
            DISABLE_PLUGINS_ENV,
            name,
            separator,
            _names_hint(name, installed),
        )


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


def load_plugins(
    options: Any,
    manager: pluggy.PluginManager | None = None,
    *,
    registered_names: frozenset[str] = frozenset(),
) -> list[PluginRecord]:
    """Find every installed plugin; load, configure and register it into ``manager`` (a fresh
    one when None, as ``ignite plugins`` does), or skip it, as ``options`` and the environment
    say. Failures, registration refusals included, are returned as records with status
    ``failed`` and an error: a Trainer raises it, a listing shows it.

    ``options`` is ``Trainer(plugins=...)``: name -> dict of options, True or False. A name
    that is neither installed nor in ``registered_names``, or a bad
    ``IGNITE_DISABLE_PLUGIN_AUTOLOAD`` value, raises :class:`PluginError`.
    """
    options = _check_options(options)
    installed = _installed_entry_points()
    names = sorted(installed)
    unknown = [name for name in options if name not in installed and name not in registered_names]
    if unknown:
        raise PluginError(f"plugins= names an unknown plugin {unknown[0]!r}." + _names_hint(unknown[0], names))
    autoload = not _env_flag(DISABLE_AUTOLOAD_ENV)
    blocked = _env_names(DISABLE_PLUGINS_ENV)
    _warn_unmatched_blocks(blocked, names)
    manager = manager if manager is not None else new_plugin_manager()
    records = []
    for name, claimants in installed.items():
        record = _load_one(name, claimants, options.get(name), blocked, autoload)
        if record.status == "active":
            _register_or_fail(manager, record)
        records.append(record)
    return records


def _record(name: str, entry_point: EntryPoint) -> PluginRecord:
    dist = entry_point.dist
    return PluginRecord(
        name=name,
        distribution=dist.name if dist is not None else "unknown distribution",
        version=dist.version if dist is not None else "?",
        entry_point=entry_point.value,
    )


def _load_one(name: str, claimants: list[EntryPoint], option: Any, blocked: set[str], autoload: bool) -> PluginRecord:
    entry_point = claimants[0]
    record = _record(name, entry_point)
    # Blocked plugins are decided on before import: their code never runs.
    if option is False:
        record.status, record.reason = "disabled", f"plugins={{{name!r}: False}}"
        return record
    if name in blocked:
        record.status, record.reason = "disabled", f"{DISABLE_PLUGINS_ENV} names it"
        return record
    if not autoload and option is None:
        record.status = "disabled"
        record.reason = f"{DISABLE_AUTOLOAD_ENV}={os.environ[DISABLE_AUTOLOAD_ENV]} and plugins= does not name it"
        return record
    if len(claimants) > 1:
        # Loading either would silently hide the other: neither is imported until one goes.
        claims = " and ".join(f"{_record(name, other).origin} (entry point {other.value!r})" for other in claimants)
        return _failed(record, f"is claimed by {len(claimants)} distributions: {claims}", None, name_only=True)
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


def _failed(record: PluginRecord, what: str, cause: BaseException | None, *, name_only: bool = False) -> PluginRecord:
    """Mark ``record`` failed with ``what`` (and its cause) as the reason, and give it the
    PluginError to raise: the plugin, where it comes from, the cause and how to disable it."""
    because = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    record.status = "failed"
    record.reason = f"{what}{because}"
    where = "" if name_only else f" ({_where(record)})"
    if record.entry_point is None:  # registered in code: the caller's own object
        remedy = "Fix the plugin's code."
    else:
        remedy = (
            f"{'Uninstall one of them' if name_only else 'Fix or uninstall it'}, or disable it with "
            f"Trainer(..., plugins={{{record.name!r}: False}}) or {DISABLE_PLUGINS_ENV}={record.name}."
        )
    error = PluginError(f"Plugin {record.name!r}{where} {record.reason}. {remedy}")
    error.__cause__ = cause
    record.error = error
    return record


def _where(record: PluginRecord) -> str:
    return f"entry point {record.entry_point!r} of {record.origin}" if record.entry_point else record.origin


def _unknown_hook(plugin: Any) -> str | None:
    """Why ``plugin`` is refused for a hook name that no event has (likely a typo), or None."""
    for attribute in dir(plugin):
        if attribute.startswith("ignite_") and attribute not in HOOK_NAMES and _is_hookimpl(plugin, attribute):
            close = difflib.get_close_matches(attribute, sorted(HOOK_NAMES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return (
                f"implements {attribute!r}, which is not an ignite hook.{hint} "
                "The hooks are listed in ignite/hookspecs.py"
            )
    return None


def _register_or_fail(manager: pluggy.PluginManager, record: PluginRecord) -> bool:
    """Register ``record.plugin`` into ``manager`` after the checks pluggy does not make; on a
    refusal mark the record failed (see :func:`_failed`). Whether it was registered. The one
    validation path of Trainer and ``ignite plugins``."""
    problem = _unknown_hook(record.plugin)
    if problem is not None:
        _failed(record, problem, None)
        return False
    try:
        manager.register(record.plugin, name=record.name)
    except pluggy.PluginValidationError as error:
        detail = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        _failed(
            record,
            f"has a hook that does not match its spec ({detail}). "
            "A hook may take only the arguments its spec names in ignite/hookspecs.py",
            None,
        )
        assert record.error is not None
        record.error.__cause__ = error
        return False
    except ValueError as error:  # pluggy: this very object is already registered under another name
        other = manager.get_name(record.plugin)
        if other is not None:
            _failed(record, f"is the same object as plugin {other!r}, registered before it", None)
        else:
            _failed(record, "could not be registered", error)
        return False
    return True


def register(manager: pluggy.PluginManager, record: PluginRecord) -> None:
    """Register a loaded plugin, turning pluggy's validation errors into ones naming it."""
    if manager.has_plugin(record.name):
        raise PluginError(
            f"A plugin named {record.name!r} is already registered with this trainer; pass another name=."
        )
    if not _register_or_fail(manager, record):
        assert record.error is not None
        raise record.error


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
