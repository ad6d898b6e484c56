"""The timer wheel against a heapq baseline, on the dispatcher's workload.

Run: ``python benchmarks/wheel.py`` (sizes 1k, 10k, 100k and 1M timers, about
ten minutes), ``--sizes 1000,100000``, ``--repeat 3``, ``--json``.

The workload is what the dispatcher gives its wheel: keys are job ids (real
ones, from ``convexpy.ids.new_id``); deadlines are epoch milliseconds with a
fraction, 98% within the next 60 s, 1% overdue (jobs found late at start-up)
and 1% up to a day ahead (further than the dispatcher ever loads, but the
wheel must still take them). A tenth of the timers are cancelled before the
advance runs. Advance moves the time the way the dispatcher does: either to
the next deadline plus the lateness of a wake-up (0-1 ms), or in steps of
1-5 ms; both end when every timer has been returned. The steady-state row
runs the dispatcher's loop over the same timers arriving during a minute
(each due within the minute after it arrives, a tenth cancelled on the way):
wake at the next deadline, arrival or cancellation, add, cancel, advance.
Its rate counts timers through the structure, the loop's own work included.

Both structures get the same calls with the same arguments; each figure is
the best of ``--repeat`` runs taken in alternation in this process, so the
ratio is meaningful on a noisy machine even when the absolute rates drift.
Sizes below 100,000 repeat the operation on fresh structures until about
100,000 timers were handled, and add up the times.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import describe_machine, machine, table

from convexpy.ids import new_id
from convexpy.scheduler.wheel import TimerWheel

T0 = 1_700_000_000_000.37  # a clock reading: epoch milliseconds with a fraction
WINDOW_MS = 60_000.0
DAY_MS = 86_400_000.0
CANCELLED = 0.1
PER_MEASUREMENT = 100_000  # timers handled per timed measurement, at least


class Timers(Protocol):
    def add(self, key: str, deadline_ms: float) -> None: ...
    def cancel(self, key: str) -> bool: ...
    def advance(self, now_ms: float) -> list[tuple[float, str]]: ...
    def next_deadline(self) -> float | None: ...
    def __len__(self) -> int: ...


class HeapTimers:
    """The baseline: a heap of (deadline, seq, key) with lazy cancellation.

    Cancel is a dict pop and leaves the heap entry behind, which is what a
    heap-based scheduler does to keep cancel O(1); the entry is dropped when
    it reaches the top. The sequence number orders ties by insertion.
    """

    __slots__ = ("heap", "live", "seq")

    def __init__(self, now_ms: float) -> None:
        self.heap: list[tuple[float, int, str]] = []
        self.live: dict[str, int] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.live)

    def add(self, key: str, deadline_ms: float) -> None:
        seq = self.seq = self.seq + 1
        self.live[key] = seq
        heapq.heappush(self.heap, (deadline_ms, seq, key))

    def cancel(self, key: str) -> bool:
        return self.live.pop(key, None) is not None

    def advance(self, now_ms: float) -> list[tuple[float, str]]:
        heap, live = self.heap, self.live
        due = []
        while heap and heap[0][0] <= now_ms:
            deadline, seq, key = heapq.heappop(heap)
            if live.get(key) == seq:
                del live[key]
                due.append((deadline, key))
        return due

    def next_deadline(self) -> float | None:
        heap, live = self.heap, self.live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


Factory = Callable[[float], Timers]

SYSTEMS: dict[str, Factory] = {"wheel": TimerWheel, "heapq": HeapTimers}


class Workload:
    """One size's timers, cancellations and clock readings (all seeded)."""

    def __init__(self, n: int) -> None:
        rng = random.Random(n)
        self.n = n
        self.keys = [new_id("_scheduled_functions") for _ in range(n)]
        deadlines = []
        for _ in range(n):
            kind = rng.random()
            if kind < 0.98:
                deadlines.append(T0 + rng.uniform(0, WINDOW_MS))
            elif kind < 0.99:
                deadlines.append(T0 - rng.uniform(0, 5_000))
            else:
                deadlines.append(T0 + rng.uniform(WINDOW_MS, DAY_MS))
        self.deadlines = deadlines
        self.end = max(deadlines)
        self.cancelled = rng.sample(self.keys, int(n * CANCELLED))
        self.due = n - len(self.cancelled)
        # Lateness of each wake-up, cycled through by advance_to_next.
        self.lateness = [rng.uniform(0, 1) for _ in range(4096)]
        steps = []
        now = T0
        while now < T0 + WINDOW_MS:
            now += rng.uniform(1, 5)
            steps.append(now)
        steps.append(self.end)
        self.steps = steps
        # Steady state: the same timers arrive over a minute, each due up to
        # a minute after it arrives; a tenth are cancelled before they are due.
        arrivals = sorted((T0 + rng.uniform(0, WINDOW_MS), key) for key in self.keys)
        self.arrivals = [(at, key, at + rng.uniform(0, WINDOW_MS)) for at, key in arrivals]
        cancelled = set(self.cancelled)
        self.cancels = sorted(
            (rng.uniform(at, deadline), key)
            for at, key, deadline in self.arrivals
            if key in cancelled
        )

    def load(self, make: Factory) -> Timers:
        timers = make(T0)
        add = timers.add
        for key, deadline in zip(self.keys, self.deadlines, strict=True):
            add(key, deadline)
        return timers

    def load_and_cancel(self, make: Factory) -> Timers:
        timers = self.load(make)
        cancel = timers.cancel
        for key in self.cancelled:
            cancel(key)
        return timers


