"""The dispatcher's queue of due jobs, earliest scheduled time first.

Due jobs arrive in runs: the jobs one commit made due, or the jobs one tick
of the timer wheel released. A run is sorted once, in C, and a heap orders
the runs by their next job, so taking the next job costs O(1) while its run
stays in front (the usual case: runs arrive in time order) and O(log runs)
otherwise, instead of a heap push and pop per job.
"""

from __future__ import annotations

import heapq
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

    def put_back(self, when: float, job_id: str) -> None:
        """Return a job just popped: it comes out first again."""
        self._seq += 1
        heapq.heappush(self._heap, [when, -self._seq, [(when, job_id)], 0])
        self._len += 1

    def pop(self) -> tuple[float, str]:
        """The earliest job (raises IndexError when empty)."""
        heap = self._heap
        run = heap[0]
        jobs, position = run[2], run[3]
        job: tuple[float, str] = jobs[position]
        position += 1
        self._len -= 1
        if position == len(jobs):
            heapq.heappop(heap)
        else:
            run[3] = position
            run[0] = jobs[position][0]
            if len(heap) > 1:
                heapq.heapreplace(heap, run)  # re-place the run by its next job
        return job


def _time(job: tuple[float, str]) -> float:
    return job[0]
