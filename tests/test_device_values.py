"""Tensor outputs are read in bulk: once per run end or per read, never one copy per value.

On the CPU the bulk path is exercised by one-element tensors that history_value keeps as
tensors (shape [1]); the device-specific parts (CUDA copies, events) are in tests/gpu/.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random

import pytest
import torch

from ignite import History, Trainer, TrainingEvents, _nan_guard
from ignite.history import scalars, scalars_of

from .test_state import stopped_and_resumed

E = TrainingEvents
Pair = collections.namedtuple("Pair", "loss accuracy")


@dataclasses.dataclass(frozen=True)
class Output:
    loss: torch.Tensor
    extra: dict


@pytest.fixture
def transfers(monkeypatch):
    """Counts the copies of tensor values to Python (Tensor.tolist and Tensor.item calls)."""
    counts = collections.Counter()
    tolist, item = torch.Tensor.tolist, torch.Tensor.item

    def counting_tolist(self, *args, **kwargs):
        counts["tolist"] += 1
        return tolist(self, *args, **kwargs)

    def counting_item(self, *args, **kwargs):
        counts["item"] += 1
        return item(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    return counts


def test_a_run_of_one_element_tensors_becomes_floats_in_one_transfer(transfers):
    seen = {}

    def at_epoch_end(trainer):
        history = trainer.training_history
        seen[trainer.current_epoch] = (dict(transfers), history.run(), history.run_means(), scalars(history[-1]))

    trainer = Trainer(
        [1.0, 2.0, 3.0, 6.0],
        lambda b: torch.tensor([b]),
        validation_data=[1.0, 3.0],
        validation_update_function=lambda b: torch.tensor([b * 10]),
    )
    trainer.add_event_handler(E.TRAINING_EPOCH_COMPLETED, at_epoch_end)
    trainer.run(2)
    counts, values, means, last = seen[1]
    assert counts == {"tolist": 1} and values == [1.0, 2.0, 3.0, 6.0]
    assert all(type(value) is float for value in values) and means == {"": 3.0} and last == {"": 6.0}
    assert seen[2][0] == {"tolist": 3}  # epoch 1's validation run, then epoch 2's training run
    assert transfers == {"tolist": 4}  # and epoch 2's validation run: readers added none
    assert trainer.validation_history.run() == [10.0, 30.0]
    state = trainer.state_dict()["training_history"]
    assert state["floats"].tolist() == [1.0, 2.0, 3.0, 6.0] * 2 and state["chunks"] == [[], 4, 4]


def test_a_run_in_progress_is_read_in_one_transfer_and_left_as_it_is(transfers):
    history = History()
    history.start_run()
    for value in (1.0, 2.0, 6.0):
        history.append(torch.tensor([value]))
    assert history.run_means() == {"": 3.0} and transfers == {"tolist": 1}
    state = history.state_dict()
    assert transfers == {"tolist": 2} and state["chunks"] == [[], 3]
    assert all(isinstance(value, torch.Tensor) for value in history.run())  # converted at the run's end only
    restored = History()
    restored.load_state_dict(state)
    assert restored.run() == [1.0, 2.0, 6.0]
    transfers.clear()
    history.start_run()  # ends the run before
    assert transfers == {"tolist": 1} and history.run(0) == [1.0, 2.0, 6.0]


def test_scalars_of_one_output_read_its_tensors_together(transfers):
    output = {"loss": torch.tensor([0.5]), "accuracy": torch.tensor([0.75]), "n": torch.tensor([4]), "tag": "x"}
    assert scalars(output) == {"loss": 0.5, "accuracy": 0.75, "n": 4.0}
    assert transfers == {"tolist": 1}


def test_scalars_of_many_outputs_read_them_all_in_one_transfer(transfers):
    outputs = [1.5, torch.tensor([2.0]), (3.0, "x", torch.tensor([4.0])), {"a": 5.0, 1: torch.tensor([6])}, "no", {}]
    expected = [{"": 1.5}, {"": 2.0}, {"0": 3.0, "2": 4.0}, {"a": 5.0, "1": 6.0}, {}, {}]
    assert scalars_of(outputs) == expected
    assert transfers == {"tolist": 1}
    assert [scalars(output) for output in outputs] == expected  # the same keys, one transfer each


CONTAINERS = {
    "tuple": lambda i: (torch.tensor([i]), torch.tensor([2.0 * i])),
    "dict": lambda i: {"loss": torch.tensor([i]), "correct": torch.tensor([3], dtype=torch.int64)},
    "namedtuple": lambda i: Pair(torch.tensor([i]), torch.tensor([0.5], dtype=torch.float64)),
    "dataclass": lambda i: Output(torch.tensor([i]), {"deep": [torch.tensor([[i]])]}),
    "mixed dtypes": lambda i: [torch.tensor([i], dtype=torch.bfloat16), torch.tensor([7], dtype=torch.int32), 1.5],
}


@pytest.mark.parametrize("make", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_containers_of_one_element_tensors_are_converted_in_one_transfer(make, transfers):
    trainer = Trainer([1.0, 2.0, 3.0], make)
    trainer.run(1)
    assert transfers == {"tolist": 1}
    for got, expected in zip(trainer.training_history.run(), (make(i) for i in (1.0, 2.0, 3.0))):
        assert type(got) is type(expected)
        wanted = [v.item() if isinstance(v, torch.Tensor) else v for v in _leaves(expected)]
        assert _leaves(got) == wanted and [type(v) for v in _leaves(got)] == [type(v) for v in wanted]


def _leaves(value):
    if dataclasses.is_dataclass(value):
        value = [getattr(value, field.name) for field in dataclasses.fields(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_larger_tensors_stay_on_the_cpu_as_they_were_and_others_are_kept(transfers):
    outputs = [(torch.arange(3.0) + b, torch.tensor([b / 2]), "tag", torch.tensor([True])) for b in range(3)]
    trainer = Trainer(list(range(3)), lambda b: outputs[b])
    trainer.run(1)
    run = trainer.training_history.run()
    assert transfers == {"tolist": 1}
    for got, expected in zip(run, outputs):
        assert got[0].data_ptr() == expected[0].data_ptr()  # not copied: already on the host
        assert got[1] == float(expected[1]) and type(got[1]) is float
        assert got[2] == "tag" and torch.equal(got[3], expected[3])  # a bool tensor is no number: kept


def test_an_exception_ends_the_run_too():
    def update(batch):
        if batch == 3:
            raise RuntimeError("boom")
        return torch.tensor([float(batch)])

    trainer = Trainer([1, 2, 3], update)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(1)
    assert trainer.training_history.run() == [1.0, 2.0]
    assert all(type(value) is float for value in trainer.training_history.run())


def test_floats_runs_are_compacted_once_ended():
    history = History()
    history.start_run()
    history.append(torch.tensor([1.0]))
    history.append(2.0)
    history.start_run()
    assert type(history._chunks[1]).__name__ == "array" and history.run(0) == [1.0, 2.0]


# -- terminate_on_nan ----------------------------------------------------------------------


def test_terminate_on_nan_with_tensor_outputs_names_the_iteration(caplog):
    outputs = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([float("nan")]), torch.tensor([4.0])]
    trainer = Trainer(list(range(4)), lambda i: outputs[i], terminate_on_nan=True)
    with caplog.at_level(logging.WARNING, logger="ignite"):
        trainer.run(2)
    assert trainer.current_iteration == 3 and len(trainer.training_history) == 3  # on the CPU: that iteration
    assert "iteration 3 (epoch 1) is not finite: tensor([nan])" in caplog.text and "read on the host" not in caplog.text


class LaggingEvent:
    """A CUDA event's part in the guard, on the CPU: complete ``lag`` queries after record()."""

    def __init__(self, lag):
        self.lag, self.left = lag, 0

    def record(self):
        self.left = self.lag

    def query(self):
        if self.left:
            self.left -= 1
            return False
        return True


