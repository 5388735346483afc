"""The few torch.distributed helpers plugins need. Without a process group each is a no-op
(rank 0 of 1), so plugins call them unconditionally."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "RankMismatchError",
    "agree_any",
    "all_gather_object",
    "is_initialized",
    "is_main_process",
    "rank",
    "reduce_mean",
    "reduction_device",
    "samplers",
    "world_size",
]


class RankMismatchError(ValueError):
    """Raised by ``Trainer.run()`` on every rank when the ranks are not set up alike (active
    plugins and their versions, validation or not, training batches per epoch, ignite version,
    ``max_epochs``, starting point): the message names what differs, on which ranks, and the fix."""


def is_initialized() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes, 1 without a process group."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the one process that writes logs, plots and checkpoints."""
    return rank() == 0


def reduction_device() -> torch.device:
    """Where tensors for collectives go: the rank's GPU with NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_mean(value: float, weight: float = 1.0) -> float:
    """The mean of ``value`` over all ranks, each weighted by ``weight`` (e.g. its batch
    count). A collective: every rank must call it, in the same order."""
    if not is_initialized():
        return value if weight else float("nan")
    pair = torch.tensor([value * weight, weight], dtype=torch.float64, device=reduction_device())
    dist.all_reduce(pair)
    total, weights = pair.tolist()
    return total / weights if weights else float("nan")


def all_gather_object(value: Any) -> list[Any]:
    """``value`` from every rank, in rank order (``[value]`` without a process group). A
    collective; for small picklable values such as lists of names."""
    if not is_initialized():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def agree_any(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank. A collective, like reduce_mean."""
    if not is_initialized():
        return flag
    vote = torch.tensor([1 if flag else 0], dtype=torch.int32, device=reduction_device())
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


def samplers(data: Any) -> list[Any]:
    """The samplers of a data loader: on the loader, or inside its batch sampler (each once).
    A DistributedSampler is found where it sits, whichever way the loader was built."""
    found = (getattr(data, "sampler", None), getattr(getattr(data, "batch_sampler", None), "sampler", None))
    return list(dict.fromkeys(sampler for sampler in found if sampler is not None))
