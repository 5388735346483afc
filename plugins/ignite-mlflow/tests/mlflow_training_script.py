"""A small training run with the mlflow and checkpoint plugins, run as a real subprocess by
the resume test (not collected by pytest).

``python mlflow_training_script.py '<json config>'``: 3 epochs of 8 shuffled batches, 4
validation batches, the mlflow plugin logging every iteration to ``config["tracking_uri"]``
(experiment ``config["experiment"]``), the checkpoint plugin saving every 12 iterations into
``config["dir"]`` (with ``config["resume"]``). With ``config["block_at"]``, at that
iteration it waits for the checkpoint writes, writes ``config["marker"]`` and blocks until
it is killed. At the end it writes what the test compares with MLflow to ``config["out"]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named below

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite import Trainer, TrainingEvents


def main(config: dict) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1234)
    weights = torch.randn(4, 1, generator=data)
    x, xv = torch.randn(64, 4, generator=data), torch.randn(32, 4, generator=data)
    y, yv = x @ weights + 0.1 * torch.randn(64, 1, generator=data), xv @ weights
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.MSELoss()

    def update(batch):
        model.train()
        inputs, targets = batch
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(batch):
        model.eval()
        with torch.no_grad():
            inputs, targets = batch
            return {"mse": criterion(model(inputs), targets).item()}

    plugins = {
        "mlflow": {
            "tracking_uri": config["tracking_uri"],
            "experiment": config["experiment"],
            "every_iterations": 1,
            "optimizer": optimizer,
            "params": {"lr": 0.05, "model": {"hidden": 16}},
        },
        "checkpoint": {
            "dir": config["dir"],
            "objects": {"model": model, "optimizer": optimizer},
            "every_iterations": 12,
            "resume": config["resume"],
        },
    }
    trainer = Trainer(
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
        update,
        DataLoader(TensorDataset(xv, yv), batch_size=8),
        validate,
        plugins=plugins,
    )

    def metrics(trainer: Trainer) -> None:  # as a metric plugin would set them
        trainer.metrics["mse_x10"] = 10 * trainer.validation_history.run_mean(key="mse")

    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, metrics)
    block_at = config.get("block_at")
    if block_at is not None:

        def block(trainer: Trainer) -> None:
            if trainer.current_iteration == block_at:
                trainer.plugins["checkpoint"].wait()
                with open(config["marker"], "w") as file:
                    file.write(trainer.plugins["mlflow"].run_id or "")
                threading.Event().wait()  # until the test kills this process

        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, block)
    trainer.run(3)
    history, validation = trainer.training_history, trainer.validation_history
    result = {
        "run_id": trainer.plugins["mlflow"].run_id,
        "training": list(history),
        "epoch_means": [history.run_means(i)[""] for i in range(history.num_runs)],
        "validation_means": [validation.run_means(i)["mse"] for i in range(validation.num_runs)],
        "metrics": trainer.metrics,
        "lr": [group["lr"] for group in optimizer.param_groups],
    }
    with open(config["out"], "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