# -- the operations: each returns (seconds, operations done) ------------------------


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds: steadier than wall time when other processes share the cores."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        fn()
        return time.process_time() - start
    finally:
        gc.enable()


def op_add(work: Workload, make: Factory) -> tuple[float, int]:
    timers = make(T0)
    add = timers.add
    pairs = list(zip(work.keys, work.deadlines, strict=True))

    def run() -> None:
        for key, deadline in pairs:
            add(key, deadline)

    return timed(run), work.n


def op_cancel(work: Workload, make: Factory) -> tuple[float, int]:
    timers = work.load(make)
    cancel = timers.cancel
    cancelled = work.cancelled

    def run() -> None:
        for key in cancelled:
            cancel(key)

    return timed(run), len(cancelled)


def drain_to_next(timers: Timers, lateness: list[float]) -> list[tuple[float, str]]:
    """The dispatcher's loop: sleep until the next deadline, wake a little late."""
    out: list[tuple[float, str]] = []
    next_deadline, advance, extend = timers.next_deadline, timers.advance, out.extend
    size = len(lateness)
    i = 0
    now = T0
    while (nxt := next_deadline()) is not None:
        if nxt > now:
            now = nxt
        now += lateness[i % size]
        i += 1
        extend(advance(now))
    return out


def drain_in_steps(timers: Timers, steps: list[float]) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    advance, extend = timers.advance, out.extend
    for now in steps:
        extend(advance(now))
    return out


def run_steady(timers: Timers, work: Workload) -> list[tuple[float, str]]:
    """The dispatcher's loop under a steady load: wake at the next deadline,
    arrival or cancellation (a little late), add what arrived, cancel what
    was cancelled, take what is due."""
    out: list[tuple[float, str]] = []
    add, cancel, advance = timers.add, timers.cancel, timers.advance
    next_deadline, extend = timers.next_deadline, out.extend
    arrivals, cancels, lateness = work.arrivals, work.cancels, work.lateness
    arrived = cancelled = wakes = 0
    now = T0
    while True:
        wake = next_deadline()
        if arrived < len(arrivals) and (wake is None or arrivals[arrived][0] < wake):
            wake = arrivals[arrived][0]
        if cancelled < len(cancels) and (wake is None or cancels[cancelled][0] < wake):
            wake = cancels[cancelled][0]
        if wake is None:
            return out
        now = max(now, wake) + lateness[wakes % len(lateness)]
        wakes += 1
        while arrived < len(arrivals) and arrivals[arrived][0] <= now:
            _, key, deadline = arrivals[arrived]
            add(key, deadline)
            arrived += 1
        while cancelled < len(cancels) and cancels[cancelled][0] <= now:
            cancel(cancels[cancelled][1])
            cancelled += 1
        extend(advance(now))


