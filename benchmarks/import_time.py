"""Import cost: ``import ignite`` beyond ``import torch``, and constructing a Trainer with every
installed plugin autoloaded. Each figure is the median over fresh processes.

Run by hand: ``.venv/bin/python benchmarks/import_time.py``. Also lists which heavy plugin
dependencies were imported by then (they should be imported lazily, at TRAINING_STARTED).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch
HEAVY = ("tensorboard", "torch.utils.tensorboard", "visdom", "tqdm", "matplotlib")
with_torch = [m for m in HEAVY if m in sys.modules]  # torch itself imports tqdm (torch.hub)
start = time.perf_counter()
import ignite
imported = time.perf_counter()
from ignite import Trainer
trainer = Trainer([1.0], lambda batch: batch)
constructed = time.perf_counter()
heavy = [m for m in HEAVY if m in sys.modules and m not in with_torch]
print(json.dumps({"import": imported - start, "construct": constructed - imported,
                  "plugins": sorted(trainer.plugins), "heavy": heavy, "with_torch": with_torch}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    arguments = parser.parse_args()
    results = [
        json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
        for _ in range(arguments.runs)
    ]
    print(f"median of {arguments.runs} fresh processes")
    print(f"import ignite after torch:              {statistics.median(r['import'] for r in results) * 1e3:7.1f} ms")
    print(f"Trainer() with installed plugins:        {statistics.median(r['construct'] for r in results) * 1e3:7.1f} ms")
    print(f"active plugins: {', '.join(results[0]['plugins']) or 'none'}")
    print(f"heavy modules imported by then, beyond torch's: {', '.join(results[0]['heavy']) or 'none'}")
    print(f"(imported by torch itself: {', '.join(results[0]['with_torch']) or 'none'})")


if __name__ == "__main__":
    main()
