"""The port's job queue: job events, due jobs, actions' start and end,
interrupted actions and retention, on every store."""

from __future__ import annotations

from typing import Any

import pytest

from convexpy.store import ConflictError, KeyRange, Store
from convexpy.store.jobs import (
    SCHEDULED_FUNCTIONS,
    SYSTEM_INDEXES,
    TRANSIENT_ACTION_ERROR,
    JobChanges,
    JobState,
    completed_before,
    ended,
    new_job,
    started,
    state_range,
)

from .helpers import T0, TASKS, Txn, by_creation, full, read_get

JOBS = SCHEDULED_FUNCTIONS


@pytest.fixture
async def jobs(store: Store) -> Store:
    """``store`` with the job table's indexes configured, as the runtime does."""
    await store.configure_indexes(SYSTEM_INDEXES)
    return store


async def add_jobs(store: Store, *specs: tuple[str, float]) -> list[str]:
    """Pending jobs ``(name, scheduledTime)``, committed together; their ids."""
    txn = Txn(store)
    ids = [
        (await txn.insert(JOBS, **new_job(name, {"n": i}, when)))["_id"]
        for i, (name, when) in enumerate(specs)
    ]
    await txn.commit()
    return ids


async def set_job(store: Store, job_id: str, new: dict[str, Any]) -> None:
    txn = Txn(store)
    old = await txn.get(job_id)
    txn.write(JOBS, job_id, old, new)
    await txn.commit()


async def job(store: Store, job_id: str) -> dict[str, Any]:
    doc = await read_get(store, job_id)
    assert doc is not None
    return doc


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, float, str]], list[str]]] = []
        self.take_accepted = False

    def jobs_accepted(self, changes: JobChanges) -> None:
        self.calls.append(("accepted", list(changes.created), list(changes.canceled)))
        if self.take_accepted:
            changes.created.clear()  # dealt with: the durable call sees none

    def jobs_durable(self, changes: JobChanges) -> None:
        self.calls.append(("durable", list(changes.created), list(changes.canceled)))


async def test_commits_that_create_or_cancel_jobs_are_reported_twice(jobs: Store) -> None:
    listener = Listener()
    jobs.watch_jobs(listener)
    first, second = await add_jobs(jobs, ("a:f", T0 + 10), ("a:g", T0 + 20))
    created = [(first, T0 + 10, "a:f"), (second, T0 + 20, "a:g")]
    assert listener.calls == [("accepted", created, []), ("durable", created, [])]

    listener.calls.clear()
    await set_job(jobs, first, ended(await job(jobs, first), JobState.CANCELED, T0))
    assert listener.calls == [("accepted", [], [first]), ("durable", [], [first])]

    listener.calls.clear()
    await set_job(jobs, second, ended(await job(jobs, second), JobState.SUCCESS, T0))
    txn = Txn(jobs)
    await txn.insert("tasks", title="not a job")
    await txn.commit()
    assert listener.calls == []  # finishing a job, or writing other tables, changes no job to run


async def test_a_listener_that_takes_jobs_at_acceptance_leaves_none_for_durability(
    jobs: Store,
) -> None:
    listener = Listener()
    listener.take_accepted = True
    jobs.watch_jobs(listener)
    (job_id,) = await add_jobs(jobs, ("a:f", T0))
    assert listener.calls == [("accepted", [(job_id, T0, "a:f")], []), ("durable", [], [])]


