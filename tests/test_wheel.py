"""Tests for the timer wheel: edge cases, then a comparison with a heap model."""

from __future__ import annotations

import heapq
import math
import random
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from convexpy.scheduler.wheel import TimerWheel

T0 = 1.7e12  # a realistic epoch time in milliseconds
DAY = 86_400_000.0

K = TypeVar("K")


def keys(due: list[tuple[float, K]]) -> list[K]:
    return [key for _, key in due]


# -- basics -----------------------------------------------------------------


def test_empty_wheel() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    assert len(wheel) == 0
    assert wheel.next_deadline() is None
    assert wheel.advance(T0 + 1000) == []
    assert wheel.now_ms == T0 + 1000


def test_due_exactly_at_deadline_not_before() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.add("a", T0 + 10)
    assert "a" in wheel
    assert wheel.advance(T0 + 9.999) == []
    assert wheel.advance(T0 + 10) == [(T0 + 10, "a")]
    assert "a" not in wheel
    assert len(wheel) == 0


def test_same_deadline_returns_in_insertion_order() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    names = ["c", "a", "e", "b", "d"]
    for name in names:
        wheel.add(name, T0 + 500)
    wheel.add("early", T0 + 499.5)
    assert keys(wheel.advance(T0 + 1000)) == ["early", *names]


def test_order_across_levels_and_ticks() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0, slots_per_level=4, levels=3)
    rng = random.Random(7)
    deadlines = [T0 + rng.uniform(-50, 200) for _ in range(300)]
    for i, d in enumerate(deadlines):
        wheel.add(i, d)
    due = wheel.advance(T0 + 1000)
    assert due == sorted(((d, i) for i, d in enumerate(deadlines)), key=lambda x: (x[0], x[1]))


def test_past_deadline_due_at_next_advance_even_without_time_passing() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.advance(T0 + 100)
    wheel.add("late", T0 + 5)
    wheel.add("now", T0 + 100)
    wheel.add("soon", T0 + 100.5)
    assert wheel.next_deadline() == T0 + 5
    assert wheel.advance(T0 + 100) == [(T0 + 5, "late"), (T0 + 100, "now")]
    assert wheel.advance(T0 + 100.25) == []
    assert wheel.advance(T0 + 100.5) == [(T0 + 100.5, "soon")]


def test_fractional_deadlines_within_one_tick() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0 + 0.1)
    for name, frac in [("x", 0.9), ("y", 0.3), ("z", 0.6)]:
        wheel.add(name, T0 + 7 + frac)
    assert wheel.next_deadline() == T0 + 7.3
    assert wheel.advance(T0 + 7.0) == []
    assert keys(wheel.advance(T0 + 7.3)) == ["y"]
    assert wheel.next_deadline() == T0 + 7.6
    assert wheel.advance(T0 + 7.59) == []
    assert keys(wheel.advance(T0 + 7.95)) == ["z", "x"]


def test_coarse_ticks_stay_exact() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, tick_ms=1000, slots_per_level=8, levels=2)
    wheel.add("a", T0 + 1500.5)
    wheel.add("b", T0 + 999.999)
    assert wheel.advance(T0 + 999.998) == []
    assert keys(wheel.advance(T0 + 1000)) == ["b"]
    assert wheel.advance(T0 + 1500.4) == []
    assert keys(wheel.advance(T0 + 1500.5)) == ["a"]


def test_integer_deadlines_are_accepted() -> None:
    wheel: TimerWheel[str] = TimerWheel(0)
    wheel.add("a", 3)
    assert wheel.advance(3) == [(3, "a")]


def test_negative_times() -> None:
    wheel: TimerWheel[str] = TimerWheel(-1000.5)
    wheel.add("a", -10.25)
    wheel.add("b", -2000)
    assert keys(wheel.advance(-1000.5)) == ["b"]
    assert wheel.advance(-10.3) == []
    assert keys(wheel.advance(-10.25)) == ["a"]


# -- cancel and re-add ------------------------------------------------------


def test_cancel() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.add("a", T0 + 5)
    wheel.add("b", T0 + 5)
    wheel.add("far", T0 + 100 * DAY)
    assert wheel.cancel("a") is True
    assert wheel.cancel("a") is False
    assert wheel.cancel("missing") is False
    assert wheel.cancel("far") is True
    assert len(wheel) == 1
    assert wheel.advance(T0 + 200 * DAY) == [(T0 + 5, "b")]


