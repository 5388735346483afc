"""Trainer.state_dict/load_state_dict: a run continued from any point equals the run never stopped."""

from __future__ import annotations

import copy
import random

import numpy
import pytest
import torch

from ignite import Trainer, TrainingEvents, hookimpl


def make_run(with_validation: bool = True):
    torch.manual_seed(0)
    random.seed(0)
    numpy.random.seed(0)
    inputs = torch.randn(100, 4)
    targets = inputs.sum(1, keepdim=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(batch):
        optimizer.zero_grad()
        # Python's and NumPy's RNGs are drawn from too, so their states must round-trip.
        scale = 1.0 + 0.01 * random.random() + 0.01 * float(numpy.random.rand())
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1]) * scale
        loss.backward()
        optimizer.step()
        return loss

    def validate(batch):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(batch[0]), batch[1]).item()

    trainer = Trainer(
        loader,
        step,
        validation_data=[(inputs[:10], targets[:10]), (inputs[10:20], targets[10:20])] if with_validation else None,
        validation_update_function=validate if with_validation else None,
    )
    return trainer, model, optimizer


def snapshot(trainer, model, optimizer):
    return (
        trainer.state_dict(),
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
    )


def round_trip(state, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def stopped_and_resumed(make, tmp_path, stop_when, event=TrainingEvents.TRAINING_ITERATION_COMPLETED, epochs=3):
    """``make()`` run for ``epochs`` without a stop (the reference), and run again stopped where
    ``stop_when(trainer)`` first holds at ``event``, its trainer, model and optimizer states saved
    and read back weights-only, then continued to ``epochs`` by a fresh ``make()``. Returns
    (reference, its model, the resumed trainer, its model)."""
    reference, reference_model, _ = make()
    reference.run(epochs)

    interrupted, model, optimizer = make()
    saved = {}

    def stop(trainer):
        if not saved and stop_when(trainer):
            saved["state"] = round_trip(snapshot(trainer, model, optimizer), tmp_path)
            trainer.terminate()

    interrupted.add_event_handler(event, stop)
    interrupted.run(epochs)
    assert saved, "the interruption point was never reached"

    resumed, model, optimizer = make()
    trainer_state, model_state, optimizer_state = saved["state"]
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    resumed.load_state_dict(trainer_state)
    resumed.run(epochs)
    return reference, reference_model, resumed, model


@pytest.mark.parametrize(
    "event, when",
    [
        (TrainingEvents.TRAINING_ITERATION_COMPLETED, 5),  # mid-epoch
        (TrainingEvents.TRAINING_ITERATION_COMPLETED, 13),  # last batch of epoch 1
        (TrainingEvents.TRAINING_ITERATION_COMPLETED, 27),  # first batch of epoch 3
        (TrainingEvents.EPOCH_COMPLETED, 2),  # epoch boundary
        (TrainingEvents.EPOCH_STARTED, 2),  # epoch opened, nothing consumed
        (TrainingEvents.VALIDATION_ITERATION_COMPLETED, 1),  # during validation
    ],
)
def test_resume_equals_uninterrupted(event, when, tmp_path):
    def stop_when(trainer):
        counter = trainer.current_epoch if event is not TrainingEvents.TRAINING_ITERATION_COMPLETED else trainer.current_iteration
        return counter == when

    reference, reference_model, resumed, model = stopped_and_resumed(make_run, tmp_path, stop_when, event)

    for expected, got in zip(reference_model.parameters(), model.parameters()):
        assert torch.equal(expected, got)
    assert resumed.training_history == reference.training_history
    assert resumed.validation_history == reference.validation_history
    assert (resumed.current_epoch, resumed.current_iteration) == (3, 39)


def test_resume_fires_epoch_events_for_the_continued_epoch():
    first, _, _ = make_run(with_validation=False)
    first.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 4 else None
    )
    first.run(2)
    second, _, _ = make_run(with_validation=False)
    second.load_state_dict(first.state_dict())
    seen = []
    second.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: seen.append(("epoch", t.current_epoch)))
    second.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: seen.append(("it", t.current_iteration)))
    second.run(1)
    assert seen[:2] == [("epoch", 1), ("it", 5)] and seen[-1] == ("it", 13)
    assert second.training_history.num_runs == 1 and len(second.training_history.run()) == 13


