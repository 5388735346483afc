"""Tests of the lr_reduction plugin: real training of a tiny linear model on CPU."""

from __future__ import annotations

import json
import logging
import math
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from ignite_lr_reduction import LRReduction
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

from ignite import PluginError, Trainer, TrainingEvents

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names


class Regression:
    """A tiny linear regression: 4 training batches of 8, 2 validation batches of 8."""

    def __init__(self, seed: int = 0, noise: float = 0.3, lr: float = 0.1, groups: int = 1) -> None:
        generator = torch.Generator().manual_seed(seed)
        weights = torch.tensor([[1.0], [-2.0], [0.5]])
        x = torch.randn(48, 3, generator=generator)
        y = x @ weights + noise * torch.randn(48, 1, generator=generator)
        self.training_data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
        self.validation_data = [(x[i : i + 8], y[i : i + 8]) for i in range(32, 48, 8)]
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(3, 1)
        if groups == 1:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        else:  # weight and bias in their own groups
            self.optimizer = torch.optim.SGD(
                [{"params": [self.model.weight]}, {"params": [self.model.bias], "lr": lr / 2}], lr=lr
            )
        self.epoch_lrs: dict[int, float] = {}  # the learning rate each epoch trained with
        self.iteration_lrs: dict[int, float] = {}

    def update(self, batch):
        inputs, targets = batch
        self.model.train()
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def validate(self, batch):
        inputs, targets = batch
        self.model.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(self.model(inputs), targets).item()

    def trainer(self, validation: bool = True, **options) -> Trainer:
        options.setdefault("optimizer", self.optimizer)
        trainer = Trainer(
            self.training_data,
            self.update,
            self.validation_data if validation else None,
            self.validate if validation else None,
            plugins={"lr_reduction": options},
        )
        self.watch(trainer)
        return trainer

    def watch(self, trainer: Trainer) -> None:
        def epoch_started(trainer):
            self.epoch_lrs[trainer.current_epoch] = self.optimizer.param_groups[0]["lr"]

        def iteration_started(trainer):
            self.iteration_lrs[trainer.current_iteration] = self.optimizer.param_groups[0]["lr"]

        trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, epoch_started)
        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, iteration_started)


def from_list(scores):
    """A score_function giving scores[epoch - 1]: the epoch of each reduction is then known."""
    return lambda trainer: scores[trainer.current_epoch - 1]


