"""The checkpoint plugin on preemption: a real SIGTERM from outside stops a real training process,
which saves the point where it stopped and exits with ignite.Preempted's code (143); a launch
with resume=True then ends bit for bit like the uninterrupted run. In-process: what is saved
(or not) when the signal comes at TRAINING_STARTED or at a point already saved. The distributed
side (torchrun) is in tests/distributed/test_preemption.py."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite_checkpoint import checkpoint_name, list_checkpoints, load_checkpoint

from ignite import Preempted, TrainingEvents

SCRIPT = Path(__file__).with_name("preempted_training_script.py")
TIMEOUT = 180

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def start(dirname: Path, out: Path, *options: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "IGNITE_DISABLE_PLUGINS"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(dirname), str(out), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_file(path: Path, process: subprocess.Popen, deadline: float) -> None:
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before writing {path}:\n{process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in time")
        time.sleep(0.05)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:  # a hung child must not outlive the test
            process.kill()
            process.wait()
    return process.returncode, stderr


def assert_same_run(a: dict, b: dict) -> None:
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"]), index
    assert a["training"] == b["training"] and a["validation"] == b["validation"]
    assert a["iteration"] == b["iteration"] == 24


def test_sigterm_from_outside_saves_the_stopping_point_and_resume_ends_bit_for_bit(tmp_path: Path):
    reference = start(tmp_path / "reference", tmp_path / "reference.pt")
    preempted = start(tmp_path / "run", tmp_path / "preempted.pt", "--wait-at", "10")
    try:
        marker = tmp_path / "run.marker"
        wait_for_file(marker, preempted, time.monotonic() + TIMEOUT)
        assert int(marker.read_text()) == preempted.pid
        preempted.send_signal(signal.SIGTERM)
    finally:
        returncode, stderr = finish(preempted)
    assert returncode == 143 == Preempted.EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    # The signal came inside iteration 10: that iteration ran whole, then the run stopped.
    assert "ignite WARNING Preempted: SIGTERM received during run(), stopped at epoch 2, iteration 10" in stderr
    saved = tmp_path / "run" / checkpoint_name(2, 10)
    assert f"ignite.checkpoint INFO Preempted: saved {saved} (epoch 2, iteration 10)" in stderr, stderr[-3000:]
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path / "run")] == [
        checkpoint_name(1, 4), checkpoint_name(1, 8), checkpoint_name(2, 10)
    ]  # fmt: skip
    state = load_checkpoint(saved)["trainer"]
    assert state["current_iteration"] == 10 and state["position"]["batches_done"] == 2
    assert not (tmp_path / "preempted.pt").exists()  # run() raised: the script's last lines never ran

    resumed = start(tmp_path / "run", tmp_path / "resumed.pt", "--resume")
    returncode, stderr = finish(resumed)
    assert returncode == 0, stderr[-3000:]
    assert f"Resumed from {saved}: epoch 2, iteration 10 (after batch 2 of the epoch)" in stderr, stderr[-3000:]
    assert finish(reference)[0] == 0
    assert_same_run(torch.load(tmp_path / "reference.pt"), torch.load(tmp_path / "resumed.pt"))


def sigterm_self(trainer) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled on this thread at once


def files(folder: Path) -> list[str]:
    return [os.path.basename(path) for path in list_checkpoints(folder)]


def checkpointed(ignite_trainer, folder: Path, **options):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def update(batch):
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    plugins = {"checkpoint": {"dir": str(folder), "objects": {"model": model}, **options}}
    return ignite_trainer([torch.randn(4, 2) for _ in range(6)], update, plugins=plugins)


def test_sigterm_at_training_started_of_a_fresh_run_saves_its_starting_point(ignite_trainer, tmp_path: Path):
    trainer = checkpointed(ignite_trainer, tmp_path)
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, sigterm_self)
    with pytest.raises(Preempted):
        trainer.run(2)
    assert files(tmp_path) == [checkpoint_name(0, 0)]
    state = load_checkpoint(tmp_path / checkpoint_name(0, 0))["trainer"]
    assert (state["current_iteration"], state["position"]) == (0, None)


def test_sigterm_at_training_started_of_a_resumed_run_keeps_the_checkpoint_it_resumed(
    ignite_trainer, tmp_path: Path, caplog
):
    first = checkpointed(ignite_trainer, tmp_path, every_iterations=4)
    first.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 9 else None
    )
    first.run(2)  # saves 4 and 8, stops after 9 (terminate() saves nothing)
    assert files(tmp_path) == [checkpoint_name(1, 4), checkpoint_name(2, 8)]
    written = os.stat(tmp_path / checkpoint_name(2, 8)).st_mtime_ns
    second = checkpointed(ignite_trainer, tmp_path, every_iterations=4, resume=True)
    second.add_event_handler(TrainingEvents.TRAINING_STARTED, sigterm_self)
    with caplog.at_level(logging.INFO, logger="ignite"), pytest.raises(Preempted):
        second.run(2)
    assert second.current_iteration == 8
    assert files(tmp_path) == [checkpoint_name(1, 4), checkpoint_name(2, 8)]
    assert os.stat(tmp_path / checkpoint_name(2, 8)).st_mtime_ns == written
    assert "Preempted at iteration 8, which the newest checkpoint already holds: nothing to save" in caplog.text


def test_sigterm_at_an_iteration_just_saved_writes_no_second_copy(ignite_trainer, tmp_path: Path, caplog):
    trainer = checkpointed(ignite_trainer, tmp_path, every_iterations=3)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: sigterm_self(t) if t.current_iteration == 9 else None
    )
    with caplog.at_level(logging.INFO, logger="ignite"), pytest.raises(Preempted):
        trainer.run(3)
    assert files(tmp_path) == [checkpoint_name(1, 3), checkpoint_name(1, 6), checkpoint_name(2, 9)]
    assert "Preempted at iteration 9, which the newest checkpoint already holds" in caplog.text


def test_save_on_interrupt_false_saves_nothing_on_preemption(ignite_trainer, tmp_path: Path):
    trainer = checkpointed(ignite_trainer, tmp_path, every_iterations=4, save_on_interrupt=False)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: sigterm_self(t) if t.current_iteration == 7 else None
    )
    with pytest.raises(Preempted):
        trainer.run(3)
    assert trainer.current_iteration == 7
    assert files(tmp_path) == [checkpoint_name(1, 4)]
