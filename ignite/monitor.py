"""What plugins watch and plot: epoch means and the default monitored score, the same on
every rank (reduced across processes when a process group is initialised)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import distributed
from .history import History

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = [
    "EpochScore",
    "check_optimizer",
    "check_period",
    "check_seconds",
    "default_score",
    "epoch_means",
    "learning_rates",
    "metric_score",
    "tag",
]


def tag(prefix: str, key: str) -> str:
    """The series name of one number: ``training`` for a plain number, ``training/d_loss`` for a
    tuple or dict item."""
    return f"{prefix}/{key}" if key else prefix


def _reduced_run_means(history: History) -> dict[str, float]:
    means = history.run_means() if history.num_runs else {}
    if not distributed.is_initialized():
        return means
    # Every rank must reduce the same keys, also a rank whose run was empty or missing: agree
    # on their union first. A rank without a key weighs nothing in its mean.
    count = len(history.run()) if history.num_runs else 0
    keys = sorted(set().union(*distributed.all_gather_object(sorted(means))))
    return {key: distributed.reduce_mean(means.get(key, 0.0), count if key in means else 0) for key in keys}


def epoch_means(trainer: Trainer, *, validation: bool = False) -> dict[str, float]:
    """Means of the numbers in the last training epoch's outputs (or, with ``validation``,
    the last validation run's), keyed as :func:`ignite.history.scalars` keys them.

    With a process group this is a collective (a batch-weighted mean over ranks): call it on
    every rank at the same event.
    """
    history = trainer.validation_history if validation else trainer.training_history
    return _reduced_run_means(history)


def default_score(trainer: Trainer) -> float | None:
    """The score plugins monitor by default (lower is better): the mean of the last
    validation run's outputs, or of the last training epoch's when there is no validation
    data. None when the outputs hold no plain number; NaN when the loss diverged (a decision
    rule should count it as no improvement). A collective, like :func:`epoch_means`.
    """
    return epoch_means(trainer, validation=trainer.validation_data is not None).get("")


def learning_rates(optimizers: Any) -> dict[str, float]:
    """The learning rate of every parameter group: ``{"lr": x}`` for one optimizer with one
    group, ``{"lr/0": x, "lr/1": y}`` for several groups, ``{"lr/name/0": ...}`` for a dict
    of optimizers."""
    if isinstance(optimizers, dict):
        named: Iterable[tuple[str, Any]] = optimizers.items()
    elif isinstance(optimizers, (list, tuple)):
        named = ((str(i), optimizer) for i, optimizer in enumerate(optimizers))
    else:
        named = (("", optimizers),)
    rates: dict[str, float] = {}
    for name, optimizer in named:
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            parts = ["lr", name, str(index) if len(groups) > 1 else ""]
            rates["/".join(part for part in parts if part)] = float(group["lr"])
    return rates


def check_optimizer(plugin: str, optimizer: Any) -> None:
    """A plugin's ``optimizer`` option: a torch optimizer, or a dict or list of them (what
    :func:`learning_rates` reads); anything else is a TypeError naming the plugin and the type."""
    try:
        learning_rates(optimizer)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise TypeError(
            f"{plugin} option optimizer must be a torch optimizer, or a dict or list of them; "
            f"got {type(optimizer).__name__} ({error})"
        ) from None


def check_period(plugin: str, option: str, value: Any) -> int:
    """A plugin's period option (``every_iterations``, ``every_epochs``): a positive int, or a
    TypeError (not an int) or ValueError (below 1) naming the plugin and the option."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{plugin} option {option} must be a positive int; got {value!r}")
    if value < 1:
        raise ValueError(f"{plugin} option {option} must be a positive int (1: every one); got {value}")
    return value


