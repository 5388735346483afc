"""ignite.testing.run_ranks: real processes of a gloo group, failures reported with outputs."""

from __future__ import annotations

import textwrap

import pytest

from ignite.testing import run_ranks

SCRIPT = """
    import sys
    import torch
    import torch.distributed as dist

    rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if "fail" in folder:  # no group: a peer's exit during gloo's teardown would race with rank 0's
        print("rank", rank, "started")
        raise SystemExit("rank 1 gives up" if rank == 1 else 0)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    print("total", int(total))
    dist.destroy_process_group()
"""


def test_ranks_join_one_group(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(SCRIPT))
    assert [output.strip() for output in run_ranks(script, tmp_path)] == ["total 3", "total 3"]


def test_a_failing_rank_is_reported_with_every_output(tmp_path):
    folder = tmp_path / "fail"
    folder.mkdir()
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(SCRIPT))
    with pytest.raises(AssertionError, match=r"(?s)rank 0 \(exit code 0\).*rank 0 started.*rank 1 \(exit code 1\).*rank 1 gives up"):
        run_ranks(script, folder)


ABORTING = """
    import os, sys
    from pathlib import Path

    # gloo's teardown abort cannot be caused on demand: this script ends the way it does (the
    # C++ runtime's message, then SIGABRT) on rank 1 of the first ATTEMPTS attempts. Its runs are
    # counted outside the folder, which each attempt finds as it was before the first.
    rank, folder = int(sys.argv[1]), Path(sys.argv[3])
    attempts = int((folder / "attempts").read_text())
    if rank == 1:  # rank 1 alone reads and changes the folder: rank 0 runs beside it
        assert (folder / "input").read_text() == "as given", "a changed file was not put back"
        assert not (folder / "store").exists(), "the store of the previous attempt was left"
        assert not (folder / "written").exists(), "what the previous attempt wrote was left"
        (folder / "store").write_text("")  # what init_process_group leaves
        (folder / "written").write_text("")
        (folder / "input").write_text("changed")
        runs = folder.parent / "runs"
        count = len(runs.read_text()) + 1 if runs.exists() else 1
        runs.write_text("x" * count)
        if count <= attempts:
            print("terminate called without an active exception", file=sys.stderr, flush=True)
            os.abort()
    print("done", rank)
"""


@pytest.mark.parametrize("attempts, succeeds, runs", [(1, True, 2), (2, True, 3), (3, False, 3)])
def test_a_gloo_teardown_abort_is_run_again_from_the_folder_as_it_was(tmp_path, attempts, succeeds, runs):
    script = tmp_path / "aborting.py"
    script.write_text(textwrap.dedent(ABORTING))
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "attempts").write_text(str(attempts))
    (folder / "input").write_text("as given")
    if succeeds:
        assert [output.strip() for output in run_ranks(script, folder)] == ["done 0", "done 1"]
    else:
        with pytest.raises(AssertionError, match=r"(?s)rank 1 \(exit code -6\).*terminate called without"):
            run_ranks(script, folder)
    assert len((tmp_path / "runs").read_text()) == runs  # never a fourth time


def test_other_failures_are_not_run_again(tmp_path):
    folder = tmp_path / "fail"
    folder.mkdir()
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(SCRIPT).replace('print("rank", rank, "started")', 'print("rank", rank, "started"); open(folder + "/run" + str(rank) + str(__import__("os").getpid()), "w")'))
    with pytest.raises(AssertionError, match="rank 1 gives up"):
        run_ranks(script, folder)
    assert len(list(folder.glob("run1*"))) == 1
