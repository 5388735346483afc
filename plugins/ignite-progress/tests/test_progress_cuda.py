"""The progress bar plugin on a CUDA trainer whose update returns the loss tensor: no host sync
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


def test_progress_bar_draws_loss_tensors_without_a_sync_in_the_iterations(monkeypatch):
    import io
    import itertools

    import ignite_progress

    ticks = itertools.count(0.0, 1.0)
    monkeypatch.setattr(ignite_progress, "_clock", lambda: next(ticks))  # every iteration is a draw
    _, _, data, update = cuda_task()
    output = io.StringIO()
    trainer = Trainer(data, update, plugins={"progress": {"file": output, "disable": False}})
    shown: list[int] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: shown.append(t.plugins["progress"]._postfix_iteration)
    )
    run_without_syncs_in_iterations(trainer, 2)
    # Values copied asynchronously were shown during the epochs, and the last one at each end.
    assert max(shown) > 0
    last = float(trainer.training_history[-1])
    assert output.getvalue().rstrip().endswith(f"train={last:.4g}]")
