"""One rank of the two-process tests in ``tests/distributed/test_distributed.py`` (not collected
by pytest: it runs under ``torchrun``).

Usage: ``torchrun --nproc_per_node=2 ddp_worker.py OUT CASE [CASE ...]``

Every CASE trains a fresh Trainer in the same gloo process group, in the order given, and writes
``OUT/<case>_rank<RANK>.json`` (and, for some, ``.pt`` files of the final parameters) with what
this rank saw. The cases:

``ddp``               DistributedDataParallel + DistributedSampler(shuffle=True) for 3 epochs:
                      indices seen per epoch, final parameters, log records.
``terminate_iteration``  rank 1 calls terminate() at iteration 5 (and, in a second trainer, at
                      the last iteration of epoch 1) from a TRAINING_ITERATION_COMPLETED handler.
``terminate_epoch``   rank 0 calls terminate() at EPOCH_COMPLETED of epoch 2.
``terminate_validation``  rank 1 calls terminate() after validation batch 2 of epoch 2.
``early_stopping``    the early_stopping plugin on a validation loss that stalls on rank 1 only.
``tensorboard``       the tensorboard plugin with dir OUT/tb_rank<RANK> on each rank.
``checkpoint_full``   the DDP run the checkpoint cases resume, uninterrupted (3 epochs).
``checkpoint_crash``  the same with the checkpoint plugin (every 3 iterations); every rank
                      dies with os._exit(1) in iteration CRASH_AT (before that iteration's save).
``checkpoint_resume`` the same with resume=True, to the end.
``adhoc_resume``      the same without the plugin: Trainer.state_dict() saved from a handler on
                      rank 0, terminate(), then fresh objects load it and finish.
``batch_sampler``     a DistributedSampler inside a BatchSampler: indices seen per epoch.
``trainer_resources`` open files and threads before and after 10 more trainers.
``empty_validation_shard``  rank 1 has no validation batch; the reduced validation means.
``crash_update``      rank 1 raises in its update function at iteration 5 while rank 0 goes on
                      into DDP's gradient all-reduce.
``crash_epoch``       rank 0 raises in an EPOCH_COMPLETED handler at epoch 2 while rank 1 goes
                      on into the trainer's blocking stop vote (no DDP).
``uneven_ends``, ``uneven_vote``  10 training batches on rank 0, 12 or 40 on rank 1, in data
                      without len(): the stop vote finds the difference at the end of epoch 1.
``mismatch_plugin_in_code``  an in-code plugin that runs a collective at TRAINING_STARTED,
                      registered on rank 0 only; ``mismatch_plugin_installed``: the installed
                      early_stopping plugin on rank 0 only; ``mismatch_validation``: validation
                      data on rank 0 only; ``mismatch_batches``: 4 training batches on rank 0, 6
                      on rank 1. Each records the RankMismatchError run() raised, then trains a
                      trainer set up alike in the same group (still in step?).
``mismatch_uncaught`` DDP with validation data on rank 1 only; the error ends both ranks.
``stuck_update``      rank 1 blocks for ever in its update function at iteration 3 (no DDP):
                      rank 0 waits in the stop vote until the process group's timeout.
``preempt``           the checkpoint_crash run, waiting in the update of iteration PREEMPT_AT on
                      the ranks in IGNITE_TEST_WAIT_RANKS (default: all) until a SIGTERM has
                      arrived (each writes ``OUT/preempt_waiting_rank<RANK>`` with its pid
                      first); the test then sends one. Records what run() raised, then lets
                      ignite.Preempted end the process (exit code 143).
``preempt_at_start``  rank 1 sends itself SIGTERM from a TRAINING_STARTED handler, in a run with
                      the checkpoint plugin; records what run() raised on each rank.
``elastic``           the checkpoint_resume run under ``torchrun --max-restarts=1``: in the first
                      attempt (TORCHELASTIC_RESTART_COUNT=0) one rank, at one iteration, both
                      drawn from random.Random(IGNITE_TEST_KILL_SEED), kills itself with
                      SIGKILL; torchrun restarts both ranks, which resume and finish.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ignite import Preempted, Trainer, TrainingEvents, distributed, hookimpl, monitor

BATCHES_PER_EPOCH = 8  # per rank: 64 samples, 2 ranks, batch size 4
CRASH_AT = 11  # iteration 3 of epoch 2: the last checkpoint (every 3 iterations) is iteration 9
PREEMPT_AT = 7  # a SIGTERM in iteration 7 stops the ranks after 8 (vote every iteration): no regular save there


class Indexed(Dataset):
    """64 fixed samples of a noisy linear problem; items carry their index."""

    def __init__(self, size: int = 64) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(size, 4, generator=generator)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(size, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return index, self.x[index], self.y[index]


def ddp_setup(lr: float = 0.05, momentum: float = 0.0, rank_seed: int | None = None):
    """The same initial model on every rank (DDP also broadcasts rank 0's), wrapped in DDP, and
    a loader that shards and shuffles the data with a DistributedSampler. With ``rank_seed``,
    the global RNG is then seeded differently on each rank (as for per-rank dropout)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    ddp = DistributedDataParallel(model)
    if rank_seed is not None:
        torch.manual_seed(rank_seed + dist.get_rank())
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=momentum)
    dataset = Indexed()
    loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, shuffle=True, seed=7))
    return ddp, optimizer, loader


