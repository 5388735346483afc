"""Histories: every value an update function returned, in order, grouped in runs."""

from __future__ import annotations

import bisect
import math
import itertools
from array import array
from collections.abc import Iterator, MutableSequence, Sequence
from typing import Any, Callable, overload

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


_FLOAT = frozenset((float,))


def _all_floats(values: MutableSequence[Any]) -> bool:
    # Checked at C speed (~10x faster than all() over a generator: ~10 us for 2,000 values).
    return type(values) is array or _FLOAT.issuperset(map(type, values))


def _numeric_means(values: MutableSequence[Any]) -> dict[str, float]:
    if values and _all_floats(values):
        return {"": math.fsum(values) / len(values)}  # the usual case, ~100x faster
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for value in values:
        for key, number in scalars(value).items():
            sums[key] = sums.get(key, 0.0) + number
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def _compacted(values: MutableSequence[Any]) -> MutableSequence[Any]:
    if values and _all_floats(values):
        return array("d", values)
    return values


class History(Sequence):
    """A list-like record of update outputs, split into runs (one per epoch for training,
    one per validation pass for validation).

    Index and slice it like a list (``history[-1]``, ``history[-5:]``); ``run()`` gives one
    run's values and ``run_mean()`` their mean. A finished run whose values are all floats is
    kept as an ``array('d')``: 8 bytes a value instead of a list's 32.
    """

    __slots__ = ("_chunks", "_offsets", "_means", "append")

    def __init__(self) -> None:
        # One chunk per run, after a chunk for values appended before any run; the last chunk
        # is a list being appended to, earlier ones are compacted. _offsets[i] is the index
        # of chunk i's first value.
        self._chunks: list[MutableSequence[Any]] = [[]]
        self._offsets: list[int] = [0]
        # The trainer calls this once per iteration: a bound C method, no Python frame.
        self.append: Callable[[Any], None] = self._chunks[-1].append
        # The last run_means(): (the run's chunk, its length then, the means). Several plugins
        # ask for the same epoch's means (~50 us for 2,000 values); a run only grows, by
        # append, so the same chunk at the same length has the same values.
        self._means: tuple[MutableSequence[Any], int, dict[str, float]] | None = None

    def start_run(self) -> None:
        """Begin a new run: values appended from now on belong to it."""
        self._chunks[-1] = _compacted(self._chunks[-1])
        self._offsets.append(len(self))
        self._chunks.append([])
        self.append = self._chunks[-1].append

    @property
    def num_runs(self) -> int:
        """How many runs were started."""
        return len(self._chunks) - 1

    def _run_chunk(self, index: int) -> MutableSequence[Any]:
        runs = len(self._chunks) - 1
        if not runs:
            raise IndexError("this history has no runs yet: nothing was trained or validated")
        if not -runs <= index < runs:
            raise IndexError(f"run index out of range: {runs} runs recorded")
        return self._chunks[index if index < 0 else index + 1]

    def run(self, index: int = -1) -> list[Any]:
        """The values of one run (default: the last one, possibly still in progress)."""
        return list(self._run_chunk(index))

    def run_means(self, index: int = -1) -> dict[str, float]:
        """The mean of each number in one run's outputs, keyed as :func:`scalars` keys them
        (``""`` for plain numbers). Empty when the run has no numeric output. NaN stays NaN.
        """
        values = self._run_chunk(index)
        cached = self._means
        if cached is not None and cached[0] is values and cached[1] == len(values):
            return dict(cached[2])
        means = _numeric_means(values)
        self._means = (values, len(values), means)
        return dict(means)

    def run_mean(self, index: int = -1, key: str | int = "") -> float | None:
        """The mean of one run's numeric outputs (or of item ``key`` of tuple or dict outputs),
        or None when there is none, e.g. an empty validation run.
        """
        return self.run_means(index).get(str(key))

    def state_dict(self, drop_last_run: bool = False) -> dict[str, Any]:
        """The values: ``floats``, a float64 tensor of the runs whose values are all floats
        (the run in progress too), one after the other; ``chunks``, one entry per run after
        the values from before any run: the count of its values in ``floats``, or a list of
        them. ``drop_last_run`` leaves out the run in progress, for a run that will be redone
        whole."""
        chunks = self._chunks[:-1] if drop_last_run and len(self._chunks) > 1 else self._chunks
        # One tensor for all float runs: torch.save pickles a list item by item through a
        # Python callback each (~0.5 us a value), and costs ~10-20 us a tensor besides.
        floats = array("d")
        entries: list[int | list[Any]] = []
        for chunk in chunks:
            if chunk and _all_floats(chunk):
                floats.extend(chunk)
                entries.append(len(chunk))
            else:
                entries.append(list(chunk))
        tensor = torch.frombuffer(floats, dtype=torch.float64) if floats else torch.zeros(0, dtype=torch.float64)
        return {"floats": tensor, "chunks": entries}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with those of :meth:`state_dict` (also of the earlier form,
        one tensor or list per run)."""
        floats = state["floats"].tolist() if "floats" in state else []
        chunks: list[MutableSequence[Any]] = []
        start = 0
        for entry in state["chunks"]:
            if isinstance(entry, int):
                chunks.append(array("d", floats[start : start + entry]))
                start += entry
            elif isinstance(entry, torch.Tensor):
                chunks.append(array("d", entry.tolist()))
            else:
                chunks.append(list(entry))
        chunks[-1] = list(chunks[-1])  # the run in progress is appended to
        self._chunks = chunks
        self._offsets = list(itertools.accumulate((len(chunk) for chunk in chunks[:-1]), initial=0))
        self.append = chunks[-1].append

    def _value(self, index: int) -> Any:
        chunk = bisect.bisect_right(self._offsets, index) - 1
        return self._chunks[chunk][index - self._offsets[chunk]]

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        last, offset = self._chunks[-1], self._offsets[-1]
        length = offset + len(last)
        if isinstance(index, slice):
            start, stop, step = index.indices(length)
            if start >= offset and stop >= offset:  # within the run in progress: the usual case
                return last[start - offset : stop - offset : step]
            return [self._value(i) for i in range(start, stop, step)]
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("history index out of range")
        return last[index - offset] if index >= offset else self._value(index)

    def __len__(self) -> int:
        return self._offsets[-1] + len(self._chunks[-1])

    def __iter__(self) -> Iterator[Any]:
        return itertools.chain.from_iterable(self._chunks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return list(self) == list(other) and self._offsets == other._offsets
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(v) for v in self[-3:])
        more = "..., " if len(self) > 3 else ""
        return f"History([{more}{shown}], runs={self.num_runs})"
