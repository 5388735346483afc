"""Ignite plugin: torchmetrics metrics over each validation run (and, when asked, each training epoch).

Enable it with ``Trainer(..., plugins={"metrics": {"metrics": {"accuracy": MulticlassAccuracy(num_classes=10)}}})``.
Without ``metrics`` it stays inactive and the trainer says so in one log line.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import numbers
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torchmetrics
from torch.utils.data.distributed import DistributedSampler

from ignite import PluginInactive, distributed, hookimpl
from ignite.history import scalars_of
from ignite.monitor import check_period

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["TRAINING_PREFIX", "Metrics", "default_output_transform"]

logger = logging.getLogger("ignite.metrics")

#: Training-epoch results are named ``training/<name>`` in ``trainer.metrics`` and the history.
TRAINING_PREFIX = "training/"
_EXAMPLE = "plugins={'metrics': {'metrics': {'accuracy': {'name': 'MulticlassAccuracy', 'num_classes': 10}}}}"


# torchmetrics' domain packages whose public classes a metric may be named from, top level first.
_PACKAGES = ("", "classification", "regression", "aggregation", "retrieval", "nominal", "clustering", "wrappers")


def _public_metric_classes() -> dict[str, type]:
    """The Metric classes in ``__all__`` of torchmetrics and of its domain packages, by name."""
    found: dict[str, type] = {}
    for package in _PACKAGES:
        try:
            module = importlib.import_module(f"torchmetrics.{package}" if package else "torchmetrics")
        except ImportError:  # a domain whose optional dependencies are missing
            continue
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name, None)
            if inspect.isclass(value) and issubclass(value, torchmetrics.Metric):
                found.setdefault(name, value)
    return found


def _build(name: str, spec: Any) -> torchmetrics.Metric:
    """A metric from its option: a torchmetrics Metric, or a dict naming a public torchmetrics
    class (``"name"``) with its keyword arguments."""
    if isinstance(spec, torchmetrics.Metric):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"metrics option metrics[{name!r}] must be a torchmetrics Metric or a dict {{'name': class name, "
            f"**its arguments}}; got {type(spec).__name__}. Example: {_EXAMPLE}"
        )
    options = dict(spec)
    class_name = options.pop("name", None)
    if not isinstance(class_name, str):
        raise ValueError(
            f"metrics option metrics[{name!r}] needs 'name', the torchmetrics class to build, e.g. "
            f"{{'name': 'MulticlassAccuracy', 'num_classes': 10}}; got {spec!r}"
        )
    classes = _public_metric_classes()
    cls = classes.get(class_name)
    if cls is None:
        close = difflib.get_close_matches(class_name, sorted(classes), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"metrics option metrics[{name!r}] names {class_name!r}, which is not a metric class of torchmetrics "
            f"{torchmetrics.__version__}.{hint} Give a class of torchmetrics' top level "
            f"or of torchmetrics.{{{', '.join(p for p in _PACKAGES if p)}}}, "
            "or pass a Metric instance instead of a dict"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"metrics option metrics[{name!r}]: torchmetrics.{class_name}(**{options!r}) failed: {error}"
        ) from None


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith(TRAINING_PREFIX):
        raise ValueError(
            f"metrics option metrics: each name must be a non-empty string not starting with {TRAINING_PREFIX!r} "
            f"(training-epoch results get that prefix); got {name!r}"
        )
    return name


def default_output_transform(output: Any) -> tuple[Any, Any]:
    """``(preds, target)`` from an update output: a tuple or list of two, or a mapping with the
    keys ``preds`` and ``target``. Anything else raises TypeError naming the output's type."""
    if isinstance(output, Mapping):
        if "preds" in output and "target" in output:
            return output["preds"], output["target"]
        found = f"a {type(output).__name__} with keys {sorted(map(str, output))}"
    elif isinstance(output, (tuple, list)) and len(output) == 2:
        return output[0], output[1]
    elif isinstance(output, (tuple, list)):
        found = f"a {type(output).__name__} of {len(output)} items"
    else:
        found = f"a {type(output).__name__}"
    raise TypeError(
        f"the metrics plugin reads (preds, target) from each update output, but the update function returned {found}. "
        "Return a tuple (preds, target) or a dict with 'preds' and 'target' (other keys are kept in the history), or "
        "pass output_transform=, a callable(output) -> (preds, target), e.g. "
        "plugins={'metrics': {..., 'output_transform': lambda output: (output['logits'], output['labels'])}}"
    )


def _as_tensor(value: Any) -> Any:
    # A history keeps a one-element CPU tensor as a float: give torchmetrics a tensor back.
    if isinstance(value, numbers.Number) and not isinstance(value, torch.Tensor):
        return torch.as_tensor(value)
    return value


