"""Preemption in one process: a real SIGTERM during run() stops the run after the iteration in
progress, the closing events fire, and run() raises ignite.Preempted (exit code 143); the
trainer's handler is installed only while run() runs, only on the main thread, and the previous
one is put back. The distributed and checkpointing sides are in tests/distributed and the
checkpoint plugin's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import ignite
from ignite import Preempted, Trainer, TrainingEvents

from .test_state import make_run

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")


def sigterm_self(trainer: Trainer) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # a real signal; Python runs its handler on this thread at once


def sigterm_at(iteration: int):
    return lambda trainer: sigterm_self(trainer) if trainer.current_iteration == iteration else None


def record_events(trainer: Trainer) -> list[str]:
    fired: list[str] = []
    for event in TrainingEvents:
        if event is TrainingEvents.EXCEPTION_RAISED:
            trainer.add_event_handler(event, lambda t, e, name=event.name: fired.append(name))
        elif "ITERATION" not in event.name:
            trainer.add_event_handler(event, lambda t, name=event.name: fired.append(name))
    return fired


@pytest.fixture
def recorded_sigterm():
    """A Python SIGTERM handler of the test's own, recording the signals it receives."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler, received
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_in_an_iteration_stops_after_it_and_run_raises_preempted():
    trainer = Trainer([float(i) for i in range(10)], lambda batch: batch)
    fired = record_events(trainer)
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, sigterm_at(4))
    with pytest.raises(Preempted) as raised:
        trainer.run(3)
    assert isinstance(raised.value, SystemExit) and not isinstance(raised.value, Exception)
    assert raised.value.code == 143 == Preempted.EXIT_CODE
    assert "stopped at epoch 1, iteration 4" in str(raised.value)
    # The signal came inside iteration 4 (before its update): that iteration still ran whole.
    assert trainer.current_iteration == 4 and list(trainer.training_history) == [0.0, 1.0, 2.0, 3.0]
    assert trainer.preempted and trainer.terminating
    # Closed like terminate(): the scopes opened and TRAINING_COMPLETED, no EXCEPTION_RAISED.
    assert fired == [
        "TRAINING_STARTED", "EPOCH_STARTED", "TRAINING_EPOCH_STARTED", "TRAINING_EPOCH_COMPLETED",
        "EPOCH_COMPLETED", "TRAINING_COMPLETED",
    ]  # fmt: skip
    assert trainer.epoch_complete is False


def test_a_preempted_run_continued_in_process_equals_the_uninterrupted_run():
    reference, reference_model, _ = make_run()
    reference.run(3)
    trainer, model, _ = make_run()
    handle = trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, sigterm_at(17))
    with pytest.raises(Preempted):
        trainer.run(3)
    assert trainer.current_iteration == 17
    handle.remove()
    trainer.run(3)  # a new run: the previous one's preemption is forgotten
    assert not trainer.preempted
    assert list(trainer.training_history) == list(reference.training_history)
    assert list(trainer.validation_history) == list(reference.validation_history)
    for name, tensor in reference_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_sigterm_in_validation_stops_after_that_validation_batch():
    trainer = Trainer([1.0] * 4, lambda batch: batch, [1.0] * 5, lambda batch: batch)
    trainer.add_event_handler(
        TrainingEvents.VALIDATION_ITERATION_COMPLETED,
        lambda t: sigterm_self(t) if t.current_epoch == 2 and len(t.validation_history.run()) == 2 else None,
    )
    with pytest.raises(Preempted):
        trainer.run(3)
    assert (trainer.current_epoch, trainer.current_iteration) == (2, 8)
    assert len(trainer.validation_history.run()) == 2


def test_sigterm_during_training_started_runs_no_iteration_then_raises_preempted():
    # Defined behaviour: every TRAINING_STARTED handler and hook still runs (a checkpoint is
    # resumed there), then no epoch starts; TRAINING_COMPLETED fires and run() raises.
    trainer = Trainer([1.0] * 4, lambda batch: batch)
    fired = record_events(trainer)
    signalling = trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, sigterm_self)
    later: list[int] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: later.append(t.current_iteration))
    with pytest.raises(Preempted, match="stopped at epoch 0, iteration 0"):
        trainer.run(2)
    assert later == [0]
    assert fired == ["TRAINING_STARTED", "TRAINING_COMPLETED"]
    assert (trainer.current_epoch, trainer.current_iteration, len(trainer.training_history)) == (0, 0, 0)
    signalling.remove()
    trainer.run(2)
    assert trainer.current_iteration == 8


def test_sigterm_after_the_training_ended_still_raises_preempted():
    # In TRAINING_COMPLETED there is nothing left to stop; the process was still asked to end,
    # so run() does not return as if nothing had happened.
    trainer = Trainer([1.0] * 4, lambda batch: batch)
    trainer.add_event_handler(TrainingEvents.TRAINING_COMPLETED, sigterm_self)
    with pytest.raises(Preempted, match="stopped at epoch 2, iteration 8"):
        trainer.run(2)
    assert trainer.current_iteration == 8 and trainer.epoch_complete