async def test_a_failing_listener_fails_neither_the_commit_nor_other_listeners(
    jobs: Store, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def jobs_accepted(self, changes: JobChanges) -> None:
            raise RuntimeError("listener bug")

        def jobs_durable(self, changes: JobChanges) -> None:
            raise RuntimeError("listener bug")

    listener = Listener()
    jobs.watch_jobs(Broken())
    jobs.watch_jobs(listener)
    (job_id,) = await add_jobs(jobs, ("a:f", T0))
    assert (await job(jobs, job_id))["state"] == {"kind": "pending"}
    assert [call[0] for call in listener.calls] == ["accepted", "durable"]
    assert "a job listener failed" in caplog.text


async def test_due_jobs_lists_pending_jobs_by_time_within_bounds_and_pages(jobs: Store) -> None:
    ids = await add_jobs(
        jobs, ("a:f", T0 + 30), ("a:f", T0 + 10), ("a:g", T0 + 20), ("a:h", T0 + 40)
    )
    await set_job(jobs, ids[3], ended(await job(jobs, ids[3]), JobState.CANCELED, T0))
    due = await jobs.due_jobs(10)
    assert [(j.id, j.scheduled_time, j.name) for j in due] == [
        (ids[1], T0 + 10, "a:f"),
        (ids[2], T0 + 20, "a:g"),
        (ids[0], T0 + 30, "a:f"),
    ]
    assert [j.id for j in await jobs.due_jobs(10, before=T0 + 30)] == [ids[1], ids[2]]
    assert [j.id for j in await jobs.due_jobs(10, at_or_after=T0 + 20)] == [ids[2], ids[0]]
    assert [j.id for j in await jobs.due_jobs(1, at_or_after=T0 + 11)] == [ids[2]]
    first = await jobs.due_jobs(2)
    rest = await jobs.due_jobs(2, after_key=first[-1].key)
    assert [j.id for j in first + rest] == [ids[1], ids[2], ids[0]]


async def test_an_action_starts_at_most_once_and_ends_unless_cancelled(jobs: Store) -> None:
    action, other = await add_jobs(jobs, ("a:act", T0), ("a:act", T0))
    pending = await jobs.start_action(action)
    assert pending is not None and pending["state"] == {"kind": "pending"}
    assert (await job(jobs, action))["state"] == {"kind": "inProgress"}
    assert await jobs.start_action(action) is None  # running already
    assert [j.id for j in await jobs.due_jobs(10)] == [other]  # running: no longer due

    assert await jobs.finish_action(action, JobState.FAILED, T0 + 5, "ValueError: boom")
    assert await job(jobs, action) == {
        **pending,
        "state": {"kind": "failed", "error": "ValueError: boom"},
        "completedTime": T0 + 5,
    }
    assert not await jobs.finish_action(action, JobState.SUCCESS, T0 + 6)  # not running

    await jobs.start_action(other)
    await set_job(jobs, other, ended(await job(jobs, other), JobState.CANCELED, T0 + 1))
    assert not await jobs.finish_action(other, JobState.SUCCESS, T0 + 7)
    assert (await job(jobs, other))["state"] == {"kind": "canceled"}  # the cancel stands
    assert await jobs.start_action("missing-job-id") is None


async def test_interrupted_actions_fail_with_the_transient_error(jobs: Store) -> None:
    ids = await add_jobs(jobs, *[("a:act", T0 + n) for n in range(5)])
    for job_id in ids[:3]:
        await set_job(jobs, job_id, started(await job(jobs, job_id)))
    assert await jobs.fail_interrupted_actions(T0 + 100, TRANSIENT_ACTION_ERROR, limit=2) == 2
    assert await jobs.fail_interrupted_actions(T0 + 100, TRANSIENT_ACTION_ERROR, limit=2) == 1
    assert await jobs.fail_interrupted_actions(T0 + 100, TRANSIENT_ACTION_ERROR) == 0
    for job_id in ids[:3]:
        doc = await job(jobs, job_id)
        assert doc["state"] == {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
        assert doc["completedTime"] == T0 + 100
    assert [(await job(jobs, i))["state"]["kind"] for i in ids[3:]] == ["pending", "pending"]


async def test_finished_jobs_are_deleted_oldest_first_up_to_the_cutoff(jobs: Store) -> None:
    ids = await add_jobs(jobs, *[("a:f", T0) for _ in range(5)])
    assert await jobs.oldest_finished_job() is None
    for n, job_id in enumerate(ids[:4]):  # completed at T0+1 .. T0+4
        await set_job(jobs, job_id, ended(await job(jobs, job_id), JobState.SUCCESS, T0 + 1 + n))
    assert await jobs.oldest_finished_job() == T0 + 1
    assert await jobs.delete_finished_jobs(T0 + 3, limit=2) == 2  # T0+1, T0+2
    assert await read_get(jobs, ids[0]) is None and await read_get(jobs, ids[1]) is None
    assert await jobs.oldest_finished_job() == T0 + 3
    assert await jobs.delete_finished_jobs(T0 + 3, limit=10) == 1  # T0+3; T0+4 is newer
    assert await read_get(jobs, ids[3]) is not None
    assert (await job(jobs, ids[4]))["state"] == {"kind": "pending"}  # never deleted


# -- jobs at older snapshots, and conflicts on them --------------------------------------


async def job_scan(txn: Txn, key_range: KeyRange) -> list[str]:
    return [doc["_id"] for _, doc in await txn.scan(key_range)]


async def test_a_snapshot_reads_jobs_as_they_were_through_every_transition(
    jobs: Store,
) -> None:
    """Each snapshot sees every job, by id and through each job index, as it
    was when the snapshot was taken: pending, in progress, ended, deleted."""
    action, other = await add_jobs(jobs, ("a:act", T0 + 2), ("a:f", T0 + 1))
    created = by_creation(JOBS)
    running, pending = state_range(JobState.IN_PROGRESS), state_range(JobState.PENDING)
    finished = completed_before(float("inf"))
    seen: list[tuple[Txn, Any]] = []

    async def look() -> None:
        seen.append((Txn(jobs), [await job(jobs, action), await job(jobs, other)]))

    await look()
    started_doc = await jobs.start_action(action)
    assert started_doc is not None
    await look()
    await jobs.finish_action(action, JobState.SUCCESS, T0 + 5)
    await set_job(jobs, other, ended(await job(jobs, other), JobState.CANCELED, T0 + 4))
    await look()
    assert await jobs.delete_finished_jobs(T0 + 4, limit=10) == 1  # `other`, completed first
    expected = [
        # (by id, pending, in progress, finished, by creation)
        ([action, other], [other, action], [], [], [action, other]),
        ([action, other], [other], [action], [], [action, other]),
        ([action, other], [], [], [other, action], [action, other]),
        ([action, None], [], [], [action], [action]),
    ]
    seen.append((Txn(jobs), None))
    for (txn, docs), (by_id, due, busy, done, made) in zip(seen, expected, strict=True):
        found = [await txn.get(i) for i in (action, other)]
        assert [None if doc is None else doc["_id"] for doc in found] == by_id
        if docs is not None:
            assert found == docs
        assert await job_scan(txn, pending) == due
        assert await job_scan(txn, running) == busy
        assert await job_scan(txn, finished) == done
        assert await job_scan(txn, full(created)) == made
        jobs.release(txn.snapshot)


async def test_a_job_changed_after_a_read_of_it_conflicts(jobs: Store) -> None:
    action, other = await add_jobs(jobs, ("a:act", T0), ("a:f", T0))
    by_id = Txn(jobs)
    await by_id.get(action)
    await by_id.insert(TASKS, n=1)
    unrelated = Txn(jobs)
    await unrelated.get(other)
    await unrelated.insert(TASKS, n=2)
    await jobs.start_action(action)
    with pytest.raises(ConflictError):
        await by_id.commit()
    await unrelated.commit()


@pytest.mark.parametrize(
    ("read", "change", "conflicts"),
    [
        ("running", "start", True),  # a job entered the range
        ("running", "cancel", False),  # a pending job left another range
        ("pending", "cancel", True),
        ("pending", "create", True),
        ("running", "create", False),
        ("finished", "cancel", True),
        ("finished", "start", False),
        ("created", "start", True),  # same key, new content
    ],
)
async def test_a_job_index_range_read_conflicts_only_with_changes_inside_it(
    jobs: Store, read: str, change: str, conflicts: bool
) -> None:
    (job_id,) = await add_jobs(jobs, ("a:act", T0))
    ranges = {
        "running": state_range(JobState.IN_PROGRESS),
        "pending": state_range(JobState.PENDING),
        "finished": completed_before(float("inf")),
        "created": full(by_creation(JOBS)),
    }
    txn = Txn(jobs)
    await txn.scan(ranges[read])
    await txn.insert(TASKS, n=1)
    if change == "start":
        await jobs.start_action(job_id)
    elif change == "cancel":
        await set_job(jobs, job_id, ended(await job(jobs, job_id), JobState.CANCELED, T0 + 1))
    else:
        await add_jobs(jobs, ("a:f", T0 + 1))
    if conflicts:
        with pytest.raises(ConflictError):
            await txn.commit()
    else:
        await txn.commit()
