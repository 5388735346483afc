"""``Trainer(terminate_on_nan=True)``: finding a NaN or an infinity in the training outputs
without a host sync per iteration."""

from __future__ import annotations

import cmath
import dataclasses
import decimal
import logging
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from . import _rng
from ._dispatch import NEVER

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger("ignite")


def non_finite(value: Any, on_device: list[torch.Tensor] | None = None) -> bool:
    """Whether ``value`` holds a NaN or an infinity, in any number type or container. With
    ``on_device``, floating tensors on an accelerator are appended to it instead of read."""
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return False
        if on_device is not None and value.device.type in _ASYNC_DEVICES:
            on_device.append(value)
            return False
        return not bool(torch.isfinite(value).all())
    if isinstance(value, (bool, numbers.Integral)):
        return False
    if isinstance(value, decimal.Decimal):
        return not value.is_finite()
    if isinstance(value, numbers.Complex):  # floats and complex numbers of Python and numpy
        return not cmath.isfinite(complex(value))
    if _rng.numpy is not None and isinstance(value, _rng.numpy.ndarray):
        return value.dtype.kind in "fc" and not bool(_rng.numpy.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return any(non_finite(item, on_device) for item in value)
    if isinstance(value, Mapping):
        return any(non_finite(item, on_device) for item in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(non_finite(getattr(value, field.name), on_device) for field in dataclasses.fields(value))
    return False


# Devices whose outputs terminate_on_nan checks there and reads back asynchronously.
_ASYNC_DEVICES = frozenset(("cuda",))


def _new_event(device: torch.device) -> Any:
    return torch.cuda.Event()


class _DeviceFlag:
    """The first iteration whose output held a NaN or an infinity on one device, kept on
    that device and copied to the host without waiting (a pinned tensor and an event)."""

    __slots__ = ("event", "first", "host", "in_flight")

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((), NEVER, dtype=torch.int64, device=device)
        self.host = torch.full((), NEVER, dtype=torch.int64, pin_memory=device.type == "cuda")
        self.event = _new_event(device)
        self.in_flight = False

    def update(self, tensor: torch.Tensor, iteration: int) -> None:
        # first = min(first, iteration) where the tensor is not finite: four small kernels, no sync.
        finite = torch.isfinite(tensor).all()
        torch.where(finite, self.first, self.first.clamp(max=iteration), out=self.first)

    def poll(self) -> int:
        """The first bad iteration the host has seen so far (NEVER: none); starts the next copy."""
        seen = NEVER
        if self.in_flight and self.event.query():
            seen = int(self.host)  # host memory the finished copy wrote: no device sync
            self.in_flight = False
        if not self.in_flight:
            self.host.copy_(self.first, non_blocking=True)
            device = self.first.device
            if device.type == "cuda":
                self.event.record(torch.cuda.current_stream(device))  # the stream the copy was queued on
            else:
                self.event.record()
            self.in_flight = True
        return seen

    def read(self) -> int:
        """The first bad iteration, waiting for the device (at the end of a run)."""
        return int(self.first)

    def reset(self) -> None:
        self.first.fill_(NEVER)
        self.in_flight = False  # a copy still in flight holds the old value: the next poll issues a new one


class NanGuard:
    """``Trainer(terminate_on_nan=True)``: host values are checked at once; tensors on an
    accelerator are checked there and the result read asynchronously, so the run stops a
    few iterations after the bad one, at the latest at the end of the epoch's batches."""

    def __init__(self) -> None:
        self._flags: dict[torch.device, _DeviceFlag] = {}

    def check(self, trainer: Trainer) -> None:
        output = trainer.training_history[-1]
        if type(output) is float:  # the usual case: as cheap as before
            if not math.isfinite(output):
                self._stop(trainer, trainer.current_iteration, output)
            return
        on_device: list[torch.Tensor] = []
        if non_finite(output, on_device):
            self._stop(trainer, trainer.current_iteration, output)
            return
        iteration = trainer.current_iteration
        for tensor in on_device:
            flag = self._flags.get(tensor.device)
            if flag is None:
                flag = self._flags[tensor.device] = _DeviceFlag(tensor.device)
            flag.update(tensor, iteration)
        if self._flags:
            first = min(flag.poll() for flag in self._flags.values())
            if first != NEVER:
                self._stop_at(trainer, first)

    def end_run(self, trainer: Trainer) -> bool:
        """Read the flags, waiting for the device, at the end of the epoch's batches: True
        when the run is stopped for a bad value seen there."""
        if not self._flags:
            return False
        first = min(flag.read() for flag in self._flags.values())
        if first == NEVER:
            return False
        self._stop_at(trainer, first)
        return True

    def discard(self) -> None:
        """Forget the flags (after an exception: the device may be unusable)."""
        self._flags.clear()

    def _stop_at(self, trainer: Trainer, iteration: int) -> None:
        for flag in self._flags.values():
            flag.reset()  # a later run() starts clean
        # The history's last value is the current iteration's; the bad one is that many back.
        back = trainer.current_iteration - iteration
        history = trainer.training_history
        output = history[-1 - back] if back < len(history) else "(no longer in the history)"
        self._stop(trainer, iteration, output)

    @staticmethod
    def _stop(trainer: Trainer, iteration: int, output: Any) -> None:
        later = iteration != trainer.current_iteration
        logger.warning(
            "Terminating: the training output of iteration %d (epoch %d) is not finite: %r%s",
            iteration,
            trainer.current_epoch,
            output,
            f" (read on the host at iteration {trainer.current_iteration})" if later else "",
        )
        trainer.terminate()
