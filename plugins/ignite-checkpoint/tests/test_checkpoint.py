"""Tests of the checkpoint plugin: real subprocesses killed with real signals, then resumed;
real corrupt, foreign and malicious files; real files, no mocks of the plugin's parts."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import json
import logging
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import numpy
import pytest
import torch
from ignite_checkpoint import (
    LOCK_NAME,
    Checkpoint,
    CheckpointError,
    NewerFormatError,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
)

import ignite
import ignite.hookspecs
from ignite import History, PluginError, Trainer, TrainingEvents
from ignite.serialization import NotLoadableError
from ignite.testing import is_gloo_teardown_abort, run_ranks

SCRIPT = Path(__file__).with_name("checkpoint_training_script.py")
INSTALLED = {entry_point.name for entry_point in entry_points(group="ignite.plugins")}
TIMEOUT = 180


# -- subprocess helpers -------------------------------------------------------------------



def loaded_history(state: dict) -> History:
    """A saved ignite.History, loaded (History compares values and run boundaries)."""
    history = History()
    history.load_state_dict(state)
    return history


def history_length(state: dict) -> int:
    """The number of values in a saved ignite.History."""
    return len(loaded_history(state))

def start(config: dict) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "IGNITE_DISABLE_PLUGINS"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "GLOO_SOCKET_IFNAME": "lo"},  # a process group talks over loopback only
    )


def finish(processes: dict[str, subprocess.Popen]) -> dict[str, tuple[int, str]]:
    """Wait for every process (running in parallel); returns name -> (returncode, stderr)."""
    results = {}
    try:
        for name, process in processes.items():
            _, stderr = process.communicate(timeout=TIMEOUT)
            results[name] = (process.returncode, stderr)
    finally:
        for process in processes.values():  # a hung child must not outlive the test
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def assert_same_run(a: dict, b: dict) -> None:
    """B's final state equals A's bit for bit: every parameter and optimizer tensor, both
    histories (values and run boundaries), the counters."""
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            other = b["optimizer"]["state"][index][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key
    assert loaded_history(a["training"]) == loaded_history(b["training"])
    assert loaded_history(a["validation"]) == loaded_history(b["validation"])
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    assert a["controllers"] == b["controllers"]
    assert a["lr"] == b["lr"]


def load_out(path: Path) -> dict:
    return torch.load(path, weights_only=True)


# Where each scenario's first run stops itself, and the checkpoint its resumed run must start
# from. 8 batches per epoch, 4 validation batches, saves every 4 iterations and every epoch.
SCENARIOS = {
    # SIGKILL mid-epoch: iteration 14 is epoch 2's 6th batch; last save after iteration 12.
    "kill_mid_epoch": (
        {"where": "iteration", "iteration": 14, "signal": "SIGKILL"},
        "checkpoint_e0002_i00000012.pt: epoch 2, iteration 12 (after batch 4 of the epoch)",
    ),
    # SIGKILL at an epoch boundary: at EPOCH_STARTED of epoch 2, after epoch 1's save.
    "kill_epoch_boundary": (
        {"where": "epoch_started", "epoch": 2, "signal": "SIGKILL"},
        "checkpoint_e0001_i00000008.pt: epoch 1, iteration 8 (end of the epoch)",
    ),
    # SIGKILL during validation of epoch 2: the last save is the one after its last batch.
    "kill_validation": (
        {"where": "validation", "epoch": 2, "batch": 2, "signal": "SIGKILL"},
        "checkpoint_e0002_i00000016.pt: epoch 2, iteration 16 (after batch 8 of the epoch)",
    ),
    # Ctrl-C after iteration 10 (no regular save there): the interrupt saves that point.
    "sigint_iteration": (
        {"where": "iteration", "iteration": 10, "signal": "SIGINT"},
        "checkpoint_e0002_i00000010.pt: epoch 2, iteration 10 (after batch 2 of the epoch)",
    ),
    # Ctrl-C during validation of epoch 2 (saves every 3 iterations here, so the last regular
    # save is after iteration 15): resumed, that validation run is repeated whole.
    "sigint_validation": (
        {"where": "validation", "epoch": 2, "batch": 3, "signal": "SIGINT"},
        "checkpoint_e0002_i00000016.pt: epoch 2, iteration 16 (after training, validation to run again)",
    ),
}

CONTROLLERS = {
    name: options
    for name, options in {
        # Validation MSE by epoch: 0.346, 0.220, 0.134, then 0.040 with the halved rate.
        "early_stopping": {"patience": 3, "min_delta": 0.31},
        "lr_reduction": {"patience": 0, "factor": 0.5, "threshold": 0.1, "threshold_mode": "abs"},
    }.items()
    if name in INSTALLED
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A (uninterrupted) and every scenario's first run in parallel, then every resumed
    run in parallel. Returns name -> results."""
    folder = tmp_path_factory.mktemp("runs")
    base = {"max_epochs": 3, "every_iterations": 4, "every_epochs": 1, "keep": 3}
    configs = {"A": {**base, "dir": str(folder / "A"), "out": str(folder / "A.pt")}}
    for name, (stop, _) in SCENARIOS.items():
        configs[name] = {**base, "dir": str(folder / name), "out": str(folder / f"{name}.pt"), "stop": stop}
    configs["sigint_validation"]["every_iterations"] = 3
    # torch.optim.SGD, five epochs, with early stopping and LR reduction when installed;
    # killed in the middle of epoch 4, after the controllers have changed state at epochs 1-3.
    controlled = {**base, "max_epochs": 5, "optimizer": "sgd", "controllers": CONTROLLERS}
    configs["A_controllers"] = {**controlled, "dir": str(folder / "Ac"), "out": str(folder / "Ac.pt")}
    configs["controllers"] = {
        **controlled,
        "dir": str(folder / "controllers"),
        "out": str(folder / "controllers.pt"),
        "stop": {"where": "iteration", "iteration": 30, "signal": "SIGKILL"},
    }
    first = finish({name: start(config) for name, config in configs.items()})
    # A copy of a stopped run's folder, for the two-rank test to resume from.
    shutil.copytree(configs["kill_mid_epoch"]["dir"], folder / "for_ranks")
    # What the stopped runs left, before their resumed runs prune it: file name -> trainer state.
    stopped = {
        name: {os.path.basename(path): load_checkpoint(path)["trainer"] for path in list_checkpoints(config["dir"])}
        for name, config in configs.items()
        if "stop" in config
    }
    resumed_names = [name for name, config in configs.items() if "stop" in config]
    second = finish({name: start({**configs[name], "resume": True, "stop": None}) for name in resumed_names})
    return {"folder": folder, "configs": configs, "first": first, "stopped": stopped, "second": second}


def check_stopped_by(runs: dict, name: str, signum: int) -> str:
    returncode, stderr = runs["first"][name]
    assert returncode == -signum, stderr[-3000:]
    marker = Path(runs["configs"][name]["dir"] + ".stopped")
    assert marker.exists(), "the run did not stop where the scenario says"
    return stderr


