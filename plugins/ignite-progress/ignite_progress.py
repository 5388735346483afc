"""Progress-bar plugin for Ignite: a tqdm bar per epoch with the training value and the
validation mean.

Installed, it is active in every :class:`ignite.Trainer` (disable it with
``Trainer(..., plugins={"progress": False})``). On rank 0, on a terminal or in a Jupyter
notebook (``disable=None``: not in a log file or a pipe), each epoch gets a bar::

    Epoch 2/5: 100%|██████████| 50/50 [00:01<00:00, 45.1it/s, train=0.231, val=0.301]

``train`` is the latest training output (``train/<key>`` for each item of tuple or dict
outputs); ``val`` the mean of the epoch's validation run. On a terminal, during validation a
second bar, ``Validation``, counts the batches and disappears when the run ends, so each epoch
leaves one line. In a notebook each epoch's bar is a widget (tqdm's notebook bar, as
``tqdm.auto`` picks it; a text bar on the notebook's stderr when ipywidgets is missing), and the
validation count goes into that bar, so each epoch leaves one widget.

The plugin looks at the count every ``every_iterations`` iterations, or every iteration when
iterations are slow (so that a bar is never more than ~0.1 s of work behind): the trainer calls
its iteration hook at multiples of that stride only (a period, declared by ``ignite_every`` and
adapted with ``Trainer.set_period``), so the iterations in between cost nothing. The bar is moved, and the training value read and
formatted, when 0.1 s has passed since the bar last moved (tqdm redraws no more often): between
real training steps, with the CPU's caches cold, updating and formatting cost more than a small
model's stride can carry (figures in benchmarks/README.md). A CUDA output is copied to the host
without waiting and shown at a later draw; the epoch's end reads the last output.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO, TypeGuard

import torch

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars
from ignite.monitor import check_period, epoch_means, tag

if TYPE_CHECKING:
    from tqdm import tqdm

    from ignite import Trainer

__all__ = ["ProgressBar"]

logger = logging.getLogger("ignite.progress")

#: The plugin is called every this many iterations when they are fast: each look costs a few us
#: (benchmarks/README.md), and 200 of a ~100-us step still look five times per tqdm redraw. Slow
#: iterations are looked at more often (every ~0.1 s of work), so 200 only matters right after
#: iterations suddenly slow down more than 200-fold: the bar is then up to 200 of them behind, once.
DEFAULT_EVERY_ITERATIONS = 200

_ITERATION_HOOK = "ignite_training_iteration_completed"

#: A bar is advanced at least this often, in seconds of work (tqdm's own ``mininterval``).
_INTERVAL = 0.1
_clock = time.perf_counter  # a module attribute, so that tests can drive the strides


class _Stepper:
    """Advances a bar in strides: every ``limit`` counts, or more often when that many take
    longer than ``_INTERVAL`` seconds (down to every count), judged by the rate of the last
    stride."""

    __slots__ = ("bar", "count", "limit", "next", "shown", "shown_at", "stride")

    def __init__(self, bar: Any, start: int, limit: int, stride: int = 1) -> None:
        self.bar = bar  # a tqdm bar, or a _ValidationCount (what a notebook's validation moves)
        self.limit = limit
        self.count = self.shown = start
        self.shown_at = _clock()
        self.stride = stride  # 1: the rate is not known yet, look at the first count
        self.next = start + stride

    def advance(self, count: int, now: float) -> bool:
        """Move the bar to ``count`` if ``_INTERVAL`` has passed since it last moved: tqdm
        would not redraw sooner, and ``tqdm.update()`` between training steps costs a few us.
        ``now`` is ``_clock()``. Whether the bar moved."""
        done, elapsed = count - self.shown, now - self.shown_at
        if done * _INTERVAL >= self.limit * elapsed:  # ``limit`` counts take at most _INTERVAL
            stride = self.limit
        else:
            stride = max(1, int(done * _INTERVAL / elapsed))
        self.next, self.stride = count + stride, stride
        if elapsed < _INTERVAL:
            return False
        self.bar.update(done)
        self.shown, self.shown_at = count, now
        return True

    def finish(self, count: int, draw: bool) -> None:
        """Move the bar to ``count``, drawing it once if ``draw``; else it is drawn by
        ``close()`` (tqdm's way to move a bar silently: set ``n``)."""
        if not draw:
            self.bar.n += count - self.shown
        elif not self.bar.update(count - self.shown):  # True when it redrew
            self.bar.refresh()
        self.shown = count


class _HostCopy:
    """The numbers of an output's one-element CUDA tensors, being copied to pinned host memory
    without waiting for the device; read them once :meth:`ready` (no host sync either way)."""

    __slots__ = ("events", "output")

    def __init__(self, output: Any, events: list[torch.cuda.Event]) -> None:
        self.output, self.events = output, events

    @classmethod
    def start(cls, output: Any) -> _HostCopy | None:
        """The copy of ``output``'s top-level items (as :func:`scalars` reads them), or None when
        it holds no CUDA tensor (then it is read as it is, without a sync)."""
        if isinstance(output, Mapping):
            keys: Any = list(output.keys())
            values = list(output.values())
        elif isinstance(output, (tuple, list)):
            keys, values = None, list(output)
        else:
            keys, values = (), [output]
        if not any(isinstance(value, torch.Tensor) and value.is_cuda for value in values):
            return None
        devices: dict[torch.device, None] = {}
        copied = []
        for value in values:
            if isinstance(value, torch.Tensor) and value.is_cuda:
                devices[value.device] = None
                if value.numel() == 1:  # the only tensors scalars() reads
                    host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                    value = host.copy_(value.detach(), non_blocking=True)
                else:
                    value = None
            copied.append(value)
        events = []
        for device in devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            events.append(event)
        if keys is None:
            return cls(copied, events)
        return cls(dict(zip(keys, copied)) if keys else copied[0], events)

    def ready(self) -> bool:
        return all(event.query() for event in self.events)


class _ValidationCount:
    """Stands in for the validation bar in a notebook: the count is shown in the epoch's bar
    (a second bar would be a second widget an epoch, and a nested text bar moves the cursor,
    which a notebook's output does not follow). Moved by a :class:`_Stepper`, like a bar."""

    __slots__ = ("before", "epoch_bar", "n", "total")

    def __init__(self, epoch_bar: tqdm, before: str, total: int | None) -> None:
        self.epoch_bar, self.before, self.total, self.n = epoch_bar, before, total, 0

    def update(self, n: int = 1) -> bool:
        self.n += n
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        self.epoch_bar.set_postfix_str(", ".join(part for part in (self.before, f"validating {count}") if part))
        return True

    def close(self) -> None:
        """Nothing to close: the validation mean replaces the count in the epoch's postfix."""


@functools.cache
def _notebook() -> tuple[bool, type[tqdm] | None]:
    """Whether this process is a Jupyter notebook's kernel (tqdm.autonotebook's test: an
    ipykernel shell that is not qtconsole's or Spyder's), and tqdm's widget bar when
    ipywidgets is installed too (None: text bars, on the notebook's stderr)."""
    zmqshell, ipython = sys.modules.get("ipykernel.zmqshell"), sys.modules.get("IPython")
    if zmqshell is None or ipython is None:  # checked first: nothing imported outside a kernel
        return False, None
    shell = ipython.get_ipython()
    if not isinstance(shell, zmqshell.ZMQInteractiveShell) or "qt" in type(shell).__name__.lower():
        return False, None
    if any(name == "QT_API" or name.startswith("SPYDER") for name in os.environ):
        return False, None  # qtconsole, Spyder: consoles, where tqdm draws text bars
    from tqdm.std import TqdmWarning
    from tqdm.std import tqdm as text_bar

    with warnings.catch_warnings():
        # Its "experimental" note, and "IProgress not found" without ipywidgets, which we say
        # once below.
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.autonotebook import tqdm as auto_bar
    if auto_bar is text_bar:
        logger.info("ipywidgets is not installed: progress bars are text on the notebook's stderr")
        return True, None
    return True, auto_bar


def _length(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:  # a generator, an IterableDataset's DataLoader
        return None


def _format(prefix: str, numbers: Mapping[str, float]) -> str:
    return ", ".join(f"{tag(prefix, key)}={value:.4g}" for key, value in numbers.items())


def _is_console_handler(handler: logging.Handler) -> TypeGuard[logging.StreamHandler[TextIO]]:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


class _TqdmWrite(logging.Handler):
    """Stands in for a console handler while bars are drawn: same level, filters and format,
    but writes through ``tqdm.write``, which lifts the bars above the line."""

    def __init__(self, console: logging.StreamHandler[TextIO], write: Callable[..., None]) -> None:
        super().__init__(console.level)
        self.console = console
        self._write = write

    def filter(self, record: logging.LogRecord) -> Any:
        return self.console.filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.console.format(record), file=self.console.stream)
            self.console.flush()
        except Exception:
            self.handleError(record)


class _ConsoleRedirect:
    """The console handlers of the root and ``ignite`` loggers, swapped for :class:`_TqdmWrite`
    stand-ins while any progress bar in the process is open. Reference-counted under a lock:
    trainers in threads share one swap, and the last one to finish puts the originals back
    (tqdm's ``logging_redirect_tqdm`` restores what it saw on entry, which is another
    trainer's stand-ins when runs overlap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._loggers: list[logging.Logger] = []

    def acquire(self, write: Callable[..., None]) -> None:
        """Start the redirection, or join the one in place."""
        with self._lock:
            if self._users == 0:
                self._loggers = []
                for logger_ in (logging.root, logging.getLogger("ignite")):
                    handlers = logger_.handlers
                    if any(_is_console_handler(handler) for handler in handlers):
                        logger_.handlers = [
                            _TqdmWrite(handler, write) if _is_console_handler(handler) else handler
                            for handler in handlers
                        ]
                        self._loggers.append(logger_)
            self._users += 1

    def release(self) -> None:
        """Leave the redirection; the last to leave gives every console handler back, in its
        place (handlers added or removed meanwhile stay added or removed)."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for logger_ in self._loggers:
                    logger_.handlers = [
                        handler.console if isinstance(handler, _TqdmWrite) else handler for handler in logger_.handlers
                    ]
                self._loggers = []


_console = _ConsoleRedirect()


class ProgressBar:
    """Show a tqdm progress bar per epoch.

    Args:
        file: where the bars are written; default (None) ``sys.stderr`` at the time a bar
            opens.
        leave: keep each finished epoch's bar on screen (True) or clear it (False).
        every_iterations: advance the bars every this many iterations (a positive int), or more
            often, down to every iteration, when that many iterations take longer than 0.1 s.
            The training value shown is re-read at those moments, at most every 0.1 s (tqdm
            redraws no more often). The iterations in between only compare a counter.
        disable: None: draw on a terminal (tqdm's choice) or in a Jupyter notebook, not to a
            file or a pipe; True: never draw; False: always draw, also to a file or a pipe.
    """

    #: Among plugins (ignite.hookspecs): after the controllers decided, before the checkpoint.
    ignite_phase = "log"

    def __init__(
        self,
        file: TextIO | None = None,
        leave: bool = True,
        every_iterations: int = DEFAULT_EVERY_ITERATIONS,
        disable: bool | None = None,
    ) -> None:
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(f"progress option file must be a text stream with write(); got {type(file).__name__}")
        if not isinstance(leave, bool):
            raise TypeError(f"progress option leave must be True or False; got {leave!r}")
        check_period("progress", "every_iterations", every_iterations)
        if disable is not None and not isinstance(disable, bool):
            raise TypeError(f"progress option disable must be None, True or False; got {disable!r}")
        self.file = file
        self.leave = leave
        self.every_iterations = every_iterations
        self.disable = disable
        self._training: _Stepper | None = None  # the epoch's bar
        self._validation: _Stepper | None = None  # the validation run's bar
        # The iteration hook's period: the run's first bar looks at the first iteration, later
        # bars start from the previous stride, the rate being likely the same.
        self._stride = 1
        self._training_postfix = ""
        self._postfix_at = -float("inf")  # when the training value was last read (_clock)
        self._postfix_iteration = -1  # the iteration whose output was last read
        # The copy to the host of a CUDA output started at the last draw, with its iteration.
        self._copy: tuple[_HostCopy, int] | None = None
        self._redirecting = False  # whether this plugin holds a share of _console

    def _in_notebook(self) -> bool:
        """Whether bars go to a Jupyter notebook's output: in a kernel, unless ``file`` names
        another stream than the notebook's stdout or stderr."""
        return _notebook()[0] and (self.file is None or self.file is sys.stdout or self.file is sys.stderr)

    def _open(self, **options: Any) -> tqdm | None:
        """A tqdm bar on rank 0, or None when it would not be drawn (then the per-iteration
        hooks return at once)."""
        if self.disable is True or not is_main_process():
            return None
        from tqdm import tqdm  # imported when the first bar opens, not with the plugin

        disable = self.disable
        if self._in_notebook():
            tqdm = _notebook()[1] or tqdm  # the widget bar, or text on the notebook's stderr
            disable = False  # a notebook's streams are not terminals, yet show the bars
        bar = tqdm(file=self.file if self.file is not None else sys.stderr, disable=disable, **options)
        if bar.disable:
            bar.close()
            return None
        if not self._redirecting:
            # While bars are drawn, log lines go through tqdm.write (else the trainer's epoch
            # line, logged while the epoch's bar is open, would run into it).
            try:
                _console.acquire(tqdm.write)
            except BaseException:
                bar.close()
                raise
            self._redirecting = True
        return bar

    def _close_all(self) -> None:
        """Close the bars and give the loggers their handlers back; each step is taken even
        when an earlier one raises."""
        redirecting, self._redirecting = self._redirecting, False
        self._stride = 1  # the next run looks at its first iteration
        with contextlib.ExitStack() as steps:  # run last-in first-out
            if redirecting:
                steps.callback(_console.release)
            steps.callback(self._close_bars)

    def _close_bars(self) -> None:
        validation, self._validation = self._validation, None
        training, self._training = self._training, None
        with contextlib.ExitStack() as closes:  # the epoch's bar is closed even if the other's close fails
            if training is not None:
                closes.callback(training.bar.close)
            if validation is not None:
                closes.callback(validation.bar.close)

    # -- training -------------------------------------------------------------------------

    @hookimpl
    def ignite_epoch_started(self, trainer: Trainer) -> None:
        """Open the epoch's bar, counting from the batches already done when a run resumed
        inside the epoch."""
        self._close_bars()
        self._training_postfix, self._postfix_at, self._postfix_iteration = "", -float("inf"), -1
        self._copy = None
        history = trainer.training_history
        # Each epoch has one training run, started before EPOCH_STARTED (a resumed epoch
        # continues its run): its length is the batches this epoch has done.
        done = len(history.run()) if history.num_runs == trainer.current_epoch else 0
        bar = self._open(
            total=_length(trainer.training_data),
            initial=done,
            desc=f"Epoch {trainer.current_epoch}/{trainer.max_epochs}",
            leave=self.leave,
            unit="it",
            dynamic_ncols=True,
        )
        if bar is not None:
            self._training = _Stepper(bar, trainer.current_iteration, self.every_iterations, self._stride)
        if self.disable is not True:  # else the iteration hook is not registered (ignite_every)
            # No bar (not rank 0, or tqdm would not draw): the iteration hook is not called at all.
            trainer.set_period(self, _ITERATION_HOOK, self._stride if bar is not None else None)

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook's first period; ``ignite_epoch_started`` and the hook itself then
        set it to the stride (``Trainer.set_period``). None with ``disable=True``: never called."""
        return {_ITERATION_HOOK: None if self.disable is True else 1}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """At the end of a stride, advance the bar, and show the latest output if the one
        shown was read at least 0.1 s ago (tqdm redraws no more often); the next stride
        follows the rate."""
        training = self._training
        if training is None:
            return
        now = _clock()
        if training.advance(trainer.current_iteration, now) and now - self._postfix_at >= _INTERVAL:
            self._show_training_value(trainer, training, now)  # redrawn with the bar's next move
        if training.stride != self._stride:
            self._stride = training.stride
            trainer.set_period(self, _ITERATION_HOOK, training.stride)

    def _show_training_value(self, trainer: Trainer, training: _Stepper, now: float, final: bool = False) -> None:
        """Show the latest output. During the epoch, a CUDA output is copied to the host without
        waiting and shown at a later draw, once the device got there (no host sync in the
        loop); ``final`` (the epoch's end) reads the last output at once (one sync at most)."""
        output = trainer.training_history[-1]
        self._postfix_at = now
        if final:
            self._copy = None
            self._set_postfix(training, scalars(output), trainer.current_iteration)
            return
        pending = self._copy
        if pending is not None:
            if not pending[0].ready():
                return  # the device has not reached that iteration yet: shown at a later draw
            self._copy = None
            self._set_postfix(training, scalars(pending[0].output), pending[1])
        copy = _HostCopy.start(output)
        if copy is None:
            self._set_postfix(training, scalars(output), trainer.current_iteration)
        else:
            self._copy = (copy, trainer.current_iteration)

    def _set_postfix(self, training: _Stepper, numbers: Mapping[str, float], iteration: int) -> None:
        self._training_postfix = _format("train", numbers)
        self._postfix_iteration = iteration
        training.bar.set_postfix_str(self._training_postfix, refresh=False)

    def _finish_training_bar(self, trainer: Trainer, draw: bool) -> None:
        """Bring the bar to the epoch's last iteration and output; drawn now if ``draw``, else
        by the bar's ``close()``."""
        training = self._training
        if training is not None:
            # Not read again when the last draw showed the last output already.
            if len(trainer.training_history) and self._postfix_iteration != trainer.current_iteration:
                self._show_training_value(trainer, training, _clock(), final=True)
            training.finish(trainer.current_iteration, draw)

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        """Before a validation run, show the finished training part now. Without one the bar
        is finished as it closes at EPOCH_COMPLETED: a draw between training steps is costly,
        and closing draws it anyway."""
        if trainer.validation_data is not None:
            self._finish_training_bar(trainer, draw=True)

    # -- validation -----------------------------------------------------------------------

    @hookimpl
    def ignite_validation_starting(self, trainer: Trainer) -> None:
        """Open a transient bar under the epoch's, cleared when validation ends; in a notebook,
        count in the epoch's bar instead."""
        training = self._training
        if training is None:
            return
        total = _length(trainer.validation_data)
        if self._in_notebook():
            count = _ValidationCount(training.bar, self._training_postfix, total)
            self._validation = _Stepper(count, 0, self.every_iterations)
            return
        bar = self._open(total=total, desc="Validation", leave=False, unit="it", dynamic_ncols=True)
        if bar is not None:
            self._validation = _Stepper(bar, 0, self.every_iterations)

    @hookimpl
    def ignite_validation_iteration_completed(self, trainer: Trainer) -> None:
        """Count the batch; advance the validation bar at the end of a stride."""
        validation = self._validation
        if validation is not None:
            validation.count += 1
            if validation.count >= validation.next:
                validation.advance(validation.count, _clock())

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        """Clear the validation bar and put the validation mean in the epoch bar. The mean is
        a collective under a process group: computed on every rank, shown on rank 0."""
        means = epoch_means(trainer, validation=True) if self.disable is not True else {}
        validation, self._validation = self._validation, None
        if validation is not None:
            validation.bar.close()
        training = self._training
        if training is not None:
            shown = ", ".join(part for part in (self._training_postfix, _format("val", means)) if part)
            # Drawn by close() at EPOCH_COMPLETED, which comes next (in a notebook it replaces
            # the validation count).
            training.bar.set_postfix_str(shown, refresh=False)

    # -- closing --------------------------------------------------------------------------

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Close the epoch's bar, finished first if no validation run did it."""
        if trainer.validation_data is None:
            self._finish_training_bar(trainer, draw=False)
        self._close_bars()

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        """Close any bar still open and end the logging redirection."""
        self._close_all()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """Close any bar still open, so that the traceback starts on a line of its own, and
        end the logging redirection. A failure here is logged, not raised, so that the run's
        own exception propagates."""
        try:
            self._close_all()
        except Exception:
            logger.exception("Could not close the progress bar")
