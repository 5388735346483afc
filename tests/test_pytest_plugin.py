"""ignite.pytest_plugin, in real inner pytest sessions (pytester): isolated trainers, scratch pip
installs, two gloo ranks, and the pytest11 entry point of an installed ignite-trainer."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPOSITORY = Path(__file__).resolve().parents[1]

TALLY = """
    from ignite import hookimpl

    class Tally:
        def __init__(self, step=1):
            self.step, self.epochs = step, 0

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            self.epochs += self.step
"""


def write_tally(folder: Path, version: str = "1.0") -> Path:
    """The source of a one-module plugin distribution, ignite-tally, entry point ``tally``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tally_mod.py").write_text(textwrap.dedent(TALLY))
    (folder / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (folder / "setup.cfg").write_text(
        f"[metadata]\nname = ignite-tally\nversion = {version}\n\n[options]\npy_modules = tally_mod\n\n"
        "[options.entry_points]\nignite.plugins =\n    tally = tally_mod:Tally\n"
    )
    return folder


def run_inner(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Run ``source`` as a test module in an inner pytest session with the plugin loaded."""
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest("-p", "ignite.pytest_plugin", "-p", "no:cacheprovider", *args)


def test_isolated_trainers_load_only_the_named_plugins(pytester, monkeypatch):
    write_tally(pytester.path / "tally")
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "tally")  # set outside: isolation clears it
    result = run_inner(
        pytester,
        """
        import os
        from pathlib import Path
        from ignite import Trainer

        def test_trainer(ignite_install, ignite_trainer):
            ignite_install(Path(__file__).parent / "tally")
            assert "tally" not in ignite_trainer([1, 2], lambda batch: batch).plugins
            trainer = ignite_trainer([1, 2], lambda batch: batch, plugins={"tally": {"step": 5}})
            trainer.run(2)
            assert trainer.plugins["tally"].epochs == 10

        def test_isolated(ignite_isolated, ignite_install):
            ignite_install(Path(__file__).parent / "tally")
            assert os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] == "1"
            assert "IGNITE_DISABLE_PLUGINS" not in os.environ
            assert list(Trainer([1], lambda batch: batch, plugins={"tally": True}).plugins) == ["tally"]
        """,
    )
    result.assert_outcomes(passed=2)
    assert os.environ["IGNITE_DISABLE_PLUGINS"] == "tally"  # restored after the inner tests


def test_autoload_blocks_what_was_installed_before_except_what_is_kept(pytester):
    write_tally(pytester.path / "tally")
    result = run_inner(
        pytester,
        """
        import subprocess, sys
        from pathlib import Path
        import pytest
        from ignite import Trainer

        TALLY = Path(__file__).parent / "tally"

        def test_installed_later_is_autoloaded(ignite_autoload, ignite_install):
            blocked = ignite_autoload()
            assert "tally" not in blocked
            ignite_install(TALLY)
            assert "tally" in Trainer([1], lambda batch: batch).plugins
            listing = subprocess.run([sys.executable, "-m", "ignite", "plugins"], capture_output=True, text=True, check=True)
            assert "tally  (ignite-tally 1.0, tally_mod:Tally)\\n    status: active" in listing.stdout
            for name in blocked:
                assert f"{name}  (" not in listing.stdout or "IGNITE_DISABLE_PLUGINS names it" in listing.stdout

        def test_installed_before_is_blocked_unless_kept(ignite_autoload, ignite_install):
            ignite_install(TALLY)
            assert "tally" in ignite_autoload()
            assert "tally" not in Trainer([1], lambda batch: batch).plugins
            assert "tally" not in ignite_autoload("tally")
            assert "tally" in Trainer([1], lambda batch: batch).plugins

        def test_keeping_a_plugin_that_is_not_installed_is_an_error(ignite_autoload):
            with pytest.raises(ValueError, match="no installed plugin \\\\['tallyho'\\\\]"):
                ignite_autoload("tallyho")
        """,
    )
    result.assert_outcomes(passed=3)


def test_install_puts_a_real_pip_install_on_the_path_for_one_test(pytester):
    source = write_tally(pytester.path / "tally")
    result = run_inner(
        pytester,
        """
        import json, os, subprocess, sys
        from importlib.metadata import entry_points
        from pathlib import Path
        import pytest

        SOURCE = Path(__file__).parent / "tally"
        SITES = []

        def test_install(ignite_install):
            site = ignite_install(SOURCE)
            SITES.append(site)
            assert (site / "ignite_tally-1.0.dist-info" / "RECORD").is_file()  # written by pip
            assert sys.path[0] == str(site) and os.environ["PYTHONPATH"].startswith(str(site))
            (tally,) = [ep for ep in entry_points(group="ignite.plugins") if ep.name == "tally"]
            assert tally.load().__module__ == "tally_mod" and "tally_mod" in sys.modules
            listed = subprocess.run([sys.executable, "-m", "ignite", "plugins", "--json"], capture_output=True, text=True, check=True)
            assert {"name": "tally", "version": "1.0"}.items() <= next(r for r in json.loads(listed.stdout) if r["name"] == "tally").items()
            assert sorted(path.name for path in SOURCE.iterdir()) == ["setup.cfg", "setup.py", "tally_mod.py"]

        def test_the_next_test_starts_clean_and_the_same_source_reuses_its_site(ignite_install):
            assert "tally_mod" not in sys.modules and str(SITES[0]) not in sys.path
            assert not [ep for ep in entry_points(group="ignite.plugins") if ep.name == "tally"]
            assert ignite_install(SOURCE) == SITES[0]

        def test_a_folder_pip_cannot_install_is_an_error_with_pip_s_output(ignite_install, tmp_path):
            (tmp_path / "empty").mkdir()
            with pytest.raises(RuntimeError, match="ignite_install: pip could not install .*empty"):
                ignite_install(tmp_path / "empty")
            with pytest.raises(FileNotFoundError, match="missing is not a folder"):
                ignite_install(tmp_path / "missing")
        """,
    )
    result.assert_outcomes(passed=3)
    assert not (source / "build").exists() and not list(source.glob("*.egg-info"))


RANKS_SCRIPT = """
    import sys
    import torch
    import torch.distributed as dist

    rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    print(f"rank {rank} total {total.item():g}")
    open(f"{folder}/{rank}.txt", "w").write(f"{total.item():g}")
    if rank == 1 and len(sys.argv) > 4:
        sys.exit(3)
    dist.destroy_process_group()
"""


def test_ranks_run_a_script_as_two_gloo_ranks_and_report_failures(pytester):
    (pytester.path / "ranks.py").write_text(textwrap.dedent(RANKS_SCRIPT))
    result = run_inner(
        pytester,
        """
        from pathlib import Path
        import pytest

        SCRIPT = Path(__file__).parent / "ranks.py"

        def test_two_ranks(ignite_ranks, tmp_path):
            outputs = ignite_ranks(SCRIPT)
            assert [output.strip() for output in outputs] == ["rank 0 total 3", "rank 1 total 3"]
            assert (tmp_path / "0.txt").read_text() == (tmp_path / "1.txt").read_text() == "3"  # the default folder

        def test_a_failing_rank(ignite_ranks, tmp_path):
            failing = tmp_path / "failing.py"
            failing.write_text(SCRIPT.read_text().replace("len(sys.argv) > 4", "True"))
            (tmp_path / "elsewhere").mkdir()
            with pytest.raises(AssertionError, match=r"--- rank 1 \\(exit code 3\\)\\nrank 1 total 3"):
                ignite_ranks(failing, tmp_path / "elsewhere", timeout=60)
            assert (tmp_path / "elsewhere" / "0.txt").exists()
        """,
    )
    result.assert_outcomes(passed=2)


ENTRY_POINT_TEST = """
    import os

    def test_fixtures_are_there(request, ignite_isolated):
        assert os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] == "1"
        assert request.config.pluginmanager.get_plugin("ignite.pytest_plugin") is not None
"""


def test_an_installed_ignite_trainer_registers_the_plugin_through_its_entry_point(pytester, ignite_install, monkeypatch):
    site = ignite_install(REPOSITORY)  # this ignite-trainer, built and installed by pip
    assert "pytest11" in (next(site.glob("ignite_trainer-*.dist-info")) / "entry_points.txt").read_text()
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_inner=textwrap.dedent(ENTRY_POINT_TEST))
    found = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    found.assert_outcomes(passed=1)
    # The name it is registered under: -p with the entry point registers it once; -p no: removes it.
    twice = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "ignite.pytest_plugin")
    twice.assert_outcomes(passed=1)
    blocked = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:ignite.pytest_plugin")
    blocked.assert_outcomes(errors=1)
    blocked.stdout.fnmatch_lines(["*fixture 'ignite_isolated' not found*"])
