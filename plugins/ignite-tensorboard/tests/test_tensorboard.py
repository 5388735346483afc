"""Tests of the ignite-tensorboard plugin: event files read back with TensorBoard's own reader."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ignite_tensorboard
import pytest
import torch
from ignite_tensorboard import DEFAULT_EVERY_ITERATIONS, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ignite import PluginError, Trainer, TrainingEvents

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names

SCRIPT = Path(__file__).with_name("tensorboard_resume_script.py")
TIMEOUT = 180


def accumulator_of(log_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    accumulator = accumulator_of(log_dir)
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def close_to(pairs, expected):
    """Steps equal and values equal up to float32 rounding (events store float32)."""
    return [step for step, _ in pairs] == [step for step, _ in expected] and all(
        value == pytest.approx(want, rel=1e-6, abs=1e-7) for (_, value), (_, want) in zip(pairs, expected)
    )


def float_update(batch):
    return float(batch) * 0.5 + 0.25


def trainer_with_validation(batches: int, validation_data: list[float], **options: Any) -> Trainer:
    """A trainer on ``range(batches)`` (float_update) that validates ``validation_data`` as it
    is, with the plugin given ``options``."""
    return Trainer(
        list(range(batches)),
        float_update,
        validation_data=validation_data,
        validation_update_function=lambda batch: batch,
        plugins={"tensorboard": options},
    )


def plugin_of(trainer: Trainer) -> TensorBoardLogger:
    return trainer.plugins["tensorboard"]


def test_float_outputs_iteration_epoch_and_validation_series_all_stepped_by_iteration(tmp_path):
    trainer = Trainer(
        list(range(10)),
        float_update,
        validation_data=[1, 2, 3, 4],
        validation_update_function=lambda batch: batch / 10,
        plugins={"tensorboard": {"dir": str(tmp_path), "every_iterations": 3}},
    )
    trainer.run(2)
    events = read_events(tmp_path)
    assert set(events) == {"training/iteration", "training/epoch_mean", "validation/mean", "epoch"}
    history = trainer.training_history
    assert close_to(events["training/iteration"], [(step, history[step - 1]) for step in range(3, 21, 3)])
    # Epoch-level series at the global iteration of the epoch's end: one step scale for all.
    assert close_to(events["training/epoch_mean"], [(10, history.run_mean(0)), (20, history.run_mean(1))])
    validation = trainer.validation_history
    assert close_to(events["validation/mean"], [(10, validation.run_mean(0)), (20, validation.run_mean(1))])
    assert events["epoch"] == [(10, 1.0), (20, 2.0)]
    assert plugin_of(trainer).dir == str(tmp_path)


def test_tuple_outputs_get_one_series_per_item(tmp_path):
    trainer = Trainer(
        list(range(6)),
        lambda batch: (batch * 1.0, torch.tensor(batch * 2.0), "not a number"),
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 2}},
    )
    trainer.run(1)
    events = read_events(tmp_path)
    assert set(events) == {
        "training/iteration/0",
        "training/iteration/1",
        "training/epoch_mean/0",
        "training/epoch_mean/1",
        "epoch",
    }
    assert close_to(events["training/iteration/0"], [(2, 1.0), (4, 3.0), (6, 5.0)])
    assert close_to(events["training/iteration/1"], [(2, 2.0), (4, 6.0), (6, 10.0)])
    means = trainer.training_history.run_means()
    assert close_to(events["training/epoch_mean/0"], [(6, means["0"])])
    assert close_to(events["training/epoch_mean/1"], [(6, means["1"])])


def test_dict_outputs_and_dict_validation_means(tmp_path):
    trainer = Trainer(
        [0.5, 1.5, 2.5, 3.5],
        lambda batch: {"loss": batch, "accuracy": 1 - batch / 10},
        validation_data=[1.0, 3.0],
        validation_update_function=lambda batch: {"loss": batch * 2},
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1}},
    )
    trainer.run(3)
    events = read_events(tmp_path)
    assert set(events) == {
        "training/iteration/loss",
        "training/iteration/accuracy",
        "training/epoch_mean/loss",
        "training/epoch_mean/accuracy",
        "validation/mean/loss",
        "epoch",
    }
    history = trainer.training_history
    assert close_to(events["training/iteration/loss"], [(step, history[step - 1]["loss"]) for step in range(1, 13)])
    assert close_to(
        events["training/iteration/accuracy"], [(step, history[step - 1]["accuracy"]) for step in range(1, 13)]
    )
    assert close_to(events["training/epoch_mean/loss"], [(step, 2.0) for step in (4, 8, 12)])
    assert close_to(events["validation/mean/loss"], [(step, 4.0) for step in (4, 8, 12)])


def test_trainer_metrics_are_logged_at_each_epoch_s_end_when_there_are_any(tmp_path):
    trainer = Trainer(list(range(3)), float_update, plugins={"tensorboard": {"dir": tmp_path}})

    def set_metrics(t):  # as a metric plugin does, from its "observe" phase
        if t.current_epoch >= 2:
            t.metrics.update({"accuracy": 0.25 * t.current_epoch, "f1": 1.0 / t.current_epoch})

    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, set_metrics)  # handlers run before the hooks
    trainer.run(3)
    events = read_events(tmp_path)
    assert close_to(events["metrics/accuracy"], [(6, 0.5), (9, 0.75)])  # epoch 1 had none
    assert close_to(events["metrics/f1"], [(6, 0.5), (9, 1 / 3)])


def count_reads(monkeypatch) -> list[list[Any]]:
    """Record the items of the outputs each call of the plugin's ``scalars_of`` was given (one
    list per call)."""
    reads: list[list[Any]] = []
    real = ignite_tensorboard.scalars_of

    def counting(outputs):
        reads.append([item for output in outputs for item in (output.values() if isinstance(output, dict) else output)])
        return real(outputs)

    monkeypatch.setattr(ignite_tensorboard, "scalars_of", counting)
    return reads


def test_only_every_every_iterations_th_output_is_read(tmp_path, monkeypatch):
    reads = count_reads(monkeypatch)  # the outputs the plugin turns into numbers (no .item() on the others)
    trainer = Trainer(
        list(range(20)),
        lambda batch: {"loss": float(batch)},
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 5}},
    )
    trainer.run(1)
    assert reads == [[4.0, 9.0, 14.0, 19.0]]  # iterations 5, 10, 15, 20 out of 20, in one read
    assert read_events(tmp_path)["training/iteration/loss"] == [(5, 4.0), (10, 9.0), (15, 14.0), (20, 19.0)]


def test_kept_tensor_outputs_are_read_in_one_call_per_write(tmp_path, monkeypatch):
    # One scalars_of() call per write (each epoch's end here), not one per kept output: on a GPU,
    # one host sync for the whole batch.
    reads = count_reads(monkeypatch)
    trainer = Trainer(
        list(range(10)),
        lambda batch: {"loss": torch.tensor(batch / 4), "steps": (torch.tensor([batch]), "text")},
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1}},
    )
    trainer.run(2)
    assert len(reads) == 2 and all(len(values) == 20 for values in reads)  # 10 outputs of 2 items each
    events = read_events(tmp_path)
    assert close_to(events["training/iteration/loss"], [(step, ((step - 1) % 10) / 4) for step in range(1, 21)])
    assert "training/iteration/steps" not in events  # a tuple inside a dict is no number, as scalars() has it


def test_a_batch_write_mid_epoch_reads_once(tmp_path, monkeypatch):
    monkeypatch.setattr(ignite_tensorboard, "_BATCH", 4)
    reads = count_reads(monkeypatch)
    trainer = Trainer(
        list(range(20)),
        lambda batch: (torch.tensor(float(batch)), batch * 2.0),
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 2}},
    )
    trainer.run(1)
    # 10 logged iterations: written at the 4th and 8th (full batches), then the 2 left at the epoch's end.
    assert [len(values) for values in reads] == [8, 8, 4]
    events = read_events(tmp_path)
    assert close_to(events["training/iteration/0"], [(step, step - 1.0) for step in range(2, 21, 2)])
    assert close_to(events["training/iteration/1"], [(step, (step - 1) * 2.0) for step in range(2, 21, 2)])


def test_logged_outputs_are_written_in_batches_and_none_is_lost(tmp_path):
    batch = ignite_tensorboard._BATCH
    trainer = Trainer(
        list(range(2 * batch + 10)), float_update, plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1}}
    )
    kept: list[int] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: kept.append(len(plugin_of(t)._pending))
    )
    trainer.run(1)
    # Kept until a batch is full, then written: memory stays bounded in a long epoch.
    assert max(kept) == batch - 1 and kept[batch] == 0  # kept[i]: before iteration i + 1
    assert [step for step, _ in read_events(tmp_path)["training/iteration"]] == list(range(1, 2 * batch + 11))


def test_learning_rates_per_epoch_before_the_end_of_epoch_scheduler_step(tmp_path):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 1.0}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def update(batch):
        optimizer.zero_grad()
        loss = model(torch.ones(1, 2)).sum() ** 2
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Trainer([0, 1], update, plugins={"tensorboard": {"dir": tmp_path, "optimizer": optimizer}})
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda t: scheduler.step())
    trainer.run(3)
    events = read_events(tmp_path)
    assert close_to(events["lr/0"], [(2, 0.1), (4, 0.05), (6, 0.025)])
    assert close_to(events["lr/1"], [(2, 1.0), (4, 0.5), (6, 0.25)])
    assert "training/iteration" not in events  # 6 iterations, fewer than the default every_iterations
    assert DEFAULT_EVERY_ITERATIONS > 6


def test_one_optimizer_with_one_group_is_tagged_lr(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    Trainer([1.0], float_update, plugins={"tensorboard": {"dir": tmp_path, "optimizer": optimizer}}).run(2)
    assert close_to(read_events(tmp_path)["lr"], [(1, 0.3), (2, 0.3)])


def test_an_epoch_cut_short_by_terminate_logs_no_stale_validation_mean(tmp_path):
    trainer = trainer_with_validation(10, [1.0], dir=tmp_path, every_iterations=1)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 14 else None
    )
    trainer.run(3)
    events = read_events(tmp_path)
    assert [step for step, _ in events["training/iteration"]] == list(range(1, 15))
    assert close_to(events["training/epoch_mean"], [(10, 2.5), (14, sum(float_update(b) for b in range(4)) / 4)])
    assert [step for step, _ in events["validation/mean"]] == [10]  # epoch 2 skipped its validation


# -- the writer -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # inside SummaryWriter.add_graph
def test_the_writer_is_open_for_the_run_and_takes_a_handler_s_images_histograms_text_and_graph(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model = torch.nn.Linear(3, 2)
    trainer = Trainer([0.0, 1.0], float_update, plugins={"tensorboard": {"dir": tmp_path}})
    assert plugin_of(trainer).writer is None  # nothing opened before training starts
    seen: list[Any] = []

    def started(t):
        writer = plugin_of(t).writer
        seen.append(writer)
        writer.add_graph(model, torch.zeros(1, 3))
        writer.add_text("notes", "a run of two epochs", t.current_iteration)

    def epoch_completed(t):
        writer = plugin_of(t).writer
        writer.add_image("samples", torch.full((3, 4, 4), 0.1 * t.current_epoch), t.current_iteration)
        writer.add_histogram("weights", model.weight.detach(), t.current_iteration)

    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, started)  # after the plugin's hook
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, epoch_completed)  # before it: before the flush
    trainer.run(2)
    (writer,) = seen
    assert isinstance(writer, SummaryWriter) and writer.get_logdir() == str(tmp_path)
    assert plugin_of(trainer).writer is None  # closed with the run
    accumulator = accumulator_of(tmp_path)
    tags = accumulator.Tags()
    assert [event.step for event in accumulator.Images("samples")] == [2, 4]
    assert [event.step for event in accumulator.Histograms("weights")] == [2, 4]
    assert "notes/text_summary" in tags["tensors"]
    assert tags["graph"] is True
    assert [step for step, _ in read_events(tmp_path)["training/epoch_mean"]] == [2, 4]  # the same run folder
    assert len([name for name in os.listdir(tmp_path) if name.startswith("events.out.tfevents.")]) == 1


def hparams_of(log_dir) -> tuple[dict[str, Any], list[str]]:
    """The hyperparameters and metric tags of a folder's hparams summaries, as TensorBoard's
    hparams plugin reads them."""
    contents = accumulator_of(log_dir).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(contents["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(contents["_hparams_/experiment"]).experiment
    values = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    return values, sorted(metric.name.tag for metric in experiment.metric_infos)


def test_hparams_log_the_options_and_the_user_s_hyperparameters_in_the_run_folder(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    trainer = trainer_with_validation(
        4,
        [1.0],
        dir=tmp_path,
        every_iterations=2,
        optimizer=optimizer,
        hparams={"batch_size": 32, "model": "mlp", "dropout": 0.5, "augment": True},
    )
    trainer.run(2)
    values, metrics = hparams_of(tmp_path)
    assert values == {
        "batch_size": 32.0,
        "model": "mlp",
        "dropout": 0.5,
        "augment": True,
        "tensorboard/dir": str(tmp_path),
        "tensorboard/every_iterations": 2.0,
        "tensorboard/flush_secs": 120.0,
        "tensorboard/optimizer": "SGD",
    }
    # The metrics are the epoch-level series, read by the dashboard from this same folder.
    assert metrics == ["lr", "training/epoch_mean", "validation/mean"]
    assert os.listdir(tmp_path) == [name for name in os.listdir(tmp_path) if name.startswith("events.out.tfevents.")]


def test_hparams_true_logs_the_options_alone_and_none_are_logged_by_default(tmp_path):
    Trainer([1.0], float_update, plugins={"tensorboard": {"dir": tmp_path / "on", "hparams": True}}).run(1)
    values, metrics = hparams_of(tmp_path / "on")
    assert set(values) == {"tensorboard/dir", "tensorboard/every_iterations", "tensorboard/flush_secs"}
    assert metrics == ["training/epoch_mean"]
    Trainer([1.0], float_update, plugins={"tensorboard": {"dir": tmp_path / "off"}}).run(1)
    with pytest.raises(KeyError, match="hparams"):  # no summary of that plugin in the folder
        accumulator_of(tmp_path / "off").PluginTagToContent("hparams")


# -- closing, failures ------------------------------------------------------------------------


def test_training_that_raises_leaves_every_value_written_before_it_readable_and_the_writer_closed(tmp_path):
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    writers = []

    def update(batch):
        if batch == 7:
            raise RuntimeError("boom at batch 7")
        return float(batch)

    trainer = Trainer(
        list(range(5)),
        lambda batch: update(batch + 5 * (trainer.current_epoch - 1)),
        validation_data=[2.0],
        validation_update_function=lambda batch: batch,
        plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1, "flush_secs": 3600, "optimizer": optimizer}},
    )
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, lambda t: writers.append(plugin_of(t).writer))
    threads_before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="boom at batch 7"):
        trainer.run(3)
    (writer, same) = writers  # one writer for the run
    assert same is writer and writer.file_writer is None  # closed (SummaryWriter.close drops it)
    assert plugin_of(trainer).writer is None
    assert set(threading.enumerate()) == threads_before  # the writer's thread ended with it
    events = read_events(tmp_path)
    # flush_secs=3600: epoch 1's end flushed its series, only the close can have put 6 and 7 on disk.
    assert close_to(events["training/iteration"], [(step, float(step - 1)) for step in range(1, 8)])
    assert close_to(events["training/epoch_mean"], [(5, 2.0)])
    assert close_to(events["validation/mean"], [(5, 2.0)])
    assert close_to(events["lr"], [(5, 0.5)])


def test_a_failure_to_close_is_logged_and_the_run_s_own_exception_propagates(tmp_path, caplog):
    def update(batch):
        if batch == 2:
            raise RuntimeError("the run's own error")
        return float(batch)

    real_close = []

    def break_close(t):
        writer = plugin_of(t).writer
        real_close.append(writer.close)

        def fail():
            raise OSError("disk gone")

        writer.close = fail

    trainer = Trainer([0, 1, 2], update, plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1}})
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, break_close)
    try:
        with caplog.at_level(logging.ERROR, logger="ignite.tensorboard"), pytest.raises(RuntimeError, match="own error"):
            trainer.run(1)
    finally:
        real_close[0]()  # the writer's thread and file
    (record,) = [record for record in caplog.records if record.name == "ignite.tensorboard"]
    assert record.getMessage() == f"Could not close the TensorBoard writer of {tmp_path}"
    assert isinstance(record.exc_info[1], OSError)
    assert plugin_of(trainer).writer is None


def test_the_writer_s_thread_ends_with_each_run(tmp_path):
    trainer = trainer_with_validation(6, [1.0], dir=tmp_path, every_iterations=1, flush_secs=1e-9)
    before = set(threading.enumerate())
    during: list[int] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: during.append(len(set(threading.enumerate()) - before))
    )
    trainer.run(2)
    assert during == [1] * 12  # SummaryWriter's one writing thread, while the run lasts
    assert set(threading.enumerate()) == before and plugin_of(trainer).writer is None
    assert len(read_events(tmp_path)["training/iteration"]) == 12


START_ON_A_FULL_DISK = """
import errno, json, os, resource, signal, sys

