"""The once-per-run check that every rank is set up alike: the same active plugins (and
versions), validation or not, as many training batches per epoch where ``len()`` says, the same
ignite version, ``max_epochs``, starting point and stop-vote period.

Ranks that differ in these hang or crash later: a plugin active on one rank only runs its
collectives alone (the other ranks wait forever), and different batch counts or validation
pair the ranks' collectives wrongly, which gloo ends with ``op.preamble.length <= op.nbytes``.
So :func:`check` runs at the start of ``run()``, before any plugin hook can run a collective:
one all-reduce of a hash of this rank's facts (MAX of the hash and of its negation), and, only
when the hashes differ, an all-gather of the facts themselves, from which every rank builds the
same :class:`~ignite.distributed.RankMismatchError`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from . import distributed

if TYPE_CHECKING:
    from .trainer import Trainer

# The hash is kept below 2**62 so that its negation fits an int64 too.
_HASH_BITS = (1 << 62) - 1


def facts(trainer: Trainer) -> dict[str, Any]:
    """What must be the same on every rank, as plain values (comparable and picklable)."""
    from . import __version__  # not at import time: ignite/__init__ imports the trainer first

    try:
        batches: int | None = len(trainer.training_data)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):  # no len(): compared at the end of each epoch instead
        batches = None
    plugins = tuple(
        sorted((name, record.origin) for name, record in trainer._plugin_records.items() if record.status == "active")
    )
    vote = trainer._dispatch.stop_vote
    return {
        "ignite": __version__,
        "plugins": plugins,
        "validation": trainer.validation_data is not None,
        "batches": batches,
        "max_epochs": trainer.max_epochs,
        "start": (trainer.current_epoch, trainer.current_iteration, trainer._position.pending is not None),
        "vote_every": vote.every if vote is not None else None,
    }


def _digest(values: dict[str, Any]) -> int:
    # repr() of these plain values is the same in every process; hash() of a str is not.
    return int.from_bytes(hashlib.sha256(repr(values).encode()).digest()[:8], "little") & _HASH_BITS


def check(trainer: Trainer) -> None:
    """Raise :class:`~ignite.distributed.RankMismatchError` on every rank when the ranks'
    :func:`facts` differ. A collective: every rank calls it at the start of ``run()``."""
    mine = facts(trainer)
    digest = _digest(mine)
    pair = torch.tensor([digest, -digest], dtype=torch.int64, device=distributed.reduction_device())
    try:
        dist.all_reduce(pair, op=dist.ReduceOp.MAX)
    except RuntimeError as error:
        error.add_note(
            "in the check at the start of Trainer.run() that every rank is set up alike: another rank did not call "
            "run() within the process group's timeout (init_process_group(timeout=...)) or left the group; look "
            "for that rank's own error"
        )
        raise
    most, negated_least = pair.tolist()
    if most == -negated_least:
        return
    message = mismatch_message(distributed.all_gather_object(mine))
    if message is not None:  # None: only ranks without len(training_data) differed from the rest
        raise distributed.RankMismatchError(message)


def _ranks(ranks: list[int]) -> str:
    """``rank 1``, ``ranks 0-3, 5``."""
    spans: list[list[int]] = []
    for rank in ranks:
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"rank {text}" if len(ranks) == 1 else f"ranks {text}"


def _have(ranks: list[int]) -> str:
    """``rank 1 has``, ``ranks 0-3 have``."""
    return f"{_ranks(ranks)} {'has' if len(ranks) == 1 else 'have'}"


def _by_value(values: list[Any]) -> list[tuple[Any, list[int]]]:
    """The distinct values, each with the ranks that have it, in the order of the first rank."""
    groups: dict[str, tuple[Any, list[int]]] = {}
    for rank, value in enumerate(values):
        groups.setdefault(repr(value), (value, []))[1].append(rank)
    return list(groups.values())


def _plugin_lines(gathered: list[dict[str, Any]]) -> list[str]:
    active = [dict(facts["plugins"]) for facts in gathered]
    lines = []
    for name in sorted(set().union(*active)):
        origins = _by_value([plugins.get(name) for plugins in active])
        if len(origins) == 1:
            continue
        missing = [ranks for origin, ranks in origins if origin is None]
        present = [(origin, ranks) for origin, ranks in origins if origin is not None]
        if missing:
            there = "; ".join(f"{_have(ranks)} it ({origin})" for origin, ranks in present)
            lines.append(f"{_have(missing[0])} no active plugin {name!r}, {there}")
        else:
            versions = "; ".join(f"{_ranks(ranks)} {origin}" for origin, ranks in present)
            lines.append(f"plugin {name!r} comes from different distributions or versions: {versions}")
    return lines


# What each fact is called in the message, and how to make the ranks agree on it.
_FIXES = {
    "plugins": "install the same plugins on every rank and give every rank the same plugins= options and "
    "register_plugin() calls (plugins that act on rank 0 only, such as loggers, are active on every rank too)",
    "ignite": "install the same ignite version on every rank",
    "validation": "give every rank validation_data (a DistributedSampler shard, even an empty one) or none",
    "batches": "shard the data with DistributedSampler (equal shares), or give every rank equally long data",
    "max_epochs": "call run(max_epochs=...) with the same value on every rank",
    "start": "load the same trainer state on every rank before run() (or none)",
    "vote_every": "set IGNITE_STOP_VOTE_EVERY to the same value on every rank, or on none",
}

_DESCRIBE = {
    "ignite": lambda value: f"ignite {value}",
    "validation": lambda value: "validation data" if value else "no validation data",
    "batches": lambda value: (
        f"{value} training batches per epoch" if value is not None else "training data without len()"
    ),
    "max_epochs": lambda value: f"max_epochs={value}",
    "start": lambda value: f"epoch {value[0]}, iteration {value[1]}{' (mid-epoch)' if value[2] else ''}",
    "vote_every": lambda value: f"a stop vote every {value} iterations",
}


def mismatch_message(gathered: list[dict[str, Any]]) -> str | None:
    """The error text for the facts of every rank, by rank: what differs, where, and the fix;
    None when nothing that is compared differs."""
    problems: list[str] = []
    for key in gathered[0]:
        values = [facts[key] for facts in gathered]
        if key == "batches":
            # Only ranks that know their length are compared; the others are checked each epoch.
            known = [value for value in values if value is not None]
            if len(set(known)) <= 1:
                continue
        elif len(_by_value(values)) == 1:
            continue
        if key == "plugins":
            detail = "; ".join(_plugin_lines(gathered))
        else:
            describe = _DESCRIBE[key]
            detail = "; ".join(f"{_have(ranks)} {describe(value)}" for value, ranks in _by_value(values))
        problems.append(f"- {detail}: {_FIXES[key]}.")
    if not problems:
        return None
    return (
        f"The {len(gathered)} ranks are not set up alike, and would hang or crash in a collective later:\n"
        + "\n".join(problems)
    )
