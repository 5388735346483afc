"""The progress bar plugin on a CUDA trainer whose update returns the loss tensor: no host sync
inside the training iterations (torch.cuda.set_sync_debug_mode("error") there; issue #14).
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from ignite import Trainer, TrainingEvents
from ignite.testing import cuda_regression, run_without_host_syncs

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


def test_progress_bar_draws_loss_tensors_without_a_sync_in_the_iterations(monkeypatch):
    import io
    import itertools

    import ignite_progress

    ticks = itertools.count(0.0, 1.0)
    monkeypatch.setattr(ignite_progress, "_clock", lambda: next(ticks))  # every iteration is a draw
    _, _, data, update = cuda_regression()
    output = io.StringIO()
    trainer = Trainer(data, update, plugins={"progress": {"file": output, "disable": False}})
    shown: list[int] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: shown.append(t.plugins["progress"]._postfix_iteration)
    )
    run_without_host_syncs(trainer, 2)
    # Values copied asynchronously were shown during the epochs, and the last one at each end.
    assert max(shown) > 0
    last = float(trainer.training_history[-1])
    assert output.getvalue().rstrip().endswith(f"train={last:.4g}]")
