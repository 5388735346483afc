"""Tests of the early_stopping plugin: real training of a tiny linear model on CPU."""

from __future__ import annotations

import json
import logging
import math
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from ignite_early_stopping import EarlyStopping

from ignite import PluginError, Trainer, TrainingEvents
from ignite.testing import run_ranks

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names


class Regression:
    """A tiny linear regression: 4 training batches of 8, 2 validation batches of 8."""

    def __init__(self, seed: int = 0, noise: float = 0.3, lr: float = 0.05) -> None:
        generator = torch.Generator().manual_seed(seed)
        weights = torch.tensor([[1.0], [-2.0], [0.5]])
        x = torch.randn(48, 3, generator=generator)
        y = x @ weights + noise * torch.randn(48, 1, generator=generator)
        self.training_data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
        self.validation_data = [(x[i : i + 8], y[i : i + 8]) for i in range(32, 48, 8)]
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.updates = 0

    def update(self, batch):
        inputs, targets = batch
        self.model.train()
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.item()

    def validate(self, batch):
        inputs, targets = batch
        self.model.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(self.model(inputs), targets).item()

    def trainer(self, validation: bool = True, **options) -> Trainer:
        return Trainer(
            self.training_data,
            self.update,
            self.validation_data if validation else None,
            self.validate if validation else None,
            plugins={"early_stopping": options},
        )


def from_list(scores):
    """A score_function giving scores[epoch - 1]: the epoch of the stop is then known."""
    return lambda trainer: scores[trainer.current_epoch - 1]


def stop_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ignite.early_stopping" and r.levelno == logging.INFO]


