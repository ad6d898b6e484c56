"""The dispatcher's queue of due jobs, earliest scheduled time first.

Due jobs arrive in runs: the jobs one commit made due, or the jobs one tick
of the timer wheel released. A run is sorted once, in C, and a heap orders
the runs by their next job. The dispatcher takes a batch at a time: a slice
of the front run, up to the next run's first job (found by bisection), so a
batch costs O(log runs) however many jobs it holds, instead of a heap push
and pop per job.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any

__all__ = ["ReadyQueue"]

_Run = list[Any]
"""A run in the heap: [time of its next job, sequence number, jobs, position of the next]."""


class ReadyQueue:
    """Due jobs as ``(scheduled time, job id)``, popped in time order (ties: arrival order)."""

    __slots__ = ("_heap", "_len", "_seq")

    def __init__(self) -> None:
        self._heap: list[_Run] = []
        self._len = 0
        self._seq = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def add_run(self, jobs: list[tuple[float, str]]) -> None:
        """Queue ``jobs`` (in any order; the list becomes the queue's)."""
        if not jobs:
            return
        jobs.sort(key=_time)
        self._seq += 1
        heapq.heappush(self._heap, [jobs[0][0], self._seq, jobs, 0])
        self._len += len(jobs)

    def add(self, when: float, job_id: str) -> None:
        self.add_run([(when, job_id)])

    def put_back(self, jobs: list[tuple[float, str]]) -> None:
        """Return jobs just taken (in the order they came out): they come out
        first again."""
        if jobs:
            self._seq += 1
            heapq.heappush(self._heap, [jobs[0][0], -self._seq, jobs, 0])
            self._len += len(jobs)

    def take(self, n: int) -> list[tuple[float, str]]:
        """The ``n`` earliest jobs (fewer if fewer are queued), in order: what
        ``n`` calls of :meth:`pop` return, a slice of a run at a time."""
        heap = self._heap
        taken: list[tuple[float, str]] = []
        while n > 0 and heap:
            run = heap[0]
            jobs, position = run[2], run[3]
            end = min(len(jobs), position + n)
            if len(heap) > 1:
                # The front run's jobs up to the next run's first: ties go to
                # the run that arrived first, as the heap orders them.
                rival = heap[1] if len(heap) == 2 or heap[1][:2] <= heap[2][:2] else heap[2]
                cut = bisect_right if run[1] < rival[1] else bisect_left
                end = max(position + 1, cut(jobs, rival[0], position, end, key=_time))
            taken += jobs[position:end]
            n -= end - position
            self._len -= end - position
            if end == len(jobs):
                heapq.heappop(heap)
            else:
                run[3] = end
                run[0] = jobs[end][0]
                if len(heap) > 1:
                    heapq.heapreplace(heap, run)
        return taken

    def pop(self) -> tuple[float, str]:
        """The earliest job (raises IndexError when empty)."""
        taken = self.take(1)
        if not taken:
            raise IndexError("pop from an empty ReadyQueue")
        return taken[0]


_time = itemgetter(0)
"""A job's scheduled time."""
