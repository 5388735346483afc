"""The plugin contract's declarations: periods (``ignite_every``, ``Trainer.set_period``) and
order among plugins (``ignite_phase``, ``ignite_after``, ``ignite_before``)."""

from __future__ import annotations

import io
import itertools
import json

import pytest
import torch

from ignite import PluginError, Trainer, TrainingEvents, hookimpl
from ignite._cli import main

E = TrainingEvents
ITERATION = "ignite_training_iteration_completed"


class Every:
    """Records its iteration hook, declared every ``n`` iterations, and its epoch hook."""

    def __init__(self, log: list, n: int | None, epochs: int | None = 1, name: str = "every") -> None:
        self.log, self.n, self.epochs, self.name = log, n, epochs, name

    def ignite_every(self) -> dict[str, int | None]:
        return {ITERATION: self.n, "ignite_epoch_completed": self.epochs}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer):
        self.log.append((self.name, trainer.current_iteration))

    @hookimpl
    def ignite_epoch_completed(self, trainer):
        self.log.append((self.name + " epoch", trainer.current_epoch))


# -- periods ------------------------------------------------------------------------------


def test_a_periodic_hook_runs_on_multiples_only_and_after_the_handlers():
    log: list = []
    trainer = Trainer([1.0] * 4, lambda batch: batch)
    trainer.register_plugin(Every(log, 3, epochs=2), name="every")
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED.every(3), lambda t: log.append(("handler/3", t.current_iteration)))
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, lambda t: log.append(("handler", t.current_iteration)) if t.current_iteration % 3 == 0 else None)
    trainer.run(4)  # iterations 1..16, epochs 1..4
    assert log == [
        ("handler/3", 3), ("handler", 3), ("every", 3),
        ("handler/3", 6), ("handler", 6), ("every", 6),
        ("every epoch", 2),  # after iteration 8
        ("handler/3", 9), ("handler", 9), ("every", 9),
        ("handler/3", 12), ("handler", 12), ("every", 12),
        ("handler/3", 15), ("handler", 15), ("every", 15),
        ("every epoch", 4),
    ]


def test_a_periodic_hook_is_profiled_as_its_plugin_with_the_calls_made():
    trainer = Trainer([1.0] * 10, lambda batch: batch, profile=True)
    trainer.register_plugin(Every([], 4, epochs=None), name="every")
    trainer.run(1)
    rows = [row for row in trainer.profile_report() if row["event"] == "TRAINING_ITERATION_COMPLETED"]
    assert [(row["kind"], row["name"], row["calls"]) for row in rows] == [("plugin", "every", 2)]


def test_an_exception_in_a_periodic_hook_names_the_plugin():
    class Failing(Every):
        @hookimpl
        def ignite_training_iteration_completed(self, trainer):
            raise RuntimeError("log failed")

    trainer = Trainer([1.0] * 5, lambda batch: batch)
    trainer.register_plugin(Failing([], 2), name="failing")
    with pytest.raises(RuntimeError) as info:
        trainer.run(1)
    assert trainer.current_iteration == 2
    assert info.value.__notes__ == [f"raised in hook {ITERATION} of plugin 'failing' from registered in code"]


def test_a_hook_declared_off_is_not_registered_nor_listed(make_distribution, capsys):
    log: list = []
    trainer = Trainer([1.0] * 3, lambda batch: batch, profile=True)
    trainer.register_plugin(Every(log, None, epochs=0), name="off")
    trainer.run(2)
    assert log == []
    assert not any(row["kind"] == "plugin" for row in trainer.profile_report())
    make_distribution(
        "ignite-periodic",
        "1.0",
        {"periodic": "periodic_mod:Plugin"},
        "periodic_mod",
        "from ignite import hookimpl\n"
        "class Plugin:\n"
        "    ignite_phase = 'decide'\n"
        "    def __init__(self, log_every=50, epochs=None):\n"
        "        self.log_every, self.epochs = log_every, epochs\n"
        "    def ignite_every(self):\n"
        "        return {'ignite_training_iteration_completed': self.log_every, 'ignite_epoch_completed': self.epochs}\n"
        "    @hookimpl\n"
        "    def ignite_training_iteration_completed(self, trainer): pass\n"
        "    @hookimpl\n"
        "    def ignite_epoch_completed(self, trainer): pass\n",
    )
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert f"hooks:  {ITERATION} every 50\n" in text
    assert "phase:  decide" in text
    assert "TRAINING_ITERATION_COMPLETED    periodic (every 50)  (after handlers)" in text
    assert "EPOCH_COMPLETED" not in text  # epochs=None: not registered
    assert main(["plugins", "--json"]) == 0
    record = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "periodic")
    assert record["hooks"] == [ITERATION] and record["periods"] == {ITERATION: 50} and record["phase"] == "decide"


