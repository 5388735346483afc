"""The project file (``[tool.ignite]`` in pyproject.toml, or ignite.toml): how it is found, how
``plugins=`` and the environment override it, ``required_plugins``, its errors, and the check of
a plugin's declared requirement on ignite-trainer. Real files in tmp folders; distributions as
pip leaves them (``make_distribution``)."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest

import ignite
from ignite import PluginError, Trainer

OPTIONS_PLUGIN = """
    from ignite import hookimpl

    class Plugin:
        def __init__(self, step: int = 1, label: str = "default"):
            self.options = {"step": step, "label": label}

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            pass
"""


@pytest.fixture(autouse=True)
def _no_config_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IGNITE_CONFIG", raising=False)


@pytest.fixture
def opts(make_distribution):
    """Install the plugin ``opts`` (options step and label) and return its distribution folder."""
    return make_distribution("ignite-opts", "1.0", {"opts": "opts_mod:Plugin"}, "opts_mod", OPTIONS_PLUGIN)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def work_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    return folder


def trainer(**kwargs) -> Trainer:
    return Trainer([1, 2], lambda batch: batch, **kwargs)


def options_of(t: Trainer, name: str = "opts") -> dict:
    return t.plugins[name].options


# -- finding the file ------------------------------------------------------------------------


def test_pyproject_tool_ignite_is_found_from_a_nested_folder(opts, tmp_path, monkeypatch):
    write(tmp_path / "project" / "pyproject.toml", """
        [project]
        name = "mine"

        [tool.ignite.plugins.opts]
        step = 10
    """)
    work_in(monkeypatch, tmp_path / "project" / "src" / "pkg")
    assert options_of(trainer()) == {"step": 10, "label": "default"}


def test_a_pyproject_without_the_table_is_skipped_and_the_search_goes_on_upward(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", "[plugins.opts]\nstep = 7\n")
    write(tmp_path / "project" / "pyproject.toml", '[project]\nname = "mine"\n[tool.black]\nline-length = 99\n')
    work_in(monkeypatch, tmp_path / "project" / "sub")
    assert options_of(trainer())["step"] == 7


def test_the_nearest_file_wins_and_ignite_toml_before_pyproject_in_one_folder(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", "[plugins.opts]\nstep = 1\n")
    write(tmp_path / "project" / "pyproject.toml", "[tool.ignite.plugins.opts]\nstep = 2\n")
    work_in(monkeypatch, tmp_path / "project" / "sub")
    assert options_of(trainer())["step"] == 2
    write(tmp_path / "project" / "ignite.toml", "[plugins.opts]\nstep = 3\n")
    assert options_of(trainer())["step"] == 3


def test_an_empty_ignite_toml_is_a_configuration_and_stops_the_search(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", "[plugins.opts]\nstep = 5\n")
    write(tmp_path / "project" / "ignite.toml", "")
    work_in(monkeypatch, tmp_path / "project")
    assert options_of(trainer())["step"] == 1


def test_ignite_config_names_the_file_or_none(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", "[plugins.opts]\nstep = 5\n")
    elsewhere = write(tmp_path / "elsewhere" / "pyproject.toml", "[tool.ignite.plugins.opts]\nstep = 8\n")
    chosen = write(tmp_path / "elsewhere" / "ci.toml", "[plugins.opts]\nstep = 9\n")
    work_in(monkeypatch, tmp_path / "project")
    monkeypatch.setenv("IGNITE_CONFIG", str(chosen))
    assert options_of(trainer())["step"] == 9
    monkeypatch.setenv("IGNITE_CONFIG", str(elsewhere))  # a pyproject.toml is read at [tool.ignite]
    assert options_of(trainer())["step"] == 8
    monkeypatch.setenv("IGNITE_CONFIG", "None")
    assert options_of(trainer())["step"] == 1
    write(elsewhere, "[tool.black]\n")
    monkeypatch.setenv("IGNITE_CONFIG", str(elsewhere))
    with pytest.raises(PluginError, match=r"pyproject.toml \(named by IGNITE_CONFIG\) has no \[tool.ignite\] table\."):
        trainer()
    monkeypatch.setenv("IGNITE_CONFIG", "missing.toml")
    with pytest.raises(PluginError) as info:
        trainer()
    assert str(info.value) == (
        f"IGNITE_CONFIG='missing.toml' names no file ({tmp_path / 'project' / 'missing.toml'}). "
        "Name an existing file, or set IGNITE_CONFIG=none to read none."
    )


# -- plugins= and the environment override the file ------------------------------------------


def test_plugins_argument_merges_over_the_file_option_by_option(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", '[plugins.opts]\nstep = 10\nlabel = "file"\n')
    work_in(monkeypatch, tmp_path)
    assert options_of(trainer(plugins={"opts": {"label": "code"}})) == {"step": 10, "label": "code"}
    assert options_of(trainer(plugins={"opts": True})) == {"step": 10, "label": "file"}
    assert "opts" not in trainer(plugins={"opts": False}).plugins


def test_disable_plugins_in_the_file_is_overridden_by_naming_the_plugin_in_code(opts, tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", '[tool.ignite]\ndisable_plugins = ["opts"]\n')
    work_in(monkeypatch, tmp_path)
    assert "opts" not in trainer().plugins
    assert options_of(trainer(plugins={"opts": True}))["step"] == 1
    assert options_of(trainer(plugins={"opts": {"step": 4}}))["step"] == 4


def test_the_environment_wins_over_the_file(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", "autoload = true\n[plugins.opts]\nstep = 2\n")
    work_in(monkeypatch, tmp_path)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "opts")
    assert "opts" not in trainer().plugins
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "")
    write(tmp_path / "ignite.toml", "autoload = false\n")
    assert "opts" not in trainer().plugins
    monkeypatch.setenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", "0")  # set: it decides, not the file
    assert "opts" in trainer().plugins
    write(tmp_path / "ignite.toml", "autoload = true\n")
    monkeypatch.setenv("IGNITE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "opts" not in trainer().plugins


def test_autoload_false_loads_the_plugins_the_file_or_the_code_names(opts, make_distribution, tmp_path, monkeypatch):
    make_distribution("ignite-other", "1.0", {"other": "other_mod:Plugin"}, "other_mod", OPTIONS_PLUGIN)
    write(tmp_path / "ignite.toml", "autoload = false\n[plugins.opts]\n")
    work_in(monkeypatch, tmp_path)
    assert list(trainer().plugins) == ["opts"]
    assert sorted(trainer(plugins={"other": True}).plugins) == ["opts", "other"]


def test_a_disable_plugins_name_that_matches_nothing_is_warned_about_naming_the_file(opts, tmp_path, monkeypatch, caplog):
    write(tmp_path / "pyproject.toml", '[tool.ignite]\ndisable_plugins = ["opst"]\n')
    work_in(monkeypatch, tmp_path)
    with caplog.at_level(logging.WARNING, logger="ignite"):
        assert "opts" in trainer().plugins
    (message,) = [r.getMessage() for r in caplog.records if "opst" in r.getMessage()]
    assert message.startswith(
        f"tool.ignite.disable_plugins in {tmp_path / 'pyproject.toml'} names 'opst', which is no installed plugin: "
        "it blocks nothing. Did you mean 'opts'?"
    )


# -- mistakes in the file name the file, the key and the fix ---------------------------------


def test_invalid_toml_names_the_file_line_and_column(tmp_path, monkeypatch):
    path = write(tmp_path / "pyproject.toml", '[tool.ignite]\nautoload = yes\n')
    work_in(monkeypatch, tmp_path / "a" / "b")
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert message.startswith(f"{path} is not valid TOML: ") and "Invalid value (at line 2, column 12)" in message
    assert message.endswith("Fix the file, or set IGNITE_CONFIG=none to read none.")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "pyproject.toml",
            '[tool.ignite]\ndisable_plugin = ["visdom"]\n',
            "{path}, key tool.ignite.disable_plugin: unknown key. Did you mean tool.ignite.disable_plugins? "
            "Known keys: autoload, disable_plugins, plugins, required_plugins.",
        ),
        (
            "ignite.toml",
            "[tool.ignite]\nautoload = false\n",
            "{path}, key tool: unknown key. In ignite.toml the keys are at the top level, without [tool.ignite]. "
            "Known keys: autoload, disable_plugins, plugins, required_plugins.",
        ),
        (
            "ignite.toml",
            'autoload = "no"\n',
            "{path}, key autoload: must be a boolean, e.g. autoload = false; got a string 'no'.",
        ),
        (
            "pyproject.toml",
            '[tool.ignite]\ndisable_plugins = "visdom"\n',
            '{path}, key tool.ignite.disable_plugins: must be a list of plugin names, e.g. disable_plugins = ["visdom"]; '
            "got a string 'visdom'.",
        ),
        (
            "ignite.toml",
            "required_plugins = [1]\n",
            '{path}, key required_plugins: must be a list of requirements on distributions, e.g. '
            'required_plugins = ["ignite-checkpoint>=0.1"]; got a list [1].',
        ),
        (
            "pyproject.toml",
            "[tool.ignite.plugins]\nvisdom = false\n",
            "{path}, key tool.ignite.plugins.visdom: must be a table of the plugin's options, e.g. "
            "[tool.ignite.plugins.visdom] then option = value; got a boolean False. To turn it off write "
            'tool.ignite.disable_plugins = ["visdom"]; an empty table loads it with its defaults.',
        ),
        (
            "ignite.toml",
            "plugins = 3\n",
            "{path}, key plugins: must be a table of one table of options per plugin, e.g. [plugins.early_stopping] "
            "then patience = 5; got an integer 3.",
        ),
    ],
)
def test_a_wrong_key_or_value_names_the_file_the_key_and_the_fix(tmp_path, monkeypatch, name, text, expected):
    path = write(tmp_path / name, text)
    work_in(monkeypatch, tmp_path / "sub")
    with pytest.raises(PluginError) as info:
        trainer()
    assert str(info.value) == expected.format(path=path)


def test_options_for_a_plugin_that_is_not_installed_are_refused_with_the_installed_names(opts, tmp_path, monkeypatch):
    path = write(tmp_path / "pyproject.toml", "[tool.ignite.plugins.otps]\nstep = 2\n")
    work_in(monkeypatch, tmp_path)
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert message.startswith(f"[tool.ignite.plugins.otps] in {path} names no installed plugin. Did you mean 'opts'? Installed plugins: ")
    assert "opts" in message.split("Installed plugins: ")[1]
    assert message.endswith("Fix the name, install the plugin (and list its distribution in tool.ignite.required_plugins), or remove the table.")


def test_an_option_from_the_file_that_the_plugin_lacks_names_the_table(opts, make_distribution, tmp_path, monkeypatch):
    make_distribution("ignite-modplug", "0.1", {"modplug": "modplug_mod"}, "modplug_mod", "seen = []\n")
    path = write(tmp_path / "pyproject.toml", "[tool.ignite.plugins.opts]\nstpe = 2\n")
    work_in(monkeypatch, tmp_path)
    with pytest.raises(PluginError) as info:
        trainer()
    assert (
        "has no option 'stpe'. Did you mean 'step'? Its options: step, label "
        f"(set in [tool.ignite.plugins.opts] in {path})." in str(info.value)
    )
    # The same mistake made in code is the code's: the file is not named.
    write(tmp_path / "pyproject.toml", "[tool.ignite.plugins.modplug]\nx = 1\n")
    with pytest.raises(PluginError, match=r"'modplug' .*takes no options \(it is a module, not a class\) \(options set in \[tool.ignite.plugins.modplug\]"):
        trainer()
    write(tmp_path / "pyproject.toml", "[tool.ignite]\n")
    with pytest.raises(PluginError) as info:
        trainer(plugins={"opts": {"stpe": 2}})
    assert str(info.value).split(". ")[1] == "Did you mean 'step'? Its options: step, label"


# -- required_plugins ------------------------------------------------------------------------


def test_required_plugins_missing_or_mismatched_are_listed_with_the_pip_command_before_any_import(make_distribution, tmp_path, monkeypatch):
    make_distribution("ignite-old", "0.1.5", {"old": "old_mod:Plugin"}, "old_mod", "raise RuntimeError('imported!')\n")
    path = write(tmp_path / "pyproject.toml", """
        [tool.ignite]
        required_plugins = ["ignite-old>=0.2", "ignite-absent", "ignite-never; python_version < '3'", "old"]
    """)
    work_in(monkeypatch, tmp_path / "src")
    with pytest.raises(PluginError) as info:
        trainer()
    assert str(info.value) == (
        f"Required plugins are missing or at the wrong version (tool.ignite.required_plugins in {path}):\n"
        "  ignite-old>=0.2: ignite-old 0.1.5 is installed\n"
        "  ignite-absent: not installed\n"
        '  old: no distribution of that name; it is the plugin of ignite-old: write "ignite-old" instead\n'
        "Install them with: pip install 'ignite-old>=0.2' ignite-absent"
    )
    assert "old_mod" not in sys.modules


def test_a_missing_required_plugin_with_options_in_the_file_is_reported_as_missing(tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", 'required_plugins = ["ignite-absent"]\n[plugins.absent]\nlevel = 1\n')
    work_in(monkeypatch, tmp_path)
    with pytest.raises(PluginError, match=r"^Required plugins are missing .*\n  ignite-absent: not installed\nInstall them with: pip install ignite-absent$"):
        trainer()


def test_required_plugins_that_are_met_let_the_trainer_be_made(opts, tmp_path, monkeypatch):
    write(tmp_path / "ignite.toml", 'required_plugins = ["ignite-opts>=1.0,<2", "IGNITE_OPTS", "ignite-opts[extra]==1.*"]\n')
    work_in(monkeypatch, tmp_path)
    assert "opts" in trainer().plugins


def test_a_required_plugins_entry_that_is_no_requirement_names_the_file_and_the_form(tmp_path, monkeypatch):
    path = write(tmp_path / "ignite.toml", 'required_plugins = ["ignite checkpoint >= 0.1"]\n')
    work_in(monkeypatch, tmp_path)
    with pytest.raises(PluginError) as info:
        trainer()
    message = str(info.value)
    assert message.startswith(f"{path}, key required_plugins: 'ignite checkpoint >= 0.1' is not a requirement (")
    assert message.endswith('Write a distribution name with an optional version, e.g. "ignite-checkpoint>=0.1".')


# -- a plugin's requirement on ignite-trainer ------------------------------------------------


def require(info: Path, *lines: str) -> None:
    """Add ``Requires-Dist`` lines to a distribution's METADATA, as a build would have written them."""
    metadata = info / "METADATA"
    metadata.write_text(metadata.read_text() + "".join(f"Requires-Dist: {line}\n" for line in lines))


