"""TensorBoard plugin for Ignite: training, validation and learning-rate series in event files.

Installed, it is active in every :class:`ignite.Trainer` (disable it with
``Trainer(..., plugins={"tensorboard": False})``). It writes, on rank 0 only, into one
TensorBoard event file per run (written synchronously on the training thread, through a
buffered file: see :class:`_EventFile`):

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

import contextlib
import itertools
import logging
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars_of
from ignite.monitor import epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["TensorBoardLogger"]

logger = logging.getLogger("ignite.tensorboard")

#: A logged iteration only keeps its output; iterations between cost nothing (measurements:
#: benchmarks/README.md).
DEFAULT_LOG_EVERY = 100

#: Logged iterations kept before they are encoded and written together (also at each epoch's
#: end, when ``flush_secs`` have passed, and at close).
_BATCH = 100

#: The clock that decides when ``flush_secs`` have passed (a module attribute so that tests can
#: drive it).
_clock = time.monotonic

#: Numbers the event files this process creates, as tensorboard's EventFileWriter does.
_file_numbers = itertools.count()


def _masked(crc: int) -> int:
    """A CRC-32C masked as TFRecord files store it after a record's length and its data."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _EventFile:
    """One TensorBoard event file, written synchronously through a buffered Python file.

    SummaryWriter hands each event to a background thread that computes the record's CRC in
    pure Python and opens the file once per event, contending for the GIL with training (see
    benchmarks/README.md). Here each record (length, its CRC, the event, its
    CRC: the TFRecord format, as tensorboard's RecordWriter writes it) goes into
    ``open(path, "xb")`` on the calling thread.

    The file is named as tensorboard's EventFileWriter names its own
    (``events.out.tfevents.<time>.<host>.<pid>.<n>``), created exclusively (a name that is
    taken moves on to the next ``n``), and starts with the ``file_version`` event, flushed at
    once so that TensorBoard sees the run from the start. Imports tensorboard: create it only
    when training starts.
    """

    def __init__(self, log_dir: str) -> None:
        # CRC-32C in C: tensorboard's own is pure Python, as slow as the rest of a write.
        from google_crc32c import value as crc32c
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._event, self._summary, self._value = Event, Summary, Summary.Value
        self._crc32c = crc32c
        self._headers: dict[int, bytes] = {}  # a record's length and its CRC, by length
        while True:
            name = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}"
            self.path = os.path.join(log_dir, f"events.out.tfevents.{name}")
            try:
                self._file = open(self.path, "xb")  # buffered; exclusive: never truncate another file
            except FileExistsError:
                continue
            break
        try:
            self._write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            self.flush()
        except BaseException:
            # No caller holds this object yet: close here, or the descriptor lives as long as the
            # traceback. close() retries the failed flush and raises again, but closes regardless.
            with contextlib.suppress(OSError):
                self._file.close()
            raise

    def _write(self, data: bytes) -> None:
        header = self._headers.get(len(data))
        if header is None:  # scalar events of one tag mostly share a length
            length = struct.pack("<Q", len(data))
            header = self._headers[len(data)] = length + struct.pack("<I", _masked(self._crc32c(length)))
        self._file.write(header + data + struct.pack("<I", _masked(self._crc32c(data))))

    def scalar(self, tag: str, value: float, step: int, wall_time: float) -> None:
        """Append one number, encoded as ``SummaryWriter.add_scalar`` encodes it (a
        ``simple_value``, stored as float32)."""
        summary = self._summary(value=[self._value(tag=tag, simple_value=value)])
        self._write(self._event(wall_time=wall_time, step=step, summary=summary).SerializeToString())

    def flush(self) -> None:
        """Hand what was written to the operating system (TensorBoard sees it from then on)."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file (closed even when the flush fails)."""
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


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
            The iterations in between cost nothing: their outputs are not read.
        optimizer: a torch optimizer, or a dict or list of them, whose learning rates are
            written once per epoch (tags ``lr``, ``lr/<group>``, ``lr/<name>/<group>``).
        flush_secs: at most this many seconds between flushes of the event file (checked when
            an iteration is logged); the file is also flushed at each epoch's end and at close.

    Attributes:
        log_dir: the folder written to (None before training starts, and on ranks other than 0
            when no ``log_dir`` was given).
    """

    #: Among plugins (ignite.hookspecs): after the controllers decided, before the checkpoint.
    ignite_phase = "log"

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
        self._writer: _EventFile | None = None
        # Logged iterations not yet written: (iteration, wall time, output).
        self._pending: list[tuple[int, float, Any]] = []
        self._flushed_at = 0.0  # _clock() at the last flush
        self._epoch_lrs: dict[str, float] | None = None

    # -- opening and closing --------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Open a new event file (rank 0 only), creating the log folder."""
        self._close()
        if not is_main_process():
            return
        if self.log_dir is None:
            self.log_dir = _default_log_dir()
        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = _EventFile(self.log_dir)  # imports tensorboard: only when training
        self._flushed_at = _clock()
        logger.info("TensorBoard logs go to %s; view them with: tensorboard --logdir %s", self.log_dir, self.log_dir)

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        """Flush and close the event file."""
        self._close()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """Flush and close the event file, keeping what was written before the failure. A
        failure to close is logged, not raised, so that the run's own exception propagates."""
        try:
            self._close()
        except Exception:
            logger.exception("Could not close the TensorBoard event file in %s", self.log_dir)

    def _close(self) -> None:
        """Write what is pending and close the file, closing it even when the write raises."""
        writer, self._writer = self._writer, None
        with contextlib.ExitStack() as steps:  # run last-in first-out
            if writer is not None:
                steps.callback(writer.close)
                steps.callback(self._write_pending, writer)

    def _write_pending(self, writer: _EventFile) -> None:
        pending = self._pending
        if not pending:
            return
        # One read for the whole batch: at most one host sync per write, not one per output.
        for (step, wall_time, _), numbers in zip(pending, scalars_of([output for _, _, output in pending])):
            for key, value in numbers.items():
                writer.scalar(tag("training/iteration", key), value, step, wall_time)
        pending.clear()

    def _flush(self, writer: _EventFile) -> None:
        self._write_pending(writer)
        writer.flush()
        self._flushed_at = _clock()

    # -- series ---------------------------------------------------------------------------

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook runs every ``log_every`` iterations: the ones between cost nothing."""
        return {"ignite_training_iteration_completed": self.log_every}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Every ``log_every`` iterations (see :meth:`ignite_every`), on rank 0, keep the
        output with its wall time; write the kept ones every ``_BATCH``, and flush when
        ``flush_secs`` have passed since the last flush."""
        writer = self._writer
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
        writer = self._writer
        if writer is not None:
            wall_time = time.time()
            for key, value in means.items():
                writer.scalar(tag("validation/mean", key), value, trainer.current_epoch, wall_time)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Write the epoch's training means and learning rates, then flush the file (the
        epoch's series, its validation means included, are on disk before the next epoch
        starts). The means are a collective under a process group: computed on every rank,
        written on rank 0."""
        epoch = trainer.current_epoch
        training = epoch_means(trainer)
        writer = self._writer
        if writer is None:
            return
        self._write_pending(writer)
        wall_time = time.time()
        for key, value in training.items():
            writer.scalar(tag("training/epoch_mean", key), value, epoch, wall_time)
        if self.optimizer is not None:
            # Resumed after its training part, an epoch reads the rates at its end instead.
            rates = self._epoch_lrs if self._epoch_lrs is not None else learning_rates(self.optimizer)
            for name, rate in rates.items():
                writer.scalar(name, rate, epoch, wall_time)
        self._flush(writer)
