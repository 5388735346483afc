"""Event order, terminate(), exceptions, and the order of handlers and plugin hooks."""

from __future__ import annotations

import pytest
import torch

from ignite import Trainer, TrainingEvents, hookimpl

E = TrainingEvents


def recorded_run(training_data, validation_data=None, max_epochs=1, setup=None):
    log: list[str] = []
    trainer = Trainer(
        training_data,
        lambda batch: float(batch),
        validation_data=validation_data,
        validation_update_function=(lambda batch: float(batch)) if validation_data is not None else None,
    )
    for event in E:
        if event is E.EXCEPTION_RAISED:
            trainer.add_event_handler(event, lambda t, exc, _e=event: log.append(_e.name))
        else:
            trainer.add_event_handler(event, lambda t, _e=event: log.append(_e.name))
    if setup is not None:
        setup(trainer, log)
    error = None
    try:
        trainer.run(max_epochs)
    except BaseException as caught:
        error = caught
    return trainer, log, error


def epoch_events(train_batches: int, valid_batches: int | None) -> list[str]:
    names = ["EPOCH_STARTED", "TRAINING_EPOCH_STARTED"]
    names += ["TRAINING_ITERATION_STARTED", "TRAINING_ITERATION_COMPLETED"] * train_batches
    names += ["TRAINING_EPOCH_COMPLETED"]
    if valid_batches is not None:
        names += ["VALIDATION_STARTING"]
        names += ["VALIDATION_ITERATION_STARTED", "VALIDATION_ITERATION_COMPLETED"] * valid_batches
        names += ["VALIDATION_COMPLETED"]
    return [*names, "EPOCH_COMPLETED"]


def test_full_order_with_validation():
    trainer, log, error = recorded_run([1, 2], validation_data=[3], max_epochs=2)
    assert error is None
    assert log == ["TRAINING_STARTED", *epoch_events(2, 1), *epoch_events(2, 1), "TRAINING_COMPLETED"]
    assert list(trainer.training_history) == [1.0, 2.0, 1.0, 2.0]
    assert trainer.validation_history.num_runs == 2
    assert trainer.current_epoch == 2 and trainer.current_iteration == 4 == trainer.current_iterations


def test_no_validation_data_fires_no_validation_events():
    _, log, error = recorded_run([1, 2, 3])
    assert error is None
    assert log == ["TRAINING_STARTED", *epoch_events(3, None), "TRAINING_COMPLETED"]


def test_empty_validation_data_still_opens_and_closes_the_run():
    trainer, log, error = recorded_run([1], validation_data=[])
    assert error is None
    assert log == ["TRAINING_STARTED", *epoch_events(1, 0), "TRAINING_COMPLETED"]
    assert trainer.validation_history.run() == [] and trainer.validation_history.run_mean() is None


def test_counters_during_events():
    seen = []
    trainer = Trainer([10, 20], lambda b: b)
    trainer.add_event_handler(E.EPOCH_STARTED, lambda t: seen.append(("epoch", t.current_epoch)))
    trainer.add_event_handler(
        E.TRAINING_ITERATION_STARTED, lambda t: seen.append(("it", t.current_iteration, len(t.training_history)))
    )
    trainer.add_event_handler(
        E.TRAINING_ITERATION_COMPLETED, lambda t: seen.append(("done", t.current_iteration, t.training_history[-1]))
    )
    trainer.run(1)
    assert seen == [("epoch", 1), ("it", 1, 0), ("done", 1, 10), ("it", 2, 1), ("done", 2, 20)]


