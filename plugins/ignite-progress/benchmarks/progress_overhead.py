"""Per-iteration cost of the progress plugin on a small model, by hand:

    .venv/bin/python plugins/ignite-progress/benchmarks/progress_overhead.py [--every-iterations N ...]

Trains a 64-32-10 MLP with SGD on one fixed batch of 32 (so the data loader costs nothing),
alternating runs without the plugin, with it drawing (``disable=False``, to os.devnull: tqdm
redraws at most every 0.1 s whatever the file) and with it silent (``disable=None`` on a file
that is not a terminal), and prints the best (minimum) CPU us/iteration of the iteration loop
of each. The difference is within the noise of a busy machine, so it also times the plugin's
hook alone: on a trivial update function (hot caches, no noise), and between real MLP steps
(the span from the end of one step to the start of the next, with and without the plugin).
"""

from __future__ import annotations

import argparse
import os
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
    """CPU us per iteration of the training loop alone (ad-hoc handlers run after plugin hooks
    at TRAINING_EPOCH_STARTED and before them at TRAINING_EPOCH_COMPLETED)."""
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))
    trainer = Trainer([batch] * iterations, update, plugins=plugins)
    marks: list[float] = []
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_STARTED, lambda _: marks.append(time.process_time()))
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda _: marks.append(time.process_time()))
    trainer.run(1)
    return (marks[1] - marks[0]) / iterations * 1e6


def hook_span(plugins: dict, iterations: int) -> float:
    """Mean us from the end of one MLP step to the start of the next (the plugin's hook, the
    loop and the data iterator), spans over 1 ms (the process was descheduled) left out.
    Unlike a whole step's time, this short span is hardly touched by the machine's noise, yet it
    sees the plugin's code as it runs between real steps, with cold caches."""
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


def compare_spans(configs: dict, iterations: int, repeats: int) -> None:
    best = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, plugins in configs.items():
            best[name] = min(best[name], hook_span(plugins, iterations))
    base = best["without"]
    print(f"MLP, span from the end of one step to the start of the next: without the plugin {base:.2f} us")
    for name, value in best.items():
        if name != "without":
            print(f"  {name:<34s} {value:8.2f} us  overhead {value - base:+6.2f} us/it")


def compare(label: str, configs: dict, iterations: int, repeats: int, update_factory) -> None:
    best = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, plugins in configs.items():
            best[name] = min(best[name], time_run(plugins, iterations, update_factory()))
    base = best["without"]
    print(f"{label}: without the plugin {base:.2f} us/it")
    for name, value in best.items():
        if name != "without":
            print(
                f"  {name:<34s} {value:8.2f} us/it  overhead {value - base:+6.2f} us/it ({(value - base) / base:+.2%})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-iterations", type=int, nargs="*", default=[1, 10, 200])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugin under test
    torch.set_num_threads(1)
    with open(os.devnull, "w") as devnull:
        configs: dict = {"without": {}}
        for every in args.every_iterations:
            configs[f"drawing, every_iterations={every}"] = {
                "progress": {"file": devnull, "disable": False, "every_iterations": every}
            }
        configs["silent (disable=None, not a tty)"] = {"progress": {"file": devnull}}
        time_run({}, 500, make_update())  # warm-up
        compare("64-32-10 MLP, SGD, batch 32", configs, args.iterations, args.repeats, make_update)
        compare("trivial update (returns a float)", configs, 100_000, args.repeats, lambda: lambda batch: 0.5)
        compare_spans(configs, args.iterations, args.repeats)


if __name__ == "__main__":
    main()
