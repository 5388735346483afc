"""``Trainer(profile=True)``: time spent in each handler, plugin hook and update function."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Profiler:
    """Wraps callables with timers; unprofiled trainers never create one, so they pay nothing."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str, str], list[float]] = {}
        self.run_seconds = 0.0

    def wrap(self, kind: str, name: str, event: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` timed under (kind, name, event); the wrapper passes any arguments on."""
        entry = self._stats.setdefault((kind, name, event), [0, 0.0])
        clock = time.perf_counter

        def timed(*args: Any) -> Any:
            start = clock()
            try:
                return function(*args)
            finally:
                entry[0] += 1
                entry[1] += clock() - start

        return timed

    def report(self) -> list[dict[str, Any]]:
        """One row per (kind, name, event) that was called, slowest first, plus the rest of
        the run (the loop itself and data loading) as kind ``trainer``."""
        rows: list[dict[str, Any]] = [
            {"kind": kind, "name": name, "event": event, "calls": int(calls), "total_s": total}
            for (kind, name, event), (calls, total) in self._stats.items()
            if calls
        ]
        rest = self.run_seconds - sum(row["total_s"] for row in rows)
        rows.append({"kind": "trainer", "name": "loop and data loading", "event": "", "calls": 1, "total_s": max(rest, 0.0)})
        for row in rows:
            row["mean_us"] = row["total_s"] / row["calls"] * 1e6
            row["share"] = row["total_s"] / self.run_seconds if self.run_seconds else 0.0
        return sorted(rows, key=lambda row: row["total_s"], reverse=True)

    def table(self) -> str:
        """The report as a text table."""
        lines = [f"{'kind':<9}{'name':<40}{'event':<32}{'calls':>9}{'total s':>10}{'mean us':>11}{'share':>8}"]
        for row in self.report():
            lines.append(
                f"{row['kind']:<9}{row['name'][:39]:<40}{row['event'][:31]:<32}{row['calls']:>9}"
                f"{row['total_s']:>10.3f}{row['mean_us']:>11.1f}{row['share']:>8.1%}"
            )
        return "\n".join(lines)
