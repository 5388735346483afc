"""TensorBoard plugin for Ignite: training, validation, metric and learning-rate series in event
files, written through ``torch.utils.tensorboard.SummaryWriter``.

Installed, it is active in every :class:`ignite.Trainer` (disable it with
``Trainer(..., plugins={"tensorboard": False})``). On rank 0 only, it writes into one folder per
run, every series with the global iteration count as its step:

* ``training/iteration[/<key>]``: the training output every ``every_iterations`` iterations;
* ``training/epoch_mean[/<key>]``: the mean of each epoch's training outputs;
* ``validation/mean[/<key>]``: the mean of each validation run's outputs;
* ``metrics/<name>``: ``trainer.metrics`` at each epoch's end;
* ``lr[/...]``: the learning rate of each parameter group of ``optimizer``, as the epoch's last
  update used it;
* ``epoch``: the epoch number at each epoch's end (to read the other series by epoch).

``<key>`` is the index of a tuple output or the key of a dict output (see
:func:`ignite.history.scalars`); a plain number has no key.

One step scale for every series is what makes resumes clean: a run resumed from a checkpoint
opens its writer with ``purge_step``, and TensorBoard's reader then drops, in every series, the
points the interrupted run wrote after the checkpoint, which the resumed run writes again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars_of
from ignite.monitor import check_optimizer, check_period, check_seconds, epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from ignite import Trainer

__all__ = ["DEFAULT_EVERY_ITERATIONS", "TensorBoardLogger"]

logger = logging.getLogger("ignite.tensorboard")

#: A logged iteration only keeps its output; iterations between cost nothing (measurements:
#: the README's Cost section).
DEFAULT_EVERY_ITERATIONS = 100

#: Logged iterations kept before their outputs are read (one host sync) and handed to the
#: writer together (also at each epoch's end, when ``flush_secs`` have passed, at a checkpoint
#: and at close).
_BATCH = 100

#: Events the writer's queue holds before ``add_scalar`` waits for its thread: a whole batch,
#: so that handing one over does not wait for the file.
_MAX_QUEUE = 4 * _BATCH

#: The clock that decides when ``flush_secs`` have passed (a module attribute so that tests can
#: drive it).
_clock = time.monotonic

#: The types a hyperparameter value may have (what TensorBoard's hparams dashboard shows).
_HPARAM_TYPES = (bool, int, float, str)


def _default_dir() -> str:
    """``runs/<YYYYmmdd-HHMMSS>`` under the working directory, with ``-2``, ``-3`` ... appended
    when a run started in the same second already took the name."""
    base = os.path.join(os.getcwd(), "runs", time.strftime("%Y%m%d-%H%M%S"))
    candidate, suffix = base, 1
    while os.path.exists(candidate):
        suffix += 1
        candidate = f"{base}-{suffix}"
    return candidate


#: SummaryWriter's event file names: ``events.out.tfevents.<seconds>.<host>.<pid>.<n>``.
_EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def _after_the_folder_s_files(folder: str) -> None:
    """Return once the clock's second is later than that of every event file in ``folder``:
    TensorBoard reads a folder's files in name order and SummaryWriter names a file by the
    second it was created in, so a file of the same second (a resume, a second run) could be
    read before an older one. Waits at most a second; a file from the future is not waited for."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    newest = max((int(match[1]) for name in names if (match := _EVENT_FILE.match(name))), default=None)
    if newest is None:
        return
    now = time.time()
    if newest == int(now):
        time.sleep(newest + 1 - now)


def _check_hparams(hparams: Any) -> dict[str, bool | int | float | str] | None:
    if isinstance(hparams, bool):
        return {} if hparams else None
    if not isinstance(hparams, Mapping):
        raise TypeError(
            "tensorboard option hparams must be True, False or a dict of hyperparameters "
            f"(name -> bool, int, float or str); got {type(hparams).__name__}"
        )
    for name, value in hparams.items():
        if not isinstance(name, str) or not isinstance(value, _HPARAM_TYPES):
            raise TypeError(
                f"tensorboard option hparams: {name!r} -> {value!r}: names must be str and values bool, int, "
                f"float or str (what TensorBoard's hparams dashboard shows); got {type(value).__name__}"
            )
    return dict(hparams)