@pytest.fixture
def cpu_as_device(monkeypatch):
    """Let the guard treat CPU tensors as a device's: checked by tensor ops, read through an event."""
    lags = []

    def new_event(device):
        return LaggingEvent(lags[0])

    monkeypatch.setattr(_nan_guard, "_ASYNC_DEVICES", frozenset(("cpu",)))
    monkeypatch.setattr(_nan_guard, "_new_event", new_event)
    return lags


def test_device_outputs_stop_when_the_flag_arrives_naming_the_iteration(cpu_as_device, caplog, transfers):
    # The flag of iteration i holds the first bad iteration up to i, computed by tensor ops.
    cpu_as_device.append(2)
    values = [1.0, 2.0, float("nan"), 4.0, 5.0, float("inf"), 7.0, 8.0, 9.0, 10.0]
    outputs = [(torch.tensor([value]), {"n": torch.tensor([i])}) for i, value in enumerate(values)]
    trainer = Trainer(list(range(10)), lambda i: outputs[i], terminate_on_nan=True)
    stops, reads = [], []
    trainer.add_event_handler(E.TRAINING_ITERATION_STARTED, lambda t: reads.append(sum(transfers.values())))
    trainer.add_event_handler(E.TRAINING_EPOCH_COMPLETED, lambda t: stops.append(t.current_iteration))
    with caplog.at_level(logging.WARNING, logger="ignite"):
        trainer.run(1)
    # Copies start at iterations 1 and 4 (the first arrives empty at 4); the second, which
    # holds iteration 3's flag, arrives at 7.
    assert stops == [7] and len(trainer.training_history) == 7 and not trainer.epoch_complete
    assert (
        "iteration 3 (epoch 1) is not finite: (tensor([nan]), {'n': tensor([2])}) (read on the host at iteration 7)"
        in caplog.text
    )
    assert reads == [0] * 7  # no tensor value was read to the host during the iterations


