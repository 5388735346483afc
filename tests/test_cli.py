"""``ignite plugins``: status of every plugin, with written distributions, in process and as a
real ``python -m ignite plugins`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ignite import PluginError, Trainer
from ignite._cli import main

from .test_plugins import WRONG_ARGUMENT, WRONG_HOOK

GOOD = """
    from ignite import hookimpl

    class Plugin:
        @hookimpl
        def ignite_training_started(self, trainer):
            pass

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            pass
"""


def test_statuses(make_distribution, monkeypatch, capsys):
    make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD)
    make_distribution("ignite-bad", "2.0", {"bad": "bad_mod:Plugin"}, "bad_mod", "raise ImportError('no gpu lib')\n")
    make_distribution(
        "ignite-idle",
        "3.0",
        {"idle": "idle_mod:Plugin"},
        "idle_mod",
        "from ignite import PluginInactive\nclass Plugin:\n    def __init__(self, dirname=None):\n        raise PluginInactive('needs dirname')\n",
    )
    make_distribution("ignite-off", "4.0", {"off": "off_mod:Plugin"}, "off_mod", GOOD)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "off")
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["good"]["status"] == "active"
    assert records["good"]["hooks"] == ["ignite_training_started", "ignite_epoch_completed"]
    assert records["bad"]["status"] == "failed" and records["bad"]["reason"] == "failed to import: ImportError: no gpu lib"
    assert records["idle"]["status"] == "inactive" and records["idle"]["reason"] == "needs dirname"
    assert records["off"]["status"] == "disabled"
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "status: failed: failed to import: ImportError: no gpu lib" in text
    assert "good  (ignite-good 1.0, good_mod:Plugin)" in text


def run_cli(site: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m ignite plugins *arguments`` in a subprocess that also sees ``site``."""
    path = os.pathsep.join(part for part in (str(site), os.environ.get("PYTHONPATH", "")) if part)
    return subprocess.run(
        [sys.executable, "-m", "ignite", "plugins", *arguments],
        env={**os.environ, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_plugin_that_exits_on_import_is_listed_as_failed(make_distribution):
    site = make_distribution("ignite-quits", "0.2", {"quits": "quits_mod:Plugin"}, "quits_mod", "import sys\nsys.exit(3)\n").parent
    make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD)
    result = run_cli(site)
    assert result.returncode == 0, result.stderr
    assert "quits  (ignite-quits 0.2, quits_mod:Plugin)\n    status: failed: failed to import: SystemExit: 3\n" in result.stdout
    assert (
        "    error:  Plugin 'quits' (entry point 'quits_mod:Plugin' of ignite-quits 0.2) failed to import: SystemExit: 3. "
        "Fix or uninstall it, or disable it with Trainer(..., plugins={'quits': False}) or IGNITE_DISABLE_PLUGINS=quits.\n"
    ) in result.stdout
    assert "good  (ignite-good 1.0, good_mod:Plugin)\n    status: active\n" in result.stdout


def test_plugins_a_trainer_refuses_are_listed_as_failed_with_the_trainer_s_message(make_distribution):
    site = make_distribution("ignite-args", "1.0", {"args": "args_mod:Plugin"}, "args_mod", WRONG_ARGUMENT).parent
    make_distribution("ignite-typo", "1.0", {"typo": "typo_mod:Plugin"}, "typo_mod", WRONG_HOOK)
    make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD)
    refusals = {}
    for name, other in (("args", "typo"), ("typo", "args")):
        with pytest.raises(PluginError) as info:
            Trainer([1], lambda batch: batch, plugins={other: False})
        refusals[name] = str(info.value)
    assert "entry point 'typo_mod:Plugin'" in refusals["typo"] and "IGNITE_DISABLE_PLUGINS=typo" in refusals["typo"]
    listed = run_cli(site, "--json")
    assert listed.returncode == 0, listed.stderr
    records = {record["name"]: record for record in json.loads(listed.stdout)}
    for name, message in refusals.items():
        assert records[name]["status"] == "failed" and records[name]["error"] == message
        assert message == f"Plugin {name!r} (entry point {name + '_mod:Plugin'!r} of ignite-{name} 1.0) {records[name]['reason']}. " + (
            f"Fix or uninstall it, or disable it with Trainer(..., plugins={{{name!r}: False}}) or IGNITE_DISABLE_PLUGINS={name}."
        )
    assert records["good"]["status"] == "active" and records["good"]["error"] is None
    text = run_cli(site).stdout
    assert f"    error:  {refusals['args']}\n" in text and f"    error:  {refusals['typo']}\n" in text
    assert "    status: failed: implements 'ignite_epoch_complete', which is not an ignite hook." in text


def test_two_distributions_with_one_plugin_name_are_listed_as_failed_naming_both(make_distribution):
    site = make_distribution("ignite-alpha", "1.0", {"dup": "alpha_mod:Plugin"}, "alpha_mod", GOOD).parent
    make_distribution("ignite-beta", "2.5", {"dup": "beta_mod:Plugin"}, "beta_mod", GOOD)
    result = run_cli(site, "--json")
    (record,) = [record for record in json.loads(result.stdout) if record["name"] == "dup"]
    assert record["status"] == "failed" and record["hooks"] == []
    assert "ignite-alpha 1.0 (entry point 'alpha_mod:Plugin')" in record["reason"]
    assert "ignite-beta 2.5 (entry point 'beta_mod:Plugin')" in record["reason"]


