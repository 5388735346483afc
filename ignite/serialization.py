"""Values in a form that ``torch.load(weights_only=True)`` reads back, checked when saving.

A weights-only load refuses every type it does not know, so a checkpoint holding a numpy
number or a user's dataclass is written without complaint and can never be read. :func:`encode`
is the check at save time: it returns the value with numpy numbers and arrays and
``decimal.Decimal`` turned into tagged tensors and strings that :func:`decode` turns back into
what they were, and raises :class:`NotLoadableError`, naming where the value sits and how to fix
it, for anything else a weights-only load would refuse.
"""

from __future__ import annotations

import collections
import decimal
from typing import Any

import torch

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is optional
    numpy = None  # type: ignore[assignment]

__all__ = ["NotLoadableError", "decode", "encode"]

# The key of the dicts that stand for an encoded value; no state dict of ours or torch's uses it.
TAG = "__ignite_encoded__"

# Stored as they are: what the weights-only unpickler admits (torch/_weights_only_unpickler.py).
_LEAVES = frozenset(
    (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.layout,
     torch.memory_format, torch.Tensor, torch.nn.Parameter, torch.Size)
)
_SEQUENCES = frozenset((list, tuple))
_MAPPINGS = frozenset((dict, collections.OrderedDict, collections.Counter))


class NotLoadableError(TypeError):
    """A value that ``torch.load(weights_only=True)`` would refuse was about to be saved. The
    message names where it sits, its type and the fix."""


def _allowed_by_user() -> frozenset[Any]:
    # torch.serialization.add_safe_globals() takes classes, or (class, "module.name") pairs.
    return frozenset(g[0] if isinstance(g, tuple) else g for g in torch.serialization.get_safe_globals())


def encode(value: Any, where: str) -> Any:
    """``value`` with every part a weights-only load refuses replaced by its safe form (numpy
    numbers and arrays as tensors, ``Decimal`` as its string, each tagged for :func:`decode`).
    Containers are rebuilt only where something inside them changed.

    Raises :class:`NotLoadableError` naming ``where`` (e.g. ``"objects['scaler']"``) followed
    by the key path inside ``value``, when a part has no safe form: a namedtuple, a dataclass,
    any other class that ``torch.serialization.add_safe_globals`` does not list.
    """
    return _encode(value, where, None)


def _encode(value: Any, where: str, allowed: frozenset[Any] | None) -> Any:
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind in _SEQUENCES:
        items = [_encode(item, f"{where}[{index}]", allowed) for index, item in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value)) else kind(items)
    if kind in _MAPPINGS:
        changed = False
        encoded = {}
        for key, item in value.items():
            _encode(key, f"{where} key {key!r}", allowed)
            new = encoded[key] = _encode(item, f"{where}[{key!r}]", allowed)
            changed = changed or new is not item
        return kind(encoded) if changed else value
    if kind is set:
        for item in value:
            _encode(item, f"{where} item {item!r}", allowed)
        return value
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        return _encode_numpy(value, where)
    if kind is decimal.Decimal:
        return {TAG: "decimal.Decimal", "value": str(value)}
    if allowed is None:
        allowed = _allowed_by_user()
    if kind in allowed:
        return value
    raise NotLoadableError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) refuses, so "
        "a checkpoint holding it could never be loaded. Return floats, tensors, or tuples, lists and dicts of "
        f"them instead, or allow the type before saving and loading with "
        f"torch.serialization.add_safe_globals([{kind.__qualname__}])"
    )


def _encode_numpy(value: Any, where: str) -> dict[str, Any]:
    try:
        tensor = torch.from_numpy(numpy.array(value, copy=True))
    except TypeError:  # object, string and other dtypes torch has no tensor type for
        raise NotLoadableError(
            f"{where} is a numpy {type(value).__name__} of dtype {value.dtype}, which has no tensor form and "
            "which torch.load(weights_only=True) refuses: return numbers, tensors or numeric arrays instead"
        ) from None
    kind = "numpy.ndarray" if isinstance(value, numpy.ndarray) else "numpy.generic"
    return {TAG: kind, "value": tensor}


def decode(value: Any) -> Any:
    """What :func:`encode` was given: tagged values turned back into numpy numbers and arrays
    and ``Decimal``; containers rebuilt only where something inside them changed."""
    kind = type(value)
    if kind in _SEQUENCES:
        items = [decode(item) for item in value]
        return value if all(a is b for a, b in zip(items, value)) else kind(items)
    if kind in _MAPPINGS:
        tag = value.get(TAG) if kind is dict else None
        if tag is not None:
            return _decode_tagged(tag, value["value"])
        decoded = {key: decode(item) for key, item in value.items()}
        changed = any(decoded[key] is not item for key, item in value.items())
        return kind(decoded) if changed else value
    return value


def _decode_tagged(tag: str, stored: Any) -> Any:
    if tag == "decimal.Decimal":
        return decimal.Decimal(stored)
    if tag in ("numpy.ndarray", "numpy.generic"):
        if numpy is None:  # pragma: no cover - saved with numpy, loaded without
            return stored
        array = stored.numpy()
        return array if tag == "numpy.ndarray" else array[()]
    raise ValueError(f"unknown encoded value {tag!r}: written by a newer ignite-trainer? Upgrade it to read it")
