"""What plugins watch and plot: epoch means and the default monitored score, the same on
every rank (reduced across processes when a process group is initialised)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from . import distributed
from .history import History

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["default_score", "epoch_means", "learning_rates", "tag"]


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
