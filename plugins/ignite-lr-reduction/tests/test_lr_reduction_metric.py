"""LR reduction on a metric of trainer.metrics (option metric=), computed by the real ignite-metrics plugin."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from ignite_lr_reduction import LRReduction

from ignite import Trainer

pytestmark = [
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
    pytest.mark.skipif(
        "metrics" not in {e.name for e in entry_points(group="ignite.plugins")}, reason="ignite-metrics is not installed"
    ),
]


def make_trainer(**options) -> tuple[Trainer, torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def validate(batch):
        with torch.no_grad():
            return model(batch[0]), batch[1]

    plugins = {
        "metrics": {"metrics": {"accuracy": {"name": "MulticlassAccuracy", "num_classes": 2}}},
        "lr_reduction": {"optimizer": optimizer, **options},
    }
    # Training changes nothing (the update takes no step): the accuracy stays as it is.
    return Trainer([x[:16]], lambda batch: 0.0, [(x[16:], y[16:])], validate, plugins=plugins), optimizer


def test_reduces_when_the_accuracy_stalls() -> None:
    trainer, optimizer = make_trainer(metric="accuracy", mode="max", factor=0.5, patience=0)
    trainer.run(3)
    accuracies = [entry["accuracy"] for entry in trainer.plugins["metrics"].history]
    assert len(accuracies) == 3 and len(set(accuracies)) == 1
    # Best at epoch 1; epochs 2 and 3 bring no improvement: two reductions.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * 0.5)
    assert trainer.plugins["lr_reduction"].plateau_schedulers[0].best == accuracies[0]


def test_a_missing_metric_names_those_there() -> None:
    trainer, _ = make_trainer(metric="f1", mode="max")
    with pytest.raises(ValueError, match=r"lr_reduction option metric='f1': .* it holds 'accuracy'"):
        trainer.run(1)


def test_metric_and_score_function_exclude_each_other() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="give one of them"):
        LRReduction(optimizer, metric="accuracy", score_function=lambda trainer: 0.0)
    with pytest.raises(TypeError, match="metric must be the name"):
        LRReduction(optimizer, metric=["accuracy"])