def reductions(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ignite.lr_reduction" and r.levelno == logging.INFO]


def test_reduces_after_more_than_patience_epochs_without_improvement(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(lr=0.1)
    trainer = task.trainer(patience=2, score_function=from_list([5, 4, 3, 3, 3.1, 3, 3, 3, 3, 3]))
    trainer.run(max_epochs=10)
    # Best 3 at epoch 3; epochs 4, 5, 6 without improvement: 3 > patience 2, reduced at the end of 6.
    assert [task.epoch_lrs[e] for e in range(1, 11)] == pytest.approx([0.1] * 6 + [0.01] * 3 + [0.001])
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # epoch 10 is only the 1st bad one
    assert reductions(caplog) == [
        "epoch 6: learning rate of optimizer 0 group 0 reduced 0.1 -> 0.01",
        "epoch 9: learning rate of optimizer 0 group 0 reduced 0.01 -> 0.001",
    ]


def test_improvement_resets_the_count(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = task.trainer(patience=1, score_function=from_list([5, 6, 4, 5, 3, 4, 5]))
    trainer.run(max_epochs=7)
    assert reductions(caplog) == ["epoch 7: learning rate of optimizer 0 group 0 reduced 0.1 -> 0.01"]
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_mode_max():
    accuracies = [0.5, 0.6, 0.7, 0.7, 0.69, 0.8, 0.8]
    task = Regression()
    task.trainer(patience=1, mode="max", score_function=from_list(accuracies)).run(max_epochs=7)
    assert [task.epoch_lrs[e] for e in range(1, 8)] == pytest.approx([0.1] * 5 + [0.01] * 2)
    as_loss = Regression()
    as_loss.trainer(patience=1, mode="min", score_function=from_list(accuracies)).run(max_epochs=7)
    assert [as_loss.epoch_lrs[e] for e in range(1, 8)] == pytest.approx([0.1] * 3 + [0.01] * 2 + [0.001] * 2)


def test_threshold_abs_and_rel():
    slow = [1.0, 0.99, 0.98, 0.97, 0.96]
    absolute = Regression()
    absolute.trainer(patience=1, threshold=0.05, threshold_mode="abs", score_function=from_list(slow)).run(5)
    assert [absolute.epoch_lrs[e] for e in range(1, 6)] == pytest.approx([0.1] * 3 + [0.01] * 2)
    relative = Regression()  # default: 1e-4 relative, so 1% steps are improvements
    relative.trainer(patience=1, score_function=from_list(slow)).run(5)
    assert relative.optimizer.param_groups[0]["lr"] == 0.1
    coarse = Regression()  # 2% relative threshold: 1% steps are not, until 0.97 is 3% below the best 1.0
    coarse.trainer(patience=1, threshold=0.02, score_function=from_list(slow)).run(5)
    assert [coarse.epoch_lrs[e] for e in range(1, 6)] == pytest.approx([0.1] * 3 + [0.01] * 2)
    assert coarse.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_cooldown_pauses_counting_after_a_reduction(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    task.trainer(patience=0, cooldown=2, score_function=from_list([1.0] * 8)).run(max_epochs=8)
    assert [line.split(":")[0] for line in reductions(caplog)] == ["epoch 2", "epoch 5", "epoch 8"]


def test_min_lr_is_a_floor():
    task = Regression()
    task.trainer(patience=0, factor=0.5, min_lr=0.03, score_function=from_list([1.0] * 6)).run(max_epochs=6)
    assert [task.epoch_lrs[e] for e in range(1, 7)] == pytest.approx([0.1, 0.1, 0.05, 0.03, 0.03, 0.03])


def test_every_group_of_every_optimizer_is_reduced(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(groups=2)
    other = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.02)
    task.trainer(
        optimizer={"main": task.optimizer, "aux": other},
        patience=0,
        factor=0.5,
        min_lr=0.0,
        score_function=from_list([2.0, 2.0]),
    ).run(max_epochs=2)
    assert [group["lr"] for group in task.optimizer.param_groups] == pytest.approx([0.05, 0.025])
    assert other.param_groups[0]["lr"] == pytest.approx(0.01)
    assert reductions(caplog) == [
        "epoch 2: learning rate of optimizer main group 0 reduced 0.1 -> 0.05",
        "epoch 2: learning rate of optimizer main group 1 reduced 0.05 -> 0.025",
        "epoch 2: learning rate of optimizer aux group 0 reduced 0.02 -> 0.01",
    ]


def test_min_lr_per_group_and_a_list_of_optimizers():
    task = Regression(groups=2)
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.4)
    task.trainer(patience=0, min_lr=[0.08, 0.0], score_function=from_list([1.0] * 3)).run(max_epochs=3)
    assert [group["lr"] for group in task.optimizer.param_groups] == pytest.approx([0.08, 0.0005])
    both = Regression()
    both.trainer(optimizer=[both.optimizer, other], patience=0, score_function=from_list([1.0] * 2)).run(2)
    assert (both.optimizer.param_groups[0]["lr"], other.param_groups[0]["lr"]) == pytest.approx((0.01, 0.04))


def test_nan_score_counts_as_no_improvement():
    task = Regression()
    task.trainer(patience=1, score_function=from_list([1.0, math.nan, math.nan, 0.5])).run(max_epochs=4)
    assert [task.epoch_lrs[e] for e in range(1, 5)] == pytest.approx([0.1, 0.1, 0.1, 0.01])


def test_nan_validation_loss_counts_as_no_improvement_with_the_default_score():
    task = Regression()
    trainer = Trainer(
        task.training_data,
        task.update,
        task.validation_data,
        lambda batch: task.validate(batch) if trainer.current_epoch <= 2 else float("nan"),  # diverged
        plugins={"lr_reduction": {"optimizer": task.optimizer, "patience": 1}},
    )
    trainer.run(max_epochs=4)
    plateau = trainer.plugins["lr_reduction"].plateau_schedulers[0]
    assert plateau.last_epoch == 4  # every epoch stepped, the NaN ones too
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # reduced at epoch 4


def test_an_epoch_cut_by_terminate_is_not_stepped():
    task = Regression()
    trainer = task.trainer(patience=5, score_function=from_list([1.0] * 5))

    def stop_in_epoch_3(trainer):
        if trainer.current_epoch == 3:
            trainer.terminate()

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, stop_in_epoch_3)
    trainer.run(max_epochs=5)
    plateau = trainer.plugins["lr_reduction"].plateau_schedulers[0]
    assert trainer.current_epoch == 3
    assert (plateau.last_epoch, plateau.num_bad_epochs) == (2, 1)  # epochs 1 and 2 only


def test_no_score_warns_once_and_leaves_the_rate_alone(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = Trainer(
        task.training_data,
        task.update,
        task.validation_data,
        lambda batch: (task.validate(batch), 0.5),  # a tuple: no plain number
        plugins={"lr_reduction": {"optimizer": task.optimizer, "patience": 0}},
    )
    trainer.run(max_epochs=4)
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "ignite.lr_reduction" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "no score at epoch 1" in warnings[0] and "only the numbered or named items '0', '1'" in warnings[0]
    assert "'score_function': lambda trainer: ignite.monitor.epoch_means(trainer, validation=True)['0']" in warnings[0]
    assert task.optimizer.param_groups[0]["lr"] == 0.1


def test_real_model_rate_drops_when_validation_loss_plateaus(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(noise=0.3, lr=0.1)
    trainer = task.trainer(patience=2, factor=0.5, threshold=1e-2)
    trainer.run(max_epochs=40)
    losses = [trainer.validation_history.run_mean(i) for i in range(40)]
    lines = reductions(caplog)
    assert lines, "the validation loss of a converged model plateaus: the rate must drop"
    first = int(lines[0].split()[1].rstrip(":"))
    assert first > 3
    assert lines[0] == f"epoch {first}: learning rate of optimizer 0 group 0 reduced 0.1 -> 0.05"
    # torch's rule, checked against the real losses: no 1% improvement on the best in the 3 epochs up to it.
    best_before = min(losses[: first - 3])
    assert all(loss >= best_before * (1 - 1e-2) for loss in losses[first - 3 : first])
    assert task.epoch_lrs[first] == 0.1 and task.epoch_lrs[first + 1] == pytest.approx(0.05)
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** len(lines))


def test_without_validation_data_monitors_the_training_epoch_mean():
    task = Regression(noise=0.3, lr=0.1)
    trainer = task.trainer(validation=False, patience=100, threshold=0.0)
    trainer.run(max_epochs=12)
    means = [trainer.training_history.run_mean(i) for i in range(12)]
    plateau = trainer.plugins["lr_reduction"].plateau_schedulers[0]
    assert plateau.best == min(means)
    assert plateau.num_bad_epochs == 11 - means.index(min(means))
    assert plateau.last_epoch == 12


def test_inactive_without_optimizer_and_says_so_once(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression()
    trainer = Trainer(task.training_data, task.update, plugins={"lr_reduction": {"factor": 0.5}})
    assert "lr_reduction" not in trainer.plugins
    trainer.run(max_epochs=3)
    lines = [r for r in caplog.records if r.name == "ignite" and "lr_reduction" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "inactive: no optimizer given" in lines[0].getMessage()
    assert "plugins={'lr_reduction': {'optimizer': optimizer}}" in lines[0].getMessage()
    assert task.optimizer.param_groups[0]["lr"] == 0.1


def test_autoload_picks_it_up_inactive_with_default_options(ignite_autoload, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    installed = {ep.name: ep for ep in entry_points(group="ignite.plugins")}
    assert installed["lr_reduction"].load() is LRReduction
    ignite_autoload("lr_reduction")  # plugins being developed alongside stay out of this test
    task = Regression()
    trainer = Trainer(task.training_data, task.update)
    assert "lr_reduction" not in trainer.plugins
    trainer.run(max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "ignite" and "lr_reduction" in r.getMessage()]
    assert len(lines) == 1
    assert "ignite-lr-reduction 0.1.0" in lines[0] and "is inactive: no optimizer given" in lines[0]


def test_unknown_option_is_a_plugin_error_naming_the_plugin():
    task = Regression()
    with pytest.raises(PluginError) as raised:
        Trainer(task.training_data, task.update, plugins={"lr_reduction": {"optimizer": task.optimizer, "gamma": 0.5}})
    message = str(raised.value)
    assert "'lr_reduction'" in message and "'gamma'" in message and "factor" in message


OPTIMIZER = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"factor": 1.0}, ValueError, "option factor must be in"),
        ({"factor": 0}, ValueError, "option factor must be in"),
        ({"factor": "0.5"}, TypeError, "option factor must be"),
        ({"patience": -1}, ValueError, "option patience must be at least 0"),
        ({"patience": 1.5}, TypeError, "option patience must be an integer"),
        ({"threshold": -1e-3}, ValueError, "option threshold must be"),
        ({"threshold_mode": "relative"}, ValueError, "option threshold_mode must be"),
        ({"cooldown": -2}, ValueError, "option cooldown must be"),
        ({"min_lr": -0.1}, ValueError, "option min_lr must be"),
        ({"min_lr": [0.0, 0.0]}, ValueError, "option min_lr has 2 values for an optimizer with 1 parameter group"),
        ({"mode": "lowest"}, ValueError, "option mode must be 'min' or 'max'"),
        ({"score_function": "val_loss"}, TypeError, "option score_function must be a callable"),
        ({"scheduler_step": "batch"}, ValueError, "option scheduler_step must be 'epoch' or 'iteration'"),
        ({"optimizer": torch.nn.Linear(2, 1)}, TypeError, r"option optimizer must be a torch.optim.Optimizer.*model"),
        ({"optimizer": [OPTIMIZER, "sgd"]}, TypeError, r"option optimizer\[1\] must be"),
        ({"optimizer": []}, ValueError, "option optimizer must be"),
        ({"scheduler": OPTIMIZER}, TypeError, "option scheduler must be a torch.optim.lr_scheduler"),
        (
            {"scheduler": ReduceLROnPlateau(OPTIMIZER), "scheduler_step": "iteration"},
            ValueError,
            "scheduler_step='iteration' cannot step a ReduceLROnPlateau",
        ),
        ({"optimizer": None, "factor": 2}, ValueError, "option factor"),  # checked even while inactive
    ],
)
def test_bad_option_values_name_the_option(options, error, match):
    options = {"optimizer": OPTIMIZER, **options}
    with pytest.raises(error, match=match):
        LRReduction(**options)
    task = Regression()
    with pytest.raises(PluginError, match="'lr_reduction'") as raised:
        Trainer(task.training_data, task.update, plugins={"lr_reduction": options})
    assert isinstance(raised.value.__cause__, error)


def test_state_dict_round_trip_continues_counting_across_two_trainers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    scores = from_list([1.0] * 10)
    first = Regression()
    trainer = first.trainer(patience=3, score_function=scores)
    trainer.run(max_epochs=3)  # baseline at epoch 1, then 2 epochs without improvement
    assert trainer.state_dict()["plugins"]["lr_reduction"]["plateau"][0]["num_bad_epochs"] == 2
    torch.save({"trainer": trainer.state_dict(), "optimizer": first.optimizer.state_dict()}, tmp_path / "ckpt.pt")

    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    second = Regression(seed=1)
    second.optimizer.load_state_dict(checkpoint["optimizer"])
    resumed = second.trainer(patience=3, score_function=scores)
    resumed.load_state_dict(checkpoint["trainer"])
    resumed.run(max_epochs=10)
    # 4th epoch without improvement is epoch 5 (not epoch 1 + 3 + 2 of a fresh count) ...
    assert reductions(caplog)[0] == "epoch 5: learning rate of optimizer 0 group 0 reduced 0.1 -> 0.01"
    assert [second.epoch_lrs[e] for e in range(4, 11)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001])

    fresh = Regression(seed=1)
    fresh_trainer = fresh.trainer(patience=3, score_function=scores)
    fresh_trainer.current_epoch = 3
    fresh_trainer.run(max_epochs=10)
    assert [fresh.epoch_lrs[e] for e in range(4, 11)] == pytest.approx([0.1] * 5 + [0.01] * 2)


def test_load_state_dict_checks_the_configuration():
    plugin = LRReduction(optimizer=OPTIMIZER)
    with pytest.raises(ValueError, match="2 optimizer states but this plugin has 1 optimizers"):
        plugin.load_state_dict({"plateau": [{}, {}], "schedulers": []})
    with pytest.raises(ValueError, match="keys plateau, schedulers"):
        plugin.load_state_dict({"best": 1.0})


def test_iteration_stepped_step_lr():
    task = Regression(lr=0.1)
    scheduler = StepLR(task.optimizer, step_size=3, gamma=0.5)
    trainer = task.trainer(optimizer=None, scheduler=scheduler, scheduler_step="iteration")
    assert "lr_reduction" in trainer.plugins  # a scheduler alone activates it
    trainer.run(max_epochs=3)  # 12 iterations
    expected = [0.1 * 0.5 ** ((iteration - 1) // 3) for iteration in range(1, 13)]
    assert [task.iteration_lrs[i] for i in range(1, 13)] == pytest.approx(expected)
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert scheduler.last_epoch == 12


def test_epoch_stepped_scheduler_and_no_per_iteration_hook():
    task = Regression(lr=0.1)
    scheduler = StepLR(task.optimizer, step_size=1, gamma=0.5)
    trainer = task.trainer(optimizer=None, scheduler=[scheduler])
    plugin = trainer.plugins["lr_reduction"]
    assert plugin.ignite_every() == {"ignite_training_iteration_completed": None}  # nothing added per iteration
    trainer.run(max_epochs=4)
    assert [task.epoch_lrs[e] for e in range(1, 5)] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    # Registered, the per-iteration hook is called only when it has schedulers to step.
    for step, calls in (("epoch", 0), ("iteration", 4)):
        profiled = Trainer(task.training_data, task.update, profile=True)
        profiled.register_plugin(LRReduction(scheduler=StepLR(task.optimizer, 1), scheduler_step=step), name="lr")
        profiled.run(1)
        rows = [r for r in profiled.profile_report() if r["event"] == "TRAINING_ITERATION_COMPLETED" and r["name"] == "lr"]
        assert [(r["kind"], r["name"], r["calls"]) for r in rows] == ([("plugin", "lr", calls)] if calls else [])


def test_plateau_reduction_together_with_an_iteration_scheduler(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(lr=0.1)
    warmup = torch.optim.lr_scheduler.LambdaLR(task.optimizer, lambda step: 1.0)  # a no-op scheduler, stepped
    trainer = task.trainer(
        patience=0, scheduler=warmup, scheduler_step="iteration", score_function=from_list([1.0] * 3)
    )
    trainer.run(max_epochs=3)
    assert warmup.last_epoch == 12
    # LambdaLR resets the rate to base_lr * lambda on every step: the plateau reduction of
    # epoch 2 holds only until the next iteration. The log shows the reductions all the same.
    assert [line.split(":")[0] for line in reductions(caplog)] == ["epoch 2", "epoch 3"]


def test_a_given_reduce_lr_on_plateau_is_stepped_with_the_score(caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    task = Regression(lr=0.1)
    plateau = ReduceLROnPlateau(task.optimizer, patience=0, factor=0.2)
    trainer = task.trainer(optimizer=None, scheduler=plateau, score_function=from_list([3.0, 2.0, 2.5]))
    trainer.run(max_epochs=3)
    assert plateau.best == 2.0 and task.optimizer.param_groups[0]["lr"] == pytest.approx(0.02)
    assert reductions(caplog) == ["epoch 3: learning rate of optimizer of scheduler 0 group 0 reduced 0.1 -> 0.02"]


def test_scheduler_state_round_trips_with_weights_only(tmp_path):
    task = Regression(lr=0.1)
    scheduler = StepLR(task.optimizer, step_size=5, gamma=0.5)
    trainer = task.trainer(scheduler=scheduler, scheduler_step="iteration", score_function=from_list([1.0] * 3))
    trainer.run(max_epochs=3)
    torch.save(trainer.plugins["lr_reduction"].state_dict(), tmp_path / "lr.pt")
    state = torch.load(tmp_path / "lr.pt", weights_only=True)
    again = Regression(lr=0.1)
    restored = LRReduction(
        optimizer=again.optimizer, scheduler=StepLR(again.optimizer, step_size=5, gamma=0.5), scheduler_step="iteration"
    )
    restored.load_state_dict(state)
    assert restored.schedulers[0].last_epoch == 12
    assert restored.plateau_schedulers[0].num_bad_epochs == 2
    assert restored.state_dict() == state


def test_score_function_returning_a_non_number_raises_naming_it():
    trainer = Regression().trainer(score_function=lambda trainer: [1.0, 2.0])
    with pytest.raises(TypeError, match="score_function must return a number"):
        trainer.run(max_epochs=1)


def test_distributed_ranks_step_on_the_reduced_score_and_keep_equal_rates(tmp_path, ignite_ranks):
    """Two real processes with a gloo process group (file rendezvous, loopback only)."""
    worker = Path(__file__).with_name("lr_reduction_distributed_worker.py")
    ignite_ranks(worker)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert ranks[0]["rates"] == ranks[1]["rates"]
    assert min(ranks[0]["rates"]) < 0.1  # it did reduce
    assert ranks[0]["best"] == ranks[1]["best"]
    reduced = [(a + b) / 2 for a, b in zip(ranks[0]["local_means"], ranks[1]["local_means"])]
    assert ranks[0]["best"] in [pytest.approx(mean) for mean in reduced]  # the best is a reduced score
    assert ranks[0]["best"] != pytest.approx(min(ranks[0]["local_means"]))
    assert len(ranks[0]["logs"]) >= 1 and all(line.startswith("INFO epoch ") for line in ranks[0]["logs"])
    assert ranks[1]["logs"] == []  # only rank 0 logs


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
        [3.0, 2.0, 1.0], lambda batch: torch.tensor([batch]), plugins={"lr_reduction": {'optimizer': torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)}}
    )
    # Handlers run before plugin hooks at EPOCH_COMPLETED, after them at EPOCH_STARTED.
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda t: recording.__setitem__(0, True))
    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: recording.__setitem__(0, False))
    trainer.run(3)
    assert calls == ["run_means"] * 3
    assert type(trainer.training_history[0]) is float  # the run's tensors became floats in one copy at its end