def test_the_handler_is_installed_only_while_run_runs_and_the_previous_one_is_put_back(recorded_sigterm):
    mine, received = recorded_sigterm
    during: list = []
    trainer = Trainer([1.0, 2.0], lambda batch: batch)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: during.append(signal.getsignal(signal.SIGTERM))
    )
    trainer.run(1)
    assert during and all(handler == trainer._on_sigterm for handler in during)
    assert signal.getsignal(signal.SIGTERM) is mine
    # After a Preempted and after any other exception too.
    stop = trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, sigterm_self)
    with pytest.raises(Preempted):
        trainer.run(2)
    assert signal.getsignal(signal.SIGTERM) is mine
    stop.remove()

    def fail(t):
        raise RuntimeError("boom")

    failing = trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, fail)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(3)
    assert signal.getsignal(signal.SIGTERM) is mine
    failing.remove()
    assert received == []  # the trainer's handler took the signal sent during the run
    os.kill(os.getpid(), signal.SIGTERM)  # after run(): the previous handler's business again
    assert received == [signal.SIGTERM]


def test_a_sigterm_before_run_goes_to_the_previous_handler_and_is_not_carried_into_run(recorded_sigterm):
    _, received = recorded_sigterm
    os.kill(os.getpid(), signal.SIGTERM)
    assert received == [signal.SIGTERM]
    trainer = Trainer([1.0, 2.0], lambda batch: batch)
    trainer.run(2)  # no Preempted
    assert trainer.current_iteration == 4 and not trainer.preempted


def test_a_handler_that_replaced_the_trainers_during_the_run_is_left_in_place(recorded_sigterm):
    def theirs(signum, frame):
        pass

    trainer = Trainer([1.0], lambda batch: batch)
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: signal.signal(signal.SIGTERM, theirs))
    trainer.run(1)
    assert signal.getsignal(signal.SIGTERM) is theirs


def test_run_outside_the_main_thread_installs_no_handler(recorded_sigterm):
    mine, _ = recorded_sigterm
    during: list = []
    errors: list[BaseException] = []
    trainer = Trainer([1.0, 2.0], lambda batch: batch)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: during.append(signal.getsignal(signal.SIGTERM))
    )

    def run() -> None:
        try:
            trainer.run(1)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    assert during == [mine, mine] and trainer.current_iteration == 2


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from ignite import Trainer, TrainingEvents

    marker = sys.argv[1]
    trainer = None

    def update(batch):
        if trainer.current_iteration == 5:
            with open(marker + ".tmp", "w") as file:
                file.write(str(os.getpid()))
            os.replace(marker + ".tmp", marker)
            deadline = time.monotonic() + 60
            while not trainer.preempted:  # polls the trainer's record of the signal, bounded
                if time.monotonic() > deadline:
                    raise SystemExit("no SIGTERM came within 60 s")
                time.sleep(0.01)
        return float(batch)

    trainer = Trainer(list(range(100)), update)
    trainer.run(5)
    print("unreachable: run() returned")
    """
)


def test_an_external_sigterm_ends_the_script_with_exit_code_143(tmp_path: Path):
    script, marker = tmp_path / "train.py", tmp_path / "marker"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the script never reached iteration 5"
            time.sleep(0.05)
        assert int(marker.read_text()) == process.pid
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, (stdout, stderr)
    assert "unreachable" not in stdout
    # Uncaught, a SystemExit prints no traceback; the warning (Python's last-resort handler) says why.
    assert "Traceback" not in stderr, stderr
    assert "Preempted: SIGTERM received during run(), stopped at epoch 1, iteration 5" in stderr, stderr


def test_preempted_is_public():
    assert ignite.Preempted is Preempted and "Preempted" in ignite.__all__


WORKERS_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from ignite import Trainer

    marker = sys.argv[1]
    # The README's recipe: DataLoader workers ignore SIGTERM, the trainer's process stops cleanly.
    loader = DataLoader(TensorDataset(torch.arange(400.0)), batch_size=4, num_workers=2,
                        worker_init_fn=lambda worker: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    trainer = None

    def update(batch):
        if trainer.current_iteration == 5:
            with open(marker + ".tmp", "w") as file:
                file.write(str(os.getpid()))
            os.replace(marker + ".tmp", marker)
            deadline = time.monotonic() + 60
            while not trainer.preempted and time.monotonic() < deadline:  # the signal, polled with a deadline
                time.sleep(0.01)
        return float(batch[0].sum())

    trainer = Trainer(loader, update)
    trainer.run(3)
    """
)


def test_sigterm_to_every_process_with_dataloader_workers_that_ignore_it_ends_with_143(tmp_path: Path):
    # As SLURM signals every process of a job step: the DataLoader's workers too. PyTorch's
    # workers die on SIGTERM and the main process then fails ("DataLoader worker ... is killed by
    # signal: Terminated", 4 of 6 tries here) before it can save; with the README's
    # worker_init_fn they ignore it and the run stops as without workers.
    script, marker = tmp_path / "train.py", tmp_path / "marker"
    script.write_text(WORKERS_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the script never reached iteration 5"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)  # the whole process group: the trainer and its workers
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 143, stderr
    assert "DataLoader worker" not in stderr, stderr
