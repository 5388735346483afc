"""TensorBoard plugin for Ignite: training, validation and learning-rate series in event files.

Installed, it is active in every :class:`ignite.Trainer` (disable it with
``Trainer(..., plugins={"tensorboard": False})``). It writes, with
:class:`torch.utils.tensorboard.SummaryWriter`, on rank 0 only:

* ``training/iteration[/<key>]``: the training output every ``log_every`` iterations
  (step: ``trainer.current_iteration``);
* ``training/epoch_mean[/<key>]``: the mean of each epoch's training outputs (step: epoch);
* ``validation/mean[/<key>]``: the mean of each validation run's outputs (step: epoch);
* ``lr[/...]``: the learning rate of each parameter group of ``optimizer``, as the epoch's last
  update used it (step: epoch).

``<key>`` is the index of a tuple output or the key of a dict output (see
:func:`ignite.history.scalars`); a plain number has no key.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars
from ignite.monitor import epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from ignite import Trainer

__all__ = ["TensorBoardLogger"]

logger = logging.getLogger("ignite.tensorboard")

#: One logged number costs ~37-50 us of CPU even handed to the writer in batches (see
#: ``_EMIT_BATCH``), an iteration not logged ~0.27 us; a 64-32-10 MLP's SGD step ~105 us. Every
#: 100 iterations that is ~0.6-0.7% of such a step; every 50 already ~1-1.2% (see the README).
DEFAULT_LOG_EVERY = 100

#: Iteration values are kept in a list and handed to SummaryWriter this many at a time (and at
#: every epoch end, when ``flush_secs`` passed since the last hand-over, and at close). One
#: add_scalar at a time between training steps costs ~5x more: each wakes the writer's
#: background thread, which then competes with the training thread.
_EMIT_BATCH = 100

#: SummaryWriter's queue of events not yet written. Its default (10) makes a hand-over of more
#: events block the training thread until the writer's thread has written (pure-Python CRC,
#: one open/append/close per event: ~200 us each when the epoch's end is busy); this holds a
#: batch and an epoch's series.
_WRITER_QUEUE = 4 * _EMIT_BATCH


def _default_log_dir() -> str:
    """``runs/<YYYYmmdd-HHMMSS>`` under the working directory, with ``-2``, ``-3`` ... appended
    when a run started in the same second already took the name."""
    base = os.path.join(os.getcwd(), "runs", time.strftime("%Y%m%d-%H%M%S"))
    candidate, suffix = base, 1
    while os.path.exists(candidate):
        suffix += 1
        candidate = f"{base}-{suffix}"
    return candidate


class TensorBoardLogger:
    """Write the run's scalars to TensorBoard event files.

    Args:
        log_dir: folder for the event files; default ``runs/<YYYYmmdd-HHMMSS>`` under the
            working directory, chosen and created when training starts (rank 0 only). A
            trainer that runs again keeps writing to the same folder.
        log_every: write the training output every this many iterations (a positive int).
            The iterations in between only compare a counter: their outputs are not read.
        optimizer: a torch optimizer, or a dict or list of them, whose learning rates are
            written once per epoch (tags ``lr``, ``lr/<group>``, ``lr/<name>/<group>``).
        flush_secs: how often, in seconds, SummaryWriter flushes pending events to disk.

    Attributes:
        log_dir: the folder written to (None before training starts, and on ranks other than 0
            when no ``log_dir`` was given).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        log_every: int = DEFAULT_LOG_EVERY,
        optimizer: Any = None,
        flush_secs: float = 120,
    ) -> None:
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"tensorboard option log_dir must be a path (str or os.PathLike); got {type(log_dir).__name__}"
            )
        if isinstance(log_every, bool) or not isinstance(log_every, int):
            raise TypeError(f"tensorboard option log_every must be a positive int; got {log_every!r}")
        if log_every < 1:
            raise ValueError(
                f"tensorboard option log_every must be a positive int (1 writes every iteration); got {log_every}"
            )
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0:
            raise ValueError(f"tensorboard option flush_secs must be a positive number of seconds; got {flush_secs!r}")
        if optimizer is not None:
            try:
                learning_rates(optimizer)
            except (AttributeError, KeyError, TypeError) as error:
                raise TypeError(
                    "tensorboard option optimizer must be a torch optimizer, or a dict or list of them; "
                    f"got {type(optimizer).__name__} ({error})"
                ) from None
        self.log_dir: str | None = os.fspath(log_dir) if log_dir is not None else None
        self.log_every = log_every
        self.optimizer = optimizer
        self.flush_secs = flush_secs
        self._writer: SummaryWriter | None = None
        self._pending: list[tuple[str, float, int, float]] = []  # tag, value, step, wall time
        self._emitted_at = 0.0
        self._epoch_lrs: dict[str, float] | None = None

    # -- opening and closing --------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Open the writer (rank 0 only), creating the log folder."""
        self._close()
        if not is_main_process():
            return
        from torch.utils.tensorboard import SummaryWriter  # heavy: imported only when training

        if self.log_dir is None:
            self.log_dir = _default_log_dir()
        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = SummaryWriter(log_dir=self.log_dir, flush_secs=self.flush_secs, max_queue=_WRITER_QUEUE)
        self._pending.clear()
        self._emitted_at = time.monotonic()
        logger.info("TensorBoard logs go to %s; view them with: tensorboard --logdir %s", self.log_dir, self.log_dir)

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
            logger.exception("Could not close the TensorBoard writer for %s", self.log_dir)

    def _close(self) -> None:
        writer = self._writer
        if writer is not None:
            try:
                self._emit()
            finally:
                self._writer = None
                writer.close()

    def _emit(self) -> None:
        """Hand the pending iteration values to the writer, with the wall time they were
        recorded at."""
        writer, pending = self._writer, self._pending
        if writer is not None:
            for name, value, step, walltime in pending:
                writer.add_scalar(name, value, step, walltime=walltime)
        pending.clear()
        self._emitted_at = time.monotonic()

    # -- series ---------------------------------------------------------------------------

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Every ``log_every`` iterations, record the output's numbers (other iterations
        only compare a counter)."""
        if trainer.current_iteration % self.log_every or self._writer is None:
            return
        step, walltime, pending = trainer.current_iteration, time.time(), self._pending
        for key, value in scalars(trainer.training_history[-1]).items():
            pending.append((tag("training/iteration", key), value, step, walltime))
        if len(pending) >= _EMIT_BATCH or time.monotonic() - self._emitted_at >= self.flush_secs:
            self._emit()

    @hookimpl
    def ignite_epoch_started(self, trainer: Trainer) -> None:
        """Forget the previous epoch's learning rates."""
        self._epoch_lrs = None

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        """Read the learning rates the epoch's last update used (before an end-of-epoch
        scheduler step changes them)."""
        if self.optimizer is not None and self._writer is not None:
            self._epoch_lrs = learning_rates(self.optimizer)

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        """Write the validation means: this event fires only for a validation run that
        happened, so an epoch whose validation terminate() skipped writes none. A collective
        under a process group: computed on every rank, written on rank 0."""
        means = epoch_means(trainer, validation=True)
        if self._writer is not None:
            for key, value in means.items():
                self._writer.add_scalar(tag("validation/mean", key), value, trainer.current_epoch)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Write the epoch's training means and learning rates. The means are a collective
        under a process group: computed on every rank, written on rank 0."""
        epoch = trainer.current_epoch
        training = epoch_means(trainer)
        writer = self._writer
        if writer is None:
            return
        self._emit()
        for key, value in training.items():
            writer.add_scalar(tag("training/epoch_mean", key), value, epoch)
        if self.optimizer is not None:
            # Resumed after its training part, an epoch reads the rates at its end instead.
            rates = self._epoch_lrs if self._epoch_lrs is not None else learning_rates(self.optimizer)
            for name, rate in rates.items():
                writer.add_scalar(name, rate, epoch)