def test_a_flag_still_in_flight_is_read_at_the_end_of_the_epoch(cpu_as_device, caplog):
    cpu_as_device.append(100)
    values = [1.0, 2.0, 3.0, float("-inf"), 5.0]
    seen = []
    trainer = Trainer(
        list(range(5)),
        lambda i: torch.tensor([values[i]]),
        validation_data=[1],
        validation_update_function=lambda b: 1.0,
        terminate_on_nan=True,
    )
    trainer.add_event_handler(E.TRAINING_EPOCH_COMPLETED, lambda t: seen.append(t.terminating))
    trainer.add_event_handler(E.VALIDATION_STARTING, lambda t: seen.append("validation"))
    trainer.run(3)
    assert seen == [True] and trainer.current_epoch == 1 and trainer.current_iteration == 5
    assert not trainer.epoch_complete and trainer.validation_history.num_runs == 0
    assert "iteration 4 (epoch 1) is not finite: -inf (read on the host at iteration 5)" in caplog.text


def test_finite_device_outputs_run_to_the_end_and_a_later_run_starts_clean(cpu_as_device):
    cpu_as_device.append(1)
    bad = {"on": True}
    trainer = Trainer(
        list(range(6)), lambda i: torch.tensor([float("nan") if bad["on"] and i == 1 else 1.0]), terminate_on_nan=True
    )
    trainer.run(2)
    assert trainer.terminating and trainer.current_iteration < 6
    bad["on"] = False
    trainer.run(2)  # the rest of epoch 1, then epoch 2: no stale flag stops it
    assert (trainer.current_epoch, trainer.current_iteration) == (2, 12)


# -- exact resume ---------------------------------------------------------------------------


def make_run():
    torch.manual_seed(0)
    random.seed(0)
    inputs = torch.randn(40, 4)
    targets = inputs.sum(1, keepdim=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach().reshape(1), "pair": (loss.reshape(1), torch.ones(2))}

    return Trainer(loader, step, terminate_on_nan=True), model, optimizer


def test_resume_mid_epoch_with_tensor_outputs_is_bit_for_bit(tmp_path):
    reference, reference_model, resumed, model = stopped_and_resumed(
        make_run, tmp_path, lambda trainer: trainer.current_iteration == 7
    )
    for expected, got in zip(reference_model.parameters(), model.parameters()):
        assert torch.equal(expected, got)
    assert [v["loss"] for v in resumed.training_history] == [v["loss"] for v in reference.training_history]
    assert all(type(v["pair"][0]) is float for v in resumed.training_history)
    assert resumed.current_iteration == reference.current_iteration == 15