def test_set_period_changes_and_pauses_a_periodic_hook_from_the_next_iteration():
    log: list = []
    plugin = Every(log, 1, epochs=None)
    trainer = Trainer([1.0] * 12, lambda batch: batch)
    trainer.register_plugin(plugin, name="every")

    def adapt(trainer):
        if trainer.current_iteration == 2:
            trainer.set_period(plugin, ITERATION, 5)
        elif trainer.current_iteration == 5:
            trainer.set_period("every", ITERATION, None)

    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, adapt)
    trainer.run(1)
    assert log == [("every", 1), ("every", 2), ("every", 5)]


def test_set_period_errors_name_the_fix():
    trainer = Trainer([1.0], lambda batch: batch)
    trainer.register_plugin(Every([], 2, epochs=None), name="every")
    with pytest.raises(ValueError, match="no active plugin 'nope'"):
        trainer.set_period("nope", ITERATION, 2)
    with pytest.raises(ValueError, match="has no period; the hooks that can have one"):
        trainer.set_period("every", "ignite_training_started", 2)
    with pytest.raises(ValueError, match=r"has no ignite_epoch_completed registered .* declare a period there"):
        trainer.set_period("every", "ignite_epoch_completed", 2)
    with pytest.raises(ValueError, match="n must be a positive int"):
        trainer.set_period("every", ITERATION, 0)


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ({"ignite_training_iteration_complete": 2}, "not an ignite hook. Did you mean 'ignite_training_iteration_completed'"),
        ({"ignite_validation_iteration_completed": 2}, "whose event has no counter"),
        ({"ignite_training_started": 2}, "whose event has no counter"),
        ({ITERATION: -1}, "must be a positive int"),
        ({ITERATION: 2.5}, "must be a positive int"),
    ],
)
def test_a_bad_period_declaration_is_refused_at_registration(periods, message):
    class Bad:
        def ignite_every(self):
            return periods

        @hookimpl
        def ignite_training_iteration_completed(self, trainer):
            pass

    trainer = Trainer([1.0], lambda batch: batch)
    with pytest.raises(PluginError, match=message) as info:
        trainer.register_plugin(Bad(), name="bad")
    assert "Plugin 'bad'" in str(info.value)
    assert "bad" not in trainer.plugins


def test_a_period_for_a_hook_not_implemented_is_refused():
    class Bad:
        def ignite_every(self):
            return {"ignite_epoch_completed": 2}

    with pytest.raises(PluginError, match="which it does not implement with @hookimpl"):
        Trainer([1.0], lambda batch: batch).register_plugin(Bad(), name="bad")


# -- order among plugins --------------------------------------------------------------------


def _phased(name: str, log: list, phase: str | None = None, after: tuple = (), before: tuple = (), every: int = 1):
    attributes: dict = {"ignite_after": after, "ignite_before": before}
    if phase is not None:
        attributes["ignite_phase"] = phase

    def ignite_every(self):
        return {ITERATION: every}

    def iteration(self, trainer):
        log.append((name, "iteration", trainer.current_iteration))

    def started(self, trainer):
        log.append((name, "epoch started"))

    def completed(self, trainer):
        log.append((name, "epoch completed"))

    attributes.update(
        ignite_every=ignite_every,
        ignite_training_iteration_completed=hookimpl(iteration),
        ignite_epoch_started=hookimpl(started),
        ignite_epoch_completed=hookimpl(completed),
    )
    return type(name, (), attributes)()


def _run_registered(order: tuple[str, ...]) -> list:
    log: list = []
    declared = {
        "checkpoint": dict(phase="checkpoint", every=2),
        "zlogger": dict(phase="log"),
        "alogger": dict(phase="log", after=("zlogger",)),  # declared, it runs after zlogger
        "undeclared": dict(),  # the default phase: log
        "stopper": dict(phase="decide"),
        "metric": dict(phase="observe", every=2),
        "reducer": dict(phase="decide", before=("stopper",), after=("not_installed",)),
    }
    trainer = Trainer([1.0, 2.0], lambda batch: batch)
    for name in order:
        trainer.register_plugin(_phased(name, log, **declared[name]), name=name)
    trainer.add_event_handler(E.EPOCH_STARTED, lambda t: log.append(("handler", "epoch started")))
    trainer.add_event_handler(E.EPOCH_COMPLETED, lambda t: log.append(("handler", "epoch completed")))
    trainer.run(1)
    return log


