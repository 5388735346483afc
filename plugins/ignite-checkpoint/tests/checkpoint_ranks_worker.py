"""One rank of the two-process resume tests (run by test_checkpoint.py through run_ranks, not by pytest).

Usage: python checkpoint_ranks_worker.py RANK WORLD_SIZE FOLDER
Each rank resumes from FOLDER/rank<RANK> (a folder per rank stands for a rank that sees other
files than rank 0) and writes FOLDER/result<RANK>.json: the iteration it resumed at, or its error.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from ignite import Trainer, TrainingEvents
from ignite_checkpoint import CheckpointError


def small_trainer(dirname: str, resume: bool) -> tuple[Trainer, list[int]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [torch.full((4, 2), float(i)) for i in range(4)]

    def update(batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    checkpoint = {"dir": dirname, "objects": {"model": model, "optimizer": optimizer}, "resume": resume}
    trainer = Trainer(batches, update, plugins={"checkpoint": checkpoint})
    started: list[int] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: started.append(t.current_iteration))
    return trainer, started


def main(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    trainer, started = small_trainer(os.path.join(folder, f"rank{rank}"), resume=True)
    try:
        trainer.run(3)
        result = {"resumed_at": started[0], "iteration": trainer.current_iteration}
    except CheckpointError as error:
        result = {"error": str(error)}
    with open(os.path.join(folder, f"result{rank}.json"), "w") as file:
        json.dump(result, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
