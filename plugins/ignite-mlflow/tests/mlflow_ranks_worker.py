"""One rank of the two-rank test (``ignite_ranks``; not collected by pytest).

``python mlflow_ranks_worker.py RANK WORLD_SIZE FOLDER``: joins a gloo group, trains 2 epochs
of 6 batches (the data of rank r is ``100 * r + i``) with validation, the mlflow plugin logging
every 2 iterations to ``$MLFLOW_TRACKING_URI`` (experiment ``$MLFLOW_EXPERIMENT_NAME``), and
writes ``FOLDER/rank<RANK>.json``: its run id and histories.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from ignite import Trainer


def main(rank: int, world_size: int, folder: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        trainer = Trainer(
            [100.0 * rank + i for i in range(6)],
            lambda batch: batch * 0.5,
            validation_data=[10.0 * rank + i for i in range(3)],
            validation_update_function=lambda batch: batch,
            plugins={"mlflow": {"every_iterations": 2}},
        )
        trainer.run(2)
        history, validation = trainer.training_history, trainer.validation_history
        result = {
            "run_id": trainer.plugins["mlflow"].run_id,
            "training": list(history),
            "epoch_sums": [sum(history.run(i)) for i in range(history.num_runs)],
            "epoch_counts": [len(history.run(i)) for i in range(history.num_runs)],
            "validation_sums": [sum(validation.run(i)) for i in range(validation.num_runs)],
            "validation_counts": [len(validation.run(i)) for i in range(validation.num_runs)],
        }
        (folder / f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
