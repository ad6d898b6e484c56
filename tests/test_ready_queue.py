"""The dispatcher's ready queue against a model: a list sorted by (time, arrival)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convexpy.scheduler.ready import ReadyQueue

times = st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0, float("-inf")])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.lists(times, max_size=6)),
        st.tuples(st.just("pop"), st.integers(1, 4)),
        st.tuples(st.just("back"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(operations)
def test_pops_in_time_order_then_arrival_order(ops: list[tuple[str, object]]) -> None:
    queue = ReadyQueue()
    model: list[tuple[float, int, str]] = []  # (time, arrival, id)
    arrival = 0
    last: tuple[float, str] | None = None
    for op, arg in ops:
        if op == "run":
            assert isinstance(arg, list)
            jobs = []
            for when in arg:
                arrival += 1
                job = f"j{arrival}"
                jobs.append((when, job))
                model.append((when, arrival, job))
            queue.add_run(jobs)
        elif op == "pop":
            assert isinstance(arg, int)
            for _ in range(arg):
                if not model:
                    assert not queue
                    with pytest.raises(IndexError):
                        queue.pop()
                    break
                model.sort()
                expected = model.pop(0)
                last = queue.pop()
                assert last == (expected[0], expected[2])
        elif last is not None:  # put the last popped job back: it is next again
            queue.put_back(*last)
            model.append((last[0], -arrival - 1, last[1]))
            arrival += 1
            last = None
        assert len(queue) == len(model)
        assert bool(queue) == bool(model)
    model.sort()
    assert [queue.pop() for _ in range(len(model))] == [(t, j) for t, _, j in model]
    assert not queue
