"""Where a run stands, for exact resume: the live position of a running trainer and the saved
position inside an epoch that ``Trainer.state_dict()`` stores and a resume replays to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import _rng

# Between epochs, or in an epoch's training or validation phase.
Phase = Literal["between", "training", "validation"]


@dataclass(frozen=True)
class SavedPosition:
    """A point inside an epoch: its phase, the batches of that phase done, the RNG states from
    just before the phase's data was iterated (None for a validation run whose start is the
    point's own), and the RNG states at the point. A resume replays the phase from
    ``start_rng`` and skips ``batches_done`` batches; a validation run is run again whole."""

    phase: Literal["training", "validation"]
    batches_done: int
    start_rng: dict[str, Any] | None
    rng: dict[str, Any]

    def to_state(self) -> dict[str, Any]:
        """The ``position`` entry of a Trainer state (the RNG states at the point are stored
        beside it, as ``rng``)."""
        start_rng = self.start_rng and _rng.storable(self.start_rng)
        return {"phase": self.phase, "batches_done": self.batches_done, "start_rng": start_rng}

    @classmethod
    def from_state(cls, position: Mapping[str, Any], rng: dict[str, Any], iterations_done: int) -> SavedPosition:
        """The position saved as :meth:`to_state`; ValueError if it is not one inside an epoch."""
        phase, batches_done = position["phase"], position["batches_done"]
        if phase not in ("training", "validation") or not 0 <= batches_done <= iterations_done:
            raise ValueError(f"position {dict(position)!r} is not one inside an epoch")
        return cls(phase, int(batches_done), position["start_rng"], rng)


@dataclass
class RunPosition:
    """A trainer's live position: its phase, the iteration count its epoch started at, the RNG
    states from just before the phase's data was iterated, and a saved position loaded but
    not replayed yet (until then it is still where the run stands)."""

    phase: Phase = "between"
    epoch_start_iteration: int = 0
    phase_start_rng: dict[str, Any] | None = None
    pending: SavedPosition | None = None
    # A validation run cut short: kept visible until the next run() runs it again whole.
    partial_validation_run: bool = False
