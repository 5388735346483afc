"""Histories: every value an update function returned, in order, grouped in runs."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import decimal
import itertools
import math
import numbers
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableSequence, Sequence
from typing import Any, overload

import torch

from .serialization import decode, encode

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is optional
    numpy = None  # type: ignore[assignment]

__all__ = ["History", "scalars", "scalars_of"]


def scalars(value: Any) -> dict[str, float]:
    """The numbers in one update output, by name: ``{"": x}`` for a number (Python, numpy or
    ``Decimal``) or a one-element tensor or array, ``{"0": a, "1": b}`` for a tuple or list,
    ``{"key": v}`` for a dict or other mapping. Entries that are not numbers are left out.

    The output's one-element tensors are read together, with one copy per device: reading
    tensors on an accelerator still synchronises with it once, so call this per epoch or
    every few iterations, not on every iteration.
    """
    return scalars_of((value,))[0]


def scalars_of(outputs: Sequence[Any]) -> list[dict[str, float]]:
    """:func:`scalars` of each of ``outputs``, their one-element tensors read together with
    one copy per device: what a logger kept over a period costs one host sync, not one each."""
    converted = _to_host(outputs, move_large=False)
    return [_host_scalars(value) for value in (outputs if converted is None else converted)]


def _host_scalars(value: Any) -> dict[str, float]:
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, Mapping):
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
    if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)):
        return None
    if isinstance(value, (numbers.Real, decimal.Decimal)):  # numpy's numbers are registered as Real
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value.item())
    if numpy is not None and isinstance(value, numpy.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.item())
    return None


def history_value(value: Any) -> Any:
    """What a history keeps of an update output: tensors detached from their autograd graph,
    in any container (tuples, lists, dicts, namedtuples, other mappings, dataclasses), so a
    history never keeps graphs alive; one-element CPU tensors as Python floats (no device
    sync, and 24 bytes instead of a tensor's few hundred). A container is copied only when
    something in it changed; anything else is kept as it is.

    Tensors on an accelerator are kept as they are until their run ends, when the history
    converts them in bulk (see :class:`History`).
    """
    if isinstance(value, torch.Tensor):
        if value.device.type == "cpu" and value.numel() == 1 and value.dim() == 0:
            return value.item()
        return value.detach()
    return _rebuilt(value, history_value)


def _rebuilt(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with ``leaf`` applied to each item of its containers (tuples, lists, dicts,
    namedtuples, other mappings, dataclasses); a container is copied only when an item
    changed (tuples and lists always). Anything else is returned as it is."""
    kind = type(value)
    if kind is tuple or kind is list:  # the common containers: rebuilt at once
        return kind(leaf(item) for item in value)
    if kind is dict:
        return {key: leaf(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):  # namedtuples, list subclasses
        items = [leaf(item) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return kind._make(items) if hasattr(kind, "_make") else kind(items)
    if isinstance(value, Mapping):
        changed = {key: new for key, item in value.items() if (new := leaf(item)) is not item}
        if not changed:
            return value
        try:
            rebuilt = copy.copy(value)  # keeps the type and e.g. a defaultdict's factory
            rebuilt.update(changed)  # type: ignore[attr-defined]  # a read-only one raises, below
        except (TypeError, AttributeError):  # read-only mappings
            rebuilt = {**value, **changed}
        return rebuilt
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        changed = {name: new for name, item in fields if (new := leaf(item)) is not item}
        if not changed:
            return value
        clone = copy.copy(value)
        for name, new in changed.items():
            object.__setattr__(clone, name, new)  # frozen dataclasses too
        return clone
    return value


def _collect_tensors(value: Any, found: list[torch.Tensor]) -> None:
    # The containers _rebuilt walks, read without copying anything.
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_tensors(item, found)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect_tensors(item, found)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _collect_tensors(getattr(value, field.name), found)


def _is_number_kind(device: torch.device, dtype: torch.dtype, shape: torch.Size) -> bool:
    return math.prod(shape) == 1 and not dtype.is_complex and dtype is not torch.bool and device.type != "meta"


def _to_host(values: Sequence[Any], *, move_large: bool) -> list[Any] | None:
    """``values`` with their one-element tensors (at any depth of containers) as Python
    numbers, read with one copy per device, and, with ``move_large``, their other tensors on
    an accelerator copied to the host (non-blocking, waited for by that same copy). None when
    ``values`` hold no tensor to convert; ``values`` itself is left as it is."""
    # Flat lists, no container per value: at ~1,000 values a run, allocations set off the GC.
    holders: list[int] = []  # the indices of the values holding tensors
    found: list[torch.Tensor] = []
    for index, value in enumerate(values):
        kind = type(value)
        if kind is float:  # the usual case, skipped at once
            continue
        if kind is torch.Tensor:
            found.append(value)
            holders.append(index)
            continue
        before = len(found)
        _collect_tensors(value, found)
        if len(found) > before:
            holders.append(index)
    if not found:
        return None
    by_kind: dict[tuple[torch.device, torch.dtype, torch.Size], dict[int, torch.Tensor]] = {}
    for tensor in found:
        by_kind.setdefault((tensor.device, tensor.dtype, tensor.shape), {})[id(tensor)] = tensor
    replaced: dict[int, Any] = {}
    numbers: dict[torch.device, list[list[torch.Tensor]]] = {}
    copied_devices: set[torch.device] = set()
    with torch.no_grad():
        for (device, dtype, shape), tensors in by_kind.items():
            if _is_number_kind(device, dtype, shape):
                numbers.setdefault(device, []).append(list(tensors.values()))
            elif move_large and device.type not in ("cpu", "meta"):
                for tensor in tensors.values():
                    # Into pageable memory: a history keeps these, and pinned blocks kept for
                    # good would be allocated anew every run and stay page-locked.
                    host = torch.empty(shape, dtype=dtype, device="cpu")
                    host.copy_(tensor, non_blocking=device.type == "cuda")
                    replaced[id(tensor)] = host
                copied_devices.add(device)
        for device, groups in numbers.items():
            # Issued after the copies above, on the same stream: this blocking copy waits for them too.
            replaced.update(_numbers_of(device, groups))
            copied_devices.discard(device)
        for device in copied_devices:
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()
    if not replaced:
        return None

    def leaf(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            return replaced.get(id(item), item)
        return _rebuilt(item, leaf)

    result = list(values)
    for index in holders:
        result[index] = leaf(result[index])
    return result


def _numbers_of(device: torch.device, groups: list[list[torch.Tensor]]) -> dict[int, float | int]:
    """One device's one-element tensors, in groups of one dtype and shape, as Python numbers
    by ``id()``: stacked per group, joined, and copied to the host once."""
    parts = [torch.stack(tensors).reshape(-1) for tensors in groups]
    if len(parts) == 1:
        numbers = parts[0].cpu().tolist()  # ints stay ints, as .item() gives them
        integral = [False]
    else:
        # float64 holds every float and every integer below 2**53 exactly (MPS has no float64).
        common = torch.float32 if device.type == "mps" else torch.float64
        numbers = torch.cat([part.to(common) for part in parts]).cpu().tolist()
        integral = [not part.dtype.is_floating_point for part in parts]
    result: dict[int, float | int] = {}
    position = 0
    for tensors, to_int in zip(groups, integral):
        for tensor in tensors:
            number = numbers[position]
            result[id(tensor)] = int(number) if to_int else number
            position += 1
    return result


_FLOAT = frozenset((float,))


def _all_floats(values: MutableSequence[Any]) -> bool:
    # Checked at C speed, not by all() over a generator (benchmarks/README.md).
    return type(values) is array or _FLOAT.issuperset(map(type, values))


def _numeric_means(values: MutableSequence[Any]) -> dict[str, float]:
    if values and _all_floats(values):
        return {"": math.fsum(values) / len(values)}  # the usual case, and the fast path
    # Every one-element tensor of the run read at once: one copy per device, not one per value.
    converted = _to_host(values, move_large=False)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for value in values if converted is None else converted:
        for key, number in _host_scalars(value).items():
            sums[key] = sums.get(key, 0.0) + number
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def _one_numpy_type(values: MutableSequence[Any]) -> bool:
    kind = type(values[0])
    return issubclass(kind, numpy.generic) and kind.__module__ == "numpy" and all(type(v) is kind for v in values) \
        and numpy.dtype(kind).kind in "biufc"


def _chunks_on_host(chunks: list[MutableSequence[Any]]) -> list[MutableSequence[Any]]:
    """``chunks`` with the tensors of all of them converted as a run's end converts them, in
    one call (one copy per device), without changing the history."""
    pending = [index for index, chunk in enumerate(chunks) if chunk and not _all_floats(chunk)]
    if not pending:
        return chunks
    converted = _to_host([value for index in pending for value in chunks[index]], move_large=True)
    if converted is None:
        return chunks
    chunks = list(chunks)
    start = 0
    for index in pending:
        end = start + len(chunks[index])
        chunks[index] = converted[start:end]
        start = end
    return chunks


class History(Sequence):
    """A list-like record of update outputs, split into runs (one per epoch for training,
    one per validation pass for validation).

    Index and slice it like a list (``history[-1]``, ``history[-5:]``); ``run()`` gives one
    run's values and ``run_mean()`` their mean. When a run ends (the trainer ends it before
    TRAINING_EPOCH_COMPLETED or VALIDATION_COMPLETED; ``start_run()`` ends the previous one),
    its one-element tensors, in containers too, become Python numbers through one copy per
    device, and its other tensors on an accelerator are copied to the host: a history holds
    accelerator memory for one run at most. A finished run whose values are all floats is
    then kept as an ``array('d')``: 8 bytes a value instead of a list's 32.
    """

    __slots__ = ("_chunks", "_ended", "_means", "_offsets", "append")

    def __init__(self) -> None:
        # One chunk per run, after a chunk for values appended before any run; the last chunk
        # is a list being appended to, earlier ones are compacted. _offsets[i] is the index
        # of chunk i's first value.
        self._chunks: list[MutableSequence[Any]] = [[]]
        self._offsets: list[int] = [0]
        # The trainer calls this once per iteration: a bound C method, no Python frame.
        self.append: Callable[[Any], None] = self._chunks[-1].append
        # The last run_means(): (the run's chunk, its length then, the means). Several plugins
        # ask for the same epoch's means; a run only grows, by
        # append, so the same chunk at the same length has the same values.
        self._means: tuple[MutableSequence[Any], int, dict[str, float]] | None = None
        # The run last ended, its length then and whether it held floats only: ending it again
        # at that length is a no-op.
        self._ended: tuple[MutableSequence[Any], int, bool] | None = None

    def start_run(self) -> None:
        """Begin a new run: values appended from now on belong to it. Ends the previous run
        first (its tensors converted as the class docstring says)."""
        if self._end_run():
            self._chunks[-1] = array("d", self._chunks[-1])
        self._offsets.append(len(self))
        self._chunks.append([])
        self.append = self._chunks[-1].append

    def _end_run(self) -> bool:
        """Convert the tensors of the run in progress in bulk: one-element ones to Python
        numbers (one copy per device), others on an accelerator to the host (non-blocking
        copies, waited for once). The trainer calls it when a run ends, also when cut short.
        Returns whether the run is then a non-empty run of floats only (to be compacted)."""
        chunk = self._chunks[-1]
        ended = self._ended
        if ended is not None and ended[0] is chunk and ended[1] == len(chunk):
            return ended[2]
        # One scan at C speed, done once per run: start_run reuses it.
        floats = bool(chunk) and _all_floats(chunk)
        if not floats and chunk:
            converted = _to_host(chunk, move_large=True)
            if converted is not None:
                chunk[:] = converted  # in place: the loop holds chunk.append
                self._means = None
                floats = _all_floats(chunk)
        self._ended = (chunk, len(chunk), floats)
        return floats

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

    def state_dict(self, drop_last_run: bool = False, name: str = "history") -> dict[str, Any]:
        """The values, in a form ``torch.load(weights_only=True)`` reads back: ``floats``, a
        float64 tensor of the runs whose values are all floats (the run in progress too), one
        after the other; ``chunks``, one entry per run after the values from before any run:
        the count of its values in ``floats``, ``{"numpy": tensor}`` for a run of numpy
        numbers of one type, or a list of the values encoded by
        :func:`ignite.serialization.encode`. ``drop_last_run`` leaves out the run in progress,
        for a run that will be redone whole. Tensors still in a run (the one in progress) are
        saved as its end would convert them, read in one copy per device, not one per value.

        Raises :class:`ignite.serialization.NotLoadableError` naming the value (as
        ``{name}.run(i)[j]``) when one has no weights-only form.
        """
        chunks = self._chunks[:-1] if drop_last_run and len(self._chunks) > 1 else self._chunks
        chunks = _chunks_on_host(chunks)
        # One tensor for all float runs: torch.save pickles a list item by item, through a
        # Python callback each, and each tensor has a fixed cost besides (benchmarks/README.md).
        floats = array("d")
        entries: list[Any] = []
        for index, chunk in enumerate(chunks):
            if chunk and _all_floats(chunk):
                floats.extend(chunk)
                entries.append(len(chunk))
            elif chunk and numpy is not None and _one_numpy_type(chunk):
                entries.append({"numpy": torch.from_numpy(numpy.array(chunk))})
            else:
                where = f"{name}[{{}}]" if index == 0 else f"{name}.run({index - 1})[{{}}]"
                entries.append([encode(value, where.format(position)) for position, value in enumerate(chunk)])
        tensor = torch.frombuffer(floats, dtype=torch.float64) if floats else torch.zeros(0, dtype=torch.float64)
        return {"floats": tensor, "chunks": entries}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with those of :meth:`state_dict` (also of the earlier form,
        one tensor or list per run). Raises ValueError, leaving the history as it was, when
        ``state`` is not such a state."""
        try:
            floats = state["floats"].tolist() if "floats" in state else []
            chunks: list[MutableSequence[Any]] = []
            start = 0
            for entry in state["chunks"]:
                if isinstance(entry, int):
                    if start + entry > len(floats):
                        raise ValueError(f"a run of {entry} floats from position {start}, of {len(floats)} saved")
                    chunks.append(array("d", floats[start : start + entry]))
                    start += entry
                elif isinstance(entry, torch.Tensor):
                    chunks.append(array("d", entry.tolist()))
                elif isinstance(entry, dict):
                    chunks.append(list(entry["numpy"].numpy()))
                else:
                    chunks.append([decode(value) for value in entry])
            chunks[-1] = list(chunks[-1])  # the run in progress is appended to
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise ValueError(f"not a History state: {type(error).__name__}: {error}") from None
        self._chunks = chunks
        self._offsets = list(itertools.accumulate((len(chunk) for chunk in chunks[:-1]), initial=0))
        self.append = chunks[-1].append
        self._means = self._ended = None

    def _discard_last_run(self) -> None:
        """Forget the run in progress, as a resume from ``state_dict(drop_last_run=True)``
        would: the run before it is the one appended to again."""
        if len(self._chunks) > 1:
            self._chunks.pop()
            self._offsets.pop()
            self._chunks[-1] = list(self._chunks[-1])
            self.append = self._chunks[-1].append
            self._means = self._ended = None

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
