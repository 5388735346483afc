"""Helpers for testing plugins: run a script as the ranks of a real gloo process group; train on
the GPU with every host sync in the training iterations an error."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .events import TrainingEvents

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = [
    "GLOO_TEARDOWN_ABORT",
    "cuda_regression",
    "folder_kept_aside",
    "is_gloo_teardown_abort",
    "run_ranks",
    "run_without_host_syncs",
]

#: What a rank prints when gloo aborts it (SIGABRT) while the process ends, its work done: it
#: happens to plain DDP scripts without ignite too, in any shutdown order tried
#: (``benchmarks/gloo_teardown.py``; its rates are in benchmarks/README.md).
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def is_gloo_teardown_abort(returncode: int | None, output: str) -> bool:
    """Whether a process ended in gloo's teardown abort (SIGABRT, with the C++ runtime's
    message), which says nothing about the test: launchers run the job once more."""
    return returncode == -signal.SIGABRT and GLOO_TEARDOWN_ABORT in output


@contextlib.contextmanager
def folder_kept_aside(folder: str | os.PathLike[str], ignore: Collection[str] = ()) -> Iterator[Callable[[], None]]:
    """Copy ``folder`` aside for the ``with`` block, which gets ``put_back()``: it makes the
    folder again as it was (what was written since removed, what was changed restored), e.g.
    before a launch that is run again reads the checkpoints the first one started from. Entries
    named in ``ignore`` (a launcher's logs) are neither copied nor touched. Small test folders
    only: everything is copied."""
    folder = Path(folder)
    skip = shutil.ignore_patterns(*ignore) if ignore else None
    with tempfile.TemporaryDirectory() as scratch:
        before = Path(scratch, "folder")
        shutil.copytree(folder, before, symlinks=True, ignore=skip)

        def put_back() -> None:
            for entry in folder.iterdir():
                if entry.name in ignore:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            shutil.copytree(before, folder, symlinks=True, dirs_exist_ok=True)

        yield put_back


def run_ranks(
    script: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    world_size: int = 2,
    timeout: float = 180,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Run ``python SCRIPT RANK WORLD_SIZE FOLDER`` as ``world_size`` processes at once and
    return their outputs (stdout and stderr), by rank.

    The script joins the group itself, e.g. with ``dist.init_process_group("gloo",
    init_method=f"file://{folder}/store", rank=rank, world_size=world_size)``, and writes its
    results into ``folder``. Collectives go over loopback only and plugin autoload is off
    (name the plugins in ``plugins=``). A rank still running after ``timeout`` seconds (a
    hang) is killed; any rank's failure raises AssertionError with every rank's output. A run
    in which the only failures are gloo's teardown abort (see :func:`is_gloo_teardown_abort`)
    is run again (twice at most) from ``folder`` as it was before the first run: what the
    scripts wrote is removed, what they changed put back (a checkpoint a resume reads).
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    with folder_kept_aside(folder) as put_back:
        for attempt in range(3):
            if attempt:
                put_back()
                Path(folder, "store").unlink(missing_ok=True)  # a FileStore must not be reused
            codes, outputs = _launch(script, folder, world_size, timeout, env)
            failed = [rank for rank, code in enumerate(codes) if code]
            if not failed:
                return outputs
            if not all(is_gloo_teardown_abort(codes[rank], outputs[rank]) for rank in failed):
                break
    shown = "\n".join(f"--- rank {rank} (exit code {code})\n{outputs[rank]}" for rank, code in enumerate(codes))
    raise AssertionError(f"{script}: not every rank succeeded\n{shown}")


def _launch(
    script: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    world_size: int,
    timeout: float,
    env: Mapping[str, str] | None,
) -> tuple[list[int | None], list[str]]:
    environment = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "IGNITE_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})}
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(world_size), str(Path(folder))],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world_size)
    ]
    outputs = [""] * world_size
    try:
        for rank, process in enumerate(processes):
            outputs[rank] = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        pass  # reported below, with what every rank printed
    finally:
        for process in processes:  # a hung rank must not outlive the test
            if process.poll() is None:
                process.kill()
                process.wait()
    return [process.returncode for process in processes], outputs


def cuda_regression(batches: int = 24) -> tuple[Any, Any, list[Any], Callable[[Any], Any]]:
    """A linear regression on the GPU for plugin tests: ``(model, optimizer, data, update)``,
    the data on the device and ``update`` returning the loss tensor (no host sync), warmed up
    once outside any checked iteration (cuBLAS starts up on its first product)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    weights = torch.randn(8, 1, device="cuda")
    data = [(x, x @ weights) for x in (torch.randn(16, 8, device="cuda") for _ in range(batches))]

    def update(batch: Any) -> Any:
        inputs, targets = batch
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    update(data[0])
    torch.cuda.synchronize()
    return model, optimizer, data, update


def run_without_host_syncs(trainer: Trainer, max_epochs: int) -> None:
    """``trainer.run(max_epochs)`` with ``torch.cuda.set_sync_debug_mode("error")`` from each
    training iteration's start until the epoch's iterations are over, so that a host sync in
    the loop, in a plugin's per-iteration hook or in a handler raises. It is reset at
    TRAINING_EPOCH_COMPLETED, whose handlers run before plugin hooks."""
    started = trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: torch.cuda.set_sync_debug_mode("error")
    )
    ended = trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda t: torch.cuda.set_sync_debug_mode(0))
    try:
        trainer.run(max_epochs)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        started.remove()
        ended.remove()
