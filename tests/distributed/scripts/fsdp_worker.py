"""One rank of the sharded-checkpoint tests (test_fsdp_checkpoints.py), run by torchrun.

Usage: python fsdp_worker.py OUT CASE [CASE ...]
A 4-16-1 MLP whose Linear layers and root are sharded with FSDP2's ``fully_shard``, Adam, 6
batches an epoch on each rank (each rank its own data), the checkpoint plugin saving it with
torch.distributed.checkpoint. Each case writes OUT/<case>_rank<RANK>.json, and .pt files of
full (unsharded) parameters and optimizer states where the tests compare them bit for bit.

``full``           3 epochs, a checkpoint every 4 iterations (keep 2), from scratch.
``resume``         1 epoch (the save at iteration 4 is the newest), then a new model, optimizer
                   and trainer resume from it, mid-epoch, and run to 3 epochs.
``elastic``        ``full`` with resume=True under ``torchrun --max-restarts=1``: in the first
                   attempt rank 1 SIGKILLs itself in the update of iteration 9, while the save of
                   iteration 8 is being written in the background; the restart resumes.
``preempt``        rank 1 gets a SIGTERM after iteration 6: both ranks stop at the iteration they
                   agree on, the plugin saves that point (sharded), run() raises Preempted; a new
                   model, optimizer and trainer resume from it and run to 3 epochs.
``leftovers``      a copy of ``full``'s folder with the remains of interrupted saves added (a
                   temporary folder, a folder under a checkpoint's name without its state file, a
                   folder set aside for a replacement), resumed: only finished saves count.
``epoch_saves``    1 epoch, saves every 3 iterations and at its end (which replaces the save of
                   its last iteration, same name); its full parameters.
``reshard``        (3 ranks) resumes ``epoch_saves``' checkpoint, saved by 2 ranks, and trains
                   one more epoch; then tries ``full``'s, saved in the middle of an epoch.
``write_failure``  the second save's temporary folder is taken by a file (rank 0 puts it there at
                   iteration 5): every rank's write of it fails; at the next save every rank
                   raises, and the first checkpoint stays the newest.
``mismatch``       a sharded run given a folder of unsharded checkpoints and the reverse; an
                   optimizer of sharded parameters without its model in objects.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from ignite import PluginError, Preempted, Trainer, TrainingEvents

BATCHES = 6
EVERY = 4
CHECKPOINT = "checkpoint"


def build(sharded: bool = True, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    if sharded:
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def batches(rank: int) -> list[torch.Tensor]:
    return [torch.randn(8, 4, generator=torch.Generator().manual_seed(1000 * rank + i)) for i in range(BATCHES)]


def trainer_for(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int, **options: Any) -> Trainer:
    def update(batch: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean() + torch.rand(()) * 0  # the random draw: RNG states must resume too
        loss.backward()
        optimizer.step()
        return loss.detach()

    checkpoint = {"objects": {"model": model, "optimizer": optimizer}, "every_iterations": EVERY, "keep": 2, **options}
    return Trainer(batches(rank), update, plugins={"checkpoint": checkpoint})


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every parameter and Adam moment, unsharded (a collective: every rank calls it)."""
    found = {}
    for name, parameter in model.named_parameters():
        found[name] = parameter.full_tensor()
        for key in ("exp_avg", "exp_avg_sq"):
            found[f"{name}.{key}"] = optimizer.state[parameter][key].full_tensor()
    return found


def outcome(trainer: Trainer) -> dict[str, Any]:
    return {
        "epoch": trainer.current_epoch,
        "iteration": trainer.current_iteration,
        "history": [float(value) for value in trainer.training_history],
    }


