"""Handlers attached to TrainingEvents.X.every(n): called when the counter is a multiple of n."""

from __future__ import annotations

import pytest

from ignite import Trainer, TrainingEvents, hookimpl
from ignite.events import PeriodicEvent

E = TrainingEvents


def test_iteration_handlers_run_on_multiples_of_the_global_iteration_in_the_order_added_before_plugins():
    trainer = Trainer([1.0] * 5, lambda batch: batch)
    calls: list[tuple[str, int]] = []

    class Recorder:
        @hookimpl
        def ignite_training_iteration_completed(self, trainer):
            if trainer.current_iteration % 3 == 0:
                calls.append(("plugin", trainer.current_iteration))

    trainer.register_plugin(Recorder(), name="recorder")
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, lambda t: calls.append(("every", t.current_iteration)) if t.current_iteration % 3 == 0 else None)
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED.every(3), lambda t, tag: calls.append((tag, t.current_iteration)), tag="third")
    trainer.add_event_handler(E.TRAINING_ITERATION_STARTED.every(4), lambda t: calls.append(("started", t.current_iteration)))
    trainer.run(2)  # iterations 1..10: the count runs on across epochs
    assert calls == [
        ("every", 3), ("third", 3), ("plugin", 3),
        ("started", 4),
        ("every", 6), ("third", 6), ("plugin", 6),
        ("started", 8),
        ("every", 9), ("third", 9), ("plugin", 9),
    ]


def test_epoch_and_validation_events_count_epochs():
    trainer = Trainer([1.0], lambda batch: batch, validation_data=[2.0], validation_update_function=lambda b: b)
    seen: dict[str, list[int]] = {"epoch": [], "validation": [], "training epoch": []}
    trainer.add_event_handler(E.EPOCH_COMPLETED.every(2), lambda t: seen["epoch"].append(t.current_epoch))
    trainer.add_event_handler(E.VALIDATION_STARTING.every(3), lambda t: seen["validation"].append(t.current_epoch))
    trainer.add_event_handler(E.TRAINING_EPOCH_STARTED.every(5), lambda t: seen["training epoch"].append(t.current_epoch))
    trainer.run(6)
    assert seen == {"epoch": [2, 4, 6], "validation": [3, 6], "training epoch": [5]}


def test_a_handle_s_period_can_change_and_be_removed_during_the_run():
    trainer = Trainer([1.0] * 20, lambda batch: batch)
    calls: list[int] = []

    def adapt(t):
        calls.append(t.current_iteration)
        if t.current_iteration == 4:
            handle.every = 5  # from the next iteration on: 5, 10, 15
        if t.current_iteration == 15:
            handle.remove()

    handle = trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED.every(2), adapt)
    assert handle.every == 2 and repr(handle).startswith("<EventHandle TRAINING_ITERATION_COMPLETED.every(2)")
    trainer.run(1)
    assert calls == [2, 4, 5, 10, 15]


def test_the_count_continues_from_a_loaded_state():
    first = Trainer([1.0] * 7, lambda batch: batch)
    first.run(1)
    resumed = Trainer([1.0] * 7, lambda batch: batch)
    resumed.load_state_dict(first.state_dict())
    calls: list[int] = []
    resumed.add_event_handler(E.TRAINING_ITERATION_COMPLETED.every(3), lambda t: calls.append(t.current_iteration))
    resumed.run(2)  # epoch 2: iterations 8..14
    assert calls == [9, 12]
    # Back to an earlier state, with the handler attached at iteration 14: due at 15 before.
    calls.clear()
    resumed.load_state_dict(first.state_dict())
    resumed.run(2)
    assert calls == [9, 12]


def test_the_profiler_reports_filtered_handlers_by_name():
    def every_fourth(trainer):
        pass

    trainer = Trainer([1.0] * 8, lambda batch: batch, profile=True)
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED.every(4), every_fourth)
    trainer.run(1)
    (row,) = [row for row in trainer.profile_report() if row["name"].endswith("every_fourth")]
    assert row["calls"] == 2 and row["event"] == "TRAINING_ITERATION_COMPLETED"


@pytest.mark.parametrize("n", [0, -1, 2.0, True, None])
def test_every_needs_a_positive_int(n):
    with pytest.raises(ValueError, match=r"TRAINING_ITERATION_COMPLETED.every\(n\): n must be a positive int"):
        E.TRAINING_ITERATION_COMPLETED.every(n)


@pytest.mark.parametrize("event", [E.TRAINING_STARTED, E.TRAINING_COMPLETED, E.EXCEPTION_RAISED, E.VALIDATION_ITERATION_COMPLETED])
def test_events_without_a_counter_cannot_be_filtered(event):
    with pytest.raises(ValueError, match=rf"{event.name}.every\(n\): only the training-iteration events"):
        event.every(2)


def test_setting_a_bad_period_on_a_handle_is_refused_and_changes_nothing():
    trainer = Trainer([1.0], lambda batch: batch)
    handle = trainer.add_event_handler(E.EPOCH_COMPLETED.every(2), lambda t: None)
    with pytest.raises(ValueError, match="must be a positive int"):
        handle.every = 0
    assert handle.every == 2 and E.EPOCH_COMPLETED.every(2) == PeriodicEvent(E.EPOCH_COMPLETED, 2)