def test_cancel_after_cascade_and_in_ready_bucket() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, slots_per_level=4, levels=3)
    wheel.add("high", T0 + 40)  # starts on level 2
    wheel.add("ready", T0 + 20.5)
    wheel.add("keep", T0 + 41)
    assert wheel.advance(T0 + 20) == []  # "ready" now waits in the ready bucket
    assert wheel.cancel("ready")
    assert wheel.advance(T0 + 39) == []  # "high" cascaded down
    assert wheel.cancel("high")
    assert wheel.next_deadline() == T0 + 41
    assert keys(wheel.advance(T0 + 50)) == ["keep"]


def test_cancelled_entry_updates_next_deadline() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.add("a", T0 + 10)
    wheel.add("b", T0 + 70_000)
    assert wheel.next_deadline() == T0 + 10
    wheel.cancel("a")
    assert wheel.next_deadline() == T0 + 70_000
    wheel.cancel("b")
    assert wheel.next_deadline() is None


def test_readd_replaces_deadline() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.add("a", T0 + 10)
    wheel.add("b", T0 + 20)
    wheel.add("a", T0 + 30)  # later
    assert len(wheel) == 2
    assert wheel.next_deadline() == T0 + 20
    assert keys(wheel.advance(T0 + 25)) == ["b"]
    wheel.add("a", T0 + 1)  # earlier, now in the past
    assert wheel.advance(T0 + 25) == [(T0 + 1, "a")]
    assert len(wheel) == 0


def test_equal_deadlines_added_at_different_times_keep_insertion_order() -> None:
    """ "first" sits on a higher level when "second" lands directly on level 0."""
    wheel: TimerWheel[str] = TimerWheel(T0, slots_per_level=4, levels=3)
    deadline = T0 + 14.5
    wheel.add("first", deadline)
    wheel.advance(T0 + 11)
    wheel.add("second", deadline)
    wheel.add("third", deadline)
    assert keys(wheel.advance(deadline)) == ["first", "second", "third"]


def test_cancelled_overflow_entries_do_not_pile_up() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0, slots_per_level=4, levels=2)
    for i in range(1000):
        wheel.add(i, T0 + 1000 + i)
        wheel.cancel(i)
    wheel.add(-1, T0 + 5000)
    assert len(wheel._heap) < 200  # white box: the lazily cancelled heap is compacted
    assert wheel.advance(T0 + 5000) == [(T0 + 5000, -1)]


def test_readd_counts_as_new_insertion_for_ties() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    for name in "abc":
        wheel.add(name, T0 + 5)
    wheel.add("a", T0 + 5)
    assert keys(wheel.advance(T0 + 5)) == ["b", "c", "a"]


def test_readd_moves_between_overflow_and_wheel() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, slots_per_level=4, levels=2)
    wheel.add("a", T0 + 1000)  # overflow
    wheel.add("a", T0 + 3)  # wheel
    wheel.add("b", T0 + 3)
    wheel.add("b", T0 + 2000)  # back to overflow
    assert keys(wheel.advance(T0 + 1500)) == ["a"]
    assert keys(wheel.advance(T0 + 2000)) == ["b"]


# -- level boundaries, overflow, jumps ---------------------------------------


@pytest.mark.parametrize("start_offset", [0, 1, 3, 15, 16, 63, 255, 256, 1023])
def test_every_deadline_around_level_boundaries(start_offset: int) -> None:
    """Step one tick at a time past each level boundary; each entry is due on time."""
    s = 4
    start = 1_000_000 + start_offset
    wheel: TimerWheel[int] = TimerWheel(start, slots_per_level=s, levels=3)
    # Deadlines around every multiple of S**L ahead, plus ones beyond the horizon.
    deltas = sorted(
        {max(0, k * s**level + e) for level in range(4) for k in (1, 2, 3) for e in (-1, 0, 1)}
        | {200, 500}
    )
    for delta in deltas:
        wheel.add(delta, start + delta + 0.5)
    for step in range(1, max(deltas) + 2):
        due = wheel.advance(start + step)
        assert keys(due) == [d for d in deltas if d == step - 1]
    assert len(wheel) == 0


def test_overflow_beyond_horizon() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, slots_per_level=8, levels=2)
    horizon = wheel.horizon_ms
    assert horizon == 7 * 8 - 1
    far = T0 + 10 * horizon + 0.25
    wheel.add("far", far)
    wheel.add("farther", far + 3 * horizon)
    wheel.add("near", T0 + 2)
    assert wheel.next_deadline() == T0 + 2
    assert keys(wheel.advance(T0 + 2)) == ["near"]
    assert wheel.next_deadline() == far
    # Walk up to the deadline in uneven steps, then across it.
    now = T0 + 2
    while now + 7 < far:
        now += 7
        assert wheel.advance(now) == []
    assert wheel.advance(far - 0.01) == []
    assert keys(wheel.advance(far)) == ["far"]
    assert keys(wheel.advance(far + 5 * horizon)) == ["farther"]


