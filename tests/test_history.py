from __future__ import annotations

import pytest
import torch

from ignite import History
from ignite.history import scalars, storable


def test_runs_and_means():
    history = History()
    with pytest.raises(IndexError, match="no runs yet"):
        history.run()
    history.start_run()
    for value in (1.0, 3.0):
        history.append(value)
    history.start_run()
    history.append(10.0)
    assert history.run(0) == [1.0, 3.0] and history.run() == [10.0] and history.num_runs == 2
    assert history.run_mean(0) == 2.0 and history[-2:] == [3.0, 10.0] and history == [1.0, 3.0, 10.0]
    with pytest.raises(IndexError):
        history.run(2)


def test_means_of_tuples_and_dicts():
    history = History()
    history.start_run()
    history.append((1.0, "tag", torch.tensor(2.0)))
    history.append((3.0, "tag", torch.tensor(4.0)))
    assert history.run_means() == {"0": 2.0, "2": 3.0}
    assert history.run_mean(key=2) == 3.0 and history.run_mean() is None
    dicts = History()
    dicts.start_run()
    dicts.append({"loss": 1.0, "correct": 3})
    dicts.append({"loss": 2.0, "correct": 5})
    assert dicts.run_means() == {"loss": 1.5, "correct": 4.0}


def test_scalars():
    assert scalars(2) == {"": 2.0} and scalars(True) == {} and scalars("x") == {}
    assert scalars({"a": torch.tensor([1.5]), "b": torch.ones(2)}) == {"a": 1.5}


def test_storable_detaches_and_compacts():
    weight = torch.ones(2, requires_grad=True)
    loss = (weight * 3).sum()
    assert storable(loss) == 6.0 and type(storable(loss)) is float
    vector = storable(weight * 2)
    assert vector.grad_fn is None and not vector.requires_grad
    nested = storable({"pair": (loss, [weight * 1])})
    assert nested["pair"][0] == 6.0 and nested["pair"][1][0].grad_fn is None


def test_state_round_trip():
    history = History()
    history.start_run()
    history.append(1.0)
    copy = History()
    copy.load_state_dict(history.state_dict())
    assert copy == history and copy.run() == [1.0]
