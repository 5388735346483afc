"""The Trainer: runs epochs, validation, histories and events around the user's update function."""

from __future__ import annotations

import inspect
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Iterator as IteratorABC
from types import MappingProxyType
from typing import Any

from . import _plugins, _rank_agreement, _rng, distributed
from ._dispatch import INDEX as _INDEX
from ._dispatch import Dispatch, EventHandle
from ._nan_guard import NanGuard
from ._position import RunPosition, SavedPosition
from ._profile import Profiler
from ._stop_vote import StopVote
from .events import COUNTER, PeriodicEvent, TrainingEvents
from .history import History, history_value
from .serialization import decode, encode

__all__ = ["EventHandle", "Preempted", "Trainer", "TrainingEvents"]

logger = logging.getLogger("ignite")

_TRAIN_STARTED = _INDEX[TrainingEvents.TRAINING_ITERATION_STARTED]
_TRAIN_COMPLETED = _INDEX[TrainingEvents.TRAINING_ITERATION_COMPLETED]
_VALID_STARTED = _INDEX[TrainingEvents.VALIDATION_ITERATION_STARTED]
_VALID_COMPLETED = _INDEX[TrainingEvents.VALIDATION_ITERATION_COMPLETED]
_END = object()
_STATE_FORMAT = "ignite.Trainer/1"


