"""Sharded checkpoints of FSDP2 models (issue #16 item 4): real torchrun ranks on gloo, running
``scripts/fsdp_worker.py``; the checkpoint plugin saves with torch.distributed.checkpoint.

Three launches: the main one (2 ranks: an uninterrupted run, a stop and mid-epoch resume, the
remains of interrupted saves, an epoch-end save, mismatched folders), an elastic restart after
a SIGKILL during a background save, and 3 ranks resuming a checkpoint of 2.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from .test_distributed import INSTALLED, assert_bitwise_equal, load, output_of, read, torchrun

pytestmark = pytest.mark.skipif("checkpoint" not in INSTALLED, reason="ignite-checkpoint is not installed")

WORKER = Path(__file__).parent / "scripts" / "fsdp_worker.py"
EVERY, ITERATIONS = 4, 18  # a save every 4 iterations; 3 epochs of 6 batches


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    cases = ("full", "resume", "preempt", "leftovers", "epoch_saves", "write_failure", "mismatch")
    result = torchrun(out, *cases, worker=WORKER)
    assert result.returncode == 0, output_of(result)
    return out


def full_state(out: Path, case: str, rank: int = 0) -> dict[str, torch.Tensor]:
    return load(out / f"{case}_rank{rank}.pt")


def test_each_sharded_checkpoint_is_a_folder_of_every_ranks_shards_and_the_trainer_state(main_run: Path) -> None:
    from ignite_checkpoint import list_checkpoints, load_checkpoint

    folder = main_run / "full"
    saved = list_checkpoints(folder)
    assert [os.path.basename(path) for path in saved] == ["checkpoint_e0002_i00000012", "checkpoint_e0003_i00000016"]  # keep=2
    for path in saved:
        assert sorted(os.listdir(path)) == [".metadata", "__0_0.distcp", "__1_0.distcp", "ignite.pt"]
        state = load_checkpoint(path)
        assert state["sharded"] == {"model": "model", "optimizer": "optimizer"} and state["objects"] == {}
        assert state["trainer"]["current_iteration"] == int(path[-8:])
        assert len(state["trainer_ranks"]) == 2
    assert sorted(os.listdir(folder)) == [".ignite-checkpoint.lock", *map(os.path.basename, saved)]  # no temporary left


def test_a_resumed_run_ends_bit_for_bit_as_the_uninterrupted_one(main_run: Path) -> None:
    full, resumed = read(main_run, "full"), read(main_run, "resume")
    for rank in (0, 1):
        assert resumed[rank]["resumed_at"] == EVERY  # the newest save, mid-epoch (batch 4 of 6)
        assert (resumed[rank]["epoch"], resumed[rank]["iteration"]) == (3, ITERATIONS)
        assert resumed[rank]["history"] == full[rank]["history"]
        assert_bitwise_equal(full_state(main_run, "full", rank), full_state(main_run, "resume", rank))


def test_a_sigterm_on_one_rank_saves_the_agreed_stopping_point_sharded_and_the_resumed_run_is_bit_for_bit(
    main_run: Path,
) -> None:
    full, found = read(main_run, "full"), read(main_run, "preempt")
    stop = found[0]["preempted"]["iteration"]
    for rank in (0, 1):
        assert found[rank]["preempted"] == {"code": 143, "iteration": stop}, found[rank]  # the same point on both
        assert found[rank]["resumed_at"] == stop
        assert found[rank]["history"] == full[rank]["history"]
        assert_bitwise_equal(full_state(main_run, "full", rank), full_state(main_run, "preempt", rank))
    saved = {6: "checkpoint_e0001_i00000006", 7: "checkpoint_e0002_i00000007"}[stop]  # no regular save there
    assert saved in found[0]["listing"], found[0]


def test_the_remains_of_interrupted_saves_are_never_resumed_from_nor_lost(main_run: Path) -> None:
    full, found = read(main_run, "full"), read(main_run, "leftovers")
    for rank in (0, 1):
        # The partial folder named like a newer checkpoint is skipped; the newest finished one is used.
        assert found[rank]["resumed_at"] == 16 and found[rank]["iteration"] == ITERATIONS
        assert found[rank]["history"] == full[rank]["history"]
        assert_bitwise_equal(full_state(main_run, "full", rank), full_state(main_run, "leftovers", rank))
    listing = found[0]["listing"]
    assert not [name for name in listing if name.endswith((".tmp", ".replaced"))], listing  # swept
    assert "checkpoint_e0003_i00000017.unreadable" in listing, listing  # set aside, not deleted
    assert "checkpoint_e0002_i00000012" in listing, listing  # put back: its replacement never landed


def test_a_save_at_an_epochs_end_replaces_the_save_of_its_last_iteration(main_run: Path) -> None:
    from ignite_checkpoint import list_checkpoints, load_checkpoint

    folder = main_run / "epochs"
    saved = list_checkpoints(folder)
    assert [os.path.basename(path) for path in saved] == ["checkpoint_e0001_i00000003", "checkpoint_e0001_i00000006"]
    position = load_checkpoint(saved[0])["trainer"]["position"]
    assert (position["phase"], position["batches_done"]) == ("training", 3)
    assert load_checkpoint(saved[1])["trainer"]["position"] is None  # the epoch's end, not its last batch
    assert sorted(os.listdir(folder)) == [".ignite-checkpoint.lock", *map(os.path.basename, saved)]


def test_another_number_of_ranks_resumes_an_epoch_end_checkpoint_resharded(main_run: Path, tmp_path: Path) -> None:
    for name in ("epochs", "full"):
        shutil.copytree(main_run / name, tmp_path / name, ignore=shutil.ignore_patterns(".ignite-checkpoint.lock"))
    result = torchrun(tmp_path, "reshard", worker=WORKER, nproc=3)
    assert result.returncode == 0, output_of(result)
    found = [json.loads((tmp_path / f"reshard_rank{rank}.json").read_text()) for rank in range(3)]
    saved = full_state(main_run, "epoch_saves")  # by 2 ranks, after epoch 1
    for rank, result_of in enumerate(found):
        # Loaded into 3 shards: 16 rows of the first layer as 6, 6 and 4.
        assert result_of["local_shapes"][0] == ([6, 4] if rank < 2 else [4, 4]), result_of
        assert_bitwise_equal(saved, full_state(tmp_path, "reshard", rank))
        assert (result_of["resumed"]["epoch"], result_of["resumed"]["iteration"]) == (1, 6)
        assert (result_of["after"]["epoch"], result_of["after"]["iteration"]) == (2, 12)
        error = result_of["mid_epoch_error"]
        assert "saved by 2 processes in the middle of an epoch (after batch 4 of the epoch)" in error, error
        assert "this run has 3" in error and "every_epochs" in error


def test_a_failed_write_of_shards_stops_every_rank_at_the_next_save_and_keeps_the_checkpoints_before(main_run: Path) -> None:
    found = read(main_run, "write_failure")
    for rank in (0, 1):
        assert found[rank]["iteration"] == 3 * EVERY, found[rank]  # the next save's point: both stopped there
    # Each rank raises its own error (an Exception: DCP's is a BaseException), naming the checkpoint
    # and what failed on each rank.
    for rank in (0, 1):
        error = found[rank]["error"]
        assert error.startswith("CheckpointError: Writing the shards of ") and "checkpoint_e0002_i00000008 " in error, error
        assert "rank 0: FileExistsError" in error and "rank 1: FileExistsError" in error, error
    listing = found[0]["listing"]
    assert "checkpoint_e0001_i00000004" in listing and not any(name.startswith("checkpoint_e0002") for name in listing)


def test_mismatched_folders_and_objects_are_refused_by_name_and_nothing_is_removed(main_run: Path) -> None:
    for rank, found in enumerate(read(main_run, "mismatch")):
        error = found["sharded_into_unsharded"]
        assert "was saved by a run whose objects were not sharded" in error, error
        assert "objects['model'], objects['optimizer'] are sharded" in error and "set_model_state_dict" in error
        assert found["sharded_into_unsharded_listing"] == [".ignite-checkpoint.lock", "checkpoint_e0001_i00000004.pt"]
        error = found["unsharded_into_sharded"]
        assert "is sharded (saved with torch.distributed.checkpoint" in error and "dcp_to_torch_save" in error, error
        assert found["unsharded_into_sharded_listing"] == [".ignite-checkpoint.lock", "checkpoint_e0001_i00000004"]
        error = found["optimizer_alone"]
        assert "objects['optimizer'] (Adam) optimizes sharded (DTensor) parameters" in error, (rank, error)
        assert "name the model it optimizes in objects" in error
        error = found["torch_too_old"]
        assert "objects['model'] is sharded" in error and "need torch 99.0 or newer" in error, (rank, error)
        assert f"this is torch {torch.__version__}: upgrade torch" in error


def test_an_elastic_restart_after_a_sigkill_during_a_background_save_resumes_bit_for_bit(
    main_run: Path, tmp_path: Path
) -> None:
    result = torchrun(tmp_path, "elastic", worker=WORKER, max_restarts=1)
    assert result.returncode == 0, output_of(result)
    full = read(main_run, "full")
    for rank, found in enumerate(read(tmp_path, "elastic")):
        assert found["attempt"] == 1, "no restart happened"
        # Rank 1 died while iteration 8's save was written in the background: that save, if every
        # rank's shards and the state file were already on disk, or else the one before.
        assert found["resumed_at"] in (2 * EVERY, EVERY), found["resumed_at"]
        assert found["history"] == full[rank]["history"]
        assert_bitwise_equal(full_state(main_run, "full", rank), full_state(tmp_path, "elastic", rank))
    names: Any = sorted(os.listdir(tmp_path / "elastic"))
    assert not [name for name in names if name.endswith(".tmp")], names
