"""Tests of the metrics plugin: a fixed classifier validated on CPU, torchmetrics computing."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite_metrics import Metrics
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.wrappers import ClasswiseWrapper

from ignite import PluginError, PluginInactive, Trainer
from ignite.pytest_plugin import IgniteRanks

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names

HERE = Path(__file__).resolve().parent


def _load_shared() -> Any:
    # --import-mode=importlib puts no test folder on sys.path: load the module the worker shares.
    spec = importlib.util.spec_from_file_location("ignite_metrics_test_data", HERE / "metrics_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_shared = _load_shared()
classifier, dataset, metric_options = _shared.classifier, _shared.dataset, _shared.metric_options


def expected(model: torch.nn.Module, data: Any) -> dict[str, float]:
    """What torchmetrics computes on the whole data set in one go."""
    inputs, targets, _ = data.tensors
    with torch.no_grad():
        logits = model(inputs)
    return {
        "accuracy": MulticlassAccuracy(num_classes=3, average="micro")(logits, targets).item(),
        "macro_f1": MulticlassF1Score(num_classes=3, average="macro")(logits, targets).item(),
    }


def make_trainer(output: str = "tuple", **options: Any) -> tuple[Trainer, Any, torch.nn.Module]:
    model = classifier()
    validation = dataset(13, seed=2)
    loader = DataLoader(validation, batch_size=4)

    def validate(batch: Any) -> Any:
        inputs, targets, _ = batch
        with torch.no_grad():
            logits = model(inputs)
        if output == "dict":
            return {
                "loss": torch.nn.functional.cross_entropy(logits, targets).item(),
                "preds": logits,
                "target": targets,
            }
        if output == "custom":
            return {"logits": logits, "labels": targets}
        if output == "float":
            return 1.0
        return logits, targets

    training = [(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2))] * 2
    plugins = {"metrics": {"metrics": metric_options(), **options}}
    trainer = Trainer(training, lambda batch: 0.5, loader, validate, plugins=plugins)
    return trainer, validation, model


def test_inactive_without_metrics_says_how() -> None:
    with pytest.raises(PluginInactive, match=r"plugins=\{'metrics': \{'metrics': \{'accuracy'"):
        Metrics()
    trainer = Trainer([1], lambda batch: 0.0, plugins={"metrics": {}})
    assert "metrics" not in trainer.plugins


@pytest.mark.parametrize("output", ["tuple", "dict"])
def test_validation_metrics_equal_torchmetrics_on_the_whole_set(output: str) -> None:
    trainer, data, model = make_trainer(output)
    trainer.run(2)
    want = expected(model, data)
    assert trainer.metrics == pytest.approx(want)
    plugin = trainer.plugins["metrics"]
    assert plugin.history == [{"epoch": 1, **want}, {"epoch": 2, **want}]
    assert all(type(value) is float for value in trainer.metrics.values())
    assert plugin.ignite_phase == "observe"  # the first phase: before controllers and loggers


def test_metric_instances_and_output_transform() -> None:
    trainer, data, model = make_trainer(
        "custom",
        metrics={"accuracy": MulticlassAccuracy(num_classes=3, average="micro")},
        output_transform=lambda output: (output["logits"], output["labels"]),
    )
    trainer.run(1)
    assert trainer.metrics == pytest.approx({"accuracy": expected(model, data)["accuracy"]})


def test_output_without_preds_and_target_names_its_type_and_the_fix() -> None:
    trainer, _, _ = make_trainer("float")
    with pytest.raises(TypeError, match=r"returned a float\. .*output_transform="):
        trainer.run(1)
    trainer, _, _ = make_trainer("custom")
    with pytest.raises(TypeError, match=r"a dict with keys \['labels', 'logits'\]"):
        trainer.run(1)


def test_unknown_metric_name_is_refused_with_suggestions() -> None:
    with pytest.raises(
        PluginError, match=r"metrics\['acc'\] names 'MultiClassAccuracy'.*Did you mean 'MulticlassAccuracy'"
    ):
        Trainer([1], lambda b: 0.0, plugins={"metrics": {"metrics": {"acc": {"name": "MultiClassAccuracy"}}}})
    with pytest.raises(PluginError, match=r"metrics\['acc'\] needs 'name'"):
        Trainer([1], lambda b: 0.0, plugins={"metrics": {"metrics": {"acc": {"num_classes": 3}}}})
    with pytest.raises(PluginError, match=r"MulticlassAccuracy\(\*\*\{\}\) failed"):
        Trainer([1], lambda b: 0.0, plugins={"metrics": {"metrics": {"acc": {"name": "MulticlassAccuracy"}}}})
    with pytest.raises(TypeError, match="must be a torchmetrics Metric or a dict"):
        Metrics(metrics={"acc": "accuracy"})
    with pytest.raises(ValueError, match="not starting with 'training/'"):
        Metrics(metrics={"training/acc": MulticlassAccuracy(num_classes=3)})


def test_a_metric_with_several_numbers_is_refused_unless_classwise() -> None:
    trainer, _, _ = make_trainer(metrics={"per_class": MulticlassAccuracy(num_classes=3, average=None)})
    with pytest.raises(ValueError, match=r"metric 'per_class' computed \(3,\), not one number.*ClasswiseWrapper"):
        trainer.run(1)
    trainer, _, _ = make_trainer(
        metrics={"acc": ClasswiseWrapper(MulticlassAccuracy(num_classes=3, average=None), labels=["a", "b", "c"])}
    )
    trainer.run(1)
    assert sorted(trainer.metrics) == [
        "acc/multiclassaccuracy_a",
        "acc/multiclassaccuracy_b",
        "acc/multiclassaccuracy_c",
    ]


def test_training_epochs_when_asked() -> None:
    model = classifier()
    data = dataset(10, seed=4)

    def update(batch: Any) -> Any:
        with torch.no_grad():
            return model(batch[0]), batch[1]

    trainer = Trainer(
        DataLoader(data, batch_size=3), update, plugins={"metrics": {"metrics": metric_options(), "training": True}}
    )
    trainer.run(1)
    assert trainer.metrics == pytest.approx({f"training/{key}": value for key, value in expected(model, data).items()})
    # Without training=True the training hooks are not registered: training costs nothing.
    quiet, _, _ = make_trainer()
    record = quiet._plugin_records["metrics"]
    assert not any(hook.startswith("ignite_training_") and hook != "ignite_training_started" for hook in record.hooks())


def test_no_validation_data_warns_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    trainer = Trainer([1, 2], lambda batch: 0.0, plugins={"metrics": {"metrics": metric_options()}})
    with caplog.at_level(logging.WARNING, logger="ignite.metrics"):
        trainer.run(2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ignite.metrics"]
    assert len(warnings) == 1 and "'training': True" in warnings[0]
    assert trainer.metrics == {}


def test_history_and_metrics_survive_a_checkpoint() -> None:
    trainer, _, _ = make_trainer()
    trainer.run(2)
    state = trainer.state_dict()
    resumed, _, _ = make_trainer()
    resumed.load_state_dict(state)
    assert resumed.metrics == trainer.metrics
    assert resumed.plugins["metrics"].history == trainer.plugins["metrics"].history
    resumed.run(3)
    assert [entry["epoch"] for entry in resumed.plugins["metrics"].history] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"Metrics\.state_dict"):
        resumed.plugins["metrics"].load_state_dict({"entries": []})


def test_a_validation_run_done_again_replaces_its_entry() -> None:
    trainer, data, model = make_trainer()
    seen = []

    def cut(trainer: Trainer) -> None:
        seen.append(trainer.current_epoch)
        if len(seen) == 2:
            trainer.terminate()  # cut the first validation run after 2 of its 4 batches

    from ignite import TrainingEvents

    handle = trainer.add_event_handler(TrainingEvents.VALIDATION_ITERATION_COMPLETED, cut)
    trainer.run(1)
    plugin = trainer.plugins["metrics"]
    assert [entry["epoch"] for entry in plugin.history] == [1]
    partial = dict(plugin.history[0])
    handle.remove()
    trainer.run(1)  # runs the cut validation run again, whole
    assert [entry["epoch"] for entry in plugin.history] == [1]
    assert plugin.history[0] == pytest.approx({"epoch": 1, **expected(model, data)})
    assert partial != plugin.history[0]


def test_two_ranks_equal_one_process_with_padding(ignite_ranks: IgniteRanks, tmp_path: Path) -> None:
    ignite_ranks(HERE / "metrics_distributed_worker.py")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    model = classifier()
    validation_want = expected(model, dataset(13, seed=2))
    training_want = {f"training/{k}": v for k, v in expected(model, dataset(11, seed=1)).items()}
    for result in ranks:
        assert result["metrics"] == pytest.approx({**validation_want, **training_want})
        assert [entry["epoch"] for entry in result["history"]] == [1, 2]
    # The samplers did pad: one sample was seen twice per epoch, and dropped by the plugin.
    validation_seen = ranks[0]["seen"]["validation"] + ranks[1]["seen"]["validation"]
    assert len(validation_seen) == 2 * 14 and sorted(set(validation_seen)) == list(range(13))
    training_seen = ranks[0]["seen"]["training"] + ranks[1]["seen"]["training"]
    assert len(training_seen) == 2 * 12 and sorted(set(training_seen)) == list(range(11))


def test_every_iterations_updates_with_concatenated_batches_and_the_same_result() -> None:
    trainer, data, model = make_trainer(every_iterations=3)  # 4 batches: one update of 3, one of the rest
    calls = []
    metric = trainer.plugins["metrics"]._validation.metrics["accuracy"]
    original = metric.update
    metric.update = lambda preds, target: (calls.append(len(target)), original(preds, target))[1]
    trainer.run(1)
    assert calls == [12, 1]
    assert trainer.metrics == pytest.approx(expected(model, data))
    with pytest.raises(ValueError, match="every_iterations must be a positive int"):
        Metrics(metrics=metric_options(), every_iterations=0)
    ragged, _, _ = make_trainer("custom", every_iterations=2, output_transform=lambda output: (output["logits"], [1]))
    with pytest.raises(TypeError, match="every_iterations=2 concatenates"):
        ragged.run(1)
