"""Tests of the visdom plugin against a real Visdom server run on a free loopback port."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from typing import Any

import ignite_visdom
import numpy
import pytest
import torch
from ignite_visdom import THREAD_NAME, VisdomLogger

from ignite import PluginError, Trainer, TrainingEvents, hookimpl
from ignite.pytest_plugin import IgniteAutoload, IgniteRanks

# visdom's client calls the deprecated logging.Logger.warn (visdom 0.2.4); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

HOST = "127.0.0.1"
SERVER_URL = f"http://{HOST}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_command(port: int, env_path: str) -> list[str]:
    """The offline way to start a server: run_server.main, which (unlike `python -m
    visdom.server`) does not try to download the web assets first."""
    argv = ["visdom", "-port", str(port), "--hostname", HOST, "-bind_local", "-env_path", env_path]
    code = f"import sys; from visdom.server.run_server import main; sys.argv = {argv!r}; main()"
    return [sys.executable, "-c", code]


@contextlib.contextmanager
def running_server(folder: Any) -> Iterator[tuple[int, subprocess.Popen]]:
    """A real Visdom server process on a free loopback port, saving its envs under ``folder``;
    yields (port, process) once it listens, always killed after."""
    port = free_port()
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        server_command(port, str(folder / "envs")), cwd=folder, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                pass
            try:  # waits a little, and notices a server that died
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            else:
                pytest.fail(f"visdom server exited with {process.returncode}: {(folder / 'server.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"visdom server did not listen on port {port} within 60 s")
        yield port, process
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def visdom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Visdom server shared by the module's tests; yields its port."""
    with running_server(tmp_path_factory.mktemp("visdom_server")) as (port, _):
        yield port


