"""The Visdom plugin on a CUDA trainer whose update returns the loss tensor: no host sync
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


class Client:
    """Stands in for visdom's client (not installed on the GPU machine): records the points of
    its public ``line`` and answers with the window id, as the server does."""

    def __init__(self):
        self.points: dict[str, list[float]] = {}

    def line(self, Y, X=None, win=None, env=None, opts=None, update=None, name=None):
        self.points.setdefault(win, []).extend(float(y) for y in Y)
        return win


def test_visdom_queues_loss_tensors_without_a_sync_in_the_iterations(monkeypatch):
    import ignite_visdom

    client = Client()
    monkeypatch.setattr(ignite_visdom, "_connect", lambda server, port, env: client)
    _, _, data, update = cuda_regression()
    trainer = Trainer(data, update, plugins={"visdom": {"every_iterations": 1}})
    run_without_host_syncs(trainer, 2)
    # A read on the sender thread while "error" was set would have made the plugin go quiet.
    assert client.points["training/iteration"] == pytest.approx([float(v) for v in trainer.training_history], rel=1e-6)
    assert client.points["training/epoch_mean"] == pytest.approx([trainer.training_history.run_mean(epoch) for epoch in range(trainer.training_history.num_runs)], rel=1e-6)
