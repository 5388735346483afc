"""Agreement on ``terminate()`` across ranks, so that every rank stops at the same iteration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from .trainer import Trainer


_groups: dict[int, Any] = {}


def _vote_group() -> Any:
    """One gloo group per process group, shared by every trainer: a group of its own keeps
    these small CPU reductions out of the way of DDP's gradient reductions (which may be on
    NCCL). Creating it is a collective, done by the first trainer run on every rank."""
    world = dist.group.WORLD
    key = id(world)
    if key not in _groups:
        _groups.clear()  # the process group was replaced: the old vote group died with it
        _groups[key] = (world, dist.new_group(backend="gloo"))
    return _groups[key][1]


class StopVote:
    """A MAX all-reduce of "someone asked to stop" on a gloo group of its own.

    After every training iteration the vote of that iteration is launched asynchronously and
    the previous one is collected, so the collective overlaps the next iteration and a stop
    asked for during iteration i takes effect after iteration i+1 on every rank. Phase
    boundaries (after TRAINING_STARTED, at the end of a training epoch's batches and of a
    validation run, after EPOCH_COMPLETED) settle with a blocking vote. Every rank must see
    the same number of training batches per epoch, as DistributedSampler ensures (DDP needs
    that too). The vote never runs on the exception path: a failing rank exits at once.
    """

    def __init__(self) -> None:
        self._group = _vote_group()
        self._flag = torch.zeros(1, dtype=torch.int32)
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
        """The per-iteration agreement point: collect the last vote, launch this one."""
        if self._collect():
            trainer._should_terminate = True
            return
        self._flag.fill_(1 if self.requested else 0)
        self._pending = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True)

    def settle(self, trainer: Trainer) -> None:
        """A blocking agreement point at a phase boundary."""
        stop = self._collect() or self.requested or trainer._should_terminate
        self._flag.fill_(1 if stop else 0)
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group)
        if self._flag.item():
            trainer._should_terminate = True