import torch.utils.tensorboard  # before the limit
from ignite import Trainer

log_dir = sys.argv[1]
trainer = Trainer([1.0, 2.0], lambda batch: batch, plugins={"tensorboard": {"dir": log_dir, "every_iterations": 1}})


def open_in_log_dir():
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return [path for path in paths if path.startswith(log_dir)]


# No regular file may grow (the disk is full, as far as this process can tell): the event file
# is created, and its writes fail with EFBIG instead of the process being killed.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
report = {"raised": None}
try:
    trainer.run(1)
except OSError as error:
    report["raised"] = errno.errorcode[error.errno]
report.update({"open": open_in_log_dir(), "files": os.listdir(log_dir), "writer": repr(trainer.plugins["tensorboard"].writer)})
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE and /proc/self/fd")
def test_a_writer_whose_writes_fail_raises_and_closes_its_file(tmp_path):
    # A real write failure: a subprocess limited to files of 0 bytes (RLIMIT_FSIZE), the closest
    # to a full disk without one; stdout is a pipe, so the report still gets out.
    result = subprocess.run(
        [sys.executable, "-c", START_ON_A_FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["raised"] == "EFBIG" and len(report["files"]) == 1  # the file was created, then its write failed
    assert report["open"] == [] and report["writer"] == "None"


# -- folders and options ----------------------------------------------------------------------


def test_a_second_run_continues_in_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer([1.0, 2.0], float_update, plugins={"tensorboard": {"every_iterations": 1}})
    trainer.run(1)
    first_dir = plugin_of(trainer).dir
    trainer.run(2)  # its file is named after a later second, so TensorBoard reads it second
    assert plugin_of(trainer).dir == first_dir
    names = sorted(os.listdir(first_dir))
    assert len(names) == 2 and names[0].split(".")[3] < names[1].split(".")[3]
    events = read_events(first_dir)
    assert [step for step, _ in events["training/iteration"]] == [1, 2, 3, 4]
    assert [step for step, _ in events["training/epoch_mean"]] == [2, 4]


@pytest.mark.parametrize(
    ("every_iterations", "error"),
    [(0, ValueError), (-5, ValueError), (2.5, TypeError), ("10", TypeError), (True, TypeError), (None, TypeError)],
)
def test_every_iterations_must_be_a_positive_int(every_iterations, error):
    with pytest.raises(error, match="every_iterations must be a positive int"):
        TensorBoardLogger(every_iterations=every_iterations)


def test_a_bad_option_through_the_trainer_names_the_plugin_and_option():
    with pytest.raises(PluginError, match=r"'tensorboard'.*every_iterations must be a positive int") as caught:
        Trainer([1.0], float_update, plugins={"tensorboard": {"every_iterations": 0}})
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(("old", "new"), [("log_dir", "dir"), ("log_every", "every_iterations")])
def test_the_former_option_names_are_refused_with_the_new_one(tmp_path, old, new):
    with pytest.raises(PluginError, match=rf"'tensorboard'.*no option '{old}'\. Did you mean '{new}'\?"):
        Trainer([1.0], float_update, plugins={"tensorboard": {old: str(tmp_path) if old == "log_dir" else 10}})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be a torch optimizer"),
        ({"flush_secs": 0}, "flush_secs must be a positive number"),
        ({"dir": 3}, "dir must be a path"),
        ({"hparams": "lr=0.1"}, "hparams must be True, False or a dict"),
        ({"hparams": {"layers": [1, 2]}}, r"hparams: 'layers' -> \[1, 2\]: .* got list"),
    ],
)
def test_other_options_are_checked(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        TensorBoardLogger(**options)


def test_autoloaded_with_defaults_writes_under_runs_and_logs_the_command(tmp_path, monkeypatch, caplog, ignite_autoload):
    ignite_autoload("tensorboard")
    monkeypatch.chdir(tmp_path)
    trainer = Trainer([1.0, 2.0, 3.0], float_update)
    assert isinstance(trainer.plugins.get("tensorboard"), TensorBoardLogger)
    with caplog.at_level(logging.INFO, logger="ignite.tensorboard"):
        trainer.run(1)
    log_dir = plugin_of(trainer).dir
    assert os.path.dirname(log_dir) == str(tmp_path / "runs")
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", os.path.basename(log_dir))
    assert [step for step, _ in read_events(log_dir)["training/epoch_mean"]] == [3]
    lines = [record.getMessage() for record in caplog.records if record.name == "ignite.tensorboard"]
    assert lines == [f"TensorBoard logs go to {log_dir}; view them with: tensorboard --logdir {log_dir}"]


def test_default_dirs_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Trainer([1.0], float_update, plugins={"tensorboard": {}})
    second = Trainer([1.0], float_update, plugins={"tensorboard": {}})
    first.run(1)
    second.run(1)
    assert plugin_of(first).dir != plugin_of(second).dir
    assert os.path.isdir(plugin_of(first).dir) and os.path.isdir(plugin_of(second).dir)


def test_nothing_is_created_before_training_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer([1.0], float_update, plugins={"tensorboard": {"dir": "logs"}})
    assert plugin_of(trainer).dir == "logs"
    assert not (tmp_path / "logs").exists()
    trainer.run(1)
    assert read_events(tmp_path / "logs")["training/epoch_mean"] == [(1, 0.75)]


def test_importing_and_constructing_does_not_import_tensorboard():
    code = (
        "import sys, ignite_tensorboard; ignite_tensorboard.TensorBoardLogger(every_iterations=10, hparams=True); "
        "print(sorted(m for m in sys.modules if m.startswith(('tensorboard', 'torch.utils.tensorboard'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- flushing ---------------------------------------------------------------------------------


def test_an_epoch_s_series_are_on_disk_while_the_next_epoch_runs(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    seen: list[dict[str, list[tuple[int, float]]]] = []
    trainer = trainer_with_validation(4, [1.0, 3.0], dir=tmp_path, every_iterations=2, flush_secs=3600, optimizer=optimizer)
    trainer.add_event_handler(
        TrainingEvents.EPOCH_STARTED, lambda t: seen.append(read_events(tmp_path)) if t.current_epoch == 2 else None
    )
    trainer.run(2)
    (during_epoch_2,) = seen
    # flush_secs=3600 and a few hundred bytes: only the flush at epoch 1's end put these on disk.
    assert close_to(during_epoch_2["training/iteration"], [(2, float_update(1)), (4, float_update(3))])
    assert close_to(during_epoch_2["training/epoch_mean"], [(4, trainer.training_history.run_mean(0))])
    assert close_to(during_epoch_2["validation/mean"], [(4, 2.0)])
    assert close_to(during_epoch_2["lr"], [(4, 0.3)])
    assert [step for step, _ in read_events(tmp_path)["training/epoch_mean"]] == [4, 8]


def test_a_logged_iteration_flushes_once_flush_secs_have_passed(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(ignite_tensorboard, "_clock", lambda: now[0])
    # The clock at each iteration; the last flush was at the start (100.0).
    clock_at = {1: 100.0, 2: 109.9, 3: 110.0, 4: 115.0, 5: 119.9, 6: 120.0}
    on_disk: list[list[int]] = []

    def steps_on_disk(t):
        return [step for step, _ in read_events(tmp_path).get("training/iteration", [])]

    trainer = Trainer(
        list(range(6)), float_update, plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1, "flush_secs": 10}}
    )

    def iteration_started(t):
        on_disk.append(steps_on_disk(t))  # after the plugin's hook of the previous iteration
        now[0] = clock_at[t.current_iteration]

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, iteration_started)
    # After the last iteration, before the flush at EPOCH_COMPLETED.
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda t: on_disk.append(steps_on_disk(t)))
    trainer.run(1)
    assert on_disk == [
        [],  # before iteration 1
        [],  # after 1 (at 100.0)
        [],  # after 2 (9.9 s after the flush at the start)
        [1, 2, 3],  # after 3: 10 s, flushed
        [1, 2, 3],  # after 4 (5 s after that flush)
        [1, 2, 3],  # after 5 (9.9 s)
        [1, 2, 3, 4, 5, 6],  # after 6: 10 s, flushed
    ]


