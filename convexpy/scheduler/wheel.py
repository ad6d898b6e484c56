"""A timer wheel: which of the near-future jobs are due now.

The durable store holds every scheduled job; the runtime loads a job into the
wheel only as its time approaches, asks :meth:`TimerWheel.next_deadline` how
long it may sleep, and calls :meth:`TimerWheel.advance` with the clock's time
to collect what is due. The wheel is pure: it never reads a clock.

Layout. Time is cut into *slots* of ``slot_ms`` (2,048 ms by default); the
slot of a deadline is ``floor(deadline_ms / slot_ms)``. The *head* holds the
current slot and everything before it, sorted latest first, so that the next
entry due is popped from its end. The next ``slots - 1`` slots (31 by default:
the dispatcher's minute and a little more) form the *ring*: slot ``s`` is the
list at index ``s % slots``, unsorted but for entries of equal deadline, which
stay in insertion order everywhere. A deadline beyond the ring waits in an
*overflow* heap ordered by (deadline, insertion), and moves into the ring as
soon as the ring reaches its slot. The current slot is the slot of the wheel's
time.

Work. Entries are ``(deadline_ms, key)`` tuples, made once and returned as
they are. :meth:`~TimerWheel.add` only appends to an *incoming* list; the
next :meth:`~TimerWheel.advance` or :meth:`~TimerWheel.next_deadline` puts
the batch where it belongs. When the current slot moves on, the slots it
reaches are sorted into the head with one sort, in C. So an entry costs a
few Python operations to add, to place and to take, plus its share of a sort
of its slot: no heap operation per entry, except beyond the ring.

Order and exactness. Slots only group: deadlines are compared exactly,
fractions of a millisecond included, and slot numbers never decrease as
deadlines grow, so every entry in a later slot than the head's has a later
deadline than every entry in the head. Sorts are stable and every list keeps
entries of equal deadline in insertion order, so ties come out in insertion
order; an overflow entry reaches the ring before the ring can take any other
entry for its slot.

Cancellation is lazy: :meth:`~TimerWheel.cancel` forgets the key, and its
entry stays where it is until the head passes it, or until cancelled entries
outnumber live ones by ``_GARBAGE_SLACK`` (counted once per that many
placements), when they are all dropped. An entry counts only while it is the
very tuple its key maps to, which also makes re-adding a key leave the old
entry behind as cancelled. Memory is proportional to the live entries, plus
what was added since the last advance or next_deadline.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Hashable
from math import floor, inf, nextafter
from operator import itemgetter
from typing import Generic, TypeVar

__all__ = ["TimerWheel"]

K = TypeVar("K", bound=Hashable)

# (deadline_ms, key): what advance returns, created once by add.
_Entry = tuple[float, K]

_deadline = itemgetter(0)


def _minus_deadline(entry: _Entry[K]) -> float:
    return -entry[0]


# Cancelled entries are dropped once they outnumber live ones by this many.
_GARBAGE_SLACK = 1024

# Up to this many entries are sorted into the head one by one (bisection and
# insertion); more are merged with one sort.
_SMALL_MERGE = 8


def _sort_latest_first(entries: list[_Entry[K]]) -> None:
    """Sort entries given in insertion order (for equal deadlines) into the
    head's order, so that popping from the end takes them in deadline and
    then insertion order."""
    entries.sort(key=_deadline)
    entries.reverse()


def _power_of_two(value: int, name: str) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value!r}")
    return value


class TimerWheel(Generic[K]):
    """Keys with deadlines (epoch milliseconds), handed back once they are due.

    ``now_ms`` is the wheel's starting time; afterwards the wheel's notion of
    now is the last value given to :meth:`advance`. ``slot_ms`` and ``slots``
    (powers of two) shape the wheel: it reaches ``(slots - 1) * slot_ms``
    past the current slot without the overflow heap. They affect speed and
    memory only, never which entries are due or in what order.

    Costs: :meth:`add` and :meth:`cancel` are O(1). Each entry is later
    placed in O(1) (O(log n) beyond the ring) and sorted into the head once
    with the m entries of its slot, O(log m) each; :meth:`advance` returns k
    entries in O(k). :meth:`next_deadline` is O(1) unless it has to look past
    cancelled entries or sort the next occupied slot.
    """

    __slots__ = (
        "_cur",
        "_head",
        "_incoming",
        "_live",
        "_mask",
        "_next_entry",
        "_now",
        "_overflow",
        "_per_ms",
        "_placed_budget",
        "_quiet_until",
        "_ring",
        "_seq",
        "_slot_end",
        "_slot_ms",
        "_slots",
    )

    def __init__(self, now_ms: float, *, slot_ms: int = 2048, slots: int = 32) -> None:
        self._slot_ms = float(_power_of_two(slot_ms, "slot_ms"))
        self._slots = _power_of_two(slots, "slots")
        if slots < 2:
            raise ValueError(f"slots must be at least 2, got {slots!r}")
        # Multiplying by the inverse of a power of two is exact (short of
        # underflow near zero, where slot numbers still never decrease).
        self._per_ms = 1.0 / slot_ms
        self._mask = slots - 1
        self._cur = self._slot(now_ms, "now_ms")
        self._now = now_ms
        # key -> its entry; an entry anywhere else that is not its key's
        # entry here is cancelled.
        self._live: dict[K, _Entry[K]] = {}
        self._incoming: list[_Entry[K]] = []
        # The current slot and everything before it, sorted latest first
        # (ties latest inserted first): the next entry due is at the end.
        self._head: list[_Entry[K]] = []
        self._ring: list[list[_Entry[K]]] = [[] for _ in range(slots)]
        # (deadline, insertion number, slot, entry) beyond the ring.
        self._overflow: list[tuple[float, int, int, _Entry[K]]] = []
        self._seq = 0
        # Entries to place before cancelled ones are counted again.
        self._placed_budget = _GARBAGE_SLACK
        # Advancing to any time before this finds nothing due and stays in
        # the current slot: at most the earliest live deadline (once the
        # incoming entries are placed) and the start of the next slot.
        self._slot_end = self._next_slot_start()
        self._quiet_until = self._slot_end
        # The entry with the earliest deadline held, when known; if it is
        # live, its deadline is the next one (taking entries out keeps that
        # true while it is live).
        self._next_entry: _Entry[K] | None = None

    # -- public API ---------------------------------------------------------

    @property
    def now_ms(self) -> float:
        """The time of the last :meth:`advance` (or the starting time)."""
        return self._now

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def __repr__(self) -> str:
        return f"<TimerWheel now_ms={self._now!r} entries={len(self._live)}>"

    def add(self, key: K, deadline_ms: float) -> None:
        """Hold ``key`` until ``deadline_ms`` (epoch milliseconds).

        Adding a key that is already present replaces its deadline, and it
        counts as inserted now for ordering ties. A deadline not after
        :attr:`now_ms` is returned by the next :meth:`advance`. Raises
        ``ValueError`` for a deadline that is NaN or infinite.
        """
        # x * 0.0 is 0 for a finite x, NaN (which is true) for NaN and the
        # infinities, and an OverflowError for an int beyond any float.
        try:
            if deadline_ms * 0.0:
                raise OverflowError
        except OverflowError:
            raise ValueError(
                f"deadline_ms must be a finite number of epoch milliseconds, got {deadline_ms!r}"
            ) from None
        entry = (deadline_ms, key)
        self._incoming.append(entry)
        self._live[key] = entry

    def cancel(self, key: K) -> bool:
        """Forget ``key``; return whether it was present."""
        return self._live.pop(key, None) is not None

    def advance(self, now_ms: float) -> list[tuple[float, K]]:
        """Move the wheel to ``now_ms`` and return what is due, removing it.

        Returns every ``(deadline_ms, key)`` with ``deadline_ms <= now_ms``,
        sorted by deadline and then by insertion order; nothing is returned
        before its deadline, and nothing later than the first advance that
        reaches it. ``now_ms`` may equal the previous time (useful to collect
        entries added with past deadlines) but not go below it: that, or a
        non-finite ``now_ms``, raises ``ValueError``.
        """
        if self._incoming:
            self._place()
        if now_ms < self._quiet_until and now_ms >= self._now:
            self._now = now_ms
            return []
        if not now_ms >= self._now:
            if now_ms != now_ms:
                raise ValueError("now_ms must be a finite number of epoch milliseconds, got nan")
            raise ValueError(
                f"time went backwards: advance({now_ms!r}) after the wheel reached {self._now!r}"
            )
        if now_ms >= self._slot_end:
            try:
                target = floor(now_ms * self._per_ms)
            except OverflowError:
                raise ValueError(
                    f"now_ms must be a finite number of epoch milliseconds, got {now_ms!r}"
                ) from None
            if target > self._cur:
                self._move_to(target)
        self._now = now_ms
        head = self._head
        live = self._live
        pop = live.pop
        out: list[_Entry[K]] = []
        while head:
            entry = head[-1]
            key = entry[1]
            if entry[0] > now_ms:
                if live.get(key) is entry:
                    # The earliest entry left: everything else is in later slots.
                    self._quiet_until = entry[0]
                    self._next_entry = entry
                    return out
                del head[-1]  # cancelled
                continue
            del head[-1]
            found = pop(key, None)
            if found is entry:
                out.append(entry)
            elif found is not None:
                live[key] = found  # the current entry of a re-added key: keep it
        # What is left is in later slots.
        self._quiet_until = self._slot_end
        self._next_entry = None
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline held, exactly, or ``None`` if the wheel is empty.

        The runtime sleeps until this time, then calls :meth:`advance`.
        """
        if self._incoming:
            self._place()
        entry = self._next_entry
        if entry is not None and self._live.get(entry[1]) is entry:
            return entry[0]
        if not self._live:
            return None
        return self._find_next()

    # -- internals ----------------------------------------------------------

    def _slot(self, ms: float, name: str) -> int:
        try:
            return floor(ms * self._per_ms)
        except (OverflowError, ValueError):
            raise ValueError(
                f"{name} must be a finite number of epoch milliseconds, got {ms!r}"
            ) from None

    def _next_slot_start(self) -> float:
        """A time before which every deadline is in the current slot or
        earlier: where the next slot starts. (Near zero, where rounding
        may blur that, an earlier time, which costs only speed.)"""
        start = (self._cur + 1) * self._slot_ms
        if floor(nextafter(start, -inf) * self._per_ms) > self._cur:
            return -inf
        return start

    def _place(self) -> None:
        """Put the incoming entries where they belong: head, ring or overflow."""
        batch = self._incoming
        self._incoming = []
        cur = self._cur
        reach = cur + self._slots
        per_ms = self._per_ms
        ring = self._ring
        mask = self._mask
        current: list[_Entry[K]] | None = None  # for the head: due, or in this slot
        for entry in batch:
            slot = floor(entry[0] * per_ms)
            if slot > cur:
                if slot < reach:
                    ring[slot & mask].append(entry)
                else:
                    self._push_overflow(entry, slot)
            elif current is None:
                current = [entry]
            else:
                current.append(entry)
        if current is not None:
            self._merge_into_head(current)
        first = batch[0] if len(batch) == 1 else min(batch, key=_deadline)
        if first[0] < self._quiet_until:
            self._quiet_until = first[0]
        # The earliest entry held before was the earliest of all held then;
        # an entry earlier still is the earliest now.
        known = self._next_entry
        if known is not None and first[0] < known[0]:
            self._next_entry = first
        self._placed_budget -= len(batch)
        if self._placed_budget < 0:
            self._drop_cancelled()

    def _merge_into_head(self, entries: list[_Entry[K]]) -> None:
        """Sort entries due in the current slot or earlier, in insertion
        order, into the head."""
        head = self._head
        if len(entries) <= _SMALL_MERGE:
            for entry in entries:
                # Before (so taken after) every entry with the same deadline.
                head.insert(bisect_left(head, -entry[0], key=_minus_deadline), entry)
        else:
            head.reverse()
            head += entries
            _sort_latest_first(head)

    def _push_overflow(self, entry: _Entry[K], slot: int) -> None:
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._overflow, (entry[0], seq, slot, entry))

    def _drop_cancelled(self) -> None:
        """Drop cancelled entries if they outnumber live ones (counting what
        is held is O(slots); it happens once per so many placed entries)."""
        live = self._live
        self._placed_budget = len(live) + _GARBAGE_SLACK
        held = len(self._head) + sum(map(len, self._ring)) + len(self._overflow)
        if held <= 2 * len(live) + _GARBAGE_SLACK:
            return
        # Filtering keeps the order of what is left, and the overflow's
        # insertion numbers keep its ties in order.
        self._head = [entry for entry in self._head if live.get(entry[1]) is entry]
        for bucket in self._ring:
            if bucket:
                bucket[:] = [entry for entry in bucket if live.get(entry[1]) is entry]
        overflow = self._overflow
        overflow[:] = [item for item in overflow if live.get(item[3][1]) is item[3]]
        heapq.heapify(overflow)

    def _move_to(self, target: int) -> None:
        """Make slot ``target``, after the current one, the head: what is left
        of the head and every slot up to ``target`` are sorted into it."""
        cur = self._cur
        ring = self._ring
        mask = self._mask
        head = self._head
        head.reverse()
        for slot in range(cur + 1, min(target, cur + self._slots - 1) + 1):
            index = slot & mask
            bucket = ring[index]
            if bucket:
                if head:
                    head += bucket
                    bucket.clear()
                else:
                    head, ring[index] = bucket, head
        overflow = self._overflow
        if overflow and overflow[0][2] <= target:
            # Only after a jump past the whole ring, which is empty now.
            heappop = heapq.heappop
            while overflow and overflow[0][2] <= target:
                head.append(heappop(overflow)[3])
        _sort_latest_first(head)
        self._head = head
        self._cur = target
        self._slot_end = self._next_slot_start()
        reach = target + self._slots
        if overflow and overflow[0][2] < reach:
            # Into the ring, in (deadline, insertion) order, before anything
            # else can be placed in these slots.
            live = self._live
            heappop = heapq.heappop
            while overflow and overflow[0][2] < reach:
                item = heappop(overflow)
                entry = item[3]
                if live.get(entry[1]) is entry:
                    ring[item[2] & mask].append(entry)

    def _find_next(self) -> float:
        """Work out the earliest live deadline (some entry is live), dropping
        the cancelled entries found on the way. Past the head, that is the
        earliest live entry of the next occupied slot: its list is sorted
        where it is, and the head takes it over sorted when time gets there."""
        live = self._live
        head = self._head
        while head:
            entry = head[-1]
            if live.get(entry[1]) is entry:
                return self._found_next(entry)
            del head[-1]
        ring = self._ring
        mask = self._mask
        cur = self._cur
        for slot in range(cur + 1, cur + self._slots):
            bucket = ring[slot & mask]
            if bucket:
                bucket.sort(key=_deadline)
                for entry in bucket:
                    if live.get(entry[1]) is entry:
                        return self._found_next(entry)
                bucket.clear()
        overflow = self._overflow
        while True:
            entry = overflow[0][3]
            if live.get(entry[1]) is entry:
                return self._found_next(entry)
            heapq.heappop(overflow)

    def _found_next(self, entry: _Entry[K]) -> float:
        self._next_entry = entry
        slot_end = self._slot_end
        self._quiet_until = entry[0] if entry[0] < slot_end else slot_end
        return entry[0]
