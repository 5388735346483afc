"""One rank of the two-process early stopping test (run by test_early_stopping.py, not by pytest).

Usage: python early_stopping_distributed_worker.py RANK WORLD_SIZE FOLDER
Runs two trainings in one process group ("default": the reduced default score; "disagree": a
score_function that differs across ranks) and writes FOLDER/rank<RANK>.json with what this rank saw.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import torch
import torch.distributed as dist

from ignite import Trainer


def train(rank: int, case: str) -> dict:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.getMessage()}")

    handler = Keep()
    logging.getLogger("ignite.early_stopping").addHandler(handler)
    logging.getLogger("ignite.early_stopping").setLevel(logging.INFO)

    generator = torch.Generator().manual_seed(10 + rank)  # each rank has its own shard
    x = torch.randn(48, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 * torch.randn(48, 1, generator=generator)
    training = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    validation = [(x[i : i + 8], y[i : i + 8]) for i in range(32, 48, 8)]
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(batch[0]), batch[1]).item()

    options: dict = {"patience": 3, "min_delta": 1e-3}
    if case == "disagree":
        # Wrong on purpose: rank 0 sees a flat score, rank 1 an improving one.
        options = {"patience": 2, "score_function": lambda t: 1.0 if rank == 0 else -float(t.current_epoch)}
    trainer = Trainer(training, update, validation, validate, plugins={"early_stopping": options})
    trainer.run(max_epochs=200)
    plugin = trainer.plugins["early_stopping"]
    local = [trainer.validation_history.run_mean(i) for i in range(trainer.validation_history.num_runs)]
    logging.getLogger("ignite.early_stopping").removeHandler(handler)
    return {
        "epoch": trainer.current_epoch,
        "best_score": plugin.best_score,
        "best_epoch": plugin.best_epoch,
        "local_means": local,
        "logs": records,
    }


def main() -> None:
    rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    results = {case: train(rank, case) for case in ("default", "disagree")}
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as file:
        json.dump(results, file)
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
