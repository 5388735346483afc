"""A real plugin distribution, built and installed by pip, is found with no change to the
training script; the environment variables and plugins= turn it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ignite.pytest_plugin import IgniteInstall

TRAIN_SCRIPT = """
    import json, sys
    from ignite import Trainer
    options = json.loads(sys.argv[1])
    trainer = Trainer([1.0, 2.0, 3.0], lambda batch: batch * 2, plugins=options)
    trainer.run(2)
"""


@pytest.fixture
def installed_site(tmp_path: Path, ignite_install: IgniteInstall) -> Path:
    """Built and installed by pip once per session (ignite_install reuses the site of the same source)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "setup.cfg").write_text(
        textwrap.dedent(
            """
            [metadata]
            name = ignite-epoch-file
            version = 0.3.1

            [options]
            py_modules = ignite_epoch_file

            [options.entry_points]
            ignite.plugins =
                epoch_file = ignite_epoch_file:EpochFile
            """
        )
    )
    (source / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (source / "ignite_epoch_file.py").write_text(
        textwrap.dedent(
            """
            import json, os
            from ignite import hookimpl

            class EpochFile:
                def __init__(self, path=None):
                    self.path = path or os.environ["EPOCH_FILE"]

                @hookimpl
                def ignite_epoch_completed(self, trainer):
                    with open(self.path, "a") as f:
                        f.write(json.dumps([trainer.current_epoch, trainer.training_history.run_mean()]) + "\\n")
            """
        )
    )
    site = ignite_install(source)
    assert (site / "ignite_epoch_file-0.3.1.dist-info" / "entry_points.txt").exists()
    return site


def run_script(site: Path, tmp_path: Path, options: dict, **env: str) -> list:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    out = tmp_path / "epochs.jsonl"
    if out.exists():
        out.unlink()
    environment = {**os.environ, "PYTHONPATH": str(site), "EPOCH_FILE": str(out), **env}
    # In tmp_path: with IGNITE_DISABLE_PLUGINS replaced, the installed observers load and write
    # their default outputs (runs/, mlflow.db) into the working directory.
    subprocess.run([sys.executable, str(script), json.dumps(options)], check=True, env=environment, cwd=tmp_path)
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_installed_plugin_fires_without_code_change(installed_site, tmp_path):
    assert run_script(installed_site, tmp_path, {}) == [[1, 4.0], [2, 4.0]]


def test_installed_plugin_takes_options(installed_site, tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    run_script(installed_site, tmp_path, {"epoch_file": {"path": str(target)}})
    assert len(target.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "options, env",
    [
        ({"epoch_file": False}, {}),
        ({}, {"IGNITE_DISABLE_PLUGINS": "epoch_file"}),
        ({}, {"IGNITE_DISABLE_PLUGIN_AUTOLOAD": "1"}),
    ],
)
def test_installed_plugin_turned_off(installed_site, tmp_path, options, env):
    assert run_script(installed_site, tmp_path, options, **env) == []


def test_autoload_off_but_named_plugin_loads(installed_site, tmp_path):
    assert len(run_script(installed_site, tmp_path, {"epoch_file": {}}, IGNITE_DISABLE_PLUGIN_AUTOLOAD="1")) == 2


@pytest.mark.parametrize("command", [["-m", "ignite", "plugins"], ["-c", "import sys; from ignite._cli import main; sys.exit(main())", "plugins"]])
def test_cli_lists_installed_plugin(installed_site, command):
    environment = {**os.environ, "PYTHONPATH": str(installed_site), "EPOCH_FILE": "unused"}
    result = subprocess.run([sys.executable, *command], env=environment, capture_output=True, text=True, check=True)
    assert "epoch_file  (ignite-epoch-file 0.3.1, ignite_epoch_file:EpochFile)" in result.stdout
    assert "hooks:  ignite_epoch_completed" in result.stdout


def test_cli_json_reports_statuses(installed_site):
    environment = {**os.environ, "PYTHONPATH": str(installed_site), "IGNITE_DISABLE_PLUGINS": "epoch_file"}
    result = subprocess.run([sys.executable, "-m", "ignite", "plugins", "--json"], env=environment, capture_output=True, text=True, check=True)
    record = next(r for r in json.loads(result.stdout) if r["name"] == "epoch_file")
    assert record == {
        "name": "epoch_file",
        "distribution": "ignite-epoch-file",
        "version": "0.3.1",
        "entry_point": "ignite_epoch_file:EpochFile",
        "status": "disabled",
        "reason": "IGNITE_DISABLE_PLUGINS names it",
        "error": None,
        "hooks": [],
        "periods": {},
        "phase": None,
        "options": {},
    }


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "ignite"
    result = subprocess.run([str(script), "plugins", "--json"], capture_output=True, text=True, check=True)
    assert isinstance(json.loads(result.stdout), list)