def test_plugins_registered_in_any_order_run_in_the_declared_order():
    names = ("checkpoint", "zlogger", "alogger", "undeclared", "stopper", "metric", "reducer")
    first = _run_registered(names)
    phase_order = ["metric", "reducer", "stopper", "undeclared", "zlogger", "alogger", "checkpoint"]
    every_iteration = [name for name in phase_order if name not in ("metric", "checkpoint")]
    assert first == [
        *[(name, "epoch started") for name in phase_order],
        ("handler", "epoch started"),  # plugins wrap handlers: after their hooks at *_STARTED
        *[(name, "iteration", 1) for name in every_iteration],
        *[(name, "iteration", 2) for name in phase_order],
        ("handler", "epoch completed"),
        *[(name, "epoch completed") for name in phase_order],
    ]
    rng = itertools.permutations(names)
    for order in itertools.islice(rng, 0, 5040, 397):  # 13 of the 5040 orders, spread out
        assert _run_registered(order) == first, order


def test_a_cycle_is_refused_naming_both_plugins_and_the_trainer_keeps_the_first():
    log: list = []
    trainer = Trainer([1.0], lambda batch: batch)
    trainer.register_plugin(_phased("one", log, after=("two",)), name="one")
    with pytest.raises(PluginError, match=r"Plugins 'one', 'two' declare a cycle of ignite_after/ignite_before"):
        trainer.register_plugin(_phased("two", log, after=("one",)), name="two")
    assert list(trainer.plugins) == ["one"]
    trainer.run(1)
    assert log == [("one", "epoch started"), ("one", "iteration", 1), ("one", "epoch completed")]


def test_a_cycle_between_plugins_sharing_no_hook_is_refused_too():
    class A:
        ignite_before = ("b",)

        @hookimpl
        def ignite_training_started(self):
            pass

    class B:
        ignite_before = ("a",)

    trainer = Trainer([1.0], lambda batch: batch)
    trainer.register_plugin(A(), name="a")
    with pytest.raises(PluginError, match="'a', 'b' declare a cycle"):
        trainer.register_plugin(B(), name="b")


def test_a_declaration_against_the_phases_is_refused_naming_both():
    trainer = Trainer([1.0], lambda batch: batch)
    trainer.register_plugin(_phased("stopper", [], phase="decide"), name="stopper")
    with pytest.raises(PluginError) as info:
        trainer.register_plugin(_phased("saver", [], phase="checkpoint", before=("stopper",)), name="saver")
    message = str(info.value)
    assert "Plugins 'saver' and 'stopper' contradict each other" in message
    assert "'saver' is in phase 'checkpoint' and 'stopper' in phase 'decide'" in message
    assert "Remove that declaration, or change ignite_phase" in message
    assert list(trainer.plugins) == ["stopper"]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"ignite_phase": "logging"}, "declares ignite_phase = 'logging'; the phases are 'observe', 'decide', 'log', 'checkpoint'"),
        ({"ignite_after": "stopper"}, r"declares ignite_after = 'stopper': it must be a tuple of plugin names, e.g. \('stopper',\)"),
    ],
)
def test_a_bad_order_declaration_is_refused(attributes, message):
    plugin = type("Bad", (), {**attributes, "ignite_epoch_completed": hookimpl(lambda self: None)})()
    with pytest.raises(PluginError, match=message):
        Trainer([1.0], lambda batch: batch).register_plugin(plugin, name="bad")


def test_with_a_wrapper_pluggy_orders_the_event_and_periods_still_apply():
    log: list = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def ignite_training_iteration_completed(self, trainer):
            log.append(("wrap-in", trainer.current_iteration))
            yield
            log.append(("wrap-out", trainer.current_iteration))

    trainer = Trainer([1.0, 2.0], lambda batch: batch)
    # Registered so that pluggy's order (the last registered first) is not the declared one:
    # wrappers need pluggy's machinery, which takes no order from outside.
    for name, declared in [("stopper", dict(phase="decide")), ("saver", dict(phase="checkpoint", every=2)), ("wrapper", None)]:
        trainer.register_plugin(Wrapper() if declared is None else _phased(name, log, **declared), name=name)
    trainer.run(1)
    iterations = [entry for entry in log if len(entry) != 2 or entry[0].startswith("wrap")]
    assert iterations == [
        ("wrap-in", 1), ("stopper", "iteration", 1), ("wrap-out", 1),
        ("wrap-in", 2), ("saver", "iteration", 2), ("stopper", "iteration", 2), ("wrap-out", 2),
    ]


