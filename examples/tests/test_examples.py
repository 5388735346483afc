"""The examples run, learn, and use the plugins: digits.py (with checkpoints and --resume),
gan.py (tuple outputs, plots) and the in-house csv_logger plugin installed as a distribution."""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from ignite import PluginInactive, Trainer
from ignite.pytest_plugin import IgniteInstall, IgniteTrainer

EXAMPLES = Path(__file__).resolve().parents[1]
DIGITS = EXAMPLES / "digits.py"
GAN = EXAMPLES / "gan.py"
CUSTOM_PLUGIN = EXAMPLES / "custom_plugin"
INSTALLED = {entry_point.name for entry_point in entry_points(group="ignite.plugins")}
ITERATIONS_PER_EPOCH = 45  # 1,437 training images in batches of 32
STALE_CHECKPOINT = "checkpoint_e0099_i00009999.pt"

needs_tensorboard = pytest.mark.skipif("tensorboard" not in INSTALLED, reason="ignite-tensorboard is not installed")
needs_checkpoint = pytest.mark.skipif("checkpoint" not in INSTALLED, reason="ignite-checkpoint is not installed")


def run_example(script: Path, *args: str, cwd: Path, pythonpath: str | None = None) -> str:
    """Run an example in a subprocess; return its output (stdout and stderr)."""
    env = dict(os.environ)
    # No Visdom server in tests: keep the plugin out rather than let it look for one.
    env["IGNITE_DISABLE_PLUGINS"] = "visdom"
    env.pop("IGNITE_DISABLE_PLUGIN_AUTOLOAD", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script), *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{output}"
    return output