def make_update(
    ddp: torch.nn.Module, optimizer: torch.optim.Optimizer, seen: list | None = None, draws: list | None = None
) -> Callable:
    def update(batch: Any) -> float:
        indices, x, y = batch
        if seen is not None:
            seen.append(indices.tolist())
        if draws is not None:
            draws.append(torch.rand(()).item())  # what a dropout layer would draw from
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return update


def validate_with(ddp: torch.nn.Module) -> Callable:
    def validate(batch: Any) -> float:
        _, x, y = batch
        with torch.no_grad():
            return torch.nn.functional.mse_loss(ddp(x), y).item()

    return validate


def counters(trainer: Trainer) -> dict[str, Any]:
    return {
        "epoch": trainer.current_epoch,
        "iteration": trainer.current_iteration,
        "training_runs": [len(trainer.training_history.run(i)) for i in range(trainer.training_history.num_runs)],
        "validation_runs": [len(trainer.validation_history.run(i)) for i in range(trainer.validation_history.num_runs)],
    }


def save_parameters(module: torch.nn.Module, path: str) -> None:
    torch.save({name: tensor.detach().clone() for name, tensor in module.state_dict().items()}, path)


def flat_parameters(module: torch.nn.Module) -> list[float]:
    """Every parameter as Python floats (JSON round-trips them exactly)."""
    return [value for tensor in module.state_dict().values() for value in tensor.flatten().tolist()]


# -- cases ----------------------------------------------------------------------------------


def case_ddp(rank: int, out: str) -> dict:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.name} {record.getMessage()}")

    keep = Keep(level=logging.DEBUG)
    logger = logging.getLogger("ignite")
    logger.setLevel(logging.INFO)  # asked for on every rank: the trainer keeps ranks > 0 at WARNING
    logger.addHandler(keep)
    ddp, optimizer, loader = ddp_setup()
    save_parameters(ddp.module, os.path.join(out, f"ddp_initial_rank{rank}.pt"))
    seen: list = []
    by_epoch: dict[int, list[int]] = {}

    def note_epoch(trainer: Trainer) -> None:
        by_epoch[trainer.current_epoch] = [index for batch in seen for index in batch]
        seen.clear()

    trainer = Trainer(loader, make_update(ddp, optimizer, seen), loader, validate_with(ddp))
    trainer.add_event_handler(TrainingEvents.TRAINING_EPOCH_COMPLETED, note_epoch)
    trainer.run(max_epochs=3)
    logger.removeHandler(keep)
    save_parameters(ddp.module, os.path.join(out, f"ddp_final_rank{rank}.pt"))
    return {
        **counters(trainer),
        "indices": by_epoch,
        "logs": records,
        "ignite_logger_level": logging.getLogger("ignite").getEffectiveLevel(),
        # An asynchronous vote left pending would be finished by a gloo thread at interpreter exit.
        "vote_pending_after_run": trainer._dispatch.stop_vote is not None and trainer._dispatch.stop_vote._pending is not None,
    }


def _terminating_run(
    rank: int, event: TrainingEvents, when: Callable[[Trainer], bool], max_epochs: int = 4, vote_every: str = "1"
) -> dict:
    os.environ["IGNITE_STOP_VOTE_EVERY"] = vote_every  # read when the trainer's first run starts
    ddp, optimizer, loader = ddp_setup()
    trainer = Trainer(loader, make_update(ddp, optimizer), loader, validate_with(ddp))
    called_at: list = []

    def stop(trainer: Trainer) -> None:
        if when(trainer):
            called_at.append({"iteration": trainer.current_iteration, "epoch": trainer.current_epoch})
            trainer.terminate()

    trainer.add_event_handler(event, stop)
    trainer.run(max_epochs=max_epochs)
    return {**counters(trainer), "called_at": called_at, "parameters": flat_parameters(ddp.module)}