def check_seconds(plugin: str, option: str, value: Any, *, zero: bool = False) -> float:
    """A plugin's duration option (a name ending in ``_secs``): a finite number of seconds,
    positive (or, with ``zero``, non-negative); else a ValueError naming the plugin and option."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not (value >= 0 if zero else value > 0)
    ):
        rule = "a number of seconds >= 0 (finite)" if zero else "a positive number of seconds (finite, > 0)"
        raise ValueError(f"{plugin} option {option} must be {rule}; got {value!r}")
    return float(value)


def metric_score(
    plugin: str, metric: Any, score_function: Callable[[Trainer], Any] | None
) -> Callable[[Trainer], Any] | None:
    """The score function of a controller's options ``metric`` and ``score_function``:
    ``trainer.metrics[metric]`` (set by a metric plugin, e.g. ignite-metrics, before
    EPOCH_COMPLETED; missing at an epoch's end, a ValueError names what is there and the fix),
    else ``score_function``. Both given, or a metric that is no name: a clear error."""
    if metric is None:
        return score_function
    if not isinstance(metric, str) or not metric:
        raise TypeError(
            f"{plugin} option metric must be the name of a value in trainer.metrics, e.g. 'accuracy'; got {metric!r}"
        )
    if score_function is not None:
        raise ValueError(
            f"{plugin} options metric and score_function both say what to monitor: give one of them "
            f"(metric={metric!r} reads trainer.metrics[{metric!r}])"
        )

    def score(trainer: Trainer) -> float:
        value = trainer.metrics.get(metric)
        if value is None:
            held = ", ".join(map(repr, sorted(trainer.metrics))) or "nothing"
            raise ValueError(
                f"{plugin} option metric={metric!r}: trainer.metrics has no {metric!r} at the end of epoch "
                f"{trainer.current_epoch}; it holds {held}. Name one of those, or have a metric plugin compute it, "
                f"e.g. plugins={{'metrics': {{'metrics': {{{metric!r}: {{'name': 'MulticlassAccuracy', "
                f"'num_classes': 10}}}}}}, '{plugin}': {{..., 'metric': {metric!r}, 'mode': 'max'}}}}"
            )
        return value

    return score


class EpochScore:
    """The score a controller plugin (early stopping, LR reduction) decides on, once per
    epoch: ``score_function(trainer)`` when given, else :func:`default_score`.

    Call it at EPOCH_COMPLETED on every rank (the default score is a collective). It returns
    None when the epoch gives no evidence: it was cut short by ``terminate()`` (a resumed run
    decides on that epoch once it is whole), or there is no number, which is warned about
    once, with the reason and a ``score_function`` that would work. NaN is returned as NaN.

    Args:
        plugin: the plugin's entry-point name, for messages and its logger ``ignite.<plugin>``.
        score_function: ``callable(trainer) -> float`` (or a one-element tensor, or None for
            "no score this epoch").
        example_options: the plugin's other options in the hint, e.g. ``"'patience': 3, "``.
        without_score: what the plugin does without a score, e.g. ``"It makes no decision"``.
    """

    def __init__(
        self,
        plugin: str,
        score_function: Callable[[Trainer], Any] | None,
        example_options: str,
        without_score: str,
    ) -> None:
        self.plugin = plugin
        self.score_function = score_function
        self._example_options = example_options
        self._without_score = without_score
        self._warned = False
        self._logger = logging.getLogger(f"ignite.{plugin}")

    def __call__(self, trainer: Trainer) -> float | None:
        if not trainer.epoch_complete:
            return None  # the same on every rank: cuts are agreed on by the trainer
        score, reason, key = self._compute(trainer)
        if score is None and not self._warned:
            self._warned = True
            if distributed.is_main_process():
                self._logger.warning(
                    "%s has no score at epoch %d: %s. %s until it gets one%s",
                    self.plugin,
                    trainer.current_epoch,
                    reason,
                    self._without_score,
                    self._hint(key, trainer),
                )
        return score

    def _compute(self, trainer: Trainer) -> tuple[float | None, str, str]:
        if self.score_function is not None:
            value = self.score_function(trainer)
            if value is None:
                return None, "score_function returned None", ""
            try:
                return float(value), "", ""
            except (TypeError, ValueError):
                raise TypeError(
                    f"{self.plugin} score_function must return a number or a one-element tensor; "
                    f"it returned {type(value).__name__}"
                ) from None
        validation = trainer.validation_data is not None
        means = epoch_means(trainer, validation=validation)
        score = means.get("")
        if score is not None:
            return score, "", ""
        where = "the last validation run's outputs" if validation else "the last training epoch's outputs"
        if means:  # tuples or dicts: name the numbers they do hold
            items = ", ".join(repr(key) for key in means)
            return None, f"{where} hold no plain number, only the numbered or named items {items}", next(iter(means))
        return None, f"{where} hold no number (they are not numbers, or the run was empty)", "loss"

    def _hint(self, key: str, trainer: Trainer) -> str:
        if self.score_function is not None:
            return ": make score_function return a number"
        return (
            f": pass score_function=, a callable(trainer) -> float, e.g. plugins={{'{self.plugin}': "
            f"{{{self._example_options}'score_function': lambda trainer: "
            f"ignite.monitor.epoch_means(trainer, validation={trainer.validation_data is not None})[{key!r}]}}}}"
        )