def tensorboard_tags(log_dir: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir)
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short digits.py run (2 epochs) shared by the tests that look at its results."""
    folder = tmp_path_factory.mktemp("digits")
    # Left by an "earlier, longer run": a fresh run must remove it, or --resume would pick it.
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / STALE_CHECKPOINT).write_bytes(b"not a checkpoint")
    output = run_example(
        DIGITS,
        "--epochs", "2",
        "--log-dir", str(folder / "runs"),
        "--checkpoint-dir", str(folder / "checkpoints"),
        "--summary", str(folder / "summary.json"),
        cwd=folder,
    )  # fmt: skip
    summary = json.loads((folder / "summary.json").read_text())
    return {"folder": folder, "output": output, "summary": summary}


def test_digits_learns_and_reports(digits_run: dict[str, Any]) -> None:
    summary, output = digits_run["summary"], digits_run["output"]
    assert summary["epochs"] == 2 and summary["first_epoch"] == 1
    assert summary["iterations"] == 2 * ITERATIONS_PER_EPOCH
    assert summary["accuracy"] > 0.6  # chance is 0.1; two epochs reach about 0.9
    assert summary["accuracy_per_epoch"][-1] == summary["accuracy"]
    # Reported through the metrics plugin: correct predictions over the 360 validation images.
    assert "metrics" in summary["plugins"]
    assert summary["accuracy"] * 360 == pytest.approx(round(summary["accuracy"] * 360), abs=1e-4)
    assert summary["best_epoch"] in (1, 2)
    assert f"Final validation accuracy: {100 * summary['accuracy']:.2f}%" in output
    assert f"at epoch {summary['best_epoch']}" in output
    # logging is set up: ignite's own INFO lines show, and the per-epoch accuracy line.
    assert "INFO ignite: Active plugins:" in output
    assert "INFO digits: Epoch 2: validation loss" in output


@needs_tensorboard
def test_digits_writes_tensorboard_events(digits_run: dict[str, Any]) -> None:
    folder = digits_run["folder"]
    (log_dir,) = glob.glob(str(folder / "runs" / "digits-*"))
    tags = tensorboard_tags(log_dir)
    assert {"training/epoch_mean", "validation/mean/loss", "lr"} <= tags
    assert f"tensorboard --logdir {folder / 'runs'}" in digits_run["output"]


@needs_checkpoint
def test_digits_resume_continues_the_epoch_count(digits_run: dict[str, Any]) -> None:
    folder = digits_run["folder"]
    checkpoints = sorted(os.listdir(folder / "checkpoints"))
    assert STALE_CHECKPOINT not in checkpoints
    assert "removing 1 checkpoint(s) of an earlier run" in digits_run["output"]
    assert checkpoints and checkpoints[-1].startswith("checkpoint_e0002_")
    output = run_example(
        DIGITS,
        "--epochs", "3",
        "--resume",
        "--log-dir", str(folder / "runs"),
        "--checkpoint-dir", str(folder / "checkpoints"),
        "--summary", str(folder / "resumed.json"),
        cwd=folder,
    )  # fmt: skip
    resumed = json.loads((folder / "resumed.json").read_text())
    assert "Resuming after epoch 2" in output
    assert resumed["first_epoch"] == 3 and resumed["epochs"] == 3
    assert resumed["iterations"] == 3 * ITERATIONS_PER_EPOCH
    # The validation history of epochs 1 and 2 came back from the checkpoint.
    assert resumed["accuracy_per_epoch"][:2] == digits_run["summary"]["accuracy_per_epoch"]
    assert any(name.startswith("checkpoint_e0003_") for name in os.listdir(folder / "checkpoints"))


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gan_histories_hold_tuples_and_plots_are_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "visdom")
    monkeypatch.chdir(tmp_path)
    gan = load_module(GAN, "ignite_example_gan")
    threads = torch.get_num_threads()
    try:
        trainer = gan.main(["--epochs", "6", "--plot-every", "3", "--out", "out", "--log-dir", "runs"])
    finally:
        torch.set_num_threads(threads)
    history = trainer.training_history
    assert len(history) == 6 * 16 and history.num_runs == 6
    assert all(type(value) is tuple and len(value) == 2 for value in history)
    assert all(type(number) is float for value in history for number in value)
    assert set(history.run_means()) == {"0", "1"}
    images = sorted(os.listdir(tmp_path / "out"))
    assert images == ["epoch_003.png", "epoch_006.png"]
    for name in images:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "tensorboard" in INSTALLED:
        (log_dir,) = glob.glob(str(tmp_path / "runs" / "gan-*"))
        tags = tensorboard_tags(log_dir)
        assert {
            "training/epoch_mean/0",
            "training/epoch_mean/1",
            "training/iteration/0",
            "training/iteration/1",
        } <= tags


def test_gan_mode_coverage_tells_modes_from_a_ring() -> None:
    gan = load_module(GAN, "ignite_example_gan_coverage")
    torch.manual_seed(0)
    assert gan.mode_coverage(gan.mixture(1000))[0] == gan.MODES
    angles = torch.rand(1000) * 2 * torch.pi
    ring = gan.RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    assert gan.mode_coverage(ring)[0] == 0


# -- the in-house plugin -------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_custom_plugin_installs_as_a_distribution_and_writes_rows(tmp_path: Path, ignite_install: IgniteInstall) -> None:
    site = ignite_install(CUSTOM_PLUGIN)
    assert list(site.glob("ignite_csv_logger-0.1.0.dist-info"))
    log = tmp_path / "log.csv"
    plugins = {"csv_logger": {"file": str(log), "optimizer": "@optimizer"}, "checkpoint": False, "tensorboard": False}
    plugins = {name: value for name, value in plugins.items() if name == "csv_logger" or name in INSTALLED}
    output = run_example(
        DIGITS, "--epochs", "2", "--plugins-json", json.dumps(plugins), cwd=tmp_path, pythonpath=str(site)
    )
    # Found through its entry point, as an installed distribution.
    assert "csv_logger (ignite-csv-logger 0.1.0)" in output
    rows = read_rows(log)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert [row["iteration"] for row in rows] == [str(ITERATIONS_PER_EPOCH), str(2 * ITERATIONS_PER_EPOCH)]
    # The validation outputs' preds and target (tensors, for the metrics plugin) are no numbers.
    assert list(rows[0]) == ["epoch", "iteration", "training", "validation/loss", "validation/count", "lr"]
    assert float(rows[1]["training"]) < float(rows[0]["training"])
    assert float(rows[0]["lr"]) == pytest.approx(2e-3)
    assert float(rows[0]["validation/count"]) == 120.0
    assert not (CUSTOM_PLUGIN / "build").exists()


@pytest.fixture
def csv_logger_class() -> type:
    module = load_module(CUSTOM_PLUGIN / "ignite_csv_logger.py", "ignite_csv_logger_under_test")
    return module.CSVLogger


def tiny_trainer(ignite_trainer: IgniteTrainer) -> Trainer:
    data = [torch.tensor(float(i)) for i in range(3)]
    return ignite_trainer(
        data, lambda batch: float(batch), validation_data=data[:2], validation_update_function=lambda batch: (1.0, 2.0)
    )


def test_csv_logger_is_inactive_without_a_file(csv_logger_class: type) -> None:
    with pytest.raises(PluginInactive, match="'file'"):
        csv_logger_class()
    with pytest.raises(TypeError, match="optimizer"):
        csv_logger_class(file="x.csv", optimizer=object())


def test_csv_logger_keeps_done_epochs_when_a_run_continues(
    tmp_path: Path, ignite_trainer: IgniteTrainer, csv_logger_class: type
) -> None:
    path = tmp_path / "log.csv"
    trainer = tiny_trainer(ignite_trainer)
    plugin = trainer.register_plugin(csv_logger_class(file=path), name="csv_logger")
    trainer.run(2)
    state_after_2 = trainer.state_dict()
    trainer.run(3)  # continues: epoch 3 is appended to epochs 1 and 2
    rows = read_rows(path)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "iteration", "training", "validation/0", "validation/1"]
    assert rows[2]["training"] == "1.0" and rows[2]["validation/1"] == "2.0"
    assert plugin.state_dict() == {"columns": list(rows[0])}

    # A trainer resumed from the state after epoch 2 drops the row written after it, then appends.
    resumed = tiny_trainer(ignite_trainer)
    resumed.register_plugin(csv_logger_class(file=path), name="csv_logger")
    resumed.load_state_dict(state_after_2)
    resumed.run(4)
    assert [row["epoch"] for row in read_rows(path)] == ["1", "2", "3", "4"]
    assert [row["iteration"] for row in read_rows(path)] == ["3", "6", "9", "12"]

    # A new run starts the file afresh.
    fresh = tiny_trainer(ignite_trainer)
    fresh.register_plugin(csv_logger_class(file=path), name="csv_logger")
    fresh.run(1)
    assert [row["epoch"] for row in read_rows(path)] == ["1"]


DIGITS_DISTRIBUTED = EXAMPLES / "digits_distributed.py"


def torchrun_example(script: Path, *args: str, cwd: Path) -> str:
    """Run an example under ``torchrun --standalone --nproc-per-node=2`` (gloo on CPU); return its
    output. One relaunch when the only failure is gloo's rare abort at teardown (see
    benchmarks/gloo_teardown.py), which says nothing about the example, from ``cwd`` as the
    first launch found it (the checkpoints a ``--resume`` reads)."""
    from ignite.testing import GLOO_TEARDOWN_ABORT, folder_kept_aside

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), *args]
    with folder_kept_aside(cwd) as put_back:
        for attempt in range(2):
            if attempt:
                put_back()
            result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
            output = result.stdout + result.stderr
            if result.returncode == 0 or GLOO_TEARDOWN_ABORT not in output:
                break
    assert result.returncode == 0, f"torchrun {script.name} {' '.join(args)} failed:\n{output}"
    return output


@needs_checkpoint
def test_digits_distributed_with_ddp_checkpoints_and_resumes_on_two_gloo_ranks(tmp_path: Path) -> None:
    first = torchrun_example(DIGITS_DISTRIBUTED, "--epochs", "1", "--checkpoint-dir", "ck", cwd=tmp_path)
    assert "rank 0 summary: {'epochs': 1, 'iterations': 23" in first, first  # 1,437 images / 2 ranks / 32
    assert [n for n in os.listdir(tmp_path / "ck") if n.endswith(".pt")] == ["checkpoint_e0001_i00000023.pt"]
    resumed = torchrun_example(DIGITS_DISTRIBUTED, "--epochs", "2", "--checkpoint-dir", "ck", "--resume", cwd=tmp_path)
    assert "Resumed from ck/checkpoint_e0001_i00000023.pt" in resumed, resumed
    assert "rank 0 summary: {'epochs': 2, 'iterations': 46" in resumed, resumed
    if "metrics" in INSTALLED:  # over both ranks' halves of the 360 validation samples
        accuracy = float(re.search(r"'accuracy': ([0-9.]+)", resumed).group(1))
        assert 0.6 < accuracy <= 1 and accuracy * 360 == pytest.approx(round(accuracy * 360), abs=1e-4)


@needs_checkpoint
def test_digits_distributed_with_fsdp_checkpoints_shards_and_resumes_on_two_gloo_ranks(tmp_path: Path) -> None:
    first = torchrun_example(DIGITS_DISTRIBUTED, "--fsdp", "--epochs", "1", "--checkpoint-dir", "ck", cwd=tmp_path)
    assert "rank 0 summary: {'epochs': 1, 'iterations': 23" in first, first
    assert [n for n in os.listdir(tmp_path / "ck") if n.startswith("checkpoint")] == ["checkpoint_e0001_i00000023"]
    assert sorted(os.listdir(tmp_path / "ck" / "checkpoint_e0001_i00000023")) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "ignite.pt"
    ]  # fmt: skip
    resumed = torchrun_example(DIGITS_DISTRIBUTED, "--fsdp", "--epochs", "2", "--checkpoint-dir", "ck", "--resume", cwd=tmp_path)
    assert "Resumed from ck/checkpoint_e0001_i00000023: epoch 1, iteration 23 (end of the epoch)" in resumed, resumed
    assert "rank 0 summary: {'epochs': 2, 'iterations': 46" in resumed, resumed
