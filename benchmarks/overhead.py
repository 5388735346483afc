"""Per-iteration overhead of the Trainer over a bare Python loop on the same data.

Run by hand: ``.venv/bin/python benchmarks/overhead.py`` (``make bench``). Prints, for a
trivial update function, the microseconds per iteration that the trainer adds with nothing
attached, 1 and 5 ad-hoc handlers, and 1 plugin. Each figure is the median of several rounds
measured side by side in one process; standard plugins found installed are blocked so that
only what is listed is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("IGNITE_DISABLE_PLUGIN_AUTOLOAD", "1")

from ignite import Trainer, TrainingEvents, hookimpl  # noqa: E402


class OnePlugin:
    @hookimpl
    def ignite_training_iteration_completed(self, trainer):
        pass


def update(batch):
    return batch


def handler(trainer):
    pass


def bare_loop(data, epochs):
    history = []
    append = history.append
    for _ in range(epochs):
        for batch in data:
            append(update(batch))


def trainer_run(data, epochs, handlers=0, plugin=False):
    trainer = Trainer(data, update)
    for _ in range(handlers):
        trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, handler)
    if plugin:
        trainer.register_plugin(OnePlugin(), name="one")
    return trainer.run, epochs


def measure(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    data = [1.0] * 1000
    epochs = arguments.iterations // len(data)
    iterations = epochs * len(data)
    cases = {"nothing attached": {}, "1 handler": {"handlers": 1}, "5 handlers": {"handlers": 5}, "1 plugin": {"plugin": True}}
    samples: dict[str, list[float]] = {name: [] for name in ["bare loop", *cases]}
    for _ in range(arguments.rounds):
        samples["bare loop"].append(measure(bare_loop, data, epochs))
        for name, options in cases.items():
            run, epochs_ = trainer_run(data, epochs, **options)
            samples[name].append(measure(run, epochs_))
    bare = statistics.median(samples["bare loop"]) / iterations * 1e6
    print(f"{iterations} iterations, median of {arguments.rounds} rounds, trivial update function")
    print(f"{'case':<20}{'us/iteration':>14}{'overhead us':>14}")
    print(f"{'bare loop':<20}{bare:>14.3f}{'':>14}")
    for name in cases:
        per = statistics.median(samples[name]) / iterations * 1e6
        print(f"{name:<20}{per:>14.3f}{per - bare:>14.3f}")


if __name__ == "__main__":
    main()
