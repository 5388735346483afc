"""Two real processes on CPU (gloo), launched with torchrun, running ``scripts/ddp_worker.py``.

Each launch runs one or more cases of the worker in one process group and leaves one JSON file
(and some ``.pt`` files) per case and rank in a tmp folder; the tests read them. A launch is
bounded by a subprocess timeout, so a hang fails the test instead of blocking the run.

Launches (each costs ~7 s of startup on 2 cores): the main one (most cases), two that crash on
purpose, two for crash and resume with the checkpoint plugin (when installed), and one with a
short collective timeout for a case that used to hang. The main scenarios (terminate() on one
rank, early stopping on the reduced score, checkpoint, crash and resume) are launched again as
two nodes of one process each: two torchrun agents meeting through a c10d rendezvous.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from ignite.testing import GLOO_TEARDOWN_ABORT, folder_kept_aside

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

WORKER = Path(__file__).parent / "scripts" / "ddp_worker.py"
TIMEOUT = 120  # seconds for one launch: a hang fails the test instead of blocking CI
RANKS = (0, 1)
BATCHES_PER_EPOCH = 8  # as in the worker: 64 samples over 2 ranks in batches of 4
INSTALLED = {entry_point.name for entry_point in entry_points(group="ignite.plugins")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Set by an enclosing torchrun (or left over): the launch sets its own.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    # tests/conftest.py blocks the installed plugins for core tests (IGNITE_DISABLE_PLUGINS);
    # the workers name the plugins they use, and see no other (autoload off).
    blocked = ("IGNITE_DISABLE_PLUGINS", *_LAUNCH_VARIABLES)
    env = {key: value for key, value in os.environ.items() if key not in blocked}
    # A stop vote on every iteration (the default is every 32), so that the stop points of these
    # short runs are exact; test_terminate_with_a_vote_every_2_iterations checks the general rule.
    env.update(IGNITE_DISABLE_PLUGIN_AUTOLOAD="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", IGNITE_STOP_VOTE_EVERY="1")
    if os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # collectives over loopback only
    env.update(extra or {})
    return env


# torchrun's logs in a launch's folder (see rank_output()): kept when a launch is run again.
LAUNCH_LOGS = ("torchrun", "torchrun_node0", "torchrun_node1")


def torchrun(
    out: Path,
    *cases: str,
    env: dict[str, str] | None = None,
    max_restarts: int = 0,
    nodes: int = 1,
    worker: Path = WORKER,
    nproc: int = 2,
) -> subprocess.CompletedProcess:
    """Run the worker's ``cases`` on 2 ranks (``nproc`` on one node); stdout and stderr of the
    agent and the ranks. ``nodes=2``: as two machines of one process each, two torchrun agents
    meeting through a c10d rendezvous on 127.0.0.1 (see :func:`torchrun_nodes`). A launch run
    again (a port taken, gloo's teardown abort) starts from ``out`` as the first one found it:
    the checkpoints a resume reads, not the newer ones the first attempt wrote."""
    with folder_kept_aside(out, ignore=LAUNCH_LOGS) as put_back:
        for attempt in range(3):
            if attempt:
                put_back()
            if nodes == 2:
                result = torchrun_nodes(out, *cases, env=env, max_restarts=max_restarts)
            else:
                result = _torchrun_one_node(out, cases, env, max_restarts, worker, nproc)
            output = result.stdout + result.stderr
            # The free port may have been taken between the probe and the launch: try another. A
            # rank that gloo aborted at teardown, its work done, says nothing about the test either.
            if "address already in use" not in output.lower() and (
                result.returncode == 0 or GLOO_TEARDOWN_ABORT not in output
            ):
                return result
    return result


def _torchrun_one_node(
    out: Path, cases: tuple[str, ...], env: dict[str, str] | None, max_restarts: int, worker: Path, nproc: int
) -> subprocess.CompletedProcess:
    # Restarts need a fresh store per attempt: by default torchrun keeps the one the workers
    # meet in (static rendezvous, or the c10d rendezvous's shared store), and a restarted
    # rank can read the previous attempt's addresses there, then fail to connect (or
    # hang). The c10d rendezvous without store sharing makes rank 0 host a new one each time.
    where = ["--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    if max_restarts:
        where = ["--standalone"]
        env = {**(env or {}), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        *where,
        f"--max_restarts={max_restarts}",
        f"--log-dir={out / 'torchrun'}",  # else torchrun leaves a /tmp/torchelastic_* folder per launch
        "--tee=3",  # each rank's output also in a file of its own: see rank_output()
        str(worker),
        str(out),
        *cases,
    ]
    return subprocess.run(
        command, cwd=out, env=_environment(env), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def torchrun_nodes(
    out: Path, *cases: str, env: dict[str, str] | None = None, max_restarts: int = 0
) -> subprocess.CompletedProcess:
    """The worker's ``cases`` as 2 nodes of 1 process each: two torchrun agents, as on two
    machines, that find each other through the c10d rendezvous at 127.0.0.1:PORT (the first
    agent to bind the port hosts it; no --node-rank: the rendezvous assigns the ranks). Both
    agents' output, node 0's first; the exit code of the first agent that failed."""
    port = _free_port()
    agents = []
    for node in range(2):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=ignite-test-{port}",
            f"--max_restarts={max_restarts}", f"--log-dir={out / f'torchrun_node{node}'}", "--tee=3",
            str(WORKER), str(out), *cases,
        ]  # fmt: skip
        agents.append(subprocess.Popen(command, cwd=out, env=_environment(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        deadline = time.monotonic() + TIMEOUT
        for agent in agents:
            outputs.append(agent.communicate(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for agent in agents:  # a hung agent must not outlive the test
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
    codes = [agent.returncode for agent in agents]
    returncode = next((code for code in codes if code), 0)
    stdout = "".join(f"--- node {node}\n{output[0]}" for node, output in enumerate(outputs))
    stderr = "".join(f"--- node {node}\n{output[1]}" for node, output in enumerate(outputs))
    return subprocess.CompletedProcess(agents[0].args, returncode, stdout, stderr)


def output_of(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


def rank_output(out: Path, rank: int) -> str:
    """What ``rank`` printed (stdout and stderr) in the last launch into ``out``."""
    launches = sorted((out / "torchrun").iterdir(), key=lambda path: path.stat().st_mtime)
    folder = launches[-1] / "attempt_0" / str(rank)
    return "".join((folder / name).read_text() for name in ("stdout.log", "stderr.log") if (folder / name).exists())


def read(out: Path, case: str) -> list[dict[str, Any]]:
    """The results of ``case`` by rank."""
    return [json.loads((out / f"{case}_rank{rank}.json").read_text()) for rank in RANKS]


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_bitwise_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), f"{name} differs: max |diff| {(tensor - second[name]).abs().max()}"


MAIN_CASES = [
    "ddp",
    "terminate_iteration",
    "terminate_epoch",
    "terminate_validation",
    *(["early_stopping"] if "early_stopping" in INSTALLED else []),
    *(["tensorboard"] if "tensorboard" in INSTALLED else []),
    "checkpoint_full",
    "adhoc_resume",
    "batch_sampler",
    "trainer_resources",
]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("main")
    result = torchrun(out, *MAIN_CASES)
    assert result.returncode == 0, output_of(result)
    return out


# The main scenarios again as two machines of one process each (#16 item 3).
TWO_NODES_CASES = [
    "terminate_iteration",
    "terminate_epoch",
    *(["early_stopping"] if "early_stopping" in INSTALLED else []),
    "checkpoint_full",
    "adhoc_resume",
]


@pytest.fixture(scope="module")
def two_nodes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_nodes")
    result = torchrun(out, *TWO_NODES_CASES, nodes=2)
    assert result.returncode == 0, output_of(result)
    return out


@pytest.fixture(params=["one_node", "two_nodes"])
def scenario_run(request: pytest.FixtureRequest) -> Path:
    """The launch of the main scenarios: 2 processes on one node, or 2 nodes of 1 process."""
    return request.getfixturevalue("main_run" if request.param == "one_node" else "two_nodes_run")


# -- 1. DDP and the DistributedSampler ------------------------------------------------------


def test_ddp_ends_with_bitwise_equal_parameters_on_both_ranks(main_run: Path) -> None:
    final = [load(main_run / f"ddp_final_rank{rank}.pt") for rank in RANKS]
    assert_bitwise_equal(final[0], final[1])
    initial = load(main_run / "ddp_initial_rank0.pt")
    assert any(not torch.equal(initial[name], final[0][name]) for name in initial), "the model did not train"
    for result in read(main_run, "ddp"):
        assert (result["epoch"], result["iteration"]) == (3, 3 * BATCHES_PER_EPOCH)


def test_no_stop_vote_is_left_pending_when_run_returns(main_run: Path) -> None:
    for result in read(main_run, "ddp"):  # 24 iterations, a vote launched after each
        assert result["vote_pending_after_run"] is False


def test_sampler_epoch_advances_and_ranks_see_disjoint_shards(main_run: Path) -> None:
    results = read(main_run, "ddp")
    for epoch in ("1", "2", "3"):
        shards = [set(result["indices"][epoch]) for result in results]
        assert all(len(result["indices"][epoch]) == 32 for result in results)
        assert not shards[0] & shards[1], f"epoch {epoch}: both ranks saw {sorted(shards[0] & shards[1])}"
        assert shards[0] | shards[1] == set(range(64))
    for result in results:
        orders = [result["indices"][epoch] for epoch in ("1", "2", "3")]
        # Without set_epoch(epoch - 1) every epoch would repeat the first one's order.
        assert orders[0] != orders[1] != orders[2] != orders[0]
        assert set(orders[0]) != set(orders[1])  # a new shuffle also changes the shard


def test_only_rank_0_logs_progress(main_run: Path) -> None:
    rank0, rank1 = read(main_run, "ddp")
    assert any(line.startswith("INFO ignite Epoch 3/3") for line in rank0["logs"]), rank0["logs"]
    assert rank1["logs"] == []  # both asked for INFO; the trainer keeps ranks > 0 at WARNING
    assert rank0["ignite_logger_level"] == 20 and rank1["ignite_logger_level"] == 30


def test_sampler_epoch_advances_inside_a_batch_sampler(main_run: Path) -> None:
    # DataLoader(batch_sampler=BatchSampler(DistributedSampler(...))): loader.sampler is then a
    # SequentialSampler and the DistributedSampler sits in loader.batch_sampler.sampler.
    for result in read(main_run, "batch_sampler"):
        orders = [result["indices"][epoch] for epoch in ("1", "2", "3")]
        assert orders[0] != orders[1] != orders[2]


# -- 3. terminate() on one rank ---------------------------------------------------------------


def test_terminate_on_rank_1_at_iteration_k_stops_both_after_iteration_k_plus_1(scenario_run: Path) -> None:
    results = read(scenario_run, "terminate_iteration")
    assert results[1]["mid_epoch"]["called_at"] == [{"iteration": 5, "epoch": 1}]
    assert results[0]["mid_epoch"]["called_at"] == []
    for result in results:
        # With a vote on every iteration (IGNITE_STOP_VOTE_EVERY=1), a stop asked for in iteration k takes effect after k + 1.
        assert result["mid_epoch"]["iteration"] == 6
        assert result["mid_epoch"]["training_runs"] == [6]
        assert result["mid_epoch"]["validation_runs"] == []  # stopped inside training: no validation
    assert results[0]["mid_epoch"]["parameters"] == results[1]["mid_epoch"]["parameters"]


def test_terminate_with_a_vote_every_2_iterations_stops_both_when_the_carrying_vote_is_collected(scenario_run: Path) -> None:
    results = read(scenario_run, "terminate_iteration")
    assert results[1]["vote_every_2"]["called_at"] == [{"iteration": 3, "epoch": 1}]
    for result in results:
        # Asked for in iteration 3: carried by the vote launched at 4, collected at 6.
        assert result["vote_every_2"]["iteration"] == 6
        assert result["vote_every_2"]["validation_runs"] == []
    assert results[0]["vote_every_2"]["parameters"] == results[1]["vote_every_2"]["parameters"]


def test_terminate_at_the_last_iteration_of_an_epoch_stops_both_before_validation(scenario_run: Path) -> None:
    results = read(scenario_run, "terminate_iteration")
    for result in results:
        assert result["last_of_epoch"]["iteration"] == BATCHES_PER_EPOCH
        assert result["last_of_epoch"]["validation_runs"] == []
    assert results[0]["last_of_epoch"]["parameters"] == results[1]["last_of_epoch"]["parameters"]


def test_terminate_on_rank_0_at_epoch_completed_stops_both_after_that_epoch(scenario_run: Path) -> None:
    results = read(scenario_run, "terminate_epoch")
    assert results[0]["called_at"] == [{"iteration": 16, "epoch": 2}] and results[1]["called_at"] == []
    for result in results:
        assert (result["epoch"], result["iteration"]) == (2, 2 * BATCHES_PER_EPOCH)
        assert result["training_runs"] == [8, 8] and result["validation_runs"] == [8, 8]
    assert results[0]["parameters"] == results[1]["parameters"]


def test_terminate_in_validation_on_one_rank_stops_both_at_the_end_of_that_validation_run(main_run: Path) -> None:
    results = read(main_run, "terminate_validation")
    assert results[1]["called_at"] == [{"iteration": 16, "epoch": 2}] and results[0]["called_at"] == []
    for result in results:
        assert (result["epoch"], result["iteration"]) == (2, 2 * BATCHES_PER_EPOCH)
        assert result["validation_runs"] == [8, 8]  # that run finishes on both ranks; no epoch 3
    assert results[0]["parameters"] == results[1]["parameters"]


# -- 2. early stopping on the reduced score ---------------------------------------------------


@pytest.mark.skipif("early_stopping" not in INSTALLED, reason="the ignite-early-stopping plugin is not installed")
def test_early_stopping_stops_both_ranks_at_the_same_epoch_on_the_reduced_score(scenario_run: Path) -> None:
    # Validation losses (see the worker): rank 0 improves every epoch (alone: never stops);
    # rank 1 stalls from epoch 1 (alone, patience 2 would stop at epoch 3). Their mean
    # improves up to epoch 3 (13.5) and not after: patience 2 stops both at epoch 5.
    for result in read(scenario_run, "early_stopping"):
        assert result["epoch"] == 5  # of max_epochs=10
        assert result["iteration"] == 5 * BATCHES_PER_EPOCH
        assert (result["best_score"], result["best_epoch"]) == (13.5, 3)


# -- 5. TensorBoard writes on rank 0 only, the reduced means ----------------------------------


@pytest.mark.skipif("tensorboard" not in INSTALLED, reason="the ignite-tensorboard plugin is not installed")
def test_only_rank_0_writes_tensorboard_files_with_the_cross_rank_means(main_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert not (main_run / "tb_rank1").exists()
    assert any(path.name.startswith("events.out.tfevents") for path in (main_run / "tb_rank0").iterdir())
    accumulator = EventAccumulator(str(main_run / "tb_rank0"))
    accumulator.Reload()
    results = read(main_run, "tensorboard")
    # Every series is stepped by the iteration count; the "epoch" series maps those steps to epochs.
    epoch_at = {event.step: int(event.value) for event in accumulator.Scalars("epoch")}
    assert sorted(epoch_at.values()) == [1, 2]
    for tag, runs_key in (("validation/mean", "validation"), ("training/epoch_mean", "training")):
        events = accumulator.Scalars(tag)
        assert [epoch_at[event.step] for event in events] == [1, 2]
        for event in events:
            # Batch-weighted over both ranks: all batches of the epoch, whichever rank ran them.
            values = [value for result in results for value in result[runs_key][epoch_at[event.step] - 1]]
            assert event.value == pytest.approx(sum(values) / len(values), rel=1e-6)
    validation = accumulator.Scalars("validation/mean")
    # Rank 0 ran 2 batches (10, 11 in epoch 1), rank 1 three (110, 111, 112): 354 / 5, not
    # the mean of the two ranks' means (60.75).
    assert validation[0].value == pytest.approx(70.8)
    assert [means[""] for means in results[1]["reduced_validation_means"]] == [pytest.approx(70.8), pytest.approx(80.8)]
    # Iteration values are rank 0's own.
    iterations = accumulator.Scalars("training/iteration")
    assert len(iterations) == 2 * BATCHES_PER_EPOCH
    assert iterations[0].value == pytest.approx(results[0]["training"][0][0], rel=1e-6)


# -- 6. checkpoint and resume ------------------------------------------------------------------


def test_resume_from_trainer_state_dict_gives_the_uninterrupted_weights(scenario_run: Path) -> None:
    full = load(scenario_run / "checkpoint_full_rank0.pt")
    assert_bitwise_equal(full, load(scenario_run / "checkpoint_full_rank1.pt"))
    for rank, result in zip(RANKS, read(scenario_run, "adhoc_resume")):
        assert result["stopped_at"] == 11  # rank 1 asked at 10
        assert result["resumed_at"] == 9  # the newest save, mid-epoch 2
        assert (result["epoch"], result["iteration"]) == (3, 3 * BATCHES_PER_EPOCH)
        assert_bitwise_equal(full, load(scenario_run / f"adhoc_resume_rank{rank}.pt"))


@pytest.fixture(scope="module", params=[1, 2], ids=["one_node", "two_nodes"])
def checkpoint_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the uninterrupted run's folder, the crash and resume's), on one node or on two."""
    if "checkpoint" not in INSTALLED:
        pytest.skip("the ignite-checkpoint plugin is not installed")
    nodes = request.param
    reference = request.getfixturevalue("main_run" if nodes == 1 else "two_nodes_run")
    out = tmp_path_factory.mktemp("checkpoint")
    crashed = torchrun(out, "checkpoint_crash", nodes=nodes)
    assert crashed.returncode != 0, output_of(crashed)
    assert not list(out.glob("checkpoint_crash_rank*.json")), "the run was to die at iteration 11"
    resumed = torchrun(out, "checkpoint_resume", nodes=nodes)  # a launch run again: from the crash's files
    assert resumed.returncode == 0, output_of(resumed)
    return reference, out


def test_checkpoint_plugin_resume_after_a_crash_gives_the_uninterrupted_weights(
    checkpoint_runs: tuple[Path, Path]
) -> None:
    uninterrupted, out = checkpoint_runs
    full = load(uninterrupted / "checkpoint_full_rank0.pt")
    for rank, result in zip(RANKS, read(out, "checkpoint_resume")):
        # Saves at 3, 6, 9; the crash at 11. The plugin writes in the background, one file at a
        # time, so the save of 9 may still be in flight at the crash: then 6 is the newest.
        assert result["resumed_at_iteration"] in ([6], [9])
        assert (result["epoch"], result["iteration"]) == (3, 3 * BATCHES_PER_EPOCH)
        assert_bitwise_equal(full, load(out / f"checkpoint_resume_rank{rank}.pt"))
        assert result["histories"] == read(uninterrupted, "checkpoint_full")[rank]["histories"]
    written = sorted(path.name for path in (out / "checkpoints").iterdir() if path.name != ".ignite-checkpoint.lock")
    # Rank 0 alone wrote, and finished every file: no temporary file is left, the newest is the end.
    assert written and all(name.startswith("checkpoint_e") and name.endswith(".pt") for name in written), written
    assert written[-1] == f"checkpoint_e0003_i{3 * BATCHES_PER_EPOCH:08d}.pt"


def test_checkpoint_plugin_resume_restores_each_ranks_own_trainer_state(checkpoint_runs: tuple[Path, Path]) -> None:
    uninterrupted, out = checkpoint_runs
    # Each rank resumes its own Trainer.state_dict(): its histories (the reduced means of the
    # resumed epoch cover every rank's own batches) and its RNG streams (per-rank dropout).
    full = read(uninterrupted, "checkpoint_full")
    resumed = read(out, "checkpoint_resume")
    assert full[0]["draws"]["3"] != full[1]["draws"]["3"]  # the ranks draw different numbers
    for rank in RANKS:
        # Resumed mid-epoch (after batch 6 of epoch 1 or batch 1 of epoch 2): from that epoch on,
        # the means and the random draws are those of the uninterrupted run.
        first_epoch = (resumed[rank]["resumed_at_iteration"][0] - 1) // BATCHES_PER_EPOCH + 1
        assert resumed[rank]["means"] == [mean for mean in full[rank]["means"] if mean[0] >= first_epoch]
        assert resumed[rank]["draws"]["3"] == full[rank]["draws"]["3"]


# -- 4. an exception on one rank ends the whole job --------------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        # Rank 0 goes on into DDP's gradient all-reduce, which rank 1 never joins.
        ("crash_update", "rank 1 fails in its update function at iteration 5"),
        # Rank 1 goes on into the trainer's blocking stop vote at the end of the epoch.
        ("crash_epoch", "rank 0 fails in an EPOCH_COMPLETED handler at epoch 2"),
    ],
)
def test_an_exception_on_one_rank_ends_the_job_with_its_message(tmp_path: Path, case: str, message: str) -> None:
    # The guard is the subprocess timeout: a rank left waiting in a collective would hang
    # until gloo's 30-minute default and fail this test with TimeoutExpired.
    result = torchrun(tmp_path, case)
    assert result.returncode != 0, output_of(result)
    output = result.stdout + result.stderr
    assert f"RuntimeError: {message}" in output, output_of(result)
    assert not list(tmp_path.glob(f"{case}_rank*.json")), "no rank finished its run"


