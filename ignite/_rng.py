"""Random number generator states, in a form ``torch.load(weights_only=True)`` accepts."""

from __future__ import annotations

import random
from array import array
from typing import Any

import torch

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is optional
    numpy = None  # type: ignore[assignment]


def get_states() -> dict[str, Any]:
    """The states of torch's CPU (and CUDA, when in use), Python's and NumPy's global RNGs, as
    they return them: taken at every epoch's start, so kept cheap, and only turned into
    tensors by :func:`storable` when a state is saved."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    return states


def storable(states: dict[str, Any]) -> dict[str, Any]:
    """``states`` in a form ``torch.load(weights_only=True)`` accepts (states already in that
    form are returned as they are)."""
    version, internal, gauss = states["python"]
    if not isinstance(internal, torch.Tensor):
        # Its 625 ints as one tensor (pickled one by one they slow torch.save), through an array,
        # the fastest way in (benchmarks/README.md).
        states = {**states, "python": (version, torch.frombuffer(array("q", internal), dtype=torch.int64), gauss)}
    if "numpy" in states and not isinstance(states["numpy"][1], torch.Tensor):
        kind, keys, position, has_gauss, cached = states["numpy"]
        # An ndarray is not among the types a weights-only load admits: store a tensor.
        states = {**states, "numpy": (kind, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)}
    return states


def set_states(states: dict[str, Any]) -> None:
    """Restore what :func:`get_states` or :func:`storable` returned."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    # A tuple: as get_states() took it, or in states saved before the tensor form.
    random.setstate((version, tuple(internal.tolist() if isinstance(internal, torch.Tensor) else internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states and numpy is not None:
        kind, keys, position, has_gauss, cached = states["numpy"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys
        numpy.random.set_state((kind, keys.astype("uint32"), position, has_gauss, cached))