def case_terminate_iteration(rank: int, out: str) -> dict:
    completed = TrainingEvents.TRAINING_ITERATION_COMPLETED
    return {
        "mid_epoch": _terminating_run(rank, completed, lambda t: rank == 1 and t.current_iteration == 5),
        "last_of_epoch": _terminating_run(
            rank, completed, lambda t: rank == 1 and t.current_iteration == BATCHES_PER_EPOCH
        ),
        "vote_every_2": _terminating_run(
            rank, completed, lambda t: rank == 1 and t.current_iteration == 3, vote_every="2"
        ),
    }


def case_terminate_epoch(rank: int, out: str) -> dict:
    return _terminating_run(rank, TrainingEvents.EPOCH_COMPLETED, lambda t: rank == 0 and t.current_epoch == 2)


def case_terminate_validation(rank: int, out: str) -> dict:
    return _terminating_run(
        rank,
        TrainingEvents.VALIDATION_ITERATION_COMPLETED,
        lambda t: rank == 1 and t.current_epoch == 2 and len(t.validation_history.run()) == 2,
    )


def case_early_stopping(rank: int, out: str) -> dict:
    # Validation losses by epoch: rank 0 improves every epoch; rank 1 stalls from epoch 1 on
    # (alone, patience 2 would stop it at epoch 3) and rises from epoch 4. The reduced mean
    # improves until epoch 3 and not after, so both ranks must stop at epoch 5.
    def loss(epoch: int) -> float:
        if rank == 0:
            return 10.0 - epoch
        return 20.0 if epoch <= 3 else 20.0 + 2.0 * (epoch - 3)

    ddp, optimizer, loader = ddp_setup()
    trainer: Trainer

    def validate(batch: Any) -> float:
        return loss(trainer.current_epoch)

    trainer = Trainer(
        loader, make_update(ddp, optimizer), [0, 1], validate, plugins={"early_stopping": {"patience": 2}}
    )
    trainer.run(max_epochs=10)
    plugin = trainer.plugins["early_stopping"]
    return {**counters(trainer), "best_score": plugin.best_score, "best_epoch": plugin.best_epoch}


def case_tensorboard(rank: int, out: str) -> dict:
    # Different numbers of validation batches per rank (2 and 3), so that a plain mean of the
    # two ranks' means differs from the batch-weighted mean over all batches.
    ddp, optimizer, loader = ddp_setup()
    validation = list(range(2 + rank))
    trainer: Trainer

    def validate(batch: int) -> float:
        return 100.0 * rank + 10.0 * trainer.current_epoch + batch

    trainer = Trainer(
        loader,
        make_update(ddp, optimizer),
        validation,
        validate,
        plugins={"tensorboard": {"dir": os.path.join(out, f"tb_rank{rank}"), "every_iterations": 1}},
    )
    reduced: list[dict] = []
    trainer.add_event_handler(
        TrainingEvents.EPOCH_COMPLETED, lambda t: reduced.append(monitor.epoch_means(t, validation=True))
    )
    trainer.run(max_epochs=2)
    return {
        **counters(trainer),
        "validation": [trainer.validation_history.run(i) for i in range(trainer.validation_history.num_runs)],
        "training": [trainer.training_history.run(i) for i in range(trainer.training_history.num_runs)],
        "reduced_validation_means": reduced,
    }


def _checkpoint_run(rank: int, plugins: dict | None) -> tuple[Trainer, Any, Any, dict]:
    # Momentum: the optimizer has a state to restore. Per-rank seeds: each rank draws its own
    # random numbers, as dropout would.
    ddp, optimizer, loader = ddp_setup(momentum=0.9, rank_seed=100)
    if plugins is not None:
        plugins["checkpoint"]["objects"] = {"model": ddp.module, "optimizer": optimizer}
    record: dict = {"means": [], "draws": {}}
    draws: list = []
    trainer = Trainer(loader, make_update(ddp, optimizer, draws=draws), loader, validate_with(ddp), plugins=plugins)

    def note(trainer: Trainer) -> None:
        record["means"].append([trainer.current_epoch, monitor.epoch_means(trainer)])
        record["draws"][trainer.current_epoch] = draws[:]
        draws.clear()

    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, note)
    return trainer, ddp, optimizer, record


