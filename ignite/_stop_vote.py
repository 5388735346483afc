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

# What a rank votes for (the MAX all-reduce keeps the strongest): preemption (a SIGTERM
# received, see Trainer.preempted) outranks terminate().
_GO_ON, _STOP, _PREEMPTED = 0, 1, 2


def _every() -> int:
    value = os.environ.get("IGNITE_STOP_VOTE_EVERY", "")
    if not value:
        return DEFAULT_EVERY
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"IGNITE_STOP_VOTE_EVERY must be a positive integer; got {value!r}")
    return int(value)


class StopVote:
    """A MAX all-reduce of "someone asked to stop" (terminate(), or a SIGTERM, which also
    makes every rank's ``trainer.preempted`` true at the same point).

    Every ``every`` training iterations (counted by ``trainer.current_iteration``, the same on
    every rank) the vote is launched asynchronously and the previous one collected, so the
    collective overlaps training. A stop asked for during iteration k is carried by the first
    vote launched at or after k and takes effect when that vote is collected, ``every``
    iterations later, on every rank at the same iteration. Phase boundaries (after
    TRAINING_STARTED, at the end of a training epoch's batches and of a validation run, after
    EPOCH_COMPLETED) settle with a blocking vote, so a stop never outlives the epoch's training
    batches. The vote never runs on the exception path: a failing rank exits at once.

    Every rank must run the same number of training batches per epoch, as DistributedSampler
    ensures (DDP needs that too): otherwise the ranks' collectives pair up wrongly and the job
    hangs at its end. So each vote also carries a marker, the batch count + 1 at the end of an
    epoch's training batches and 0 elsewhere, reduced as (max, max of its negation): when the
    two differ, the ranks did not reach the end of the epoch's training batches together, and
    every rank that sees it raises ValueError instead of going on.

    Every wait here is bounded by the process group's timeout (``init_process_group(timeout=
    ...)``, 30 minutes by default): gloo fails a collective that a peer does not join in time,
    and ``wait()`` on the asynchronous vote then raises. A rank stuck for ever (in its update
    function, a handler) thus ends the others with that error, noted with where they waited;
    the launcher (torchrun) then stops the stuck rank. NCCL's watchdog does the same on GPU.
    """

    def __init__(self) -> None:
        self.every = _every()
        # On the default group, in the same order on every rank, so it needs no group (and no
        # group lifetime) of its own; NCCL reduces only tensors on the rank's GPU.
        device = distributed.reduction_device()
        # [stop, marker, -marker]; the periodic votes copy one of three ready-made values.
        self._flag = torch.zeros(3, dtype=torch.int32, device=device)
        self._votes = [torch.tensor([stop, 0, 0], dtype=torch.int32, device=device) for stop in (_GO_ON, _STOP, _PREEMPTED)]
        self._pending: Any = None
        self.requested = False

    def reset(self) -> None:
        """Forget a previous run's request; called at the start of run() on every rank."""
        self.requested = False

    def _level(self, trainer: Trainer) -> int:
        """This rank's vote: a SIGTERM received outranks a terminate() asked for."""
        if trainer._signalled:
            return _PREEMPTED
        return _STOP if self.requested or trainer._should_terminate else _GO_ON

    def _result(self, trainer: Trainer, batches: int | None) -> int:
        stop, most, negated_fewest = self._flag.tolist()
        if most != -negated_fewest:
            raise ValueError(_uneven_message(trainer, batches, most - 1, -negated_fewest - 1))
        return stop

    def _decide(self, trainer: Trainer, stop: int) -> None:
        if stop >= _STOP:
            trainer._should_terminate = True
        if stop >= _PREEMPTED:
            trainer._preempted = True

    def _collect(self, trainer: Trainer) -> int:
        if self._pending is None:
            return _GO_ON
        try:
            self._pending.wait()  # bounded: the work fails once the group's timeout has passed
        except RuntimeError as error:
            _note_peers(error, trainer)
            raise
        self._pending = None
        return self._result(trainer, None)

    def __call__(self, trainer: Trainer) -> None:
        """The agreement point, every ``every`` iterations: collect the last vote, launch this one."""
        if trainer.current_iteration % self.every:
            return
        stop = self._collect(trainer)
        if stop:
            self._decide(trainer, stop)
            return
        self._flag.copy_(self._votes[self._level(trainer)])
        self._pending = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, async_op=True)

    def settle(self, trainer: Trainer, batches: int | None = None) -> None:
        """A blocking agreement point at a phase boundary; ``batches``: the epoch's training
        batches, at the end of them."""
        stop = max(self._collect(trainer), self._level(trainer))
        marker = 0 if batches is None else batches + 1
        self._flag.copy_(torch.tensor([stop, marker, -marker], dtype=torch.int32))
        try:
            dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        except RuntimeError as error:
            _note_peers(error, trainer)
            raise
        self._decide(trainer, self._result(trainer, batches))


def _note_peers(error: RuntimeError, trainer: Trainer) -> None:
    # gloo says "Timed out waiting 10000ms for recv operation" or "Connection closed by peer": say why.
    error.add_note(
        f"in the trainer's stop vote at iteration {trainer.current_iteration} (epoch {trainer.current_epoch}): another "
        "rank did not join it within the process group's timeout or left the group. Look for that rank's own "
        "error, or for a rank stuck in its update function or a handler; init_process_group(timeout=...) sets how "
        "long the ranks wait for each other."
    )


def _uneven_message(trainer: Trainer, batches: int | None, most: int, fewest: int) -> str:
    if batches is None:
        here = "this rank was still running them when it voted"
    else:
        here = f"this rank ran {batches}"
    if fewest < 0:  # a vote from inside an epoch met the end of another rank's epoch
        there = "another rank was still running them" if batches is not None else f"another rank ended them after {most}"
    else:
        there = f"the ranks ran from {fewest} to {most}"
    return (
        f"The ranks ran different numbers of training batches in epoch {trainer.current_epoch} ({here}; {there}). "
        "Every rank must run as many batches per epoch, or the ranks' collectives (the trainer's stop vote, DDP's "
        "gradient all-reduce) pair up wrongly and the job hangs: shard the data with DistributedSampler (it pads "
        "the shares to equal length; drop_last=True drops the rest instead), or give every rank equally long data."
    )
