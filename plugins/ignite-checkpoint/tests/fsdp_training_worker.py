"""One rank of the FSDP2 training test (run by test_fsdp.py through ignite_ranks, not by pytest).

Usage: python fsdp_training_worker.py RANK WORLD_SIZE FOLDER
Trains a model sharded with ``fully_shard`` with the Trainer, unchanged, and the same model
unsharded with a hand-written loop on the same batches; writes FOLDER/result<RANK>.json with the
largest difference between their full parameters and whether the parameters are DTensors.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ignite import Trainer


def main(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size
    )
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )
    model = copy.deepcopy(reference)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    # every rank sees the same batches, so FSDP's averaged gradients equal one process's
    batches = [
        torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(6)
    ]

    def update(batch: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    trainer = Trainer(batches, update, plugins={"checkpoint": False})
    trainer.run(2)
    for _ in range(2):
        for batch in batches:
            reference_optimizer.zero_grad()
            reference(batch).pow(2).mean().backward()
            reference_optimizer.step()
    sharded = [p for p in model.parameters()]
    difference = max(
        (p.full_tensor() - q).abs().max().item()
        for p, q in zip(sharded, reference.parameters(), strict=True)
    )
    result = {
        "all_dtensors": all(isinstance(p, DTensor) for p in sharded),
        "max_difference": difference,
        "iterations": trainer.current_iteration,
        "history": len(trainer.training_history),
    }
    with open(os.path.join(folder, f"result{rank}.json"), "w") as file:
        json.dump(result, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
