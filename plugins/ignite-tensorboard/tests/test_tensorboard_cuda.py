"""The TensorBoard plugin on a CUDA trainer whose update returns the loss tensor: no host sync
inside the training iterations (torch.cuda.set_sync_debug_mode("error") there; issue #14).
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from ignite import Trainer
from ignite.testing import cuda_regression, run_without_host_syncs

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


def test_tensorboard_logs_loss_tensors_without_a_sync_in_the_iterations(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, optimizer, data, update = cuda_regression()
    trainer = Trainer(data, update, plugins={"tensorboard": {"dir": tmp_path, "every_iterations": 1, "optimizer": optimizer}})
    run_without_host_syncs(trainer, 2)
    accumulator = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    accumulator.Reload()
    logged = [event.value for event in accumulator.Scalars("training/iteration")]
    assert logged == pytest.approx([float(value) for value in trainer.training_history], rel=1e-6)
    means = [event.value for event in accumulator.Scalars("training/epoch_mean")]
    assert means == pytest.approx([trainer.training_history.run_mean(epoch) for epoch in range(trainer.training_history.num_runs)], rel=1e-6)
