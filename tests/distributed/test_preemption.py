"""Preemption and elastic restarts with real ``torchrun`` processes and real signals (#16 items 1, 2).

- A SIGTERM to ``torchrun`` (which forwards it to its workers) or to one rank only: every rank
  stops at the iteration the stop vote agrees on, the checkpoint plugin saves that point, every
  rank's run() raises ignite.Preempted (exit code 143); a launch with ``resume=True`` then ends
  bit for bit like the uninterrupted run (``checkpoint_full`` of the main launch).
- ``torchrun --max-restarts=1``: one rank SIGKILLs itself at a seeded random iteration in the
  first attempt; torchrun restarts both, which resume from the newest checkpoint and end bit for
  bit like the uninterrupted run.

The worker (``scripts/ddp_worker.py``, cases ``preempt`` and ``elastic``) writes a marker file
when it waits for the signal; the test polls for it with a deadline, then signals. Every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ignite.testing import GLOO_TEARDOWN_ABORT

from .test_distributed import (
    BATCHES_PER_EPOCH,
    INSTALLED,
    RANKS,
    TIMEOUT,
    WORKER,
    _environment,
    _free_port,
    assert_bitwise_equal,
    load,
    output_of,
    read,
    torchrun,
)

pytestmark = pytest.mark.skipif("checkpoint" not in INSTALLED, reason="the ignite-checkpoint plugin is not installed")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run the others must end like: ``checkpoint_full``, 3 epochs without a stop (and, in
    the same launch, ``preempt_at_start``)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = torchrun(out, "checkpoint_full", "preempt_at_start")
    assert result.returncode == 0, output_of(result)
    return out


# The worker's ranks wait for the SIGTERM in iteration 7 (PREEMPT_AT there) and stop after 8:
# the vote launched after 7 carries it (a vote every iteration in these tests).
STOPPED_AT = 8
KILL_SEED = 20261127  # the elastic test's draw of the rank and iteration to kill


def start_torchrun(out: Path, *cases: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "--max_restarts=0", f"--log-dir={out / 'torchrun'}", "--tee=3",
        str(WORKER), str(out), *cases,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=out, env=_environment(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(paths: list[Path], process: subprocess.Popen, timeout: float) -> str | None:
    """None once every path exists; the launch's output if it ended before (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            return f"exit code {process.returncode}\n{stdout[-4000:]}\n{stderr[-4000:]}"
        if time.monotonic() > deadline:
            process.kill()  # a hung launch must not outlive the test
            process.communicate()
            raise AssertionError(f"{paths} did not appear within {timeout} s")
        time.sleep(0.05)
    return None


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:  # a hung launch must not outlive the test
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def preempted_run(out: Path, send_to: str) -> subprocess.CompletedProcess:
    """Launch the ``preempt`` case and send SIGTERM to torchrun (``"torchrun"``) or to rank 1
    only (``"rank1"``) once the waiting ranks have written their markers."""
    waiting = [0, 1] if send_to == "torchrun" else [1]
    markers = [out / f"preempt_waiting_rank{rank}" for rank in waiting]
    for _ in range(3):
        process = start_torchrun(out, "preempt", env={"IGNITE_TEST_WAIT_RANKS": ",".join(map(str, waiting))})
        ended = wait_for(markers, process, TIMEOUT)
        if ended is None:
            break
        # The free port may have been taken between the probe and the launch: try another.
        assert "address already in use" in ended.lower(), f"torchrun ended before {markers} appeared: {ended}"
    assert ended is None, f"three launches found their port taken: {ended}"
    try:
        if send_to == "torchrun":
            process.send_signal(signal.SIGTERM)
        else:
            os.kill(int(markers[0].read_text()), signal.SIGTERM)
    finally:
        result = finish(process)
    return result


