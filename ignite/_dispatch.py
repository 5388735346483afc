"""Event dispatch: per event, the tuple of callables the loop runs (ad-hoc handlers and plugin
hooks, in their documented order), with periods, the profiler's timing and the stop vote."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _plugins
from .events import COUNTER, TrainingEvents

if TYPE_CHECKING:
    import pluggy

    from ._profile import Profiler
    from ._stop_vote import StopVote

EVENTS = tuple(TrainingEvents)
INDEX = {event: index for index, event in enumerate(EVENTS)}
TRAIN_COMPLETED = INDEX[TrainingEvents.TRAINING_ITERATION_COMPLETED]
# An int, not math.inf: the loop compares the iteration count with it (benchmarks/README.md).
NEVER = sys.maxsize


class EventHandle:
    """What :meth:`Trainer.add_event_handler` returns: call :meth:`remove` to detach the handler."""

    __slots__ = ("_dispatch", "_every", "args", "event", "handler", "kwargs")

    def __init__(
        self,
        dispatch: Dispatch,
        event: TrainingEvents,
        handler: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        every: int,
    ) -> None:
        self._dispatch = dispatch
        self.event = event
        self.handler = handler
        self.args = args
        self.kwargs = kwargs
        self._every = every

    @property
    def every(self) -> int:
        """The handler is called when the event's counter is a multiple of this (1: always).
        Settable, e.g. by a handler that adapts how often it runs; effective from the next
        time the event fires."""
        return self._every

    @every.setter
    def every(self, n: int) -> None:
        if n != self._every:
            self._every = self.event.every(n).every  # checked as TrainingEvents.every checks it
            self._dispatch.rebuild(self.event)

    @property
    def name(self) -> str:
        """The handler's qualified name, as the profiler reports it."""
        return getattr(self.handler, "__qualname__", None) or repr(self.handler)

    def remove(self) -> None:
        """Detach the handler; removing twice is harmless."""
        self._dispatch.remove_handle(self)

    def _callable(self) -> Callable[..., Any]:
        handler, args, kwargs = self.handler, self.args, self.kwargs
        if not args and not kwargs:
            return handler
        if self.event is TrainingEvents.EXCEPTION_RAISED:
            return lambda trainer, exception: handler(trainer, exception, *args, **kwargs)
        return lambda trainer: handler(trainer, *args, **kwargs)

    def __repr__(self) -> str:
        every = f".every({self._every})" if self._every > 1 else ""
        return f"<EventHandle {self.event.name}{every}: {self.name}>"


