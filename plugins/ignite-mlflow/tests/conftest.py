"""A real ``mlflow server`` on 127.0.0.1 for the session (SQLite store and artifact folder in a
temporary folder), and clients reading it back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Longest wait for the server to answer its health endpoint (it creates its database first).
SERVER_START_SECS = 180


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an ``mlflow server`` started for this session; stopped at its end."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    with open(folder / "server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        # Its own process group: the server's worker processes are stopped with it.
        server = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_SECS
        while not _healthy(url):
            try:
                server.wait(timeout=0.25)  # the pause between two polls; returns if the server died
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not answer {url}/health within {SERVER_START_SECS}s; its log: "
                        f"{(folder / 'server.log').read_text(errors='replace')[-3000:]}"
                    ) from None
            else:
                raise RuntimeError(
                    f"mlflow server exited with {server.returncode}; its log: "
                    f"{(folder / 'server.log').read_text(errors='replace')[-3000:]}"
                )
        yield url
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)
        except ProcessLookupError:
            pass


@pytest.fixture
def mlflow_client(mlflow_server: str) -> MlflowClient:
    from mlflow import MlflowClient  # here: the GPU machine's CUDA tests run without mlflow installed

    return MlflowClient(tracking_uri=mlflow_server)


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    """An experiment name of this test's own (created by the plugin), so tests do not see each other's runs."""
    return f"{request.node.name}-{os.getpid()}-{time.time_ns()}"