class TensorBoardLogger:
    """Write the run's scalars to TensorBoard, through a ``SummaryWriter`` that your own
    handlers can use too.

    Args:
        dir: folder of the run's event files; default ``runs/<YYYYmmdd-HHMMSS>`` under the
            working directory, chosen and created when training starts (rank 0 only). A
            trainer that runs again, or a run resumed from a checkpoint that holds this
            plugin's state, writes into the same folder.
        every_iterations: write the training output every this many iterations (a positive
            int). The iterations in between cost nothing: their outputs are not read.
        optimizer: a torch optimizer, or a dict or list of them, whose learning rates are
            written once per epoch (tags ``lr``, ``lr/<group>``, ``lr/<name>/<group>``).
        flush_secs: at most this many seconds between flushes of the event file (checked when
            an iteration is logged, and by the writer's own thread); the file is also flushed
            at each epoch's end, when a checkpoint is taken, and at close.
        hparams: True, or a dict of your hyperparameters (name -> bool, int, float or str), to
            log them with this plugin's options (``tensorboard/<option>``) for TensorBoard's
            hparams dashboard, once per folder, at the first epoch's end (its metrics are the
            series written then).

    Attributes:
        dir: the folder written to (None before training starts, and on ranks other than 0
            when no ``dir`` was given).
        writer: the ``torch.utils.tensorboard.SummaryWriter`` of the run, from TRAINING_STARTED
            until the run ends (closed at TRAINING_COMPLETED or EXCEPTION_RAISED); None before,
            after, and on ranks other than 0. Give it ``global_step=trainer.current_iteration``
            so that a resumed run replaces your points too.
    """

    #: Among plugins (ignite.hookspecs): after the controllers decided, before the checkpoint.
    ignite_phase = "log"

    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        every_iterations: int = DEFAULT_EVERY_ITERATIONS,
        optimizer: Any = None,
        flush_secs: float = 120,
        hparams: bool | Mapping[str, bool | int | float | str] = False,
    ) -> None:
        if dir is not None and not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"tensorboard option dir must be a path (str or os.PathLike); got {type(dir).__name__}")
        check_period("tensorboard", "every_iterations", every_iterations)
        check_seconds("tensorboard", "flush_secs", flush_secs)
        if optimizer is not None:
            check_optimizer("tensorboard", optimizer)
        self._hparams = _check_hparams(hparams)
        self.dir: str | None = os.fspath(dir) if dir is not None else None
        self._dir_given = dir is not None
        self.every_iterations = every_iterations
        self.optimizer = optimizer
        self.flush_secs = flush_secs
        self.writer: SummaryWriter | None = None
        # Logged iterations not handed to the writer yet: (iteration, wall time, output).
        self._pending: list[tuple[int, float, Any]] = []
        self._flushed_at = 0.0  # _clock() at the last flush
        self._epoch_lrs: dict[str, float] | None = None
        # An epoch has started whose end-of-epoch points are not written yet: a state taken now
        # resumes into points at the current step, which must be replaced too.
        self._in_epoch = False
        self._hparams_written = False
        self._epoch_tags: list[str] = []  # the epoch-level series written, for the hparams' metrics
        self._loaded: dict[str, Any] | None = None  # a loaded state whose writer is not opened yet

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The folder and where the run stands in it. Taken with a checkpoint: what was
        logged up to this point is flushed to disk first, so it survives a kill."""
        if self.writer is not None:
            self._flush(self.writer)
        return {"dir": self.dir, "in_epoch": self._in_epoch, "hparams_written": self._hparams_written}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a run in its folder: the writer opened next (at TRAINING_STARTED, or at the
        next epoch's start when loaded later) purges what the run wrote after this state."""
        try:
            folder, in_epoch, written = state["dir"], state["in_epoch"], state["hparams_written"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"tensorboard state must hold 'dir', 'in_epoch' and 'hparams_written'; {error!r}") from None
        if not (folder is None or isinstance(folder, str)) or not isinstance(in_epoch, bool) or not isinstance(written, bool):
            raise ValueError(f"tensorboard state is malformed: {dict(state)!r}")
        if not self._dir_given:
            self.dir = folder
        elif folder is not None and os.path.abspath(folder) != os.path.abspath(self.dir or ""):
            logger.warning(
                "The resumed run wrote its TensorBoard logs to %s; this one writes to %s (option dir)", folder, self.dir
            )
        self._in_epoch, self._hparams_written = in_epoch, written
        self._loaded = {"in_epoch": in_epoch}

    # -- opening and closing --------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Open a writer (rank 0 only) on the folder, creating it."""
        self._open(trainer)

    def _open(self, trainer: Trainer) -> None:
        self._close()
        loaded, self._loaded = self._loaded, None
        if not is_main_process():
            return
        from torch.utils.tensorboard import SummaryWriter  # only when training: tensorboard is slow to import

        if self.dir is None:
            self.dir = _default_dir()
        step = trainer.current_iteration
        purge_step = None
        if loaded is not None:
            # Inside an epoch the resumed run writes that epoch's end-of-epoch points at the
            # current step again: purge from it, and write its iteration point again below.
            purge_step = step if loaded["in_epoch"] else step + 1
        _after_the_folder_s_files(self.dir)
        self.writer = SummaryWriter(self.dir, purge_step=purge_step, max_queue=_MAX_QUEUE, flush_secs=self.flush_secs)
        if purge_step == step and step > 0 and step % self.every_iterations == 0 and len(trainer.training_history) >= step:
            self._pending.append((step, time.time(), trainer.training_history[step - 1]))
        self._flushed_at = _clock()
        if purge_step is None:
            logger.info("TensorBoard logs go to %s; view them with: tensorboard --logdir %s", self.dir, self.dir)
        else:
            logger.info(
                "TensorBoard logs continue in %s from step %d (points of the interrupted run from there on are "
                "replaced); view them with: tensorboard --logdir %s",
                self.dir,
                purge_step,
                self.dir,
            )

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        """Flush and close the writer."""
        self._close()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """Flush and close the writer, keeping what was written before the failure. A failure
        to close is logged, not raised, so that the run's own exception propagates."""
        try:
            self._close()
        except Exception:
            logger.exception("Could not close the TensorBoard writer of %s", self.dir)

    def _close(self) -> None:
        """Hand what is pending to the writer and close it, closing it even when that raises."""
        writer, self.writer = self.writer, None
        with contextlib.ExitStack() as steps:  # run last-in first-out
            if writer is not None:
                steps.callback(writer.close)
                steps.callback(self._write_pending, writer)

    def _write_pending(self, writer: SummaryWriter) -> None:
        pending = self._pending
        if not pending:
            return
        # One read for the whole batch: at most one host sync per write, not one per output.
        for (step, wall_time, _), numbers in zip(pending, scalars_of([output for _, _, output in pending])):
            for key, value in numbers.items():
                writer.add_scalar(tag("training/iteration", key), value, step, walltime=wall_time)
        pending.clear()

    def _flush(self, writer: SummaryWriter) -> None:
        self._write_pending(writer)
        writer.flush()
        self._flushed_at = _clock()

    # -- series ---------------------------------------------------------------------------

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook runs every ``every_iterations`` iterations: the ones between
        cost nothing."""
        return {"ignite_training_iteration_completed": self.every_iterations}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Every ``every_iterations`` iterations (see :meth:`ignite_every`), on rank 0, keep
        the output with its wall time; hand the kept ones to the writer every ``_BATCH``, and
        flush when ``flush_secs`` have passed since the last flush."""
        writer = self.writer
        if writer is None:
            return
        pending = self._pending
        pending.append((trainer.current_iteration, time.time(), trainer.training_history[-1]))
        if _clock() - self._flushed_at >= self.flush_secs:
            self._flush(writer)
        elif len(pending) >= _BATCH:
            self._write_pending(writer)

    @hookimpl
    def ignite_epoch_started(self, trainer: Trainer) -> None:
        """Forget the previous epoch's learning rates; open the writer again if a state was
        loaded after TRAINING_STARTED."""
        self._in_epoch = True
        self._epoch_lrs = None
        if self._loaded is not None:
            self._open(trainer)

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        """Read the learning rates the epoch's last update used (before an end-of-epoch
        scheduler step changes them)."""
        if self.optimizer is not None and self.writer is not None:
            self._epoch_lrs = learning_rates(self.optimizer)

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        """Write the validation means: this event fires only for a validation run that
        happened, so an epoch whose validation terminate() skipped writes none. A collective
        under a process group: computed on every rank, written on rank 0."""
        means = epoch_means(trainer, validation=True)
        writer = self.writer
        if writer is not None:
            self._scalars(writer, {tag("validation/mean", key): value for key, value in means.items()}, trainer)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Write the epoch's training means, metrics, learning rates and number (and the
        hparams, once), then flush the writer (the epoch's series, its validation means
        included, are on disk before the next epoch starts). The means are a collective under
        a process group: computed on every rank, written on rank 0."""
        training = epoch_means(trainer)
        writer = self.writer
        if writer is not None:
            self._write_pending(writer)
            values = {tag("training/epoch_mean", key): value for key, value in training.items()}
            values.update({f"metrics/{name}": value for name, value in trainer.metrics.items()})
            if self.optimizer is not None:
                # Resumed after its training part, an epoch reads the rates at its end instead.
                values.update(self._epoch_lrs if self._epoch_lrs is not None else learning_rates(self.optimizer))
            values["epoch"] = trainer.current_epoch
            self._scalars(writer, values, trainer)
            if self._hparams is not None and not self._hparams_written:
                self._write_hparams(writer, trainer)
            self._epoch_tags.clear()
            self._flush(writer)
        self._in_epoch = False

    def _scalars(self, writer: SummaryWriter, values: Mapping[str, float], trainer: Trainer) -> None:
        step, wall_time = trainer.current_iteration, time.time()
        for name, value in values.items():
            writer.add_scalar(name, value, step, walltime=wall_time)
        self._epoch_tags.extend(values)

    def _write_hparams(self, writer: SummaryWriter, trainer: Trainer) -> None:
        from torch.utils.tensorboard.summary import hparams

        options: dict[str, Any] = {
            "tensorboard/dir": self.dir,
            "tensorboard/every_iterations": self.every_iterations,
            "tensorboard/flush_secs": self.flush_secs,
        }
        if self.optimizer is not None:
            given = self.optimizer
            if isinstance(given, dict):
                optimizers = list(given.values())
            else:
                optimizers = list(given) if isinstance(given, (list, tuple)) else [given]
            options["tensorboard/optimizer"] = ", ".join(type(optimizer).__name__ for optimizer in optimizers)
        assert self._hparams is not None
        metrics = {name: 0.0 for name in self._epoch_tags if name != "epoch"}  # names only: values are the series
        # The summaries SummaryWriter.add_hparams writes, into this run's folder rather than a new one.
        file_writer = writer.file_writer
        assert file_writer is not None  # SummaryWriter opens it in its constructor
        for summary in hparams({**options, **self._hparams}, metrics):
            file_writer.add_summary(summary, trainer.current_iteration)
        self._hparams_written = True
