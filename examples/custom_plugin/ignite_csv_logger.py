"""An in-house Ignite plugin: one CSV row per epoch with the epoch's means and learning rate.

Installed (``pip install examples/custom_plugin``), it is found through its entry point
``csv_logger`` and stays inactive until given a file::

    Trainer(..., plugins={"csv_logger": {"file": "log.csv", "optimizer": optimizer}})

The file gets one row per epoch: ``epoch``, ``iteration``, the training means (``training``
for plain-number outputs, ``training/<key>`` for tuple or dict items), the validation means
(``validation``, ``validation/<key>``) and, with an optimizer, its learning rates (``lr``).
"""

from __future__ import annotations

import csv
import logging
import os
from typing import TYPE_CHECKING, Any

from ignite import PluginInactive, distributed, hookimpl, monitor

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["CSVLogger"]

logger = logging.getLogger("ignite.csv_logger")


class CSVLogger:
    """Write one CSV row per epoch.

    Args:
        file: the CSV file's path. ``None`` (the default) leaves the plugin inactive. A new run
            starts the file afresh; a run that continues a trainer (``trainer.run`` again, or
            a resumed checkpoint) keeps the rows of the epochs already done and appends.
        optimizer: an optimizer (or a dict or list of them) whose learning rates get a column
            each, as :func:`ignite.monitor.learning_rates` names them.
    """

    def __init__(self, file: str | os.PathLike[str] | None = None, optimizer: Any = None) -> None:
        # __init__ only checks options: `ignite plugins` constructs every plugin to report on it.
        if file is not None and not isinstance(file, (str, os.PathLike)):
            raise TypeError(f"csv_logger option file must be a file name; got {type(file).__name__}")
        if optimizer is not None:
            monitor.check_optimizer("csv_logger", optimizer)
        if file is None:
            raise PluginInactive(
                "no file given; activate it with Trainer(..., plugins={'csv_logger': {'file': 'log.csv'}})"
            )
        self.path = os.fspath(file)
        self.optimizer = optimizer
        self._columns: list[str] | None = None  # fixed by the first row written (or the saved state)
        self._ready = False  # the file has been prepared for this run

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The columns, so that a resumed run appends rows under the same header."""
        return {"columns": list(self._columns) if self._columns is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        if "columns" not in state:
            raise ValueError("csv_logger state has no 'columns': expected a dict from CSVLogger.state_dict()")
        self._columns = list(state["columns"]) if state["columns"] is not None else None

    # -- hooks ----------------------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self) -> None:
        self._ready = False  # decided at the first epoch, once a checkpoint may have been loaded

    @hookimpl
    def ignite_epoch_started(self, trainer: Trainer) -> None:
        if self._ready:
            return
        self._ready = True
        if distributed.is_main_process():
            # Epochs before this one were done by this trainer (or the checkpoint it resumed):
            # keep their rows, drop any later ones (written after that checkpoint was saved).
            self._prepare_file(keep_epochs=trainer.current_epoch - 1)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        # epoch_means is a collective in a distributed run: every rank computes it,
        # and only rank 0 writes.
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "iteration": trainer.current_iteration}
        for key, value in monitor.epoch_means(trainer).items():
            row[monitor.tag("training", key)] = value
        if trainer.validation_data is not None:
            for key, value in monitor.epoch_means(trainer, validation=True).items():
                row[monitor.tag("validation", key)] = value
        if self.optimizer is not None:
            row.update(monitor.learning_rates(self.optimizer))
        if distributed.is_main_process():
            self._write(row)

    # -- the file -------------------------------------------------------------------------

    def _prepare_file(self, keep_epochs: int) -> None:
        kept: list[dict[str, str]] = []
        if keep_epochs > 0 and os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                if reader.fieldnames:
                    self._columns = self._columns or list(reader.fieldnames)
                kept = [row for row in reader if row.get("epoch", "").isdigit() and int(row["epoch"]) <= keep_epochs]
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as file:  # a fresh run starts the file afresh
            if kept and self._columns:
                writer = csv.DictWriter(file, fieldnames=self._columns, extrasaction="ignore", restval="")
                writer.writeheader()
                writer.writerows(kept)
        if kept:
            logger.info("Appending one row per epoch to %s, after the %d rows of earlier epochs", self.path, len(kept))
        else:
            logger.info("Writing one row per epoch to %s", self.path)

    def _write(self, row: dict[str, Any]) -> None:
        if self._columns is None:
            self._columns = list(row)
        new_file = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        # Opened per row: one small write per epoch, and the file is complete after every epoch.
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns, extrasaction="ignore", restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def __repr__(self) -> str:
        return f"CSVLogger(path={self.path!r})"
