"""Plugin discovery, loading and registration: entry points of group ``ignite.plugins``."""

from __future__ import annotations

import difflib
import heapq
import inspect
import logging
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, distribution, entry_points
from typing import Any, Literal

import pluggy

from . import _config, hookspecs
from ._config import ProjectConfig
from .events import COUNTER, TrainingEvents

__all__ = ["PHASES", "PluginError", "PluginInactive", "PluginRecord"]

logger = logging.getLogger("ignite")

ENTRY_POINT_GROUP = "ignite.plugins"
DISABLE_AUTOLOAD_ENV = "IGNITE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "IGNITE_DISABLE_PLUGINS"
CORE_DISTRIBUTION = "ignite-trainer"
# A Requires-Dist line on the core, told apart cheaply so that packaging parses only those.
_CORE_REQUIREMENT = re.compile(r"\s*ignite[-_.]+trainer(?![-_.\w])", re.IGNORECASE)
HOOK_NAMES = frozenset(event.hook_name for event in TrainingEvents)
#: The phases a plugin declares with ``ignite_phase``, in the order their hooks run at each event.
PHASES = ("observe", "decide", "log", "checkpoint")
DEFAULT_PHASE = "log"
_PHASE_RANK = {phase: rank for rank, phase in enumerate(PHASES)}
#: The hooks a plugin may give a period in ``ignite_every``: those of the events ``every(n)`` filters.
PERIODIC_HOOKS = frozenset(event.hook_name for event in COUNTER)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class PluginError(Exception):
    """A plugin could not be found, loaded, configured or registered. The message names the
    plugin, where it comes from, the cause and what to do."""


class PluginInactive(Exception):
    """Raised by a plugin's ``__init__`` when it lacks what it needs to act (an optimizer, a
    folder). The plugin is then not registered; the message is logged once as the reason."""


PluginStatus = Literal["active", "inactive", "disabled", "failed"]


@dataclass
class PluginRecord:
    """What became of one plugin: where it comes from and its status."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: PluginStatus = "active"
    reason: str = ""
    plugin: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    #: The options it was loaded with: the project file's, merged under plugins='s.
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def origin(self) -> str:
        """``ignite-visdom 0.1.0`` for an installed plugin, ``registered in code`` otherwise."""
        if self.distribution is None:
            return "registered in code"
        return f"{self.distribution} {self.version}"

    def hooks(self) -> list[str]:
        """The hooks the loaded plugin implements, in event order (not those its
        ``ignite_every`` turns off with None or 0)."""
        if self.plugin is None:
            return []
        periods = _safe_periods(self.plugin)
        return [
            event.hook_name
            for event in TrainingEvents
            if _is_hookimpl(self.plugin, event.hook_name) and periods.get(event.hook_name, 1)
        ]

    def periods(self) -> dict[str, int]:
        """The hooks that run only every n-th time their event fires, with n, as declared."""
        if self.plugin is None:
            return {}
        return {hook: n for hook, n in _safe_periods(self.plugin).items() if n and n > 1 and hook in self.hooks()}

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
            "periods": self.periods(),
            "phase": phase_of(self.plugin) if self.plugin is not None else None,
            "options": dict(self.options),
        }


class _Manager(pluggy.PluginManager):
    """pluggy's manager, leaving out the hooks a plugin's ``ignite_every`` gives None or 0."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        options = super().parse_hookimpl_opts(plugin, name)
        if options is not None and name in PERIODIC_HOOKS and not _safe_periods(plugin).get(name, 1):
            return None  # declared off: registered for no event, so never called
        return options


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the hookspecs; each Trainer has its own."""
    manager = _Manager("ignite")
    manager.add_hookspecs(hookspecs)
    return manager


# -- declarations: periods, phase, order ------------------------------------------------


def declared_periods(plugin: Any) -> dict[str, int | None]:
    """What the plugin's ``ignite_every()`` returns (hook name -> period), or {} without one."""
    every = getattr(plugin, "ignite_every", None)
    return {} if every is None else dict(every())