def resume_to_the_end(out: str, case: str, rank: int, folder: str, seed: int = 1, **handlers: Any) -> dict:
    """A new model (other weights, by ``seed``), optimizer and trainer resume from ``folder`` and
    run to 3 epochs; their full state goes to OUT/<case>_rank<RANK>.pt. ``handlers``: event name
    -> handler, added after the one that notes the iteration resumed at."""
    model, optimizer = build(seed=seed)
    trainer = trainer_for(model, optimizer, rank, dir=folder, resume=True)
    resumed = []
    trainer.add_event_handler(TrainingEvents.TRAINING_STARTED, lambda t: resumed.append(t.current_iteration))
    for event, handler in handlers.items():
        trainer.add_event_handler(TrainingEvents[event], handler)
    trainer.run(3)
    torch.save(full_state(model, optimizer), os.path.join(out, f"{case}_rank{rank}.pt"))
    return {**outcome(trainer), "resumed_at": resumed[0]}


def case_full(rank: int, out: str) -> dict:
    model, optimizer = build()
    trainer = trainer_for(model, optimizer, rank, dir=os.path.join(out, "full"))
    trainer.run(3)
    torch.save(full_state(model, optimizer), os.path.join(out, f"full_rank{rank}.pt"))
    return outcome(trainer)


def case_resume(rank: int, out: str) -> dict:
    folder = os.path.join(out, "resume")
    model, optimizer = build()
    trainer_for(model, optimizer, rank, dir=folder).run(1)  # saves at iteration 4; ends at 6
    return resume_to_the_end(out, "resume", rank, folder)


def case_elastic(rank: int, out: str) -> dict:
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def die(trainer: Trainer) -> None:
        if attempt == 0 and rank == 1 and trainer.current_iteration == 2 * EVERY + 1:
            os.kill(os.getpid(), signal.SIGKILL)

    # The weights of build() (seed 0) when no checkpoint is found: the first attempt is full's run.
    result = resume_to_the_end(out, "elastic", rank, os.path.join(out, "elastic"), seed=0, TRAINING_ITERATION_STARTED=die)
    return {**result, "attempt": attempt}


def case_preempt(rank: int, out: str) -> dict:
    folder = os.path.join(out, "preempt")
    model, optimizer = build()
    trainer = trainer_for(model, optimizer, rank, dir=folder)

    def signal_rank_1(trainer: Trainer) -> None:
        if rank == 1 and trainer.current_iteration == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, signal_rank_1)
    result: dict[str, Any] = {}
    try:
        trainer.run(3)
    except Preempted as stop:
        result["preempted"] = {"code": stop.code, "iteration": trainer.current_iteration}
    result["listing"] = sorted(os.listdir(folder))
    return {**result, **resume_to_the_end(out, "preempt", rank, folder)}


def case_leftovers(rank: int, out: str) -> dict:
    source, folder = os.path.join(out, "full"), os.path.join(out, "leftovers")
    if rank == 0:
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".ignite-checkpoint.lock"))
        newest = sorted(name for name in os.listdir(folder) if name.startswith("checkpoint_"))[-1]
        # An interrupted save: a temporary folder with one rank's shards.
        os.makedirs(os.path.join(folder, f".{CHECKPOINT}_{newest}.9.tmp"))
        shutil.copy(os.path.join(folder, newest, "__0_0.distcp"), os.path.join(folder, f".{CHECKPOINT}_{newest}.9.tmp"))
        # A newer folder under a checkpoint's name, all shards but no state file (a partial copy).
        partial = os.path.join(folder, "checkpoint_e0003_i00000017")
        shutil.copytree(os.path.join(folder, newest), partial)
        os.unlink(os.path.join(partial, "ignite.pt"))
        # A folder set aside for a replacement that then landed: the replaced one goes.
        shutil.copytree(os.path.join(folder, newest), os.path.join(folder, f".{CHECKPOINT}_{newest}.replaced"))
        # One set aside for a replacement that never landed (the process died between the renames): put back.
        oldest = "checkpoint_e0002_i00000012"
        os.rename(os.path.join(folder, oldest), os.path.join(folder, f".{CHECKPOINT}_{oldest}.replaced"))
    dist.barrier()
    # The run that made full's checkpoints resumed from its newest: it ends as full did.
    result = resume_to_the_end(out, "leftovers", rank, folder)
    return {**result, "listing": sorted(os.listdir(folder))}