def test_plugin_state_round_trips():
    class Counter:
        def __init__(self):
            self.epochs = 0

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            self.epochs += 1

        def state_dict(self):
            return {"epochs": self.epochs}

        def load_state_dict(self, state):
            self.epochs = state["epochs"]

    first = Trainer([1, 2], lambda b: b)
    first.register_plugin(Counter(), name="counter")
    first.run(2)
    second = Trainer([1, 2], lambda b: b)
    second.register_plugin(Counter(), name="counter")
    second.load_state_dict(first.state_dict())
    second.run(3)
    assert second.plugins["counter"].epochs == 3


def state_stopped_at(iteration: int, batches: int) -> dict:
    """The state of a run on ``range(batches)`` that terminate() stopped after ``iteration``."""
    trainer = Trainer(list(range(batches)), lambda b: float(b))
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == iteration else None
    )
    trainer.run(iteration // batches + 1)
    return trainer.state_dict()


def test_foreign_state_is_refused():
    with pytest.raises(ValueError, match="not a Trainer state"):
        Trainer([1], lambda b: b).load_state_dict({"model": 1})


def test_resume_with_shorter_data_is_a_clear_error():
    second = Trainer(list(range(4)), lambda b: float(b))
    second.load_state_dict(state_stopped_at(6, batches=10))
    with pytest.raises(ValueError, match="cannot resume epoch 1 at batch 6: training_data now has only 4 batches"):
        second.run(1)


def test_state_taken_before_a_loaded_mid_epoch_state_is_reached_is_that_state():
    def make():
        torch.manual_seed(0)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(8.0)), batch_size=2, shuffle=True)
        return Trainer(data, lambda batch: batch[0].tolist())

    first, saved = make(), {}
    first.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED,
        lambda t: saved.setdefault("state", t.state_dict()) if t.current_iteration == 6 else None,
    )
    first.run(2)
    resumed = make()
    resumed.load_state_dict(saved["state"])
    before_run = resumed.state_dict()
    assert before_run["position"]["batches_done"] == 2
    at_epoch_start = {}
    resumed.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: at_epoch_start.setdefault("state", t.state_dict()))
    resumed.run(2)
    for state in (before_run, at_epoch_start["state"]):
        assert torch.equal(state["position"]["start_rng"]["torch"], saved["state"]["position"]["start_rng"]["torch"])
        assert torch.equal(state["rng"]["torch"], saved["state"]["rng"]["torch"])
        assert state["current_iteration"] == 6
    assert resumed.training_history == first.training_history


def test_history_state_saves_float_runs_in_one_tensor():
    trainer = Trainer([1, 2, 3], lambda b: float(b), validation_data=[(1, "x")], validation_update_function=lambda b: b)
    trainer.run(2)
    state = trainer.state_dict()
    # Every float run, the run in progress (the last) included, in one float64 tensor; the
    # chunks give each run's count, or its list: torch.save pickles lists and tuples item by
    # item, through a Python callback each, and costs more per tensor than per value.
    training = state["training_history"]
    assert training["chunks"] == [[], 3, 3]
    assert torch.equal(training["floats"], torch.tensor([1.0, 2.0, 3.0] * 2, dtype=torch.float64))
    assert state["validation_history"]["chunks"] == [[], [(1, "x")], [(1, "x")]]
    assert state["validation_history"]["floats"].numel() == 0
    assert isinstance(state["rng"]["python"][1], torch.Tensor) and state["rng"]["python"][1].shape == (625,)


def test_a_state_in_the_earlier_tensor_list_and_tuple_form_still_loads():
    trainer = Trainer([1, 2, 3], lambda b: float(b))
    trainer.run(2)
    state = trainer.state_dict()
    # The earlier form: a tensor per finished float run, the run in progress a list.
    state["training_history"] = {"chunks": [[], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), [1.0, 2.0, 3.0]]}
    version, internal, gauss = state["rng"]["python"]
    state["rng"]["python"] = (version, tuple(internal.tolist()), gauss)
    expected = [random.random() for _ in range(3)]
    resumed = Trainer([1, 2, 3], lambda b: float(b))
    resumed.load_state_dict(state)  # at an epoch's end: Python's RNG is restored now
    assert [random.random() for _ in range(3)] == expected
    resumed.run(3)
    assert list(resumed.training_history) == [1.0, 2.0, 3.0] * 3


