"""The commit log: optimistic conflict detection and snapshot overlays.

Pure bookkeeping, no I/O. Each commit records, for every document it wrote,
the document's previous version (its *before-image*) and the index keys it
removed and added. That is enough to

* validate a transaction: a commit after its snapshot conflicts if it wrote a
  document the transaction read by id, or moved an index entry into or out
  of a key range the transaction scanned;
* serve snapshot reads from a store that only keeps the latest version: a
  document written after the snapshot is replaced by the before-image of the
  first such commit (an undo log, as InnoDB and Oracle do it).

Commits stay in the log while a live snapshot may still need them.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Callable

from .jobs import JobChanges
from .types import Document, ReadSet, Snapshot, Write

__all__ = ["Commit", "CommitLog", "IndexChange", "Keyed"]


IndexChange = tuple[str, str, "bytes | None", "bytes | None"]
"""``(index key, document id, old key, new key)``: an index entry of the document
moved from ``old`` to ``new`` (None: absent). A plain tuple: there is one per
index per write, and the engine makes them by the hundred thousand."""


Keyed = tuple["bytes | None", "Document | None"]
"""A document version and its key in one index (None: no entry, or no document)."""


class Commit:
    """One committed transaction: its writes, and the index entries they move.

    The index changes are worked out on first use, from the writes and the
    indexes maintained when the commit was made: a commit nobody validates a
    range read against, applied to a backend that indexes on its own terms,
    never pays for encoding keys.
    """

    __slots__ = (
        "_changes",
        "_indexer",
        "_tables",
        "by_id",
        "done",
        "jobs",
        "prepared",
        "read_ts",
        "ts",
        "writes",
    )

    def __init__(
        self,
        ts: int,
        writes: list[Write],
        indexer: Callable[[list[Write]], list[IndexChange]],
    ) -> None:
        self.ts = ts
        self.writes = writes
        self.by_id: dict[str, Write] = {write.id: write for write in writes}
        self._tables: set[str] | None = None
        self.done: asyncio.Future[None] | None = None
        self._indexer: Callable[[list[Write]], list[IndexChange]] | None = indexer
        self._changes: list[IndexChange] | None = None
        self.prepared: object = None
        """What the backend worked out to write for this commit, if it did early."""
        self.read_ts = 0
        """The timestamp of the snapshot the transaction read."""
        self.jobs: JobChanges | None = None
        """The jobs it created or cancelled, reported to job listeners once durable."""

    @property
    def tables(self) -> set[str]:
        """The tables this commit wrote to."""
        tables = self._tables
        if tables is None:
            tables = self._tables = {write.table for write in self.writes}
        return tables

    @property
    def index_changes(self) -> list[IndexChange]:
        changes = self._changes
        if changes is None:
            assert self._indexer is not None
            changes = self._changes = self._indexer(self.writes)
            self._indexer = None
        return changes


class CommitLog:
    """Recent commits in timestamp order, with the snapshots that still need them."""

    __slots__ = ("_commits", "_snapshots")

    def __init__(self) -> None:
        self._commits: list[Commit] = []
        self._snapshots: Counter[int] = Counter()

    # -- snapshots ---------------------------------------------------------

    def pin(self, ts: int) -> None:
        self._snapshots[ts] += 1

    def unpin(self, ts: int) -> None:
        count = self._snapshots[ts] - 1
        if count > 0:
            self._snapshots[ts] = count
        else:
            del self._snapshots[ts]

    # -- commits -----------------------------------------------------------

    def append(self, commit: Commit) -> None:
        self._commits.append(commit)

    def remove(self, commits: list[Commit]) -> None:
        dropped = {commit.ts for commit in commits}
        self._commits = [c for c in self._commits if c.ts not in dropped]

    def after(self, ts: int) -> list[Commit]:
        """Commits with a timestamp greater than ``ts``, oldest first."""
        commits = self._commits
        if not commits or commits[-1].ts <= ts:
            return []
        return commits[bisect.bisect_right(commits, ts, key=_commit_ts) :]

    def oldest_pin(self, default: int) -> int:
        """The oldest timestamp a live snapshot pins (``default`` if none is live)."""
        return min(self._snapshots, default=default)

    def trim(self, applied_ts: int) -> None:
        """Forget commits no live snapshot can see past, once applied to the store."""
        horizon = min(self._snapshots, default=applied_ts)
        horizon = min(horizon, applied_ts)
        commits = self._commits
        cut = 0
        while cut < len(commits) and commits[cut].ts <= horizon:
            cut += 1
        if cut:
            del commits[:cut]

    def __len__(self) -> int:
        return len(self._commits)

    # -- validation ----------------------------------------------------------

    def find_conflict(self, snapshot_ts: int, reads: ReadSet) -> str | None:
        """The table of a conflicting write committed after ``snapshot_ts``, or None."""
        if not reads.ids and not reads.ranges:
            return None
        later = self.after(snapshot_ts)
        if not later:
            return None
        ids = reads.ids
        ranges_by_index: dict[str, list[tuple[bytes, bytes | None]]] = {}
        scanned: set[str] = set()
        for key_range in reads.ranges:
            ranges_by_index.setdefault(key_range.index, []).append((key_range.low, key_range.high))
            scanned.add(key_range.index.rpartition(".")[0])
        for commit in later:
            # C-level, over the smaller side: a commit may hold a thousand writes.
            if ids and not commit.by_id.keys().isdisjoint(ids):
                doc_id = next(iter(commit.by_id.keys() & ids))
                return commit.by_id[doc_id].table
            if scanned and not scanned.isdisjoint(commit.tables):
                for index, doc_id, old, new in commit.index_changes:
                    ranges = ranges_by_index.get(index)
                    if ranges is None:
                        continue
                    for low, high in ranges:
                        for key in (old, new):
                            if key is not None and key >= low and (high is None or key < high):
                                return commit.by_id[doc_id].table
        return None

    # -- overlays ------------------------------------------------------------

    def version_at(self, snapshot: Snapshot, doc_id: str) -> tuple[bool, Document | None]:
        """``(True, doc)`` if ``doc_id`` changed after the snapshot, with its version
        as of the snapshot (for a speculative snapshot, also if a commit it
        sees that is not durable yet changed it); ``(False, None)`` if the
        latest version is the right one."""
        ts = snapshot.ts
        found: tuple[bool, Document | None] = (False, None)
        for commit in self.after(snapshot.durable):
            write = commit.by_id.get(doc_id)
            if write is not None:
                if commit.ts > ts:
                    return True, write.old
                found = (True, write.new)
        return found

    def versions_at(self, snapshot: Snapshot, index: str) -> dict[str, Keyed]:
        """Every document with an entry in ``index`` whose latest version is
        not the one the snapshot sees: the version it sees (see
        :meth:`version_at`) with that version's key in ``index`` (None: no
        entry). The keys come from each commit's index changes, worked out
        once per commit however many scans need them (so an index configured
        after a commit was made is not in its changes: only code loaded after
        the index scans it, on snapshots that see that commit)."""
        ts = snapshot.ts
        versions: dict[str, Keyed] = {}
        settled: set[str] = set()
        table = index.rpartition(".")[0]
        for commit in self.after(snapshot.durable):
            if table not in commit.tables:
                continue
            seen = commit.ts <= ts
            by_id = commit.by_id
            for changed, doc_id, old, new in commit.index_changes:
                if changed != index:
                    continue
                if seen:
                    versions[doc_id] = (new, by_id[doc_id].new)
                elif doc_id not in settled:
                    # The first write after the snapshot: its before-image is
                    # the version the snapshot sees (the last one it saw, if any).
                    settled.add(doc_id)
                    versions[doc_id] = (old, by_id[doc_id].old)
        return versions


def _commit_ts(commit: Commit) -> int:
    return commit.ts