# -- ranks whose data differ ----------------------------------------------------------------------


def test_an_empty_validation_shard_on_one_rank_reduces_instead_of_hanging(tmp_path: Path) -> None:
    # Before the fix, the rank without batches skipped the reduction and the other waited in it
    # forever; the short collective timeout turns such a hang into a failure within seconds.
    result = torchrun(tmp_path, "empty_validation_shard", env={"IGNITE_TEST_COLLECTIVE_TIMEOUT": "10"})
    assert result.returncode == 0, output_of(result)
    for result in read(tmp_path, "empty_validation_shard"):
        assert result["validation_runs"] in ([2, 2], [0, 0])
        # Weighted by batch count: rank 1 ran none, so the mean is rank 0's.
        assert [means[""] for means in result["reduced_validation_means"]] == [1.5, 1.5]


@pytest.mark.parametrize(
    "case, messages",
    [
        ("uneven_ends", ["(this rank ran 10; the ranks ran from 10 to 12)", "(this rank ran 12; the ranks ran from 10 to 12)"]),
        # Rank 1 raises too when it collects that vote, unless torchrun has ended it first.
        ("uneven_vote", ["(this rank ran 10; another rank was still running them)"]),
    ],
)
def test_ranks_with_different_batch_counts_fail_with_a_clear_error_instead_of_hanging(
    tmp_path: Path, case: str, messages: list[str]
) -> None:
    # Before the guard, the ranks' votes paired up wrongly and the job hung at its end, when
    # one rank had launched more collectives than the other.
    # Votes every 32 iterations, the default: in uneven_ends no vote falls inside an epoch.
    result = torchrun(tmp_path, case, env={"IGNITE_TEST_COLLECTIVE_TIMEOUT": "20", "IGNITE_STOP_VOTE_EVERY": "32"})
    assert result.returncode != 0, output_of(result)
    output = result.stdout + result.stderr
    assert "ValueError: The ranks ran different numbers of training batches in epoch 1" in output, output_of(result)
    assert "DistributedSampler" in output, output_of(result)
    for message in messages:
        assert message in output, output_of(result)
    assert not list(tmp_path.glob(f"{case}_rank*.json")), "no rank finished its run"