@pytest.mark.parametrize(
    "event, expected_tail",
    [
        (E.TRAINING_STARTED, ["TRAINING_STARTED", "TRAINING_COMPLETED"]),
        (E.EPOCH_STARTED, ["EPOCH_STARTED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"]),
        (
            E.TRAINING_EPOCH_STARTED,
            ["TRAINING_EPOCH_STARTED", "TRAINING_EPOCH_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"],
        ),
        (
            E.TRAINING_ITERATION_STARTED,
            [
                "TRAINING_ITERATION_STARTED",
                "TRAINING_ITERATION_COMPLETED",
                "TRAINING_EPOCH_COMPLETED",
                "EPOCH_COMPLETED",
                "TRAINING_COMPLETED",
            ],
        ),
        (
            E.TRAINING_ITERATION_COMPLETED,
            ["TRAINING_ITERATION_COMPLETED", "TRAINING_EPOCH_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"],
        ),
        (E.TRAINING_EPOCH_COMPLETED, ["TRAINING_EPOCH_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"]),
        (E.VALIDATION_STARTING, ["VALIDATION_STARTING", "VALIDATION_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"]),
        (
            E.VALIDATION_ITERATION_STARTED,
            [
                "VALIDATION_ITERATION_STARTED",
                "VALIDATION_ITERATION_COMPLETED",
                "VALIDATION_COMPLETED",
                "EPOCH_COMPLETED",
                "TRAINING_COMPLETED",
            ],
        ),
        (
            E.VALIDATION_ITERATION_COMPLETED,
            ["VALIDATION_ITERATION_COMPLETED", "VALIDATION_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"],
        ),
        (E.VALIDATION_COMPLETED, ["VALIDATION_COMPLETED", "EPOCH_COMPLETED", "TRAINING_COMPLETED"]),
        (E.EPOCH_COMPLETED, ["EPOCH_COMPLETED", "TRAINING_COMPLETED"]),
    ],
)
def test_terminate_from_each_event(event, expected_tail):
    def setup(trainer, log):
        trainer.add_event_handler(event, lambda t, *a: t.terminate())

    trainer, log, error = recorded_run([1, 2], validation_data=[3, 4], max_epochs=3, setup=setup)
    assert error is None
    first = log.index(event.name)
    assert log[first:] == expected_tail
    assert "EXCEPTION_RAISED" not in log
    assert trainer.current_epoch <= 1


def test_terminate_stops_after_the_current_iteration():
    trainer = Trainer(list(range(10)), lambda b: b)
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 3 else None)
    trainer.run(5)
    assert list(trainer.training_history) == [0, 1, 2] and trainer.current_epoch == 1


def test_a_new_run_after_terminate_continues():
    trainer = Trainer([1, 2], lambda b: b)
    handle = trainer.add_event_handler(E.EPOCH_COMPLETED, lambda t: t.terminate())
    trainer.run(3)
    assert trainer.current_epoch == 1
    handle.remove()
    trainer.run(3)
    assert trainer.current_epoch == 3 and len(trainer.training_history) == 6


class Boom(Exception):
    pass


def test_exception_in_update_function():
    def update(batch):
        if batch == 2:
            raise Boom("bad batch")
        return batch

    seen = []
    trainer = Trainer([1, 2, 3], update)
    trainer.add_event_handler(E.EXCEPTION_RAISED, lambda t, exc: seen.append(exc))
    trainer.add_event_handler(E.TRAINING_COMPLETED, lambda t: seen.append("completed"))
    with pytest.raises(Boom, match="bad batch") as info:
        trainer.run(1)
    assert seen == [info.value]
    assert list(trainer.training_history) == [1]


def test_exception_in_handler_fires_exception_raised_once_and_propagates_unchanged():
    def setup(trainer, log):
        def fail(t):
            raise Boom("handler failed")

        trainer.add_event_handler(E.EPOCH_COMPLETED, fail)

    _, log, error = recorded_run([1], validation_data=[2], max_epochs=2, setup=setup)
    assert isinstance(error, Boom) and str(error) == "handler failed"
    assert log.count("EXCEPTION_RAISED") == 1 and log[-1] == "EXCEPTION_RAISED"
    assert "TRAINING_COMPLETED" not in log and log.count("EPOCH_STARTED") == 1


def test_exception_in_plugin_hook_carries_a_note_naming_plugin_and_hook():
    class Faulty:
        @hookimpl
        def ignite_training_epoch_completed(self, trainer):
            raise Boom("plugin failed")

    seen = []
    trainer = Trainer([1], lambda b: b)
    trainer.register_plugin(Faulty(), name="faulty")
    trainer.add_event_handler(E.EXCEPTION_RAISED, lambda t, exc: seen.append(exc))
    with pytest.raises(Boom) as info:
        trainer.run(1)
    assert seen == [info.value]
    assert info.value.__notes__ == ["raised in hook ignite_training_epoch_completed of plugin 'faulty' from registered in code"]


def test_keyboard_interrupt_goes_the_same_way():
    def update(batch):
        raise KeyboardInterrupt

    seen = []
    trainer = Trainer([1], update)
    trainer.add_event_handler(E.EXCEPTION_RAISED, lambda t, exc: seen.append(type(exc)))
    with pytest.raises(KeyboardInterrupt):
        trainer.run(1)
    assert seen == [KeyboardInterrupt]


