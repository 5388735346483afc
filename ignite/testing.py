"""Helpers for testing plugins: run a script as the ranks of a real gloo process group."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["run_ranks"]


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
    hang) is killed; any rank's failure raises AssertionError with every rank's output.
    """
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
    codes = [process.returncode for process in processes]
    if any(codes):
        shown = "\n".join(f"--- rank {rank} (exit code {code})\n{outputs[rank]}" for rank, code in enumerate(codes))
        raise AssertionError(f"{script}: not every rank succeeded\n{shown}")
    return outputs