# -- ranks set up differently (issue #13, item 5) ---------------------------------------------------


MISMATCH_CASES = [
    "mismatch_plugin_in_code",
    *(["mismatch_plugin_installed"] if "early_stopping" in INSTALLED else []),
    "mismatch_validation",
    "mismatch_batches",
]


@pytest.fixture(scope="module")
def mismatch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mismatch")
    # Without the check these cases hang or end in gloo's abort: a short collective timeout
    # turns a hang into a failure; the cases catch only RankMismatchError.
    result = torchrun(out, *MISMATCH_CASES, env={"IGNITE_TEST_COLLECTIVE_TIMEOUT": "30"})
    assert result.returncode == 0, output_of(result)
    return out


def _early_stopping_origin() -> str:
    from importlib.metadata import version

    return f"ignite-early-stopping {version('ignite-early-stopping')}"


@pytest.mark.parametrize(
    "case, expected",
    [
        (
            "mismatch_plugin_in_code",
            "- rank 1 has no active plugin 'collective_probe', rank 0 has it (registered in code): install the same "
            "plugins on every rank and give every rank the same plugins= options and register_plugin() calls",
        ),
        pytest.param(
            "mismatch_plugin_installed",
            "- rank 1 has no active plugin 'early_stopping', rank 0 has it (ORIGIN): install the same plugins",
            marks=pytest.mark.skipif("early_stopping" not in INSTALLED, reason="ignite-early-stopping is not installed"),
        ),
        (
            "mismatch_validation",
            "- rank 0 has validation data; rank 1 has no validation data: give every rank validation_data",
        ),
        (
            "mismatch_batches",
            "- rank 0 has 4 training batches per epoch; rank 1 has 6 training batches per epoch: shard the data "
            "with DistributedSampler",
        ),
    ],
)
def test_ranks_set_up_differently_raise_one_clear_error_on_every_rank(
    mismatch_run: Path, case: str, expected: str
) -> None:
    if "ORIGIN" in expected:
        expected = expected.replace("ORIGIN", _early_stopping_origin())
    results = read(mismatch_run, case)
    for rank, result in zip(RANKS, results):
        assert result["error"] == "RankMismatchError", (rank, result)
        assert result["message"].startswith("The 2 ranks are not set up alike"), result["message"]
        assert expected in result["message"], (rank, result["message"])
        assert result["iteration"] == 0  # raised before the first iteration (and any hook)
        # Every rank ran the same collectives: a trainer set up alike then trains in the same group.
        assert (result["after"]["iteration"], result["after"]["epoch"]) == (8, 2)
    assert results[0]["message"] == results[1]["message"]
    assert results[0]["message"].count("\n- ") == 1, results[0]["message"]  # only what differs is listed


