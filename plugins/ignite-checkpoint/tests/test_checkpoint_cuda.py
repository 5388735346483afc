"""The checkpoint plugin with model and optimizer on a CUDA device: a save makes no host sync on
the training thread, the file loads on the CPU, and resume is bit for bit. Skipped without CUDA."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from ignite_checkpoint import list_checkpoints, load_checkpoint

from ignite import Trainer

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("ignite_isolated"),  # only the plugins a test names
]


def regression_update(model, optimizer):
    """An update function returning the loss tensor (no sync)."""

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.detach()

    return update


def cuda_run(folder, **options):
    """A small training on the GPU, with dropout (the CUDA RNG matters) and Adam (its state on
    the device, its step count on the CPU); the update returns the loss tensor (no sync)."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    x = torch.randn(64, 8, device=device)
    y = x.sum(dim=1, keepdim=True)
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    update = regression_update(model, optimizer)

    trainer = Trainer(data, update, plugins={"checkpoint": {
        "dir": str(folder), "objects": {"model": model, "optimizer": optimizer}, **options}})
    return trainer, model, optimizer


def test_a_save_of_device_state_makes_no_sync_on_the_training_thread_and_loads_on_the_cpu(tmp_path):
    trainer, model, _optimizer = cuda_run(tmp_path, every_epochs=1000)
    trainer.run(1)
    plugin = trainer.plugins["checkpoint"]
    assert plugin.background_serialization is None  # auto: device state is serialized in the background
    expected = {key: value.cpu() for key, value in model.state_dict().items()}
    before = model[0].weight.detach().clone()
    paths = []
    for _ in range(2):  # the second reuses the first's pinned buffers
        plugin.wait()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            paths.append(plugin.save(trainer))
            with torch.no_grad():  # the next step's in-place change, queued behind the copies
                model[0].weight.add_(1.0)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        plugin.wait()
        with torch.no_grad():
            model[0].weight.copy_(before)
    pinned = [buffer for (is_pinned, _), held in plugin._buffers._used.items() if is_pinned for buffer in held]
    assert pinned and all(buffer.is_pinned() for buffer in pinned)
    allocations = plugin._buffers.allocations
    plugin.wait()
    plugin.save(trainer)
    assert plugin._buffers.allocations == allocations  # same shapes: the same pinned buffers
    plugin.wait()
    saved = torch.load(paths[-1], map_location="cpu", weights_only=True)
    state = load_checkpoint(paths[-1])
    for key, value in expected.items():
        assert state["objects"]["model"][key].device.type == "cpu"
        assert torch.equal(state["objects"]["model"][key], value), key
        assert torch.equal(saved["objects"]["model"][key], value), key
    trainer.run(2)
    assert plugin._buffers.held_bytes == 0


def test_device_state_is_serialized_on_the_writer_thread(tmp_path, monkeypatch):
    calls: list[str] = []
    real_save = torch.save

    def save(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    trainer, _, _ = cuda_run(tmp_path, every_iterations=2)
    trainer.run(1)
    assert calls and set(calls) == {"ignite-checkpoint-writer"}, calls


def test_resume_on_cuda_is_bit_for_bit(tmp_path):
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        reference, model_a, optimizer_a = cuda_run(tmp_path / "a", every_iterations=3)
        reference.run(3)
        first, _, _ = cuda_run(tmp_path / "b", every_iterations=3)
        first.run(2)
        names = list_checkpoints(tmp_path / "b")
        assert names
        resumed, model_b, optimizer_b = cuda_run(tmp_path / "b", every_iterations=3, resume=True)
        resumed.run(3)
    finally:
        torch.use_deterministic_algorithms(False)
    for key, value in model_a.state_dict().items():
        assert value.device.type == "cuda" and torch.equal(value, model_b.state_dict()[key]), key
    for parameter_a, parameter_b in zip(model_a.parameters(), model_b.parameters()):
        state_a, state_b = optimizer_a.state[parameter_a], optimizer_b.state[parameter_b]
        assert state_a["exp_avg"].device.type == "cuda" and state_b["exp_avg"].device.type == "cuda"
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key
    assert [float(v) for v in reference.training_history] == [float(v) for v in resumed.training_history]



def sharded_cuda_run(folder, seed, resume):
    """cuda_run's model sharded with FSDP2 (in a process group of one rank), a save every 2 iterations."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(seed)  # the resumed run starts from other weights: the resume must replace them
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)).cuda()
    for layer in (model[0], model[2], model):
        fully_shard(layer)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(64, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    data = [(x[i : i + 16], x[i : i + 16].sum(dim=1, keepdim=True)) for i in range(0, 64, 16)]
    update = regression_update(model, optimizer)

    trainer = Trainer(data, update, plugins={"checkpoint": {
        "dir": str(folder), "objects": {"model": model, "optimizer": optimizer}, "every_iterations": 2, "resume": resume}})
    return trainer, model


def test_an_fsdp2_model_on_the_gpu_is_saved_sharded_and_resumed_bit_for_bit(tmp_path):
    import torch.distributed as dist

    # gloo for the plugin's save group (DCP's async_save needs a CPU backend), nccl for FSDP.
    dist.init_process_group("cpu:gloo,cuda:nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        trainer, model = sharded_cuda_run(tmp_path / "full", 0, resume=False)
        trainer.run(2)
        uninterrupted = {name: p.full_tensor().cpu() for name, p in model.named_parameters()}
        for path in list_checkpoints(tmp_path / "full"):
            assert sorted(os.listdir(path)) == [".metadata", "__0_0.distcp", "ignite.pt"]
            assert load_checkpoint(path)["sharded"] == {"model": "model", "optimizer": "optimizer"}
        sharded_cuda_run(tmp_path / "cut", 0, resume=False)[0].run(1)  # saves after iterations 2 and 4
        trainer, model = sharded_cuda_run(tmp_path / "cut", 1, resume=True)
        trainer.run(2)
        assert trainer.current_iteration == 8
        for name, parameter in model.named_parameters():
            assert torch.equal(parameter.full_tensor().cpu(), uninterrupted[name]), name
    finally:
        dist.destroy_process_group()