def check_resumed(runs: dict, name: str, expected: str, reference: str = "A") -> dict:
    returncode, stderr = runs["second"][name]
    assert returncode == 0, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "Resumed from" in line]
    assert len(lines) == 1 and lines[0].startswith("ignite.checkpoint INFO Resumed from "), stderr[-3000:]
    assert lines[0].endswith(expected), lines[0]
    result = load_out(Path(runs["configs"][name]["out"]))
    assert_same_run(load_out(Path(runs["configs"][reference]["out"])), result)
    return result


def test_uninterrupted_run_saves_every_k_iterations_and_every_epoch_keeping_the_last_3(runs):
    returncode, stderr = runs["first"]["A"]
    assert returncode == 0, stderr[-3000:]
    assert "Resumed from" not in stderr
    folder = runs["configs"]["A"]["dir"]
    assert sorted(os.listdir(folder)) == [
        LOCK_NAME,  # kept: removing it would race with a run opening it
        "checkpoint_e0002_i00000016.pt",
        "checkpoint_e0003_i00000020.pt",
        "checkpoint_e0003_i00000024.pt",
    ]
    # The last one is the end-of-epoch save, which replaced the iteration save of the same point.
    last = load_checkpoint(os.path.join(folder, "checkpoint_e0003_i00000024.pt"))
    assert last["trainer"]["position"] is None and last["trainer"]["current_epoch"] == 3
    final = load_out(Path(runs["configs"]["A"]["out"]))
    for key, value in final["model"].items():
        assert torch.equal(last["objects"]["model"][key], value)
    assert history_length(final["training"]) == 24 and history_length(final["validation"]) == 12


@pytest.mark.parametrize("name", ["kill_mid_epoch", "kill_epoch_boundary", "kill_validation"])
def test_sigkill_then_resume_ends_bit_for_bit_like_the_uninterrupted_run(runs, name):
    check_stopped_by(runs, name, signal.SIGKILL)
    assert "Interrupted" not in runs["first"][name][1]  # nothing ran after SIGKILL
    check_resumed(runs, name, SCENARIOS[name][1])


def test_sigint_saves_the_iteration_reached_and_exits_with_keyboard_interrupt(runs):
    stderr = check_stopped_by(runs, "sigint_iteration", signal.SIGINT)
    assert "KeyboardInterrupt" in stderr
    assert "ignite.checkpoint INFO Interrupted: saved" in stderr
    state = runs["stopped"]["sigint_iteration"]["checkpoint_e0002_i00000010.pt"]
    assert state["current_iteration"] == 10 and state["position"]["batches_done"] == 2
    check_resumed(runs, "sigint_iteration", SCENARIOS["sigint_iteration"][1])


def test_sigint_during_validation_saves_and_resume_repeats_that_validation_run(runs):
    stderr = check_stopped_by(runs, "sigint_validation", signal.SIGINT)
    assert "KeyboardInterrupt" in stderr
    assert "ignite.checkpoint INFO Interrupted: saved" in stderr
    assert list(runs["stopped"]["sigint_validation"]) == [
        "checkpoint_e0002_i00000012.pt",
        "checkpoint_e0002_i00000015.pt",
        "checkpoint_e0002_i00000016.pt",
    ]
    state = runs["stopped"]["sigint_validation"]["checkpoint_e0002_i00000016.pt"]
    assert state["position"]["phase"] == "validation"
    assert history_length(state["validation_history"]) == 4  # epoch 1's run; epoch 2's partial run dropped
    check_resumed(runs, "sigint_validation", SCENARIOS["sigint_validation"][1])


def test_torch_optim_sgd_state_survives_a_kill(runs):
    check_stopped_by(runs, "controllers", signal.SIGKILL)
    result = check_resumed(
        runs, "controllers", "checkpoint_e0004_i00000028.pt: epoch 4, iteration 28 (after batch 4 of the epoch)", "A_controllers"
    )
    assert result["optimizer"]["state"][0]["momentum_buffer"].abs().sum() > 0
    assert set(result["controllers"]) == set(CONTROLLERS)


def test_early_stopping_and_lr_reduction_states_survive_a_kill(runs):
    if not CONTROLLERS:
        pytest.skip("neither ignite-early-stopping nor ignite-lr-reduction is installed in this environment")
    # The killed run resumed inside epoch 4 with the controllers' states of epoch 3 and ended
    # bit for bit like A (test_torch_optim_sgd_state_survives_a_kill), controllers' final
    # states included. Here: those states decided something, after the resume.
    result = check_resumed(
        runs, "controllers", "checkpoint_e0004_i00000028.pt: epoch 4, iteration 28 (after batch 4 of the epoch)", "A_controllers"
    )
    state = runs["stopped"]["controllers"]["checkpoint_e0004_i00000028.pt"]
    assert set(state["plugins"]) == set(CONTROLLERS)
    _, stderr = runs["second"]["controllers"]
    if "early_stopping" in CONTROLLERS:
        # No improvement at epochs 2 and 3 (counter 2 in the checkpoint), none at 4: stopped
        # at the end of epoch 4 of 5. A lost counter would have run epoch 5.
        assert state["plugins"]["early_stopping"]["counter"] == 2
        assert result["epoch"] == 4 and "Early stopping at epoch 4" in stderr
    if "lr_reduction" in CONTROLLERS:
        assert result["lr"] == [0.025]  # halved at epoch 3, before the kill
        assert state["plugins"]["lr_reduction"]
    missing = {"early_stopping", "lr_reduction"} - set(CONTROLLERS)
    if missing:
        pytest.skip(f"only {sorted(CONTROLLERS)} checked: {sorted(missing)} not installed in this environment")


# -- killed while writing -----------------------------------------------------------------


def test_sigkill_while_writing_a_64mb_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    folder = tmp_path / "big"
    config = {
        "dir": str(folder),
        "out": str(tmp_path / "big.pt"),
        "big_parameters": 16_000_000,  # 64 MB of float32
        "every_iterations": 1,
        "every_epochs": None,
        "keep": 2,
        "max_epochs": 1,
    }
    def listing():
        names = sorted(os.listdir(folder)) if folder.exists() else []
        return [n for n in names if n.startswith("checkpoint_")], [n for n in names if n.startswith(".checkpoint_")]

    process = start(config)
    killed = False
    try:
        deadline = time.monotonic() + TIMEOUT
        while not killed and process.poll() is None and time.monotonic() < deadline:
            finals, temporaries = listing()
            if finals and temporaries:  # a later save is being written
                # Freeze the child (and wait until it is frozen) to see whether it is still
                # inside that save; if so SIGKILL it there, else let it go on to the next save.
                process.send_signal(signal.SIGSTOP)
                _, status = os.waitpid(process.pid, os.WUNTRACED)
                if not os.WIFSTOPPED(status):
                    break  # it ended: not killed inside a save, which the assertion below reports
                if listing()[1]:
                    process.send_signal(signal.SIGKILL)
                    killed = True
                process.send_signal(signal.SIGCONT)
            else:
                time.sleep(0.001)  # polling interval, not synchronisation
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert killed, "the child never was inside a second save"
    assert process.returncode == -signal.SIGKILL
    names = sorted(os.listdir(folder))
    finals = [n for n in names if n.startswith("checkpoint_")]
    temporaries = [n for n in names if n.startswith(".checkpoint_")]
    assert len(temporaries) == 1, names  # the save it was killed in
    assert finals and finals == list(map(os.path.basename, list_checkpoints(folder)))
    for name in finals:  # no file under a final name is partial
        state = load_checkpoint(folder / name)
        assert state["objects"]["model"]["big"].numel() == 16_000_000
    newest = finals[-1]

    returncode, stderr = finish({"resume": start({**config, "resume": True, "every_iterations": 8})})["resume"]
    assert returncode == 0, stderr[-3000:]
    assert "Removed 1 unfinished temporary checkpoint file(s)" in stderr
    assert f"Resumed from {folder / newest}" in stderr
    assert not [n for n in os.listdir(folder) if n.startswith(".checkpoint_")]
    result = load_out(tmp_path / "big.pt")
    assert result["iteration"] == 8 and history_length(result["training"]) == 8


