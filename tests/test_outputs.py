"""Update outputs of any type: stored without autograd graphs, counted as numbers, checked for NaN,
and saved in a state that a weights-only load reads back (or refused when saved, never when loaded)."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import gc
import io
import weakref

import numpy
import pytest
import torch

from ignite import Trainer, TrainingEvents
from ignite.serialization import NotLoadableError

from .test_state import Remembers

Pair = collections.namedtuple("Pair", "loss scale")


@dataclasses.dataclass
class Output:
    loss: torch.Tensor
    name: str = "x"


@dataclasses.dataclass(frozen=True)
class FrozenOutput:
    loss: torch.Tensor


def weights_only_round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


CONTAINERS = {
    "namedtuple": lambda loss: Pair(loss, loss * 2),
    "OrderedDict": lambda loss: collections.OrderedDict(loss=loss),
    "defaultdict": lambda loss: collections.defaultdict(list, loss=loss),
    "dataclass": lambda loss: Output(loss),
    "frozen dataclass": lambda loss: FrozenOutput(loss),
    "list in a dict in a tuple": lambda loss: ({"losses": [loss, loss]},),
}


@pytest.mark.parametrize("make", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_every_container_is_stored_without_its_graph(make):
    weight = torch.ones(3, requires_grad=True)
    graphs = []

    def update(batch):
        hidden = weight * batch  # saved by the graph of the loss (pow's backward needs it)
        graphs.append(weakref.ref(hidden))
        return make((hidden**2).sum())

    trainer = Trainer([torch.full((3,), float(i)) for i in range(5)], update)
    trainer.run(2)
    gc.collect()
    assert [ref() for ref in graphs] == [None] * 10, "a history kept an autograd graph alive"
    stored = trainer.training_history[-1]
    expected = make(torch.tensor(0.0))
    assert type(stored) is type(expected)
    if isinstance(stored, collections.defaultdict):
        assert stored.default_factory is list


def test_a_container_without_tensors_needing_detach_is_kept_as_is():
    output = Pair(1.0, 2.0)
    trainer = Trainer([1], lambda batch: output)
    trainer.run(1)
    assert trainer.training_history[-1] is output


NUMBERS = {
    "numpy.float32": numpy.float32(1.5),
    "numpy.float64": numpy.float64(1.5),
    "numpy.int64": numpy.int64(2),
    "Decimal": decimal.Decimal("1.5"),
    "one-element array": numpy.array([1.5]),
}


@pytest.mark.parametrize("value", NUMBERS.values(), ids=NUMBERS.keys())
def test_numpy_and_decimal_numbers_count_in_means(value, caplog):
    trainer = Trainer([1, 2], lambda batch: value, validation_data=[1], validation_update_function=lambda b: {"v": value})
    with caplog.at_level("INFO", logger="ignite"):
        trainer.run(1)
    assert trainer.training_history.run_mean() == float(numpy.asarray(value, dtype=float).ravel()[0])
    assert trainer.validation_history.run_means() == {"v": trainer.training_history.run_mean()}
    assert "training mean n/a" not in caplog.text


NON_FINITE = {
    "numpy.float32 nan": numpy.float32("nan"),
    "numpy.float64 inf": numpy.float64("inf"),
    "numpy array with inf": numpy.array([1.0, numpy.inf]),
    "Decimal NaN": decimal.Decimal("NaN"),
    "Decimal -Infinity": decimal.Decimal("-Infinity"),
    "complex nan": complex(float("nan"), 0.0),
    "numpy complex inf": numpy.complex64(complex(0.0, float("inf"))),
    "complex tensor nan": torch.tensor([complex(float("nan"), 1.0)]),
    "in a namedtuple": Pair(1.0, float("nan")),
    "in an OrderedDict": collections.OrderedDict(loss=numpy.float32("nan")),
    "in a dataclass": Output(torch.tensor(float("inf"))),
}


@pytest.mark.parametrize("bad", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_terminate_on_nan_catches_every_number_type(bad):
    trainer = Trainer(list(range(10)), lambda batch: bad if batch == 3 else 1.0, terminate_on_nan=True)
    trainer.run(2)
    assert trainer.current_iteration == 4 and trainer.current_epoch == 1


@pytest.mark.parametrize(
    "good", [numpy.float32(1.0), decimal.Decimal("2"), complex(1.0, 2.0), numpy.array([1, 2]), 10**400, Pair(1, 2.0)]
)
def test_terminate_on_nan_lets_finite_values_pass(good):
    trainer = Trainer(list(range(3)), lambda batch: good, terminate_on_nan=True)
    trainer.run(2)
    assert trainer.current_iteration == 6


SAFE_OUTPUTS = {
    "numpy.float64": lambda i: numpy.float64(i / 2),
    "numpy.float32": lambda i: numpy.float32(i / 2),
    "numpy array": lambda i: numpy.arange(3, dtype=numpy.int16) * i,
    "Decimal": lambda i: decimal.Decimal(i) / 4,
    "dict of numpy numbers": lambda i: {"loss": numpy.float32(i), "n": numpy.int64(i)},
    "mixed": lambda i: numpy.float32(i) if i % 2 else float(i),
}


@pytest.mark.parametrize("make", SAFE_OUTPUTS.values(), ids=SAFE_OUTPUTS.keys())
def test_outputs_with_a_safe_form_are_saved_and_read_back_as_they_were(make):
    trainer = Trainer(list(range(4)), make, validation_data=[5], validation_update_function=make)
    trainer.run(2)
    state = weights_only_round_trip(trainer.state_dict())
    resumed = Trainer(list(range(4)), make, validation_data=[5], validation_update_function=make)
    resumed.load_state_dict(state)
    for history in ("training_history", "validation_history"):
        got, expected = getattr(resumed, history), getattr(trainer, history)
        assert [len(got.run(i)) for i in range(got.num_runs)] == [len(expected.run(i)) for i in range(expected.num_runs)]
        assert [described(value) for value in got] == [described(value) for value in expected]


def described(value):
    """A value's type and content, comparable with ==, also for arrays and dicts of numpy numbers."""
    if isinstance(value, numpy.ndarray):
        return (type(value), value.dtype, value.tolist())
    if isinstance(value, dict):
        return {key: described(item) for key, item in value.items()}
    return (type(value), value)