def test_a_failing_exception_hook_does_not_stop_another_plugins():
    closed = []

    class Failing:
        @hookimpl
        def ignite_exception_raised(self, exception):
            raise RuntimeError("cannot close")

    class Closing:
        @hookimpl
        def ignite_exception_raised(self, trainer):
            closed.append(trainer.current_iteration)

    def update(batch):
        raise ValueError("boom")

    trainer = Trainer([1.0], update)
    trainer.register_plugin(Closing(), name="z_closing")  # called after the failing one (same phase: by name)
    trainer.register_plugin(Failing(), name="a_failing")
    with pytest.raises(RuntimeError, match="cannot close") as raised:
        trainer.run(1)
    assert closed == [1] and isinstance(raised.value.__context__, ValueError)
    assert any("plugin 'a_failing'" in note for note in raised.value.__notes__)


# -- the standard plugins ---------------------------------------------------------------------


def test_the_checkpoint_saves_what_the_controllers_decided_whatever_the_registration_order(tmp_path):
    early_stopping = pytest.importorskip("ignite_early_stopping")
    lr_reduction = pytest.importorskip("ignite_lr_reduction")
    checkpoint = pytest.importorskip("ignite_checkpoint")
    saved = {}
    for order in itertools.permutations(("early_stopping", "lr_reduction", "checkpoint")):
        weight = torch.nn.Parameter(torch.zeros(()))
        optimizer = torch.optim.SGD([weight], lr=1.0)
        folder = tmp_path / "-".join(order)
        plugins = {
            "early_stopping": early_stopping.EarlyStopping(patience=3, score_function=lambda t: 1.0),
            "lr_reduction": lr_reduction.LRReduction(optimizer=optimizer, patience=0, factor=0.5, score_function=lambda t: 1.0),
            "checkpoint": checkpoint.Checkpoint(dir=str(folder), objects={"optimizer": optimizer}, keep=None),
        }
        trainer = Trainer([1.0], lambda batch: batch)
        for name in order:
            trainer.register_plugin(plugins[name], name=name)
        trainer.run(4)  # a constant score: stops after epoch 4 (3 without improvement)
        assert trainer.current_epoch == 4
        rows = []
        for path in checkpoint.list_checkpoints(str(folder)):
            state = checkpoint.load_checkpoint(path)
            rows.append(
                (state["trainer"]["plugins"]["early_stopping"]["counter"], state["objects"]["optimizer"]["param_groups"][0]["lr"])
            )
        saved[order] = rows
    # Each epoch's checkpoint holds that epoch's decisions (counter and learning rate).
    assert set(map(tuple, saved.values())) == {((0, 1.0), (1, 0.5), (2, 0.25), (3, 0.125))}


def test_standard_periodic_work_is_profiled_as_plugin_hooks_after_the_handlers(tmp_path):
    tensorboard = pytest.importorskip("ignite_tensorboard")
    progress = pytest.importorskip("ignite_progress")
    trainer = Trainer([1.0] * 8, lambda batch: batch, profile=True)
    logger = trainer.register_plugin(tensorboard.TensorBoardLogger(dir=str(tmp_path), every_iterations=4), name="tensorboard")
    trainer.register_plugin(progress.ProgressBar(file=io.StringIO(), disable=False), name="progress")
    seen: list = []

    def watch(trainer):
        seen.append(len(logger._pending))

    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, watch)
    trainer.run(2)
    rows = {
        (row["kind"], row["name"]): row["calls"]
        for row in trainer.profile_report()
        if row["event"] == "TRAINING_ITERATION_COMPLETED"
    }
    assert rows[("plugin", "tensorboard")] == 4  # iterations 4, 8, 12, 16
    assert ("plugin", "progress") in rows
    # The only handler is the test's: no plugin work is profiled as a handler any more.
    assert [(kind, calls) for (kind, name), calls in rows.items() if kind != "plugin"] == [("handler", 16)]
    # The handler runs before the plugin: at iteration 4 it still sees nothing pending.
    assert seen[:5] == [0, 0, 0, 0, 1]


def test_an_exception_in_tensorboards_periodic_hook_names_it(tmp_path):
    tensorboard = pytest.importorskip("ignite_tensorboard")
    trainer = Trainer([1.0] * 4, lambda batch: batch)
    logger = trainer.register_plugin(tensorboard.TensorBoardLogger(dir=str(tmp_path), every_iterations=2), name="tensorboard")
    trainer.add_event_handler(E.TRAINING_STARTED, lambda t: setattr(logger, "_pending", None))
    with pytest.raises(AttributeError) as info:
        trainer.run(1)
    assert trainer.current_iteration == 2
    assert info.value.__notes__ == [
        "raised in hook ignite_training_iteration_completed of plugin 'tensorboard' from registered in code"
    ]
