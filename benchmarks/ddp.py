"""DDP throughput on 2 CPU ranks: the Trainer against a hand-written DDP loop, and the Trainer
with every standard plugin installed and active against none.

Run by hand from the repository root::

    .venv/bin/python benchmarks/ddp.py [--iterations 400] [--rounds 7]

Not already a rank, the script launches itself with ``torchrun --nproc_per_node=2`` (gloo on
127.0.0.1, one OMP thread per rank). Every rank trains the same DistributedDataParallel MLP
256-256-10 (cross-entropy, SGD with momentum) on synthetic data, batch 64, drawn through one
DataLoader with a shuffling DistributedSampler; the update function is shared, so the variants
differ only in the loop around it:

* ``hand loop``: ``sampler.set_epoch(epoch)``, ``for batch in loader: losses.append(update(batch))``;
* ``trainer``: ``Trainer(loader, update).run(epochs)`` with plugin autoload off
  (``IGNITE_DISABLE_PLUGIN_AUTOLOAD=1``), i.e. the core alone (its per-iteration stop vote included);
* ``trainer + plugins``: autoload on, and every standard plugin found installed configured to be
  active (early_stopping, lr_reduction, tensorboard, progress to /dev/null, checkpoint every epoch,
  visdom against a local server this script starts when visdom is installed).

Each round times every variant once (in rotating order) between two barriers; one warm-up round
is not counted. Rank 0 prints the median iterations/s of each, the wall and CPU (all threads of
the process) milliseconds per iteration, and the ratios: of the medians, the median of the
per-round ratios (less sensitive to load drifting over the benchmark), and of CPU time.

Diagnosis options: ``--without-vote`` adds a trainer without the stop vote (a private
override, for measurement only), ``--vote-every N`` one that votes every N iterations
(``IGNITE_STOP_VOTE_EVERY``; the default is 32), ``--only NAMES`` activates only some plugins,
``--profile VARIANT`` prints rank 0's
cProfile of that variant.

Measured on the 2-core development machine (November 2026, torch 2.13): with a vote on every
iteration, trainer / hand loop was 0.78-0.89, the whole gap in the vote (``--without-vote``:
1.00-1.03; ``--vote-every 16``: 0.95-0.98): the collectives' gloo threads compete with 2 ranks
for 2 cores. With the vote every 32 iterations (the default since), see the closing notes and
the README for the current figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _torchrun import free_port, run_as_two_ranks  # benchmarks/ is the script's folder

HIDDEN = 256
BATCH = 64


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=400, help="iterations per rank per timed run (default 400)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs the iterations are split into (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7) after one warm-up round")
    parser.add_argument("--no-plugins", action="store_true", help="skip the 'trainer + plugins' variant")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated plugins to activate in 'trainer + plugins' (default: all installed)",
    )
    parser.add_argument("--no-visdom-server", action="store_true", help="do not start a local Visdom server")
    parser.add_argument("--json", help="also write the results to this file (rank 0)")
    parser.add_argument(
        "--without-vote",
        action="store_true",
        help="diagnosis: add a variant 'trainer, no vote' whose trainer skips the per-iteration stop vote "
        "(a private override: terminate() then stops only the rank that calls it)",
    )
    parser.add_argument(
        "--vote-every",
        type=int,
        metavar="N",
        help="diagnosis: add a variant whose trainer runs the stop vote every N iterations only (a private override)",
    )
    parser.add_argument(
        "--profile", metavar="VARIANT", help="cProfile VARIANT's timed runs on rank 0 and print the top functions"
    )
    return parser.parse_args()


# -- the launcher ----------------------------------------------------------------------------


@contextlib.contextmanager
def _visdom_server(wanted: bool):
    """A Visdom server on 127.0.0.1 for the visdom plugin, if installed; yields its port."""
    try:
        import importlib.util

        installed = importlib.util.find_spec("visdom") is not None
    except ImportError:
        installed = False
    if not (wanted and installed):
        yield None
        return
    port = free_port()
    code = (
        "import sys; from visdom.server.run_server import main; "
        f"sys.argv = ['visdom', '-port', '{port}', '--hostname', '127.0.0.1', '-bind_local']; main()"
    )
    with tempfile.TemporaryDirectory() as home:
        server = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "HOME": home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if server.poll() is not None:
                    break
                time.sleep(0.2)
            else:
                print("visdom server did not start in 60 s: the visdom plugin will go quiet", file=sys.stderr)
            yield port if server.poll() is None else None
        finally:
            server.terminate()
            server.wait(timeout=30)


def launch(arguments: argparse.Namespace) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("IGNITE_DISABLE_PLUGINS", None)
    with _visdom_server(not (arguments.no_plugins or arguments.no_visdom_server)) as visdom_port:
        if visdom_port is not None:
            env["BENCH_VISDOM_PORT"] = str(visdom_port)
        with tempfile.TemporaryDirectory(prefix="ignite-bench-torchrun-") as logs:
            return run_as_two_ranks(__file__, env, logs)


# -- one rank -------------------------------------------------------------------------------


def rank_main(arguments: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    from ignite import Trainer
    from ignite._plugins import installed_plugin_names

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per_epoch = arguments.iterations // arguments.epochs
    iterations = per_epoch * arguments.epochs

    generator = torch.Generator().manual_seed(0)
    samples = per_epoch * BATCH * world
    dataset = TensorDataset(
        torch.randn(samples, HIDDEN, generator=generator), torch.randint(0, 10, (samples,), generator=generator)
    )
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    loss_function = torch.nn.functional.cross_entropy

    def update(batch: Any) -> float:
        x, y = batch
        optimizer.zero_grad()
        loss = loss_function(ddp(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def hand_loop() -> None:
        losses: list[float] = []
        for epoch in range(arguments.epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                losses.append(update(batch))

    def trainer_none() -> Callable[[], None]:
        os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        trainer = Trainer(loader, update)
        return lambda: trainer.run(arguments.epochs)

    scratch = tempfile.mkdtemp(prefix=f"ignite-bench-ddp-rank{rank}-")  # tensorboard and checkpoint files
    installed = set(installed_plugin_names())
    devnull = open(os.devnull, "w")
    visdom_port = os.environ.get("BENCH_VISDOM_PORT")
    counter = iter(range(10**9))

    def plugin_options() -> dict[str, Any]:
        run = next(counter)
        options: dict[str, Any] = {
            "early_stopping": {"patience": 10**6},
            "lr_reduction": {"optimizer": optimizer, "patience": 10**6},
            "tensorboard": {"dir": os.path.join(scratch, f"tb{run}"), "optimizer": optimizer},
            "progress": {"file": devnull},
            "checkpoint": {
                "dir": os.path.join(scratch, f"checkpoints{run}"),
                "objects": {"model": model, "optimizer": optimizer},
                "keep": 1,
            },
            "visdom": {"server": "http://127.0.0.1", "port": int(visdom_port), "env": "bench", "optimizer": optimizer}
            if visdom_port
            else False,
        }
        wanted = set(arguments.only.split(",")) if arguments.only else installed
        return {name: value if name in wanted else False for name, value in options.items() if name in installed}

    active_plugins: list[str] = []

    def trainer_plugins() -> Callable[[], None]:
        os.environ.pop("IGNITE_DISABLE_PLUGIN_AUTOLOAD", None)
        trainer = Trainer(loader, update, plugins=plugin_options())
        active_plugins[:] = sorted(trainer.plugins)
        return lambda: trainer.run(arguments.epochs)

    class TrainerWithoutVote(Trainer):
        def _join_process_group(self) -> None:  # diagnosis only: no StopVote
            pass

    def trainer_without_vote() -> Callable[[], None]:
        os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        trainer = TrainerWithoutVote(loader, update)
        return lambda: trainer.run(arguments.epochs)

    def trainer_vote_every() -> Callable[[], None]:
        os.environ["IGNITE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        trainer = Trainer(loader, update)

        def run() -> None:
            os.environ["IGNITE_STOP_VOTE_EVERY"] = str(arguments.vote_every)  # read as the run starts
            try:
                trainer.run(arguments.epochs)
            finally:
                del os.environ["IGNITE_STOP_VOTE_EVERY"]

        return run

    variants: dict[str, Callable[[], Callable[[], None]]] = {"hand loop": lambda: hand_loop, "trainer": trainer_none}
    if arguments.without_vote:
        variants["trainer, no vote"] = trainer_without_vote
    if arguments.vote_every:
        variants[f"vote every {arguments.vote_every}"] = trainer_vote_every
    if not arguments.no_plugins:
        variants["trainer + plugins"] = trainer_plugins
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    # CPU seconds of this process, all threads (gloo's included): less sensitive than wall time
    # to other processes competing for the cores, it shows the work each variant adds.
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    profiler = None
    if arguments.profile and rank == 0:
        import cProfile

        profiler = cProfile.Profile()
    for round_ in range(arguments.rounds + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            run = variants[name]()  # construction (plugin loading) is not timed
            profiling = profiler is not None and round_ and name == arguments.profile
            dist.barrier()
            start, cpu_start = time.perf_counter(), time.process_time()
            if profiling:
                profiler.runcall(run)
            else:
                run()
            dist.barrier()
            if round_:  # round 0 warms up: imports, allocator, plugin first-use costs
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - cpu_start)
    if profiler is not None:
        import pstats

        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)

    if rank == 0:
        report(arguments, names, iterations, seconds, cpu_seconds, active_plugins, visdom_port is not None)
    devnull.close()
    shutil.rmtree(scratch, ignore_errors=True)
    dist.barrier()
    dist.destroy_process_group()


def report(
    arguments: argparse.Namespace,
    names: list[str],
    iterations: int,
    seconds: dict[str, list[float]],
    cpu_seconds: dict[str, list[float]],
    active_plugins: list[str],
    visdom_server: bool,
) -> None:
    """Print (rank 0) the medians per variant and the ratios of interest."""
    rates = {name: [iterations / s for s in seconds[name]] for name in names}
    median = {name: statistics.median(rates[name]) for name in names}
    cpu_ms = {name: statistics.median(cpu_seconds[name]) / iterations * 1000 for name in names}
    print(
        f"DDP, 2 ranks x 1 thread, gloo; MLP {HIDDEN}-{HIDDEN}-10, batch {BATCH}; {iterations} iterations per "
        f"rank per run ({arguments.epochs} epochs); median of {arguments.rounds} rounds; rank 0's clock"
    )
    print(f"{'variant':<22}{'median it/s':>12}{'min':>9}{'max':>9}{'wall ms/it':>11}{'CPU ms/it':>10}")
    for name in names:
        print(
            f"{name:<22}{median[name]:>12.1f}{min(rates[name]):>9.1f}{max(rates[name]):>9.1f}"
            f"{1000 / median[name]:>11.3f}{cpu_ms[name]:>10.3f}"
        )
    pairs = [(name, "hand loop") for name in names if name not in ("hand loop", "trainer + plugins")]
    if "trainer + plugins" in names:
        pairs.append(("trainer + plugins", "trainer"))
    ratios: dict[str, dict[str, float]] = {}
    print(f"{'throughput ratio':<36}{'of medians':>11}{'per round':>11}{'CPU time':>10}")
    for name, base in pairs:
        label = f"{name} / {base}"
        ratios[label] = {
            "of_medians": median[name] / median[base],
            # The variants of one round ran back to back: the median of per-round ratios is
            # less sensitive to load that drifts over the whole benchmark.
            "per_round": statistics.median(a / b for a, b in zip(rates[name], rates[base])),
            # CPU time per iteration, base over variant: > 1 would mean the variant works less.
            "cpu": cpu_ms[base] / cpu_ms[name],
        }
        values = ratios[label]
        print(f"{label:<36}{values['of_medians']:>11.3f}{values['per_round']:>11.3f}{values['cpu']:>10.3f}")
    if active_plugins:
        print(f"active plugins: {', '.join(active_plugins)}" + ("" if visdom_server else " (no visdom server)"))
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(
                {
                    "iterations_per_second": rates,
                    "cpu_ms_per_iteration": cpu_ms,
                    "ratios": ratios,
                    "plugins": active_plugins,
                },
                file,
                indent=1,
            )


def main() -> int:
    arguments = _arguments()
    if "LOCAL_RANK" not in os.environ:
        return launch(arguments)
    rank_main(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
