"""A small training run with the tensorboard and checkpoint plugins, run as a real subprocess by
the resume tests.

``python tensorboard_resume_script.py '<json config>'``, in the working directory the test
chooses (a default ``dir`` goes under it). It trains a Linear+Dropout model on synthetic data with
a shuffling DataLoader (so the RNG states the checkpoint restores matter), validates, sets
``trainer.metrics`` and decays the learning rate each epoch. Config keys:

* ``tensorboard``: the plugin's options (``optimizer`` is added);
* ``checkpoint``: the checkpoint plugin's options (its folder under ``folder``, ``objects``
  added), or absent;
* ``stop_at``: at this iteration (before its plugin hooks), wait for the checkpoint's writes,
  write ``marker`` and wait for a signal, for the test to SIGKILL the process.
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named below

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite import Trainer, TrainingEvents


class DecayingSGD:
    """Plain SGD with a learning rate in ``param_groups`` (what the tensorboard plugin reads) and
    a state to checkpoint; torch.optim's first use would import torch._dynamo (~1.5 s a process)."""

    def __init__(self, parameters, lr: float) -> None:
        self.parameters = list(parameters)
        self.param_groups = [{"lr": lr}]

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for parameter in self.parameters:
            parameter.add_(parameter.grad, alpha=-self.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, state: dict) -> None:
        self.param_groups[0]["lr"] = state["lr"]


def main(config: dict) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1234)
    weights = torch.randn(4, 1, generator=data)
    x, xv = torch.randn(64, 4, generator=data), torch.randn(16, 4, generator=data)
    y, yv = x @ weights + 0.1 * torch.randn(64, 1, generator=data), xv @ weights
    train_loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)  # 8 batches an epoch
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=8)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    optimizer = DecayingSGD(model.parameters(), lr=0.05)

    def update(batch):
        model.train()
        inputs, targets = batch
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        model.eval()
        with torch.no_grad():
            error = model(batch[0]) - batch[1]
            return {"mse": float((error**2).mean()), "mae": float(error.abs().mean())}

    plugins: dict = {"tensorboard": {**config["tensorboard"], "optimizer": optimizer}}
    if "checkpoint" in config:
        plugins["checkpoint"] = {
            **config["checkpoint"],
            "dir": config["folder"],
            "objects": {"model": model, "optimizer": optimizer},
        }
    trainer = Trainer(train_loader, update, val_loader, validate, plugins=plugins)

    def set_metrics(trainer):
        trainer.metrics["val_mse"] = trainer.validation_history.run_mean(key="mse")

    def decay(trainer):
        optimizer.param_groups[0]["lr"] *= 0.5

    trainer.add_event_handler(TrainingEvents.VALIDATION_COMPLETED, set_metrics)
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, decay)

    if "stop_at" in config:

        def stop(trainer):
            if trainer.current_iteration == config["stop_at"]:
                trainer.plugins["checkpoint"].wait()  # the newest checkpoint is on disk
                with open(config["marker"] + ".tmp", "w") as file:
                    file.write(str(trainer.current_iteration))
                os.replace(config["marker"] + ".tmp", config["marker"])
                while True:
                    signal.pause()  # until the test kills this process

        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, stop)
    trainer.run(4)
    print(json.dumps({"dir": trainer.plugins["tensorboard"].dir, "iteration": trainer.current_iteration}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
