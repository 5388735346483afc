"""The digits model of digits.py, trained on several processes with torch.distributed: DDP by
default, FSDP2 (``fully_shard``) with ``--fsdp``. Launch it with torchrun (gloo on CPU, nccl on GPU):

    torchrun --nproc-per-node=2 examples/digits_distributed.py --epochs 5
    torchrun --nproc-per-node=2 examples/digits_distributed.py --epochs 10 --resume

Each rank trains on its share of the batches (a DistributedSampler, whose epoch the Trainer
sets) and validates on all of them. The checkpoint plugin saves model, optimizer and every
rank's trainer state under ``--checkpoint-dir`` each epoch and ``--resume`` continues from the
newest one: with DDP one file (rank 0 writes it); with ``--fsdp`` a folder per checkpoint, in
which every rank writes its shards through torch.distributed.checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ignite.trainer import Trainer, TrainingEvents

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits import installed_plugins, load_data, make_model, validation_loss

logger = logging.getLogger("digits_distributed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--epochs", type=int, default=10, help="train up to this epoch (default: 10)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size per rank (default: 32)"
    )
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="Adam learning rate (default: 0.002)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the model and the shuffling (default: 0)",
    )
    parser.add_argument(
        "--fsdp", action="store_true", help="shard the model with FSDP2 instead of DDP"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint (DDP only)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default="checkpoints-distributed",
        help="shared by all ranks",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(
        1
    )  # a model this small gains nothing from more threads per rank
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(args.seed)  # the same initial weights on every rank

    train_loader, val_loader = load_data(args.batch_size)
    sampler = DistributedSampler(train_loader.dataset, shuffle=True, seed=args.seed)
    train_loader = DataLoader(
        train_loader.dataset, batch_size=args.batch_size, sampler=sampler
    )
    # Validation sharded too: each rank checks its half, the metrics plugin counts every sample once.
    val_loader = DataLoader(
        val_loader.dataset, batch_size=val_loader.batch_size, sampler=DistributedSampler(val_loader.dataset, shuffle=False)
    )
    model = make_model().to(device)
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                fully_shard(layer)
        trained: torch.nn.Module = fully_shard(model)
    else:
        trained = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(trained.parameters(), lr=args.lr)

    def training_update_function(
        batch: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        trained.train()
        inputs, targets = (t.to(device) for t in batch)
        optimizer.zero_grad()
        loss = F.cross_entropy(trained(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()  # no host sync per iteration: histories convert in bulk

    def validation_update_function(
        batch: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, Any]:
        trained.eval()
        inputs, targets = (t.to(device) for t in batch)
        with torch.no_grad():
            logits = trained(inputs)
        # preds and target for the metrics plugin, whose accuracy is over every rank's samples
        return {"loss": F.cross_entropy(logits, targets).item(), "count": len(targets), "preds": logits, "target": targets}

    # Only the checkpoint and metrics plugins: observers write files and open servers that this
    # example does not need.
    plugins: dict[str, Any] = dict.fromkeys(installed_plugins(), False)
    if "metrics" in installed_plugins():
        plugins["metrics"] = {"metrics": {"accuracy": {"name": "MulticlassAccuracy", "num_classes": 10, "average": "micro"}}}
    if "checkpoint" in installed_plugins():
        plugins["checkpoint"] = {
            "dir": args.checkpoint_dir,
            # DDP: the inner model, so the saved keys have no "module." prefix; FSDP2 shards it in place.
            "objects": {"model": model, "optimizer": optimizer},
            "every_epochs": 1,
            "keep": 2,
            "resume": args.resume,
        }
    trainer = Trainer(
        train_loader,
        training_update_function,
        validation_data=val_loader,
        validation_update_function=validation_update_function,
        plugins=plugins,
    )

    def log_accuracy(trainer: Trainer) -> None:
        if rank == 0:
            accuracy = trainer.metrics.get("accuracy")
            logger.info(
                "Epoch %d: validation loss %.4f (rank 0's samples), accuracy %s (every rank's samples)",
                trainer.current_epoch,
                validation_loss(trainer),
                "n/a" if accuracy is None else f"{100 * accuracy:.2f}%",
            )

    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, log_accuracy)
    trainer.run(max_epochs=args.epochs)
    summary: dict[str, Any] = {
        "epochs": trainer.current_epoch,
        "iterations": trainer.current_iteration,
    }
    if "accuracy" in trainer.metrics:
        summary["accuracy"] = trainer.metrics["accuracy"]
    if rank == 0:
        print(f"rank 0 summary: {summary}")
    dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    main(sys.argv[1:])