@pytest.mark.parametrize(
    "output, where, type_name",
    [
        (Pair(1.0, 2.0), "training_history.run(0)[2]", "Pair"),
        (Output(torch.ones(1)), "training_history.run(0)[2]", "Output"),
        ({"loss": 1.0, "extra": collections.defaultdict(list)}, "training_history.run(0)[2]['extra']", "defaultdict"),
    ],
)
def test_outputs_without_a_safe_form_are_refused_when_saved(output, where, type_name):
    trainer = Trainer(list(range(4)), lambda batch: output if batch == 2 else 1.0)
    trainer.run(1)
    with pytest.raises(NotLoadableError) as raised:
        trainer.state_dict()
    message = str(raised.value)
    assert message.startswith(where) and type_name in message
    assert "add_safe_globals" in message and "Return floats, tensors" in message


def test_a_type_allowed_with_add_safe_globals_is_saved_and_read_back():
    trainer = Trainer([1, 2], lambda batch: Pair(float(batch), 1.0))
    trainer.run(1)
    with torch.serialization.safe_globals([Pair]):
        state = weights_only_round_trip(trainer.state_dict())
    resumed = Trainer([1, 2], lambda batch: batch)
    with torch.serialization.safe_globals([Pair]):
        resumed.load_state_dict(state)
    assert list(resumed.training_history) == [Pair(1.0, 1.0), Pair(2.0, 1.0)]


def test_a_plugin_state_holding_numpy_is_saved_and_read_back_and_a_bad_one_is_named():
    trainer = Trainer([1], lambda batch: 1.0)
    trainer.register_plugin(Remembers(numpy.float32(0.25)), name="best")
    state = weights_only_round_trip(trainer.state_dict())
    resumed = Trainer([1], lambda batch: 1.0)
    resumed.register_plugin(Remembers(None), name="best")
    resumed.load_state_dict(state)
    assert type(resumed.plugins["best"].value) is numpy.float32 and resumed.plugins["best"].value == 0.25

    trainer.plugins["best"].value = object()
    with pytest.raises(NotLoadableError, match=r"the state_dict\(\) of plugin 'best'\['value'\] is a builtins.object"):
        trainer.state_dict()


def test_handlers_see_the_outputs_as_returned():
    seen = []
    trainer = Trainer([1, 2], lambda batch: numpy.float32(batch))
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: seen.append(t.training_history[-1]))
    trainer.run(1)
    assert [type(v) for v in seen] == [numpy.float32, numpy.float32]
