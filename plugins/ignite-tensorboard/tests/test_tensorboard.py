"""Tests of the ignite-tensorboard plugin: event files read back with TensorBoard's own reader."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import ignite_tensorboard
import pytest
import torch
from ignite_tensorboard import DEFAULT_LOG_EVERY, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from ignite import PluginError, Trainer, TrainingEvents


pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names


def read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
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


def test_float_outputs_iteration_epoch_and_validation_series(tmp_path):
    trainer = Trainer(
        list(range(10)),
        float_update,
        validation_data=[1, 2, 3, 4],
        validation_update_function=lambda batch: batch / 10,
        plugins={"tensorboard": {"log_dir": str(tmp_path), "log_every": 3}},
    )
    trainer.run(2)
    events = read_events(tmp_path)
    assert set(events) == {"training/iteration", "training/epoch_mean", "validation/mean"}
    history = trainer.training_history
    assert close_to(events["training/iteration"], [(step, history[step - 1]) for step in range(3, 21, 3)])
    assert close_to(events["training/epoch_mean"], [(1, history.run_mean(0)), (2, history.run_mean(1))])
    validation = trainer.validation_history
    assert close_to(events["validation/mean"], [(1, validation.run_mean(0)), (2, validation.run_mean(1))])
    assert plugin_of(trainer).log_dir == str(tmp_path)


def test_tuple_outputs_get_one_series_per_item(tmp_path):
    trainer = Trainer(
        list(range(6)),
        lambda batch: (batch * 1.0, torch.tensor(batch * 2.0), "not a number"),
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 2}},
    )
    trainer.run(1)
    events = read_events(tmp_path)
    assert set(events) == {
        "training/iteration/0",
        "training/iteration/1",
        "training/epoch_mean/0",
        "training/epoch_mean/1",
    }
    assert close_to(events["training/iteration/0"], [(2, 1.0), (4, 3.0), (6, 5.0)])
    assert close_to(events["training/iteration/1"], [(2, 2.0), (4, 6.0), (6, 10.0)])
    means = trainer.training_history.run_means()
    assert close_to(events["training/epoch_mean/0"], [(1, means["0"])])
    assert close_to(events["training/epoch_mean/1"], [(1, means["1"])])


def test_dict_outputs_and_dict_validation_means(tmp_path):
    trainer = Trainer(
        [0.5, 1.5, 2.5, 3.5],
        lambda batch: {"loss": batch, "accuracy": 1 - batch / 10},
        validation_data=[1.0, 3.0],
        validation_update_function=lambda batch: {"loss": batch * 2},
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1}},
    )
    trainer.run(3)
    events = read_events(tmp_path)
    assert set(events) == {
        "training/iteration/loss",
        "training/iteration/accuracy",
        "training/epoch_mean/loss",
        "training/epoch_mean/accuracy",
        "validation/mean/loss",
    }
    history = trainer.training_history
    assert close_to(events["training/iteration/loss"], [(step, history[step - 1]["loss"]) for step in range(1, 13)])
    assert close_to(
        events["training/iteration/accuracy"], [(step, history[step - 1]["accuracy"]) for step in range(1, 13)]
    )
    assert close_to(events["training/epoch_mean/loss"], [(epoch, 2.0) for epoch in (1, 2, 3)])
    assert close_to(events["validation/mean/loss"], [(epoch, 4.0) for epoch in (1, 2, 3)])


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


def test_only_every_log_every_th_output_is_read(tmp_path, monkeypatch):
    reads = count_reads(monkeypatch)  # the outputs the plugin turns into numbers (no .item() on the others)
    trainer = Trainer(
        list(range(20)),
        lambda batch: {"loss": float(batch)},
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 5}},
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
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1}},
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
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 2}},
    )
    trainer.run(1)
    # 10 logged iterations: written at the 4th and 8th (full batches), then the 2 left at the epoch's end.
    assert [len(values) for values in reads] == [8, 8, 4]
    events = read_events(tmp_path)
    assert close_to(events["training/iteration/0"], [(step, step - 1.0) for step in range(2, 21, 2)])
    assert close_to(events["training/iteration/1"], [(step, (step - 1) * 2.0) for step in range(2, 21, 2)])


def test_logged_outputs_are_written_in_batches_and_none_is_lost(tmp_path):
    batch = ignite_tensorboard._BATCH
    trainer = Trainer(list(range(2 * batch + 10)), float_update, plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1}})
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

    trainer = Trainer([0, 1], update, plugins={"tensorboard": {"log_dir": tmp_path, "optimizer": optimizer}})
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda t: scheduler.step())
    trainer.run(3)
    events = read_events(tmp_path)
    assert close_to(events["lr/0"], [(1, 0.1), (2, 0.05), (3, 0.025)])
    assert close_to(events["lr/1"], [(1, 1.0), (2, 0.5), (3, 0.25)])
    assert "training/iteration" not in events  # 6 iterations, fewer than the default log_every
    assert DEFAULT_LOG_EVERY > 6


def test_one_optimizer_with_one_group_is_tagged_lr(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    Trainer([1.0], float_update, plugins={"tensorboard": {"log_dir": tmp_path, "optimizer": optimizer}}).run(2)
    assert close_to(read_events(tmp_path)["lr"], [(1, 0.3), (2, 0.3)])


def test_an_epoch_cut_short_by_terminate_logs_no_stale_validation_mean(tmp_path):
    trainer = trainer_with_validation(10, [1.0], log_dir=tmp_path, log_every=1)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 14 else None
    )
    trainer.run(3)
    events = read_events(tmp_path)
    assert [step for step, _ in events["training/iteration"]] == list(range(1, 15))
    assert close_to(events["training/epoch_mean"], [(1, 2.5), (2, sum(float_update(b) for b in range(4)) / 4)])
    assert [step for step, _ in events["validation/mean"]] == [1]  # epoch 2 skipped its validation


def test_training_that_raises_leaves_every_value_written_before_it_readable_and_the_file_closed(tmp_path):
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
        plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1, "flush_secs": 3600, "optimizer": optimizer}},
    )
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, lambda t: writers.append(plugin_of(t)._writer))
    with pytest.raises(RuntimeError, match="boom at batch 7"):
        trainer.run(3)
    (writer, same) = writers  # one file for the run
    assert same is writer and writer.closed
    assert plugin_of(trainer)._writer is None
    events = read_events(tmp_path)
    # flush_secs=3600: epoch 1's end flushed its series, only the close can have put 6 and 7 on disk.
    assert close_to(events["training/iteration"], [(step, float(step - 1)) for step in range(1, 8)])
    assert close_to(events["training/epoch_mean"], [(1, 2.0)])
    assert close_to(events["validation/mean"], [(1, 2.0)])
    assert close_to(events["lr"], [(1, 0.5)])


def test_a_failure_to_close_is_logged_and_the_run_s_own_exception_propagates(tmp_path, caplog):
    def update(batch):
        if batch == 2:
            raise RuntimeError("the run's own error")
        return float(batch)

    def break_close(t):
        def fail():
            raise OSError("disk gone")

        plugin_of(t)._writer.close = fail

    trainer = Trainer([0, 1, 2], update, plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1}})
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, break_close)
    with caplog.at_level(logging.ERROR, logger="ignite.tensorboard"), pytest.raises(RuntimeError, match="own error"):
        trainer.run(1)
    (record,) = [record for record in caplog.records if record.name == "ignite.tensorboard"]
    assert record.getMessage() == f"Could not close the TensorBoard event file in {tmp_path}"
    assert isinstance(record.exc_info[1], OSError)
    assert plugin_of(trainer)._writer is None


def test_a_second_run_continues_in_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Each run writes a new file; TensorBoard reads a folder's files in name order. Two files of
    # the same second differ only in the unpadded per-process number (tensorboard's convention),
    # so ".10" would sort before ".9": start the count at 0 for a deterministic order.
    monkeypatch.setattr(ignite_tensorboard, "_file_numbers", itertools.count())
    trainer = Trainer([1.0, 2.0], float_update, plugins={"tensorboard": {"log_every": 1}})
    trainer.run(1)
    first_dir = plugin_of(trainer).log_dir
    trainer.run(2)
    assert plugin_of(trainer).log_dir == first_dir
    events = read_events(first_dir)
    assert [step for step, _ in events["training/iteration"]] == [1, 2, 3, 4]
    assert [step for step, _ in events["training/epoch_mean"]] == [1, 2]


@pytest.mark.parametrize(
    ("log_every", "error"),
    [(0, ValueError), (-5, ValueError), (2.5, TypeError), ("10", TypeError), (True, TypeError), (None, TypeError)],
)
def test_log_every_must_be_a_positive_int(log_every, error):
    with pytest.raises(error, match="log_every must be a positive int"):
        TensorBoardLogger(log_every=log_every)


def test_a_bad_option_through_the_trainer_names_the_plugin_and_option():
    with pytest.raises(PluginError, match=r"'tensorboard'.*log_every must be a positive int") as caught:
        Trainer([1.0], float_update, plugins={"tensorboard": {"log_every": 0}})
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be a torch optimizer"),
        ({"flush_secs": 0}, "flush_secs must be a positive number"),
        ({"log_dir": 3}, "log_dir must be a path"),
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
    log_dir = plugin_of(trainer).log_dir
    assert os.path.dirname(log_dir) == str(tmp_path / "runs")
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", os.path.basename(log_dir))
    assert [step for step, _ in read_events(log_dir)["training/epoch_mean"]] == [1]
    lines = [record.getMessage() for record in caplog.records if record.name == "ignite.tensorboard"]
    assert lines == [f"TensorBoard logs go to {log_dir}; view them with: tensorboard --logdir {log_dir}"]


def test_default_log_dirs_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Trainer([1.0], float_update, plugins={"tensorboard": {}})
    second = Trainer([1.0], float_update, plugins={"tensorboard": {}})
    first.run(1)
    second.run(1)
    assert plugin_of(first).log_dir != plugin_of(second).log_dir
    assert os.path.isdir(plugin_of(first).log_dir) and os.path.isdir(plugin_of(second).log_dir)


def test_nothing_is_created_before_training_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer([1.0], float_update, plugins={"tensorboard": {"log_dir": "logs"}})
    assert plugin_of(trainer).log_dir == "logs"
    assert not (tmp_path / "logs").exists()
    trainer.run(1)
    assert read_events(tmp_path / "logs")["training/epoch_mean"] == [(1, 0.75)]


def test_importing_and_constructing_does_not_import_tensorboard():
    code = (
        "import sys, ignite_tensorboard; ignite_tensorboard.TensorBoardLogger(log_every=10); "
        "print(sorted(m for m in sys.modules if m.startswith(('tensorboard', 'torch.utils.tensorboard'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_epoch_s_series_are_on_disk_while_the_next_epoch_runs(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    seen: list[dict[str, list[tuple[int, float]]]] = []
    trainer = trainer_with_validation(
        4, [1.0, 3.0], log_dir=tmp_path, log_every=2, flush_secs=3600, optimizer=optimizer
    )
    trainer.add_event_handler(
        TrainingEvents.EPOCH_STARTED, lambda t: seen.append(read_events(tmp_path)) if t.current_epoch == 2 else None
    )
    trainer.run(2)
    (during_epoch_2,) = seen
    # flush_secs=3600 and a few hundred bytes: only the flush at epoch 1's end put these on disk.
    assert close_to(during_epoch_2["training/iteration"], [(2, float_update(1)), (4, float_update(3))])
    assert close_to(during_epoch_2["training/epoch_mean"], [(1, trainer.training_history.run_mean(0))])
    assert close_to(during_epoch_2["validation/mean"], [(1, 2.0)])
    assert close_to(during_epoch_2["lr"], [(1, 0.3)])
    assert [step for step, _ in read_events(tmp_path)["training/epoch_mean"]] == [1, 2]


def test_a_logged_iteration_flushes_once_flush_secs_have_passed(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(ignite_tensorboard, "_clock", lambda: now[0])
    # The clock at each iteration; the last flush was at the start (100.0).
    clock_at = {1: 100.0, 2: 109.9, 3: 110.0, 4: 115.0, 5: 119.9, 6: 120.0}
    on_disk: list[list[int]] = []

    def steps_on_disk(t):
        return [step for step, _ in read_events(tmp_path).get("training/iteration", [])]

    trainer = Trainer(
        list(range(6)), float_update, plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1, "flush_secs": 10}}
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


def test_the_plugin_starts_no_thread(tmp_path):
    trainer = trainer_with_validation(6, [1.0], log_dir=tmp_path, log_every=1, flush_secs=1e-9)
    before = set(threading.enumerate())
    during: list[set[threading.Thread]] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: during.append(set(threading.enumerate()))
    )
    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: during.append(set(threading.enumerate())))
    trainer.run(2)
    assert len(during) == 14 and plugin_of(trainer)._writer is None
    assert all(threads == before for threads in during)
    assert len(read_events(tmp_path)["training/iteration"]) == 12


def test_event_file_name_and_first_record_follow_tensorboard_s_convention(tmp_path):
    trainer = Trainer([1.0, 2.0], float_update, plugins={"tensorboard": {"log_dir": tmp_path, "log_every": 1}})
    at_start: list[list[str]] = []

    def first_records(t):
        (name,) = os.listdir(tmp_path)
        at_start.append([event.file_version for event in LegacyEventFileLoader(str(tmp_path / name)).Load()])

    trainer.add_event_handler(
        TrainingEvents.TRAINING_EPOCH_STARTED, lambda t: first_records(t) if t.current_epoch == 1 else None
    )
    started = time.time()
    trainer.run(1)
    assert at_start == [["brain.Event:2"]]  # on disk as soon as the file is created
    trainer.run(2)  # a second run: a second file, the next number
    ended = time.time()
    names = sorted(os.listdir(tmp_path), key=lambda name: int(name.rsplit(".", 1)[1]))
    pattern = rf"events\.out\.tfevents\.(\d{{10}})\.{re.escape(socket.gethostname())}\.{os.getpid()}\.(\d+)"
    matches = [re.fullmatch(pattern, name) for name in names]
    assert len(names) == 2 and all(matches), names
    for match in matches:
        assert int(started) <= int(match[1]) <= ended
    assert int(matches[1][2]) > int(matches[0][2])
    for name in names:
        events = list(LegacyEventFileLoader(str(tmp_path / name)).Load())  # checks every record's CRCs
        first = events[0]
        assert first.file_version == "brain.Event:2" and started <= first.wall_time <= ended
        assert not first.HasField("summary")
        assert [event.step for event in events[1:]] == ([1, 2, 1] if name == names[0] else [3, 4, 2])


def test_a_scalar_is_encoded_as_summary_writer_add_scalar_encodes_it(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    values = [0.1, -3, 1e-30, float("nan"), float("inf"), 2.0**100]
    writer = SummaryWriter(log_dir=str(tmp_path / "torch"))
    for step, value in enumerate(values):
        writer.add_scalar("training/iteration/loss", value, step, walltime=1234.5 + step)
    writer.close()
    os.makedirs(tmp_path / "ours")
    ours = ignite_tensorboard._EventFile(str(tmp_path / "ours"))
    for step, value in enumerate(values):
        ours.scalar("training/iteration/loss", float(value), step, 1234.5 + step)
    ours.close()

    def records(folder):
        (name,) = os.listdir(folder)
        return [event.SerializeToString() for event in LegacyEventFileLoader(str(folder / name)).Load()][1:]

    assert len(records(tmp_path / "ours")) == len(values)
    assert records(tmp_path / "ours") == records(tmp_path / "torch")


START_ON_A_FULL_DISK = """
import errno, json, os, resource, signal, sys

import google_crc32c, tensorboard.compat.proto.event_pb2, tensorboard.compat.proto.summary_pb2  # before the limit
from ignite import Trainer

log_dir = sys.argv[1]
trainer = Trainer([1.0, 2.0], lambda batch: batch, plugins={"tensorboard": {"log_dir": log_dir}})


def open_in_log_dir():
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return [path for path in paths if path.startswith(log_dir)]


# No regular file may grow (the disk is full, as far as this process can tell): the event file
# is created, and its first write fails with EFBIG instead of the process being killed.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    trainer.run(1)
except OSError as error:
    # Looked at while the exception is held, as a caller that catches or logs it holds it.
    report = {"errno": errno.errorcode[error.errno], "open": open_in_log_dir(), "files": os.listdir(log_dir)}
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE and /proc/self/fd")
def test_an_event_file_whose_first_write_fails_is_closed(tmp_path):
    # A real write failure: a subprocess limited to files of 0 bytes (RLIMIT_FSIZE), the closest
    # to a full disk without one; stdout is a pipe, so the report still gets out.
    result = subprocess.run(
        [sys.executable, "-c", START_ON_A_FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errno"] == "EFBIG" and len(report["files"]) == 1  # the file was created, then its write failed
    assert report["open"] == []