def test_default_horizon_and_no_overflow_inside_it() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0 + 0.7)
    assert wheel.horizon_ms == 255 * 256**3 - 1  # about 49.5 days
    rng = random.Random(3)
    for i in range(2000):
        wheel.add(i, T0 + 0.7 + rng.uniform(0, wheel.horizon_ms - 1e-3))
    wheel.add(-1, T0 + 0.7 + wheel.horizon_ms - 1e-3)
    assert len(wheel._overflow) == 0  # white box: the promise horizon_ms makes
    wheel.add(-2, T0 + 0.7 + wheel.horizon_ms + 2**24)
    assert len(wheel._overflow) == 1


def test_huge_jump_is_fast_and_complete() -> None:
    """Ten years in one call: iterating ticks would take hours."""
    wheel: TimerWheel[int] = TimerWheel(T0)
    rng = random.Random(1)
    deadlines = {i: T0 + rng.uniform(0, 3650 * DAY) for i in range(5000)}
    for key, d in deadlines.items():
        wheel.add(key, d)
    due = wheel.advance(T0 + 3650 * DAY)
    assert due == sorted((d, k) for k, d in deadlines.items())
    assert wheel.advance(T0 + 1e6 * DAY) == []  # empty wheel, enormous jump


def test_virtual_clock_jumps_to_next_deadline() -> None:
    """How a virtual clock drives the wheel: sleep until next_deadline, advance."""
    wheel: TimerWheel[int] = TimerWheel(T0, slots_per_level=16, levels=3)
    rng = random.Random(2)
    deadlines = {
        i: T0 + rng.choice([rng.uniform(0, 100), rng.uniform(0, 30 * DAY)]) for i in range(500)
    }
    for key, d in deadlines.items():
        wheel.add(key, d)
    order = []
    while (nxt := wheel.next_deadline()) is not None:
        due = wheel.advance(nxt)
        assert due and all(d == nxt for d, _ in due)
        order.extend(due)
    assert order == sorted((d, k) for k, d in deadlines.items())


# -- errors -----------------------------------------------------------------