def test_a_resume_cut_before_its_saved_point_is_still_pending_for_the_next_run():
    resumed = Trainer(list(range(6)), lambda b: float(b))
    resumed.load_state_dict(state_stopped_at(4, batches=6))
    handle = resumed.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: t.terminate())
    resumed.run(2)  # stopped before the replay reached batch 4
    assert resumed.state_dict()["position"]["batches_done"] == 4
    handle.remove()
    resumed.run(2)
    assert list(resumed.training_history) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] * 2
    assert resumed.training_history.num_runs == 2 and resumed.current_iteration == 12


def test_a_newer_state_format_is_named_as_newer():
    state = state_stopped_at(3, batches=5)
    state["format"] = "ignite.Trainer/2"
    with pytest.raises(ValueError, match=r"written by a newer ignite-trainer \(state format 2\); this one reads format 1"):
        Trainer([1], lambda b: b).load_state_dict(state)


class Remembers:
    """A plugin with a state; ``fail`` makes its load_state_dict raise."""

    def __init__(self, value, fail=False):
        self.value, self.fail = value, fail

    @hookimpl
    def ignite_epoch_completed(self):
        pass

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        if self.fail:
            raise KeyError("value")
        self.value = state["value"]


def _trainer_with_plugins(first, second, fail=False):
    trainer = Trainer(list(range(5)), lambda b: float(b))
    trainer.register_plugin(Remembers(first), name="first")
    trainer.register_plugin(Remembers(second, fail=fail), name="second")
    return trainer


def _unchanged(trainer, history, rng):
    assert (trainer.current_epoch, trainer.current_iteration) == (1, 5)
    assert list(trainer.training_history) == history
    assert trainer.plugins["first"].value == "mine"
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda state: state["validation_history"].update(chunks=[[], 7]),
        lambda state: state["training_history"].update(chunks=[[], 99]),  # more floats than saved
        lambda state: state.update(position={"phase": "elsewhere", "batches_done": 1}),
        lambda state: state.pop("rng"),
        lambda state: state.update(current_epoch="two"),
    ],
    ids=["bad history entry", "history count beyond its floats", "unknown phase", "no RNG states", "epoch not a number"],
)
def test_a_malformed_state_is_refused_before_anything_changes(spoil):
    saved = _trainer_with_plugins("saved", "saved")
    saved.run(2)
    state = saved.state_dict()
    spoil(state)
    trainer = _trainer_with_plugins("mine", "mine")
    trainer.run(1)
    history, rng = list(trainer.training_history), torch.get_rng_state()
    with pytest.raises(ValueError, match="cannot restore this Trainer state"):
        trainer.load_state_dict(state)
    _unchanged(trainer, history, rng)


def test_a_plugin_failing_to_restore_rolls_back_the_plugins_restored_before_it():
    saved = _trainer_with_plugins("saved", "saved")
    saved.run(2)
    trainer = _trainer_with_plugins("mine", "mine", fail=True)
    trainer.run(1)
    history, rng = list(trainer.training_history), torch.get_rng_state()
    with pytest.raises(KeyError) as raised:
        trainer.load_state_dict(saved.state_dict())
    assert "while restoring the state of plugin 'second'; nothing was restored" in raised.value.__notes__
    _unchanged(trainer, history, rng)


def test_metrics_travel_with_the_state_and_an_older_state_without_them_loads():
    t = Trainer([1, 2], lambda batch: float(batch))
    t.run(1)
    t.metrics["accuracy"] = 0.75
    state = copy.deepcopy(t.state_dict())
    resumed = Trainer([1, 2], lambda batch: float(batch))
    resumed.load_state_dict(state)
    assert resumed.metrics == {"accuracy": 0.75}
    del state["metrics"]
    older = Trainer([1, 2], lambda batch: float(batch))
    older.load_state_dict(state)
    assert older.metrics == {}