def histories(trainer: Trainer) -> dict[str, list]:
    """Every value of both histories, by run (JSON keeps floats exact)."""
    return {
        name: [history.run(i) for i in range(history.num_runs)]
        for name, history in (("training", trainer.training_history), ("validation", trainer.validation_history))
    }


def case_checkpoint_full(rank: int, out: str) -> dict:
    trainer, ddp, _, record = _checkpoint_run(rank, None)
    trainer.run(max_epochs=3)
    save_parameters(ddp.module, os.path.join(out, f"checkpoint_full_rank{rank}.pt"))
    return {**counters(trainer), **record, "histories": histories(trainer)}


def _checkpoint_options(out: str, resume: bool) -> dict:
    return {"checkpoint": {"dir": os.path.join(out, "checkpoints"), "every_iterations": 3, "resume": resume}}


def case_checkpoint_crash(rank: int, out: str) -> dict:
    trainer, _, _, _ = _checkpoint_run(rank, _checkpoint_options(out, resume=False))

    def die(trainer: Trainer) -> None:
        if trainer.current_iteration == CRASH_AT:
            os._exit(1)  # a crash: no cleanup, no exception handlers, no save

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, die)
    trainer.run(max_epochs=3)
    raise AssertionError(f"unreachable: the run dies at iteration {CRASH_AT}")


def case_checkpoint_resume(rank: int, out: str) -> dict:
    trainer, ddp, _, record = _checkpoint_run(rank, _checkpoint_options(out, resume=True))
    started: list = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: started.append(t.current_iteration))
    trainer.run(max_epochs=3)
    save_parameters(ddp.module, os.path.join(out, f"checkpoint_resume_rank{rank}.pt"))
    return {**counters(trainer), **record, "resumed_at_iteration": started, "histories": histories(trainer)}


def case_preempt(rank: int, out: str) -> dict:
    trainer, _, _, _ = _checkpoint_run(rank, _checkpoint_options(out, resume=False))
    waiting = [int(r) for r in os.environ.get("IGNITE_TEST_WAIT_RANKS", "0,1").split(",")]

    def wait_for_sigterm(trainer: Trainer) -> None:
        if trainer.current_iteration != PREEMPT_AT or rank not in waiting:
            return
        marker = os.path.join(out, f"preempt_waiting_rank{rank}")
        with open(marker + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        deadline = time.monotonic() + 60
        while not trainer._signalled:  # the trainer's record of a SIGTERM, polled with a deadline
            if time.monotonic() > deadline:
                raise RuntimeError(f"rank {rank}: no SIGTERM within 60 s")
            time.sleep(0.01)

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_STARTED, wait_for_sigterm)
    try:
        trainer.run(max_epochs=3)
    except Preempted as preempted:
        result = {**counters(trainer), "raised": type(preempted).__name__, "code": preempted.code,
                  "preempted": trainer.preempted, "signalled": trainer._signalled}  # fmt: skip
        with open(os.path.join(out, f"preempt_rank{rank}.json"), "w") as file:
            json.dump(result, file)
        raise
    raise AssertionError("unreachable: run() returned after a SIGTERM")


def case_preempt_at_start(rank: int, out: str) -> dict:
    """Rank 1 receives SIGTERM (sent to itself) in a TRAINING_STARTED handler of a run with the
    checkpoint plugin; what run() raised on each rank is recorded, and the process goes on."""
    trainer, _, _, _ = _checkpoint_run(rank, {"checkpoint": {"dir": os.path.join(out, "checkpoints_at_start")}})
    started: list = []
    if rank == 1:
        trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: os.kill(os.getpid(), signal.SIGTERM))
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: started.append(t.current_iteration))
    fired: list = []
    for event in (TrainingEvents.EPOCH_STARTED, TrainingEvents.TRAINING_COMPLETED):
        trainer.add_event_handler(event, lambda t, name=event.name: fired.append(name))
    try:
        trainer.run(max_epochs=3)
    except Preempted as preempted:
        raised = {"raised": type(preempted).__name__, "code": preempted.code}
    else:
        raised = {"raised": None, "code": None}
    return {**counters(trainer), **raised, "started": started, "fired": fired, "preempted": trainer.preempted}