@pytest.fixture
def only_visdom(ignite_isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No other installed plugin is loaded; the visdom one only when named in plugins=, and
    configured by its options alone."""
    monkeypatch.delenv("VISDOM_SERVER_URL", raising=False)
    monkeypatch.delenv("VISDOM_PORT", raising=False)


@functools.cache
def reader(port: int) -> Any:
    """A plain visdom client, to read back what the plugin plotted."""
    import visdom

    with warnings.catch_warnings():  # visdom's own `logger.warn` deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return visdom.Visdom(server=SERVER_URL, port=port, use_incoming_socket=False, raise_exceptions=True)


def plotted(port: int, env: str, win: str) -> dict[str, list[float]]:
    """The x and y values of the one line in window ``win`` of ``env``."""
    data = json.loads(reader(port).get_window_data(win, env))
    traces = data["content"]["data"]
    assert len(traces) == 1, traces
    return {"x": traces[0]["x"], "y": traces[0]["y"]}


def windows(port: int, env: str) -> set:
    return set(json.loads(reader(port).get_window_data(None, env)))


class Regression:
    """A tiny linear regression: 6 training batches, 2 validation batches."""

    def __init__(self, lr: float = 0.05) -> None:
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(32, 3, generator=generator)
        targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(32, 1, generator=generator)
        self.train = [(inputs[i : i + 4], targets[i : i + 4]) for i in range(0, 24, 4)]
        self.valid = [(inputs[i : i + 4], targets[i : i + 4]) for i in range(24, 32, 4)]
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)

    def update(self, batch: Any) -> float:
        inputs, targets = batch
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def update_dict(self, batch: Any) -> dict[str, Any]:
        inputs, targets = batch
        self.optimizer.zero_grad()
        error = self.model(inputs) - targets
        loss = error.pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return {"mse": loss.detach(), "mae": error.abs().mean().item()}

    def evaluate(self, batch: Any) -> float:
        inputs, targets = batch
        with torch.no_grad():
            return torch.nn.functional.mse_loss(self.model(inputs), targets).item()


def test_plotted_points_equal_histories(only_visdom: None, visdom_server: int) -> None:
    task = Regression()
    env = "test_plotted_points_equal_histories"
    trainer = Trainer(
        task.train,
        task.update,
        task.valid,
        task.evaluate,
        plugins={
            "visdom": {
                "server": SERVER_URL,
                "port": visdom_server,
                "env": env,
                "every_iterations": 4,
                "optimizer": task.optimizer,
            }
        },
    )
    # The learning rate changes every epoch; record the one each epoch trained with.
    scheduler = torch.optim.lr_scheduler.StepLR(task.optimizer, step_size=1, gamma=0.5)
    rates: list[float] = []
    trainer.add_event_handler(
        TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda t: rates.append(task.optimizer.param_groups[0]["lr"])
    )
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, lambda t: scheduler.step())
    plugin = trainer.plugins["visdom"]
    trainer.run(max_epochs=3)

    assert plugin.sender_thread is None
    history = trainer.training_history
    assert windows(visdom_server, env) == {
        "training/iteration",
        "training/epoch_mean",
        "validation/mean",
        "lr",
    }
    iterations = plotted(visdom_server, env, "training/iteration")
    assert iterations["x"] == [4.0, 8.0, 12.0, 16.0]
    assert iterations["y"] == [history[3], history[7], history[11], history[15]]
    epochs = [1.0, 2.0, 3.0]
    assert plotted(visdom_server, env, "training/epoch_mean") == {
        "x": epochs,
        "y": [history.run_mean(i) for i in range(3)],
    }
    assert plotted(visdom_server, env, "validation/mean") == {
        "x": epochs,
        "y": [trainer.validation_history.run_mean(i) for i in range(3)],
    }
    assert rates == [0.05, 0.025, 0.0125]
    assert plotted(visdom_server, env, "lr") == {"x": epochs, "y": rates}


def test_dict_outputs_one_window_per_key_and_runs_continue(only_visdom: None, visdom_server: int) -> None:
    env = "test_dict_outputs"
    # A window left in the env by an earlier run: the new run replaces it, does not extend it.
    reader(visdom_server).line(
        Y=numpy.array([99.0, 98.0]), X=numpy.array([1.0, 2.0]), win="training/epoch_mean/mse", env=env
    )
    task = Regression()
    trainer = Trainer(
        task.train,
        task.update_dict,
        plugins={"visdom": {"server": SERVER_URL, "port": visdom_server, "env": env, "every_iterations": 3}},
    )
    trainer.run(max_epochs=1)
    trainer.run(max_epochs=2)  # continues with epoch 2: its points are appended

    history = trainer.training_history
    assert windows(visdom_server, env) == {
        "training/iteration/mse",
        "training/iteration/mae",
        "training/epoch_mean/mse",
        "training/epoch_mean/mae",
    }
    for key in ("mse", "mae"):
        assert plotted(visdom_server, env, f"training/iteration/{key}") == {
            "x": [3.0, 6.0, 9.0, 12.0],
            "y": [float(history[i][key]) for i in (2, 5, 8, 11)],
        }
        assert plotted(visdom_server, env, f"training/epoch_mean/{key}") == {
            "x": [1.0, 2.0],
            "y": [history.run_mean(0, key), history.run_mean(1, key)],
        }


def test_each_send_reads_what_was_queued_in_one_call(
    only_visdom: None, visdom_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One scalars_of() call per send, whatever was queued since the last one: on a GPU, one host
    # sync per send on the sender thread, not one per queued output.
    sends: list[int] = []  # items queued at each send that had any
    reads: list[int] = []  # items of the outputs given to each scalars_of() call
    real_send, real_scalars_of = ignite_visdom._Sender._send_pending, ignite_visdom.scalars_of

    def send(sender: Any, client: Any) -> None:
        if sender.items:
            sends.append(len(sender.items))
        real_send(sender, client)

    def scalars_of(outputs: Any) -> list[dict[str, float]]:
        reads.append(sum(len(output) for output in outputs))
        return real_scalars_of(outputs)

    monkeypatch.setattr(ignite_visdom._Sender, "_send_pending", send)
    monkeypatch.setattr(ignite_visdom, "scalars_of", scalars_of)
    task = Regression()
    env = "test_each_send_reads_once"
    trainer = Trainer(
        task.train,
        task.update_dict,
        plugins={"visdom": {"server": SERVER_URL, "port": visdom_server, "env": env, "every_iterations": 2}},
    )
    trainer.run(max_epochs=2)
    # 3 logged outputs and 1 epoch mean an epoch, 2 items each: 16 values in as many calls as sends.
    assert sum(sends) == 8 and len(reads) == len(sends) and sum(reads) == 16
    history = trainer.training_history
    assert plotted(visdom_server, env, "training/iteration/mse") == {
        "x": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        "y": [float(history[i]["mse"]) for i in (1, 3, 5, 7, 9, 11)],
    }


def test_points_before_an_exception_are_flushed(only_visdom: None, visdom_server: int) -> None:
    env = "test_exception"
    task = Regression()

    def failing(batch: Any) -> float:
        if len(trainer.training_history) == 3:
            raise RuntimeError("boom")
        return task.update(batch)

    trainer = Trainer(
        task.train,
        failing,
        plugins={"visdom": {"server": SERVER_URL, "port": visdom_server, "env": env, "every_iterations": 1}},
    )
    plugin = trainer.plugins["visdom"]
    threads: list[threading.Thread] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: threads.append(plugin.sender_thread))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(max_epochs=1)
    assert threads[0].name == THREAD_NAME
    assert not threads[0].is_alive()
    assert plotted(visdom_server, env, "training/iteration") == {
        "x": [1.0, 2.0, 3.0],
        "y": list(trainer.training_history),
    }


# Every socket.connect of the process while `_connects` is not None: the thread that made it.
_connects: list[str] | None = None


def _audit(event: str, args: Any) -> None:
    if event == "socket.connect" and _connects is not None:
        _connects.append(threading.current_thread().name)


def test_the_training_thread_does_no_network_io(only_visdom: None, visdom_server: int) -> None:
    global _connects
    if not getattr(sys, "_ignite_visdom_audit", False):
        sys.addaudithook(_audit)  # cannot be removed; idle while _connects is None
        sys._ignite_visdom_audit = True  # type: ignore[attr-defined]
    task = Regression()
    trainer = Trainer(
        task.train,
        task.update,
        task.valid,
        task.evaluate,
        plugins={"visdom": {"server": SERVER_URL, "port": visdom_server, "env": "test_io", "every_iterations": 1}},
    )
    _connects = []
    try:
        trainer.run(max_epochs=2)
        seen = list(_connects)
    finally:
        _connects = None
    # Every connection of the run (the env, the iteration, epoch-mean and validation series)
    # comes from the sender thread.
    assert seen and set(seen) == {THREAD_NAME}, seen
    assert len(plotted(visdom_server, "test_io", "training/iteration")["x"]) == 12
    assert windows(visdom_server, "test_io") >= {"training/iteration", "training/epoch_mean", "validation/mean"}


class _StubHandler(BaseHTTPRequestHandler):
    """Answers every POST with HTTP 500 and the body Tornado gives it; records the paths."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = b"<html><title>500: Internal Server Error</title><body>500: Internal Server Error</body></html>"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[ThreadingHTTPServer]:
    """A plain HTTP server on loopback that fails every request: a real Visdom server does not
    produce HTTP errors on demand."""
    server = ThreadingHTTPServer((HOST, 0), _StubHandler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_http_error_warns_once_naming_the_answer(
    only_visdom: None, stub_server: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = stub_server.server_address[1]
    trainer = Trainer([1.0, 2.0], lambda batch: batch, plugins={"visdom": {"server": SERVER_URL, "port": port}})
    with caplog.at_level(logging.WARNING):
        trainer.run(max_epochs=2)
    assert trainer.current_epoch == 2
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and "500: Internal Server Error" in logged[0], logged
    assert "'training/epoch_mean'" in logged[0]
    # visdom's client creates the env, the first plot fails: then the plugin is quiet.
    assert stub_server.requests == ["/env/main", "/events"]  # type: ignore[attr-defined]


def test_unreachable_server_warns_once_and_training_completes(
    only_visdom: None, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    task = Regression()
    trainer = Trainer(
        task.train,
        task.update,
        task.valid,
        task.evaluate,
        plugins={"visdom": {"server": SERVER_URL, "port": port, "every_iterations": 1}},
    )
    plugin = trainer.plugins["visdom"]
    threads: list[threading.Thread] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: threads.append(plugin.sender_thread))
    with caplog.at_level(logging.WARNING):
        trainer.run(max_epochs=3)

    assert len(trainer.training_history) == 18 and trainer.current_epoch == 3
    assert not threads[0].is_alive() and plugin.sender_thread is None
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in logged] == ["ignite.visdom"], [r.getMessage() for r in logged]
    message = logged[0].getMessage()
    assert f"{SERVER_URL}:{port}" in message
    assert "[Errno 111] Connection refused" in message
    assert "make visdom" in message and "from visdom.server.run_server import main; main()" in message
    assert "plugins={'visdom': False}" in message
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Exception in user code" not in out + err


def test_a_server_that_dies_mid_run_warns_once_and_training_completes(
    only_visdom: None, tmp_path: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    env = "test_dies"
    task = Regression()
    with running_server(tmp_path) as (port, process):
        reader(port)  # made before the run: its constructor logs warnings of its own
        trainer = Trainer(
            task.train,
            task.update,
            task.valid,
            task.evaluate,
            plugins={
                "visdom": {"server": SERVER_URL, "port": port, "env": env, "every_iterations": 1, "send_every_secs": 0.05}
            },
        )
        plugin = trainer.plugins["visdom"]
        threads: list[threading.Thread] = []
        received: list[list[float]] = []

        def kill_the_server_once_it_holds_points(trainer: Trainer) -> None:
            if trainer.current_iteration != 3:
                return
            threads.append(plugin.sender_thread)
            # The server holds the first batch (a real state, polled with a deadline); then it dies.
            deadline = time.monotonic() + 60
            while env not in reader(port).get_env_list() or "training/iteration" not in windows(port, env):
                assert time.monotonic() < deadline, "the first batch did not reach the server within 60 s"
                threading.Event().wait(0.02)
            received.append(plotted(port, env, "training/iteration")["x"])
            process.kill()
            process.wait(timeout=30)

        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, kill_the_server_once_it_holds_points)
        caplog.clear()  # the reader's making is not the run's
        with caplog.at_level(logging.WARNING):
            trainer.run(max_epochs=3)

    assert received and received[0][0] == 1.0  # plotted while the server lived
    assert len(trainer.training_history) == 18 and trainer.current_epoch == 3
    assert not threads[0].is_alive() and plugin.sender_thread is None
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in logged] == ["ignite.visdom"], [r.getMessage() for r in logged]
    message = logged[0].getMessage()
    assert f"Cannot plot to the Visdom server at {SERVER_URL}:{port}" in message
    assert "nothing more is plotted in this run; training continues" in message
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


class EpochMetrics:
    """A metric plugin: from epoch 2 on, sets two metrics at EPOCH_COMPLETED, before the loggers."""

    ignite_phase = "observe"

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {"accuracy": [], "f1": []}

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        if trainer.current_epoch >= 2:
            for offset, name in enumerate(("accuracy", "f1")):
                value = 0.5 + 0.1 * trainer.current_epoch + 0.01 * offset
                trainer.metrics[name] = value
                self.values[name].append(value)


def test_metrics_one_window_each_at_epoch_completed(only_visdom: None, visdom_server: int) -> None:
    env = "test_metrics"
    task = Regression()
    trainer = Trainer(
        task.train, task.update, plugins={"visdom": {"server": SERVER_URL, "port": visdom_server, "env": env}}
    )
    metrics = trainer.register_plugin(EpochMetrics(), name="metrics_for_test")
    trainer.run(max_epochs=4)

    # Epoch 1 had no metrics: nothing plotted for it.
    assert windows(visdom_server, env) == {"training/epoch_mean", "metrics/accuracy", "metrics/f1"}
    for name in ("accuracy", "f1"):
        assert plotted(visdom_server, env, f"metrics/{name}") == {"x": [2.0, 3.0, 4.0], "y": metrics.values[name]}


def test_silent_server_gives_up_after_flush_timeout(only_visdom: None, caplog: pytest.LogCaptureFixture) -> None:
    # A socket that listens but never accepts: requests connect, then wait for an answer.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind((HOST, 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        task = Regression()
        trainer = Trainer(
            task.train,
            task.update,
            plugins={"visdom": {"server": SERVER_URL, "port": port, "every_iterations": 1, "flush_timeout_secs": 0.2}},
        )
        plugin = trainer.plugins["visdom"]
        threads: list[threading.Thread] = []
        trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: threads.append(plugin.sender_thread))
        with caplog.at_level(logging.WARNING):
            trainer.run(max_epochs=2)
            assert len(trainer.training_history) == 12
            assert plugin.sender_thread is None
    # Closing the listener resets the pending connection: the abandoned thread's request fails.
    threads[0].join(timeout=30)
    assert not threads[0].is_alive()
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "flush_timeout_secs=0.2s" in logged[0].getMessage()
    assert f"{SERVER_URL}:{port}" in logged[0].getMessage()