def check_preempted(out: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0, output_of(result)
    results = [json.loads((out / f"preempt_rank{rank}.json").read_text()) for rank in RANKS]
    for rank, found in zip(RANKS, results):
        assert found["raised"] == "Preempted" and found["code"] == 143, (rank, found)
        assert found["preempted"] is True, (rank, found)
        # Both at the same iteration, inside epoch 1 (8 batches): its training batches all ran.
        assert (found["epoch"], found["iteration"], found["training_runs"]) == (1, STOPPED_AT, [STOPPED_AT])
        assert found["validation_runs"] == []  # the stop came before validation
    folder = out / "checkpoints"
    names = sorted(path.name for path in folder.iterdir() if path.name.startswith("checkpoint_"))
    # Saves every 3 iterations (3, 6), then the preemption save of iteration 8, by rank 0 alone.
    assert names == ["checkpoint_e0001_i00000003.pt", "checkpoint_e0001_i00000006.pt", "checkpoint_e0001_i00000008.pt"]


@pytest.fixture(scope="module")
def preempted_via_torchrun(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("preempt_torchrun")
    return out, preempted_run(out, "torchrun")


def test_sigterm_to_torchrun_stops_every_rank_at_one_iteration_and_saves_it(preempted_via_torchrun) -> None:
    out, result = preempted_via_torchrun
    check_preempted(out, result)
    for rank in RANKS:
        found = json.loads((out / f"preempt_rank{rank}.json").read_text())
        assert found["signalled"] is True  # torchrun forwarded the signal to both ranks
    # torchrun itself ends with an error, naming the signal it received.
    assert result.returncode == 1, output_of(result)
    assert "SignalException" in result.stderr and "SIGTERM" in result.stderr, output_of(result)


def test_resume_after_preemption_ends_bit_for_bit_like_the_uninterrupted_run(uninterrupted: Path, preempted_via_torchrun) -> None:
    out, _ = preempted_via_torchrun
    resumed = torchrun(out, "checkpoint_resume")  # a launch run again: from the preemption's files
    assert resumed.returncode == 0, output_of(resumed)
    full = read(uninterrupted, "checkpoint_full")
    for rank, result in zip(RANKS, read(out, "checkpoint_resume")):
        assert result["resumed_at_iteration"] == [STOPPED_AT]
        assert (result["epoch"], result["iteration"]) == (3, 3 * BATCHES_PER_EPOCH)
        assert result["histories"] == full[rank]["histories"]
        assert_bitwise_equal(load(uninterrupted / "checkpoint_full_rank0.pt"), load(out / f"checkpoint_resume_rank{rank}.pt"))


def exit_codes(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The workers' exit codes by rank, as torchrun reports them."""
    return dict(re.findall(r"rank\s*:\s*(\d) \(local_rank: \d\)\s*exitcode\s*:\s*(-?\d+)", result.stderr))


def test_sigterm_to_one_rank_stops_both_and_both_exit_with_143(tmp_path: Path) -> None:
    for attempt in ("first", "again"):
        out = tmp_path / attempt
        out.mkdir()
        result = preempted_run(out, "rank1")
        # gloo's abort as a process ends can take the signalled rank's 143 (it then shows -6, and
        # torchrun ends the other with -15): the job runs once more, as every launcher here does.
        if "143" in exit_codes(result).values() or GLOO_TEARDOWN_ABORT not in result.stderr:
            break
    check_preempted(out, result)
    rank0 = json.loads((out / "preempt_rank0.json").read_text())
    assert rank0["signalled"] is False  # rank 0 stopped on the vote alone
    # The workers' exit codes, as torchrun reports them: the first to exit does so with 143;
    # torchrun then ends the other, whose run() has raised Preempted too (its JSON above), with
    # a SIGTERM of its own (-15) unless it has exited with 143 already (-6: gloo's rare abort as
    # a process ends, its work done; see ignite.testing.GLOO_TEARDOWN_ABORT).
    assert result.returncode == 1, output_of(result)
    codes = exit_codes(result)
    assert codes.keys() == {"0", "1"} and set(codes.values()) <= {"143", "-15", "-6"}, output_of(result)
    assert "143" in codes.values(), output_of(result)


def test_elastic_restart_after_a_sigkill_resumes_and_ends_bit_for_bit(uninterrupted: Path, tmp_path: Path) -> None:
    draw = random.Random(KILL_SEED)
    victim, kill_at = draw.randrange(2), draw.randint(4, 21)  # as the worker draws them
    command_env = {"IGNITE_TEST_KILL_SEED": str(KILL_SEED)}
    result = torchrun(tmp_path, "elastic", env=command_env, max_restarts=1)
    assert result.returncode == 0, output_of(result)
    full = read(uninterrupted, "checkpoint_full")
    last_save = (kill_at - 1) // 3 * 3  # saves every 3 iterations; the kill comes before its iteration's save
    for rank, found in zip(RANKS, read(tmp_path, "elastic")):
        assert found["attempt"] == 1, f"no restart happened (rank {victim} was to die at iteration {kill_at})"
        assert (found["victim"], found["kill_at"]) == (victim, kill_at)
        # The newest checkpoint every rank can read: the last save, or the one before it when
        # rank 0 died while writing it in the background.
        assert found["resumed_at_iteration"][0] in (last_save, last_save - 3), (found["resumed_at_iteration"], kill_at)
        assert (found["epoch"], found["iteration"]) == (3, 3 * BATCHES_PER_EPOCH)
        assert found["histories"] == full[rank]["histories"]
        assert_bitwise_equal(load(uninterrupted / "checkpoint_full_rank0.pt"), load(tmp_path / f"elastic_rank{rank}.pt"))


def test_sigterm_in_training_started_on_one_rank_stops_both_before_any_epoch_and_saves(uninterrupted: Path) -> None:
    # Every TRAINING_STARTED handler runs on both ranks; the vote after the event stops both;
    # TRAINING_COMPLETED fires; the plugin saves the starting point; both raise Preempted.
    for rank, found in zip(RANKS, read(uninterrupted, "preempt_at_start")):
        assert (found["raised"], found["code"], found["preempted"]) == ("Preempted", 143, True), (rank, found)
        assert found["started"] == [0] and found["fired"] == ["TRAINING_COMPLETED"], (rank, found)
        assert (found["epoch"], found["iteration"]) == (0, 0)
    names = sorted(path.name for path in (uninterrupted / "checkpoints_at_start").iterdir())
    assert "checkpoint_e0000_i00000000.pt" in names, names