def case_elastic(rank: int, out: str) -> dict:
    trainer, ddp, _, record = _checkpoint_run(rank, _checkpoint_options(out, resume=True))
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    draw = random.Random(int(os.environ["IGNITE_TEST_KILL_SEED"]))
    victim, kill_at = draw.randrange(2), draw.randint(4, 21)  # the same draw on every rank

    def die(trainer: Trainer) -> None:
        if attempt == 0 and rank == victim and trainer.current_iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-iteration: after the update, before this iteration's save

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, die)
    started: list = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: started.append(t.current_iteration))
    trainer.run(max_epochs=3)
    save_parameters(ddp.module, os.path.join(out, f"elastic_rank{rank}.pt"))
    return {**counters(trainer), **record, "attempt": attempt, "victim": victim, "kill_at": kill_at,
            "resumed_at_iteration": started, "histories": histories(trainer)}  # fmt: skip


def case_adhoc_resume(rank: int, out: str) -> dict:
    """Without the checkpoint plugin: rank 0 saves trainer.state_dict() with the model and the
    optimizer every 3 iterations from a handler; rank 1 terminates the run at iteration 10
    (so both stop at 11); then fresh objects on every rank load the newest save and finish."""
    path = os.path.join(out, "adhoc_state.pt")
    trainer, ddp, optimizer, _ = _checkpoint_run(rank, None)

    def save(trainer: Trainer) -> None:
        if trainer.current_iteration % 3 == 0 and rank == 0:
            state = {
                "trainer": trainer.state_dict(),
                "model": ddp.module.state_dict(),
                "optimizer": optimizer.state_dict(),
            }
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)

    def stop(trainer: Trainer) -> None:
        if rank == 1 and trainer.current_iteration == CRASH_AT - 1:
            trainer.terminate()

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, save)
    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, stop)
    trainer.run(max_epochs=3)
    stopped_at = trainer.current_iteration
    dist.barrier()  # the save of rank 0 is on disk for every rank

    trainer, ddp, optimizer, _ = _checkpoint_run(rank, None)
    state = torch.load(path, weights_only=True)
    ddp.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    trainer.load_state_dict(state["trainer"])
    resumed_at = trainer.current_iteration
    trainer.run(max_epochs=3)
    save_parameters(ddp.module, os.path.join(out, f"adhoc_resume_rank{rank}.pt"))
    return {**counters(trainer), "stopped_at": stopped_at, "resumed_at": resumed_at}


def case_batch_sampler(rank: int, out: str) -> dict:
    """A DistributedSampler inside the DataLoader's batch_sampler (not its sampler)."""
    dataset = Indexed()
    sampler = DistributedSampler(dataset, shuffle=True, seed=7)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size=4, drop_last=False))
    seen: dict = {}
    trainer: Trainer

    def update(batch: Any) -> float:
        seen.setdefault(trainer.current_epoch, []).extend(batch[0].tolist())
        return 0.0

    trainer = Trainer(loader, update)
    trainer.run(max_epochs=3)
    return {**counters(trainer), "indices": seen}


def case_trainer_resources(rank: int, out: str) -> dict:
    """Open file descriptors and threads of this process before and after 10 more trainers."""

    def count(what: str) -> int:
        return len(os.listdir(f"/proc/self/{what}")) if os.path.isdir("/proc/self") else 0

    Trainer([1.0, 2.0], lambda batch: batch).run(1)  # whatever a first trainer sets up once
    before = {"fd": count("fd"), "task": count("task")}
    for _ in range(10):
        Trainer([1.0, 2.0], lambda batch: batch).run(1)
    gc.collect()
    return {"before": before, "after": {"fd": count("fd"), "task": count("task")}}


def case_empty_validation_shard(rank: int, out: str) -> dict:
    """Rank 1's share of the validation data is empty (2 batches on rank 0, none on rank 1)."""
    trainer = Trainer([1.0] * 4, lambda batch: batch, [1.0, 2.0] if rank == 0 else [], lambda batch: batch)
    means: list = []
    trainer.add_event_handler(
        TrainingEvents.EPOCH_COMPLETED, lambda t: means.append(monitor.epoch_means(t, validation=True))
    )
    trainer.run(max_epochs=2)
    return {**counters(trainer), "reduced_validation_means": means}


def case_crash_update(rank: int, out: str) -> dict:
    ddp, optimizer, loader = ddp_setup()
    inner = make_update(ddp, optimizer)
    trainer: Trainer

    def update(batch: Any) -> float:
        if rank == 1 and trainer.current_iteration == 5:
            raise RuntimeError("rank 1 fails in its update function at iteration 5")
        return inner(batch)

    trainer = Trainer(loader, update)
    trainer.run(max_epochs=3)
    return counters(trainer)


