"""Per-iteration cost of the mlflow plugin on a small model, by hand:

    .venv/bin/python plugins/ignite-mlflow/benchmarks/mlflow_overhead.py [--every-iterations N ...]
        [--tracking-uri URI]

Starts an ``mlflow server`` on 127.0.0.1 (SQLite store in a temporary folder) unless
``--tracking-uri`` names one, then trains a 64-32-10 MLP with SGD on one fixed batch of 32,
alternating runs without and with the plugin, and prints for the iteration loop of each (the
run's start and its end-of-run flush are not counted) the best over repeats of:

* the training thread's CPU time per iteration (``time.thread_time``): what the plugin costs
  the loop itself (a queue append per logged iteration, the epoch means);
* the whole process's CPU time per iteration: that plus the sender thread's work (reading the
  outputs, building and sending the ``log_batch`` requests), which competes for the cores and
  the GIL;
* the wall time per iteration.

One more case logs every iteration to a server that never answers (a socket that listens and
never accepts): the sender thread then waits on the network and does no work, so the
difference is what queueing costs the training thread alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch

from ignite import Trainer, TrainingEvents


def make_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()

    def update(batch):
        inputs, targets = batch
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return update


def time_run(plugins: dict, iterations: int) -> tuple[float, float, float]:
    """(training thread CPU, process CPU, wall) us per iteration of the loop alone."""
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))
    trainer = Trainer([batch] * iterations, make_update(), plugins=plugins)
    marks: list[tuple[float, float, float]] = []

    def mark(_: Trainer) -> None:
        marks.append((time.thread_time(), time.process_time(), time.perf_counter()))

    # Ad-hoc handlers run after plugin hooks at TRAINING_EPOCH_STARTED, before them at *_COMPLETED.
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, mark)
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, mark)
    trainer.run(1)
    return tuple((end - start) / iterations * 1e6 for start, end in zip(*marks))  # type: ignore[return-value]


def hook_alone(options: dict, calls: int = 100_000, repeats: int = 5) -> float:
    """Training-thread CPU us of one call of the plugin's iteration hook (what a logged
    iteration costs the loop, without the trainer's dispatch), called in a loop from a handler."""
    trainer = Trainer([1.0] * 2, float, plugins={"mlflow": options})
    best: list[float] = []

    def measure(trainer: Trainer) -> None:
        if trainer.current_iteration == 1:
            hook = trainer.plugins["mlflow"].ignite_training_iteration_completed
            for _ in range(repeats):
                start = time.thread_time()
                for _ in range(calls):
                    hook(trainer)
                best.append((time.thread_time() - start) / calls * 1e6)

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, measure)
    trainer.run(1)
    return min(best)


def start_server(folder: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", f"{folder}/artifacts", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-iterations", type=int, nargs="*", default=[100, 10, 1])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()
    os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugin under test
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        server, uri = start_server(folder) if args.tracking_uri is None else (None, args.tracking_uri)
        try:
            options = {"tracking_uri": uri, "experiment": f"overhead-{time.time_ns()}"}
            time_run({}, 300)  # warm-up, and the lazy imports (mlflow's too)
            time_run({"mlflow": options}, 300)
            silent = socket.socket()
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            # Its runs end with the flush-timeout warning: expected here.
            logging.getLogger("ignite.mlflow").setLevel(logging.ERROR)
            blocked = {"tracking_uri": f"http://127.0.0.1:{silent.getsockname()[1]}", "flush_timeout_secs": 0}
            cases = [("without the plugin", {})] + [
                (f"every_iterations={n}", {"mlflow": {**options, "every_iterations": n}}) for n in args.every_iterations
            ]
            cases.append(("1, sender blocked", {"mlflow": {**blocked, "every_iterations": 1}}))
            best = {name: (float("inf"),) * 3 for name, _ in cases}
            for _ in range(args.repeats):  # alternate, so that all see the same load; keep the best of each
                for name, plugins in cases:
                    best[name] = tuple(map(min, best[name], time_run(plugins, args.iterations)))  # type: ignore[assignment]
            base = best["without the plugin"]
            print(f"{'us/iteration':24s} {'training thread':>16s} {'process CPU':>12s} {'wall':>8s}")
            for name, _ in cases:
                row = best[name]
                extra = (
                    ""
                    if name == cases[0][0]
                    else "   (+{:.2f} / +{:.2f} / +{:.2f})".format(*(a - b for a, b in zip(row, base)))
                )
                print(f"{name:24s} {row[0]:16.2f} {row[1]:12.2f} {row[2]:8.2f}{extra}")
            print(
                f"the iteration hook alone (queue one output): {hook_alone({**blocked, 'every_iterations': 1}):.2f} us"
            )
            silent.close()
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(60)


if __name__ == "__main__":
    main()
