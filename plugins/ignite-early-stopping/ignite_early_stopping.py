"""Ignite plugin: stop training when a monitored score has stopped improving.

Enable it with ``Trainer(..., plugins={"early_stopping": {"patience": 3}})``. Without
``patience`` it stays inactive and the trainer says so in one log line.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ignite import PluginInactive, distributed, hookimpl, monitor

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["EarlyStopping"]

logger = logging.getLogger("ignite.early_stopping")

_MODES = ("min", "max")
_STATE_KEYS = ("best_score", "best_epoch", "counter")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"early_stopping option {name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"early_stopping option {name} must be at least {minimum}; got {value!r}")
    return int(value)


def _format(score: float | None) -> str:
    return "none" if score is None else f"{score:.6g}"


class EarlyStopping:
    """Stop the run (``trainer.terminate()``) when the monitored score has not improved for
    ``patience`` epochs in a row.

    The score is checked at EPOCH_COMPLETED, after the epoch's validation run. By default it
    is the mean of the last validation run's plain-number outputs, or of the last training
    epoch's when the trainer has no validation data (as :func:`ignite.monitor.default_score`
    computes it, except that a NaN mean is kept as NaN), and lower is better.

    Args:
        patience: how many epochs without improvement to allow; the run stops at the end of
            the ``patience``-th. ``None`` (the default) leaves the plugin inactive.
        min_delta: the least change that counts as an improvement (``score < best -
            min_delta`` in ``"min"`` mode, ``score > best + min_delta`` in ``"max"`` mode).
        mode: ``"min"`` (lower is better) or ``"max"`` (higher is better).
        score_function: ``callable(trainer) -> float`` to monitor instead of the default
            score (it may return a number or a one-element tensor, or None for "no score this
            epoch"). In a distributed run it is called on every rank and must return the same
            value on every rank (e.g. compute it from :func:`ignite.monitor.epoch_means`,
            which is reduced across ranks); should ranks disagree anyway, the run stops on
            every rank as soon as one rank decides to stop.
        min_epochs: never stop before this many epochs have completed (epochs without
            improvement are still counted before it).
        metric: monitor ``trainer.metrics[metric]`` (e.g. ``"accuracy"``, computed by the
            ignite-metrics plugin; give ``mode="max"`` for a score where higher is better)
            instead of the default score. Missing at an epoch's end, it raises a ValueError
            naming the metrics there. Not together with ``score_function``.

    A score of NaN counts as no improvement. When there is no score (outputs without a plain
    number, e.g. tuples or dicts) the plugin warns once, naming the fix (``score_function``),
    and makes no decision for that epoch. An epoch whose validation run (or training epoch,
    without validation data) was cut short by ``terminate()`` is not checked: a partial run is
    no evidence, and a run resumed from a checkpoint then checks that epoch once, when whole.
    """

    #: Among plugins (ignite.hookspecs): before the loggers and the checkpoint, which save its decision.
    ignite_phase = "decide"

    def __init__(
        self,
        patience: int | None = None,
        min_delta: float = 0.0,
        mode: str = "min",
        score_function: Callable[[Trainer], Any] | None = None,
        min_epochs: int = 0,
        metric: str | None = None,
    ) -> None:
        if patience is not None:
            patience = _check_int("patience", patience, 1)
        given: object = min_delta  # typed as float, checked as anything a user may pass
        if isinstance(given, bool) or not isinstance(given, numbers.Real):
            raise TypeError(f"early_stopping option min_delta must be a number; got {min_delta!r}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"early_stopping option min_delta must be a finite number >= 0; got {min_delta!r}")
        if mode not in _MODES:
            raise ValueError(f"early_stopping option mode must be 'min' or 'max'; got {mode!r}")
        if score_function is not None and not callable(score_function):
            raise TypeError(
                "early_stopping option score_function must be a callable(trainer) -> float; "
                f"got {type(score_function).__name__}"
            )
        min_epochs = _check_int("min_epochs", min_epochs, 0)
        monitored = monitor.metric_score("early_stopping", metric, score_function)
        if patience is None:
            raise PluginInactive(
                "no patience given; activate it with "
                "Trainer(..., plugins={'early_stopping': {'patience': 3}}) to stop after 3 epochs without improvement"
            )
        self.patience: int = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.score_function = score_function
        self.min_epochs = min_epochs
        self.metric: str | None = metric
        self._best_score: float | None = None
        self._best_epoch: int | None = None
        self._counter = 0
        self._score = monitor.EpochScore(
            "early_stopping", monitored, f"'patience': {patience}, ", "It makes no decision"
        )

    # -- read-only state ---------------------------------------------------------------------

    @property
    def best_score(self) -> float | None:
        """The best score seen so far, None before the first (non-NaN) score."""
        return self._best_score

    @property
    def best_epoch(self) -> int | None:
        """The epoch at which :attr:`best_score` was reached, None before the first score."""
        return self._best_epoch

    @property
    def counter(self) -> int:
        """Epochs in a row without improvement, as of the last check."""
        return self._counter

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Best score, best epoch and the no-improvement counter (plain Python values)."""
        return {"best_score": self._best_score, "best_epoch": self._best_epoch, "counter": self._counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: a resumed run keeps counting where it stopped."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"early_stopping state is missing {', '.join(missing)}: expected a dict from EarlyStopping.state_dict()"
            )
        best = state["best_score"]
        self._best_score = None if best is None else float(best)
        self._best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self._counter = int(state["counter"])

    # -- the decision ------------------------------------------------------------------------

    def _improved(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self._best_score is None:
            return True
        if self.mode == "min":
            return score < self._best_score - self.min_delta
        return score > self._best_score + self.min_delta

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Check the score; terminate the run after ``patience`` epochs without improvement."""
        epoch = trainer.current_epoch
        # None for an epoch cut short by terminate() (no evidence) or without a number (warned).
        score = self._score(trainer)
        stop = False
        if score is not None:
            if self._improved(score):
                self._best_score, self._best_epoch, self._counter = score, epoch, 0
            else:
                self._counter += 1
            stop = self._counter >= self.patience and epoch >= self.min_epochs
        # Every rank reaches this collective, so all ranks stop together even if a
        # score_function disagreed across ranks.
        agreed = distributed.agree_any(stop)
        if not agreed:
            return
        trainer.terminate()
        if not distributed.is_main_process():
            return
        if stop and self._best_score is None:
            logger.info(
                "Early stopping at epoch %d: no improvement for %d epochs, every score was NaN", epoch, self._counter
            )
        elif stop:
            logger.info(
                "Early stopping at epoch %d: no improvement for %d epochs, best %s at epoch %d",
                epoch,
                self._counter,
                _format(self._best_score),
                self._best_epoch,
            )
        else:
            logger.warning(
                "Early stopping at epoch %d because another rank decided to stop (this rank: no improvement for "
                "%d epochs, best %s): score_function must return the same value on every rank",
                epoch,
                self._counter,
                _format(self._best_score),
            )

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, mode={self.mode!r}, "
            f"min_epochs={self.min_epochs}, metric={self.metric!r}, best_score={self._best_score}, "
            f"best_epoch={self._best_epoch}, "
            f"counter={self._counter})"
        )