def case_crash_epoch(rank: int, out: str) -> dict:
    trainer = Trainer([1.0] * 4, lambda batch: batch)

    def fail(trainer: Trainer) -> None:
        if rank == 0 and trainer.current_epoch == 2:
            raise RuntimeError("rank 0 fails in an EPOCH_COMPLETED handler at epoch 2")

    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, fail)
    trainer.run(max_epochs=4)
    return counters(trainer)


class Unsized:
    """Re-iterable batches without len(): the start of run() cannot compare their counts."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


def _uneven_run(rank: int, batches: list[int]) -> dict:
    trainer = Trainer(Unsized([1.0] * batches[rank]), lambda batch: batch)
    trainer.run(max_epochs=3)
    return counters(trainer)


def case_uneven_ends(rank: int, out: str) -> dict:
    """Rank 0 has 10 training batches, rank 1 12: their epochs' ends meet in the vote."""
    return _uneven_run(rank, [10, 12])


def case_uneven_vote(rank: int, out: str) -> dict:
    """Rank 0 has 10 training batches, rank 1 40: rank 0's end of epoch meets rank 1's vote at
    iteration 32."""
    return _uneven_run(rank, [10, 40])


class CollectiveProbe:
    """An in-house plugin that, like a plugin reducing a score, runs a collective in a hook."""

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        distributed.agree_any(False)


def _mismatched(rank: int, trainer: Trainer) -> dict:
    """The RankMismatchError that run() raised, then a run set up alike in the same group."""
    try:
        trainer.run(max_epochs=2)
    except distributed.RankMismatchError as error:
        result = {"error": type(error).__name__, "message": str(error), "iteration": trainer.current_iteration}
    else:
        result = {"error": None, "message": "", "iteration": trainer.current_iteration}
    after = Trainer([1.0] * 4, lambda batch: batch)
    after.run(max_epochs=2)
    return {**result, "after": counters(after)}


def case_mismatch_plugin_in_code(rank: int, out: str) -> dict:
    trainer = Trainer([1.0] * 4, lambda batch: batch)
    if rank == 0:
        trainer.register_plugin(CollectiveProbe(), name="collective_probe")
    return _mismatched(rank, trainer)


def case_mismatch_plugin_installed(rank: int, out: str) -> dict:
    plugins = {"early_stopping": {"patience": 1}} if rank == 0 else None
    return _mismatched(rank, Trainer([1.0] * 4, lambda batch: batch, [1.0], lambda batch: batch, plugins=plugins))


def case_mismatch_validation(rank: int, out: str) -> dict:
    if rank == 0:
        return _mismatched(rank, Trainer([1.0] * 4, lambda batch: batch, [1.0, 2.0], lambda batch: batch))
    return _mismatched(rank, Trainer([1.0] * 4, lambda batch: batch))


def case_mismatch_batches(rank: int, out: str) -> dict:
    return _mismatched(rank, Trainer([1.0] * (4 + 2 * rank), lambda batch: batch))


def case_mismatch_uncaught(rank: int, out: str) -> dict:
    ddp, optimizer, loader = ddp_setup()
    if rank == 1:
        trainer = Trainer(loader, make_update(ddp, optimizer), loader, validate_with(ddp))
    else:
        trainer = Trainer(loader, make_update(ddp, optimizer))
    trainer.run(max_epochs=2)
    return counters(trainer)


def case_stuck_update(rank: int, out: str) -> dict:
    trainer: Trainer

    def update(batch: float) -> float:
        if rank == 1 and trainer.current_iteration == 3:
            print("rank 1 blocks in its update function at iteration 3", flush=True)
            threading.Event().wait()  # never set: stuck for ever, as a deadlocked data source would be
        return batch

    trainer = Trainer([1.0] * 8, update)
    trainer.run(max_epochs=2)
    return counters(trainer)


CASES = {name[len("case_") :]: function for name, function in globals().items() if name.startswith("case_")}


def main() -> None:
    out, cases = sys.argv[1], sys.argv[2:]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    # A short collective timeout for the cases that hang (the default is 30 minutes).
    timeout = float(os.environ.get("IGNITE_TEST_COLLECTIVE_TIMEOUT", "1800"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    rank = dist.get_rank()
    for case in cases:
        result = CASES[case](rank, out)
        with open(os.path.join(out, f"{case}_rank{rank}.json"), "w") as file:
            json.dump(result, file)
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