# -- only rank 0 writes, every rank loads ---------------------------------------------------


def test_two_ranks_only_rank_0_writes_and_both_resume_bit_for_bit(tmp_path, runs):
    # Both ranks resume from a copy of the folder the mid-epoch SIGKILL left.
    folder = tmp_path / "ranks"
    for attempt in range(2):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(runs["folder"] / "for_ranks", folder)
        config = {
            "world_size": 2,
            "store": str(tmp_path / f"store{attempt}"),
            "dir": str(folder),
            "out": str(tmp_path / "rank{rank}.pt"),
            "max_epochs": 3,
            "every_iterations": 4,
            "every_epochs": 1,
            "keep": 3,
            "resume": True,
        }
        second = finish({f"rank{r}": start({**config, "rank": r}) for r in (0, 1)})
        failed = [(code, stderr) for code, stderr in second.values() if code]
        if not (failed and all(is_gloo_teardown_abort(code, stderr) for code, stderr in failed)):
            break  # else gloo aborted a rank at teardown, its work done: once more
    reference = load_out(Path(runs["configs"]["A"]["out"]))
    for rank in (0, 1):
        returncode, stderr = second[f"rank{rank}"]
        assert returncode == 0, stderr[-3000:]
        # Every rank loads (its final state equals A's); only rank 0 logs and writes.
        assert ("Resumed from " + str(folder / "checkpoint_e0002_i00000012.pt") in stderr) == (rank == 0)
        result = load_out(tmp_path / f"rank{rank}.pt")
        assert_same_run(reference, result)
        expected_saves = [
            "checkpoint_e0002_i00000016.pt",  # iteration 16
            "checkpoint_e0002_i00000016.pt",  # end of epoch 2, same point: replaces it
            "checkpoint_e0003_i00000020.pt",
            "checkpoint_e0003_i00000024.pt",
            "checkpoint_e0003_i00000024.pt",
        ]
        assert result["saves"] == (expected_saves if rank == 0 else [])
    assert [os.path.basename(p) for p in list_checkpoints(folder)] == sorted(set(expected_saves))


# -- in-process tests: files, options, pruning ----------------------------------------------


def small_run(folder, interrupt_at=None, **options):
    """A tiny in-process training with the checkpoint plugin; returns (trainer, model, optimizer).
    With ``interrupt_at``, the update of that iteration raises KeyboardInterrupt after
    backward() and before optimizer.step()."""
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    y = x.sum(dim=1, keepdim=True)
    data = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        if trainer.current_iteration == interrupt_at:
            raise KeyboardInterrupt
        optimizer.step()
        return loss.item()

    objects = options.pop("objects", {"model": model, "optimizer": optimizer})
    if "more_objects" in options:
        objects = {**objects, **options.pop("more_objects")}
    trainer = Trainer(data, update, plugins={"checkpoint": {"dir": str(folder), "objects": objects, **options}})
    return trainer, model, optimizer


def test_interrupt_inside_an_update_saves_the_previous_iteration_with_a_warning(tmp_path, ignite_isolated, caplog):
    # Inside iteration 6's update (before optimizer.step()): saved as after iteration 5.
    trainer, _, _ = small_run(tmp_path / "b", interrupt_at=6, keep=None)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(3)
    assert "Interrupted inside iteration 6, before its output was recorded: saving as after iteration 5" in caplog.text
    state = load_checkpoint(tmp_path / "b" / "checkpoint_e0002_i00000005.pt")
    assert state["trainer"]["current_iteration"] == 5 and state["trainer"]["position"]["batches_done"] == 1
    # This update draws no random numbers and was stopped before step(): resume is exact.
    resumed, model, _optimizer = small_run(tmp_path / "b", resume=True, keep=None)
    resumed.run(3)
    reference, reference_model, _ = small_run(tmp_path / "a", keep=None)
    reference.run(3)
    assert resumed.training_history == reference.training_history
    for key, value in reference_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)

    # Inside iteration 5's update: the point "after iteration 4" was saved cleanly by the
    # epoch save; the interrupt does not overwrite it with a state the update may have touched.
    trainer, _, _ = small_run(tmp_path / "c", interrupt_at=5, keep=None)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(3)
    assert "Interrupted inside iteration 5: keeping" in caplog.text
    assert load_checkpoint(tmp_path / "c" / "checkpoint_e0001_i00000004.pt")["trainer"]["position"] is None


