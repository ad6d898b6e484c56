"""Tests for the timer wheel: edge cases, then a comparison with a heap model."""

from __future__ import annotations

import heapq
import math
import random
from typing import Any, TypeVar

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

from convexpy.scheduler import wheel as wheel_module
from convexpy.scheduler.wheel import TimerWheel

T0 = 1.7e12  # a realistic epoch time in milliseconds
DAY = 86_400_000.0
# A wheel whose ring is small enough to wrap and overflow within a few steps:
# 4 ms slots, the current one and 3 more (12 ms) in the ring.
SMALL: dict[str, Any] = {"slot_ms": 4, "slots": 4}

K = TypeVar("K")


def keys(due: list[tuple[float, K]]) -> list[K]:
    return [key for _, key in due]


def held(wheel: TimerWheel[Any]) -> int:
    """White box: entries the wheel holds, cancelled ones included."""
    return (
        len(wheel._incoming) + len(wheel._head) + sum(map(len, wheel._ring)) + len(wheel._overflow)
    )


# -- basics -----------------------------------------------------------------


def test_empty_wheel() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    assert repr(wheel) == f"<TimerWheel now_ms={T0!r} entries=0>"
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


def test_order_across_slots_ring_and_overflow() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0, **SMALL)
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


def test_fractional_deadlines_within_one_millisecond() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0 + 0.1)
    for name, frac in [("x", 0.9), ("y", 0.3), ("z", 0.6)]:
        wheel.add(name, T0 + 7 + frac)
    assert wheel.next_deadline() == T0 + 7.3
    assert wheel.advance(T0 + 7.0) == []
    assert keys(wheel.advance(T0 + 7.3)) == ["y"]
    assert wheel.next_deadline() == T0 + 7.6
    assert wheel.advance(T0 + 7.59) == []
    assert keys(wheel.advance(T0 + 7.95)) == ["z", "x"]


def test_deadlines_in_one_slot_are_compared_exactly() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, slot_ms=1024, slots=8)
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


def test_times_around_zero_where_slots_round() -> None:
    """Tiny negative times round to slot 0 or -1; deadlines stay exact."""
    tiny = 5e-324
    wheel: TimerWheel[str] = TimerWheel(-1.0)
    wheel.add("zero", 0.0)
    wheel.add("after", tiny)
    wheel.add("before", -tiny)
    wheel.add("well before", -1e-300)
    assert wheel.advance(-2e-300) == []
    assert keys(wheel.advance(-1e-300)) == ["well before"]
    assert wheel.advance(-1e-320) == []
    assert keys(wheel.advance(-tiny)) == ["before"]
    assert keys(wheel.advance(0.0)) == ["zero"]
    assert keys(wheel.advance(tiny)) == ["after"]


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


def test_cancel_in_the_head_the_ring_and_the_overflow() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, **SMALL)
    wheel.add("head", T0 + 2.5)  # the current slot
    wheel.add("ring", T0 + 9)
    wheel.add("overflow", T0 + 40)
    wheel.add("keep", T0 + 41)
    assert wheel.next_deadline() == T0 + 2.5  # placed now
    assert wheel.cancel("head")
    assert wheel.cancel("ring")
    assert wheel.next_deadline() == T0 + 40
    assert wheel.advance(T0 + 30) == []  # "overflow" moved into the ring
    assert wheel.cancel("overflow")
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


def test_cancel_and_readd_with_the_same_deadline_returns_it_once() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    wheel.add("a", T0 + 5)
    wheel.add("b", T0 + 5)
    assert wheel.next_deadline() == T0 + 5  # placed
    wheel.cancel("a")
    wheel.add("a", T0 + 5)  # a new insertion: after "b"
    assert keys(wheel.advance(T0 + 5)) == ["b", "a"]
    assert wheel.advance(T0 + 10) == []


def test_equal_deadlines_added_at_different_times_keep_insertion_order() -> None:
    """ "first" is in the overflow when the others go straight into the ring."""
    wheel: TimerWheel[str] = TimerWheel(T0, slot_ms=1, slots=4)
    deadline = T0 + 14.5
    wheel.add("first", deadline)
    wheel.advance(T0 + 11)
    wheel.add("second", deadline)
    wheel.add("third", deadline)
    assert keys(wheel.advance(deadline)) == ["first", "second", "third"]


