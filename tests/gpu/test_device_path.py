"""The device data path on CUDA (ARCHITECTURE.md section 8): no host sync inside the
iterations, histories that hold GPU memory for one run at most, exact resume.

Skipped without CUDA; run on a GPU machine with ``python -m pytest -q tests/gpu``.
"""

from __future__ import annotations

import logging
import os
import random

# Deterministic cuBLAS needs this before its first handle is made (torch reads it then).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch

from ignite import Trainer, TrainingEvents

from ..test_state import stopped_and_resumed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

E = TrainingEvents


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 10)
    ).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer


def device_batches(count: int, nan_at: int | None = None):
    """Batches already on the device, with a per-batch loss scale (NaN at ``nan_at``, 0-based)."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index in range(count):
        inputs = torch.randn(64, 32, generator=generator).cuda()
        targets = torch.randint(0, 10, (64,), generator=generator).cuda()
        scale = torch.full((), float("nan") if index == nan_at else 1.0, device="cuda")
        batches.append((inputs, targets, scale))
    return batches


def steps(model, optimizer):
    def train(batch):
        inputs, targets, scale = batch
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs), targets) * scale
        loss.backward()
        optimizer.step()
        return loss  # the tensor: no .item(), no sync

    def validate(batch):
        inputs, targets, _ = batch
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
            return {"loss": torch.nn.functional.cross_entropy(logits, targets), "logits": logits}

    return train, validate


def guard_iterations(trainer: Trainer) -> None:
    """Any host sync inside a training or validation iteration raises."""

    def strict(trainer):
        torch.cuda.set_sync_debug_mode("error")

    def lenient(trainer):
        torch.cuda.set_sync_debug_mode("default")

    trainer.add_event_handler(E.TRAINING_ITERATION_STARTED, strict)
    trainer.add_event_handler(E.TRAINING_ITERATION_COMPLETED, lenient)  # added last: runs last
    trainer.add_event_handler(E.VALIDATION_ITERATION_STARTED, strict)
    trainer.add_event_handler(E.VALIDATION_ITERATION_COMPLETED, lenient)


@pytest.fixture(autouse=True)
def _sync_debug_off_after():
    yield
    torch.cuda.set_sync_debug_mode("default")


def warm_up(model, optimizer, batches):
    # CUDA context, cuBLAS handles and optimizer state exist before the checked iterations.
    train, _ = steps(model, optimizer)
    train(batches[0])
    torch.cuda.synchronize()


def test_the_loop_with_terminate_on_nan_makes_no_sync_inside_iterations():
    model, optimizer = make_model()
    batches = device_batches(40)
    warm_up(model, optimizer, batches)
    train, validate = steps(model, optimizer)
    trainer = Trainer(
        batches, train, validation_data=batches[:8], validation_update_function=validate, terminate_on_nan=True
    )
    guard_iterations(trainer)
    trainer.run(3)
    assert trainer.current_iteration == 120 and not trainer.terminating
    history = trainer.training_history
    assert all(type(value) is float for value in history) and len(history) == 120
    assert history.run_mean() == pytest.approx(sum(history.run()) / 40)
    for output in trainer.validation_history.run():
        assert type(output["loss"]) is float and output["logits"].device.type == "cpu"


def test_a_nan_on_the_device_stops_the_run_naming_its_iteration(caplog):
    model, optimizer = make_model()
    batches = device_batches(60, nan_at=9)  # iteration 10
    warm_up(model, optimizer, device_batches(1))
    train, _ = steps(model, optimizer)
    trainer = Trainer(batches, train, terminate_on_nan=True)
    guard_iterations(trainer)
    with caplog.at_level(logging.WARNING, logger="ignite"):
        trainer.run(2)
    assert trainer.terminating and trainer.current_epoch == 1
    assert 10 <= trainer.current_iteration <= 60  # some iterations later at most, this epoch at the latest
    assert "the training output of iteration 10 (epoch 1) is not finite" in caplog.text


def test_gpu_memory_held_by_histories_is_bounded_by_one_run():
    model, optimizer = make_model()
    batches = device_batches(100)
    warm_up(model, optimizer, batches)
    train, validate = steps(model, optimizer)
    trainer = Trainer(
        batches, train, validation_data=batches[:20], validation_update_function=validate, terminate_on_nan=True
    )
    at_epoch_end, in_epoch = [], []
    trainer.add_event_handler(E.EPOCH_COMPLETED, lambda t: at_epoch_end.append(torch.cuda.memory_allocated()))
    trainer.add_event_handler(
        E.TRAINING_ITERATION_COMPLETED,
        lambda t: in_epoch.append(torch.cuda.memory_allocated()) if t.current_iteration % 100 == 99 else None,
    )
    trainer.run(6)
    # During a run its 100 loss tensors are on the device (512 B blocks each); after it, none.
    assert min(in_epoch) - max(at_epoch_end) >= 100 * 512 - 4096
    assert max(at_epoch_end) - min(at_epoch_end) <= 1024, at_epoch_end
    assert all(type(value) is float for value in trainer.training_history)


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def make_run():
    random.seed(0)
    model, optimizer = make_model()
    generator = torch.Generator().manual_seed(2)
    inputs, targets = torch.randn(320, 32, generator=generator), torch.randint(0, 10, (320,), generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=32, shuffle=True)
    one = torch.ones((), device="cuda")
    train, validate = steps(model, optimizer)

    def train_on_device(batch):
        return train((batch[0].cuda(non_blocking=True), batch[1].cuda(non_blocking=True), one))

    def validate_on_device(batch):
        return validate((batch[0].cuda(), batch[1].cuda(), one))

    trainer = Trainer(
        loader,
        train_on_device,
        validation_data=[(inputs[:64], targets[:64])],
        validation_update_function=validate_on_device,
        terminate_on_nan=True,
    )
    return trainer, model, optimizer


@pytest.mark.parametrize("stop_at", [4, 10, 17])  # mid-epoch, last batch, the next epoch
def test_exact_resume_on_cuda_with_dropout_and_deterministic_algorithms(stop_at, deterministic, tmp_path):
    reference, reference_model, resumed, model = stopped_and_resumed(
        make_run, tmp_path, lambda trainer: trainer.current_iteration == stop_at
    )
    for expected, got in zip(reference_model.parameters(), model.parameters()):
        assert torch.equal(expected, got)
    assert list(resumed.training_history) == list(reference.training_history)
    assert [v["loss"] for v in resumed.validation_history] == [v["loss"] for v in reference.validation_history]
