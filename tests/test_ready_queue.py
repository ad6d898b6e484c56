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
        st.tuples(st.just("take"), st.integers(0, 9)),
        st.tuples(st.just("back"), st.integers(0, 3)),
    ),
    max_size=40,
)

Entry = tuple[float, int, int, str]
"""A job in the model: (time, group, index, id). A job of a run is a group of
its own, numbered by arrival; jobs put back share a group that sorts before
every other, newest first."""


@settings(max_examples=500)
@given(operations)
def test_pops_and_takes_in_time_order_then_arrival_order(ops: list[tuple[str, object]]) -> None:
    queue = ReadyQueue()
    model: list[Entry] = []
    arrival = put_backs = 0
    last: list[Entry] = []  # what came out last, in order
    for op, arg in ops:
        if op == "run":
            assert isinstance(arg, list)
            jobs = []
            for when in arg:
                arrival += 1
                jobs.append((when, f"j{arrival}"))
                model.append((when, arrival, 0, f"j{arrival}"))
            queue.add_run(jobs)
            continue
        assert isinstance(arg, int)
        if op == "pop":
            last = []
            for _ in range(arg):
                if not model:
                    assert not queue
                    with pytest.raises(IndexError):
                        queue.pop()
                    break
                model.sort()
                last.append(model.pop(0))
                assert queue.pop() == (last[-1][0], last[-1][3])
        elif op == "take":
            model.sort()
            last, model = model[:arg], model[arg:]
            assert queue.take(arg) == [(t, j) for t, _, _, j in last]
        elif last:  # put back the last few that came out: they are next again
            back = last[len(last) - min(arg, len(last)) :] if arg else last
            put_backs += 1
            queue.put_back([(t, j) for t, _, _, j in back])
            model += [(t, -put_backs, i, j) for i, (t, _, _, j) in enumerate(back)]
            last = []
        assert len(queue) == len(model)
        assert bool(queue) == bool(model)
    model.sort()
    assert [queue.pop() for _ in range(len(model))] == [(t, j) for t, _, _, j in model]
    assert not queue
