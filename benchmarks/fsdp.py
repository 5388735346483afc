"""FSDP2 on 2 CPU ranks with checkpoints every N iterations: the Trainer and its checkpoint
plugin against a hand-written loop making the same saves with torch.distributed.checkpoint.

Run by hand from the repository root::

    .venv/bin/python benchmarks/fsdp.py [--widths 256 1024 2048] [--every 20] [--rounds 3]

Not already a rank, the script launches itself with ``torchrun --nproc_per_node=2`` (gloo on
127.0.0.1, one OMP thread per rank). For each width W, every rank trains the same MLP
W-W-W-10 (two hidden ReLU layers; each Linear ``fully_shard``-ed, then the root) with Adam,
so the state to save is the parameters and twice as much optimizer state, half of it on each
rank. Synthetic data, batch ``--batch``; the update function is shared and returns
``loss.detach()``. The variants differ only in the loop around it:

* ``hand loop``: a plain loop that, every ``--every`` iterations, saves as the plugin does:
  waits for the previous save's future, renames its temporary folder into place (rank 0) and
  prunes to ``keep=2``, then ``get_state_dict(model, optimizer)`` and
  ``torch.distributed.checkpoint.async_save`` into a fresh temporary folder, on a gloo group
  of its own (made once), through one ``DefaultStager`` kept for the run (its host copies are
  reused from save to save, as the plugin's are); the last future is waited for at the end;
* ``trainer``: ``Trainer(batches, update, plugins={"checkpoint": {"dir": ..., "objects":
  {"model": model, "optimizer": optimizer}, "every_iterations": N, "keep": 2}},
  profile=True)``, plugin autoload off (``IGNITE_DISABLE_PLUGIN_AUTOLOAD=1``), made once per
  width; each timed run is ``trainer.run(trainer.current_epoch + 1)``, one epoch more, as one
  long training goes on (the plugin makes its gloo group in its first run only);
* ``hand loop, no saves`` and ``trainer, no checkpoint``: the same without any save (what the
  saves cost each loop; ``--no-baselines`` leaves them out).

Each round times every variant once between two barriers, in an order rotated each round and
reversed every other round, with ``os.sync()`` (untimed) after each run; one warm-up round is
not counted. Rank 0 prints, per width, the median iterations/s of each variant, the ratio
trainer / hand loop (of the medians, the median of the per-round ratios, of CPU time) and the
training thread's pause per save, against the size of the state each rank saves: for the hand
loop, the wall time of each save call (the wait, rename and prune included) measured around
it; for the trainer, the checkpoint plugin's TRAINING_ITERATION_COMPLETED hook from
``trainer.profile_report()`` (only called on iterations that save, so its mean is the mean
pause per save; rank 1's is shown too). Also shown: the wait for the last save as a run ends
("end ms"); the wall time a save costs the run against the same loop without saves (the pause
plus what the writing threads take from the cores); CPU time per iteration (all threads of rank
0's process). After each run, rank 0 checks that ``keep`` complete DCP checkpoint folders and
nothing else (but the plugin's lock file) are left.

The checkpoint plugin needs to save sharded (DTensor) models with torch.distributed.checkpoint;
where it refuses them, the ``trainer`` variant is reported as failed with its error and the
others still run. ``--smoke`` runs tiny sizes in seconds (not part of ``make test``).
Diagnosis: ``--profile-saves`` prints a cProfile of rank 0's saves in each variant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _torchrun import run_as_two_ranks  # benchmarks/ is the script's folder

CLASSES = 10
KEEP = 2
DISTINCT_BATCHES = 8  # the batches cycle through these: data generation stays out of the picture


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--widths", "--width", type=int, nargs="+", default=[256, 1024, 2048], help="MLP widths (default 256 1024 2048)"
    )
    parser.add_argument("--every", type=int, default=20, help="save every N iterations (default 20)")
    parser.add_argument("--saves", type=int, default=3, help="saves per timed run: a run is saves x every iterations (default 3)")
    parser.add_argument("--batch", type=int, default=32, help="batch size per rank (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per width (default 3) after one warm-up round")
    parser.add_argument("--no-baselines", action="store_true", help="skip the variants without saves")
    parser.add_argument("--json", help="also write every number to this file (rank 0)")
    parser.add_argument(
        "--profile-saves",
        action="store_true",
        help="diagnosis: cProfile rank 0's saves in the timed runs (the hand loop's, and the checkpoint plugin's "
        "save() method, wrapped on its instance) and print the top functions by cumulative time",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, a few seconds: --widths 32 --every 2 --saves 2 --rounds 1"
    )
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.widths, arguments.every, arguments.saves, arguments.rounds = [32], 2, 2, 1
    for name in ("every", "saves", "batch", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if min(arguments.widths) < 1:
        parser.error("--widths must be positive")
    return arguments


# -- the launcher ----------------------------------------------------------------------------


def launch() -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IGNITE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with tempfile.TemporaryDirectory(prefix="ignite-bench-fsdp-") as scratch:
        env["BENCH_FSDP_DIR"] = scratch  # the checkpoints: one folder both ranks write into
        return run_as_two_ranks(__file__, env, os.path.join(scratch, "torchrun"))


# -- one rank -------------------------------------------------------------------------------


class HandSaver:
    """The baseline's saves: what the plugin does, written by hand with DCP's public API."""

    def __init__(self, dirname: str, model: Any, optimizer: Any, group: Any) -> None:
        self.dirname, self.model, self.optimizer, self.group = dirname, model, optimizer, group
        self.stager: Any = None  # one per run, as the plugin keeps one: its host copies are reused
        self.pending: tuple[Any, str, str] | None = None  # the save in flight: future, temporary and final folder
        self.written: list[str] = []
        self.pauses: list[float] = []
        self.end_seconds = 0.0

    def _complete(self) -> None:
        import torch.distributed as dist

        if self.pending is None:
            return
        future, temporary, final = self.pending
        self.pending = None
        future.result()
        if dist.get_rank() == 0:  # rank 0's future ends after every rank's shards and the metadata
            os.rename(temporary, final)
            self.written.append(final)
            while len(self.written) > KEEP:
                shutil.rmtree(self.written.pop(0))

    def save(self, iteration: int) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
        from torch.distributed.checkpoint.state_dict import get_state_dict

        start = time.perf_counter()
        self._complete()
        if self.stager is None:
            self.stager = DefaultStager(StagingOptions(False, False, False, False))  # async_save's default
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        final = os.path.join(self.dirname, f"checkpoint_i{iteration:08d}")
        temporary = final + ".tmp"
        future = dcp.async_save(
            {"model": model_state, "optimizer": optimizer_state},
            checkpoint_id=temporary,
            process_group=self.group,
            async_stager=self.stager,
        )
        self.pending = (future, temporary, final)
        self.pauses.append(time.perf_counter() - start)

    def finish(self) -> None:
        start = time.perf_counter()
        self._complete()
        if self.stager is not None:
            self.stager.close()
        self.end_seconds = time.perf_counter() - start


def _state_megabytes(model: Any, optimizer: Any) -> float:
    """This rank's share of the parameters and optimizer tensors (DTensors' local shards)."""
    import torch
    from torch.distributed.tensor import DTensor

    def local(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to_local() if isinstance(tensor, DTensor) else tensor

    total = sum(local(p).numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += local(value).numel() * value.element_size()
    return total / 2**20


def measure_width(arguments: argparse.Namespace, width: int, scratch: str, group: Any) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from ignite import Trainer

    rank = dist.get_rank()
    iterations = arguments.every * arguments.saves
    generator = torch.Generator().manual_seed(rank)
    distinct = [
        (
            torch.randn(arguments.batch, width, generator=generator),
            torch.randint(0, CLASSES, (arguments.batch,), generator=generator),
        )
        for _ in range(DISTINCT_BATCHES)
    ]
    batches = [distinct[i % DISTINCT_BATCHES] for i in range(iterations)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, CLASSES),
    )
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def update(batch: Any) -> torch.Tensor:
        x, y = batch
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    update(distinct[0])  # Adam's state exists from here: the size below is what every save holds
    megabytes = _state_megabytes(model, optimizer)
    counter = iter(range(10**9))

    def fresh_dir(kind: str) -> str:
        return os.path.join(scratch, f"w{width}-{kind}-{next(counter)}")

    problems: list[str] = []

    def check(dirname: str, checkpoints: list[str]) -> None:
        """The run left ``keep`` complete checkpoints and nothing else but the plugin's lock file
        (rank 0, after its run): no temporary folder, nothing pruned too early or too late."""
        entries = sorted(os.listdir(dirname))
        expected = min(KEEP, arguments.saves)
        if len(checkpoints) != expected or sorted(checkpoints) != [e for e in entries if not e.endswith(".lock")]:
            problems.append(f"{dirname}: expected {expected} checkpoints and nothing else, found {entries}")
        for name in checkpoints:
            if not os.path.isdir(os.path.join(dirname, name)) or ".metadata" not in os.listdir(os.path.join(dirname, name)):
                problems.append(f"{dirname}/{name}: not a DCP checkpoint folder (no .metadata)")

    pauses: dict[str, list[float]] = {"hand loop": [], "trainer": []}  # seconds, one per save
    end_seconds: dict[str, list[float]] = {"hand loop": [], "trainer": []}  # per run
    timing = [False]  # whether the run under way is a timed one (not the warm-up)
    profilers: dict[str, Any] = {}
    if arguments.profile_saves and rank == 0:
        import cProfile

        profilers = {"hand loop": cProfile.Profile(), "trainer": cProfile.Profile()}

    def profiled(name: str, save: Callable[..., Any]) -> Callable[..., Any]:
        if name not in profilers:
            return save

        def wrapper(*args: Any) -> Any:
            return profilers[name].runcall(save, *args) if timing[0] else save(*args)

        return wrapper

    def hand_loop(saving: bool) -> Callable[[], None]:
        saver = HandSaver(fresh_dir("hand"), model, optimizer, group) if saving else None
        save = profiled("hand loop", saver.save) if saver is not None else None

        def run() -> None:
            outputs = []  # kept, as the trainer keeps its history
            for iteration, batch in enumerate(batches, 1):
                outputs.append(update(batch))
                if save is not None and iteration % arguments.every == 0:
                    save(iteration)
            if saver is not None:
                saver.finish()
                if rank == 0:
                    check(saver.dirname, [os.path.basename(path) for path in saver.written])
                if timing[0]:
                    pauses["hand loop"].extend(saver.pauses)
                    end_seconds["hand loop"].append(saver.end_seconds)

        return run

    trainers: dict[bool, Any] = {}
    start_seconds: list[float] = []  # the checkpoint plugin's TRAINING_STARTED hook, per timed run

    def trainer(checkpointing: bool) -> Callable[[], None]:
        # One trainer per variant, every run continuing it by one epoch, as one long training
        # would: the plugin makes its gloo group at its first run only, as the hand loop does.
        if checkpointing not in trainers:
            plugins: dict[str, Any] = {}
            if checkpointing:
                plugins["checkpoint"] = {
                    "dir": fresh_dir("trainer"),
                    "objects": {"model": model, "optimizer": optimizer},
                    "every_iterations": arguments.every,
                    "keep": KEEP,  # prunes across runs too: each run checks that KEEP are left
                }
            instance = Trainer(batches, update, plugins=plugins, profile=True)  # both: alike but for the plugin
            if checkpointing and profilers:
                plugin = instance.plugins["checkpoint"]
                plugin.save = profiled("trainer", plugin.save)  # diagnosis only: its hooks call self.save
            trainers[checkpointing] = instance
        instance = trainers[checkpointing]

        def totals() -> dict[tuple[str, str, str], tuple[int, float]]:
            return {(row["kind"], row["name"], row["event"]): (row["calls"], row["total_s"]) for row in instance.profile_report()}

        def run() -> None:
            before = totals()
            instance.run(instance.current_epoch + 1)
            if not checkpointing:
                return
            dirname = instance.plugins["checkpoint"].dir
            if rank == 0:
                from ignite_checkpoint import list_checkpoints

                check(dirname, [os.path.basename(path) for path in list_checkpoints(dirname)])
            if timing[0]:
                after = totals()

                def delta(event: str) -> tuple[int, float]:
                    key = ("plugin", "checkpoint", event)
                    calls, total = after.get(key, (0, 0.0))
                    calls_before, total_before = before.get(key, (0, 0.0))
                    return calls - calls_before, total - total_before

                calls, total = delta("TRAINING_ITERATION_COMPLETED")
                if calls != arguments.saves:
                    raise RuntimeError(f"the checkpoint hook ran {calls} times, not {arguments.saves}")
                # The profile holds totals: one mean pause per run (every run makes as many saves).
                pauses["trainer"].append(total / calls)
                end_seconds["trainer"].append(delta("TRAINING_COMPLETED")[1])
                start_seconds.append(delta("TRAINING_STARTED")[1])

        return run

    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "hand loop": lambda: hand_loop(True),
        "trainer": lambda: trainer(True),
    }
    if not arguments.no_baselines:
        variants["hand loop, no saves"] = lambda: hand_loop(False)
        variants["trainer, no checkpoint"] = lambda: trainer(False)
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    # CPU seconds of this process, all threads (DCP's writer and gloo's included): less sensitive
    # than wall time to other processes competing for the cores, it shows the work each adds.
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for round_ in range(arguments.rounds + 1):
        timing[0] = round_ > 0  # round 0 warms up: first saves, DCP's planner caches, allocator
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        # A rotation keeps who runs after whom; reversed every other round, each variant follows
        # one that saves and one that does not, as often (what a save leaves behind is shared).
        for name in order if round_ % 2 else order[::-1]:
            if name in failed:
                continue
            run: Callable[[], None] | None = None
            error: str | None = None
            try:  # construction (plugin loading, a refusal of sharded models) is not timed
                run = variants[name]()
            except Exception as exception:
                error = f"{type(exception).__name__}: {exception}"
            # Every rank learns whether any rank could not build the variant, before any collective in it.
            errors: list[str | None] = [None] * dist.get_world_size()
            dist.all_gather_object(errors, error)
            if any(errors) or run is None:
                failed[name] = next(e for e in errors if e)
                continue
            dist.barrier()
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            dist.barrier()
            if round_:
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - cpu_start)
            # Untimed: the writeback of this variant's files (pruned folders too) does not spill into the next one's time.
            os.sync()
            dist.barrier()
    for name, profiler in profilers.items():
        import pstats

        print(f"\n-- width {width}, {name}: rank 0's saves in the timed runs, by cumulative time")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    # Each rank's own pauses: in the plugin's save, rank 1 also waits in the gather for rank 0.
    every_rank: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every_rank, {name: values for name, values in pauses.items() if values})
    for entry in os.listdir(scratch) if rank == 0 else ():
        if entry.startswith(f"w{width}-"):
            shutil.rmtree(os.path.join(scratch, entry), ignore_errors=True)
    return {
        "width": width,
        "state_mb_per_rank": megabytes,
        "iterations": iterations,
        "saves_per_run": arguments.saves,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "iterations_per_second": {name: [iterations / s for s in values] for name, values in seconds.items() if values},
        # hand loop: each save's pause; trainer: each run's mean pause (the profile keeps totals)
        "pause_s_per_save": {name: values for name, values in pauses.items() if values},
        "pause_s_per_save_by_rank": every_rank,
        "end_wait_s": {name: values for name, values in end_seconds.items() if values},
        "trainer_start_hook_s": start_seconds,
        "failed": failed,
        "problems": problems,
    }


def report(arguments: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Print (rank 0) the throughput and the pauses per width; return the ratios."""
    print(
        f"FSDP2, 2 ranks x 1 thread, gloo; MLP W-W-W-10, Adam, batch {arguments.batch}; a save every "
        f"{arguments.every} iterations, {arguments.saves} per run; median of {arguments.rounds} rounds; rank 0's clock"
    )
    summary: dict[str, Any] = {}
    for result in results:
        width, rates = result["width"], result["iterations_per_second"]
        print(f"\nwidth {width}: state {result['state_mb_per_rank']:.2f} MB per rank (parameters + Adam's 2 buffers)")
        print(
            f"{'variant':<26}{'median it/s':>12}{'min':>9}{'max':>9}{'CPU ms/it':>10}"
            f"{'pause ms/save':>15}{'max*':>9}{'rank 1':>9}{'end ms':>9}"
        )
        for name, values in rates.items():
            pauses = result["pause_s_per_save"].get(name)
            ends = result["end_wait_s"].get(name)
            other = result["pause_s_per_save_by_rank"][1].get(name) if len(result["pause_s_per_save_by_rank"]) > 1 else None
            pause = f"{statistics.fmean(pauses) * 1e3:>15.2f}{max(pauses) * 1e3:>9.2f}" if pauses else f"{'':>24}"
            pause += f"{statistics.fmean(other) * 1e3:>9.2f}" if other else f"{'':>9}"
            end = f"{statistics.median(ends) * 1e3:>9.2f}" if ends else ""
            cpu = statistics.median(result["cpu_seconds"][name]) / result["iterations"] * 1e3
            print(f"{name:<26}{statistics.median(values):>12.2f}{min(values):>9.2f}{max(values):>9.2f}{cpu:>10.2f}{pause}{end}")
        for name, error in result["failed"].items():
            print(f"{name:<26}failed: {error}")
        for problem in result["problems"]:
            print(f"PROBLEM: {problem}")
        ratios: dict[str, dict[str, float]] = {}
        pairs = [
            ("trainer", "hand loop"),
            ("trainer, no checkpoint", "hand loop, no saves"),
            ("hand loop", "hand loop, no saves"),
            ("trainer", "trainer, no checkpoint"),
        ]
        for name, base in pairs:
            if name in rates and base in rates:
                ratios[f"{name} / {base}"] = {
                    "of_medians": statistics.median(rates[name]) / statistics.median(rates[base]),
                    # The variants of one round ran back to back: less sensitive to drifting load.
                    "per_round": statistics.median(a / b for a, b in zip(rates[name], rates[base])),
                    # CPU time per iteration, base over variant: < 1 when the variant works more.
                    "cpu": statistics.median(result["cpu_seconds"][base]) / statistics.median(result["cpu_seconds"][name]),
                }
        for label, values in ratios.items():
            print(
                f"{label:<46} of medians {values['of_medians']:.3f}, per round {values['per_round']:.3f}, "
                f"CPU time {values['cpu']:.3f}"
            )
        # Wall time a save costs the run, against the same loop without saves: the pause on the
        # training thread plus what the writing threads take from the training's cores.
        lost: dict[str, float] = {}
        for name, base in (("hand loop", "hand loop, no saves"), ("trainer", "trainer, no checkpoint")):
            if name in rates and base in rates:
                per_iteration = 1 / statistics.median(rates[name]) - 1 / statistics.median(rates[base])
                lost[name] = per_iteration * result["iterations"] / result["saves_per_run"]
                print(f"{name}: the run's wall time per save over its loop without saves {lost[name] * 1e3:.1f} ms (medians)")
        if result["trainer_start_hook_s"]:
            start = statistics.median(result["trainer_start_hook_s"]) * 1e3
            print(f"trainer: the checkpoint plugin's TRAINING_STARTED hook {start:.2f} ms a run (median)")
        summary[str(width)] = {"ratios": ratios, "wall_s_lost_per_save": lost}
    print(
        "\npause ms/save: the mean over the timed runs' saves of the training thread's wall time in a save (trainer: "
        "its checkpoint hook, from Trainer(profile=True); hand loop: measured around each save); end ms: the wait "
        "for the last save as a run ends (median). * max: of each save (hand loop), of each run's mean (trainer). "
        "rank 1: its mean pause, on its own clock"
    )
    return summary


def rank_main(arguments: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    group = dist.new_group(backend="gloo")  # the hand loop's saves: off the training collectives' group
    scratch = os.environ.get("BENCH_FSDP_DIR") or tempfile.gettempdir()
    results = [measure_width(arguments, width, scratch, group) for width in arguments.widths]
    if dist.get_rank() == 0:
        ratios = report(arguments, results)
        if arguments.json:
            import platform

            with open(arguments.json, "w") as file:
                json.dump(
                    {
                        "arguments": vars(arguments),
                        "torch": torch.__version__,
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                        "results": results,
                        "ratios": ratios,
                    },
                    file,
                    indent=1,
                )
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    arguments = _arguments()
    if "LOCAL_RANK" not in os.environ:
        return launch()
    rank_main(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
