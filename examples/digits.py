"""Handwritten digits with Ignite: a small CNN on scikit-learn's 8x8 digits, with the standard plugins.

    python examples/digits.py                 # 98.6% in 17 epochs: stops early when validation loss stalls
    python examples/digits.py --resume        # continue from the latest checkpoint in checkpoints/
    python examples/digits.py --epochs 40 --resume
    tensorboard --logdir runs                 # the curves (training loss, validation loss/correct, lr)

The data (1,797 images) ships inside scikit-learn: nothing is downloaded. The standard plugins
are used when they are installed (``make install`` installs them all) and skipped otherwise:

* progress       a tqdm bar per epoch
* tensorboard    event files under ``--log-dir`` (default ``runs/``)
* visdom         live plots when a Visdom server is reachable (``make visdom`` starts one);
                 otherwise it says once that it is skipped
* early_stopping stops when the validation loss has not improved for 5 epochs
* lr_reduction   halves the learning rate when the validation loss stalls for 2 epochs
* checkpoint     model, optimizer and trainer state under ``--checkpoint-dir`` every epoch;
                 ``--resume`` continues from the latest one

``--plugins-json '{"csv_logger": {"path": "log.csv", "optimizer": "@optimizer"}, "visdom": false}'``
adds or overrides plugin options; "@optimizer" and "@model" stand for those objects (see
examples/custom_plugin for the in-house csv_logger plugin).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite.trainer import Trainer, TrainingEvents

logger = logging.getLogger("digits")

VALIDATION_SIZE = 360  # a fifth of the 1,797 images, always the same ones
SPLIT_SEED = 0  # the split does not change with --seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=30, help="train up to this epoch (default: 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: 0.002)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the shuffling (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    parser.add_argument("--log-dir", default="runs", help="TensorBoard logs go to a new folder in it (default: runs)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="where checkpoints go (default: checkpoints)")
    parser.add_argument(
        "--plugins-json",
        default="{}",
        metavar="JSON",
        help='plugin options merged into the defaults; the strings "@optimizer" and "@model" stand for '
        'those objects, e.g. \'{"csv_logger": {"path": "log.csv", "optimizer": "@optimizer"}, "visdom": false}\'',
    )
    parser.add_argument("--summary", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default: 1: a model this small gains nothing from more, and they slow it "
        "down badly on busy cores)",
    )
    args = parser.parse_args(argv)
    try:
        args.plugins_json = json.loads(args.plugins_json)
    except json.JSONDecodeError as error:
        parser.error(f"--plugins-json is not valid JSON: {error}")
    if not isinstance(args.plugins_json, dict):
        parser.error("--plugins-json must be a JSON object: plugin name -> options, true or false")
    return args


# -- data and model ----------------------------------------------------------------------


def load_data(batch_size: int) -> tuple[DataLoader, DataLoader]:
    """The digits as 1x8x8 images scaled to [0, 1], split once into training and validation."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(labels)))
    validation, training = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]
    # shuffle=True draws from the global torch RNG, which checkpoints save: a resumed run
    # sees the same batches as an uninterrupted one.
    train_loader = DataLoader(TensorDataset(images[training], labels[training]), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(images[validation], labels[validation]), batch_size=120)
    return train_loader, val_loader


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 64 x 4 x 4
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


# -- what the validation run tells -------------------------------------------------------


def validation_results(trainer: Trainer, run: int = -1) -> tuple[float, float]:
    """(loss, accuracy) of one validation run, from the outputs the validation update
    function returned for each batch (weighted by batch size, so uneven batches are exact)."""
    outputs = trainer.validation_history.run(run)
    count = sum(output["count"] for output in outputs)
    loss = sum(output["loss"] * output["count"] for output in outputs) / count
    accuracy = sum(output["correct"] for output in outputs) / count
    return loss, accuracy


def validation_loss(trainer: Trainer) -> float:
    """The score early stopping and LR reduction watch (lower is better)."""
    return validation_results(trainer)[0]


# -- plugins -----------------------------------------------------------------------------


def installed_plugins() -> set[str]:
    return {entry_point.name for entry_point in entry_points(group="ignite.plugins")}


def remove_old_checkpoints(trainer: Trainer) -> None:
    """A fresh run starts a fresh series of checkpoints, so that a later --resume continues
    this run and not an older, longer one (the checkpoint plugin resumes from the newest)."""
    checkpoint = trainer.plugins.get("checkpoint")
    if checkpoint is None or checkpoint.resume:
        return
    from ignite_checkpoint import list_checkpoints

    old = list_checkpoints(checkpoint.dir)
    if old:
        logger.info(
            "Starting afresh: removing %d checkpoint(s) of an earlier run from %s (--resume would continue from them)",
            len(old),
            checkpoint.dir,
        )
        for path in old:
            os.remove(path)