def test_advance_backwards_is_an_error() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.advance(T0 + 10)
    with pytest.raises(ValueError, match="backwards"):
        wheel.advance(T0 + 9.5)
    assert wheel.now_ms == T0 + 10
    wheel.advance(T0 + 10)  # standing still is fine


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_times_are_errors(bad: float) -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    with pytest.raises(ValueError, match="finite"):
        wheel.add("a", bad)
    assert len(wheel) == 0
    with pytest.raises(ValueError):
        wheel.advance(bad)
    assert wheel.now_ms == T0
    with pytest.raises(ValueError, match="finite"):
        TimerWheel(bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"tick_ms": 0}, {"tick_ms": -1}, {"slots_per_level": 1}, {"levels": 0}],
)
def test_bad_configuration(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TimerWheel(T0, **kwargs)


# -- comparison with a heap model -------------------------------------------


class HeapModel:
    """The obvious implementation: a heap of (deadline, seq, key), lazily cancelled."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.heap: list[tuple[float, int, int]] = []
        self.live: dict[int, int] = {}  # key -> seq of its current entry
        self.seq = 0

    def add(self, key: int, deadline: float) -> None:
        self.seq += 1
        self.live[key] = self.seq
        heapq.heappush(self.heap, (deadline, self.seq, key))

    def cancel(self, key: int) -> bool:
        return self.live.pop(key, None) is not None

    def _drop_stale(self) -> None:
        while self.heap and self.live.get(self.heap[0][2]) != self.heap[0][1]:
            heapq.heappop(self.heap)

    def advance(self, now: float) -> list[tuple[float, int]]:
        self.now = now
        due = []
        self._drop_stale()
        while self.heap and self.heap[0][0] <= now:
            deadline, _, key = heapq.heappop(self.heap)
            del self.live[key]
            due.append((deadline, key))
            self._drop_stale()
        return due

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self.heap[0][0] if self.heap else None


CONFIGS = st.sampled_from(
    [
        (1, 256, 4),  # the default
        (1, 2, 1),
        (1, 2, 3),
        (1, 3, 2),  # slots not a power of two
        (3, 4, 2),
        (1, 4, 3),
        (7, 10, 3),
        (1000, 16, 2),
    ]
)
KEYS = st.integers(0, 40)


def offsets(tick_ms: int, slots: int, levels: int) -> st.SearchStrategy[float]:
    """Offsets from now that hit edge cases: past, same tick, level edges, overflow."""
    edges = [tick_ms * slots**level for level in range(levels + 2)]
    return st.one_of(
        st.floats(-3 * tick_ms, 3 * tick_ms),
        st.builds(
            lambda edge, k, e: k * edge + e,
            st.sampled_from(edges),
            st.integers(1, slots + 1),
            st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]),
        ),
        st.floats(0, 2.0 * edges[-1]),
        st.integers(0, 100).map(float),
    )


class WheelVersusHeap(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimerWheel[int]
        self.model: HeapModel
        self.deadlines: list[float] = []

    @initialize(config=CONFIGS, start=st.floats(-1e13, 1e13))
    def setup(self, config: tuple[int, int, int], start: float) -> None:
        tick_ms, slots, levels = config
        self.config = config
        self.wheel = TimerWheel(start, tick_ms=tick_ms, slots_per_level=slots, levels=levels)
        self.model = HeapModel(start)

    @rule(key=KEYS, data=st.data())
    def add(self, key: int, data: st.DataObject) -> None:
        offset = data.draw(offsets(*self.config))
        deadline = self.model.now + offset
        self.deadlines.append(deadline)
        self.wheel.add(key, deadline)
        self.model.add(key, deadline)

    @precondition(lambda self: self.deadlines)
    @rule(key=KEYS, data=st.data())
    def add_with_earlier_deadline(self, key: int, data: st.DataObject) -> None:
        """Equal deadlines added at different times must still tie-break by insertion."""
        deadline = data.draw(st.sampled_from(self.deadlines))
        self.wheel.add(key, deadline)
        self.model.add(key, deadline)

    @rule(key=KEYS, data=st.data())
    def add_many(self, key: int, data: st.DataObject) -> None:
        base = data.draw(offsets(*self.config))
        spreads = data.draw(st.lists(st.floats(0, 50 * self.config[0]), max_size=30))
        for i, spread in enumerate(spreads):
            deadline = self.model.now + base + spread
            self.wheel.add(key + 100 * (i + 1), deadline)
            self.model.add(key + 100 * (i + 1), deadline)

    @rule(key=KEYS)
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) == self.model.cancel(key)

    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        step = data.draw(st.one_of(st.just(0.0), offsets(*self.config).map(abs)))
        now = self.model.now + step
        assert self.wheel.advance(now) == self.model.advance(now)

    @precondition(lambda self: self.model.next_deadline() is not None)
    @rule()
    def advance_to_next_deadline(self) -> None:
        nxt = self.wheel.next_deadline()
        assert nxt is not None
        now = max(nxt, self.model.now)
        due = self.wheel.advance(now)
        assert due == self.model.advance(now)
        assert due

    @invariant()
    def same_contents(self) -> None:
        if not hasattr(self, "wheel"):
            return
        assert len(self.wheel) == len(self.model.live)
        assert all(key in self.wheel for key in self.model.live)
        assert self.wheel.next_deadline() == self.model.next_deadline()


WheelVersusHeap.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wheel_matches_heap_model = WheelVersusHeap.TestCase


@settings(max_examples=40, deadline=None)
@given(
    config=CONFIGS,
    seed=st.integers(0, 2**32),
    n=st.integers(100, 2000),
    span_levels=st.integers(0, 5),
)
def test_many_entries_and_big_jumps(
    config: tuple[int, int, int], seed: int, n: int, span_levels: int
) -> None:
    tick_ms, slots, levels = config
    rng = random.Random(seed)
    span = tick_ms * slots**span_levels * 2
    start = T0 + rng.random()
    wheel: TimerWheel[int] = TimerWheel(
        start, tick_ms=tick_ms, slots_per_level=slots, levels=levels
    )
    model = HeapModel(start)
    now = start
    for _ in range(6):
        for _ in range(n // 6):
            key = rng.randrange(n)
            if rng.random() < 0.2:
                assert wheel.cancel(key) == model.cancel(key)
            else:
                deadline = now + rng.uniform(-tick_ms, span)
                wheel.add(key, deadline)
                model.add(key, deadline)
        now += rng.choice([0.0, rng.uniform(0, span / 10), rng.uniform(0, 2 * span)])
        assert wheel.advance(now) == model.advance(now)
        assert wheel.next_deadline() == model.next_deadline()
    assert wheel.advance(now + 4 * span) == model.advance(now + 4 * span)
    assert len(wheel) == 0