def case_write_failure(rank: int, out: str) -> dict:
    folder = os.path.join(out, "write_failure")
    model, optimizer = build()
    trainer = trainer_for(model, optimizer, rank, dir=folder)

    def block(trainer: Trainer) -> None:
        if rank == 0 and trainer.current_iteration == 5:
            with open(os.path.join(folder, f".{CHECKPOINT}_checkpoint_e0002_i00000008.2.tmp"), "w") as file:
                file.write("in the way")

    trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, block)
    result: dict[str, Any] = {}
    try:
        trainer.run(3)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    result["iteration"] = trainer.current_iteration
    result["listing"] = sorted(os.listdir(folder))
    return result


def case_epoch_saves(rank: int, out: str) -> dict:
    model, optimizer = build()
    # Saves after iteration 3 and 6, and at the epoch's end: that one replaces the save of iteration 6.
    trainer = trainer_for(model, optimizer, rank, dir=os.path.join(out, "epochs"), every_iterations=3, every_epochs=1)
    trainer.run(1)
    torch.save(full_state(model, optimizer), os.path.join(out, f"epoch_saves_rank{rank}.pt"))
    return outcome(trainer)


def case_reshard(rank: int, out: str) -> dict:
    model, optimizer = build(seed=1)
    trainer = trainer_for(model, optimizer, rank, dir=os.path.join(out, "epochs"), resume=True, every_iterations=None)
    trainer.run(1)  # resumed at the end of epoch 1: nothing left to train
    torch.save(full_state(model, optimizer), os.path.join(out, f"reshard_rank{rank}.pt"))
    shapes = [tuple(parameter.to_local().shape) for parameter in model.parameters()]
    resumed = outcome(trainer)
    trainer.run(2)
    result = {"resumed": resumed, "after": outcome(trainer), "local_shapes": shapes}
    model, optimizer = build()
    try:
        trainer_for(model, optimizer, rank, dir=os.path.join(out, "full"), resume=True).run(3)
    except Exception as error:
        result["mid_epoch_error"] = f"{type(error).__name__}: {error}"
    return result


def case_mismatch(rank: int, out: str) -> dict:
    result = {}
    unsharded, sharded = os.path.join(out, "mismatch_unsharded"), os.path.join(out, "mismatch_sharded")
    model, optimizer = build(sharded=False)
    trainer_for(model, optimizer, rank, dir=unsharded).run(1)
    model, optimizer = build()
    trainer_for(model, optimizer, rank, dir=sharded).run(1)
    for name, folder, shard in (("sharded_into_unsharded", unsharded, True), ("unsharded_into_sharded", sharded, False)):
        model, optimizer = build(sharded=shard)
        try:
            trainer_for(model, optimizer, rank, dir=folder, resume=True).run(2)
        except Exception as error:
            result[name] = f"{type(error).__name__}: {error}"
        result[f"{name}_listing"] = sorted(os.listdir(folder))
    model, optimizer = build()
    try:
        Trainer([1], lambda batch: batch, plugins={"checkpoint": {"dir": sharded, "objects": {"optimizer": optimizer}}})
    except PluginError as error:
        result["optimizer_alone"] = f"{error} {error.__cause__}"
    import ignite_checkpoint

    # As a torch older than sharded saves need would see it.
    oldest, ignite_checkpoint._SHARDED_TORCH = ignite_checkpoint._SHARDED_TORCH, (99, 0)
    try:
        trainer_for(model, optimizer, rank, dir=sharded)
    except PluginError as error:
        result["torch_too_old"] = f"{error} {error.__cause__}"
    finally:
        ignite_checkpoint._SHARDED_TORCH = oldest
    return result


CASES = {name[len("case_") :]: function for name, function in globals().items() if name.startswith("case_")}


def main() -> None:
    out, cases = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for case in cases:
        result = CASES[case](rank, out)
        with open(os.path.join(out, f"{case}_rank{rank}.json"), "w") as file:
            json.dump(result, file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
