"""The metrics plugin on CUDA outputs: the metrics move to the outputs' device once and are
updated there with no host sync inside the training iterations (torch.cuda.set_sync_debug_mode
("error") there); the results are read once per epoch. Skipped without CUDA.

MeanSquaredError's update is pure device arithmetic; whether another metric's update syncs is
torchmetrics' own matter (argument checks: pass validate_args=False)."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.regression import MeanSquaredError

from ignite import Trainer
from ignite.testing import cuda_regression, run_without_host_syncs

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


@pytest.mark.parametrize("every_iterations", [1, 5])
def test_training_metrics_on_the_device_without_a_sync_in_the_iterations(every_iterations: int) -> None:
    model, _, data, _ = cuda_regression()

    def update(batch):
        with torch.no_grad():
            return model(batch[0]), batch[1]  # the model does not change: the expected value is fixed

    plugins = {
        "metrics": {"metrics": {"mse": MeanSquaredError()}, "training": True, "every_iterations": every_iterations}
    }
    trainer = Trainer(data, update, plugins=plugins)
    run_without_host_syncs(trainer, 2)
    metric = trainer.plugins["metrics"]._training.metrics["mse"]
    assert metric.device.type == "cuda"
    with torch.no_grad():
        preds = torch.cat([model(x) for x, _ in data])
        targets = torch.cat([y for _, y in data])
    want = torch.nn.functional.mse_loss(preds, targets).item()
    assert trainer.metrics["training/mse"] == pytest.approx(want, rel=1e-5)
    assert [entry["epoch"] for entry in trainer.plugins["metrics"].history] == [1, 2]
