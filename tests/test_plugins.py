"""Plugin discovery through entry points, options, statuses and the errors that name the culprit.

The distributions here are written as pip leaves them (a .dist-info with entry_points.txt on
sys.path); test_discovery.py builds and pip-installs a real one.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

import pytest

from ignite import PluginError, Trainer, TrainingEvents, hookimpl

COUNTING_PLUGIN = """
    from ignite import hookimpl

    class Counting:
        instances = 0

        def __init__(self, step: int = 1, label: str = "x"):
            Counting.instances += 1
            self.step = step
            self.epochs = 0

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            self.epochs += self.step
"""


def trainer(**kwargs) -> Trainer:
    return Trainer([1, 2], lambda b: b, **kwargs)


def test_class_plugin_is_discovered_instantiated_per_trainer_with_options(make_distribution, caplog):
    make_distribution("ignite-counting", "1.2.3", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    first = trainer(plugins={"counting": {"step": 10}})
    second = trainer()
    with caplog.at_level(logging.INFO, logger="ignite"):
        first.run(2)
    second.run(1)
    assert first.plugins["counting"].epochs == 20 and second.plugins["counting"].epochs == 1
    assert first.plugins["counting"] is not second.plugins["counting"]
    assert "Active plugins: counting (ignite-counting 1.2.3)" in caplog.messages


def test_module_plugin_is_registered_as_is(make_distribution):
    make_distribution(
        "ignite-modplug",
        "0.1",
        {"modplug": "modplug"},
        "modplug",
        """
        from ignite import hookimpl
        seen = []

        @hookimpl
        def ignite_training_completed(trainer):
            seen.append(trainer.current_epoch)
        """,
    )
    t = trainer()
    t.run(3)
    assert t.plugins["modplug"].seen == [3]
    with pytest.raises(PluginError, match=r"'modplug' .*takes no options \(it is a module"):
        trainer(plugins={"modplug": {"a": 1}})


def test_unknown_plugin_name_lists_installed_ones(make_distribution):
    make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    with pytest.raises(PluginError) as info:
        trainer(plugins={"countin": {}})
    message = str(info.value)
    assert "unknown plugin 'countin'" in message and "Did you mean 'counting'?" in message
    assert "Installed plugins:" in message and "counting" in message


def test_unknown_option_names_plugin_and_its_options(make_distribution):
    make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    with pytest.raises(PluginError) as info:
        trainer(plugins={"counting": {"stpe": 2}})
    message = str(info.value)
    assert "Plugin 'counting'" in message and "ignite-counting 1.0" in message
    assert "has no option 'stpe'. Did you mean 'step'? Its options: step, label" in message


def test_a_former_option_name_points_to_the_one_vocabulary(make_distribution):
    source = "class Logger:\n    def __init__(self, dir=None, every_iterations=1):\n        pass\n"
    make_distribution("ignite-vocab", "1.0", {"vocab": "vocab_mod:Logger"}, "vocab_mod", source)
    with pytest.raises(PluginError) as info:
        trainer(plugins={"vocab": {"log_every": 5}})
    message = str(info.value)
    assert "has no option 'log_every'. Did you mean 'every_iterations'?" in message
    assert "'log_every' was renamed in 0.1" in message and "a period is 'every_iterations'" in message
    with pytest.raises(PluginError, match=r"has no option 'dirname'. Did you mean 'dir'\?"):
        trainer(plugins={"vocab": {"dirname": "out"}})


def test_import_failure_names_entry_point_distribution_version_cause_and_remedy(make_distribution):
    make_distribution("ignite-broken", "0.9", {"broken": "broken_mod:Plugin"}, "broken_mod", "import not_a_module_xyz\n")
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert "Plugin 'broken' (entry point 'broken_mod:Plugin' of ignite-broken 0.9) failed to import" in message
    assert "ModuleNotFoundError: No module named 'not_a_module_xyz'" in message
    assert "plugins={'broken': False}" in message and "IGNITE_DISABLE_PLUGINS=broken" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_construction_failure(make_distribution):
    make_distribution(
        "ignite-ctor",
        "2.0",
        {"ctor": "ctor_mod:Plugin"},
        "ctor_mod",
        """
        class Plugin:
            def __init__(self, level: int = 0):
                raise ValueError("level must be positive")
        """,
    )
    with pytest.raises(PluginError, match=r"'ctor' .*ignite-ctor 2.0.* failed to construct: ValueError: level must be positive"):
        trainer()


def test_blocked_plugins_are_never_imported(make_distribution, monkeypatch):
    make_distribution("ignite-bomb", "1.0", {"bomb": "bomb_mod:Plugin"}, "bomb_mod", "raise RuntimeError('imported!')\n")
    installed = os.environ["IGNITE_DISABLE_PLUGINS"]  # the plugins installed before the test stay out
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", f"{installed},other, bomb")
    trainer().run(1)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", installed)
    trainer(plugins={"bomb": False}).run(1)
    assert "bomb_mod" not in sys.modules
    with pytest.raises(PluginError, match="failed to import: RuntimeError: imported!"):
        trainer()


def test_autoload_off_loads_only_named_plugins(make_distribution, monkeypatch):
    make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "counting" not in trainer().plugins
    assert "counting" in trainer(plugins={"counting": {}}).plugins
    assert "counting" in trainer(plugins={"counting": True}).plugins


def test_inactive_plugin_is_not_registered_and_says_why(make_distribution, caplog):
    make_distribution(
        "ignite-needy",
        "1.0",
        {"needy": "needy_mod:Plugin"},
        "needy_mod",
        """
        from ignite import PluginInactive, hookimpl

        class Plugin:
            def __init__(self, optimizer=None):
                if optimizer is None:
                    raise PluginInactive("needs an optimizer: plugins={'needy': {'optimizer': opt}}")
                self.calls = 0

            @hookimpl
            def ignite_epoch_completed(self, trainer):
                self.calls += 1
        """,
    )
    t = trainer()
    assert "needy" not in t.plugins
    with caplog.at_level(logging.INFO, logger="ignite"):
        t.run(1)
    assert caplog.messages.count(
        "Plugin needy (ignite-needy 1.0) is inactive: needs an optimizer: plugins={'needy': {'optimizer': opt}}"
    ) == 1
    active = trainer(plugins={"needy": {"optimizer": object()}})
    active.run(2)
    assert active.plugins["needy"].calls == 2


def test_hookimpl_with_argument_not_in_spec_is_refused(make_distribution):
    make_distribution(
        "ignite-badargs",
        "1.0",
        {"badargs": "badargs_mod:Plugin"},
        "badargs_mod",
        """
        from ignite import hookimpl

        class Plugin:
            @hookimpl
            def ignite_epoch_completed(self, trainer, epoch):
                pass
        """,
    )
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert (
        "Plugin 'badargs' (entry point 'badargs_mod:Plugin' of ignite-badargs 1.0) has a hook that does not match its spec"
        in message
    )
    assert "{'epoch'} are declared in the hookimpl" in message
    assert "plugins={'badargs': False}" in message and "IGNITE_DISABLE_PLUGINS=badargs" in message


def test_unknown_hook_name_is_refused_with_a_suggestion():
    class Typo:
        @hookimpl
        def ignite_epoch_complete(self, trainer):
            pass

    with pytest.raises(PluginError, match=r"implements 'ignite_epoch_complete'.*Did you mean 'ignite_epoch_completed'\?"):
        trainer().register_plugin(Typo(), name="typo")


def test_register_and_unregister_in_house_plugin(recording_plugin):
    log: list[str] = []
    t = trainer()
    plugin = t.register_plugin(recording_plugin(log), name="mine")
    assert t.plugins["mine"] is plugin
    with pytest.raises(PluginError, match="already registered"):
        t.register_plugin(recording_plugin(log), name="mine")
    with pytest.raises(TypeError, match="instance or module"):
        t.register_plugin(type(plugin))
    t.run(1)
    assert "plugin:EPOCH_COMPLETED" in log
    t.unregister_plugin(plugin)
    log.clear()
    t.run(2)
    assert log == [] and "mine" not in t.plugins
    with pytest.raises(ValueError, match="no active plugin 'mine'"):
        t.unregister_plugin("mine")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"training_data": 5}, TypeError, "training_data must be an iterable of batches"),
        ({"training_data": iter([1, 2])}, TypeError, "training_data is an iterator .* re-iterable"),
        ({"training_update_function": "f"}, TypeError, "training_update_function must be callable"),
        ({"validation_data": [1]}, TypeError, "validation_data was given without a validation_update_function"),
        ({"validation_data": 3, "validation_update_function": len}, TypeError, "validation_data must be an iterable"),
        ({"plugins": ["visdom"]}, TypeError, "plugins= must be a dict"),
        ({"plugins": {"visdom": "off"}}, TypeError, r"plugins=\{'visdom': ...\} must be a dict of options"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = {"training_data": [1], "training_update_function": lambda b: b, **kwargs}
    with pytest.raises(error, match=match):
        Trainer(**arguments)


def test_bad_handlers_and_events():
    t = trainer()
    with pytest.raises(TypeError, match=r"event must be a TrainingEvents member.*'epoch_completed'"):
        t.add_event_handler("epoch_completed", lambda t: None)
    with pytest.raises(TypeError, match="handler for EPOCH_COMPLETED must be callable"):
        t.add_event_handler(TrainingEvents.EPOCH_COMPLETED, None)
    with pytest.raises(TypeError, match="cannot be called with the trainer and the extra arguments"):
        t.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda trainer: None, 1)
    with pytest.raises(TypeError, match="with the trainer, the exception"):
        t.add_event_handler(TrainingEvents.EXCEPTION_RAISED, lambda trainer: None)


@pytest.mark.parametrize("max_epochs", [0, -1, 1.5, True, "3"])
def test_bad_max_epochs(max_epochs):
    with pytest.raises(ValueError, match="max_epochs must be an integer of at least 1"):
        trainer().run(max_epochs)


def test_training_data_that_yields_nothing():
    seen = []
    t = Trainer([], lambda b: b)
    t.add_event_handler(TrainingEvents.EXCEPTION_RAISED, lambda t, exc: seen.append(exc))
    with pytest.raises(ValueError, match="training_data yielded no batches in epoch 1"):
        t.run(1)
    assert len(seen) == 1


# -- any exception from a plugin's import or construction names the plugin -------------------


@pytest.mark.parametrize(
    ("source", "failure"),
    [
        ("import sys\nsys.exit(3)\n", "failed to import: SystemExit: 3"),
        ("class Stop(BaseException):\n    pass\n\nraise Stop('odd')\n", "failed to import: Stop: odd"),
        (
            "class Plugin:\n    def __init__(self):\n        raise SystemExit('no display')\n",
            "failed to construct: SystemExit: no display",
        ),
    ],
)
def test_a_plugin_raising_any_base_exception_gives_a_plugin_error(make_distribution, source, failure):
    make_distribution("ignite-quits", "0.2", {"quits": "quits_mod:Plugin"}, "quits_mod", source)
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert f"Plugin 'quits' (entry point 'quits_mod:Plugin' of ignite-quits 0.2) {failure}." in message
    assert "plugins={'quits': False}" in message and "IGNITE_DISABLE_PLUGINS=quits" in message
    assert not isinstance(info.value.__cause__, Exception) and isinstance(info.value.__cause__, BaseException)


@pytest.mark.parametrize(
    "source",
    ["raise KeyboardInterrupt\n", "class Plugin:\n    def __init__(self):\n        raise KeyboardInterrupt\n"],
)
def test_keyboard_interrupt_in_a_plugin_s_import_or_construction_propagates(make_distribution, source):
    make_distribution("ignite-ctrlc", "1.0", {"ctrlc": "ctrlc_mod:Plugin"}, "ctrlc_mod", source)
    with pytest.raises(KeyboardInterrupt):
        trainer()


# -- one validation path: what a Trainer refuses, the listing shows as failed ----------------

WRONG_ARGUMENT = """
    from ignite import hookimpl

    class Plugin:
        @hookimpl
        def ignite_epoch_completed(self, trainr):
            pass
