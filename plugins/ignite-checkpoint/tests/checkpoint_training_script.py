"""A small training run for the checkpoint tests, run as a real subprocess.

``python checkpoint_training_script.py '<json config>'``. It trains Linear+ReLU+Dropout+Linear
on synthetic data with a shuffling DataLoader, a validation DataLoader, and data noise drawn
from torch's, Python's and NumPy's RNGs (so every RNG the trainer restores matters), with the
checkpoint plugin enabled. ``config["stop"]`` makes the process signal itself at a chosen
point, from an ad-hoc handler::

    {"where": "iteration", "iteration": 14, "signal": "SIGKILL"}
    {"where": "epoch_started", "epoch": 2, "signal": "SIGKILL"}
    {"where": "validation", "epoch": 2, "batch": 2, "signal": "SIGINT"}

At the end it saves the final parameters, optimizer state, histories and the controllers'
states to ``config["out"]``.

``config["optimizer"]``: ``"momentum"`` (default) is :class:`MomentumSGD` below, ``"sgd"`` is
``torch.optim.SGD``. The first use of any ``torch.optim`` optimizer imports ``torch._dynamo``,
which doubles the CPU time of each of these short processes (~1.5 s more), so most scenarios
use the small stand-in, which has the same ``state_dict``/``load_state_dict`` interface; the
scenario with controllers and the in-process tests use ``torch.optim.SGD``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named below

import numpy
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite.trainer import Trainer, TrainingEvents


def stop_here(config: dict, marker: str, trainer) -> None:
    # Saves finish in the background: wait for them so that the resume point these tests
    # expect is on disk (a kill in the middle of a write is tested on its own).
    checkpoint = trainer.plugins.get("checkpoint")
    if checkpoint is not None:
        checkpoint.wait()
    with open(config["dir"] + f".stopped{config.get('rank', '')}", "w") as file:
        file.write(marker)
    os.kill(os.getpid(), getattr(signal, config["stop"]["signal"]))


class MomentumSGD:
    """SGD with momentum (as torch.optim.SGD computes it), with tensor state to checkpoint."""

    def __init__(self, parameters, lr: float, momentum: float) -> None:
        self.parameters = list(parameters)
        self.param_groups = [{"lr": lr, "momentum": momentum}]
        self.buffers: list = [None] * len(self.parameters)

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        for index, parameter in enumerate(self.parameters):
            if parameter.grad is None:
                continue
            if self.buffers[index] is None:
                self.buffers[index] = parameter.grad.clone()
            else:
                self.buffers[index].mul_(group["momentum"]).add_(parameter.grad)
            parameter.add_(self.buffers[index], alpha=-group["lr"])

    def state_dict(self) -> dict:
        state = {i: {"momentum_buffer": b.clone()} for i, b in enumerate(self.buffers) if b is not None}
        return {"state": state, "param_groups": [dict(group) for group in self.param_groups]}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = [None] * len(self.parameters)
        for index, entry in state["state"].items():
            self.buffers[index] = entry["momentum_buffer"].clone()
        self.param_groups = [dict(group) for group in state["param_groups"]]


def main(config: dict) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    if "rank" in config:
        # Same data and seeds on every rank; no collective in the run itself, so a rank that
        # kills itself does not leave the other one waiting.
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{config['store']}", rank=config["rank"], world_size=config["world_size"]
        )
    saves = count_saves()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    numpy.random.seed(0)
    data = torch.Generator().manual_seed(1234)
    weights = torch.randn(4, 1, generator=data)
    x, xv = torch.randn(64, 4, generator=data), torch.randn(32, 4, generator=data)
    y, yv = x @ weights + 0.1 * torch.randn(64, 1, generator=data), xv @ weights
    train_loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=8)

    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    if config.get("big_parameters"):
        # Saved and restored like any parameter; not in the loss, so SGD leaves it alone.
        model.register_parameter("big", nn.Parameter(torch.zeros(config["big_parameters"])))
    if config.get("optimizer", "momentum") == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = MomentumSGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.MSELoss()
    stop = config.get("stop")

    def update(batch):
        model.train()
        inputs, targets = batch
        noise = random.gauss(0.0, 0.01) + float(numpy.random.normal(0.0, 0.01))
        optimizer.zero_grad()
        loss = criterion(model(inputs + noise), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        model.eval()
        with torch.no_grad():
            inputs, targets = batch
            error = model(inputs) - targets
            return {"mse": float((error**2).mean()), "mae": float(error.abs().mean())}

    options = {
        "dir": config["dir"],
        "objects": {"model": model, "optimizer": optimizer},
        "every_iterations": config.get("every_iterations", 4),
        "every_epochs": config.get("every_epochs", 1),
        "keep": config.get("keep", 3),
        "resume": config.get("resume", False),
    }
    plugins = {"checkpoint": options}
    # Controllers whose state the checkpoint must carry: options from the config, plus the
    # live objects they need.
    controllers = config.get("controllers", {})
    if "early_stopping" in controllers:
        plugins["early_stopping"] = {
            **controllers["early_stopping"],
            "score_function": lambda trainer: trainer.validation_history.run_mean(key="mse"),
        }
    if "lr_reduction" in controllers:
        plugins["lr_reduction"] = {
            **controllers["lr_reduction"],
            "optimizer": optimizer,
            "score_function": lambda trainer: trainer.validation_history.run_mean(key="mse"),
        }
    trainer = Trainer(train_loader, update, val_loader, validate, plugins=plugins)

    if stop and stop["where"] == "iteration":
        def on_iteration(trainer):
            if trainer.current_iteration == stop["iteration"]:
                stop_here(config, "iteration", trainer)

        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, on_iteration)
    elif stop and stop["where"] == "epoch_started":
        def on_epoch(trainer):
            if trainer.current_epoch == stop["epoch"]:
                stop_here(config, "epoch_started", trainer)

        trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, on_epoch)
    elif stop and stop["where"] == "validation":
        def on_validation(trainer):
            if trainer.current_epoch == stop["epoch"] and len(trainer.validation_history.run()) == stop["batch"]:
                stop_here(config, "validation", trainer)

        trainer.add_event_handler(TrainingEvents.VALIDATION_ITERATION_COMPLETED, on_validation)

    trainer.run(config.get("max_epochs", 3))
    controllers = {
        name: plugin.state_dict()
        for name, plugin in trainer.plugins.items()
        if name != "checkpoint" and callable(getattr(plugin, "state_dict", None))
    }
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "training": trainer.training_history.state_dict(),
            "validation": trainer.validation_history.state_dict(),
            "epoch": trainer.current_epoch,
            "iteration": trainer.current_iteration,
            "controllers": controllers,
            "lr": [group["lr"] for group in optimizer.param_groups],
            "saves": saves,
        },
        config["out"].format(rank=config.get("rank", "")),
    )
    if "rank" in config:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def count_saves() -> list[str]:
    """Record the paths this process writes checkpoints to (to show that only rank 0 does)."""
    import ignite_checkpoint

    written: list[str] = []
    atomic_write = ignite_checkpoint._atomic_write

    def counting(data, path, directory_fd):
        written.append(os.path.basename(path))
        atomic_write(data, path, directory_fd)

    ignite_checkpoint._atomic_write = counting
    return written


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
