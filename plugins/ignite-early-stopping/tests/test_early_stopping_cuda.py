"""The early stopping plugin on a CUDA trainer whose update returns the loss tensor: no host sync
inside the training iterations (torch.cuda.set_sync_debug_mode("error") there; issue #14).
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from ignite import Trainer, TrainingEvents

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


def cuda_task(batches: int = 24):
    """A linear regression on the GPU: (model, optimizer, data on the device, update returning
    the loss tensor), warmed up outside the checked iterations (cuBLAS starts up once)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    weights = torch.randn(8, 1, device="cuda")
    inputs = [torch.randn(16, 8, device="cuda") for _ in range(batches)]
    data = [(x, x @ weights) for x in inputs]  # learnable: the loss falls epoch after epoch

    def update(batch):
        inputs, targets = batch
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    update(data[0])
    torch.cuda.synchronize()
    return model, optimizer, data, update


def run_without_syncs_in_iterations(trainer: Trainer, epochs: int) -> None:
    """Run with sync debug mode "error" from each iteration's start until the epoch's
    iterations are over: reset at TRAINING_EPOCH_COMPLETED (whose handlers run before plugin
    hooks), so that the plugins' per-iteration hooks and handlers are checked as well."""
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: torch.cuda.set_sync_debug_mode("error"))
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda t: torch.cuda.set_sync_debug_mode(0))
    try:
        trainer.run(epochs)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def epoch_means(trainer: Trainer) -> list[float]:
    return [trainer.training_history.run_mean(epoch) for epoch in range(trainer.training_history.num_runs)]


def test_early_stopping_decides_on_loss_tensors_without_a_sync_in_the_iterations():
    _, _, data, update = cuda_task()
    trainer = Trainer(data, update, plugins={"early_stopping": {"patience": 100}})
    run_without_syncs_in_iterations(trainer, 3)
    plugin = trainer.plugins["early_stopping"]
    means = epoch_means(trainer)
    assert plugin.best_score == pytest.approx(min(means)) and plugin.best_epoch == means.index(min(means)) + 1