class Periodic:
    """All the TRAINING_ITERATION_COMPLETED callbacks, in order, each with its period n (1:
    every iteration): ``every(n)`` handlers and plugin hooks given a period by ``ignite_every``.
    The loop compares the iteration with ``due`` and calls this only then, instead of the
    event's every-iteration callbacks: an iteration on which none is due costs one comparison,
    not a call per periodic callback."""

    __slots__ = ("due", "entries")

    def __init__(self) -> None:
        self.entries: tuple[tuple[int, Callable[..., Any]], ...] = ()
        self.due: int = NEVER

    def set(self, entries: list[tuple[int, Callable[..., Any]]], iteration: int) -> None:
        self.entries = tuple(entries)
        self.schedule(iteration)

    def schedule(self, iteration: int) -> None:
        """Due at the first multiple of any period above 1 after ``iteration``."""
        self.due = min(((iteration // n + 1) * n for n, _ in self.entries if n > 1), default=NEVER)

    def __call__(self, trainer: Any) -> None:
        iteration = trainer.current_iteration
        for n, call in self.entries:
            if n == 1 or iteration % n == 0:
                call(trainer)
        self.schedule(iteration)


class Dispatch:
    """The handles, the plugin hooks' periods and, per event, the callables to run, rebuilt
    whenever one of them changes, so that firing an event with nothing attached costs one
    index and one empty loop. ``callbacks`` and ``periodic`` are changed in place: a running
    loop holds them."""

    def __init__(self, manager: pluggy.PluginManager, profiler: Profiler | None, trainer: Any) -> None:
        self._manager = manager
        self._profiler = profiler
        self._trainer = trainer  # its current_iteration schedules the periodic table
        self.handles: list[list[EventHandle]] = [[] for _ in EVENTS]
        self.callbacks: list[tuple[Callable[..., Any], ...]] = [() for _ in EVENTS]
        self.periodic = Periodic()
        # (plugin name, hook name) -> period, for the hooks not called at every event.
        self.periods: dict[tuple[str, str], int | None] = {}
        self.stop_vote: StopVote | None = None

    def add_handle(self, handle: EventHandle) -> None:
        self.handles[INDEX[handle.event]].append(handle)
        self.rebuild(handle.event)

    def remove_handle(self, handle: EventHandle) -> None:
        handles = self.handles[INDEX[handle.event]]
        if handle in handles:
            handles.remove(handle)
            self.rebuild(handle.event)

    def add_periods(self, name: str, plugin: Any) -> None:
        for hook, n in _plugins.declared_periods(plugin).items():
            if n:  # None and 0 leave the hook unregistered (see _plugins._Manager)
                self.periods[(name, hook)] = n

    def drop_periods(self, name: str) -> None:
        self.periods = {key: n for key, n in self.periods.items() if key[0] != name}

    def set_period(self, name: str, hook: str, n: int | None) -> None:
        """Call ``hook`` of plugin ``name`` only when its event's counter is a multiple of
        ``n`` (None: not at all); checked by :meth:`Trainer.set_period`."""
        event = next(event for event in COUNTER if event.hook_name == hook)
        if self.periods.get((name, hook), 1) != n:
            self.periods[(name, hook)] = n
            self.rebuild(event)

    def plugin_calls(self, event: TrainingEvents) -> list[tuple[str, int | None, Callable[..., Any]]]:
        """(plugin name, period, callable) for ``event``, in the declared order
        (:func:`ignite._plugins.call_order`); period None: not called for now."""
        hook = getattr(self._manager.hook, event.hook_name)
        impls = hook.get_hookimpls()
        if not impls:
            return []  # pluggy's call has a cost even with no implementation: skip it
        ordered = _plugins.call_order(impls, event.hook_name)
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            return [self._through_pluggy(event, ordered)]
        # Plain implementations are called directly, each on its own (a failing EXCEPTION_RAISED
        # hook does not stop the others), without pluggy's machinery on the hot path.
        return [
            (impl.plugin_name, self.periods.get((impl.plugin_name, event.hook_name), 1), _direct_call(impl, event))
            for impl in ordered
        ]

    def _through_pluggy(self, event: TrainingEvents, ordered: list[Any]) -> tuple[str, int, Callable[..., Any]]:
        """One callable running the event's hooks through pluggy's public call, which wrappers
        need: pluggy orders them then (tryfirst/trylast, then the last registered first);
        periods still apply, through a caller without the plugins not due."""
        manager, name = self._manager, event.hook_name
        hook = getattr(manager.hook, name)
        names = "+".join(impl.plugin_name for impl in ordered)
        periodic = {impl.plugin_name: n for impl in ordered if (n := self.periods.get((impl.plugin_name, name), 1)) != 1}

        def caller(count: int) -> Any:
            skipped = [manager.get_plugin(p) for p, n in periodic.items() if n is None or count % n]
            return manager.subset_hook_caller(name, skipped) if skipped else hook

        if event is TrainingEvents.EXCEPTION_RAISED:
            return names, 1, lambda trainer, exception: caller(0)(trainer=trainer, exception=exception)
        counter = COUNTER.get(event)
        return names, 1, lambda trainer: caller(getattr(trainer, counter) if counter is not None else 0)(trainer=trainer)

    def rebuild(self, only: TrainingEvents | None = None) -> None:
        """Recompute the callables of ``only`` (default: every event)."""
        for event in (only,) if only is not None else EVENTS:
            self._rebuild_one(event)

    def _rebuild_one(self, event: TrainingEvents) -> None:
        index = INDEX[event]
        profiler = self._profiler

        def timed(kind: str, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
            return call if profiler is None else profiler.wrap(kind, name, event.name, call)

        handlers = [("handler", handle.name, handle.every, handle._callable()) for handle in self.handles[index]]
        plugin_calls = [("plugin", name, n, call) for name, n, call in self.plugin_calls(event) if n is not None]
        labelled = [*plugin_calls, *handlers] if event.opens_scope else [*handlers, *plugin_calls]
        # Timed inside the period's filter: the profile counts the calls actually made.
        entries = [(n, timed(kind, name, call)) for kind, name, n, call in labelled]
        if index == TRAIN_COMPLETED:
            if self.stop_vote is not None:
                # Last: it must see every terminate() of the iteration.
                entries.append((1, timed("trainer", "distributed stop vote", self.stop_vote)))
            # The periodic entries go to the dispatcher that the loop calls, in place of this
            # tuple, only when one is due.
            self.periodic.set(entries, self._trainer.current_iteration)
            callbacks = tuple(call for n, call in entries if n == 1)
        else:
            counter = COUNTER.get(event, "")
            callbacks = tuple(call if n == 1 else _every_nth(counter, n, call) for n, call in entries)
        self.callbacks[index] = callbacks  # item assignment: a running loop holds this list


def _every_nth(counter: str, n: int, call: Callable[..., Any]) -> Callable[..., Any]:
    """``call``, called only when the trainer's ``counter`` is a multiple of ``n`` (the events
    other than TRAINING_ITERATION_COMPLETED, where Periodic does it)."""

    def every_nth(trainer: Any) -> None:
        if getattr(trainer, counter) % n == 0:
            call(trainer)

    return every_nth


def _direct_call(impl: Any, event: TrainingEvents) -> Callable[..., Any]:
    """The hook implementation as the loop calls it, with the arguments it names (a subset of
    its spec's: pluggy lets a hook take fewer)."""
    function = impl.function
    if event is TrainingEvents.EXCEPTION_RAISED:
        names = tuple(impl.argnames)
        return lambda trainer, exception: function(
            **{key: value for key, value in (("trainer", trainer), ("exception", exception)) if key in names}
        )
    return function if impl.argnames else _ignore_trainer(function)


def _ignore_trainer(function: Callable[[], Any]) -> Callable[[Any], Any]:
    return lambda trainer: function()
