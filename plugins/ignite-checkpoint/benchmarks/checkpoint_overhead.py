"""What the checkpoint plugin costs: per iteration between saves, and per save.

    python plugins/ignite-checkpoint/benchmarks/checkpoint_overhead.py [--iterations 200000] [--megabytes 64]

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
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import time

os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import torch

import ignite_checkpoint
from ignite import Trainer
from ignite.serialization import encode


def per_iteration(iterations: int, options: dict | None) -> float:
    best = float("inf")
    for _ in range(5):
        with tempfile.TemporaryDirectory() as folder:
            plugins = {} if options is None else {"checkpoint": {"dirname": folder, **options}}
            trainer = Trainer([None] * iterations, lambda batch: 0.0, plugins=plugins)
            start = time.perf_counter()
            trainer.run(1)
            best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()
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
