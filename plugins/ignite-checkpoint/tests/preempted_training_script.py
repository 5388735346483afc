"""A small training run for the preemption tests, run as a real subprocess that receives a real
SIGTERM from the test.

``python preempted_training_script.py DIRNAME OUT [--resume] [--wait-at N]``: trains
Linear+Tanh+Dropout+Linear with torch.optim.SGD (momentum) on a shuffling DataLoader, with a
validation run per epoch and the checkpoint plugin saving every 4 iterations. With
``--wait-at N`` the update of iteration N writes ``DIRNAME.marker`` (this process's pid) and
waits, at most 60 s, until the SIGTERM the test sends has arrived (``trainer.preempted``).
At the end it saves the final parameters, optimizer state and histories to OUT; a preempted
run ends with ignite.Preempted instead, uncaught: the process exits with its code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named below

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirname")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--wait-at", type=int, default=None)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1234)
    x, xv = torch.randn(64, 4, generator=data), torch.randn(16, 4, generator=data)
    weights = torch.randn(4, 1, generator=data)
    y, yv = x @ weights, xv @ weights
    train_loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer: Trainer

    def update(batch):
        if trainer.current_iteration == arguments.wait_at:
            with open(arguments.dirname + ".marker.tmp", "w") as file:
                file.write(str(os.getpid()))
            os.replace(arguments.dirname + ".marker.tmp", arguments.dirname + ".marker")
            deadline = time.monotonic() + 60
            while not trainer.preempted:  # the trainer's record of the signal, polled with a deadline
                if time.monotonic() > deadline:
                    raise SystemExit("no SIGTERM came within 60 s")
                time.sleep(0.01)
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
            return nn.functional.mse_loss(model(batch[0]), batch[1]).item()

    options = {
        "dir": arguments.dirname,
        "objects": {"model": model, "optimizer": optimizer},
        "every_iterations": 4,
        "keep": None,
        "resume": arguments.resume,
    }
    trainer = Trainer(train_loader, update, [(xv[:8], yv[:8]), (xv[8:], yv[8:])], validate, plugins={"checkpoint": options})
    trainer.run(3)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "training": list(trainer.training_history),
            "validation": list(trainer.validation_history),
            "iteration": trainer.current_iteration,
        },
        arguments.out,
    )


if __name__ == "__main__":
    main()