class RunsCode:
    """Pickles to a call of os.mkdir: loading it unrestricted would create a folder."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_interrupt_before_any_new_iteration_keeps_the_checkpoint_it_resumed_from(tmp_path, ignite_isolated, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    folder = tmp_path / "ckpt"
    trainer, _, _ = small_run(folder, every_iterations=3, every_epochs=None)
    trainer.run(2)
    newest = list_checkpoints(folder)[-1]
    assert newest.endswith("checkpoint_e0002_i00000006.pt")
    before = Path(newest).read_bytes()

    def interrupt(trainer):
        raise KeyboardInterrupt

    for event in (TrainingEvents.TRAINING_STARTED, TrainingEvents.EPOCH_STARTED, TrainingEvents.TRAINING_EPOCH_STARTED):
        resumed, _, _ = small_run(folder, every_iterations=3, every_epochs=None, resume=True)
        resumed.add_event_handler(event, interrupt)
        with pytest.raises(KeyboardInterrupt):
            resumed.run(2)
        assert f"Interrupted at iteration 6, which {newest} already holds: nothing to save" in caplog.text
        assert list_checkpoints(folder)[-1] == newest and Path(newest).read_bytes() == before
        caplog.clear()


def test_corrupt_and_foreign_files_are_refused_by_name_and_resume_skips_them(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    trainer, model, _ = small_run(folder, keep=None)
    trainer.run(2)
    good = folder / "checkpoint_e0002_i00000008.pt"
    saved = load_checkpoint(good)
    raw = good.read_bytes()
    executed = tmp_path / "code_ran"
    bad = {
        "truncated": ("checkpoint_e0003_i00000012.pt", raw[: len(raw) // 2]),
        "empty": ("checkpoint_e0003_i00000013.pt", b""),
        "raw pickle that runs code": ("checkpoint_e0004_i00000016.pt", pickle.dumps(RunsCode(executed), protocol=2)),
    }
    for name, content in bad.values():
        (folder / name).write_bytes(content)
    torch.save(RunsCode(executed), folder / "checkpoint_e0005_i00000020.pt")  # torch file that runs code
    torch.save({"weights": torch.ones(3)}, folder / "checkpoint_e0006_i00000024.pt")  # another torch file
    refused = [name for name, _ in bad.values()] + ["checkpoint_e0005_i00000020.pt", "checkpoint_e0006_i00000024.pt"]
    for name in refused:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(folder / name)
        assert str(folder / name) in str(error.value)
    assert not executed.exists(), "a checkpoint load ran code"
    with pytest.raises(CheckpointError, match="is not an ignite checkpoint"):
        load_checkpoint(folder / "checkpoint_e0006_i00000024.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(folder / "checkpoint_e0005_i00000020.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(folder / "checkpoint_e0009_i00000099.pt")
    with pytest.raises(CheckpointError, match=r"is incomplete: it has no ignite\.pt"):  # a folder: read as a sharded one
        load_checkpoint(folder)

    caplog.set_level(logging.INFO, logger="ignite")
    trainer, model, _optimizer = small_run(folder, resume=True, keep=None)
    seen = {}
    trainer.add_event_handler(
        TrainingEvents.TRAINING_STARTED,
        lambda t: seen.update(epoch=t.current_epoch, weight=model.weight.detach().clone()),
    )
    trainer.run(3)
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Skipping" in r.getMessage()]
    assert len(skipped) == len(refused)
    for name, message in zip(reversed(refused), skipped):  # newest first
        assert name in message
    assert f"Resumed from {good}: epoch 2, iteration 8 (end of the epoch)" in caplog.text
    assert seen["epoch"] == 2 and torch.equal(seen["weight"], saved["objects"]["model"]["weight"])
    assert trainer.current_epoch == 3 and len(trainer.training_history) == 12
    assert not executed.exists()


def test_keep_prunes_to_the_newest_k_of_this_run_and_leaves_other_files_alone(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    torch.save({"format": "other"}, folder / "checkpoint_e0000_i00000000.pt")  # an older run's
    trainer, _, _ = small_run(folder, every_iterations=1, every_epochs=1, keep=2)
    trainer.run(3)
    assert "already holds 1 checkpoint(s)" in caplog.text
    assert sorted(os.listdir(folder)) == [
        LOCK_NAME,
        "checkpoint_e0000_i00000000.pt",
        "checkpoint_e0003_i00000011.pt",
        "checkpoint_e0003_i00000012.pt",
        "notes.txt",
    ]
    assert load_checkpoint(folder / "checkpoint_e0003_i00000012.pt")["trainer"]["position"] is None


def test_resume_continues_the_pruning_of_the_run_it_continues(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    small_run(folder, keep=2)[0].run(3)
    assert len(list_checkpoints(folder)) == 2
    small_run(folder, keep=2, resume=True)[0].run(5)
    assert [os.path.basename(p) for p in list_checkpoints(folder)] == [
        "checkpoint_e0004_i00000016.pt",
        "checkpoint_e0005_i00000020.pt",
    ]


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, ignite_isolated, monkeypatch):
    import ignite_checkpoint

    folder = tmp_path / "ckpt"
    trainer, _, _ = small_run(folder, every_iterations=1, keep=1)
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith("checkpoint_e0001_i00000003.pt"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(ignite_checkpoint.os, "replace", replace)
    with pytest.raises(OSError, match="No space left") as error:
        trainer.run(1)
    assert any("checkpoint" in note for note in getattr(error.value, "__notes__", []))
    assert sorted(os.listdir(folder)) == [LOCK_NAME, "checkpoint_e0001_i00000002.pt"]  # kept: its successor never completed
    assert load_checkpoint(folder / "checkpoint_e0001_i00000002.pt")["trainer"]["current_iteration"] == 2


@pytest.mark.parametrize("background", [False, True])
def test_the_bytes_of_a_failed_write_are_released_so_no_traceback_holds_them(
    tmp_path, ignite_isolated, monkeypatch, background
):
    # On Python 3.12.0/3.12.1 a view of a BytesIO kept in a reference cycle (here: the error's
    # traceback) crashes the process at a later garbage collection (CPython gh-111049).
    import ignite_checkpoint

    real_serialized = ignite_checkpoint._serialized
    views = []

    def serialized(payload):
        views.append(real_serialized(payload))
        return views[-1]

    def atomic_write(data, path, directory_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ignite_checkpoint, "_serialized", serialized)
    monkeypatch.setattr(ignite_checkpoint, "_atomic_write", atomic_write)
    trainer, _, _ = small_run(tmp_path / "ckpt", every_iterations=2, background_serialization=background)
    with pytest.raises(OSError, match="No space left"):
        trainer.run(1)
    # Iteration 2's write failed; iteration 4's save raised it, serialized already unless in the background.
    assert len(views) == (1 if background else 2)
    for view in views:
        with pytest.raises(ValueError, match="released"):
            view.tobytes()


def test_resume_without_checkpoints_starts_from_scratch_and_happens_once_per_trainer(tmp_path, ignite_isolated, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    folder = tmp_path / "new"
    trainer, _, _ = small_run(folder, resume=True, every_iterations=3)
    trainer.run(1)
    assert f"no checkpoint in {folder} yet; starting from scratch" in caplog.text
    trainer.run(2)  # the second run() continues; it does not go back to iteration 6's checkpoint
    trainer.run(3)
    assert "Resumed from" not in caplog.text
    assert trainer.current_iteration == 12 and len(trainer.training_history) == 12


def test_resume_with_an_object_the_checkpoint_lacks_or_that_does_not_fit_is_an_error(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    trainer, _, _ = small_run(folder, objects=None)
    trainer.run(1)
    assert load_checkpoint(folder / "checkpoint_e0001_i00000004.pt")["objects"] == {}
    trainer, _model, _optimizer = small_run(folder, resume=True)
    with pytest.raises(CheckpointError, match=r"holds no state for 'model', 'optimizer'"):
        trainer.run(2)
    small_run(folder / "other")[0].run(1)
    wrong = torch.nn.Linear(5, 1)
    trainer, _, _ = small_run(folder / "other", resume=True, objects={"model": wrong, "optimizer": torch.optim.SGD(wrong.parameters())})
    with pytest.raises(CheckpointError, match=r"'weight' has shape \(1, 3\) in the checkpoint and \(1, 5\) in this model"):
        trainer.run(2)


def test_without_dir_the_plugin_is_inactive_and_says_how_to_activate(tmp_path, ignite_isolated, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Trainer([1, 2], lambda batch: 0.0, plugins={"checkpoint": {}})
    assert "checkpoint" not in trainer.plugins
    trainer.run(1)
    assert "Plugin checkpoint (ignite-checkpoint 0.1.0) is inactive: no folder to write to: pass plugins=" in caplog.text
    with pytest.raises(ignite.PluginInactive, match="'dir'"):
        Checkpoint()


def test_autoload_with_default_options_finds_the_plugin_inactive(ignite_autoload, caplog):
    ignite_autoload("checkpoint")
    caplog.set_level(logging.INFO, logger="ignite")
    Trainer([1, 2], lambda batch: 0.0).run(1)
    assert "Plugin checkpoint (ignite-checkpoint 0.1.0) is inactive: no folder to write to" in caplog.text


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"dir": 3}, TypeError, "dir must be a path"),
        ({"dir": ""}, ValueError, "dir must not be empty"),
        ({"every_iterations": 0}, ValueError, "every_iterations must be at least 1"),
        ({"every_iterations": 2.5}, TypeError, "every_iterations must be a positive integer"),
        ({"every_epochs": True}, TypeError, "every_epochs must be a positive integer"),
        ({"keep": 0}, ValueError, "keep must be at least 1"),
        ({"resume": "yes"}, TypeError, "resume must be True or False"),
        ({"save_on_interrupt": 1}, TypeError, "save_on_interrupt must be True or False"),
        ({"background_serialization": "auto"}, TypeError, "background_serialization must be True or False"),
        ({"objects": [1]}, TypeError, "objects must be a dict"),
        ({"objects": {"model": 3}}, TypeError, r"objects\['model'\] \(int\) has no state_dict or load_state_dict"),
        ({"objects": {1: torch.nn.Linear(1, 1)}}, TypeError, "names must be strings"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        Checkpoint(**{"dir": str(tmp_path), **options})


def test_bad_options_through_the_trainer_name_the_plugin(tmp_path, ignite_isolated):
    with pytest.raises(PluginError, match=r"'checkpoint'.*every_iterations must be at least 1"):
        Trainer([1], lambda b: 0.0, plugins={"checkpoint": {"dir": str(tmp_path), "every_iterations": -1}})
    with pytest.raises(PluginError, match=r"has no option 'every_iteration'. Did you mean 'every_iterations'"):
        Trainer([1], lambda b: 0.0, plugins={"checkpoint": {"dir": str(tmp_path), "every_iteration": 1}})


def test_the_former_option_dirname_is_refused_with_the_new_name(tmp_path, ignite_isolated):
    with pytest.raises(PluginError, match=r"'checkpoint'.*has no option 'dirname'. Did you mean 'dir'\? \('dirname' was renamed"):
        Trainer([1], lambda b: 0.0, plugins={"checkpoint": {"dirname": str(tmp_path)}})
    assert not os.listdir(tmp_path)  # refused before anything is written


class LiveState:
    """An object whose state_dict() returns its live containers, as user objects may."""

    def __init__(self) -> None:
        self.state = {"counts": [1, 2], "meta": {"name": "a"}, "tensor": torch.zeros(3)}

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


@pytest.mark.parametrize("background", [False, True])
def test_a_checkpoint_holds_the_moment_of_save_though_written_later_on_the_writer_thread(
    tmp_path, ignite_isolated, monkeypatch, background
):
    import ignite_checkpoint

    release = threading.Event()
    threads: dict[str, list[str]] = {"serialized": [], "written": []}
    real_serialized, real_atomic_write = ignite_checkpoint._serialized, ignite_checkpoint._atomic_write

    def serialized(payload):
        threads["serialized"].append(threading.current_thread().name)
        if background:  # the writer waits before it serializes: what it reads must be the copy
            assert release.wait(60), "the test never released the writer"
        return real_serialized(payload)

    def atomic_write(data, path, directory_fd):
        threads["written"].append(threading.current_thread().name)
        assert release.wait(60), "the test never released the writer"
        real_atomic_write(data, path, directory_fd)

    monkeypatch.setattr(ignite_checkpoint, "_serialized", serialized)
    monkeypatch.setattr(ignite_checkpoint, "_atomic_write", atomic_write)
    live = LiveState()
    trainer, model, optimizer = small_run(
        tmp_path / "ckpt", every_epochs=1000, background_serialization=background, more_objects={"live": live}
    )
    trainer.run(1)
    plugin = trainer.plugins["checkpoint"]
    weight = model.weight.detach().clone()
    momentum = optimizer.state[model.weight]["momentum_buffer"].clone()
    path = plugin.save(trainer)
    # Training goes on before the writer writes: in-place changes must not reach the file.
    with torch.no_grad():
        model.weight.add_(100.0)
    optimizer.state[model.weight]["momentum_buffer"].mul_(-1)
    optimizer.param_groups[0]["lr"] = 5.0
    trainer.training_history.append(123.0)
    live.state["counts"].append(3)
    live.state["meta"]["name"] = "b"
    live.state["tensor"].add_(1)
    release.set()
    plugin.wait()
    serializer = "ignite-checkpoint-writer" if background else threading.current_thread().name
    assert threads == {"serialized": [serializer], "written": ["ignite-checkpoint-writer"]}
    saved = load_checkpoint(path)
    assert torch.equal(saved["objects"]["model"]["weight"], weight)
    assert torch.equal(saved["objects"]["optimizer"]["state"][0]["momentum_buffer"], momentum)
    assert saved["objects"]["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert history_length(saved["trainer"]["training_history"]) == 4
    assert saved["objects"]["live"]["counts"] == [1, 2] and saved["objects"]["live"]["meta"] == {"name": "a"}
    assert torch.equal(saved["objects"]["live"]["tensor"], torch.zeros(3))


def test_with_background_serialization_torch_save_runs_on_the_writer_thread_only(tmp_path, ignite_isolated, monkeypatch):
    calls: list[str] = []
    real_save = torch.save

    def save(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    trainer, _, _ = small_run(tmp_path / "bg", every_iterations=2, background_serialization=True)
    trainer.run(2)
    assert calls and set(calls) == {"ignite-checkpoint-writer"}, calls
    # The default, for a state on the CPU alone: torch.save on the training thread (see the README).
    calls.clear()
    trainer, _, _ = small_run(tmp_path / "default", every_iterations=2)
    trainer.run(1)
    assert calls and set(calls) == {threading.current_thread().name}, calls


def test_snapshot_buffers_are_reused_across_saves_of_the_same_shapes_and_freed_at_the_run_end(
    tmp_path, ignite_isolated
):
    trainer, model, _optimizer = small_run(tmp_path / "buffers", every_epochs=1, background_serialization=True)
    plugin = trainer.plugins["checkpoint"]
    trainer.run(1)
    assert plugin._buffers.held_bytes == 0  # released when the run ended
    first = plugin._buffers.allocations
    assert first > 0
    plugin.save(trainer)
    held = plugin._buffers.held_bytes
    allocated = plugin._buffers.allocations - first
    # One buffer per storage: the model's 2 tensors, the momentum buffers, the histories and RNG states.
    assert allocated >= 4 and held > 0
    for _ in range(3):  # the same shapes again: no new buffer
        plugin.save(trainer)
        assert plugin._buffers.allocations - first == allocated
        assert plugin._buffers.held_bytes == held
    plugin.wait()
    with torch.no_grad():
        model.weight.add_(1.0)
    path = plugin.save(trainer)
    plugin.wait()
    assert torch.equal(load_checkpoint(path)["objects"]["model"]["weight"], model.weight)
    trainer.run(2)  # one more epoch, then the run's end releases them
    assert plugin._buffers.held_bytes == 0


class Views:
    def __init__(self) -> None:
        base = torch.arange(10.0)
        self.state = {"base": base, "tail": base[4:], "strided": base[::3], "flag": torch.tensor(True)}

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


def test_the_snapshot_keeps_views_sharing_their_storage_as_torch_save_would(tmp_path, ignite_isolated):
    views = Views()
    trainer, _, _ = small_run(tmp_path / "views", background_serialization=True, more_objects={"views": views})
    trainer.run(1)
    saved = load_checkpoint(list_checkpoints(tmp_path / "views")[-1])["objects"]["views"]
    for key, value in views.state.items():
        assert torch.equal(saved[key], value) and saved[key].stride() == value.stride(), key
    assert saved["tail"].untyped_storage().data_ptr() == saved["base"].untyped_storage().data_ptr()
    assert saved["strided"].storage_offset() == 0 and saved["tail"].storage_offset() == 4


def test_background_serialization_resumes_bit_for_bit(tmp_path, ignite_isolated):
    reference, model_a, optimizer_a = small_run(tmp_path / "a", background_serialization=True)
    reference.run(3)
    first, _, _ = small_run(tmp_path / "b", background_serialization=True)
    first.run(2)
    resumed, model_b, optimizer_b = small_run(tmp_path / "b", background_serialization=True, resume=True)
    resumed.run(3)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert torch.equal(
        optimizer_a.state[model_a.weight]["momentum_buffer"], optimizer_b.state[model_b.weight]["momentum_buffer"]
    )
    assert list(reference.training_history) == list(resumed.training_history)


def test_defaults_save_every_epoch_and_add_no_per_iteration_hook(tmp_path, ignite_isolated):
    plugin = Checkpoint(dir=str(tmp_path))
    assert (plugin.every_epochs, plugin.every_iterations, plugin.keep, plugin.resume, plugin.save_on_interrupt) == (
        1,
        None,
        3,
        False,
        True,
    )
    with_iterations = Checkpoint(dir=str(tmp_path / "iterations"), every_iterations=5)
    assert with_iterations.every_epochs is None
    calls = {}
    for name, checkpoint in (("epochs", plugin), ("iterations", with_iterations)):
        trainer = Trainer([1.0] * 3, lambda batch: batch, profile=True)
        trainer.register_plugin(checkpoint, name=name)
        trainer.run(4)  # 12 iterations
        calls[name] = {
            (r["event"], r["calls"]) for r in trainer.profile_report() if r["name"] == name and "COMPLETED" in r["event"]
        }
    # A hook with nothing to do is not registered: never called, not even to return.
    assert calls["epochs"] == {("EPOCH_COMPLETED", 4), ("TRAINING_COMPLETED", 1)}
    assert calls["iterations"] == {("TRAINING_ITERATION_COMPLETED", 2), ("TRAINING_COMPLETED", 1)}
    assert [os.path.basename(path) for path in list_checkpoints(str(tmp_path / "iterations"))] == [
        checkpoint_name(2, 5), checkpoint_name(4, 10)
    ]


def test_file_names_sort_like_progress():
    assert checkpoint_name(3, 150) == "checkpoint_e0003_i00000150.pt"
    names = [checkpoint_name(e, i) for e, i in [(1, 9), (2, 10), (2, 100), (10, 1000)]]
    assert names == sorted(names)


# -- issue #13, 1: whatever is saved loads back; resume never throws work away --------------


class Stats:
    """A user object whose state holds numpy values and a Decimal."""

    def __init__(self) -> None:
        self.seen, self.scale, self.price = numpy.zeros(3), numpy.float32(1.0), decimal.Decimal("0")

    def step(self) -> None:
        self.seen = self.seen + numpy.arange(3)
        self.scale = self.scale * numpy.float32(0.5)
        self.price += decimal.Decimal("0.10")

    def state_dict(self) -> dict:
        return {"seen": self.seen.copy(), "scale": self.scale, "price": self.price}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.scale, self.price = state["seen"], state["scale"], state["price"]


def test_numpy_and_decimal_object_state_round_trips_through_a_resume(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    stats = Stats()
    trainer, _, _ = small_run(folder, more_objects={"stats": stats}, every_iterations=4)
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: stats.step())
    trainer.run(2)
    caplog.set_level(logging.INFO, logger="ignite")
    restored = Stats()
    resumed, _, _ = small_run(folder, more_objects={"stats": restored}, resume=True, every_iterations=4)
    resumed.run(2)  # resumed after epoch 2's last batch, of 2 epochs: nothing more to train
    assert "Skipping" not in caplog.text and f"Resumed from {folder / 'checkpoint_e0002_i00000008.pt'}" in caplog.text
    assert type(restored.seen) is numpy.ndarray and restored.seen.tolist() == [0.0, 8.0, 16.0]
    assert type(restored.scale) is numpy.float32 and restored.scale == numpy.float32(0.5**8)
    assert restored.price == decimal.Decimal("0.80")


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Box:
    side: float


@pytest.mark.parametrize(("value", "kind"), [(Point(1, 2), "Point"), (Box(2.0), "Box")])
def test_an_object_state_that_could_never_load_fails_at_save_naming_where_and_writes_nothing(
    tmp_path, ignite_isolated, value, kind
):
    class Holder:
        def state_dict(self):
            return {"config": {"shape": value}, "weights": torch.ones(2)}

        def load_state_dict(self, state):
            pass

    folder = tmp_path / "ckpt"
    trainer, _, _ = small_run(folder, more_objects={"holder": Holder()})
    with pytest.raises(NotLoadableError, match=rf"objects\['holder'\]\['config'\]\['shape'\] is a .*{kind}"):
        trainer.run(1)
    assert sorted(os.listdir(folder)) == [LOCK_NAME]  # no checkpoint that resume would skip


def test_numpy_training_values_round_trip_through_a_resume(tmp_path, ignite_isolated, caplog):
    # Needs the core's Trainer.state_dict() to encode histories (issue #13).
    folder = tmp_path / "ckpt"
    first = Trainer([1, 2, 3], lambda b: numpy.float32(b) / 2, plugins={"checkpoint": {"dir": str(folder)}})
    first.run(2)
    caplog.set_level(logging.INFO, logger="ignite")
    resumed = Trainer([1, 2, 3], lambda b: numpy.float32(b) / 2, plugins={"checkpoint": {"dir": str(folder), "resume": True}})
    resumed.run(3)
    assert "Skipping" not in caplog.text and "Resumed from" in caplog.text
    assert [float(v) for v in resumed.training_history] == [0.5, 1.0, 1.5] * 3


def test_a_training_value_that_could_never_load_fails_at_save_and_writes_nothing(tmp_path, ignite_isolated):
    # Needs the core's Trainer.state_dict() to encode histories (issue #13).
    folder = tmp_path / "ckpt"
    trainer = Trainer([1, 2, 3], lambda b: Box(b), plugins={"checkpoint": {"dir": str(folder)}})
    with pytest.raises(NotLoadableError, match=r"(?i)history"):
        trainer.run(1)
    assert list_checkpoints(folder) == [] and not [n for n in os.listdir(folder) if n.startswith(".checkpoint_")]


def snapshot_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if name != LOCK_NAME}


def test_resume_stops_when_no_checkpoint_can_be_read_and_leaves_them_alone(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    small_run(folder, keep=None)[0].run(2)
    for path in list_checkpoints(folder):  # both cut short: a disk that lost their ends
        Path(path).write_bytes(Path(path).read_bytes()[:200])
    before = snapshot_files(folder)
    trainer, _model, _ = small_run(folder, resume=True, keep=1)
    with pytest.raises(CheckpointError) as error:
        trainer.run(4)
    message = str(error.value)
    assert f"none of the 2 checkpoint(s) in {str(folder)!r} can be read" in message
    assert "start_over_if_unreadable=True" in message
    for name in before:  # each file, and why
        assert f"Checkpoint {str(folder / name)!r} is truncated or corrupt" in message
    assert snapshot_files(folder) == before and trainer.current_iteration == 0

    # Asked to start over: it does, and keeps them, renamed out of the way of its own saves
    # (it writes the same names) and of keep.
    trainer, _, _ = small_run(folder, resume=True, keep=1, start_over_if_unreadable=True)
    trainer.run(4)
    assert "starting from scratch" in caplog.text
    after = snapshot_files(folder)
    assert {name + ".unreadable": content for name, content in before.items()}.items() <= after.items()
    assert [os.path.basename(p) for p in list_checkpoints(folder)] == ["checkpoint_e0004_i00000016.pt"]


def test_unreadable_checkpoints_are_neither_counted_nor_deleted_by_keep(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    small_run(folder, keep=None)[0].run(3)
    middle = folder / "checkpoint_e0002_i00000008.pt"
    middle.write_bytes(middle.read_bytes()[:-100])
    broken = middle.read_bytes()
    trainer, _, _ = small_run(folder, resume=True, keep=2)
    trainer.run(5)
    assert f"{middle}" in caplog.text and "left alone and not counted by keep" in caplog.text
    # Today's code counted it among the two kept and deleted it at the first save.
    assert middle.read_bytes() == broken
    assert [os.path.basename(p) for p in list_checkpoints(folder)] == [
        "checkpoint_e0002_i00000008.pt",
        "checkpoint_e0004_i00000016.pt",
        "checkpoint_e0005_i00000020.pt",
    ]


# -- issue #13, 2: a checksum catches corruption ----------------------------------------------


def flip_a_byte_of(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside the stored data of ``tensor`` in the checkpoint at ``path``."""
    content = bytearray(path.read_bytes())
    wanted = tensor.numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and archive.read(i) == wanted)
    name_length, extra_length = struct.unpack_from("<HH", content, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    content[start + 1] ^= 0x01
    path.write_bytes(bytes(content))


def test_one_flipped_byte_in_tensor_data_is_caught_by_the_checksum(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    small_run(folder)[0].run(1)
    path = folder / "checkpoint_e0001_i00000004.pt"
    weight = load_checkpoint(path)["objects"]["model"]["weight"]
    flip_a_byte_of(path, weight)
    # torch itself loads it without complaint, with another weight:
    silently = torch.load(path, weights_only=True)["objects"]["model"]["weight"]
    assert not torch.equal(silently, weight)
    with pytest.raises(CheckpointError, match="is corrupt: its content does not match its checksum") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_resume_skips_a_corrupt_checkpoint_for_the_previous_good_one_and_keeps_it(tmp_path, ignite_isolated, caplog):
    caplog.set_level(logging.INFO, logger="ignite")
    folder = tmp_path / "ckpt"
    small_run(folder, keep=None)[0].run(2)
    newest = folder / "checkpoint_e0002_i00000008.pt"
    flip_a_byte_of(newest, load_checkpoint(newest)["objects"]["model"]["bias"])
    corrupt = newest.read_bytes()
    trainer, _, _ = small_run(folder, resume=True, keep=1)
    trainer.run(3)
    assert f"Skipping Checkpoint {str(newest)!r} is corrupt" in caplog.text
    assert f"Resumed from {folder / 'checkpoint_e0001_i00000004.pt'}: epoch 1, iteration 4" in caplog.text
    # The resumed run wrote checkpoint_e0002_i00000008.pt again; the corrupt one is kept aside.
    assert Path(f"{newest}.unreadable").read_bytes() == corrupt
    assert load_checkpoint(folder / "checkpoint_e0003_i00000012.pt")["trainer"]["current_iteration"] == 12


def test_a_checkpoint_stays_a_torch_file_and_older_files_without_checksum_load_unverified(tmp_path, ignite_isolated, caplog):
    folder = tmp_path / "ckpt"
    small_run(folder)[0].run(1)
    path = folder / "checkpoint_e0001_i00000004.pt"
    with zipfile.ZipFile(path) as archive:
        assert archive.comment.startswith(b"ignite-checkpoint crc32 ") and archive.testzip() is None
    state = load_checkpoint(path)
    assert torch.equal(torch.load(path, weights_only=True)["objects"]["model"]["weight"], state["objects"]["model"]["weight"])
    caplog.set_level(logging.INFO, logger="ignite")
    older = folder / "checkpoint_e0000_i00000000.pt"
    torch.save(state, older)  # what ignite-checkpoint wrote before the checksum
    assert load_checkpoint(older)["trainer"]["current_iteration"] == 4
    assert f"Checkpoint {older} has no checksum (written before ignite-checkpoint recorded one): loaded unverified" in caplog.text


# -- issue #13, 3: one run owns a checkpoint folder ------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused_and_a_killed_holder_frees_it(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    config = {"dir": str(folder), "out": str(tmp_path / "out.pt"), "max_epochs": 2, "keep": None}
    holder = start({**config, "stop": {"where": "iteration", "iteration": 6, "signal": "SIGSTOP"}})
    try:
        _, status = os.waitpid(holder.pid, os.WUNTRACED)  # returns once it stopped itself
        assert os.WIFSTOPPED(status), "the holder ended instead of stopping"
        saved = snapshot_files(folder)
        assert "checkpoint_e0001_i00000004.pt" in saved
        # A save of the holder's in progress, as far as anyone can tell.
        temporary = folder / f".checkpoint_checkpoint_e0001_i00000008.pt.{holder.pid}.tmp"
        temporary.write_bytes(b"half a checkpoint")
        trainer, _, _ = small_run(folder)
        with pytest.raises(CheckpointError) as error:
            trainer.run(1)
        assert f"Checkpoint folder {str(folder)!r} is in use by another run (pid {holder.pid} on host" in str(error.value)
        assert temporary.exists() and snapshot_files(folder) == {**saved, temporary.name: b"half a checkpoint"}
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait(timeout=TIMEOUT)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == -signal.SIGKILL
    returncode, stderr = finish({"again": start({**config, "resume": True})})["again"]
    assert returncode == 0, stderr[-3000:]
    assert "Removed 1 unfinished temporary checkpoint file(s)" in stderr
    assert f"Resumed from {folder / 'checkpoint_e0001_i00000004.pt'}" in stderr  # the holder's last save


def test_the_lock_is_held_for_the_run_and_released_at_its_end_or_on_an_exception(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    refused = []

    def second_run(trainer):
        if trainer.current_iteration == 2:
            with pytest.raises(CheckpointError, match=f"in use by another run \\(pid {os.getpid()} on host"):
                small_run(folder)[0].run(1)
            refused.append(True)

    first, _, _ = small_run(folder)
    first.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, second_run)
    first.run(1)
    assert refused == [True] and list_checkpoints(folder) == [str(folder / "checkpoint_e0001_i00000004.pt")]

    def fail(trainer):
        raise RuntimeError("update failed")

    failing, _, _ = small_run(folder)
    failing.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, fail)
    with pytest.raises(RuntimeError, match="update failed"):
        failing.run(1)
    small_run(folder, resume=True)[0].run(2)  # neither the ended run nor the failed one holds it
    assert list_checkpoints(folder)[-1] == str(folder / "checkpoint_e0002_i00000008.pt")


# -- issue #13, 4: a refused checkpoint changes nothing --------------------------------------


def everything(trainer: Trainer, objects: dict) -> dict:
    """Copies of every state a restore could change."""
    return {
        "objects": {name: copy_state(obj.state_dict()) for name, obj in objects.items()},
        "counters": (trainer.current_epoch, trainer.current_iteration, len(trainer.training_history)),
        "rng": torch.get_rng_state(),
    }


def copy_state(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: copy_state(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_state(item) for item in value]
    return value


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def trained_elsewhere(tmp_path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Give ``model`` and ``optimizer`` state of their own (momentum buffers), to see it kept."""
    data = [(torch.randn(4, model.in_features), torch.randn(4, 1)) for _ in range(2)]

    def update(batch):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(batch[0]), batch[1]).backward()
        optimizer.step()
        return 0.0

    Trainer(data, update).run(1)


def test_a_model_of_other_shapes_is_refused_before_anything_is_restored(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    small_run(folder)[0].run(1)
    files = snapshot_files(folder)
    wider = torch.nn.Linear(5, 1)
    optimizer = torch.optim.SGD(wider.parameters(), lr=0.1, momentum=0.9)
    trained_elsewhere(tmp_path, wider, optimizer)
    # The optimizer first: today's code restored it, then failed on the model.
    objects = {"optimizer": optimizer, "model": wider}
    trainer, _, _ = small_run(folder, resume=True, objects=objects)
    before = everything(trainer, objects)
    with pytest.raises(CheckpointError) as error:
        trainer.run(2)
    assert str(error.value) == (
        f"Checkpoint {str(folder / 'checkpoint_e0001_i00000004.pt')!r} does not fit objects['model'] (Linear): 'weight' "
        "has shape (1, 3) in the checkpoint and (1, 5) in this model: resume with the model it was saved with, or give "
        "this run another dir"
    )
    assert same_state(everything(trainer, objects), before)
    assert snapshot_files(folder) == files


class HalfLoads:
    """An object whose load_state_dict changes part of it, then fails."""

    def __init__(self) -> None:
        self.value, self.other = 1, 2

    def state_dict(self) -> dict:
        return {"value": self.value, "other": self.other}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]
        raise ValueError("other must be positive")


def test_an_object_failing_after_others_were_restored_rolls_everything_back(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    saver = HalfLoads()
    saver.value = 10
    small_run(folder, more_objects={"scaler": saver})[0].run(1)
    files = snapshot_files(folder)
    scaler = HalfLoads()
    trainer, model, optimizer = small_run(folder, resume=True, more_objects={"scaler": scaler})
    trained_elsewhere(tmp_path, model, optimizer)
    objects = {"model": model, "optimizer": optimizer, "scaler": scaler}
    before = everything(trainer, objects)
    with pytest.raises(CheckpointError, match=r"objects\['scaler'\] \(HalfLoads\) was refused, so nothing was restored: ValueError: other must be positive"):
        trainer.run(2)
    assert (scaler.value, scaler.other) == (1, 2)
    assert same_state(everything(trainer, objects), before)  # parameters, momentum, counters, RNG
    assert snapshot_files(folder) == files


def test_a_trainer_state_of_an_unknown_format_is_refused_before_anything_is_restored(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    small_run(folder)[0].run(1)
    path = folder / "checkpoint_e0001_i00000004.pt"
    state = load_checkpoint(path)
    state["trainer"]["format"] = "ignite.Trainer/2"
    torch.save(state, path)  # no checksum: loaded unverified
    trainer, model, optimizer = small_run(folder, resume=True)
    trained_elsewhere(tmp_path, model, optimizer)
    objects = {"model": model, "optimizer": optimizer}
    before = everything(trainer, objects)
    with pytest.raises(CheckpointError, match=r"its trainer state was refused, so nothing was restored: .*newer ignite-trainer \(state format 2\)"):
        trainer.run(2)
    assert same_state(everything(trainer, objects), before)
    assert path.exists()


def test_a_newer_checkpoint_format_is_named_as_newer_and_stops_resume(tmp_path, ignite_isolated):
    folder = tmp_path / "ckpt"
    small_run(folder, keep=None)[0].run(1)
    state = load_checkpoint(folder / "checkpoint_e0001_i00000004.pt")
    newer = folder / "checkpoint_e0002_i00000008.pt"
    torch.save({**state, "format": "ignite-checkpoint/2"}, newer)
    with pytest.raises(NewerFormatError) as error:
        load_checkpoint(newer)
    assert str(error.value) == (
        f"Checkpoint {str(newer)!r} was written by a newer ignite-checkpoint (format 2); this one reads format 1: "
        "upgrade ignite-checkpoint to load it"
    )
    files = snapshot_files(folder)
    trainer, model, optimizer = small_run(folder, resume=True)
    objects = {"model": model, "optimizer": optimizer}
    before = everything(trainer, objects)
    with pytest.raises(NewerFormatError, match="upgrade ignite-checkpoint"):
        trainer.run(3)  # not resumed from the older file: that would throw the newer one's work away
    assert same_state(everything(trainer, objects), before)
    assert snapshot_files(folder) == files


# -- ranks agree on the checkpoint they resume from -------------------------------------------


def _two_epochs_of_checkpoints(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A single-process run of checkpoint_ranks_worker's trainer, saved at epochs 1 and 2
    (the test uses ignite_isolated)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from checkpoint_ranks_worker import small_trainer

    trainer, _ = small_trainer(str(folder), resume=False)
    trainer.run(2)
    return [os.path.basename(path) for path in list_checkpoints(folder)]


def _rank_results(folder: Path) -> list[dict]:
    run_ranks(Path(__file__).with_name("checkpoint_ranks_worker.py"), folder)
    return [json.loads((folder / f"result{rank}.json").read_text()) for rank in range(2)]


def test_ranks_resume_together_from_the_newest_checkpoint_every_rank_can_read(tmp_path, monkeypatch, ignite_isolated):
    names = _two_epochs_of_checkpoints(tmp_path / "rank0", monkeypatch)
    assert names == ["checkpoint_e0001_i00000004.pt", "checkpoint_e0002_i00000008.pt"]
    shutil.copytree(tmp_path / "rank0", tmp_path / "rank1")
    newest = tmp_path / "rank1" / names[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # rank 1 alone cannot read the newest
    newest.write_bytes(bytes(data))
    results = _rank_results(tmp_path)
    # Rank 0 could read epoch 2's file, but went back with rank 1 to epoch 1's.
    assert results == [{"resumed_at": 4, "iteration": 12}] * 2


def test_a_rank_that_sees_no_checkpoint_stops_every_rank_with_a_clear_error(tmp_path, monkeypatch, ignite_isolated):
    _two_epochs_of_checkpoints(tmp_path / "rank0", monkeypatch)
    (tmp_path / "rank1").mkdir()
    results = _rank_results(tmp_path)
    for result in results:
        assert "rank 1 can read no checkpoint" in result["error"] and "shared filesystem" in result["error"], result
