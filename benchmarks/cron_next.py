"""How long one ``next fire time`` takes: convexpy vs croniter vs cronsim.

Run ``python benchmarks/cron_next.py`` (add ``--json`` for machine-readable
output). For each expression, each library walks chains of consecutive fire
times from the same start (2024-01-01T00:00:30Z) and the best of several
rounds is reported in microseconds per step; building croniter/cronsim
iterators is left out of the timing, as is compiling the convexpy schedule.
"n/a" means the library refuses the expression.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter
from cronsim import CronSim

from convexpy.cron import compile_schedule

CASES: list[tuple[str, str | None]] = [
    ("*/5 * * * *", None),
    ("0 17 * * 1-5", None),
    ("0 0 L * *", None),
    ("0 0 L-3 * *", None),
    ("30 2 29 2 *", None),
    ("15 10 * * 5#3", None),
    ("0 0 13 * 5", None),
    ("0 0 LW * *", None),
    ("0 0 15W * *", None),
    ("0 0 * 2 1#5", None),
    ("0 9 * * 1-5", "Europe/Paris"),
]
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
CHAIN = 20  # steps per chain: "30 2 29 2 *" stays far from year 9999
ROUNDS = 5


def _best_us_per_step(make_chain: Callable[[], Callable[[], object]], budget_s: float) -> float:
    """Best of ROUNDS: microseconds per step, each round about budget_s long."""
    best = float("inf")
    for _ in range(ROUNDS):
        elapsed = 0.0
        steps = 0
        while elapsed < budget_s:
            step = make_chain()
            began = time.perf_counter()
            for _ in range(CHAIN):
                step()
            elapsed += time.perf_counter() - began
            steps += CHAIN
        best = min(best, elapsed / steps * 1e6)
    return best


def _convexpy(expr: str, tz: str | None) -> Callable[[], Callable[[], object]]:
    schedule = compile_schedule(expr, timezone=tz)
    start_ms = START.timestamp() * 1000

    def make_chain() -> Callable[[], object]:
        ts = start_ms

        def step() -> object:
            nonlocal ts
            ts = schedule.next_after(ts)
            return ts

        return step

    return make_chain


def _start(tz: str | None) -> datetime:
    return START.astimezone(ZoneInfo(tz)) if tz else START


def _croniter(expr: str, tz: str | None) -> Callable[[], Callable[[], object]]:
    croniter(expr, _start(tz))  # refuses unsupported expressions here

    def make_chain() -> Callable[[], object]:
        iterator = croniter(expr, _start(tz))
        return lambda: iterator.get_next(float)

    return make_chain


def _cronsim(expr: str, tz: str | None) -> Callable[[], Callable[[], object]]:
    CronSim(expr, _start(tz))

    def make_chain() -> Callable[[], object]:
        iterator = CronSim(expr, _start(tz))
        return lambda: next(iterator)

    return make_chain


def measure(budget_s: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for expr, tz in CASES:
        row: dict[str, object] = {"expr": expr, "timezone": tz}
        ours = _best_us_per_step(_convexpy(expr, tz), budget_s)
        row["convexpy_us"] = round(ours, 2)
        for name, factory in (("croniter", _croniter), ("cronsim", _cronsim)):
            try:
                chain = factory(expr, tz)
            except Exception:  # the library refuses this expression
                row[f"{name}_us"] = None
                row[f"{name}_ratio"] = None
                continue
            theirs = _best_us_per_step(chain, budget_s)
            row[f"{name}_us"] = round(theirs, 2)
            row[f"{name}_ratio"] = round(theirs / ours, 1)
        rows.append(row)
    return rows


def _cell(value: object, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value}{suffix}"


def print_table(rows: list[dict[str, object]]) -> None:
    header = ("expression", "convexpy µs", "croniter µs", "ratio", "cronsim µs", "ratio")
    lines = [header]
    for row in rows:
        label = str(row["expr"]) + (f" ({row['timezone']})" if row["timezone"] else "")
        lines.append(
            (
                label,
                _cell(row["convexpy_us"]),
                _cell(row["croniter_us"]),
                _cell(row["croniter_ratio"], "x"),
                _cell(row["cronsim_us"]),
                _cell(row["cronsim_ratio"], "x"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nµs per next fire time, best of {ROUNDS}; ratio = other / convexpy.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--budget", type=float, default=0.05, help="seconds per round per library (default 0.05)"
    )
    options = parser.parse_args(argv)
    rows = measure(options.budget)
    if options.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