def plugin_options(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Options for the standard plugins that are installed, merged with --plugins-json."""
    run_name = time.strftime("digits-%Y%m%d-%H%M%S")
    wanted: dict[str, Any] = {
        "progress": {"leave": False},  # the epoch's log lines stay; its bar goes when it ends
        "tensorboard": {"log_dir": os.path.join(args.log_dir, run_name), "log_every": 10, "optimizer": optimizer},
        "visdom": {"env": "digits", "log_every": 10, "optimizer": optimizer},
        "early_stopping": {"patience": 5, "mode": "min", "score_function": validation_loss, "min_epochs": 5},
        "lr_reduction": {
            "optimizer": optimizer,
            "factor": 0.5,
            "patience": 2,
            "mode": "min",
            "score_function": validation_loss,
        },
        "checkpoint": {
            "dir": args.checkpoint_dir,
            "objects": {"model": model, "optimizer": optimizer},
            "every_epochs": 1,
            "keep": 2,
            "resume": args.resume,
        },
    }
    installed = installed_plugins()
    for name in sorted(set(wanted) - installed):
        logger.info(
            "Plugin %s is not installed: skipped (pip install -e plugins/ignite-%s)", name, name.replace("_", "-")
        )
    options = {name: value for name, value in wanted.items() if name in installed}
    objects = {"@model": model, "@optimizer": optimizer}
    for name, extra in args.plugins_json.items():
        if isinstance(extra, dict):  # "@optimizer" and "@model" stand for the objects
            extra = {
                key: objects.get(value, value) if isinstance(value, str) else value for key, value in extra.items()
            }
        if isinstance(extra, dict) and isinstance(options.get(name), dict):
            options[name] = {**options[name], **extra}
        else:
            options[name] = extra  # an unknown name is reported by the Trainer, listing the installed ones
    return options


# -- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_loader, val_loader = load_data(args.batch_size)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def training_update_function(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        model.train()
        inputs, targets = batch
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validation_update_function(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        model.eval()
        inputs, targets = batch
        with torch.no_grad():
            logits = model(inputs)
        return {
            "loss": F.cross_entropy(logits, targets).item(),
            "correct": (logits.argmax(dim=1) == targets).sum().item(),
            "count": len(targets),
        }

    trainer = Trainer(
        train_loader,
        training_update_function,
        validation_data=val_loader,
        validation_update_function=validation_update_function,
        plugins=plugin_options(args, model, optimizer),
    )

    remove_old_checkpoints(trainer)
    started: dict[str, int] = {}

    def note_start(trainer: Trainer) -> None:
        # Plugin hooks run before ad-hoc handlers at *_STARTED events: a checkpoint has been
        # loaded by now if --resume found one.
        started["epoch"] = trainer.current_epoch
        if trainer.current_epoch:
            logger.info("Resuming after epoch %d (iteration %d)", trainer.current_epoch, trainer.current_iteration)

    def log_accuracy(trainer: Trainer) -> None:
        loss, accuracy = validation_results(trainer)
        lr = optimizer.param_groups[0]["lr"]
        logger.info(
            "Epoch %d: validation loss %.4f, accuracy %.2f%%, lr %.2g", trainer.current_epoch, loss, 100 * accuracy, lr
        )

    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, note_start)
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, log_accuracy)

    start = time.perf_counter()
    trainer.run(max_epochs=args.epochs)
    seconds = time.perf_counter() - start

    # Every epoch's results, from the validation history (restored from the checkpoint on --resume).
    per_epoch = [validation_results(trainer, run) for run in range(trainer.validation_history.num_runs)]
    if not per_epoch:
        print(f"Nothing to do: the checkpoint is already at epoch {trainer.current_epoch} (--epochs {args.epochs}).")
        return {}
    best = min(range(len(per_epoch)), key=lambda index: per_epoch[index][0])
    summary = {
        "accuracy": per_epoch[-1][1],
        "validation_loss": per_epoch[-1][0],
        "best_epoch": best + 1,
        "best_validation_loss": per_epoch[best][0],
        "best_epoch_accuracy": per_epoch[best][1],
        "epochs": trainer.current_epoch,
        "first_epoch": started.get("epoch", 0) + 1,
        "iterations": trainer.current_iteration,
        "stopped_early": trainer.current_epoch < args.epochs,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": round(seconds, 2),
        "accuracy_per_epoch": [accuracy for _, accuracy in per_epoch],
        "plugins": sorted(trainer.plugins),
    }
    stop = (
        f"stopped early at epoch {trainer.current_epoch}"
        if summary["stopped_early"]
        else f"{trainer.current_epoch} epochs"
    )
    print(f"Final validation accuracy: {100 * summary['accuracy']:.2f}% ({stop}, {seconds:.1f} s of training)")
    print(
        f"Best validation loss {summary['best_validation_loss']:.4f} at epoch {summary['best_epoch']} "
        f"(accuracy {100 * summary['best_epoch_accuracy']:.2f}%)"
    )
    if "tensorboard" in trainer.plugins:
        print(f"TensorBoard: tensorboard --logdir {args.log_dir}")
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    # Show ignite's INFO lines (active plugins, epoch means, early stopping, checkpoints).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