def test_a_state_taken_mid_epoch_has_every_point_logged_so_far_on_disk(tmp_path):
    trainer = Trainer(list(range(10)), float_update, plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 2, "flush_secs": 3600}})
    states: list[dict[str, Any]] = []
    on_disk: list[list[int]] = []

    def take_state(t):  # as the checkpoint plugin does, after the plugins' hooks of this iteration
        if t.current_iteration == 7:
            states.append(t.state_dict()["plugins"]["tensorboard"])
            on_disk.append([step for step, _ in read_events(tmp_path)["training/iteration"]])

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, take_state)  # before iteration 7's update
    trainer.run(1)
    assert on_disk == [[2, 4, 6]]
    assert states == [{"dir": str(tmp_path), "in_epoch": True, "hparams_written": False}]


# -- resume -----------------------------------------------------------------------------------


def test_a_state_names_the_folder_and_a_malformed_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Trainer([1.0, 2.0], float_update, plugins={"tensorboard": {"hparams": True}})
    first.run(1)
    state = first.state_dict()
    assert state["plugins"]["tensorboard"] == {"dir": plugin_of(first).dir, "in_epoch": False, "hparams_written": True}
    later = Trainer([1.0, 2.0], float_update, plugins={"tensorboard": {"hparams": True}})
    later.load_state_dict(state)
    assert plugin_of(later).dir == plugin_of(first).dir  # the default folder is the saved one
    later.run(2)
    assert [step for step, _ in read_events(plugin_of(first).dir)["training/epoch_mean"]] == [2, 4]
    assert sorted(os.listdir(tmp_path / "runs")) == [os.path.basename(plugin_of(first).dir)]
    broken = {**state, "plugins": {"tensorboard": {"dir": 3, "in_epoch": False, "hparams_written": False}}}
    with pytest.raises(ValueError, match="tensorboard state is malformed"):
        Trainer([1.0], float_update, plugins={"tensorboard": {}}).load_state_dict(broken)