"""

WRONG_HOOK = """
    from ignite import hookimpl

    class Plugin:
        @hookimpl
        def ignite_epoch_complete(self, trainer):
            pass
"""


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (WRONG_ARGUMENT, "has a hook that does not match its spec (Plugin 'wrong' for hook 'ignite_epoch_completed'; "),
        (WRONG_HOOK, "implements 'ignite_epoch_complete', which is not an ignite hook. Did you mean 'ignite_epoch_completed'?"),
    ],
)
def test_an_installed_plugin_with_a_bad_hook_is_refused_naming_its_entry_point_and_remedy(make_distribution, source, problem):
    make_distribution("ignite-wrong", "1.1", {"wrong": "wrong_mod:Plugin"}, "wrong_mod", source)
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert message.startswith(f"Plugin 'wrong' (entry point 'wrong_mod:Plugin' of ignite-wrong 1.1) {problem}")
    assert message.endswith("disable it with Trainer(..., plugins={'wrong': False}) or IGNITE_DISABLE_PLUGINS=wrong.")
    assert "wrong" not in trainer(plugins={"wrong": False}).plugins


def test_the_same_module_under_two_entry_point_names_is_refused_naming_the_second(make_distribution):
    make_distribution(
        "ignite-twice", "1.0", {"first": "twice_mod", "second": "twice_mod"}, "twice_mod", "seen = []\n"
    )
    with pytest.raises(PluginError, match=r"Plugin 'second' \(entry point 'twice_mod' of ignite-twice 1.0\) is the same object as plugin 'first', registered before it\. Fix"):
        trainer()
    assert list(trainer(plugins={"second": False}).plugins) == ["first"]


# -- two distributions claiming one plugin name ------------------------------------------------


def test_two_distributions_with_one_plugin_name_are_both_named_and_neither_is_imported(make_distribution, caplog):
    make_distribution("ignite-alpha", "1.0", {"dup": "alpha_mod:Plugin"}, "alpha_mod", "raise RuntimeError('alpha ran')\n")
    make_distribution("ignite-beta", "2.5", {"dup": "beta_mod:Plugin"}, "beta_mod", "raise RuntimeError('beta ran')\n")
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert message.startswith("Plugin 'dup' is claimed by 2 distributions: ")
    claims = {"ignite-alpha 1.0 (entry point 'alpha_mod:Plugin')", "ignite-beta 2.5 (entry point 'beta_mod:Plugin')"}
    assert set(message.split(": ", 1)[1].split(". ")[0].split(" and ")) == claims
    assert "Uninstall one of them, or disable it with Trainer(..., plugins={'dup': False})" in message
    assert "alpha_mod" not in sys.modules and "beta_mod" not in sys.modules
    with caplog.at_level(logging.WARNING, logger="ignite"):
        assert "dup" not in trainer(plugins={"dup": False}).plugins  # disabled: quiet
    assert caplog.records == []


def test_one_distribution_seen_twice_on_sys_path_is_loaded_once_quietly(make_distribution, tmp_path, monkeypatch, caplog):
    import shutil

    info = make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    build = tmp_path / "build"
    shutil.copytree(info.parent, build)  # e.g. an editable install and its build folder
    monkeypatch.syspath_prepend(str(build))
    with caplog.at_level(logging.WARNING, logger="ignite"):
        t = trainer()
    assert list(t.plugins) == ["counting"] and caplog.records == []


# -- the environment variables ---------------------------------------------------------------


def test_disable_plugins_names_that_match_nothing_are_warned_about_with_close_matches(make_distribution, monkeypatch, caplog):
    make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    make_distribution("ignite-visual", "1.0", {"visual": "visual_mod:Counting"}, "visual_mod", COUNTING_PLUGIN)
    standard = [name for name in os.environ["IGNITE_DISABLE_PLUGINS"].split(",") if name]
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", ",".join([*standard, "countng", "visual;counting", "visual"]))
    with caplog.at_level(logging.WARNING, logger="ignite"):
        t = trainer()
    assert list(t.plugins) == ["counting"]  # the typo blocked nothing; "visual" alone did
    messages = sorted(record.getMessage() for record in caplog.records if record.name == "ignite")
    installed = ", ".join(sorted({entry_point.name for entry_point in entry_points(group="ignite.plugins")}))
    assert messages == [
        "IGNITE_DISABLE_PLUGINS names 'countng', which is no installed plugin: it blocks nothing. "
        f"Did you mean 'counting'? Installed plugins: {installed}.",
        "IGNITE_DISABLE_PLUGINS names 'visual;counting', which is no installed plugin: it blocks nothing. "
        "Separate names with commas: IGNITE_DISABLE_PLUGINS=visual,counting. "
        f"Did you mean 'counting'? Installed plugins: {installed}.",
    ]


@pytest.mark.parametrize(
    ("value", "autoload"),
    [
        ("1", False), ("true", False), ("TRUE", False), ("Yes", False), (" on ", False),
        ("0", True), ("false", True), ("False", True), ("no", True), ("OFF", True), ("", True),
    ],
)
def test_disable_autoload_is_read_as_a_boolean(make_distribution, monkeypatch, value, autoload):
    make_distribution("ignite-counting", "1.0", {"counting": "counting_mod:Counting"}, "counting_mod", COUNTING_PLUGIN)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", value)
    assert ("counting" in trainer().plugins) is autoload


@pytest.mark.parametrize("value", ["2", "disable", "y", "true,"])
def test_disable_autoload_refuses_a_value_that_is_not_a_boolean(monkeypatch, value):
    monkeypatch.setenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", value)
    with pytest.raises(PluginError) as info:
        trainer()
    assert str(info.value) == (
        f"IGNITE_DISABLE_PLUGIN_AUTOLOAD={value!r} is not a boolean. Accepted values, in any case: "
        "1, true, yes, on (yes); 0, false, no, off (no); empty or unset (no)."
    )