def test_equal_deadlines_added_to_the_head_one_by_one_and_in_bulk() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0)
    wheel.add(0, T0 + 5)
    assert wheel.next_deadline() == T0 + 5  # the head holds it
    wheel.add(1, T0 + 5)  # sorted into the head alone
    assert wheel.next_deadline() == T0 + 5
    for key in range(2, 40):  # sorted into the head in one batch
        wheel.add(key, T0 + 5 - (key % 2))
    assert keys(wheel.advance(T0 + 5)) == [*range(3, 40, 2), 0, 1, *range(2, 40, 2)]


def test_cancelled_entries_do_not_pile_up() -> None:
    """Adding and cancelling while time stands still, with next_deadline in
    between as the dispatcher does: memory stays proportional."""
    wheel: TimerWheel[int] = TimerWheel(T0)
    wheel.add(-1, T0 + 5000)
    # In the head, in the ring and in the overflow.
    offsets = [100.0, 20_000.0, 10 * DAY]
    for i in range(20_000):
        wheel.add(i, T0 + offsets[i % 3])
        wheel.cancel(i)
        assert wheel.next_deadline() == T0 + 5000
    assert held(wheel) < 3 * wheel_module._GARBAGE_SLACK
    assert wheel.advance(T0 + 20 * DAY) == [(T0 + 5000, -1)]


def test_readd_counts_as_new_insertion_for_ties() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0)
    for name in "abc":
        wheel.add(name, T0 + 5)
    wheel.add("a", T0 + 5)
    assert keys(wheel.advance(T0 + 5)) == ["b", "c", "a"]


def test_readd_moves_between_overflow_and_wheel() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, **SMALL)
    wheel.add("a", T0 + 1000)  # overflow
    wheel.next_deadline()
    wheel.add("a", T0 + 3)  # head
    wheel.add("b", T0 + 3)
    wheel.next_deadline()
    wheel.add("b", T0 + 2000)  # back to overflow
    assert keys(wheel.advance(T0 + 1500)) == ["a"]
    assert keys(wheel.advance(T0 + 2000)) == ["b"]


# -- slot boundaries, looking ahead, overflow, jumps -------------------------


@pytest.mark.parametrize("start_offset", [0, 1, 3, 4, 5, 15, 16, 63, 64, 255])
def test_every_deadline_around_slot_boundaries(start_offset: int) -> None:
    """Step one millisecond at a time past each slot and ring boundary; each
    entry is due on time."""
    start = 1_000_000 + start_offset
    wheel: TimerWheel[int] = TimerWheel(start, **SMALL)
    # Deadlines around every multiple of the slot, the ring, and beyond it.
    deltas = sorted(
        {max(0, k * span + e) for span in (4, 12, 16, 64) for k in (1, 2, 3) for e in (-1, 0, 1)}
        | {200, 500}
    )
    for delta in deltas:
        wheel.add(delta, start + delta + 0.5)
    for step in range(1, max(deltas) + 2):
        due = wheel.advance(start + step)
        assert keys(due) == [d for d in deltas if d == step - 1]
    assert len(wheel) == 0


def test_next_deadline_looks_ahead_without_moving_time() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, **SMALL)
    wheel.add("later", T0 + 10.5)
    assert wheel.next_deadline() == T0 + 10.5  # found in the ring, ahead of time
    wheel.add("sooner", T0 + 6)  # between now and that slot
    wheel.add("same slot", T0 + 10.25)
    assert wheel.next_deadline() == T0 + 6
    assert wheel.advance(T0 + 5.9) == []
    assert keys(wheel.advance(T0 + 6)) == ["sooner"]
    assert keys(wheel.advance(T0 + 11)) == ["same slot", "later"]


def test_overflow_beyond_the_ring() -> None:
    wheel: TimerWheel[str] = TimerWheel(T0, slot_ms=8, slots=8)
    reach = 7 * 8
    far = T0 + 10 * reach + 0.25
    wheel.add("far", far)
    wheel.add("farther", far + 3 * reach)
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
    assert keys(wheel.advance(far + 5 * reach)) == ["farther"]


def test_the_dispatchers_minute_fits_in_the_ring() -> None:
    wheel: TimerWheel[int] = TimerWheel(T0 + 0.7)
    rng = random.Random(3)
    for i in range(2000):
        wheel.add(i, T0 + 0.7 + rng.uniform(0, 60_000))
    wheel.add(-1, T0 + 0.7 + 60_000)
    wheel.next_deadline()
    assert not wheel._overflow  # white box: the default ring reaches a minute
    wheel.add(-2, T0 + DAY)
    wheel.next_deadline()
    assert len(wheel._overflow) == 1


