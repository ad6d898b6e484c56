"""A hierarchical timer wheel: which of the near-future jobs are due now.

The durable store holds every scheduled job; the runtime loads a job into the
wheel only as its time approaches, asks :meth:`TimerWheel.next_deadline` how
long it may sleep, and calls :meth:`TimerWheel.advance` with the clock's time
to collect what is due. The wheel is pure: it never reads a clock.

Layout. Time is cut into integer *ticks* of ``tick_ms``. Level ``L`` has
``slots_per_level`` (``S``) slots, each ``S**L`` ticks wide, used as a ring:
an entry sits at the lowest level whose ring still reaches its tick, so level
0 holds the next ``S`` ticks one per slot, level 1 the next ``S*S`` ticks in
blocks of ``S``, and so on. When the current tick reaches the start of an
occupied slot, its entries are *cascaded*: placed again, now at a lower level.
A level-0 slot cascades into the *ready* bucket, whose entries are compared
with the exact (fractional) time on every advance, so ticks only index: they
never make an entry due early or late. Entries beyond the top level's ring
wait in an *overflow* heap and move into the wheel once it reaches them.

Each level keeps a bitmask of its occupied slots, so finding the next slot
with work is a few integer operations however far away it is, and advance
jumps from one such slot to the next. Entries whose tick the new time has
already reached skip the lower levels and go straight to ready, a whole slot
at a time when it lies entirely in the past. Advancing therefore costs time
in proportion to the entries and occupied slots passed, never to the number
of ticks: a virtual clock can jump a month in one call.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from operator import itemgetter
from typing import Generic, TypeVar

__all__ = ["TimerWheel"]

K = TypeVar("K", bound=Hashable)

# (deadline_ms, insertion sequence number). Tuples compare by deadline first,
# and the sequence number is unique, so they sort into the order ``advance``
# promises without ever comparing keys (which need not be orderable).
_Entry = tuple[float, int]

_by_entry = itemgetter(0)

# A tick later than any tick of a finite float deadline (floats stay below 2**1024).
_NEVER = 1 << 1100


class _Bucket(dict[K, _Entry]):
    """One slot's entries, key -> entry, knowing its place in the occupancy masks.

    Each key in the wheel maps to the bucket holding it, so cancel finds the
    entry and clears the slot's occupancy bit without a search. ``level`` is
    -1 for the ready and overflow buckets, which have no bit.
    """

    __slots__ = ("bit", "keep", "level")

    def __init__(self, level: int, bit: int, full: int) -> None:
        super().__init__()
        self.level = level
        self.bit = bit
        self.keep = full & ~bit


class TimerWheel(Generic[K]):
    """Keys with deadlines (epoch milliseconds), handed back once they are due.

    ``now_ms`` is the wheel's starting time; afterwards the wheel's notion of
    now is the last value given to :meth:`advance`. ``tick_ms`` is the width
    of a level-0 slot; it affects only speed and memory, never which entries
    are due: deadlines are compared exactly, fractions of a millisecond
    included. The wheel reaches :attr:`horizon_ms` ahead
    (``(slots_per_level - 1) * slots_per_level ** (levels - 1)`` ticks, about
    49.5 days with the defaults); later deadlines are still accepted and kept
    in a heap until the wheel reaches them.

    Costs: :meth:`add` and :meth:`cancel` are O(1) (O(log n) for a deadline
    beyond the horizon); :meth:`advance` costs O(k log k) for the k entries it
    returns plus O(levels) per occupied slot and per entry it cascades, which
    each entry does at most ``levels`` times.
    """

    __slots__ = (
        "_cur",
        "_ev",
        "_ev_over",
        "_event",
        "_full",
        "_heap",
        "_levels",
        "_next",
        "_next_valid",
        "_now",
        "_occ",
        "_overflow",
        "_ready",
        "_seq",
        "_slots",
        "_spans",
        "_tick_ms",
        "_wheel",
        "_where",
    )

    def __init__(
        self,
        now_ms: float,
        *,
        tick_ms: int = 1,
        slots_per_level: int = 256,
        levels: int = 4,
    ) -> None:
        if not tick_ms > 0:
            raise ValueError(f"tick_ms must be positive, got {tick_ms!r}")
        if slots_per_level < 2:
            raise ValueError(f"slots_per_level must be at least 2, got {slots_per_level!r}")
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels!r}")
        self._tick_ms = tick_ms
        self._slots = slots_per_level
        self._levels = levels
        # Ticks per slot at each level: 1, S, S*S, ...
        self._spans: list[int] = [1]
        for _ in range(1, levels):
            self._spans.append(self._spans[-1] * slots_per_level)
        full = (1 << slots_per_level) - 1
        self._full = full
        self._cur = self._tick(now_ms, "now_ms")
        self._now = now_ms
        self._wheel: list[list[_Bucket[K]]] = [
            [_Bucket(level, 1 << i, full) for i in range(slots_per_level)]
            for level in range(levels)
        ]
        self._occ = [0] * levels
        # Entries whose tick has been reached: due as soon as now >= deadline.
        self._ready: _Bucket[K] = _Bucket(-1, 0, full)
        # Entries beyond the top level's reach. The heap orders them for
        # moving into the wheel; cancelled ones stay in it until popped or
        # compacted, recognised by their sequence number no longer matching.
        self._overflow: _Bucket[K] = _Bucket(-1, 0, full)
        self._heap: list[tuple[float, int, K]] = []
        self._where: dict[K, _Bucket[K]] = {}
        self._seq = 0
        # Ticks at which work may be waiting: per level, the start of its
        # first occupied slot; for overflow, when the wheel first reaches its
        # earliest entry; and the minimum of them all. Each may be too early
        # (cancel does not update them; an event with nothing to do is
        # harmless) but never too late, and advance() skips straight from
        # one event to the next.
        self._ev = [_NEVER] * levels
        self._ev_over = _NEVER
        self._event = _NEVER
        # Cache for next_deadline(): exact while _next_valid.
        self._next: float | None = None
        self._next_valid = True

    # -- public API ---------------------------------------------------------

    @property
    def now_ms(self) -> float:
        """The time of the last :meth:`advance` (or the starting time)."""
        return self._now

    @property
    def horizon_ms(self) -> float:
        """How far ahead of :attr:`now_ms` deadlines are held without overflow.

        Any deadline earlier than ``now_ms + horizon_ms`` lives in the wheel
        proper; later ones go to the overflow heap, which still works but
        costs O(log n) per add. The wheel's actual reach is up to one
        top-level slot further, depending on where now falls in that slot;
        one tick is subtracted so that float rounding cannot break the promise.
        """
        return ((self._slots - 1) * self._spans[-1] - 1) * self._tick_ms

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __repr__(self) -> str:
        return f"<TimerWheel now_ms={self._now!r} entries={len(self._where)}>"

    def add(self, key: K, deadline_ms: float) -> None:
        """Hold ``key`` until ``deadline_ms`` (epoch milliseconds).

        Adding a key that is already present replaces its deadline, and it
        counts as inserted now for ordering ties. A deadline not after
        :attr:`now_ms` is returned by the next :meth:`advance`. Raises
        ``ValueError`` for a deadline that is NaN or infinite.
        """
        t = self._tick(deadline_ms, "deadline_ms")
        if key in self._where:
            self.cancel(key)
        seq = self._seq
        self._seq = seq + 1
        self._place(key, (deadline_ms, seq), t)
        if self._next_valid:
            nxt = self._next
            if nxt is None or deadline_ms < nxt:
                self._next = deadline_ms

    def cancel(self, key: K) -> bool:
        """Forget ``key``; return whether it was present."""
        bucket = self._where.pop(key, None)
        if bucket is None:
            return False
        entry = bucket.pop(key)
        if not bucket and bucket.level >= 0:
            # The level's event tick may now be early; that is allowed.
            self._occ[bucket.level] &= bucket.keep
        elif bucket is self._overflow:
            # Cancelled overflow entries linger in the heap; rebuild it before
            # they outnumber the live ones, so memory stays proportional.
            heap = self._heap
            if len(heap) > 2 * len(bucket) + 64:
                heap[:] = [(e[0], e[1], k) for k, e in bucket.items()]
                heapq.heapify(heap)
        if self._next_valid:
            nxt = self._next
            if nxt is not None and entry[0] <= nxt:
                self._next_valid = False
        return True

    def advance(self, now_ms: float) -> list[tuple[float, K]]:
        """Move the wheel to ``now_ms`` and return what is due, removing it.

        Returns every ``(deadline_ms, key)`` with ``deadline_ms <= now_ms``,
        sorted by deadline and then by insertion order; nothing is returned
        before its deadline, and nothing later than the first advance that
        reaches it. ``now_ms`` may equal the previous time (useful to collect
        entries added with past deadlines) but not go below it: that, or a
        non-finite ``now_ms``, raises ``ValueError``.
        """
        if not now_ms >= self._now:
            if now_ms != now_ms:
                raise ValueError("now_ms must be a finite number of epoch milliseconds, got nan")
            raise ValueError(
                f"time went backwards: advance({now_ms!r}) after the wheel reached {self._now!r}"
            )
        target = self._tick(now_ms, "now_ms")
        self._now = now_ms
        if target >= self._event:
            self._run_to(target)
        else:
            self._cur = target

        ready = self._ready
        if not ready:
            return []
        due = [(entry, key) for key, entry in ready.items() if entry[0] <= now_ms]
        if not due:
            return []
        where = self._where
        if len(due) == len(ready):
            ready.clear()
            for _, key in due:
                del where[key]
        else:
            for _, key in due:
                del ready[key]
                del where[key]
        due.sort(key=_by_entry)
        self._next_valid = False
        return [(entry[0], key) for entry, key in due]

    def next_deadline(self) -> float | None:
        """The earliest deadline held, exactly, or ``None`` if the wheel is empty.

        The runtime sleeps until this time, then calls :meth:`advance`. The
        answer is cached, so asking repeatedly is cheap; recomputing it looks
        at no more than one slot per level.
        """
        if not self._next_valid:
            self._next = self._compute_next()
            self._next_valid = True
        return self._next

    # -- internals ----------------------------------------------------------

    def _tick(self, ms: float, name: str) -> int:
        # floor(ms / tick_ms) is monotonic in ms even with float rounding
        # (correctly rounded division and floor both are). That is all
        # exactness needs: deadline <= now implies tick(deadline) <= tick(now),
        # so an entry whose tick has not been reached is never due.
        try:
            return math.floor(ms / self._tick_ms)
        except (OverflowError, ValueError):
            raise ValueError(
                f"{name} must be a finite number of epoch milliseconds, got {ms!r}"
            ) from None

    def _place(self, key: K, entry: _Entry, t: int) -> None:
        """Put ``entry`` (at tick ``t``) in the bucket the current tick calls for."""
        cur = self._cur
        delta = t - cur
        slots = self._slots
        bucket: _Bucket[K]
        if delta <= 0:
            bucket = self._ready
        elif delta < slots:
            bucket = self._wheel[0][t % slots]
            if not bucket:
                self._occ[0] |= bucket.bit
                if t < self._ev[0]:
                    self._ev[0] = t
                    if t < self._event:
                        self._event = t
        else:
            spans = self._spans
            for level in range(1, self._levels):
                span = spans[level]
                block = t // span
                # The ring of level L covers blocks cur//span .. cur//span + S - 1.
                # The lowest level that fits never picks the current block
                # (the level below would have fitted), so the slot at the
                # current position is always empty and ring indices never clash.
                if block - cur // span < slots:
                    bucket = self._wheel[level][block % slots]
                    if not bucket:
                        self._occ[level] |= bucket.bit
                        start = block * span
                        if start < self._ev[level]:
                            self._ev[level] = start
                            if start < self._event:
                                self._event = start
                    break
            else:
                bucket = self._overflow
                heapq.heappush(self._heap, (entry[0], entry[1], key))
                start = self._overflow_start(t)
                if start < self._ev_over:
                    self._ev_over = start
                    if start < self._event:
                        self._event = start
        bucket[key] = entry
        self._where[key] = bucket

    def _overflow_start(self, t: int) -> int:
        """The first tick at which the top level's ring reaches tick ``t``."""
        span = self._spans[-1]
        return (t // span - self._slots + 1) * span

    def _first_slot(self, level: int) -> tuple[int, int] | None:
        """(block number, slot index) of the level's next occupied slot."""
        m = self._occ[level]
        if not m:
            return None
        slots = self._slots
        bc = self._cur // self._spans[level]
        # Rotate the ring so the slot after the current one is bit 0; the
        # lowest set bit is then the distance to the next occupied slot.
        i = bc % slots + 1
        r = ((m >> i) | (m << (slots - i))) & self._full
        j = (r & -r).bit_length() - 1
        return bc + 1 + j, (i + j) % slots

    def _overflow_top(self) -> tuple[float, int, K] | None:
        """The earliest live overflow entry, dropping cancelled ones on the way."""
        heap = self._heap
        overflow = self._overflow
        while heap:
            top = heap[0]
            entry = overflow.get(top[2])
            if entry is not None and entry[1] == top[1]:
                return top
            heapq.heappop(heap)
        return None

    def _run_to(self, target: int) -> None:
        """Move the current tick to ``target``, cascading every slot passed."""
        tick_ms = self._tick_ms
        slots = self._slots
        spans = self._spans
        wheel = self._wheel
        occ = self._occ
        ev = self._ev
        ready = self._ready
        where = self._where
        place = self._place
        floor = math.floor
        while True:
            event = min(min(ev), self._ev_over)
            if event > target:
                break
            # Jump straight to the next tick with work: nothing in between.
            self._cur = event
            for level in range(self._levels):
                if ev[level] != event:
                    continue
                span = spans[level]
                bucket = wheel[level][event // span % slots]
                if bucket:
                    occ[level] &= bucket.keep
                    # Entries whose tick target reaches go straight to ready
                    # rather than down level by level; a whole slot of them
                    # moves in one C-level update. This is what makes a jump
                    # of days cheap.
                    if event + span - 1 <= target:
                        ready.update(bucket)
                        where.update(dict.fromkeys(bucket, ready))
                        bucket.clear()
                    else:
                        items = list(bucket.items())
                        bucket.clear()
                        # The rest land on a lower level: their tick is less
                        # than one slot of this level away.
                        for key, entry in items:
                            t = floor(entry[0] / tick_ms)
                            if t <= target:
                                ready[key] = entry
                                where[key] = ready
                            else:
                                place(key, entry, t)
                first = self._first_slot(level)
                ev[level] = _NEVER if first is None else first[0] * span
            if self._ev_over == event:
                self._pull_overflow()
        # Every event left is after target, so the rings stay valid there,
        # and everything moved to ready has reached its tick.
        self._cur = target
        self._event = min(min(ev), self._ev_over)

    def _pull_overflow(self) -> None:
        """Move overflow entries the top level now reaches into the wheel."""
        heap = self._heap
        overflow = self._overflow
        self._ev_over = _NEVER
        while True:
            top = self._overflow_top()
            if top is None:
                return
            t = self._tick(top[0], "deadline_ms")
            start = self._overflow_start(t)
            if start > self._cur:
                self._ev_over = start
                return
            heapq.heappop(heap)
            key = top[2]
            entry = overflow.pop(key)
            self._place(key, entry, t)

    def _compute_next(self) -> float | None:
        ready = self._ready
        if ready:
            # Ready entries have reached their tick and all others have not,
            # so by monotonicity of ticks the earliest deadline is among them.
            return min(ready.values())[0]
        best: float | None = None
        best_t = 0
        slots = self._slots
        for level in range(self._levels):
            if not self._occ[level]:
                continue
            span = self._spans[level]
            # The level's event tick is usually the start of its first
            # occupied slot; only if a cancel emptied that slot must we search.
            bucket = self._wheel[level][self._ev[level] // span % slots]
            if bucket:
                start = self._ev[level]
            else:
                first = self._first_slot(level)
                if first is None:
                    continue
                start = self._ev[level] = first[0] * span
                bucket = self._wheel[level][first[1]]
            # A slot starting after the best tick so far holds only later
            # deadlines; and a level's later slots start after everything in
            # its first one, so at most one slot per level is scanned.
            if best is not None and start > best_t:
                continue
            d = min(bucket.values())[0]
            if best is None or d < best:
                best = d
                best_t = self._tick(d, "deadline_ms")
        if best is not None:
            return best
        # Overflow entries are all later than anything in the wheel proper.
        top = self._overflow_top()
        return None if top is None else top[0]
