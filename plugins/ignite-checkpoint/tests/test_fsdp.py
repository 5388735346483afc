"""FSDP2 (``torch.distributed.fsdp.fully_shard``) models with the Trainer, on two real gloo ranks."""

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


def test_the_checkpoint_plugin_refuses_a_sharded_model_naming_it(
    tmp_path, ignite_ranks
):
    ignite_ranks(WORKERS / "fsdp_training_worker.py", tmp_path)
    for rank in range(2):
        result = json.loads((tmp_path / f"result{rank}.json").read_text())
        assert "objects['net'] is sharded" in result.get("checkpoint_error", ""), result
        assert "cannot checkpoint sharded models yet" in result["checkpoint_error"], (
            result
        )
        assert not result["checkpoint_folder_made"], result
