"""Ignite plugin: reduce the learning rate when a monitored score stalls, and step torch LR
schedulers for you.

Enable it with ``Trainer(..., plugins={"lr_reduction": {"optimizer": optimizer}})``. Without an
``optimizer`` (or a ``scheduler``) it stays inactive and the trainer says so in one log line.
The plateau logic is torch's own :class:`torch.optim.lr_scheduler.ReduceLROnPlateau`, one per
optimizer.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ignite import PluginInactive, distributed, hookimpl, monitor

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["LRReduction"]

logger = logging.getLogger("ignite.lr_reduction")

Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | Mapping[str, torch.optim.Optimizer]
Schedulers = LRScheduler | Sequence[LRScheduler]

_STEPS = ("epoch", "iteration")


def _option_error(name: str, requirement: str, value: Any) -> str:
    return f"lr_reduction option {name} must be {requirement}; got {value!r}"


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_option_error(name, "an integer", value))
    if value < minimum:
        raise ValueError(_option_error(name, f"at least {minimum}", value))
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_optimizer(label: str, optimizer: Any) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    hint = ""
    if isinstance(optimizer, torch.nn.Module):
        hint = " (this is a model: pass the optimizer that trains it)"
    elif hasattr(optimizer, "param_groups"):
        hint = " (it has param_groups but is not a torch.optim.Optimizer, which ReduceLROnPlateau requires)"
    raise TypeError(
        f"lr_reduction option optimizer{label} must be a torch.optim.Optimizer with param_groups, or a list or "
        f"dict of them; got {type(optimizer).__name__}{hint}"
    )


def _named_optimizers(optimizer: Any) -> list[tuple[str, torch.optim.Optimizer]]:
    if optimizer is None:
        return []
    if isinstance(optimizer, Mapping):
        named = [(str(key), value) for key, value in optimizer.items()]
        labels = [f"[{key!r}]" for key in optimizer]
    elif isinstance(optimizer, (list, tuple)):
        named = [(str(index), value) for index, value in enumerate(optimizer)]
        labels = [f"[{index}]" for index in range(len(optimizer))]
    else:
        return [("0", _check_optimizer("", optimizer))]
    if not named:
        raise ValueError(_option_error("optimizer", "an optimizer or a non-empty list or dict of them", optimizer))
    return [(name, _check_optimizer(label, value)) for (name, value), label in zip(named, labels)]


def _schedulers(scheduler: Any) -> list[LRScheduler]:
    if scheduler is None:
        return []
    found = list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler]
    if not found:
        raise ValueError(_option_error("scheduler", "a torch LR scheduler or a non-empty list of them", scheduler))
    for index, item in enumerate(found):
        if not isinstance(item, LRScheduler):
            where = f"[{index}]" if isinstance(scheduler, (list, tuple)) else ""
            raise TypeError(
                f"lr_reduction option scheduler{where} must be a torch.optim.lr_scheduler scheduler (StepLR, "
                f"OneCycleLR, ReduceLROnPlateau, ...) or a list of them; got {type(item).__name__}"
            )
    return found


class LRReduction:
    """Multiply the learning rate of ``optimizer`` by ``factor`` when the monitored score has
    not improved for more than ``patience`` epochs, with one
    :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` per optimizer (torch's rules: the
    ``threshold``/``threshold_mode`` test, ``cooldown``, ``min_lr``). Optionally step other
    torch LR schedulers every epoch or every iteration.

    Plateau schedulers are stepped at EPOCH_COMPLETED, after the epoch's validation run, on
    every rank, with the score: by default the mean of the last validation run's
    plain-number outputs, or of the last training epoch's without validation data (as
    :func:`ignite.monitor.default_score` computes it, reduced across ranks, except that a
    NaN mean stays NaN and counts as no improvement), lower is better.

    Args:
        optimizer: a ``torch.optim.Optimizer``, or a list or dict of them; each gets its own
            ReduceLROnPlateau. ``None`` (the default) with no ``scheduler`` leaves the plugin
            inactive.
        factor: the learning rate is multiplied by this, in (0, 1).
        patience: epochs without improvement allowed; the rate is reduced at the next one
            (torch's rule: with ``patience=2``, at the third epoch without improvement).
        threshold: the least relative (``threshold_mode="rel"``) or absolute (``"abs"``)
            change that counts as an improvement.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: epochs to wait after a reduction before counting again.
        min_lr: lower bound of the learning rate: a number, or (one optimizer) a list with
            one number per parameter group.
        mode: ``"min"`` (lower score is better) or ``"max"``.
        score_function: ``callable(trainer) -> float`` (or a one-element tensor, or None for
            "no score this epoch") to monitor instead of the default score. In a distributed
            run it is called on every rank and must return the same value on every rank
            (compute it from :func:`ignite.monitor.epoch_means`, which is reduced), or the
            ranks' learning rates drift apart.
        scheduler: a torch LR scheduler or a list of them to step as well (or instead, when
            no ``optimizer`` is given). A ``ReduceLROnPlateau`` among them is stepped with the
            score at EPOCH_COMPLETED; the others with ``step()``.
        scheduler_step: when the other schedulers step: ``"epoch"`` (EPOCH_COMPLETED) or
            ``"iteration"`` (after every training iteration).
        metric: monitor ``trainer.metrics[metric]`` (e.g. ``"accuracy"``, computed by the
            ignite-metrics plugin; give ``mode="max"`` for a score where higher is better)
            instead of the default score. Missing at an epoch's end, it raises a ValueError
            naming the metrics there. Not together with ``score_function``.

    Each reduction is logged at INFO on ``ignite.lr_reduction`` (rank 0), e.g. ``epoch 5:
    learning rate of optimizer 0 group 0 reduced 0.1 -> 0.01``.
    """

    #: Among plugins (ignite.hookspecs): before the loggers show the rate and the checkpoint saves it.
    ignite_phase = "decide"

    def __init__(
        self,
        optimizer: Optimizers | None = None,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0,
        mode: str = "min",
        score_function: Callable[[Trainer], Any] | None = None,
        scheduler: Schedulers | None = None,
        scheduler_step: str = "epoch",
        metric: str | None = None,
    ) -> None:
        optimizers = _named_optimizers(optimizer)
        if not _is_number(factor):
            raise TypeError(_option_error("factor", "a number in (0, 1)", factor))
        if not 0 < factor < 1:
            raise ValueError(_option_error("factor", "in (0, 1), e.g. 0.1 or 0.5", factor))
        patience = _check_int("patience", patience, 0)
        if not _is_number(threshold):
            raise TypeError(_option_error("threshold", "a number", threshold))
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(_option_error("threshold", "a finite number >= 0", threshold))
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(_option_error("threshold_mode", "'rel' or 'abs'", threshold_mode))
        cooldown = _check_int("cooldown", cooldown, 0)
        min_lr = self._check_min_lr(min_lr, optimizers)
        if mode not in ("min", "max"):
            raise ValueError(_option_error("mode", "'min' or 'max'", mode))
        if score_function is not None and not callable(score_function):
            raise TypeError(
                _option_error("score_function", "a callable(trainer) -> float", type(score_function).__name__)
            )
        monitored = monitor.metric_score("lr_reduction", metric, score_function)
        schedulers = _schedulers(scheduler)
        if scheduler_step not in _STEPS:
            raise ValueError(_option_error("scheduler_step", "'epoch' or 'iteration'", scheduler_step))
        if scheduler_step == "iteration" and any(isinstance(s, ReduceLROnPlateau) for s in schedulers):
            raise ValueError(
                "lr_reduction option scheduler_step='iteration' cannot step a ReduceLROnPlateau, which needs the "
                "epoch's score: leave scheduler_step='epoch' or pass the plateau scheduler's optimizer as optimizer="
            )
        if not optimizers and not schedulers:
            raise PluginInactive(
                "no optimizer given; activate it with Trainer(..., plugins={'lr_reduction': {'optimizer': "
                "optimizer}}) to multiply its learning rate by 0.1 when the score has not improved for more than 10 "
                "epochs, or pass scheduler= to have a torch LR scheduler stepped"
            )
        self.factor = float(factor)
        self.patience = patience
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.mode = mode
        self.score_function = score_function
        self.metric: str | None = metric
        self.scheduler_step = scheduler_step
        #: (label, ReduceLROnPlateau) for each given optimizer, label as in the log lines.
        self._plateaus: list[tuple[str, ReduceLROnPlateau]] = [
            (
                f"optimizer {name}",
                ReduceLROnPlateau(
                    opt,
                    mode=mode,  # type: ignore[arg-type]
                    factor=self.factor,
                    patience=patience,
                    threshold=self.threshold,
                    threshold_mode=threshold_mode,  # type: ignore[arg-type]
                    cooldown=cooldown,
                    min_lr=cast("list[float] | float", min_lr),  # checked by _check_min_lr
                ),
            )
            for name, opt in optimizers
        ]
        self._schedulers = schedulers
        # Plateau schedulers passed as scheduler= are stepped with the score, like ours.
        self._scored: list[tuple[str, ReduceLROnPlateau]] = self._plateaus + [
            (f"optimizer of scheduler {index}", s)
            for index, s in enumerate(schedulers)
            if isinstance(s, ReduceLROnPlateau)
        ]
        self._stepped = tuple(s.step for s in schedulers if not isinstance(s, ReduceLROnPlateau))
        self._score = monitor.EpochScore(
            "lr_reduction", monitored, "'optimizer': optimizer, ", "It leaves the learning rate alone"
        )

    @staticmethod
    def _check_min_lr(min_lr: Any, optimizers: list[tuple[str, torch.optim.Optimizer]]) -> Any:
        if isinstance(min_lr, (list, tuple)):
            if len(optimizers) != 1:
                raise ValueError(
                    "lr_reduction option min_lr as a list gives one value per parameter group of a single optimizer; "
                    f"with {len(optimizers)} optimizers pass one number"
                )
            groups = len(optimizers[0][1].param_groups)
            if len(min_lr) != groups:
                raise ValueError(
                    f"lr_reduction option min_lr has {len(min_lr)} values for an optimizer with {groups} parameter "
                    "groups: give one per group, or one number"
                )
            values = list(min_lr)
        else:
            values = [min_lr]
        for value in values:
            if not _is_number(value):
                raise TypeError(_option_error("min_lr", "a number >= 0 or a list of them", min_lr))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(_option_error("min_lr", "a finite number >= 0 or a list of them", min_lr))
        return [float(v) for v in values] if isinstance(min_lr, (list, tuple)) else float(min_lr)

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook only with iteration schedulers to step (None: not registered, so
        an epoch-only configuration adds nothing to the training iterations)."""
        return {"ignite_training_iteration_completed": 1 if self.scheduler_step == "iteration" and self._stepped else None}

    @hookimpl
    def ignite_training_iteration_completed(self) -> None:
        """Step the iteration schedulers."""
        for step in self._stepped:
            step()

    # -- read-only state ---------------------------------------------------------------------

    @property
    def plateau_schedulers(self) -> list[ReduceLROnPlateau]:
        """The ReduceLROnPlateau made for each given optimizer, in order."""
        return [scheduler for _, scheduler in self._plateaus]

    @property
    def schedulers(self) -> list[LRScheduler]:
        """The schedulers given as ``scheduler=``, in order."""
        return list(self._schedulers)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The state dicts of the plateau schedulers and of the given schedulers (plain
        Python values, loadable with ``torch.load(weights_only=True)``). The optimizers'
        learning rates are part of the optimizers' own state dicts, not of this one."""
        return {
            "plateau": [scheduler.state_dict() for _, scheduler in self._plateaus],
            "schedulers": [scheduler.state_dict() for scheduler in self._schedulers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: a resumed run keeps counting epochs without improvement
        and keeps its schedulers' positions. Settings saved with a scheduler's state (factor,
        patience, ...) are restored with it, as torch's ``load_state_dict`` does."""
        if not isinstance(state, Mapping) or "plateau" not in state or "schedulers" not in state:
            raise ValueError(
                "lr_reduction state must be a dict from LRReduction.state_dict() (keys plateau, schedulers)"
            )
        for key, own in (("plateau", len(self._plateaus)), ("schedulers", len(self._schedulers))):
            if len(state[key]) != own:
                what = "optimizers" if key == "plateau" else "schedulers"
                raise ValueError(
                    f"lr_reduction state has {len(state[key])} {what[:-1]} states but this plugin has {own} {what}: "
                    "configure the same optimizer= and scheduler= as the saved run"
                )
        for (_, scheduler), saved in zip(self._plateaus, state["plateau"]):
            scheduler.load_state_dict(dict(saved))
        for stepped, saved in zip(self._schedulers, state["schedulers"]):
            stepped.load_state_dict(dict(saved))

    # -- the hooks ---------------------------------------------------------------------------

    def _step_plateaus(self, trainer: Trainer) -> None:
        epoch = trainer.current_epoch
        # None for an epoch cut short by terminate() (no evidence) or without a number (warned).
        score = self._score(trainer)
        if score is None:
            return
        for label, scheduler in self._scored:
            before = monitor.learning_rates(scheduler.optimizer).values()
            scheduler.step(score)
            if not distributed.is_main_process():
                continue
            for group, (old, new) in enumerate(zip(before, monitor.learning_rates(scheduler.optimizer).values())):
                if new != old:
                    logger.info(
                        "epoch %d: learning rate of %s group %d reduced %.6g -> %.6g", epoch, label, group, old, new
                    )

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Step the plateau schedulers with the score, then the epoch schedulers."""
        if self._scored:
            self._step_plateaus(trainer)
        if self.scheduler_step == "epoch":
            for step in self._stepped:
                step()

    def __repr__(self) -> str:
        return (
            f"LRReduction(optimizers={len(self._plateaus)}, factor={self.factor}, patience={self.patience}, "
            f"threshold={self.threshold}, threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown}, "
            f"min_lr={self.min_lr}, mode={self.mode!r}, metric={self.metric!r}, schedulers={len(self._schedulers)}, "
            f"scheduler_step={self.scheduler_step!r})"
        )
