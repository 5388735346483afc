"""The early stopping plugin on a CUDA trainer whose update returns the loss tensor: no host sync
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


def test_early_stopping_decides_on_loss_tensors_without_a_sync_in_the_iterations():
    _, _, data, update = cuda_regression()
    trainer = Trainer(data, update, plugins={"early_stopping": {"patience": 100}})
    run_without_host_syncs(trainer, 3)
    plugin = trainer.plugins["early_stopping"]
    means = [trainer.training_history.run_mean(epoch) for epoch in range(trainer.training_history.num_runs)]
    assert plugin.best_score == pytest.approx(min(means)) and plugin.best_epoch == means.index(min(means)) + 1
