"""The MLflow plugin on a CUDA trainer whose update returns the loss tensor: no host sync inside
the training iterations (torch.cuda.set_sync_debug_mode("error") there; issue #14), the
tensors read on the sender thread. Skipped without CUDA or without mlflow."""

from __future__ import annotations

import pytest
import torch

from ignite import Trainer
from ignite.testing import cuda_regression, run_without_host_syncs

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


def test_mlflow_queues_loss_tensors_without_a_sync_in_the_iterations(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, optimizer, data, update = cuda_regression()
    trainer = Trainer(
        data, update, plugins={"mlflow": {"tracking_uri": uri, "every_iterations": 1, "optimizer": optimizer}}
    )
    run_without_host_syncs(trainer, 2)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(trainer.plugins["mlflow"].run_id)
    # A read on the sender thread while "error" was set would have made the plugin go quiet.
    assert run.info.status == "FINISHED"
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "training/iteration"))
    history = trainer.training_history
    assert [step for step, _ in logged] == list(range(1, len(history) + 1))
    assert [value for _, value in logged] == pytest.approx([float(value) for value in history], rel=1e-6)
    means = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "training/epoch_mean"))
    assert [value for _, value in means] == pytest.approx(
        [history.run_mean(epoch) for epoch in range(history.num_runs)], rel=1e-6
    )
