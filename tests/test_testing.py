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
