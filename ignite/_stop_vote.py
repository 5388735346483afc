"""Agreement on ``terminate()`` across ranks, so that every rank stops at the same iteration."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from . import distributed

if TYPE_CHECKING:
    from .trainer import Trainer


#: Training iterations between two votes, unless IGNITE_STOP_VOTE_EVERY says otherwise. A vote
#: on every iteration cost 10-20% of a small DDP step's throughput on 2 busy cores (its gloo
#: threads compete with training); every 32 it is lost in the noise.
DEFAULT_EVERY = 32


def _every() -> int:
    value = os.environ.get("IGNITE_STOP_VOTE_EVERY", "")
    if not value:
        return DEFAULT_EVERY
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"IGNITE_STOP_VOTE_EVERY must be a positive integer; got {value!r}")
    return int(value)


class StopVote:
    """A MAX all-reduce of "someone asked to stop".

    Every ``every`` training iterations (counted by ``trainer.current_iteration``, the same on
    every rank) the vote is launched asynchronously and the previous one collected, so the
    collective overlaps training. A stop asked for during iteration k is carried by the first
    vote launched at or after k and takes effect when that vote is collected, ``every``
    iterations later, on every rank at the same iteration. Phase boundaries (after
    TRAINING_STARTED, at the end of a training epoch's batches and of a validation run, after
    EPOCH_COMPLETED) settle with a blocking vote, so a stop never outlives the epoch's training
    batches. Every rank must see the same number of training batches per epoch, as
    DistributedSampler ensures (DDP needs that too). The vote never runs on the exception
    path: a failing rank exits at once.
    """

    def __init__(self) -> None:
        self.every = _every()
        # On the default group, in the same order on every rank, so it needs no group (and no
        # group lifetime) of its own; NCCL reduces only tensors on the rank's GPU.
        self._flag = torch.zeros(1, dtype=torch.int32, device=distributed.reduction_device())
        self._pending: Any = None
        self.requested = False

    def reset(self) -> None:
        """Forget a previous run's request; called at the start of run() on every rank."""
        self.requested = False

    def _collect(self) -> bool:
        if self._pending is None:
            return False
        self._pending.wait()
        self._pending = None
        return bool(self._flag.item())

    def __call__(self, trainer: Trainer) -> None:
        """The agreement point, every ``every`` iterations: collect the last vote, launch this one."""
        if trainer.current_iteration % self.every:
            return
        if self._collect():
            trainer._should_terminate = True
            return
        self._flag.fill_(1 if self.requested else 0)
        self._pending = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, async_op=True)

    def settle(self, trainer: Trainer) -> None:
        """A blocking agreement point at a phase boundary."""
        stop = self._collect() or self.requested or trainer._should_terminate
        self._flag.fill_(1 if stop else 0)
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        if self._flag.item():
            trainer._should_terminate = True
