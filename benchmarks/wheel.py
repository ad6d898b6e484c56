"""Timer wheel throughput and memory against a heapq baseline.

Run: ``python benchmarks/wheel.py [N]`` (default 100_000 entries). Every
figure is the best of three runs, measured in this process, so the two
columns are comparable even on a noisy machine.
"""

from __future__ import annotations

import gc
import heapq
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convexpy.scheduler.wheel import TimerWheel

T0 = 1.7e12
HOUR = 3_600_000.0
DAY = 24 * HOUR


class Timers(Protocol):
    def add(self, key: int, deadline_ms: float) -> None: ...
    def cancel(self, key: int) -> bool: ...
    def advance(self, now_ms: float) -> list[tuple[float, int]]: ...
    def next_deadline(self) -> float | None: ...


class HeapTimers:
    """The baseline: a heap of (deadline, seq, key) with lazy cancellation.

    Cancel is a dict pop and leaves the heap entry behind, which is what a
    heap-based scheduler would do to keep cancel O(1).
    """

    __slots__ = ("heap", "live", "seq")

    def __init__(self, now_ms: float) -> None:
        self.heap: list[tuple[float, int, int]] = []
        self.live: dict[int, int] = {}
        self.seq = 0

    def add(self, key: int, deadline_ms: float) -> None:
        seq = self.seq = self.seq + 1
        self.live[key] = seq
        heapq.heappush(self.heap, (deadline_ms, seq, key))

    def cancel(self, key: int) -> bool:
        return self.live.pop(key, None) is not None

    def advance(self, now_ms: float) -> list[tuple[float, int]]:
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


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def bench_add(make: Factory, deadlines: list[float]) -> float:
    def run() -> float:
        timers = make(T0)
        add = timers.add
        return timed(lambda: [add(i, d) for i, d in enumerate(deadlines)])

    return len(deadlines) / best_of(3, run)


def bench_cancel(make: Factory, deadlines: list[float]) -> float:
    order = list(range(len(deadlines)))
    random.Random(1).shuffle(order)

    def run() -> float:
        timers = make(T0)
        for i, d in enumerate(deadlines):
            timers.add(i, d)
        cancel = timers.cancel
        return timed(lambda: [cancel(i) for i in order])

    return len(deadlines) / best_of(3, run)


def bench_advance(make: Factory, deadlines: list[float], step_ms: float, end: float) -> float:
    """Entries returned per second while advancing in fixed steps up to ``end``."""
    steps = [T0 + step_ms * (k + 1) for k in range(int((end - T0) / step_ms) + 1)]

    def run() -> float:
        timers = make(T0)
        for i, d in enumerate(deadlines):
            timers.add(i, d)
        advance = timers.advance
        elapsed = timed(lambda: [advance(now) for now in steps])
        assert timers.next_deadline() is None, "every entry should have been returned"
        return elapsed

    return len(deadlines) / best_of(3, run)


def bench_virtual_clock(make: Factory, deadlines: list[float]) -> float:
    """Entries per second when a virtual clock jumps from deadline to deadline."""

    def run() -> float:
        timers = make(T0)
        for i, d in enumerate(deadlines):
            timers.add(i, d)

        def drain() -> None:
            next_deadline, advance = timers.next_deadline, timers.advance
            while (nxt := next_deadline()) is not None:
                advance(nxt)

        return timed(drain)

    return len(deadlines) / best_of(3, run)


def bytes_per_entry(make: Factory, deadlines: list[float]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        timers = make(T0)
        base = tracemalloc.get_traced_memory()[0]
        for i, d in enumerate(deadlines):
            timers.add(i, d)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return used / len(deadlines)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(42)
    within_hour = [T0 + rng.uniform(0, HOUR) for _ in range(n)]
    dense = [T0 + rng.uniform(0, n) for _ in range(n)]  # about one per millisecond
    month = [T0 + rng.uniform(0, 30 * DAY) for _ in range(n)]

    def wheel(now: float) -> Timers:
        return TimerWheel[int](now)

    cases: list[tuple[str, str, Callable[[Factory], float]]] = [
        ("add (deadlines within 1 h)", "adds/s", lambda m: bench_add(m, within_hour)),
        ("cancel (random order)", "cancels/s", lambda m: bench_cancel(m, within_hour)),
        (
            "advance 1 ms steps (1 due/ms)",
            "due/s",
            lambda m: bench_advance(m, dense, 1.0, max(dense)),
        ),
        (
            "advance 1 s steps over 1 h",
            "due/s",
            lambda m: bench_advance(m, within_hour, 1000.0, T0 + HOUR),
        ),
        (
            "advance one 30-day jump",
            "due/s",
            lambda m: bench_advance(m, month, 30 * DAY, T0 + 30 * DAY),
        ),
        (
            "next_deadline+advance drain 1 h",
            "due/s",
            lambda m: bench_virtual_clock(m, within_hour),
        ),
        ("memory (deadlines within 1 h)", "bytes/entry", lambda m: bytes_per_entry(m, within_hour)),
        ("memory (deadlines over 30 d)", "bytes/entry", lambda m: bytes_per_entry(m, month)),
    ]
    rows = [(name, unit, measure(wheel), measure(HeapTimers)) for name, unit, measure in cases]

    print(f"TimerWheel vs heapq+dict, {n:,} entries, Python {sys.version.split()[0]}")
    header = f"{'operation':<34} {'unit':<12} {'TimerWheel':>12} {'heapq':>12} {'wheel/heap':>10}"
    print(header)
    print("-" * len(header))
    for name, unit, w, h in rows:
        print(f"{name:<34} {unit:<12} {w:>12,.0f} {h:>12,.0f} {w / h:>10.2f}")


if __name__ == "__main__":
    main()
