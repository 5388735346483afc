"""One rank of the two-process metrics test (run by test_metrics.py, not by pytest).

Usage: python metrics_distributed_worker.py RANK WORLD_SIZE FOLDER
Validates a fixed classifier on 13 samples (not a multiple of 2: the DistributedSampler pads
with a duplicate) and also computes over training epochs of 11 shuffled samples; writes
FOLDER/rank<RANK>.json with trainer.metrics, the plugin's history and the samples each rank saw.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ignite import Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics_data import classifier, dataset, metric_options


def main() -> None:
    rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    model = classifier()
    training_set, validation_set = dataset(11, seed=1), dataset(13, seed=2)
    training = DataLoader(training_set, batch_size=4, sampler=DistributedSampler(training_set, shuffle=True, seed=3))
    validation = DataLoader(validation_set, batch_size=4, sampler=DistributedSampler(validation_set, shuffle=False))
    seen: dict[str, list[int]] = {"training": [], "validation": []}

    def step(batch, kind):
        inputs, targets, index = batch
        seen[kind] += index.tolist()
        with torch.no_grad():
            return {"preds": model(inputs), "target": targets}

    trainer = Trainer(
        training,
        lambda batch: step(batch, "training"),
        validation,
        lambda batch: step(batch, "validation"),
        plugins={"metrics": {"metrics": metric_options(), "training": True}},
    )
    trainer.run(max_epochs=2)
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as file:
        json.dump({"metrics": trainer.metrics, "history": trainer.plugins["metrics"].history, "seen": seen}, file)
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