def test_exception_in_exception_handler_propagates_with_context():
    def update(batch):
        raise Boom("first")

    def bad_handler(trainer, exception):
        raise RuntimeError("second")

    trainer = Trainer([1], update)
    trainer.add_event_handler(E.EXCEPTION_RAISED, bad_handler)
    with pytest.raises(RuntimeError, match="second") as info:
        trainer.run(1)
    assert isinstance(info.value.__context__, Boom)


def test_a_failing_exception_handler_does_not_stop_the_others(recording_plugin):
    def update(batch):
        raise Boom("first")

    def bad_handler(trainer, exception):
        raise RuntimeError("second")

    log: list[str] = []
    trainer = Trainer([1], update)
    trainer.register_plugin(recording_plugin(log, "plugin"), name="closer")
    trainer.add_event_handler(E.EXCEPTION_RAISED, bad_handler)
    trainer.add_event_handler(E.EXCEPTION_RAISED, lambda t, exc: log.append("handler:EXCEPTION_RAISED"))
    trainer.add_event_handler(E.EXCEPTION_RAISED, lambda t, exc: 1 / 0)
    with pytest.raises(RuntimeError, match="second") as info:
        trainer.run(1)
    assert isinstance(info.value.__context__, Boom)
    assert log[-2:] == ["handler:EXCEPTION_RAISED", "plugin:EXCEPTION_RAISED"]
    assert any("ZeroDivisionError" in note for note in info.value.__notes__)


def test_plugins_wrap_handlers_and_handlers_run_in_order_added(recording_plugin):
    log: list[str] = []
    trainer = Trainer([1], lambda b: b, validation_data=[1], validation_update_function=lambda b: b)
    trainer.register_plugin(recording_plugin(log, "plugin"), name="recorder")
    for event in E:
        for label in ("h1", "h2"):
            if event is not E.EXCEPTION_RAISED:
                trainer.add_event_handler(event, lambda t, _l=label, _e=event: log.append(f"{_l}:{_e.name}"))
    trainer.run(1)
    for event in E:
        if event is E.EXCEPTION_RAISED:
            continue
        mine = [entry.split(":")[0] for entry in log if entry.endswith(":" + event.name)]
        expected = ["plugin", "h1", "h2"] if event.opens_scope else ["h1", "h2", "plugin"]
        assert mine == expected, event


def test_handler_extra_arguments_and_removal():
    calls = []
    trainer = Trainer([1, 2], lambda b: b)

    def handler(trainer, a, b=0):
        calls.append((trainer.current_iteration, a, b))

    handle = trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, handler, "x", b=5)
    trainer.add_event_handler(
        E.TRAINING_ITERATION_COMPLETED, lambda t: handle.remove() if t.current_iteration == 1 else None
    )
    trainer.run(2)
    # Removed during iteration 1, after it ran: not called again.
    assert calls == [(1, "x", 5)]
    handle.remove()  # twice is harmless


def test_update_output_tensor_with_graph_is_stored_without_graph():
    weight = torch.ones(3, requires_grad=True)

    def update(batch):
        loss = (weight * batch).sum()
        return loss, {"vec": weight * 2}

    trainer = Trainer([torch.ones(3)], update)
    trainer.run(1)
    loss, extra = trainer.training_history[-1]
    assert loss == 3.0 and type(loss) is float
    assert isinstance(extra["vec"], torch.Tensor) and not extra["vec"].requires_grad and extra["vec"].grad_fn is None


def test_tryfirst_trylast_and_wrappers_still_order_plugin_hooks():
    log: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def ignite_epoch_completed(self, trainer):
            log.append("first")

    class Plain:
        @hookimpl
        def ignite_epoch_completed(self):  # a hook may take a subset of its spec's arguments
            log.append("plain")

    class Last:
        @hookimpl(trylast=True)
        def ignite_epoch_completed(self, trainer):
            log.append("last")

    class Wrapper:
        @hookimpl(wrapper=True)
        def ignite_epoch_completed(self, trainer):
            log.append("wrap-in")
            yield
            log.append("wrap-out")

    trainer = Trainer([1], lambda b: b)
    for plugin in (Last(), First(), Plain()):
        trainer.register_plugin(plugin)
    trainer.run(1)
    assert log == ["first", "plain", "last"]
    log.clear()
    trainer.register_plugin(Wrapper())
    trainer.run(2)
    assert log == ["wrap-in", "first", "plain", "last", "wrap-out"]