def test_a_plugin_made_for_another_core_is_refused_before_import_naming_both_versions(make_distribution):
    info = make_distribution("ignite-future", "3.0", {"future": "future_mod:Plugin"}, "future_mod", "raise RuntimeError('imported!')\n")
    require(info, "torch>=2.0", "ignite-trainer<0.3,>=0.2")
    with pytest.raises(PluginError) as raised:
        trainer()
    assert str(raised.value) == (
        f"Plugin 'future' (entry point 'future_mod:Plugin' of ignite-future 3.0) requires ignite-trainer<0.3,>=0.2, "
        f"but the running ignite-trainer is {ignite.__version__}. Install a release of ignite-future made for "
        f"ignite-trainer {ignite.__version__} (pip install --upgrade ignite-future) or the core it was made for "
        "(pip install 'ignite-trainer<0.3,>=0.2'), or disable it with Trainer(..., plugins={'future': False}) "
        "or IGNITE_DISABLE_PLUGINS=future."
    )
    assert "future_mod" not in sys.modules
    assert "future" not in trainer(plugins={"future": False}).plugins


@pytest.mark.parametrize(
    "line",
    [
        "Ignite_Trainer>=0.2",  # any spelling of the name
        "ignite.trainer (>=0.2)",
        f"ignite-trainer!={ignite.__version__}",
    ],
)
def test_every_spelling_of_a_requirement_on_the_core_is_checked(make_distribution, line):
    info = make_distribution("ignite-future", "3.0", {"future": "future_mod:Plugin"}, "future_mod", OPTIONS_PLUGIN)
    require(info, line)
    with pytest.raises(PluginError, match=rf"requires ignite-trainer.*, but the running ignite-trainer is {ignite.__version__}\."):
        trainer()


