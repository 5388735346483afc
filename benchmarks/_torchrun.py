"""What the two-rank benchmarks share: a free port on 127.0.0.1, and running this script again
as 2 ranks under torchrun (gloo over loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_as_two_ranks(script: str, env: dict[str, str], log_dir: str) -> int:
    """``torchrun --nproc_per_node=2 script ARGS`` (ARGS: this process's own) with ``env``
    (collectives over loopback added); torchrun's logs go to ``log_dir`` (else it leaves a
    /tmp/torchelastic_* folder). Returns torchrun's exit code."""
    if os.path.exists("/sys/class/net/lo"):
        env = {**env, "GLOO_SOCKET_IFNAME": "lo"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        f"--log-dir={log_dir}",
        os.path.abspath(script),
        *sys.argv[1:],
    ]
    return subprocess.call(command, env=env)