RANK_SCRIPT = """
import json, os, sys, threading
import torch.distributed as dist

rank, world_size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
server_port = int(os.environ["VISDOM_TEST_PORT"])
dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
connects = []
sys.addaudithook(lambda event, args: connects.append(event) if event == "socket.connect" else None)

from ignite import Trainer, TrainingEvents

training = [float(10 * rank + i) for i in range(3)]   # rank 0: 0 1 2, rank 1: 10 11 12
validation = [100.0 + rank]
trainer = Trainer(training, lambda batch: batch, validation, lambda batch: batch,
                  plugins={"visdom": {"server": "http://127.0.0.1", "port": server_port, "env": "test_ranks",
                                      "every_iterations": 1}})
threads = []
trainer.add_event_handler(TrainingEvents.TRAINING_STARTED,
                          lambda t: threads.append(t.plugins["visdom"].sender_thread is not None))
trainer.run(max_epochs=2)
with open(os.path.join(folder, f"{rank}.json"), "w") as f:
    json.dump({"connects": len(connects), "thread": threads[0]}, f)
dist.barrier()  # neither rank tears the group down while the other still uses it
dist.destroy_process_group()
"""


def test_only_rank_0_plots_the_means_reduced_over_ranks(
    only_visdom: None, visdom_server: int, tmp_path: Any, ignite_ranks: IgniteRanks
) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    ignite_ranks(script, timeout=120, env={"VISDOM_TEST_PORT": str(visdom_server)})
    rank0, rank1 = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1))
    assert rank0["thread"] is True and rank0["connects"] > 0
    assert rank1 == {"thread": False, "connects": 0}
    assert plotted(visdom_server, "test_ranks", "training/iteration") == {
        "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "y": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    }
    assert plotted(visdom_server, "test_ranks", "training/epoch_mean") == {"x": [1.0, 2.0], "y": [6.0, 6.0]}
    assert plotted(visdom_server, "test_ranks", "validation/mean") == {"x": [1.0, 2.0], "y": [100.5, 100.5]}


def test_autoloaded_with_defaults_from_environment(
    monkeypatch: pytest.MonkeyPatch, visdom_server: int, ignite_autoload: IgniteAutoload
) -> None:
    ignite_autoload("visdom")
    monkeypatch.setenv("VISDOM_SERVER_URL", SERVER_URL)
    monkeypatch.setenv("VISDOM_PORT", str(visdom_server))
    task = Regression()
    trainer = Trainer(task.train * 20, task.update)  # 120 iterations an epoch
    plugin = trainer.plugins["visdom"]
    assert isinstance(plugin, VisdomLogger)
    assert (
        plugin.server,
        plugin.port,
        plugin.env,
        plugin.every_iterations,
        plugin.optimizer,
        plugin.send_every_secs,
        plugin.flush_timeout_secs,
    ) == (SERVER_URL, visdom_server, "main", 100, None, 2.0, 5.0)
    trainer.run(max_epochs=2)
    history = trainer.training_history
    assert plotted(visdom_server, "main", "training/iteration") == {"x": [100.0, 200.0], "y": [history[99], history[199]]}
    assert plotted(visdom_server, "main", "training/epoch_mean")["y"] == [history.run_mean(0), history.run_mean(1)]


def test_server_and_port_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISDOM_SERVER_URL", raising=False)
    monkeypatch.delenv("VISDOM_PORT", raising=False)
    assert VisdomLogger().url == "http://localhost:8097"
    assert VisdomLogger(server="myhost:9000").url == "http://myhost:9000"
    assert VisdomLogger(server="https://example.org/", port=443).url == "https://example.org:443"
    monkeypatch.setenv("VISDOM_SERVER_URL", "http://10.0.0.7")
    monkeypatch.setenv("VISDOM_PORT", "8111")
    assert VisdomLogger().url == "http://10.0.0.7:8111"
    assert VisdomLogger(server="http://other", port=1234).url == "http://other:1234"


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"every_iterations": 0}, ValueError, "every_iterations"),
        ({"every_iterations": 2.5}, TypeError, "every_iterations must be a positive int"),
        ({"env": ""}, ValueError, "env"),
        ({"port": "8097"}, TypeError, "port"),
        ({"port": 70000}, ValueError, "port"),
        ({"server": "http://h/path"}, ValueError, "server"),
        ({"server": "http://h:1", "port": 2}, ValueError, "different ports"),
        ({"flush_timeout_secs": -1}, ValueError, "flush_timeout_secs"),
        ({"flush_timeout_secs": float("inf")}, ValueError, "flush_timeout_secs"),
        ({"send_every_secs": 0}, ValueError, "send_every_secs"),
        ({"send_every_secs": "2"}, ValueError, "send_every_secs"),
        ({"send_every_secs": float("nan")}, ValueError, "send_every_secs"),
        ({"optimizer": object()}, TypeError, "optimizer"),
    ],
)
def test_invalid_options_name_the_option(options: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        VisdomLogger(**options)


def test_invalid_port_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISDOM_PORT", "eighty")
    with pytest.raises(ValueError, match="VISDOM_PORT='eighty'"):
        VisdomLogger()


def test_unknown_option_is_reported_by_the_core(only_visdom: None) -> None:
    task = Regression()
    with pytest.raises(PluginError, match="Did you mean 'every_iterations'"):
        Trainer(task.train, task.update, plugins={"visdom": {"every_iteration": 3}})


@pytest.mark.parametrize("old, new", [("log_every", "every_iterations"), ("flush_timeout", "flush_timeout_secs")])
def test_former_option_names_are_refused_naming_the_new_one(only_visdom: None, old: str, new: str) -> None:
    task = Regression()
    with pytest.raises(PluginError, match=f"has no option '{old}'. Did you mean '{new}'\\? \\('{old}' was renamed"):
        Trainer(task.train, task.update, plugins={"visdom": {old: 3}})


def test_visdom_is_imported_lazily() -> None:
    code = textwrap.dedent(
        """
        import sys
        import ignite_visdom
        ignite_visdom.VisdomLogger(port=1)
        print("visdom" in sys.modules, "requests" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_plugin_is_registered_as_visdom_entry_point() -> None:
    assert "visdom" in {entry_point.name for entry_point in entry_points(group="ignite.plugins")}
    assert ignite_visdom.__all__ == ["VisdomLogger"]