def op_steady(work: Workload, make: Factory) -> tuple[float, int]:
    timers = make(T0)
    return timed(lambda: run_steady(timers, work)), work.n


def op_advance_to_next(work: Workload, make: Factory) -> tuple[float, int]:
    timers = work.load_and_cancel(make)
    return timed(lambda: drain_to_next(timers, work.lateness)), work.due


def op_advance_steps(work: Workload, make: Factory) -> tuple[float, int]:
    timers = work.load_and_cancel(make)
    return timed(lambda: drain_in_steps(timers, work.steps)), work.due


Operation = Callable[[Workload, Factory], tuple[float, int]]

OPERATIONS: list[tuple[str, str, Operation]] = [
    ("add", "adds/s", op_add),
    ("cancel (10%, random order)", "cancels/s", op_cancel),
    ("advance to next deadline", "due/s", op_advance_to_next),
    ("advance in 1-5 ms steps", "due/s", op_advance_steps),
    ("steady: arrive, cancel, advance", "timers/s", op_steady),
]


def rate(work: Workload, make: Factory, op: Operation) -> float:
    """Operations per second over enough fresh structures to handle PER_MEASUREMENT timers."""
    seconds = 0.0
    done = 0
    for _ in range(max(1, PER_MEASUREMENT // work.n)):
        s, k = op(work, make)
        seconds += s
        done += k
    return done / seconds


def bytes_per_timer(work: Workload, make: Factory) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        timers = work.load(make)
        timers.next_deadline()  # the wheel places what was added
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del timers
    return used / work.n


def check_same_results(work: Workload) -> None:
    """Both structures return the same timers in the same order (untimed)."""
    for drain, arg in ((drain_to_next, work.lateness), (drain_in_steps, work.steps)):
        results = [drain(work.load_and_cancel(make), arg) for make in SYSTEMS.values()]
        assert results[0] == results[1], f"{drain.__name__}: the wheel and heapq disagree"
        assert len(results[0]) == work.due
    results = [run_steady(make(T0), work) for make in SYSTEMS.values()]
    assert results[0] == results[1], "run_steady: the wheel and heapq disagree"
    assert len(results[0]) == work.due


def measure(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        work = Workload(n)
        check_same_results(work)
        for name, unit, op in OPERATIONS:
            best = dict.fromkeys(SYSTEMS, 0.0)
            for r in range(repeat):
                # Alternate which system goes first, so a slow phase of the
                # machine does not always fall on the same one.
                order = list(SYSTEMS) if r % 2 == 0 else list(reversed(SYSTEMS))
                for system in order:
                    best[system] = max(best[system], rate(work, SYSTEMS[system], op))
            rows.append({"operation": name, "unit": unit, "size": n, **best})
        memory = {system: bytes_per_timer(work, make) for system, make in SYSTEMS.items()}
        rows.append({"operation": "memory", "unit": "bytes/timer", "size": n, **memory})
    return rows


def print_table(rows: list[dict[str, Any]], repeat: int) -> None:
    order = [name for name, _, _ in OPERATIONS] + ["memory"]
    body = [
        (
            row["operation"],
            f"{row['size']:,}",
            row["unit"],
            f"{row['wheel']:,.0f}",
            f"{row['heapq']:,.0f}",
            f"{row['wheel'] / row['heapq']:.2f}",
        )
        for row in sorted(rows, key=lambda row: (order.index(row["operation"]), row["size"]))
    ]
    print(table(("operation", "timers", "unit", "TimerWheel", "heapq", "wheel/heapq"), body))
    print(
        f"\nbest of {repeat}, alternating; wheel/heapq above 1: the wheel is faster "
        "(memory: uses more)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000,1000000",
        help="comma-separated numbers of timers (default 1000,10000,100000,1000000)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args(argv)
    sizes = [int(size) for size in options.sizes.split(",")]
    info = machine()
    rows = measure(sizes, options.repeat)
    if options.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=2))
    else:
        print(describe_machine(info))
        print_table(rows, options.repeat)


if __name__ == "__main__":
    main()