@pytest.mark.parametrize("loaded", ["before run()", "from a TRAINING_STARTED handler"])
def test_a_run_resumed_from_a_state_inside_an_epoch_replaces_what_was_written_after_it(tmp_path, loaded):
    # In one process: a state taken after iteration 6 of an epoch of 8 (a logged one), the run
    # going on to write epoch 1's end and more, then a new trainer resumed from that state.
    def trainer_for(folder):
        return trainer_with_validation(8, [1.0, 3.0], dir=folder, every_iterations=2, hparams={"lr": 0.1})

    straight = trainer_for(tmp_path / "straight")
    straight.run(2)
    interrupted = trainer_for(tmp_path / "resumed")
    states: list[dict[str, Any]] = []
    interrupted.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: states.append(t.state_dict()) if t.current_iteration == 7 else None
    )
    interrupted.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 12 else None
    )
    interrupted.run(2)
    assert max(step for step, _ in read_events(tmp_path / "resumed")["training/iteration"]) == 12
    resumed = trainer_for(tmp_path / "resumed")
    if loaded == "before run()":
        resumed.load_state_dict(states[0])
    else:  # after the plugin opened its writer: it opens another one, which purges, at EPOCH_STARTED
        resumed.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: t.load_state_dict(states[0]))
    resumed.run(2)
    assert read_events(tmp_path / "resumed") == read_events(tmp_path / "straight")
    (values, metrics), (straight_values, straight_metrics) = hparams_of(tmp_path / "resumed"), hparams_of(tmp_path / "straight")
    assert values.pop("tensorboard/dir") == str(tmp_path / "resumed")
    assert straight_values.pop("tensorboard/dir") == str(tmp_path / "straight")
    assert (values, metrics) == (straight_values, straight_metrics)


