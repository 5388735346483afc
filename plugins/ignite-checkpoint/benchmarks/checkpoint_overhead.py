"""What the checkpoint plugin costs: per iteration between saves, and per save.

    python plugins/ignite-checkpoint/benchmarks/checkpoint_overhead.py [--iterations 200000] [--megabytes 64]
    python plugins/ignite-checkpoint/benchmarks/checkpoint_overhead.py --training-thread [--megabytes 64]

1. Per-iteration overhead: a no-op update on a list of batches, without the plugin, with it
   saving only per epoch (no per-iteration hook), and with every_iterations larger than the run
   (one modulo per iteration). Best of 5 runs. Then the cost of a save of the trainer state
   alone, which holds the whole history (every save writes it again).
2. One save of a model of --megabytes of float32 parameters: torch.save to the temporary file,
   fsync, os.replace and folder fsync, as the plugin does it; and the load.
3. The checksum: what the training thread pays per save (encode of the objects' states, and
   serializing with room for the checksum, against plain torch.save to memory), what the
   writer thread pays (the CRC-32, against blake2b and sha256 of the same bytes), and the load
   with verification against a plain torch.load.

``--training-thread`` instead measures what a save costs the training thread while the model
trains, with the plugin's public API only (so it runs against any version of the plugin): a
small MLP (SGD with momentum, batch 32) trained for 2000 iterations, saving every 50; per save, the time of the save() call itself (the pause; the wait for the previous write, the
disk's time, left out) and how much longer the 10 steps after it take than the run's median
step (the writer thread serializing and writing holds the GIL part of that time). Folder on
/dev/shm where there is one, 5 runs. Then the pause of a
save of --megabytes of float32 parameters.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import os
import statistics
import tempfile
import time

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import torch

import ignite_checkpoint
from ignite import Trainer, TrainingEvents
from ignite.serialization import encode


def per_iteration(iterations: int, options: dict | None) -> float:
    best = float("inf")
    for _ in range(5):
        with tempfile.TemporaryDirectory() as folder:
            plugins = {} if options is None else {"checkpoint": {"dir": folder, **options}}
            trainer = Trainer([None] * iterations, lambda batch: 0.0, plugins=plugins)
            start = time.perf_counter()
            trainer.run(1)
            best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def timed_training(folder: str, model: torch.nn.Module, batches: list, every: int) -> tuple[list[float], list[float]]:
    """Train ``model`` on ``batches`` with the checkpoint plugin, calling its save() after every
    ``every`` iterations; returns each save's pause, and for each save the extra time of the 10
    steps after it over the run's median step (the writer thread's share of the GIL)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def update(batch):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Trainer(batches, update, plugins={"checkpoint": {
        "dir": folder, "objects": {"model": model, "optimizer": optimizer}, "every_epochs": 10**9, "keep": 2}})
    pauses: list[float] = []
    steps: list[float] = []
    last = time.perf_counter()

    def save(trainer: Trainer) -> None:
        nonlocal last
        now = time.perf_counter()
        steps.append(now - last)
        if trainer.current_iteration % every == 0:
            trainer.plugins["checkpoint"].wait()  # the disk's time, not the save's: left out
            middle = time.perf_counter()
            trainer.plugins["checkpoint"].save(trainer)
            pauses.append(time.perf_counter() - middle)
        last = time.perf_counter()

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, save)
    trainer.run(1)
    typical = statistics.median(steps)
    after = [sum(steps[i : i + 10]) - 10 * typical for i in range(every, len(steps) - 10, every)]
    return pauses, after


