"""Early stopping on a metric of trainer.metrics (option metric=), computed by the real ignite-metrics plugin."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from ignite_early_stopping import EarlyStopping

from ignite import PluginError, Trainer

pytestmark = [
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
    pytest.mark.skipif(
        "metrics" not in {e.name for e in entry_points(group="ignite.plugins")}, reason="ignite-metrics is not installed"
    ),
]


def classification(learn: bool) -> tuple[list, list, torch.nn.Module, torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5 if learn else 0.0)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)], [(x[64:], y[64:])], model, optimizer


def make_trainer(learn: bool, **options) -> tuple[Trainer, torch.optim.Optimizer]:
    training, validation, model, optimizer = classification(learn)

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        with torch.no_grad():
            return model(batch[0]), batch[1]

    plugins = {
        "metrics": {"metrics": {"accuracy": {"name": "MulticlassAccuracy", "num_classes": 3, "average": "micro"}}},
        "early_stopping": options,
    }
    return Trainer(training, update, validation, validate, plugins=plugins), optimizer


def test_stops_when_the_accuracy_stalls() -> None:
    trainer, _ = make_trainer(False, patience=2, metric="accuracy", mode="max")
    trainer.run(10)
    plugin = trainer.plugins["early_stopping"]
    history = trainer.plugins["metrics"].history
    assert trainer.current_epoch == 3  # constant accuracy: best at 1, two epochs without improvement
    assert plugin.best_epoch == 1 and plugin.best_score == history[0]["accuracy"]


def test_follows_a_rising_accuracy() -> None:
    trainer, _ = make_trainer(True, patience=50, metric="accuracy", mode="max")
    trainer.run(6)
    plugin = trainer.plugins["early_stopping"]
    accuracies = [entry["accuracy"] for entry in trainer.plugins["metrics"].history]
    assert len(accuracies) == 6 and accuracies[-1] > accuracies[0]
    assert plugin.best_score == max(accuracies) and plugin.best_epoch == accuracies.index(max(accuracies)) + 1


def test_a_missing_metric_names_those_there() -> None:
    trainer, _ = make_trainer(False, patience=2, metric="acc", mode="max")
    with pytest.raises(ValueError, match=r"metric='acc': trainer.metrics has no 'acc' at the end of epoch 1; it holds 'accuracy'"):
        trainer.run(3)


def test_metric_option_is_checked() -> None:
    with pytest.raises(ValueError, match="give one of them"):
        EarlyStopping(patience=2, metric="accuracy", score_function=lambda trainer: 0.0)
    with pytest.raises(TypeError, match="metric must be the name"):
        EarlyStopping(patience=2, metric=3)
    with pytest.raises(PluginError, match="metric must be the name"):
        Trainer([1], lambda batch: 0.0, plugins={"early_stopping": {"patience": 2, "metric": ""}})
