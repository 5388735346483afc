"""run() and construction: no re-entry, a stopped run continues where it stopped, data is not iterated early."""

from __future__ import annotations

import numpy
import pytest
import torch

from ignite import Trainer, TrainingEvents

from .test_state import make_run


def test_run_from_a_handler_of_the_running_trainer_is_refused():
    trainer = Trainer([1, 2], lambda batch: 1.0)
    started = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: started.append(1))
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.run(3))
    with pytest.raises(RuntimeError, match="run\\(\\) was called while this trainer is running"):
        trainer.run(1)
    assert started == [1]


def stopped_then_continued(stop):
    """A run of make_run() stopped by ``stop`` (a TRAINING_ITERATION_COMPLETED or
    VALIDATION_ITERATION_COMPLETED handler), then run() again to the end."""
    trainer, model, _ = make_run()
    handle = trainer.add_event_handler(stop[0], stop[1])
    with pytest.raises(KeyboardInterrupt) if stop[2] else _nothing():
        trainer.run(3)
    handle.remove()
    trainer.run(3)
    return trainer, model


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _terminate_at(iteration):
    return lambda t: t.terminate() if t.current_iteration == iteration else None


def _interrupt_at(iteration):
    def handler(t):
        if t.current_iteration == iteration:
            raise KeyboardInterrupt

    return handler


def _terminate_in_validation(t):
    if t.current_epoch == 2:
        t.terminate()


@pytest.mark.parametrize(
    "stop",
    [
        (TrainingEvents.TRAINING_ITERATION_COMPLETED, _terminate_at(5), False),
        (TrainingEvents.TRAINING_ITERATION_COMPLETED, _interrupt_at(18), True),
        (TrainingEvents.VALIDATION_ITERATION_COMPLETED, _terminate_in_validation, False),
    ],
    ids=["terminate mid-epoch", "exception mid-epoch", "terminate in validation"],
)
def test_run_again_after_a_stop_continues_the_epoch_as_a_resume_would(stop):
    reference, reference_model, _ = make_run()
    reference.run(3)
    trainer, model = stopped_then_continued(stop)
    assert (trainer.current_epoch, trainer.current_iteration) == (3, 39)
    assert trainer.training_history == reference.training_history
    assert trainer.validation_history == reference.validation_history
    for expected, got in zip(reference_model.parameters(), model.parameters()):
        assert torch.equal(expected, got)


def test_state_after_a_stopped_run_is_where_the_next_run_starts():
    trainer, _, _ = make_run()
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, _interrupt_at(18))
    with pytest.raises(KeyboardInterrupt):
        trainer.run(3)
    state = trainer.state_dict()
    assert state["current_iteration"] == 18 and state["position"]["batches_done"] == 5
    assert trainer.current_iteration == 18


class _Recording:
    """A re-iterable that counts the iterators made from it."""

    def __init__(self):
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        return iter([1, 2])


def test_construction_does_not_iterate_the_data():
    data, validation = _Recording(), _Recording()
    Trainer(data, lambda b: b, validation_data=validation, validation_update_function=lambda b: b)
    assert (data.iterations, validation.iterations) == (0, 0)


def test_construction_leaves_a_shuffling_loaders_rng_alone():
    loader = torch.utils.data.DataLoader(torch.arange(10), batch_size=2, shuffle=True)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    Trainer(loader, lambda batch: 1.0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("data, message", [(iter([1, 2]), "is an iterator"), ((x for x in [1]), "is an iterator"), (3, "must be an iterable")])
def test_data_that_cannot_be_iterated_twice_or_at_all_is_refused(data, message):
    with pytest.raises(TypeError, match=message):
        Trainer(data, lambda batch: batch)


def test_a_sequence_with_only_getitem_is_accepted():
    class Old:
        def __getitem__(self, index):
            if index >= 3:
                raise IndexError
            return index

    trainer = Trainer(Old(), lambda batch: float(batch))
    trainer.run(1)
    assert list(trainer.training_history) == [0.0, 1.0, 2.0]
    assert numpy.isclose(trainer.training_history.run_mean(), 1.0)