def series_of(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a folder, its steps checked to be strictly increasing."""
    events = read_events(folder)
    for name, points in events.items():
        steps = [step for step, _ in points]
        assert all(a < b for a, b in itertools.pairwise(steps)), f"{name}: steps {steps} not strictly increasing"
    return events


def run_script(config: dict, cwd: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(config)], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def kill_when_stopped(config: dict, cwd: Path) -> None:
    """Run the script until it has written ``config["marker"]`` (its checkpoint on disk, at
    iteration ``stop_at``), then SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(config)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(config["marker"]):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the script never reached its stopping point"
            time.sleep(0.05)  # polling a file the child writes, with a deadline
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


TENSORBOARD = {"every_iterations": 2, "flush_secs": 1e-6, "hparams": {"lr": 0.05}}  # every point on disk at once


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple[int, float]]]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = {"tensorboard": {**TENSORBOARD, "dir": str(folder / "tb")}, "checkpoint": {"every_iterations": 6}, "folder": str(folder / "ck")}
    run_script(config, folder)
    return series_of(folder / "tb")


@pytest.mark.parametrize(
    ("checkpoint", "stop_at", "saved_at"),
    [
        # Inside epoch 3 (iterations 17-24): the point of iteration 18 is purged and written again.
        ({"every_iterations": 6}, 23, 18),
        # After epoch 3's last iteration, before its end: the end-of-epoch points of step 24 too.
        ({"every_iterations": 6}, 27, 24),
        # At epoch 3's end: everything of step 24 was written before the checkpoint.
        ({"every_epochs": 1}, 27, 24),
    ],
    ids=["mid-epoch", "epoch-last-iteration", "epoch-end"],
)
def test_a_run_killed_after_a_checkpoint_and_resumed_has_the_uninterrupted_run_s_series(
    tmp_path, uninterrupted, checkpoint, stop_at, saved_at
):
    # The default folder (runs/<time>) the first process chose is the one the resumed one writes to.
    config = {"tensorboard": TENSORBOARD, "checkpoint": {**checkpoint, "resume": True}, "folder": str(tmp_path / "ck")}
    kill_when_stopped({**config, "stop_at": stop_at, "marker": str(tmp_path / "stopped")}, tmp_path)
    (folder,) = (tmp_path / "runs").iterdir()
    before = series_of(folder)
    # The killed run wrote points past its newest checkpoint: the resumed run must replace them.
    assert max(step for points in before.values() for step, _ in points) > saved_at
    assert sorted(os.listdir(tmp_path / "ck"))[-1].endswith(f"_i{saved_at:08d}.pt")
    result = run_script(config, tmp_path)
    assert result == {"dir": str(folder), "iteration": 32}
    assert list((tmp_path / "runs").iterdir()) == [folder]
    assert len(os.listdir(folder)) == 2  # the killed run's event file is kept, read first
    after = series_of(folder)
    assert after == uninterrupted
    assert {"training/iteration", "training/epoch_mean", "validation/mean/mse", "metrics/val_mse", "lr", "epoch"} <= set(after)
    assert [step for step, _ in after["epoch"]] == [8, 16, 24, 32]
    assert hparams_of(folder)[0]["lr"] == 0.05
