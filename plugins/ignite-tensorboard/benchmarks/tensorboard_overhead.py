"""Per-iteration cost of the tensorboard plugin on a small model, by hand:

    .venv/bin/python plugins/ignite-tensorboard/benchmarks/tensorboard_overhead.py [--every-iterations N ...]

Trains a 64-32-10 MLP with SGD on one fixed batch of 32 (so the data loader costs nothing),
alternating runs without and with the plugin, and prints the best (minimum over repeats) CPU
us/iteration of the iteration loop of each (opening and closing the writer, once per run, are
not counted) and the difference. CPU time of the whole process counts the work of
SummaryWriter's writing thread too, and is steadier than wall time on a shared machine.

A difference under ~1 us/iteration is within the noise of a busy machine, so the script also
measures the two parts of the cost separately and adds them up for each every_iterations: an
iteration that is not logged (the span from the end of one MLP step to the start of the next,
with and without the plugin), and one logged value (with every_iterations=1 on the MLP).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

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


def time_run(plugins: dict, iterations: int, update) -> float:
    """CPU us per iteration of the training loop alone: ad-hoc handlers run after plugin hooks
    at TRAINING_EPOCH_STARTED and before them at TRAINING_EPOCH_COMPLETED."""
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))
    trainer = Trainer([batch] * iterations, update, plugins=plugins)
    marks: list[float] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, lambda _: marks.append(time.process_time()))
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda _: marks.append(time.process_time()))
    trainer.run(1)
    return (marks[1] - marks[0]) / iterations * 1e6


def hook_span(plugins: dict, iterations: int) -> float:
    """Mean us from the end of one MLP step to the start of the next (the plugin's hook, the
    loop and the data iterator), spans over 1 ms (the process was descheduled) left out: the
    plugin's code as it runs between real steps, with cold caches, hardly touched by noise."""
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))
    trainer = Trainer([batch] * iterations, make_update(), plugins=plugins)
    clock = time.perf_counter
    ended: list[float] = []
    spans: list[float] = []
    # At COMPLETED events ad-hoc handlers run before plugin hooks; at STARTED ones after them.
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda _: ended.append(clock()))
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda _: spans.append(clock() - ended[-1]) if ended else None
    )
    trainer.run(1)
    kept = [span for span in spans if span < 1e-3]
    return sum(kept) / len(kept) * 1e6


def best_pair(options: dict, iterations: int, repeats: int, update_factory) -> tuple[float, float]:
    without = with_plugin = float("inf")
    for _ in range(repeats):  # alternate, so that both see the same load; keep the best of each
        without = min(without, time_run({}, iterations, update_factory()))
        with_plugin = min(with_plugin, time_run({"tensorboard": options}, iterations, update_factory()))
    return without, with_plugin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-iterations", type=int, nargs="*", default=[10, 50, 100])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugin under test
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as log_dir:
        time_run({}, 500, make_update())  # warm-up, and the lazy imports
        time_run({"tensorboard": {"dir": log_dir}}, 500, make_update())

        without = skipped = float("inf")
        for _ in range(args.repeats):
            without = min(without, hook_span({}, args.iterations))
            skipped = min(
                skipped, hook_span({"tensorboard": {"dir": log_dir, "every_iterations": 10**9}}, args.iterations)
            )
        hook = skipped - without
        print(f"an iteration not logged, between MLP steps: {hook:+.3f} us")
        base, every = best_pair({"dir": log_dir, "every_iterations": 1}, args.iterations, args.repeats, make_update)
        value = every - base - hook
        print(
            f"MLP step without the plugin: {base:.1f} us; with every_iterations=1: {every:.1f} us "
            f"-> one logged value {value:.1f} us"
        )
        for every_iterations in args.every_iterations:
            estimate = hook + value / every_iterations
            without, with_plugin = best_pair(
                {"dir": log_dir, "every_iterations": every_iterations}, args.iterations, args.repeats, make_update
            )
            print(
                f"every_iterations={every_iterations:<5d} estimate {estimate:5.2f} us/it ({estimate / base:.2%})   "
                f"measured: without {without:6.1f}, with {with_plugin:6.1f}, "
                f"difference {with_plugin - without:+5.2f} us/it"
            )


if __name__ == "__main__":
    main()