def training_thread(megabytes: int, hidden: int) -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(32, 64), torch.randn(32, 1)) for _ in range(2000)]
    every = 50
    pauses, after = [], []
    # On tmpfs where there is one: a write's fsync then costs nothing, what is left is the CPU's work.
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    for _ in range(5):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                    torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        with tempfile.TemporaryDirectory(dir=where) as folder:
            run_pauses, run_after = timed_training(folder, model, batches, every)
        pauses += run_pauses
        after += run_after
    size = sum(p.numel() for p in model.parameters()) * 4 * 2 / 1e3
    print(f"training thread, MLP 64-{hidden}-{hidden}-1 ({size:.0f} kB of parameters and momentum), a save every {every} "
          f"iterations, {len(pauses)} saves in 5 runs, folder on {where or 'the temporary folder'}: pause per save "
          f"median {statistics.median(pauses) * 1e3:.3f} ms; the 10 steps after a save, extra time over the median "
          f"step: median {statistics.median(after) * 1e3:.3f} ms, mean {statistics.mean(after) * 1e3:.3f} ms")
    big = torch.nn.Linear(megabytes * 1024 * 256 // 1024, 1024, bias=False)
    batches = [(torch.randn(2, big.in_features), torch.randn(2, 1024)) for _ in range(4)]
    with tempfile.TemporaryDirectory() as folder:
        pauses, _ = timed_training(folder, big, batches, 1)
    print(f"training thread, {megabytes} MB of parameters + {megabytes} MB of momentum: pauses of 4 saves "
          + ", ".join(f"{p * 1e3:.0f}" for p in pauses) + " ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--training-thread", action="store_true",
                        help="measure the training thread's cost per save while a model trains (see the docstring)")
    parser.add_argument("--hidden", type=int, default=256, help="--training-thread: the MLP's hidden width")
    args = parser.parse_args()
    if args.training_thread:
        training_thread(args.megabytes, args.hidden)
        return
    with tempfile.TemporaryDirectory() as folder:
        folder_fd = ignite_checkpoint._open_directory(folder)  # kept open, as the plugin's writer does
        # One epoch and no save in it: what the plugin costs between saves.
        base = per_iteration(args.iterations, None)
        epochs = per_iteration(args.iterations, {"every_epochs": 2})
        modulo = per_iteration(args.iterations, {"every_iterations": 10**9})
        print(f"per iteration: no plugin {base:.3f} us, with every_epochs {epochs:.3f} us, "
              f"with every_iterations {modulo:.3f} us (no save in either)")
        trainer = Trainer([None] * args.iterations, lambda batch: 0.0)
        trainer.run(1)
        start = time.perf_counter()
        state = trainer.state_dict()
        data = ignite_checkpoint._serialized({"trainer": state})
        ignite_checkpoint._seal(data)
        ignite_checkpoint._atomic_write(data, os.path.join(folder, "history.pt"), folder_fd)
        print(f"a save after {args.iterations} iterations (trainer state only, history of "
              f"{len(trainer.training_history)} floats): {(time.perf_counter() - start) * 1e3:.0f} ms")

        model = torch.nn.Linear(args.megabytes * 1024 * 256 // 1024, 1024, bias=False)
        payload = {"format": ignite_checkpoint.FORMAT, "trainer": {}, "objects": {"model": model.state_dict()}}
        path = os.path.join(folder, ignite_checkpoint.checkpoint_name(1, 1))
        times = []
        for _ in range(3):
            start = time.perf_counter()
            data = ignite_checkpoint._serialized(payload)
            ignite_checkpoint._seal(data)
            ignite_checkpoint._atomic_write(data, path, folder_fd)
            times.append(time.perf_counter() - start)
        size = os.path.getsize(path) / 2**20
        start = time.perf_counter()
        ignite_checkpoint.load_checkpoint(path)
        load = time.perf_counter() - start
        print(f"save of {size:.0f} MB (serialize, checksum, write, fsync, replace, folder fsync): best "
              f"{min(times) * 1e3:.0f} ms, load (checksum verified, weights_only): {load * 1e3:.0f} ms")
        checksum_costs(model, payload, path)
        if folder_fd is not None:
            os.close(folder_fd)


def best_ms(function, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def checksum_costs(model: torch.nn.Module, payload: dict, path: str) -> None:
    def plain() -> None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        buffer.getbuffer()

    encoding = best_ms(lambda: encode(model.state_dict(), "objects['model']"))
    print(f"training thread per save: encode of the model's state {encoding:.3f} ms; serialize "
          f"{best_ms(lambda: ignite_checkpoint._serialized(payload)):.1f} ms with room for the checksum, "
          f"{best_ms(plain):.1f} ms plain torch.save to memory")
    data = ignite_checkpoint._serialized(payload)
    size = len(data) / 2**20
    print(f"writer thread per save, {size:.0f} MB: crc32 {best_ms(lambda: ignite_checkpoint._seal(data)):.1f} ms "
          f"(chosen); blake2b {best_ms(lambda: hashlib.blake2b(data).digest()):.1f} ms; "
          f"sha256 {best_ms(lambda: hashlib.sha256(data).digest()):.1f} ms")
    verified = best_ms(lambda: ignite_checkpoint.load_checkpoint(path), 3)
    unverified = best_ms(lambda: torch.load(path, map_location="cpu", weights_only=True), 3)
    print(f"load of {size:.0f} MB: {verified:.0f} ms verified (load_checkpoint), {unverified:.0f} ms plain torch.load")


if __name__ == "__main__":
    main()