def _real_samples(data: Any) -> int | None:
    """The samples this rank's DistributedSampler gives that are not padding (it repeats
    samples so that every rank gets as many), or None without one or without padding."""
    sampler = next((s for s in distributed.samplers(data) if isinstance(s, DistributedSampler)), None)
    if sampler is None or sampler.drop_last:
        return None
    size, replicas = len(sampler.dataset), sampler.num_replicas  # type: ignore[arg-type]
    if sampler.total_size == size:
        return None
    # Padded positions are the last ones, total_size - size of them; rank r takes positions r, r + R, ...
    return len(range(sampler.rank, size, replicas))


class _Run:
    """The metrics of one kind of run (validation, or training epochs), accumulated on the device."""

    def __init__(
        self, metrics: dict[str, torchmetrics.Metric], prefix: str, transform: Callable[[Any], Any], every: int = 1
    ) -> None:
        self.metrics = metrics
        self.prefix = prefix
        self.transform = transform
        self.every = every
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.device: torch.device | None = None
        self.seen = 0
        self.batches = 0
        self.limit: int | None = None

    def start(self, data: Any) -> None:
        for metric in self.metrics.values():
            metric.reset()
        self.seen = self.batches = 0
        self.pending.clear()
        self.limit = _real_samples(data)

    def update(self, output: Any) -> None:
        preds, target = self.transform(output)
        preds, target = _as_tensor(preds), _as_tensor(target)
        self.batches += 1
        if self.limit is not None:
            # Shapes are known on the host: dropping the sampler's padding costs no sync.
            count = target.shape[0] if target.dim() else 1
            keep = min(count, max(self.limit - self.seen, 0))
            self.seen += count
            if keep < count:
                preds, target = preds[:keep], target[:keep]
                if keep == 0:
                    return
        device = preds.device
        if device != self.device:  # once: the metrics live where the outputs are
            for metric in self.metrics.values():
                metric.to(device)
            self.device = device
        if self.every == 1:
            for metric in self.metrics.values():
                metric.update(preds, target)
            return
        self.pending.append((preds, target))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Update the metrics with the batches kept (every_iterations > 1), concatenated."""
        if not self.pending:
            return
        try:
            preds = torch.cat([preds for preds, _ in self.pending])
            target = torch.cat([target for _, target in self.pending])
        except (TypeError, RuntimeError) as error:
            raise TypeError(
                f"metrics option every_iterations={self.every} concatenates the batches' preds and targets, which "
                f"failed: {error}. Use every_iterations=1 for outputs of varying shapes or that are not tensors"
            ) from None
        self.pending.clear()
        for metric in self.metrics.values():
            metric.update(preds, target)

    def compute(self) -> dict[str, float] | None:
        """Every metric's result (synchronised across ranks by torchmetrics), read in one go;
        None after a run without batches (cut before its first; the same on every rank)."""
        if not self.batches:
            return None
        self.flush()
        results: dict[str, Any] = {}
        for name, metric in self.metrics.items():
            value = metric.compute()
            if isinstance(value, Mapping):  # e.g. ClasswiseWrapper: one number per key
                results.update({f"{self.prefix}{name}/{key}": item for key, item in value.items()})
            else:
                results[self.prefix + name] = value
        (numbers_,) = scalars_of([results])
        missing = {key: value for key, value in results.items() if key not in numbers_}
        if missing:
            key, value = next(iter(missing.items()))
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"metric {key!r} computed {shape}, not one number: trainer.metrics holds numbers. Reduce it in the "
                "metric (e.g. average='macro'), or wrap it in torchmetrics.wrappers.ClasswiseWrapper for one number "
                "per class"
            )
        return {key: numbers_[key] for key in results}


class Metrics:
    """Compute torchmetrics metrics over each validation run (and, with ``training=True``, over
    each training epoch) from the update functions' outputs.

    At each iteration the outputs go to ``metric.update(preds, target)`` on their device, without
    reading anything back; at VALIDATION_COMPLETED (TRAINING_EPOCH_COMPLETED) every metric is
    computed once (torchmetrics synchronises the ranks of a process group), the results are read
    in one copy and go to ``trainer.metrics[name]`` (training ones as ``training/<name>``) and to
    :attr:`history`, one dict per epoch, saved with the trainer's state.

    Args:
        metrics: name -> a ``torchmetrics.Metric``, or a dict ``{"name": "MulticlassAccuracy",
            **arguments}`` naming a public class of torchmetrics or of its domain packages
            (classification, regression, ...). ``None`` (the default)
            leaves the plugin inactive.
        output_transform: ``callable(output) -> (preds, target)`` applied to each update
            output; by default the output is a tuple ``(preds, target)`` or a dict with the
            keys ``preds`` and ``target``.
        training: also compute the metrics (their copies) over each training epoch.
        every_iterations: update the metrics once every this many batches, with their preds
            and targets concatenated (and at the run's end with the rest): torchmetrics' fixed
            cost per update is paid once per n batches. For metrics whose result does not
            depend on how the samples are split into updates (accuracy, F1, MSE, ...) and
            tensors of equal trailing shapes; the batches stay referenced until then (the
            histories keep them anyway).
    """

    #: Among plugins (ignite.hookspecs): computes what controllers and loggers read.
    ignite_phase = "observe"

    def __init__(
        self,
        metrics: Mapping[str, Any] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        training: bool = False,
        every_iterations: int = 1,
    ) -> None:
        if metrics is not None and not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics option metrics must be a dict of name -> metric; got {type(metrics).__name__}. "
                f"Example: {_EXAMPLE}"
            )
        if output_transform is not None and not callable(output_transform):
            raise TypeError(
                "metrics option output_transform must be a callable(output) -> (preds, target); "
                f"got {type(output_transform).__name__}"
            )
        if not isinstance(training, bool):
            raise TypeError(f"metrics option training must be True or False; got {training!r}")
        check_period("metrics", "every_iterations", every_iterations)
        if not metrics:
            raise PluginInactive(f"no metrics given; activate it with Trainer(..., {_EXAMPLE})")
        built = {_check_name(name): _build(name, spec) for name, spec in metrics.items()}
        transform = output_transform or default_output_transform
        self.output_transform = output_transform
        self.training = training
        self.every_iterations = every_iterations
        self._validation = _Run(built, "", transform, every_iterations)
        clones = {name: metric.clone() for name, metric in built.items()}
        self._training = _Run(clones, TRAINING_PREFIX, transform, every_iterations) if training else None
        #: One dict per epoch: ``{"epoch": n, name: value, ...}``, oldest first.
        self.history: list[dict[str, float]] = []
        self._warned_no_data = False

    @property
    def names(self) -> list[str]:
        """The names the results get in ``trainer.metrics``."""
        names = list(self._validation.metrics)
        if self._training is not None:
            names += [TRAINING_PREFIX + name for name in self._training.metrics]
        return names

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The per-epoch history (plain Python values)."""
        return {"history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history."""
        if not isinstance(state, Mapping) or not isinstance(state.get("history"), list):
            raise ValueError("metrics state must be a dict from Metrics.state_dict() (key history, a list)")
        self.history = [
            {str(key): float(value) if key != "epoch" else int(value) for key, value in entry.items()}
            for entry in state["history"]
        ]

    # -- the hooks -----------------------------------------------------------------------

    def ignite_every(self) -> dict[str, int | None]:
        """The training hooks only with ``training=True``: otherwise training costs nothing."""
        on = 1 if self._training is not None else None
        return {
            "ignite_training_epoch_started": on,
            "ignite_training_iteration_completed": on,
            "ignite_training_epoch_completed": on,
        }

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Say once when there is nothing to compute on."""
        if trainer.validation_data is None and self._training is None and not self._warned_no_data:
            self._warned_no_data = True
            if distributed.is_main_process():
                logger.warning(
                    "metrics: the trainer has no validation data, so no metric is computed: pass validation_data "
                    "to the Trainer, or plugins={'metrics': {..., 'training': True}} to compute them over each "
                    "training epoch"
                )

    @hookimpl
    def ignite_training_epoch_started(self, trainer: Trainer) -> None:
        assert self._training is not None
        self._training.start(trainer.training_data)

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        assert self._training is not None
        self._training.update(trainer.training_history[-1])

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        assert self._training is not None
        self._publish(trainer, self._training.compute())

    @hookimpl
    def ignite_validation_starting(self, trainer: Trainer) -> None:
        self._validation.start(trainer.validation_data)

    @hookimpl
    def ignite_validation_iteration_completed(self, trainer: Trainer) -> None:
        self._validation.update(trainer.validation_history[-1])

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        self._publish(trainer, self._validation.compute())

    def _publish(self, trainer: Trainer, results: dict[str, float] | None) -> None:
        if results is None:
            return
        trainer.metrics.update(results)
        epoch = trainer.current_epoch
        # A run done again (a resumed epoch) replaces its values in the epoch's entry.
        if self.history and self.history[-1].get("epoch") == epoch:
            self.history[-1].update(results)
        else:
            self.history.append({"epoch": epoch, **results})

    def __repr__(self) -> str:
        return f"Metrics(names={self.names}, training={self.training}, epochs={len(self.history)})"
