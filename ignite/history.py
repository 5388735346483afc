"""Histories: every value an update function returned, in order, grouped in runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import torch

__all__ = ["History", "scalars"]

def scalars(value: Any) -> dict[str, float]:
    """The numbers in one update output, by name: ``{"": x}`` for a number or a one-element
    tensor, ``{"0": a, "1": b}`` for a tuple or list, ``{"key": v}`` for a dict. Entries that
    are not numbers are left out.

    Reading a tensor on an accelerator synchronises with it: call this per epoch or every
    few iterations, not on every iteration.
    """
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    else:
        number = _as_number(value)
        return {} if number is None else {"": number}
    found = {}
    for key, item in items:
        number = _as_number(item)
        if number is not None:
            found[str(key)] = number
    return found


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.item())
    return None


def storable(value: Any) -> Any:
    """What a history keeps of an update output: tensors detached from their autograd graph
    (so a history never keeps graphs alive), one-element CPU tensors as Python floats (no
    device sync, and 24 bytes instead of a tensor's few hundred). Tuples, lists and dicts are
    converted element by element; anything else is kept as it is.
    """
    if isinstance(value, torch.Tensor):
        if value.device.type == "cpu" and value.numel() == 1 and value.dim() == 0:
            return value.item()
        return value.detach()
    if type(value) is tuple or type(value) is list:
        return type(value)(storable(item) for item in value)
    if type(value) is dict:
        return {key: storable(item) for key, item in value.items()}
    return value


class History(Sequence):
    """A list-like record of update outputs, split into runs (one per epoch for training,
    one per validation pass for validation).

    Index and slice it like a list (``history[-1]``, ``history[-5:]``); ``run()`` gives one
    run's values and ``run_mean()`` their mean.
    """

    __slots__ = ("_values", "_run_starts", "append")

    def __init__(self) -> None:
        self._values: list[Any] = []
        self._run_starts: list[int] = []
        # The trainer calls this once per iteration: a bound C method, no Python frame.
        self.append = self._values.append

    def start_run(self) -> None:
        """Begin a new run: values appended from now on belong to it."""
        self._run_starts.append(len(self._values))

    @property
    def num_runs(self) -> int:
        """How many runs were started."""
        return len(self._run_starts)

    def run(self, index: int = -1) -> list[Any]:
        """The values of one run (default: the last one, possibly still in progress)."""
        if not self._run_starts:
            raise IndexError("this history has no runs yet: nothing was trained or validated")
        if index < 0:
            index += len(self._run_starts)
        if not 0 <= index < len(self._run_starts):
            raise IndexError(f"run index out of range: {len(self._run_starts)} runs recorded")
        end = self._run_starts[index + 1] if index + 1 < len(self._run_starts) else len(self._values)
        return self._values[self._run_starts[index] : end]

    def run_means(self, index: int = -1) -> dict[str, float]:
        """The mean of each number in one run's outputs, keyed as :func:`scalars` keys them
        (``""`` for plain numbers). Empty when the run has no numeric output. NaN stays NaN.
        """
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for value in self.run(index):
            for key, number in scalars(value).items():
                sums[key] = sums.get(key, 0.0) + number
                counts[key] = counts.get(key, 0) + 1
        return {key: sums[key] / counts[key] for key in sums}

    def run_mean(self, index: int = -1, key: str | int = "") -> float | None:
        """The mean of one run's numeric outputs (or of item ``key`` of tuple or dict outputs),
        or None when there is none, e.g. an empty validation run.
        """
        return self.run_means(index).get(str(key))

    def state_dict(self) -> dict[str, Any]:
        """The values and run boundaries, for checkpoints."""
        return {"values": list(self._values), "run_starts": list(self._run_starts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with those of :meth:`state_dict`."""
        self._values[:] = state["values"]
        self._run_starts[:] = state["run_starts"]

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._values[index]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._values == other._values and self._run_starts == other._run_starts
        if isinstance(other, list):
            return self._values == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(v) for v in self._values[-3:])
        more = "..., " if len(self._values) > 3 else ""
        return f"History([{more}{shown}], runs={len(self._run_starts)})"