@pytest.mark.parametrize(
    "line",
    [
        "ignite-trainer>=0.1,<0.2",
        "ignite-trainer",
        "ignite-trainer-extras>=9",  # another distribution
        'ignite-trainer>=9; extra == "dev"',  # only with an extra
        "ignite-trainer>=9; python_version < '3'",
    ],
)
def test_a_plugin_whose_requirement_on_the_core_is_met_or_does_not_apply_loads(make_distribution, line):
    info = make_distribution("ignite-fits", "1.0", {"fits": "fits_mod:Plugin"}, "fits_mod", OPTIONS_PLUGIN)
    require(info, line)
    assert "fits" in trainer().plugins


def test_the_standard_plugins_declare_the_core_versions_they_support():
    from configparser import ConfigParser

    from packaging.requirements import Requirement

    root = Path(__file__).parents[1]
    folders = [*sorted((root / "plugins").glob("*/setup.cfg")), root / "examples" / "custom_plugin" / "setup.cfg"]
    assert len(folders) >= 7
    for setup_cfg in folders:
        parser = ConfigParser()
        parser.read(setup_cfg)
        requirements = [Requirement(line) for line in parser["options"]["install_requires"].split("\n") if line.strip()]
        (core,) = [r for r in requirements if r.name == "ignite-trainer"]
        assert core.specifier and core.specifier.contains(ignite.__version__), setup_cfg
        assert not core.specifier.contains("1.0"), f"{setup_cfg}: bound it above, so that a new core refuses it"