def test_exception_in_exception_raised_hook_is_noted():
    class Closer:
        @hookimpl
        def ignite_exception_raised(self, trainer, exception):
            raise RuntimeError("close failed")

    def update(batch):
        raise Boom("first")

    trainer = Trainer([1], update)
    trainer.register_plugin(Closer(), name="closer")
    with pytest.raises(RuntimeError) as info:
        trainer.run(1)
    assert isinstance(info.value.__context__, Boom)
    assert info.value.__notes__ == ["raised in hook ignite_exception_raised of plugin 'closer' from registered in code"]


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), torch.tensor([1.0, float("nan")]), (1.0, {"loss": float("-inf")})],
    ids=["nan", "inf", "tensor", "nested"],
)
def test_terminate_on_nan_stops_cleanly_naming_iteration_and_value(bad, caplog):
    outputs = [1.0, 2.0, bad, 4.0, 5.0]
    seen = []
    trainer = Trainer(list(range(5)), lambda i: outputs[i], terminate_on_nan=True)
    trainer.add_event_handler(E.TRAINING_COMPLETED, lambda t: seen.append("completed"))
    trainer.run(2)
    assert len(trainer.training_history) == 3 and seen == ["completed"]
    assert any(
        record.levelname == "WARNING" and "iteration 3 (epoch 1) is not finite" in record.getMessage()
        for record in caplog.records
    )


def test_finite_outputs_are_not_stopped_and_guard_is_off_by_default():
    guarded = Trainer([1.0, torch.tensor(2.0), (3.0, "x")], lambda b: b, terminate_on_nan=True)
    guarded.run(2)
    assert len(guarded.training_history) == 6
    unguarded = Trainer([float("nan")], lambda b: b)
    unguarded.run(2)
    assert len(unguarded.training_history) == 2


def test_profile_reports_each_handler_hook_and_update_function(caplog):
    class Slowish:
        @hookimpl
        def ignite_training_iteration_completed(self, trainer):
            sum(range(1000))

    def on_epoch(trainer):
        pass

    trainer = Trainer([1, 2, 3], lambda b: float(b), validation_data=[1], validation_update_function=float, profile=True)
    trainer.register_plugin(Slowish(), name="slowish")
    trainer.add_event_handler(E.EPOCH_COMPLETED, on_epoch)
    with caplog.at_level("INFO", logger="ignite"):
        trainer.run(2)
    rows = {(row["kind"], row["name"], row["event"]): row for row in trainer.profile_report()}
    assert rows[("plugin", "slowish", "TRAINING_ITERATION_COMPLETED")]["calls"] == 6
    assert rows[("handler", "test_profile_reports_each_handler_hook_and_update_function.<locals>.on_epoch", "EPOCH_COMPLETED")]["calls"] == 2
    assert rows[("update", "training_update_function", "")]["calls"] == 6
    assert rows[("update", "validation_update_function", "")]["calls"] == 2
    assert abs(sum(row["share"] for row in rows.values()) - 1.0) < 1e-6
    assert any("Profile of the run" in message and "slowish" in message for message in caplog.messages)


def test_profile_report_without_profiling_says_how_to_turn_it_on():
    with pytest.raises(RuntimeError, match="profile=True"):
        Trainer([1], lambda b: b).profile_report()


@pytest.mark.parametrize(
    "event, complete",
    [
        (None, True),
        (E.EPOCH_STARTED, False),
        (E.TRAINING_ITERATION_COMPLETED, False),
        (E.TRAINING_EPOCH_COMPLETED, False),  # validation is skipped
        (E.VALIDATION_ITERATION_COMPLETED, False),
        (E.VALIDATION_COMPLETED, True),  # both runs were whole
        (E.EPOCH_COMPLETED, True),
    ],
)
def test_epoch_complete_tells_whether_terminate_cut_the_epoch(event, complete):
    seen = []
    trainer = Trainer([1, 2], lambda b: b, validation_data=[1, 2], validation_update_function=lambda b: b)
    if event is not None:
        trainer.add_event_handler(event, lambda t: t.terminate())
    trainer.add_event_handler(E.EPOCH_COMPLETED, lambda t: seen.append((t.epoch_complete, t.terminating)))
    trainer.run(1)
    assert seen == [(complete, event is not None)]