def _safe_periods(plugin: Any) -> dict[str, Any]:
    # Used where a bad declaration is reported elsewhere (at registration): never raises.
    try:
        return declared_periods(plugin)
    except Exception:
        return {}


def phase_of(plugin: Any) -> str:
    """The plugin's ``ignite_phase``, :data:`DEFAULT_PHASE` when it declares none."""
    return getattr(plugin, "ignite_phase", DEFAULT_PHASE)


def _relations(plugin: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(getattr(plugin, "ignite_after", ())), tuple(getattr(plugin, "ignite_before", ()))


def check_period(hook: str, n: Any) -> None:
    """Raise ValueError unless ``n`` is a valid period for ``hook``: an int >= 0, or None."""
    if n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        return
    raise ValueError(f"the period of {hook} must be a positive int (1: every time), or None or 0 (never); got {n!r}")


def _declaration_problem(plugin: Any) -> str | None:
    """Why the plugin's ``ignite_every``, ``ignite_phase``, ``ignite_after`` or
    ``ignite_before`` is refused, or None."""
    every = getattr(plugin, "ignite_every", None)
    if every is not None:
        if not callable(every):
            return "has an ignite_every that is not a method: define def ignite_every(self) -> dict[str, int | None]"
        try:
            periods = every()
        except Exception as error:
            return f"raised {type(error).__name__}: {error} in ignite_every()"
        if not isinstance(periods, Mapping):
            return f"ignite_every() must return a dict of hook name to period; got {type(periods).__name__}"
        for hook, n in periods.items():
            if hook not in HOOK_NAMES:
                close = difflib.get_close_matches(str(hook), sorted(HOOK_NAMES), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                return f"gives ignite_every() a period for {hook!r}, which is not an ignite hook.{hint}"
            if hook not in PERIODIC_HOOKS:
                return (
                    f"gives ignite_every() a period for {hook}, whose event has no counter: periods apply to "
                    f"{', '.join(sorted(PERIODIC_HOOKS))}"
                )
            if not _is_hookimpl(plugin, hook):
                return f"gives ignite_every() a period for {hook}, which it does not implement with @hookimpl"
            try:
                check_period(hook, n)
            except ValueError as error:
                return f"declares in ignite_every(): {error}"
    phase = phase_of(plugin)
    if phase not in _PHASE_RANK:
        return f"declares ignite_phase = {phase!r}; the phases are {', '.join(map(repr, PHASES))}"
    for attribute in ("ignite_after", "ignite_before"):
        names = getattr(plugin, attribute, ())
        if isinstance(names, str) or not all(isinstance(name, str) for name in names):
            return f"declares {attribute} = {names!r}: it must be a tuple of plugin names, e.g. ({str(names)!r},)"
    return None


def _sort(keys: Mapping[str, tuple[Any, ...]], edges: list[tuple[str, str, str]], where: str) -> list[str]:
    """The names of ``keys`` in order of their keys, each edge (first, then, declared by)
    respected, ties broken by name. An edge against the keys or a cycle raises PluginError."""
    successors: dict[str, list[str]] = {name: [] for name in keys}
    waiting = dict.fromkeys(keys, 0)
    for first, then, declared in edges:
        if keys[first] > keys[then]:
            raise PluginError(
                f"Plugins {first!r} and {then!r} contradict each other{where}: {declared} puts {first!r} first, but "
                f"{_why_later(keys, first, then)}. Remove that declaration, or change ignite_phase so that they agree."
            )
        successors[first].append(then)
        waiting[then] += 1
    ready = [(keys[name], name) for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        _, name = heapq.heappop(ready)
        ordered.append(name)
        for then in successors[name]:
            waiting[then] -= 1
            if waiting[then] == 0:
                heapq.heappush(ready, (keys[then], then))
    if len(ordered) < len(keys):
        stuck = sorted(set(keys) - set(ordered))
        declared = "; ".join(sorted({d for f, t, d in edges if f in stuck and t in stuck}))
        raise PluginError(
            f"Plugins {', '.join(map(repr, stuck))} declare a cycle of ignite_after/ignite_before{where} ({declared}): "
            "no order satisfies them. Remove one of these declarations."
        )
    return ordered


def _why_later(keys: Mapping[str, tuple[Any, ...]], first: str, then: str) -> str:
    # keys are (wrapper, tryfirst/trylast, phase rank) or (phase rank,): name the first part that differs.
    (a, b) = keys[first], keys[then]
    if len(a) == 1 or a[:2] == b[:2]:
        return (
            f"{first!r} is in phase {PHASES[a[-1]]!r} and {then!r} in phase {PHASES[b[-1]]!r} "
            f"(phases run {', '.join(PHASES)})"
        )
    return f"{then!r}'s hook is marked tryfirst, a hookwrapper or {first!r}'s trylast there"


def _edges(plugins: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(first, then, declaration) for every ignite_after/ignite_before naming a plugin present."""
    edges = []
    for name, plugin in plugins.items():
        after, before = _relations(plugin)
        edges += [(other, name, f"{name!r} declares ignite_after={after!r}") for other in after if other in plugins]
        edges += [(name, other, f"{name!r} declares ignite_before={before!r}") for other in before if other in plugins]
    return edges


def plugin_order(plugins: Mapping[str, Any]) -> list[str]:
    """The plugins' names in declared order (phase, then ignite_after/ignite_before, then name);
    a cycle or a declaration against the phases raises PluginError naming the plugins."""
    return _sort({name: (_PHASE_RANK[phase_of(plugin)],) for name, plugin in plugins.items()}, _edges(plugins), "")


def call_order(impls: list[Any], hook_name: str) -> list[Any]:
    """pluggy's implementations of one hook in the order to call them: hookwrappers first,
    then ``tryfirst``, plain, ``trylast`` ones; within each, by phase, ignite_after /
    ignite_before and name. Raises PluginError for a cycle or a contradiction."""
    by_name = {impl.plugin_name: impl for impl in impls}
    keys = {
        name: (
            0 if impl.hookwrapper or impl.wrapper else 1,
            0 if impl.tryfirst else 2 if impl.trylast else 1,
            _PHASE_RANK.get(phase_of(impl.plugin), _PHASE_RANK[DEFAULT_PHASE]),
        )
        for name, impl in by_name.items()
    }
    edges = _edges({name: impl.plugin for name, impl in by_name.items()})
    return [by_name[name] for name in _sort(keys, edges, f" at {hook_name}")]


def event_orders(manager: pluggy.PluginManager) -> dict[TrainingEvents, list[str]]:
    """Per event, the plugins whose hook it calls, in call order (``ignite plugins`` shows it)."""
    orders = {}
    for event in TrainingEvents:
        impls = getattr(manager.hook, event.hook_name).get_hookimpls()
        if impls:
            orders[event] = [impl.plugin_name for impl in call_order(impls, event.hook_name)]
    return orders


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


def _warn_unmatched_blocks(blocked: set[str], installed: list[str], source: str = DISABLE_PLUGINS_ENV) -> None:
    """Warn about names in IGNITE_DISABLE_PLUGINS (or the file's ``disable_plugins``, the
    ``source``) that block nothing: a typo blocks nothing, a plugin not installed here needs no block."""
    for name in sorted(blocked.difference(installed)):
        parts = [part for part in re.split(r"[;:|\s]+", name) if part]
        separator = (
            f" Separate names with commas: {DISABLE_PLUGINS_ENV}={','.join(parts)}."
            if len(parts) > 1 and source == DISABLE_PLUGINS_ENV
            else ""
        )
        logger.warning(
            "%s names %r, which is no installed plugin: it blocks nothing.%s%s",
            source,
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


def project_config() -> ProjectConfig:
    """The project file's configuration (see :mod:`ignite._config`); its mistakes raise a
    :class:`PluginError` naming the file, the key and the fix."""
    try:
        return _config.load_config()
    except _config.ConfigError as error:
        raise PluginError(str(error)) from error.__cause__


def load_plugins(
    options: Any,
    manager: pluggy.PluginManager | None = None,
    *,
    config: ProjectConfig | None = None,
    check_required: bool = True,
    registered_names: frozenset[str] = frozenset(),
) -> list[PluginRecord]:
    """Find every installed plugin; load, configure and register it into ``manager`` (a fresh
    one when None, as ``ignite plugins`` does), or skip it, as ``options``, the project file
    (``config``; found from the working directory when None) and the environment say.
    Failures, registration refusals included, are returned as records with status ``failed``
    and an error: a Trainer raises it, a listing shows it.

    ``options`` is ``Trainer(plugins=...)``: name -> dict of options, True or False; it
    overrides the file plugin by plugin, and the environment variables override both. A name
    that is neither installed nor in ``registered_names`` (in ``options`` or the file), a
    mistake in the file, a bad ``IGNITE_DISABLE_PLUGIN_AUTOLOAD`` value or, with
    ``check_required``, a ``required_plugins`` entry not met raises :class:`PluginError`.
    """
    options = _check_options(options)
    config = config if config is not None else project_config()
    installed = _installed_entry_points()
    names = sorted(installed)
    unknown = [name for name in options if name not in installed and name not in registered_names]
    if unknown:
        raise PluginError(f"plugins= names an unknown plugin {unknown[0]!r}." + _names_hint(unknown[0], names))
    if check_required:  # first: a missing plugin's options would be reported as unknown
        error = required_error(config, installed)
        if error is not None:
            raise error
    # Options for a plugin that is not here would be lost silently; a block of one is harmless.
    unknown = [name for name in config.plugins if name not in installed and name not in registered_names]
    if unknown:
        raise PluginError(
            f"{config.plugin_table(unknown[0])} names no installed plugin.{_names_hint(unknown[0], names)} "
            f"Fix the name, install the plugin (and list its distribution in {config.prefix}required_plugins), "
            "or remove the table."
        )
    autoload, autoload_off = _autoload(config)
    blocked = _env_names(DISABLE_PLUGINS_ENV)
    _warn_unmatched_blocks(blocked, names)
    file_blocked = set(config.disable_plugins)
    _warn_unmatched_blocks(file_blocked, names, f"{config.prefix}disable_plugins in {config.path}")
    manager = manager if manager is not None else new_plugin_manager()
    records = []
    for name, claimants in installed.items():
        record = _record(name, claimants[0])
        code, from_file = options.get(name), config.plugins.get(name)
        reason = _disabled_reason(name, code, from_file is not None, blocked, file_blocked, autoload, autoload_off, config)
        if reason is not None:
            record.status, record.reason = "disabled", reason
        else:
            record.options = {**(from_file or {}), **(code if isinstance(code, Mapping) else {})}
            file_keys = frozenset(from_file or ()) - frozenset(code if isinstance(code, Mapping) else ())
            _load_one(record, claimants, file_keys, config.plugin_table(name) if file_keys else "")
        if record.status == "active":
            _register_or_fail(manager, record)
        records.append(record)
    return records


def _autoload(config: ProjectConfig) -> tuple[bool, str]:
    """Whether to load plugins that nobody names, and who turned that off: the environment
    variable when it is set (it wins over the file), else the file's ``autoload``."""
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip():
        return not _env_flag(DISABLE_AUTOLOAD_ENV), f"{DISABLE_AUTOLOAD_ENV}={os.environ[DISABLE_AUTOLOAD_ENV]}"
    if config.autoload is False:
        return False, f"{config.prefix}autoload = false in {config.path}"
    return True, ""


def _disabled_reason(
    name: str,
    code: Any,
    in_file: bool,
    blocked: set[str],
    file_blocked: set[str],
    autoload: bool,
    autoload_off: str,
    config: ProjectConfig,
) -> str | None:
    """Why the plugin ``name`` is not loaded, or None. Decided before import: the code of a
    disabled plugin never runs."""
    if code is False:
        return f"plugins={{{name!r}: False}}"
    if name in blocked:
        return f"{DISABLE_PLUGINS_ENV} names it"
    if name in file_blocked and code is None:  # plugins= names it: code overrides the file
        return f"{config.prefix}disable_plugins in {config.path} names it"
    if not autoload and code is None and not in_file:
        return f"{autoload_off} and neither plugins= nor the project file names it"
    return None


def required_error(config: ProjectConfig, installed: Mapping[str, list[EntryPoint]] | None = None) -> PluginError | None:
    """The error listing every ``required_plugins`` entry of ``config`` that is not installed
    or not at a matching version, with the pip command that fixes it; None when all are met."""
    if not config.required_plugins:
        return None
    from packaging.requirements import InvalidRequirement, Requirement  # only a file with required_plugins pays its import

    installed = installed if installed is not None else _installed_entry_points()
    # required_plugins takes distributions; a plugin name written there gets its distribution named.
    plugin_dists = {name: _record(name, claimants[0]).distribution for name, claimants in installed.items()}
    unmet: list[str] = []
    fixes: list[str] = []
    for text in config.required_plugins:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise PluginError(
                f"{config.where('required_plugins')}: {text!r} is not a requirement ({error}). "
                "Write a distribution name with an optional version, e.g. \"ignite-checkpoint>=0.1\"."
            ) from None
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # not for this platform or Python
        try:
            version = distribution(requirement.name).version
        except PackageNotFoundError:
            if requirement.name in plugin_dists:  # pip would install something else, or nothing
                dist = plugin_dists[requirement.name]
                unmet.append(f"  {text}: no distribution of that name; it is the plugin of {dist}: write \"{dist}\" instead")
            else:
                unmet.append(f"  {text}: not installed")
                fixes.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"  {text}: {requirement.name} {version} is installed")
            fixes.append(text)
    if not unmet:
        return None
    return PluginError(
        f"Required plugins are missing or at the wrong version ({config.prefix}required_plugins in {config.path}):\n"
        + "\n".join(unmet)
        + (f"\nInstall them with: pip install {' '.join(shlex.quote(fix) for fix in fixes)}" if fixes else "")
    )


def _record(name: str, entry_point: EntryPoint) -> PluginRecord:
    dist = entry_point.dist
    return PluginRecord(
        name=name,
        distribution=dist.name if dist is not None else "unknown distribution",
        version=dist.version if dist is not None else "?",
        entry_point=entry_point.value,
    )


def _load_one(record: PluginRecord, claimants: list[EntryPoint], file_keys: frozenset[str], file_table: str) -> None:
    """Import and make the plugin of ``record`` with ``record.options``, recording the outcome."""
    name, entry_point = record.name, claimants[0]
    if len(claimants) > 1:
        # Loading either would silently hide the other: neither is imported until one goes.
        claims = " and ".join(f"{_record(name, other).origin} (entry point {other.value!r})" for other in claimants)
        _failed(record, f"is claimed by {len(claimants)} distributions: {claims}", None, name_only=True)
        return
    # A plugin built for another core is refused before import: its code may not even import.
    if entry_point.dist is not None and _core_mismatch(record, entry_point.dist):
        return
    try:
        loaded = entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit from an import is a plugin failure too
        _failed(record, "failed to import", error)
        return
    instantiate(record, loaded, record.options, file_keys=file_keys, file_table=file_table)


def _core_mismatch(record: PluginRecord, dist: Distribution) -> bool:
    """Whether ``dist`` declares a requirement on ignite-trainer that the running core does not
    meet; if so, ``record`` is marked failed with both versions and the fix."""
    lines = [line for line in dist.requires or () if _CORE_REQUIREMENT.match(line)]
    if not lines:
        return False
    from packaging.requirements import InvalidRequirement, Requirement  # only plugins that declare one pay its import

    from . import __version__

    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            _failed(record, f"declares an unreadable requirement {line!r} in its metadata ({error})", None)
            return True
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(__version__, prereleases=True):
            wanted = f"{CORE_DISTRIBUTION}{requirement.specifier}"
            _failed(
                record,
                f"requires {wanted}, but the running {CORE_DISTRIBUTION} is {__version__}",
                None,
                remedy=(
                    f"Install a release of {record.distribution} made for {CORE_DISTRIBUTION} {__version__} "
                    f"(pip install --upgrade {record.distribution}) or the core it was made for "
                    f"(pip install {shlex.quote(wanted)}), or disable it"
                ),
            )
            return True
    return False


def instantiate(
    record: PluginRecord,
    loaded: Any,
    options: Mapping[str, Any],
    *,
    file_keys: frozenset[str] = frozenset(),
    file_table: str = "",
) -> PluginRecord:
    """Make the plugin object: a module as it is, a class called with the options.
    ``file_keys`` are the options that came from the project file (``file_table``), for the
    errors to say where to fix them."""
    from_file = f" (options set in {file_table})" if file_keys else ""
    if not isinstance(loaded, type):
        if options:
            return _failed(record, f"takes no options (it is a module, not a class){from_file}", None)
        record.plugin = loaded
        return record
    unknown_option = _unknown_option(loaded, options)
    if unknown_option is not None:
        option, problem = unknown_option
        return _failed(record, problem + (f" (set in {file_table})" if option in file_keys else ""), None)
    try:
        record.plugin = loaded(**options)
    except PluginInactive as inactive:
        record.status, record.reason = "inactive", str(inactive)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit from a constructor is a plugin failure too
        return _failed(record, f"failed to construct{from_file}", error)
    return record


# One vocabulary for the options of every plugin; the names it replaced, refused with a pointer.
OPTION_VOCABULARY = (
    "an output folder is 'dir', an output file 'file' (a path or a stream); a period is 'every_iterations' or "
    "'every_epochs'; "
    "a duration ends in '_secs'"
)
RENAMED_OPTIONS = {
    "dirname": "dir",
    "log_dir": "dir",
    "logdir": "dir",
    "path": "file",
    "log_every": "every_iterations",
    "refresh_every": "every_iterations",
    "every": "every_iterations",
    "flush_timeout": "flush_timeout_secs",
}


def _unknown_option(cls: type, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first option ``cls`` does not take and the message saying so, or None."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - classes implemented in C
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    accepted = [n for n, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for option in options:
        if option not in accepted:
            renamed = RENAMED_OPTIONS.get(option)
            close = [renamed] if renamed in accepted else difflib.get_close_matches(option, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            if renamed in accepted:
                hint += f" ({option!r} was renamed in 0.1: {OPTION_VOCABULARY})"
            return option, f"has no option {option!r}.{hint} Its options: {', '.join(accepted) or 'none'}"
    return None


def _failed(
    record: PluginRecord,
    what: str,
    cause: BaseException | None,
    *,
    name_only: bool = False,
    remedy: str | None = None,
) -> PluginRecord:
    """Mark ``record`` failed with ``what`` (and its cause) as the reason, and give it the
    PluginError to raise: the plugin, where it comes from, the cause and how to fix
    (``remedy``, default: fix or uninstall it) or disable it."""
    because = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    record.status = "failed"
    record.reason = f"{what}{because}"
    where = "" if name_only else f" ({_where(record)})"
    if record.entry_point is None:  # registered in code: the caller's own object
        fix = "Fix the plugin's code."
    else:
        if remedy is None:
            remedy = "Uninstall one of them, or disable it" if name_only else "Fix or uninstall it, or disable it"
        fix = (
            f"{remedy} with Trainer(..., plugins={{{record.name!r}: False}}) or {DISABLE_PLUGINS_ENV}={record.name}."
        )
    error = PluginError(f"Plugin {record.name!r}{where} {record.reason}. {fix}")
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
    problem = _unknown_hook(record.plugin) or _declaration_problem(record.plugin)
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
