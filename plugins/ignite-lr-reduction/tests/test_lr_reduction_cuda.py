"""The LR reduction plugin on a CUDA trainer whose update returns the loss tensor: no host sync
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


def test_lr_reduction_steps_on_loss_tensors_without_a_sync_in_the_iterations():
    _, optimizer, data, update = cuda_regression()
    trainer = Trainer(data, update, plugins={"lr_reduction": {"optimizer": optimizer, "patience": 0, "mode": "max"}})
    run_without_host_syncs(trainer, 3)
    # mode="max" on a falling loss: no improvement after the first epoch, a reduction at each later one.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1**2)
