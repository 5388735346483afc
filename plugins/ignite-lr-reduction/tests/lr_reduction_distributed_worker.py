"""One rank of the two-process LR reduction test (run by test_lr_reduction.py, not by pytest).

Usage: python lr_reduction_distributed_worker.py RANK WORLD_SIZE FOLDER
Writes FOLDER/rank<RANK>.json with the learning rate of every epoch and this rank's log lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import torch
import torch.distributed as dist

from ignite import Trainer, TrainingEvents


def main() -> None:
    rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.getMessage()}")

    logging.getLogger("ignite.lr_reduction").addHandler(Keep())
    logging.getLogger("ignite.lr_reduction").setLevel(logging.INFO)

    generator = torch.Generator().manual_seed(10 + rank)  # each rank has its own shard
    x = torch.randn(48, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 * torch.randn(48, 1, generator=generator)
    training = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    validation = [(x[i : i + 8], y[i : i + 8]) for i in range(32, 48, 8)]
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(batch[0]), batch[1]).item()

    trainer = Trainer(
        training,
        update,
        validation,
        validate,
        plugins={"lr_reduction": {"optimizer": optimizer, "patience": 2, "factor": 0.5, "threshold": 1e-2}},
    )
    rates = []
    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, lambda t: rates.append(optimizer.param_groups[0]["lr"]))
    trainer.run(max_epochs=30)
    plateau = trainer.plugins["lr_reduction"].plateau_schedulers[0]
    local = [trainer.validation_history.run_mean(i) for i in range(trainer.validation_history.num_runs)]
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as file:
        json.dump({"rates": rates, "best": plateau.best, "local_means": local, "logs": records}, file)
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
