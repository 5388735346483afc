from __future__ import annotations

import pytest
import torch

from ignite import History
from ignite.history import history_value, scalars


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


def test_history_value_detaches_and_compacts():
    weight = torch.ones(2, requires_grad=True)
    loss = (weight * 3).sum()
    assert history_value(loss) == 6.0 and type(history_value(loss)) is float
    vector = history_value(weight * 2)
    assert vector.grad_fn is None and not vector.requires_grad
    nested = history_value({"pair": (loss, [weight * 1])})
    assert nested["pair"][0] == 6.0 and nested["pair"][1][0].grad_fn is None


def test_state_round_trip():
    history = History()
    history.start_run()
    history.append(1.0)
    copy = History()
    copy.load_state_dict(history.state_dict())
    assert copy == history and copy.run() == [1.0]


def test_finished_float_runs_are_compacted_and_read_back_identically():
    from array import array

    history = History()
    expected = []
    for run in range(4):
        history.start_run()
        for i in range(5):
            value = float(run * 10 + i) if run != 2 else (run, i)  # run 2 holds tuples
            history.append(value)
            expected.append(value)
    assert isinstance(history._chunks[1], array) and isinstance(history._chunks[3], list)
    assert list(history) == expected and len(history) == 20
    for index in (0, 4, 5, 13, 19, -1, -6, -20):
        assert history[index] == expected[index]
    for piece in (slice(None), slice(3, 17), slice(-7, -1), slice(None, None, 3), slice(18, 2, -4), slice(-3, None)):
        assert history[piece] == expected[piece]
    with pytest.raises(IndexError):
        history[20]
    assert history.run(1) == expected[5:10] and type(history.run(0)[0]) is float
    copy = History()
    copy.load_state_dict(history.state_dict())
    assert copy == history and copy[-1] == expected[-1]
    copy.append(99.0)
    assert copy.run() == [*expected[15:], 99.0]


def test_values_before_any_run_are_kept():
    history = History()
    history.append(1.0)
    history.start_run()
    history.append(2.0)
    assert list(history) == [1.0, 2.0] and history.run() == [2.0] and history.num_runs == 1


def test_run_means_follow_appends_new_runs_and_loaded_states():
    history = History()
    history.start_run()
    history.append(1.0)
    history.append(3.0)
    means = history.run_means()
    means[""] = -1.0  # the caller's copy: the next answer is not affected
    assert history.run_means() == {"": 2.0}
    history.append(5.0)
    assert history.run_means() == {"": 3.0}
    history.start_run()  # the finished run is compacted; its means stay the same
    history.append((2.0, 4.0))
    assert history.run_means() == {"0": 2.0, "1": 4.0} and history.run_means(0) == {"": 3.0}
    other = History()
    other.start_run()
    other.append(10.0)
    history.load_state_dict(other.state_dict())
    assert history.run_means() == {"": 10.0}
