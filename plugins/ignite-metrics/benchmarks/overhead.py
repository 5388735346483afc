"""Per-iteration cost of the metrics plugin with one accuracy metric on overhead.py's MLP workload.

Run by hand: ``python plugins/ignite-metrics/benchmarks/overhead.py [--rounds 5]``. The MLP
(64-32-10 SGD step, batch 32, 1 thread, 2,000 batches an epoch) returns ``{"loss": loss.item(),
"preds": logits, "target": y}`` in every case; the cases differ only in the plugin:

* ``no plugin``: the plugin disabled;
* ``accuracy``: ``MulticlassAccuracy(num_classes=10)`` over each training epoch (``training=True``),
  i.e. one ``metric.update`` per iteration and one ``compute`` per epoch;
* ``accuracy, validate_args=False``: the same without torchmetrics' argument checks;
* ``accuracy, every_iterations=16``: one ``metric.update`` per 16 batches, concatenated.

A case is one run of 1 + ``--epochs`` epochs, the first (imports, first update) left out; the
figure is the median over rounds of the run's median epoch time, per iteration, minus that of
``no plugin`` in the same round (the cases alternate in one process).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from ignite import Trainer, TrainingEvents

BATCHES = 2000


def workload() -> tuple[list[Any], Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = [(torch.randn(32, 64), torch.randint(0, 10, (32,))) for _ in range(BATCHES)]

    def step(batch: Any) -> Any:
        optimizer.zero_grad()
        logits = model(batch[0])
        loss = torch.nn.functional.cross_entropy(logits, batch[1])
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "preds": logits, "target": batch[1]}

    return data, step


def epoch_seconds(case: str, epochs: int) -> float:
    data, step = workload()
    if case == "no plugin":
        plugins: dict[str, Any] = {"metrics": False}
    else:
        validate = case != "accuracy, validate_args=False"
        metric = MulticlassAccuracy(num_classes=10, validate_args=validate)
        every = 16 if case.endswith("every_iterations=16") else 1
        plugins = {"metrics": {"metrics": {"accuracy": metric}, "training": True, "every_iterations": every}}
    trainer = Trainer(data, step, plugins=plugins)
    stamps: list[float] = []
    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: stamps.append(time.perf_counter()))
    trainer.run(epochs + 1)
    stamps.append(time.perf_counter())
    if case != "no plugin":
        assert 0.0 <= trainer.metrics["training/accuracy"] <= 1.0
    return statistics.median(b - a for a, b in itertools.pairwise(stamps[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    cases = ("no plugin", "accuracy", "accuracy, validate_args=False", "accuracy, every_iterations=16")
    extra: dict[str, list[float]] = {case: [] for case in cases[1:]}
    base: list[float] = []
    for _ in range(arguments.rounds):
        seconds = {case: epoch_seconds(case, arguments.epochs) for case in cases}
        base.append(seconds["no plugin"] / BATCHES)
        for case in cases[1:]:
            extra[case].append((seconds[case] - seconds["no plugin"]) / BATCHES)
    print(f"no plugin: {1e6 * statistics.median(base):.1f} us per iteration (median of {arguments.rounds} rounds)")
    for case, values in extra.items():
        print(f"{case}: +{1e6 * statistics.median(values):.1f} us per iteration "
              f"(rounds: {', '.join(f'{1e6 * v:.1f}' for v in values)})")  # fmt: skip


if __name__ == "__main__":
    main()
