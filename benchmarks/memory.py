"""Peak memory of long runs: does returning the loss tensor itself keep graphs alive?

Run by hand: ``.venv/bin/python benchmarks/memory.py``. Each case runs in a fresh process
(peak RSS is per process): 100,000 iterations of a small linear model whose update function
returns (a) ``loss.item()``, (b) the loss tensor itself, with its autograd graph, (c) a 1-D
tensor with a graph (stored detached, not as a float), and, for contrast, a plain list that
keeps the loss tensors with their graphs. Also prints the history's bytes per stored float.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = {
    "float": "loss.item()",
    "scalar tensor with graph": "loss",
    "1-D tensor with graph": "loss.reshape(1)",
}
# For contrast: a plain list that keeps the returned tensors with their graphs.
REFERENCE = "list keeping graphs (no Trainer)"
CASES[REFERENCE] = "loss"


def child(kind: str, iterations: int) -> None:
    import torch

    from ignite import Trainer

    torch.set_num_threads(1)
    model = torch.nn.Linear(64, 10)
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))

    def update(batch):
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        return eval(CASES[kind])

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == REFERENCE:
        kept = [update(batch) for _ in range(iterations)]
        stored = len(kept)
    else:
        trainer = Trainer([batch] * 1000, update)
        trainer.run(iterations // 1000)
        stored = len(trainer.training_history)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "stored": stored}))


def bytes_per_float() -> float:
    import tracemalloc

    from ignite import History

    history = History()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(100_000):
        if i % 1000 == 0:
            history.start_run()  # one run per epoch of 1,000 iterations
        history.append(float(i) + 0.5)
    history.start_run()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.iterations)
        return
    print(f"{arguments.iterations} iterations, Linear(64, 10), batch 32")
    print(f"{'update returns':<34}{'peak RSS MB':>12}{'growth MB':>11}")
    for kind in CASES:
        output = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--iterations", str(arguments.iterations)],
            capture_output=True, text=True, check=True,
        ).stdout
        result = json.loads(output)
        print(f"{kind:<34}{result['peak_kb'] / 1024:>12.1f}{(result['peak_kb'] - result['baseline_kb']) / 1024:>11.1f}")
    print(f"history bytes per stored float (finished runs of 1,000): {bytes_per_float():.1f}")


if __name__ == "__main__":
    main()