def test_validation_on_one_rank_under_ddp_ends_every_rank_with_the_error_not_a_gloo_abort(tmp_path: Path) -> None:
    # Without the check, rank 1's extra stop vote after its validation run meets rank 0's DDP
    # all-reduce, and gloo ends the ranks with a low-level error (a size mismatch, a peer gone).
    result = torchrun(tmp_path, "mismatch_uncaught", env={"IGNITE_TEST_COLLECTIVE_TIMEOUT": "30"})
    assert result.returncode != 0, output_of(result)
    for rank in RANKS:
        output = rank_output(tmp_path, rank)
        assert "ignite.distributed.RankMismatchError: The 2 ranks are not set up alike" in output, (rank, output)
        assert "- rank 0 has no validation data; rank 1 has validation data" in output, (rank, output)
    everything = result.stdout + result.stderr
    assert "preamble" not in everything and "Timed out" not in everything, output_of(result)


# -- a rank stuck for ever (issue #13, item 6) -----------------------------------------------------


def test_a_rank_stuck_in_its_update_ends_the_job_at_the_process_group_timeout(tmp_path: Path) -> None:
    # Rank 1 blocks for ever; rank 0 waits in the stop vote until the group's 10 s timeout, fails,
    # and torchrun then ends rank 1. Without a bounded wait this launch would hit TIMEOUT instead.
    result = torchrun(tmp_path, "stuck_update", env={"IGNITE_TEST_COLLECTIVE_TIMEOUT": "10"})
    assert result.returncode != 0, output_of(result)
    waiting = rank_output(tmp_path, 0)
    assert "Timed out" in waiting, waiting
    assert "in the trainer's stop vote at iteration 4 (epoch 1): another rank did not join it within the process " \
        "group's timeout" in waiting, waiting
    stuck = rank_output(tmp_path, 1)
    assert "rank 1 blocks in its update function at iteration 3" in stuck, stuck
    assert "SIGTERM" in result.stdout + result.stderr, output_of(result)  # torchrun ended the stuck rank
    assert not list(tmp_path.glob("stuck_update_rank*.json"))


# -- resources --------------------------------------------------------------------------------------


def test_more_trainers_do_not_leak_process_groups(main_run: Path) -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts open files and threads in /proc (Linux)")
    # Each trainer used to create a gloo group of its own for the stop vote and never free it
    # (+5 open files, +3 threads per trainer); the group is now shared.
    for result in read(main_run, "trainer_resources"):
        assert result["after"]["fd"] - result["before"]["fd"] <= 2, result
        assert result["after"]["task"] - result["before"]["task"] <= 2, result


def test_worker_cases_are_all_exercised() -> None:
    """Keeps this file and the worker in step: every case of the worker is launched by a test."""
    source = WORKER.read_text()
    cases = {line.split("(")[0][len("def case_") :] for line in source.splitlines() if line.startswith("def case_")}
    launched = {
        *MAIN_CASES,
        *("early_stopping", "tensorboard", "checkpoint_crash", "checkpoint_resume"),
        *("crash_update", "crash_epoch", "empty_validation_shard", "uneven_ends", "uneven_vote"),
        *("mismatch_plugin_installed", "mismatch_uncaught", "stuck_update"),
        *("preempt", "preempt_at_start", "elastic"),  # test_preemption.py
        *MISMATCH_CASES,
    }
    assert cases == launched