def test_environment_mistakes_are_reported_by_the_listing(make_distribution):
    site = make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD).parent
    bad_flag = run_cli(site, IGNITE_DISABLE_PLUGIN_AUTOLOAD="maybe")
    assert bad_flag.returncode == 2 and bad_flag.stdout == ""
    assert bad_flag.stderr.startswith("ignite plugins: error: IGNITE_DISABLE_PLUGIN_AUTOLOAD='maybe' is not a boolean.")
    typo = run_cli(site, IGNITE_DISABLE_PLUGINS=os.environ["IGNITE_DISABLE_PLUGINS"] + ",god")
    assert typo.returncode == 0
    assert "IGNITE_DISABLE_PLUGINS names 'god', which is no installed plugin: it blocks nothing. Did you mean 'good'?" in typo.stderr
    assert "good  (ignite-good 1.0, good_mod:Plugin)\n    status: active\n" in typo.stdout


# -- the project file and the core version in the listing ------------------------------------

OPTIONS = """
    from ignite import hookimpl

    class Plugin:
        def __init__(self, step: int = 1, label: str = "default"):
            pass

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            pass
"""


def run_cli_in(folder: Path, site: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m ignite plugins *arguments`` run from ``folder``, with no IGNITE_CONFIG from outside."""
    path = os.pathsep.join(part for part in (str(site), os.environ.get("PYTHONPATH", "")) if part)
    environment = {key: value for key, value in os.environ.items() if key != "IGNITE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "ignite", "plugins", *arguments],
        env={**environment, "PYTHONPATH": path, **env},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_listing_names_the_project_file_and_the_effective_options(make_distribution, tmp_path):
    site = make_distribution("ignite-opts", "1.0", {"opts": "opts_mod:Plugin"}, "opts_mod", OPTIONS).parent
    make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD)
    config = tmp_path / "project" / "pyproject.toml"
    config.parent.mkdir()
    config.write_text('[tool.ignite]\ndisable_plugins = ["good"]\n[tool.ignite.plugins.opts]\nstep = 5\nlabel = "exp1"\n')
    nested = tmp_path / "project" / "src" / "pkg"
    nested.mkdir(parents=True)
    result = run_cli_in(nested, site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Configuration: {config} [tool.ignite] (found upward from {nested})\n")
    assert "opts  (ignite-opts 1.0, opts_mod:Plugin)\n    status: active\n    options: step=5, label='exp1'\n" in result.stdout
    assert f"good  (ignite-good 1.0, good_mod:Plugin)\n    status: disabled: tool.ignite.disable_plugins in {config} names it\n" in result.stdout
    records = {r["name"]: r for r in json.loads(run_cli_in(nested, site, "--json").stdout)}
    assert records["opts"]["options"] == {"step": 5, "label": "exp1"} and records["good"]["options"] == {}
    ignored = run_cli_in(nested, site, IGNITE_CONFIG="none")
    assert ignored.stdout.startswith("Configuration: none (IGNITE_CONFIG=none)\n")
    assert "good  (ignite-good 1.0, good_mod:Plugin)\n    status: active\n" in ignored.stdout


def test_unmet_required_plugins_are_listed_after_the_plugins_with_exit_status_1(make_distribution, tmp_path):
    site = make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD).parent
    (tmp_path / "ignite.toml").write_text('required_plugins = ["ignite-good>=2", "ignite-good<3"]\n')
    for arguments in ((), ("--json",)):
        result = run_cli_in(tmp_path, site, *arguments)
        assert result.returncode == 1
        assert "good" in result.stdout
        assert result.stderr == (
            f"ignite plugins: error: Required plugins are missing or at the wrong version (required_plugins in {tmp_path / 'ignite.toml'}):\n"
            "  ignite-good>=2: ignite-good 1.0 is installed\n"
            "Install them with: pip install 'ignite-good>=2'\n"
        )


def test_a_mistake_in_the_project_file_is_an_error_of_the_listing(make_distribution, tmp_path):
    site = make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD).parent
    (tmp_path / "ignite.toml").write_text("[plugins.god]\n")
    result = run_cli_in(tmp_path, site)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(
        f"ignite plugins: error: [plugins.god] in {tmp_path / 'ignite.toml'} names no installed plugin. Did you mean 'good'?"
    )


def test_a_plugin_made_for_another_core_is_listed_as_failed(make_distribution, tmp_path):
    info = make_distribution("ignite-future", "3.0", {"future": "future_mod:Plugin"}, "future_mod", GOOD)
    (info / "METADATA").write_text((info / "METADATA").read_text() + "Requires-Dist: ignite-trainer>=0.2,<0.3\n")
    result = run_cli_in(tmp_path, info.parent, "--json")
    assert result.returncode == 0, result.stderr
    (record,) = [r for r in json.loads(result.stdout) if r["name"] == "future"]
    assert record["status"] == "failed" and record["hooks"] == []
    assert record["reason"] == "requires ignite-trainer<0.3,>=0.2, but the running ignite-trainer is 0.1.0"
    assert "pip install 'ignite-trainer<0.3,>=0.2'" in record["error"]