def test_stops_after_patience_epochs_without_improvement(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = task.trainer(patience=3, score_function=from_list([5, 4, 3, 3.5, 3.2, 3.1, 2.0, 1.0, 0.5, 0.1]))
    trainer.run(max_epochs=10)
    plugin = trainer.plugins["early_stopping"]
    assert trainer.current_epoch == 6
    assert trainer.training_history.num_runs == 6 and trainer.validation_history.num_runs == 6
    assert task.updates == 6 * 4  # the run really stopped: no training after epoch 6
    assert (plugin.best_score, plugin.best_epoch, plugin.counter) == (3.0, 3, 3)
    assert stop_lines(caplog) == ["Early stopping at epoch 6: no improvement for 3 epochs, best 3 at epoch 3"]


def test_improvement_resets_the_counter():
    trainer = Regression().trainer(patience=3, score_function=from_list([5, 6, 7, 4, 5, 6, 7, 0, 0, 0]))
    trainer.run(max_epochs=10)
    assert trainer.current_epoch == 7
    assert trainer.plugins["early_stopping"].best_epoch == 4


def test_runs_to_the_end_while_improving(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Regression().trainer(patience=1, score_function=from_list([5, 4, 3, 2, 1]))
    trainer.run(max_epochs=5)
    assert trainer.current_epoch == 5
    assert stop_lines(caplog) == []


def test_min_delta_small_improvements_do_not_count():
    scores = [1.0, 0.95, 0.92, 0.90, 0.5]
    with_delta = Regression().trainer(patience=3, min_delta=0.1, score_function=from_list(scores))
    with_delta.run(max_epochs=5)
    assert with_delta.current_epoch == 4
    assert with_delta.plugins["early_stopping"].best_score == 1.0
    without = Regression().trainer(patience=3, score_function=from_list(scores))
    without.run(max_epochs=5)
    assert without.current_epoch == 5


def test_mode_max(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    accuracies = [0.5, 0.6, 0.7, 0.69, 0.7, 0.65, 0.9, 0.95]
    trainer = Regression().trainer(patience=3, mode="max", score_function=from_list(accuracies))
    trainer.run(max_epochs=8)
    assert trainer.current_epoch == 6  # 0.7 again at epoch 5 is no improvement
    assert stop_lines(caplog) == ["Early stopping at epoch 6: no improvement for 3 epochs, best 0.7 at epoch 3"]
    as_loss = Regression().trainer(patience=3, mode="min", score_function=from_list(accuracies))
    as_loss.run(max_epochs=8)
    assert as_loss.current_epoch == 4


def test_min_epochs_delays_the_stop(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Regression().trainer(patience=2, min_epochs=6, score_function=from_list([1.0] * 10))
    trainer.run(max_epochs=10)
    assert trainer.current_epoch == 6
    assert stop_lines(caplog) == ["Early stopping at epoch 6: no improvement for 5 epochs, best 1 at epoch 1"]
    no_minimum = Regression().trainer(patience=2, score_function=from_list([1.0] * 10))
    no_minimum.run(max_epochs=10)
    assert no_minimum.current_epoch == 3


def test_nan_score_counts_as_no_improvement():
    trainer = Regression().trainer(patience=3, score_function=from_list([1.0, math.nan, math.nan, math.nan, 0.1]))
    trainer.run(max_epochs=5)
    assert trainer.current_epoch == 4
    assert trainer.plugins["early_stopping"].best_score == 1.0
    # A NaN first score is no baseline: later real scores still improve on "nothing yet".
    nan_first = Regression().trainer(patience=2, score_function=from_list([math.nan, 2.0, 1.0, 1.0, 1.0, 1.0]))
    nan_first.run(max_epochs=6)
    assert nan_first.current_epoch == 5
    assert (nan_first.plugins["early_stopping"].best_score, nan_first.plugins["early_stopping"].best_epoch) == (1.0, 3)


def test_only_nan_scores_stop_after_patience(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Regression().trainer(patience=2, score_function=from_list([math.nan] * 4))
    trainer.run(max_epochs=4)
    assert trainer.current_epoch == 2
    assert stop_lines(caplog) == ["Early stopping at epoch 2: no improvement for 2 epochs, every score was NaN"]


def test_nan_validation_loss_counts_as_no_improvement_with_the_default_score():
    task = Regression()
    trainer = Trainer(
        task.training_data,
        task.update,
        task.validation_data,
        lambda batch: task.validate(batch) if trainer.current_epoch <= 2 else float("nan"),  # diverged
        plugins={"early_stopping": {"patience": 2}},
    )
    trainer.run(max_epochs=10)
    plugin = trainer.plugins["early_stopping"]
    assert trainer.current_epoch == 4
    assert plugin.best_epoch == 2
    assert plugin.best_score == pytest.approx(trainer.validation_history.run_mean(1))


def test_no_score_warns_once_and_decides_nothing(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = Trainer(
        task.training_data,
        task.update,
        task.validation_data,
        lambda batch: {"loss": task.validate(batch), "accuracy": 0.5},  # no plain number
        plugins={"early_stopping": {"patience": 1}},
    )
    trainer.run(max_epochs=4)
    assert trainer.current_epoch == 4
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "ignite.early_stopping" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "no score at epoch 1" in warnings[0]
    assert "validation run" in warnings[0] and "only the numbered or named items 'loss', 'accuracy'" in warnings[0]
    assert "'score_function': lambda trainer: ignite.monitor.epoch_means(trainer, validation=True)['loss']" in warnings[0]
    assert trainer.plugins["early_stopping"].best_score is None


def test_score_function_returning_none_makes_no_decision(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Regression().trainer(patience=1, score_function=from_list([1.0, None, None, 2.0, 3.0]))
    trainer.run(max_epochs=5)
    assert trainer.current_epoch == 4  # epochs 2 and 3 were not counted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "score_function returned None" in warnings[0]
    assert warnings[0].endswith("make score_function return a number")


def test_score_function_with_dict_outputs():
    task = Regression()
    trainer = Trainer(
        task.training_data,
        task.update,
        task.validation_data,
        lambda batch: {"loss": task.validate(batch)},
        plugins={
            "early_stopping": {
                "patience": 2,
                "min_delta": 1e-3,
                "score_function": lambda trainer: trainer.validation_history.run_mean(key="loss"),
            }
        },
    )
    trainer.run(max_epochs=200)
    plugin = trainer.plugins["early_stopping"]
    assert trainer.current_epoch < 200
    assert plugin.best_score == pytest.approx(trainer.validation_history.run_mean(plugin.best_epoch - 1, key="loss"))


def test_real_model_stops_when_validation_loss_plateaus(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(noise=0.3)
    trainer = task.trainer(patience=3, min_delta=1e-3)
    trainer.run(max_epochs=200)
    plugin = trainer.plugins["early_stopping"]
    losses = [trainer.validation_history.run_mean(i) for i in range(trainer.validation_history.num_runs)]
    assert 5 < trainer.current_epoch < 200
    assert trainer.current_epoch == plugin.best_epoch + 3
    assert losses[0] > 2 * plugin.best_score  # it did learn before the plateau
    assert plugin.best_score == pytest.approx(losses[plugin.best_epoch - 1])
    # The best so far was never beaten by min_delta in the last 3 epochs, and was before.
    assert all(loss >= plugin.best_score - 1e-3 for loss in losses[plugin.best_epoch :])
    assert len(stop_lines(caplog)) == 1
    assert stop_lines(caplog)[0].startswith(f"Early stopping at epoch {trainer.current_epoch}: no improvement for 3")


def test_without_validation_data_monitors_the_training_epoch_mean():
    task = Regression(noise=0.0, lr=0.1)
    trainer = task.trainer(validation=False, patience=2, min_delta=1e-4)
    trainer.run(max_epochs=500)
    plugin = trainer.plugins["early_stopping"]
    assert trainer.current_epoch < 500
    assert trainer.current_epoch == plugin.best_epoch + 2
    assert plugin.best_score == pytest.approx(trainer.training_history.run_mean(plugin.best_epoch - 1))
    assert plugin.best_score < 1e-3


def test_an_epoch_cut_by_terminate_is_not_counted():
    trainer = Regression().trainer(patience=5, score_function=from_list([1.0] * 5))

    def stop_in_epoch_3(trainer):
        if trainer.current_epoch == 3:
            trainer.terminate()

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, stop_in_epoch_3)
    trainer.run(max_epochs=5)
    assert trainer.current_epoch == 3 and trainer.validation_history.num_runs == 2
    assert trainer.plugins["early_stopping"].counter == 1  # epoch 2 only


def test_a_validation_run_cut_short_is_checked_once_after_resume(tmp_path):
    scores = from_list([1.0] * 5)
    first = Regression().trainer(patience=5, score_function=scores)

    def save_and_stop_during_validation_3(trainer):
        if trainer.current_epoch == 3:
            torch.save(trainer.state_dict(), tmp_path / "state.pt")  # a mid-validation checkpoint
            trainer.terminate()

    first.add_event_handler(TrainingEvents.VALIDATION_ITERATION_COMPLETED, save_and_stop_during_validation_3)
    first.run(max_epochs=5)
    assert first.current_epoch == 3 and len(first.validation_history.run()) == 1  # 1 of 2 batches
    assert first.plugins["early_stopping"].counter == 1  # the partial run of epoch 3 is not judged

    second = Regression().trainer(patience=5, score_function=scores)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    second.run(max_epochs=3)  # finishes epoch 3's validation run
    assert second.current_epoch == 3 and second.validation_history.num_runs == 3
    assert second.plugins["early_stopping"].counter == 2


def test_data_without_a_length_is_judged_by_its_runs():
    class Batches:  # re-iterable, no __len__
        def __init__(self, batches):
            self.batches = batches

        def __iter__(self):
            return iter(self.batches)

    task = Regression()
    trainer = Trainer(
        Batches(task.training_data),
        task.update,
        Batches(task.validation_data),
        task.validate,
        plugins={"early_stopping": {"patience": 2, "score_function": from_list([3, 2, 2, 2, 1])}},
    )
    trainer.run(max_epochs=5)
    assert trainer.current_epoch == 4


def test_inactive_without_patience_and_says_so_once(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = Trainer(task.training_data, task.update, plugins={"early_stopping": {"mode": "max"}})
    assert "early_stopping" not in trainer.plugins
    trainer.run(max_epochs=3)
    assert trainer.current_epoch == 3
    lines = [r for r in caplog.records if r.name == "ignite" and "early_stopping" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "inactive" in lines[0].getMessage()
    assert "plugins={'early_stopping': {'patience': 3}}" in lines[0].getMessage()


def test_autoload_picks_it_up_inactive_with_default_options(ignite_autoload, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    installed = {ep.name: ep for ep in entry_points(group="ignite.plugins")}
    assert installed["early_stopping"].load() is EarlyStopping
    ignite_autoload("early_stopping")  # plugins being developed alongside stay out of this test
    task = Regression()
    trainer = Trainer(task.training_data, task.update)
    assert "early_stopping" not in trainer.plugins
    trainer.run(max_epochs=2)
    assert trainer.current_epoch == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "ignite" and "early_stopping" in r.getMessage()]
    assert len(lines) == 1
    assert "ignite-early-stopping 0.1.0" in lines[0] and "is inactive: no patience given" in lines[0]


def test_unknown_option_is_a_plugin_error_naming_the_plugin():
    task = Regression()
    with pytest.raises(PluginError) as raised:
        Trainer(task.training_data, task.update, plugins={"early_stopping": {"patience": 3, "patient": 2}})
    message = str(raised.value)
    assert "'early_stopping'" in message and "'patient'" in message and "Did you mean 'patience'" in message


@pytest.mark.parametrize(
    ("options", "error", "option"),
    [
        ({"patience": 0}, ValueError, "patience"),
        ({"patience": -1}, ValueError, "patience"),
        ({"patience": 2.5}, TypeError, "patience"),
        ({"patience": True}, TypeError, "patience"),
        ({"patience": 3, "min_delta": -0.1}, ValueError, "min_delta"),
        ({"patience": 3, "min_delta": math.nan}, ValueError, "min_delta"),
        ({"patience": 3, "min_delta": "0.1"}, TypeError, "min_delta"),
        ({"patience": 3, "mode": "minimum"}, ValueError, "mode"),
        ({"patience": 3, "score_function": 0.5}, TypeError, "score_function"),
        ({"patience": 3, "min_epochs": -1}, ValueError, "min_epochs"),
        ({"mode": "up"}, ValueError, "mode"),  # checked even while inactive
    ],
)
def test_bad_option_values_name_the_option(options, error, option):
    with pytest.raises(error, match=rf"option {option} must"):
        EarlyStopping(**options)
    task = Regression()
    with pytest.raises(PluginError, match=rf"'early_stopping'.*option {option} must") as raised:
        Trainer(task.training_data, task.update, plugins={"early_stopping": options})
    assert isinstance(raised.value.__cause__, error)


def test_score_function_returning_a_non_number_raises_naming_it():
    trainer = Regression().trainer(patience=3, score_function=lambda trainer: "low")
    with pytest.raises(TypeError, match="score_function must return a number"):
        trainer.run(max_epochs=2)


SCORES = [3, 2, 1, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1]


def test_state_dict_round_trip_continues_counting_across_two_trainers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    first = Regression().trainer(patience=3, score_function=from_list(SCORES))
    first.run(max_epochs=4)
    assert first.current_epoch == 4  # best 1 at epoch 3, then one epoch without improvement
    assert first.state_dict()["plugins"]["early_stopping"] == {"best_score": 1.0, "best_epoch": 3, "counter": 1}
    torch.save(first.state_dict(), tmp_path / "checkpoint.pt")

    second = Regression(seed=1).trainer(patience=3, score_function=from_list(SCORES))
    second.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    plugin = second.plugins["early_stopping"]
    assert (plugin.best_score, plugin.best_epoch, plugin.counter) == (1.0, 3, 1)
    second.run(max_epochs=10)
    assert second.current_epoch == 6
    assert stop_lines(caplog)[-1] == "Early stopping at epoch 6: no improvement for 3 epochs, best 1 at epoch 3"

    fresh = Regression(seed=1).trainer(patience=3, score_function=from_list(SCORES))
    fresh.current_epoch = 4
    fresh.run(max_epochs=10)
    assert fresh.current_epoch == 8  # without the state it would have started counting again


def test_plugin_state_dict_alone_round_trips(tmp_path):
    first = Regression().trainer(patience=3, score_function=from_list(SCORES))
    first.run(max_epochs=5)
    torch.save(first.plugins["early_stopping"].state_dict(), tmp_path / "early_stopping.pt")
    plugin = EarlyStopping(patience=3)
    plugin.load_state_dict(torch.load(tmp_path / "early_stopping.pt", weights_only=True))
    assert plugin.state_dict() == {"best_score": 1.0, "best_epoch": 3, "counter": 2}


def test_load_state_dict_rejects_a_foreign_dict():
    plugin = EarlyStopping(patience=2)
    with pytest.raises(ValueError, match="missing best_epoch, counter"):
        plugin.load_state_dict({"best_score": 1.0})


def test_best_score_and_best_epoch_are_read_only():
    plugin = EarlyStopping(patience=2)
    assert plugin.best_score is None and plugin.best_epoch is None and plugin.counter == 0
    with pytest.raises(AttributeError):
        plugin.best_score = 0.0
    with pytest.raises(AttributeError):
        plugin.best_epoch = 1


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two real processes with a gloo process group (file rendezvous, loopback only), each
    training twice; returns what each rank saw, per case."""
    folder = tmp_path_factory.mktemp("distributed")
    worker = Path(__file__).with_name("early_stopping_distributed_worker.py")
    run_ranks(worker, folder)
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_distributed_ranks_decide_on_the_reduced_score_and_stop_together(two_ranks):
    ranks = [rank["default"] for rank in two_ranks]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] < 200
    assert ranks[0]["best_epoch"] == ranks[1]["best_epoch"]
    assert ranks[0]["best_score"] == ranks[1]["best_score"]
    best = ranks[0]["best_epoch"] - 1
    # Equal batch counts on both ranks: the reduced score is the mean of the two ranks' means.
    assert ranks[0]["best_score"] == pytest.approx((ranks[0]["local_means"][best] + ranks[1]["local_means"][best]) / 2)
    assert ranks[0]["local_means"][best] != pytest.approx(ranks[1]["local_means"][best])
    assert [line.startswith("INFO Early stopping at epoch") for line in ranks[0]["logs"]] == [True]
    assert ranks[1]["logs"] == []  # only rank 0 logs


def test_distributed_ranks_stop_together_even_if_score_function_disagrees(two_ranks):
    ranks = [rank["disagree"] for rank in two_ranks]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 3  # rank 0 decided at epoch 3, rank 1 followed
    assert ranks[0]["logs"] == ["INFO Early stopping at epoch 3: no improvement for 2 epochs, best 1 at epoch 1"]
    assert ranks[1]["logs"] == []


def test_the_epoch_s_score_is_read_with_one_run_means_call(monkeypatch):
    # Through History.run_means, one call for the run (one transfer for device values), never
    # value by value: outputs of shape (1,) stay tensors in the history.
    from ignite.history import History

    calls: list[str] = []
    recording = [False]
    for method in ("run_means", "run", "__getitem__", "__iter__"):

        def wrapper(self, *args, _real=getattr(History, method), _method=method, **kwargs):  # noqa: B008 - bound per method
            if recording[0]:
                calls.append(_method)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(History, method, wrapper)
    trainer = Trainer(
        [3.0, 2.0, 1.0], lambda batch: torch.tensor([batch]), plugins={"early_stopping": {'patience': 10}}
    )
    # Handlers run before plugin hooks at EPOCH_COMPLETED, after them at EPOCH_STARTED.
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda t: recording.__setitem__(0, True))
    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: recording.__setitem__(0, False))
    trainer.run(3)
    assert calls == ["run_means"] * 3
    assert type(trainer.training_history[0]) is float  # the run's tensors became floats in one copy at its end