def test_huge_jump_is_fast_and_complete() -> None:
    """Ten years in one call: iterating slots would take hours."""
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
    wheel: TimerWheel[int] = TimerWheel(T0, slot_ms=16, slots=8)
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


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400])
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
    [
        {"slot_ms": 0},
        {"slot_ms": -4},
        {"slot_ms": 3},
        {"slot_ms": 1.0},
        {"slots": 0},
        {"slots": 1},
        {"slots": 6},
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
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


# (slot_ms, slots)
CONFIGS = st.sampled_from(
    [
        (2048, 32),  # the default
        (1024, 64),
        (1, 2),
        (1, 4),
        (4, 4),
        (2, 8),
        (16, 2),
        (1024, 2),
    ]
)
KEYS = st.integers(0, 40)


def offsets(slot_ms: int, slots: int) -> st.SearchStrategy[float]:
    """Offsets from now that hit edge cases: past, same slot, slot and ring
    edges, overflow."""
    edges = [slot_ms, slot_ms * (slots - 1), slot_ms * slots, slot_ms * slots * 4]
    return st.one_of(
        st.floats(-3 * slot_ms, 3 * slot_ms),
        st.builds(
            lambda edge, k, e: k * edge + e,
            st.sampled_from(edges),
            st.integers(1, 4),
            st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]),
        ),
        st.floats(0, 2.0 * edges[-1]),
        st.integers(0, 100).map(float),
    )


class WheelVersusHeap(RuleBasedStateMachine):
    """Random adds, cancels and advances agree with the heap model. Entries
    are placed only by advance and next_deadline, so the rules that call
    next_deadline are separate from the invariant: batches of all sizes reach
    advance unplaced."""

    garbage_slack: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimerWheel[int]
        self.model: HeapModel
        self.deadlines: list[float] = []
        self.saved_slack = wheel_module._GARBAGE_SLACK
        if self.garbage_slack is not None:
            wheel_module._GARBAGE_SLACK = self.garbage_slack

    def teardown(self) -> None:
        wheel_module._GARBAGE_SLACK = self.saved_slack

    @initialize(config=CONFIGS, start=st.floats(-1e13, 1e13))
    def setup(self, config: tuple[int, int], start: float) -> None:
        slot_ms, slots = config
        self.config = config
        self.wheel = TimerWheel(start, slot_ms=slot_ms, slots=slots)
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

    @rule()
    def next_deadline(self) -> None:
        assert self.wheel.next_deadline() == self.model.next_deadline()

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


class WheelDroppingCancelledEagerly(WheelVersusHeap):
    """The same, with cancelled entries dropped as soon as there are any."""

    garbage_slack = 0


STATE_MACHINE_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WheelVersusHeap.TestCase.settings = STATE_MACHINE_SETTINGS
WheelDroppingCancelledEagerly.TestCase.settings = STATE_MACHINE_SETTINGS
test_wheel_matches_heap_model = WheelVersusHeap.TestCase
test_wheel_dropping_cancelled_eagerly_matches_heap_model = WheelDroppingCancelledEagerly.TestCase


@settings(max_examples=40, deadline=None)
@given(
    config=CONFIGS,
    seed=st.integers(0, 2**32),
    n=st.integers(100, 2000),
    span_slots=st.integers(0, 5),
)
def test_many_entries_and_big_jumps(
    config: tuple[int, int], seed: int, n: int, span_slots: int
) -> None:
    slot_ms, slots = config
    rng = random.Random(seed)
    span = slot_ms * slots**span_slots * 2
    start = T0 + rng.random()
    wheel: TimerWheel[int] = TimerWheel(start, slot_ms=slot_ms, slots=slots)
    model = HeapModel(start)
    now = start
    for _ in range(6):
        for _ in range(n // 6):
            key = rng.randrange(n)
            if rng.random() < 0.2:
                assert wheel.cancel(key) == model.cancel(key)
            else:
                deadline = now + rng.uniform(-slot_ms, span)
                wheel.add(key, deadline)
                model.add(key, deadline)
        now += rng.choice([0.0, rng.uniform(0, span / 10), rng.uniform(0, 2 * span)])
        assert wheel.advance(now) == model.advance(now)
        assert wheel.next_deadline() == model.next_deadline()
    assert wheel.advance(now + 4 * span) == model.advance(now + 4 * span)
    assert len(wheel) == 0