class Preempted(SystemExit):
    """Raised by :meth:`Trainer.run` when the process received SIGTERM while the run ran (a
    scheduler preempting the job: SLURM, Kubernetes, ``torchrun`` forwarding it), after the
    run stopped at the iteration all ranks agreed on and its closing events (and with them the
    checkpoint plugin's save of that point) ran. A ``SystemExit`` with code 143 (128 + SIGTERM,
    what a shell reports for a process ended by SIGTERM): left uncaught, the script exits with
    that code, without a traceback; ``except Exception`` does not catch it."""

    #: The exit code of a script that lets Preempted propagate.
    EXIT_CODE = 128 + signal.SIGTERM

    def __init__(self, message: str) -> None:
        super().__init__(self.EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _check_data(name: str, data: Any) -> None:
    # Checked on the type, without iter(): iterating a shuffling DataLoader draws from the global
    # RNG and starts its workers.
    kind = type(data)
    if getattr(kind, "__iter__", None) is None and getattr(kind, "__getitem__", None) is None:
        raise TypeError(f"{name} must be an iterable of batches (a list, a DataLoader, ...); got {kind.__name__}")
    if isinstance(data, IteratorABC):
        raise TypeError(
            f"{name} is an iterator ({kind.__name__}), which is used up after one epoch: pass a "
            "re-iterable collection such as a list or a DataLoader"
        )


def _check_callable(name: str, function: Any) -> None:
    if not callable(function):
        raise TypeError(f"{name} must be callable (a function of one batch); got {type(function).__name__}")


def _end_run_after(history: History, error: BaseException) -> None:
    # The run's device outputs leave the device on an exception too, unless the device itself failed.
    try:
        history._end_run()
    except Exception as second:
        error.add_note(f"the run's tensors were left as they were: converting them failed with {second!r}")


def _check_state_format(state: Any) -> None:
    found = state.get("format") if isinstance(state, Mapping) else None
    if found == _STATE_FORMAT:
        return
    newer = re.fullmatch(r"ignite\.Trainer/(\d+)", found) if isinstance(found, str) else None
    if newer is not None and int(newer.group(1)) > 1:
        raise ValueError(
            f"this Trainer state was written by a newer ignite-trainer (state format {newer.group(1)}); this one "
            "reads format 1: upgrade ignite-trainer to restore it"
        )
    shown = f"format {found!r}" if isinstance(state, Mapping) else type(state).__name__
    raise ValueError(f"not a Trainer state (format {_STATE_FORMAT!r} expected, found {shown})")


def _format_means(means: Mapping[str, float]) -> str:
    if not means:
        return "n/a"
    if list(means) == [""]:
        return f"{means['']:.6g}"
    return " ".join(f"{key}={value:.6g}" for key, value in means.items())


class Trainer:
    """Runs ``training_update_function`` on every batch of ``training_data`` for a number of
    epochs, validating after each epoch, recording every output and firing
    :class:`TrainingEvents` to ad-hoc handlers and plugins.

    Args:
        training_data: re-iterable collection of batches (a list, a DataLoader).
        training_update_function: called with each batch; whatever it returns is recorded in
            :attr:`training_history`.
        validation_data: batches to run ``validation_update_function`` on after each epoch.
        validation_update_function: called with each validation batch; outputs go to
            :attr:`validation_history`.
        plugins: options for installed plugins by name: a dict of keyword arguments, True
            (defaults) or False (disabled), e.g. ``{"early_stopping": {"patience": 3},
            "visdom": False}``. They override the project file (``[tool.ignite]`` in
            pyproject.toml, or ignite.toml) plugin by plugin, a dict merging over its options;
            its ``required_plugins`` are checked here, before any plugin is imported.
        terminate_on_nan: stop cleanly, with a warning naming the iteration and the value,
            after a training output holding a NaN or an infinity. Host values (floats, CPU
            tensors, numpy, ``Decimal``) are checked at once: the run stops after that
            iteration. Tensors on a CUDA device are checked there (a few small kernels, no
            sync) and the result is copied back asynchronously and read once it has arrived:
            the run stops a few iterations later (about twice as many as the host runs ahead
            of the device), and at the latest at the end of the epoch's training batches.
        profile: time every handler, plugin hook and update function, log a table at the
            end of each run and keep it for :meth:`profile_report`. Off, it costs nothing.
    """

    def __init__(
        self,
        training_data: Iterable[Any],
        training_update_function: Callable[[Any], Any],
        validation_data: Iterable[Any] | None = None,
        validation_update_function: Callable[[Any], Any] | None = None,
        *,
        plugins: Mapping[str, Mapping[str, Any] | bool] | None = None,
        terminate_on_nan: bool = False,
        profile: bool = False,
    ) -> None:
        _check_data("training_data", training_data)
        _check_callable("training_update_function", training_update_function)
        if validation_data is not None:
            _check_data("validation_data", validation_data)
            if validation_update_function is None:
                raise TypeError("validation_data was given without a validation_update_function to run on it")
            _check_callable("validation_update_function", validation_update_function)
        self.training_data = training_data
        self.validation_data = validation_data
        self.training_history = History()
        self.validation_history = History()
        # The newest value of each metric, by name, set by metric plugins (ignite-metrics) when
        # they compute one; loggers log what is here at EPOCH_COMPLETED, controllers can score on it.
        self.metrics: dict[str, float] = {}
        self.current_iteration = 0
        self.current_epoch = 0
        self.max_epochs: int | None = None
        self._should_terminate = False
        # SIGTERM during run(): received by this process / the stop agreed for it (every rank).
        self._signalled = False
        self._preempted = False
        self._running = False
        self._epoch_complete = False
        self._position = RunPosition()  # where the run stands, for state_dict() and resume
        self._profiler = Profiler() if profile else None
        if self._profiler is not None:
            training_update_function = self._profiler.wrap(
                "update", "training_update_function", "", training_update_function
            )
            if validation_update_function is not None:
                validation_update_function = self._profiler.wrap(
                    "update", "validation_update_function", "", validation_update_function
                )
        self._training_update_function = training_update_function
        self._validation_update_function = validation_update_function
        self._plugin_manager = _plugins.new_plugin_manager()
        self._plugin_records: dict[str, _plugins.PluginRecord] = {}
        self._dispatch = Dispatch(self._plugin_manager, self._profiler, self)
        # The dispatch's own objects, changed in place: the loop reads them.
        self._callbacks, self._periodic = self._dispatch.callbacks, self._dispatch.periodic
        for record in _plugins.load_plugins(plugins, self._plugin_manager):
            if record.error is not None:
                raise record.error
            self._plugin_records[record.name] = record
            if record.status == "active":
                self._dispatch.add_periods(record.name, record.plugin)
        _plugins.plugin_order(self.plugins)  # a cycle or contradiction fails here, before any run
        self._dispatch.rebuild()
        self._nan_guard = NanGuard() if terminate_on_nan else None
        if self._nan_guard is not None:
            self.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, self._nan_guard.check)

    # -- counters -----------------------------------------------------------------------

    @property
    def current_iterations(self) -> int:
        """Alias of :attr:`current_iteration`, the name our first README used."""
        return self.current_iteration

    @current_iterations.setter
    def current_iterations(self, value: int) -> None:
        self.current_iteration = value

    @property
    def epoch_complete(self) -> bool:
        """At EPOCH_COMPLETED: True when the epoch ran all its training batches (those before
        a resume included) and its whole validation run; False when terminate() cut either
        short. Controllers decide only on complete epochs: a partial run is no evidence."""
        return self._epoch_complete

    @property
    def terminating(self) -> bool:
        """True once the run is stopping because of :meth:`terminate` (on every rank at the
        same point in a distributed run): the epoch or validation run in progress is being
        cut short."""
        return self._should_terminate

    @property
    def preempted(self) -> bool:
        """True once the run is stopping because of a SIGTERM received while :meth:`run` ran
        (in a distributed run: by any rank; then True on every rank at the same point, so
        plugins may run collectives on it, e.g. the checkpoint plugin's save at
        TRAINING_COMPLETED). :meth:`run` then raises :class:`Preempted` after the closing
        events."""
        return self._preempted

    def terminate(self) -> None:
        """Stop the run after the iteration in progress. The events of the scopes already
        open (epoch, validation run) and TRAINING_COMPLETED still fire.

        In a distributed run, terminate() on any rank stops every rank at the same point: in
        a training iteration, when the next agreement vote is collected (votes run every 32
        iterations, ``IGNITE_STOP_VOTE_EVERY``; so at most 64 iterations later) or at the end
        of the epoch's training batches, whichever comes first; elsewhere, at the end of the
        validation run or epoch in progress (see ``ignite._stop_vote``).

        A rank that never gets there (stuck in its update function or a handler) cannot be
        stopped by a vote: the other ranks wait for it in a collective until the process
        group's timeout (``init_process_group(timeout=...)``, 30 minutes by default), then
        fail with an error saying so, and the launcher (torchrun) ends the stuck rank.
        """
        if self._dispatch.stop_vote is not None:
            self._dispatch.stop_vote.requested = True
        else:
            self._should_terminate = True

    # -- handlers -----------------------------------------------------------------------

    def add_event_handler(
        self, event: TrainingEvents | PeriodicEvent, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> EventHandle:
        """Call ``handler(trainer, *args, **kwargs)`` whenever ``event`` fires
        (``handler(trainer, exception, *args, **kwargs)`` for EXCEPTION_RAISED). Handlers of
        one event run in the order they were added. Returns a handle whose ``remove()``
        detaches it.

        ``event`` may be filtered, ``TrainingEvents.TRAINING_ITERATION_COMPLETED.every(100)``:
        the handler is then called only on every 100th iteration (when ``current_iteration``
        is a multiple of 100; for epoch events, ``current_epoch``), in its place among
        the event's handlers; at TRAINING_ITERATION_COMPLETED the iterations between cost it
        nothing.
        """
        every = 1
        if isinstance(event, PeriodicEvent):
            every = event.every
            event = event.event
        if not isinstance(event, TrainingEvents):
            raise TypeError(
                f"event must be a TrainingEvents member, e.g. TrainingEvents.EPOCH_COMPLETED; got {event!r}"
            )
        if not callable(handler):
            raise TypeError(f"handler for {event.name} must be callable; got {type(handler).__name__}")
        leading = (self, BaseException()) if event is TrainingEvents.EXCEPTION_RAISED else (self,)
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):  # builtins without a signature: nothing to check
            signature = None
        if signature is not None:
            try:
                signature.bind(*leading, *args, **kwargs)
            except TypeError as error:
                raise TypeError(
                    f"handler {getattr(handler, '__qualname__', handler)!r} for {event.name} cannot be called "
                    f"with the trainer{', the exception' if len(leading) == 2 else ''} and the extra arguments "
                    f"given: {error}"
                ) from None
        handle = EventHandle(self._dispatch, event, handler, args, kwargs, every)
        self._dispatch.add_handle(handle)
        return handle

    # -- plugins ------------------------------------------------------------------------

    @property
    def plugins(self) -> Mapping[str, Any]:
        """The active plugin objects (modules or instances) by name, read-only."""
        return MappingProxyType(
            {name: record.plugin for name, record in self._plugin_records.items() if record.status == "active"}
        )

    def register_plugin(self, plugin: Any, name: str | None = None) -> Any:
        """Register an in-house plugin object (a module or an instance with ``@hookimpl``
        methods) with this trainer only. Returns the plugin."""
        if isinstance(plugin, type):
            raise TypeError(
                f"register_plugin takes a plugin instance or module; got the class {plugin.__name__}: "
                f"pass {plugin.__name__}(...)"
            )
        if name is None:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
        record = _plugins.PluginRecord(name=name, plugin=plugin)
        _plugins.register(self._plugin_manager, record)
        self._plugin_records[name] = record
        self._dispatch.add_periods(name, plugin)
        try:
            _plugins.plugin_order(self.plugins)
            self._dispatch.rebuild()
        except _plugins.PluginError:  # its declared order conflicts with the plugins here: not registered
            self._drop_plugin(name)
            raise
        return plugin

    def _drop_plugin(self, name: str) -> None:
        self._plugin_manager.unregister(name=name)
        del self._plugin_records[name]
        self._dispatch.drop_periods(name)
        self._dispatch.rebuild()

    def unregister_plugin(self, plugin_or_name: Any) -> None:
        """Remove a plugin, given its name or the object, from this trainer."""
        name = plugin_or_name if isinstance(plugin_or_name, str) else self._plugin_manager.get_name(plugin_or_name)
        record = self._plugin_records.get(name) if name is not None else None
        if name is None or record is None or record.status != "active":
            raise ValueError(f"no active plugin {plugin_or_name!r} in this trainer; active: {sorted(self.plugins)}")
        self._drop_plugin(name)

    def set_period(self, plugin: Any, hook: str, n: int | None) -> None:
        """From the next time its event fires, call ``hook`` (e.g.
        ``"ignite_training_iteration_completed"``) of ``plugin`` (its name or the object) only
        when the event's counter is a multiple of ``n``; None pauses it. For a plugin that
        adapts how often it runs; the first period is the one its ``ignite_every()`` declares."""
        name = plugin if isinstance(plugin, str) else self._plugin_manager.get_name(plugin)
        periods = self._dispatch.periods
        if name is not None and (name, hook) in periods and periods[(name, hook)] == n:
            return  # checked when it was set: a plugin adapting its period often pays little
        if name is None or name not in self.plugins:
            raise ValueError(f"set_period: no active plugin {plugin!r} in this trainer; active: {sorted(self.plugins)}")
        event = next((event for event in COUNTER if event.hook_name == hook), None)
        if event is None:
            raise ValueError(
                f"set_period: {hook!r} has no period; the hooks that can have one: "
                f"{', '.join(sorted(_plugins.PERIODIC_HOOKS))}"
            )
        if not any(impl.plugin_name == name for impl in getattr(self._plugin_manager.hook, hook).get_hookimpls()):
            raise ValueError(
                f"set_period: plugin {name!r} has no {hook} registered (not implemented, or turned off by its "
                "ignite_every() with None or 0): declare a period there instead of None to adjust it later"
            )
        if n is not None:
            event.every(n)  # checked as every(n) checks it
        self._dispatch.set_period(name, hook, n)

    def _fire(self, event: TrainingEvents) -> None:
        for callback in self._callbacks[_INDEX[event]]:
            callback(self)

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a run needs to continue bit for bit from here: counters, histories,
        the position inside the epoch, RNG states (torch, Python, NumPy) and the state of
        every active plugin that has one. Model and optimizer state are the caller's (the
        checkpoint plugin saves the objects it is given). Contains only types that
        ``torch.load(weights_only=True)`` accepts.

        Exact mid-epoch resume replays the epoch from its start with the RNG state of that
        moment and skips the batches already consumed, so the data source must draw its order
        from the global RNGs (a DataLoader with shuffle=True, a DistributedSampler, a seeded
        list) or be deterministic; a sampler with its own ``torch.Generator`` must have that
        generator seeded per epoch by the user. Skipped batches are loaded and dropped.
        """
        iterations_done, position, rng = self._stopping_point()
        return {
            "format": _STATE_FORMAT,
            "current_epoch": self.current_epoch,
            "current_iteration": iterations_done,
            "training_history": self.training_history.state_dict(name="training_history"),
            # A validation run cut short is run again whole on resume: leave its part out.
            "validation_history": self.validation_history.state_dict(
                drop_last_run=self._position.phase == "validation", name="validation_history"
            ),
            "position": None if position is None else position.to_state(),
            "metrics": dict(self.metrics),
            "rng": _rng.storable(rng),
            "plugins": {
                name: encode(record.plugin.state_dict(), f"the state_dict() of plugin {name!r}")
                for name, record in self._plugin_records.items()
                if record.status == "active" and callable(getattr(record.plugin, "state_dict", None))
            },
        }

    def _stopping_point(self) -> tuple[int, SavedPosition | None, dict[str, Any]]:
        """Where the run stands: the iterations done, the position inside the epoch (None
        between epochs) and the RNG states, as :meth:`state_dict` saves them."""
        live = self._position
        if live.pending is not None:  # a loaded position not replayed yet is still where it stands
            return self.current_iteration, live.pending, live.pending.rng
        rng = _rng.get_states()
        if live.phase == "training":
            batches_done = len(self.training_history.run())
            start_rng = live.phase_start_rng or rng
            position = SavedPosition("training", batches_done, start_rng, rng)
            return live.epoch_start_iteration + batches_done, position, rng
        if live.phase == "validation":
            return self.current_iteration, SavedPosition("validation", 0, live.phase_start_rng, rng), rng
        return self.current_iteration, None, rng

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next :meth:`run` picks up where it was
        taken, inside an epoch if it was taken inside one. Call it before ``run()`` or from a
        TRAINING_STARTED handler or hook.

        Everything is checked before anything changes: a state that cannot be restored
        raises ValueError (or the error of a plugin's ``load_state_dict``) and leaves the
        trainer, its plugins and the RNGs as they were."""
        _check_state_format(state)
        try:
            epoch, iteration = int(state["current_epoch"]), int(state["current_iteration"])
            position, rng, plugin_states = state["position"], state["rng"], state["plugins"]
            for name in ("training_history", "validation_history"):
                History().load_state_dict(state[name])
            if position is not None:
                position = SavedPosition.from_state(position, rng, iteration)
            if not isinstance(plugin_states, Mapping) or not {"torch", "python"} <= set(rng):
                raise ValueError("its 'plugins' or 'rng' entry is malformed")
            metrics = {str(name): float(value) for name, value in state.get("metrics", {}).items()}
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"cannot restore this Trainer state: {type(error).__name__}: {error}") from None
        before = _rng.get_states()
        restored: list[tuple[Any, Any]] = []  # (plugin, its state before) to roll back
        try:
            if position is None:
                _rng.set_states(rng)
            for name, plugin_state in plugin_states.items():
                plugin = self.plugins.get(name)
                if plugin is None or not callable(getattr(plugin, "load_state_dict", None)):
                    logger.warning("The saved state of plugin %s is not restored: no such active plugin here", name)
                    continue
                previous = plugin.state_dict() if callable(getattr(plugin, "state_dict", None)) else None
                try:
                    plugin.load_state_dict(decode(plugin_state))
                except BaseException as error:
                    error.add_note(f"while restoring the state of plugin {name!r}; nothing was restored")
                    raise
                restored.append((plugin, previous))
        except BaseException:
            for plugin, previous in reversed(restored):
                if previous is not None:
                    plugin.load_state_dict(previous)
            _rng.set_states(before)
            raise
        self.current_epoch, self.current_iteration = epoch, iteration
        self.metrics = metrics
        self._position = RunPosition()
        # Into the same objects (validated above, so this cannot fail): plugins and handlers may hold them.
        self.training_history.load_state_dict(state["training_history"])
        self.validation_history.load_state_dict(state["validation_history"])
        if position is not None:
            self._position.epoch_start_iteration = iteration - position.batches_done
            self._position.pending = position
            if position.phase == "validation" and position.start_rng is None:
                _rng.set_states(rng)

    # -- the run ------------------------------------------------------------------------

    def run(self, max_epochs: int = 1) -> None:
        """Train until :attr:`current_epoch` reaches ``max_epochs`` or :meth:`terminate` is
        called. A trainer continues from its counters: after ``run(2)``, ``run(5)`` trains
        epochs 3 to 5.

        While it runs (called on the main thread), SIGTERM is the trainer's: the run stops as
        after :meth:`terminate` (in a distributed run at the iteration the ranks agree on, see
        :attr:`preempted`), the closing events fire, then run() raises :class:`Preempted`
        (exit code 143). The previous SIGTERM handler is put back when run() ends."""
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"max_epochs must be an integer of at least 1; got {max_epochs!r}")
        if self._running:
            raise RuntimeError(
                "run() was called while this trainer is running (from one of its handlers or plugin hooks): call "
                "terminate() there instead, and run() again once the running run() has returned"
            )
        self._running = True
        self._should_terminate = self._signalled = self._preempted = False
        previous = self._catch_sigterm()  # after the reset: a SIGTERM from now on is kept
        try:
            self._run(max_epochs)
        finally:
            self._running = False
            self._release_sigterm(previous)
            if self._position.pending is None and self._position.phase != "between":
                self._keep_stopping_point()
        if self._signalled or self._preempted:
            raise self._preemption()

    # -- preemption (SIGTERM) -------------------------------------------------------------

    def _catch_sigterm(self) -> Any:
        """Install the SIGTERM handler for the run; returns the one to restore (None: none
        installed, outside the main thread or where the previous one is not Python's)."""
        if threading.current_thread() is not threading.main_thread():
            return None  # only the main thread may set handlers; signals go to it anyway
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None:  # installed from C: it could not be put back
            return None
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return previous

    def _release_sigterm(self, previous: Any) -> None:
        # Only if ours is still there: a handler that replaced it during the run stays.
        if previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Runs on the main thread between two bytecodes: flags only, no logging, no collective.
        self._signalled = True
        if self._dispatch.stop_vote is None:  # one process: stop after the iteration in progress
            self._should_terminate = self._preempted = True
        # Distributed: the next vote carries it (ignite._stop_vote); every rank then stops there.

    def _preemption(self) -> Preempted:
        if self._preempted:
            where = f"stopped at epoch {self.current_epoch}, iteration {self.current_iteration}"
        else:  # arrived after the run's last agreement point: the training was over
            where = f"which arrived after the training ended, at epoch {self.current_epoch}"
        message = (
            f"Preempted: SIGTERM received during run(), {where}; run() raises ignite.Preempted "
            f"(exit code {Preempted.EXIT_CODE}). Launch again with the checkpoint plugin's resume=True to continue."
        )
        logger.warning("%s", message)
        return Preempted(message)

    def _keep_stopping_point(self) -> None:
        # After a run stopped inside an epoch (terminate(), an exception), the next run()
        # continues as a resume from state_dict() taken now would: the rest of the epoch.
        iterations_done, position, _ = self._stopping_point()
        assert position is not None
        live = self._position
        live.partial_validation_run = position.phase == "validation"
        self.current_iteration = iterations_done
        live.epoch_start_iteration = iterations_done - position.batches_done
        live.pending = position

    def _run(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self._join_process_group()
        started = time.perf_counter()
        try:
            self._log_plugins()
            self._fire(TrainingEvents.TRAINING_STARTED)
            self._agree_on_stop()
            while (self.current_epoch < max_epochs or self._position.pending is not None) and not self._should_terminate:
                self._run_epoch()
                self._agree_on_stop()
            self._fire(TrainingEvents.TRAINING_COMPLETED)
            if self._profiler is not None:
                self._profiler.run_seconds += time.perf_counter() - started
                logger.info("Profile of the run (%s):\n%s", "Trainer(profile=True)", self._profiler.table())
        except BaseException as error:
            self._note_plugin_culprit(error)
            # Every EXCEPTION_RAISED callback runs, even after one fails: the later ones close
            # files, bars and writers. The first failure propagates, with the run's as context.
            failure: BaseException | None = None
            for callback in self._callbacks[_INDEX[TrainingEvents.EXCEPTION_RAISED]]:
                try:
                    callback(self, error)
                except BaseException as second:
                    self._note_plugin_culprit(second)
                    if failure is None:
                        failure = second
                    else:
                        failure.add_note(f"EXCEPTION_RAISED: another callback raised too: {second!r}")
            if failure is not None:
                raise failure  # noqa: B904 - the run's error stays its context, not its cause
            raise

    def profile_report(self) -> list[dict[str, Any]]:
        """With ``Trainer(profile=True)``: one row per handler, plugin hook (per event) and
        update function, slowest first, with ``kind``, ``name``, ``event``, ``calls``,
        ``total_s``, ``mean_us`` and ``share`` of the runs' wall time; the remainder (the
        loop itself and data loading) is the row of kind ``trainer``."""
        if self._profiler is None:
            raise RuntimeError("profiling is off: create the trainer with Trainer(..., profile=True)")
        return self._profiler.report()

    def _join_process_group(self) -> None:
        if not distributed.is_initialized() or distributed.world_size() == 1:
            return
        if self._dispatch.stop_vote is None:
            self._dispatch.stop_vote = StopVote()
            self._dispatch.rebuild(TrainingEvents.TRAINING_ITERATION_COMPLETED)
        self._dispatch.stop_vote.reset()
        _rank_agreement.check(self)  # before any hook: a rank set up differently raises, not hangs
        if not distributed.is_main_process() and logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)  # only rank 0 logs progress; all ranks log problems

    def _agree_on_stop(self, batches: int | None = None) -> None:
        if self._dispatch.stop_vote is not None:
            self._dispatch.stop_vote.settle(self, batches)

    def _note_plugin_culprit(self, error: BaseException) -> None:
        # Found from the traceback after the fact, so that hooks need no wrapper on the hot path.
        found = _plugins.culprit(self._plugin_manager, error)
        if found is not None:
            name, hook_name = found
            record = self._plugin_records.get(name)
            origin = f" from {record.origin}" if record is not None else ""
            error.add_note(f"raised in hook {hook_name} of plugin {name!r}{origin}")

    def _run_epoch(self) -> None:
        live = self._position
        resume = live.pending  # cleared once the replay reaches the saved point
        if resume is None:
            self.current_epoch += 1
            live.epoch_start_iteration = self.current_iteration
            self.training_history.start_run()
        live.phase, live.phase_start_rng = "training", None
        self._set_sampler_epoch()
        self._fire(TrainingEvents.EPOCH_STARTED)
        continues_validation = resume is not None and resume.phase == "validation"
        # A validation-phase resume continues an epoch whose training was done before.
        complete = continues_validation
        if not self._should_terminate and not continues_validation:
            complete = self._run_training_epoch(resume)
        if self.validation_data is not None:
            if self._should_terminate:
                complete = False
            else:
                live.phase, live.phase_start_rng = "validation", None
                complete = self._run_validation(resume if continues_validation else None) and complete
        self._epoch_complete = complete
        if complete:
            # After a cut (terminate()) the phase stays where it was, so a state taken now
            # resumes the epoch that was cut short rather than skipping its rest.
            live.phase = "between"
        if logger.isEnabledFor(logging.INFO):
            self._log_epoch()
        self._fire(TrainingEvents.EPOCH_COMPLETED)

    def _set_sampler_epoch(self) -> None:
        # A DistributedSampler shuffles by epoch number: without set_epoch every epoch would
        # see the same order.
        for sampler in distributed.samplers(self.training_data):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self.current_epoch - 1)

    def _resumed_batches(self, resume: SavedPosition | None) -> Iterator[Any]:
        live = self._position
        if resume is None:
            live.phase_start_rng = _rng.get_states()
            return iter(self.training_data)
        # Replay the epoch's start so that a shuffling sampler draws the same order, then skip
        # the batches the checkpointed run had consumed and continue from its RNG state.
        assert resume.start_rng is not None  # a training position always has one
        _rng.set_states(resume.start_rng)
        live.phase_start_rng = resume.start_rng
        batches = iter(self.training_data)
        for done in range(resume.batches_done):
            if next(batches, _END) is _END:
                raise ValueError(
                    f"cannot resume epoch {self.current_epoch} at batch {resume.batches_done}: training_data "
                    f"now has only {done} batches. Resume with the data the checkpoint was trained on."
                )
        if resume.batches_done:
            # With nothing consumed the states are those of the start; restoring them after
            # iter() would undo the draws iter() itself made (a DataLoader's base seed).
            _rng.set_states(resume.rng)
        live.pending = None
        return batches

    def _run_training_epoch(self, resume: SavedPosition | None = None) -> bool:
        history = self.training_history
        completed = False
        self._fire(TrainingEvents.TRAINING_EPOCH_STARTED)
        if not self._should_terminate:
            callbacks, update, append = self._callbacks, self._training_update_function, history.append
            periodic = self._periodic
            periodic.schedule(self.current_iteration)  # the count may have been set since
            try:
                for batch in self._resumed_batches(resume):
                    self.current_iteration += 1
                    for callback in callbacks[_TRAIN_STARTED]:
                        callback(self)
                    output = update(batch)
                    # Floats (``loss.item()``) are the common case: skip the conversion call.
                    append(output if type(output) is float else history_value(output))
                    if self.current_iteration >= periodic.due:
                        periodic(self)  # every callback of the event, the periodic ones in their place
                    else:
                        for callback in callbacks[_TRAIN_COMPLETED]:
                            callback(self)
                    if self._should_terminate:
                        break
                else:
                    completed = True
                    if not history.run():
                        raise ValueError(
                            f"training_data yielded no batches in epoch {self.current_epoch}: it must hold at "
                            "least one batch on every pass"
                        )
            except BaseException as error:
                if self._nan_guard is not None:
                    self._nan_guard.discard()
                _end_run_after(history, error)
                raise
        history._end_run()  # the epoch's device outputs to the host, in one transfer
        if self._nan_guard is not None and self._nan_guard.end_run(self):
            completed = False
        self._agree_on_stop(batches=len(history.run()))  # also checks that every rank ran as many
        self._fire(TrainingEvents.TRAINING_EPOCH_COMPLETED)
        return completed

    def _run_validation(self, resume: SavedPosition | None) -> bool:
        history = self.validation_history
        live = self._position
        completed = False
        if live.partial_validation_run:
            history._discard_last_run()
            live.partial_validation_run = False
        history.start_run()
        self._fire(TrainingEvents.VALIDATION_STARTING)
        if not self._should_terminate:
            callbacks, update, append = self._callbacks, self._validation_update_function, history.append
            if resume is not None and resume.start_rng is not None:
                _rng.set_states(resume.start_rng)  # a validation run cut short is run again whole
            live.pending = None
            live.phase_start_rng = _rng.get_states()
            try:
                for batch in self.validation_data:  # type: ignore[union-attr]
                    for callback in callbacks[_VALID_STARTED]:
                        callback(self)
                    output = update(batch)  # type: ignore[misc]
                    append(output if type(output) is float else history_value(output))
                    for callback in callbacks[_VALID_COMPLETED]:
                        callback(self)
                    if self._should_terminate:
                        break
                else:
                    completed = True
            except BaseException as error:
                _end_run_after(history, error)
                raise
        history._end_run()
        self._agree_on_stop()
        self._fire(TrainingEvents.VALIDATION_COMPLETED)
        return completed

    # -- logging ------------------------------------------------------------------------

    def _log_plugins(self) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        active = [f"{name} ({record.origin})" for name, record in self._plugin_records.items() if record.status == "active"]
        logger.info("Active plugins: %s", ", ".join(active) if active else "none")
        for name, record in self._plugin_records.items():
            if record.status == "inactive":
                logger.info("Plugin %s (%s) is inactive: %s", name, record.origin, record.reason)

    def _log_epoch(self) -> None:
        training = self.training_history  # the epoch's run was started with the epoch
        line = "Epoch %d/%d: %d iterations, training mean %s"
        values: list[Any] = [self.current_epoch, self.max_epochs, len(training.run()), _format_means(training.run_means())]
        if self.validation_data is not None and self.validation_history.num_runs:
            line += ", validation mean %s"
            values.append(_format_means(self.validation_history.run_means()))
        logger.info(line, *values)
