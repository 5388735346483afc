"""FSDP2 (``torch.distributed.fsdp.fully_shard``) models with the Trainer, on two real gloo ranks.

Their sharded checkpoints are tested in tests/distributed/test_fsdp_checkpoints.py (torchrun).
"""

from __future__ import annotations

import json
from pathlib import Path

WORKERS = Path(__file__).parent


def test_a_model_sharded_with_fully_shard_trains_with_the_trainer_unchanged(
    tmp_path, ignite_ranks
):
    ignite_ranks(WORKERS / "fsdp_training_worker.py", tmp_path)
    for rank in range(2):
        result = json.loads((tmp_path / f"result{rank}.json").read_text())
        assert result["all_dtensors"], result
        assert result["iterations"] == 12 and result["history"] == 12, result
        assert result["max_difference"] < 1e-5, result
