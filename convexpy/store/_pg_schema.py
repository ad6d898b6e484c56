"""The PostgreSQL store's layout and server-side functions (see :mod:`.postgres`).

Version 4. Opening an older layout migrates it: version 1 lacked
``convexpy_claims``, version 2's ``convexpy_commit`` looked documents up in a
way the planner could turn into a scan of the whole table, and versions 1
to 3 kept jobs as versioned documents (they move to ``convexpy_jobs``). Every
table is named ``convexpy_*``, so the store can share a database with other
software. Stop every process before opening a database with a newer
convexpy: a migration changes what commits write.

* ``convexpy_schema``: one row, the layout version.
* ``convexpy_clock``: one row: ``ts``, the last commit's timestamp; ``floor``,
  the oldest timestamp still readable (versions older are collected);
  ``indexes``, the timestamp of the last change to the set of built indexes.
  Every commit locks this row (``FOR UPDATE``): commits are serialized across
  all processes, which orders them by timestamp.
* ``convexpy_documents``: every version of every document, valid from
  ``from_ts`` (the commit that wrote it) until ``to_ts`` (the commit that
  replaced or deleted it; NULL while it is the latest).
* ``convexpy_index_entries``: index entries, versioned the same way. A
  commit closes every open entry of the documents it writes and opens the
  entries of their new versions, even where a key stays put (the entry's
  document changed: a scan over it read the old content).
* ``convexpy_indexes``: the declared indexes that are built, with their definition.
* ``convexpy_tables``: the tables that hold or held documents.
* ``convexpy_jobs``: the ``_scheduled_functions`` table, one row per job
  with the timestamp of each of its transitions (see :mod:`._pg_jobs`): jobs
  have no versions or index entries. ``convexpy_new_job`` and
  ``convexpy_job_change`` are the row types ``convexpy_commit`` takes them in.
* ``convexpy_claims``: which process (``owner``) holds a job, until when
  (``until``, the database's clock): a due job is started by the process
  that claimed it, and a running action's claim is its lease, renewed while
  it runs (see :meth:`convexpy.store.base.Store.claim_jobs`).
"""

from __future__ import annotations

SCHEMA_VERSION = 4

CHANNEL = "convexpy_commit"
"""Every commit NOTIFYs its timestamp here."""

JOBS_CHANNEL = "convexpy_jobs"
"""A commit that creates or cancels jobs also NOTIFYs, here, ``TS OWNER CHANGES``:
its timestamp, the committing store's :attr:`owner` token, and the changes as
JSON ``[[[id, scheduledTime, name], ...], [cancelled id, ...]]``, or ``*`` when
that would not fit a payload (the listener reads the commit's jobs instead)."""

MAX_PAYLOAD = 7900
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes or more."""

CLAIMS = [
    """CREATE TABLE IF NOT EXISTS convexpy_claims (
        id text COLLATE "C" PRIMARY KEY,
        owner text NOT NULL,
        until timestamptz NOT NULL
    )""",
]
"""What version 2 added to version 1 (also run to migrate)."""

JOBS = [
    """CREATE TABLE convexpy_jobs (
        id text COLLATE "C" PRIMARY KEY,
        created double precision NOT NULL,
        name text NOT NULL,
        args bytea NOT NULL,
        scheduled double precision NOT NULL,
        state smallint NOT NULL,
        completed double precision,
        error text,
        created_ts bigint NOT NULL,
        started_ts bigint,
        ended_ts bigint,
        deleted_ts bigint,
        changed_ts bigint NOT NULL,
        ckey bytea NOT NULL,
        pkey bytea,
        ikey bytea,
        skey bytea,
        ekey bytea
    )""",
    "CREATE INDEX convexpy_jobs_created ON convexpy_jobs (ckey)",
    # What convexpy_commit takes of new jobs and of transitions (see
    # _pg_jobs.JobWrites): an array of rows encodes faster than one array
    # per column.
    """CREATE TYPE convexpy_new_job AS (
        id text, created float8, name text, args bytea, scheduled float8, state smallint,
        completed float8, error text, ckey bytea, skey bytea, ekey bytea
    )""",
    """CREATE TYPE convexpy_job_change AS (
        id text, transition smallint, state smallint, completed float8, error text, key bytea
    )""",
    "CREATE INDEX convexpy_jobs_state ON convexpy_jobs (skey) WHERE skey IS NOT NULL",
    "CREATE INDEX convexpy_jobs_completed ON convexpy_jobs (ekey) WHERE ekey IS NOT NULL",
    "CREATE INDEX convexpy_jobs_changed ON convexpy_jobs (changed_ts)",
    """CREATE INDEX convexpy_jobs_deleted ON convexpy_jobs (deleted_ts)
        WHERE deleted_ts IS NOT NULL""",
]
"""What version 4 added (also run to migrate). ``state``, ``completed`` and
``error`` are the latest version's; ``changed_ts`` is the latest transition's
timestamp; the keys are explained in :mod:`._pg_jobs`."""

JOB_TABLE = "_scheduled_functions"

# One commit, validated and applied in one statement (one round trip).
# Returns the commit's timestamp, or a conflict: '#indexes' (the built
# indexes changed: recompute the entries and call again), '#old' (the
# snapshot is older than the floor), 'doc:TABLE' or 'idx:INDEX'. On a
# conflict, out_ts is the last commit's timestamp and nothing is written.
# Each document is found by one step along the primary key (id, from_ts),
# whatever the statistics say: a table never analyzed (fresh, or written
# faster than autovacuum looks) otherwise got plans scanning every version.
COMMIT_FUNCTION = f"""CREATE FUNCTION convexpy_commit(
        snap bigint, known_indexes bigint,
        read_ids text[], r_idx text[], r_lo bytea[], r_hi bytea[],
        w_ids text[], n_ids text[], n_tbls text[], n_docs bytea[],
        e_idx text[], e_keys bytea[], e_ids text[], new_tables text[],
        jr_ids text[], jr_kinds smallint[], jr_lo bytea[], jr_hi bytea[],
        new_jobs convexpy_new_job[], job_changes convexpy_job_change[],
        OUT out_ts bigint, OUT out_conflict text)
    LANGUAGE plpgsql AS $$
    DECLARE
        cur_floor bigint;
        cur_indexes bigint;
    BEGIN
        SELECT c.ts, c.floor, c.indexes INTO out_ts, cur_floor, cur_indexes
            FROM convexpy_clock c WHERE c.id FOR UPDATE;
        IF cur_indexes <> known_indexes THEN
            out_conflict := '#indexes';
            RETURN;
        END IF;
        IF snap < cur_floor THEN
            out_conflict := '#old';
            RETURN;
        END IF;
        IF snap < out_ts THEN
            -- A document read changed since if its latest version began or
            -- ended after the snapshot.
            SELECT 'doc:' || l.tbl INTO out_conflict FROM unnest(read_ids) AS u(id)
                CROSS JOIN LATERAL (
                    SELECT d.tbl, d.from_ts, d.to_ts FROM convexpy_documents d
                    WHERE d.id = u.id ORDER BY d.from_ts DESC LIMIT 1
                ) l
                WHERE l.from_ts > snap OR l.to_ts > snap LIMIT 1;
            IF out_conflict IS NOT NULL THEN
                RETURN;
            END IF;
            IF snap < cur_indexes THEN
                -- An index scanned may have been dropped or rebuilt since.
                SELECT 'idx:' || x INTO out_conflict FROM unnest(r_idx) AS u(x)
                    WHERE x NOT LIKE '%.by\\_creation\\_time' LIMIT 1;
                IF out_conflict IS NOT NULL THEN
                    RETURN;
                END IF;
            END IF;
            SELECT 'idx:' || r.idx INTO out_conflict
                FROM unnest(r_idx, r_lo, r_hi) AS r(idx, lo, hi)
                WHERE EXISTS (
                    SELECT 1 FROM convexpy_index_entries e
                    WHERE e.idx = r.idx AND e.from_ts > snap
                        AND e.key >= r.lo AND (r.hi IS NULL OR e.key < r.hi))
                OR EXISTS (
                    SELECT 1 FROM convexpy_index_entries e
                    WHERE e.idx = r.idx AND e.to_ts > snap
                        AND e.key >= r.lo AND (r.hi IS NULL OR e.key < r.hi))
                LIMIT 1;
            IF out_conflict IS NOT NULL THEN
                RETURN;
            END IF;
            -- Jobs: one read by id changed if the job did; a range read if
            -- a job that changed since held a key in it (while pending, in
            -- progress or ended), around one of those changes.
            SELECT 'doc:{JOB_TABLE}' INTO out_conflict FROM convexpy_jobs j
                WHERE j.id = ANY(jr_ids) AND j.changed_ts > snap LIMIT 1;
            IF out_conflict IS NOT NULL THEN
                RETURN;
            END IF;
            SELECT 'doc:{JOB_TABLE}' INTO out_conflict
                FROM unnest(jr_kinds, jr_lo, jr_hi) AS r(k, lo, hi)
                WHERE EXISTS (
                    SELECT 1 FROM convexpy_jobs j WHERE j.changed_ts > snap AND CASE r.k
                    WHEN 0 THEN j.ckey >= r.lo AND (r.hi IS NULL OR j.ckey < r.hi)
                    WHEN 1 THEN (j.pkey >= r.lo AND (r.hi IS NULL OR j.pkey < r.hi)
                            AND (j.created_ts > snap
                                OR coalesce(j.started_ts, j.ended_ts, j.deleted_ts) > snap))
                        OR (j.ikey >= r.lo AND (r.hi IS NULL OR j.ikey < r.hi)
                            AND (j.started_ts > snap OR coalesce(j.ended_ts, j.deleted_ts) > snap))
                    ELSE j.ekey >= r.lo AND (r.hi IS NULL OR j.ekey < r.hi)
                        AND (j.ended_ts > snap OR j.deleted_ts > snap)
                    END)
                LIMIT 1;
            IF out_conflict IS NOT NULL THEN
                RETURN;
            END IF;
        END IF;
        out_ts := out_ts + 1;
        UPDATE convexpy_documents d SET to_ts = out_ts FROM unnest(w_ids) AS u(id)
            CROSS JOIN LATERAL (
                SELECT x.from_ts, x.to_ts FROM convexpy_documents x
                WHERE x.id = u.id ORDER BY x.from_ts DESC LIMIT 1
            ) l
            WHERE d.id = u.id AND d.from_ts = l.from_ts AND l.to_ts IS NULL;
        INSERT INTO convexpy_documents (id, from_ts, tbl, doc)
            SELECT u.i, out_ts, u.t, u.d FROM unnest(n_ids, n_tbls, n_docs) AS u(i, t, d);
        UPDATE convexpy_index_entries SET to_ts = out_ts
            WHERE id = ANY(w_ids) AND to_ts IS NULL;
        INSERT INTO convexpy_index_entries (idx, key, from_ts, id)
            SELECT u.x, u.k, out_ts, u.i FROM unnest(e_idx, e_keys, e_ids) AS u(x, k, i);
        INSERT INTO convexpy_jobs (id, created, name, args, scheduled, state, completed, error,
                created_ts, started_ts, ended_ts, changed_ts, ckey, pkey, ikey, skey, ekey)
            SELECT u.id, u.c, u.n, u.a, u.s, u.st, u.co, u.er,
                out_ts, CASE WHEN u.st = 2 THEN out_ts END,
                CASE WHEN u.st NOT IN (2, 3) THEN out_ts END, out_ts,
                u.ck, CASE WHEN u.st = 3 THEN u.sk END, CASE WHEN u.st = 2 THEN u.sk END,
                u.sk, u.ek
            FROM unnest(new_jobs) AS u(id, c, n, a, s, st, co, er, ck, sk, ek);
        -- Transitions: 1 an action started, 2 the job ended, 3 it was deleted.
        UPDATE convexpy_jobs j SET
                state = CASE WHEN u.k = 3 THEN j.state ELSE u.st END,
                completed = CASE WHEN u.k = 3 THEN j.completed ELSE u.co END,
                error = CASE WHEN u.k = 3 THEN j.error ELSE u.er END,
                started_ts = CASE WHEN u.k = 1 THEN out_ts ELSE j.started_ts END,
                ended_ts = CASE WHEN u.k = 2 THEN out_ts ELSE j.ended_ts END,
                deleted_ts = CASE WHEN u.k = 3 THEN out_ts ELSE j.deleted_ts END,
                ikey = CASE WHEN u.k = 1 THEN u.key ELSE j.ikey END,
                skey = CASE WHEN u.k = 1 THEN u.key END,
                ekey = CASE WHEN u.k = 2 THEN u.key ELSE j.ekey END,
                changed_ts = out_ts
            FROM unnest(job_changes) AS u(id, k, st, co, er, key)
            WHERE j.id = u.id;
        IF cardinality(new_tables) > 0 THEN
            INSERT INTO convexpy_tables SELECT unnest(new_tables) ON CONFLICT DO NOTHING;
        END IF;
        UPDATE convexpy_clock SET ts = out_ts WHERE id;
        PERFORM pg_notify('{CHANNEL}', out_ts::text);
    END $$"""
"""The commit, as version 4 has it (version 3 had one without jobs: migrating
drops it, so that a process of an older convexpy fails rather than writes
jobs where they are no longer read)."""

OLD_COMMIT_FUNCTION = (
    "DROP FUNCTION IF EXISTS convexpy_commit(bigint, bigint, text[], text[], bytea[], bytea[],"
    " text[], text[], text[], bytea[], text[], bytea[], text[], text[])"
)

# Forget versions that stopped being current at or before ``horizon``.
COLLECT_FUNCTION = """CREATE OR REPLACE FUNCTION convexpy_collect(horizon bigint) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE convexpy_clock SET floor = horizon WHERE id AND floor < horizon;
        IF FOUND THEN
            DELETE FROM convexpy_documents WHERE to_ts <= horizon;
            DELETE FROM convexpy_index_entries WHERE to_ts <= horizon;
            DELETE FROM convexpy_jobs WHERE deleted_ts <= horizon;
        END IF;
    END $$"""

LOCK_KEY = 0x636F6E76
"""The advisory lock that serializes creating and migrating the layout."""

CREATE = [
    "CREATE TABLE convexpy_schema (version integer NOT NULL)",
    """CREATE TABLE convexpy_clock (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        ts bigint NOT NULL,
        floor bigint NOT NULL,
        indexes bigint NOT NULL
    )""",
    "INSERT INTO convexpy_clock VALUES (true, 0, 0, 0)",
    """CREATE TABLE convexpy_documents (
        id text COLLATE "C" NOT NULL,
        from_ts bigint NOT NULL,
        to_ts bigint,
        tbl text NOT NULL,
        doc bytea NOT NULL,
        PRIMARY KEY (id, from_ts)
    )""",
    "CREATE INDEX convexpy_documents_old ON convexpy_documents (to_ts) WHERE to_ts IS NOT NULL",
    "CREATE INDEX convexpy_documents_live ON convexpy_documents (tbl) WHERE to_ts IS NULL",
    """CREATE TABLE convexpy_index_entries (
        idx text COLLATE "C" NOT NULL,
        key bytea NOT NULL,
        from_ts bigint NOT NULL,
        to_ts bigint,
        id text COLLATE "C" NOT NULL,
        PRIMARY KEY (idx, key, from_ts)
    )""",
    "CREATE INDEX convexpy_entries_live ON convexpy_index_entries (id) WHERE to_ts IS NULL",
    "CREATE INDEX convexpy_entries_added ON convexpy_index_entries (idx, from_ts)",
    """CREATE INDEX convexpy_entries_removed ON convexpy_index_entries (idx, to_ts)
        WHERE to_ts IS NOT NULL""",
    """CREATE TABLE convexpy_indexes (
        idx text COLLATE "C" PRIMARY KEY,
        tbl text NOT NULL,
        spec text NOT NULL
    )""",
    'CREATE TABLE convexpy_tables (name text COLLATE "C" PRIMARY KEY)',
    *JOBS,
    COMMIT_FUNCTION,
    COLLECT_FUNCTION,
    *CLAIMS,
    f"INSERT INTO convexpy_schema VALUES ({SCHEMA_VERSION})",
]

# -- reads: each also returns the clock's ts (fresher snapshots) and floor ------------

VISIBLE = "{t}.from_ts <= $2 AND ({t}.to_ts IS NULL OR {t}.to_ts > $2)"

# A document as of ``$2``: its last version that began by then, alive if it
# has not ended since. One backward step on the primary key (id, from_ts),
# whatever the table statistics say (a plain VISIBLE test on the documents
# let the planner AND in the partial index of every live row, per lookup).
DOC_AT = """SELECT d.doc, d.to_ts FROM convexpy_documents d
    WHERE d.id = {id} AND d.from_ts <= $2 ORDER BY d.from_ts DESC LIMIT 1"""
ALIVE = "(v.to_ts IS NULL OR v.to_ts > $2)"

GET = f"""SELECT c.ts, c.floor, (
    SELECT v.doc FROM ({DOC_AT.format(id="$1")}) v WHERE {ALIVE}
) FROM convexpy_clock c WHERE c.id"""

GET_MANY = f"""SELECT c.ts, c.floor, s.id, s.doc FROM convexpy_clock c
LEFT JOIN LATERAL (
    SELECT u.id, v.doc FROM unnest($1::text[]) AS u(id)
    CROSS JOIN LATERAL ({DOC_AT.format(id="u.id")}) v WHERE {ALIVE}
) s ON true WHERE c.id"""


def scan_sql(descending: bool, bounded: bool) -> str:
    """The scan of an index range as of a timestamp: ``$1`` index, ``$2`` ts,
    ``$3`` low key, ``$4`` limit, ``$5`` high key (when ``bounded``)."""
    high = " AND e.key < $5" if bounded else ""
    order = "DESC" if descending else "ASC"
    return f"""SELECT c.ts, c.floor, s.key, s.doc FROM convexpy_clock c
LEFT JOIN LATERAL (
    SELECT e.key, v.doc FROM convexpy_index_entries e
    CROSS JOIN LATERAL ({DOC_AT.format(id="e.id")}) v
    WHERE e.idx = $1 AND e.key >= $3{high} AND {VISIBLE.format(t="e")} AND {ALIVE}
    ORDER BY e.key {order} LIMIT $4
) s ON true WHERE c.id"""


# -- the job queue's claims (see PostgresStore.claim_jobs) ----------------------------

# Only jobs that have not ended; in id order, so that two processes claiming
# overlapping sets lock the rows in the same order (no deadlock); a claim
# held by another owner and not expired is left alone (not returned).
# Rows: (id, true) for each claim granted, (id, false) for each job ended or gone.
CLAIM = """WITH asked AS (
    SELECT u.id, j.id IS NOT NULL AND j.ended_ts IS NULL AND j.deleted_ts IS NULL AS live
    FROM unnest($1::text[]) AS u(id) LEFT JOIN convexpy_jobs j ON j.id = u.id
), granted AS (
    INSERT INTO convexpy_claims (id, owner, until)
    SELECT a.id, $2, clock_timestamp() + make_interval(secs => $3)
    FROM asked a WHERE a.live ORDER BY a.id
    ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
    WHERE convexpy_claims.owner = EXCLUDED.owner OR convexpy_claims.until < clock_timestamp()
    RETURNING id
)
SELECT id, true FROM granted UNION ALL SELECT id, false FROM asked WHERE NOT live"""

# Renew this owner's claims, and forget claims expired long ago (their owner is gone).
RENEW = """WITH renewed AS (
    UPDATE convexpy_claims SET until = clock_timestamp() + make_interval(secs => $3)
    WHERE owner = $2 AND id = ANY($1::text[])
)
DELETE FROM convexpy_claims WHERE until < clock_timestamp() - make_interval(secs => 10 * $3)"""

RELEASE = "DELETE FROM convexpy_claims WHERE owner = $2 AND id = ANY($1::text[])"

LIVE_CLAIMS = """SELECT id FROM convexpy_claims
WHERE id = ANY($1::text[]) AND until >= clock_timestamp()"""

COMMIT_JOBS = """SELECT c.out_ts, c.out_conflict, CASE WHEN c.out_conflict IS NULL
    THEN (SELECT 1 FROM pg_notify('{channel}', c.out_ts::text || ' ' || $21::text)) END
FROM convexpy_commit({params}) AS c"""


# -- jobs (see _pg_jobs) ------------------------------------------------------------

JOB_COLUMNS = (
    "j.id, j.created, j.name, j.args, j.scheduled, j.state, j.completed, j.error,"
    " j.created_ts, j.started_ts, j.ended_ts, j.deleted_ts"
)
"""What ``_pg_jobs.job_at`` reads of a row, in this order."""

GET_JOBS = f"""SELECT c.ts, c.floor, s.* FROM convexpy_clock c
LEFT JOIN LATERAL (
    SELECT {JOB_COLUMNS} FROM convexpy_jobs j WHERE j.id = ANY($1::text[])
) s ON true WHERE c.id"""


def job_scan_sql(kind: int, descending: bool, bounded: bool) -> str:
    """The scan of a job index range (``kind`` as in ``_pg_jobs.KEYS``) as of
    a timestamp: ``$1`` ts, ``$2`` low key, ``$3`` limit, ``$4`` high key
    (when ``bounded``). Rows: ``(clock ts, floor, key, JOB_COLUMNS..., pkey,
    ikey)``; ``by_state`` adds the jobs changed since the timestamp, keyless
    (their key then is worked out from ``pkey`` and ``ikey``)."""
    order = "DESC" if descending else "ASC"
    column = ("ckey", "skey", "ekey")[kind]

    def in_range(key: str) -> str:
        return f"{key} >= $2" + (f" AND {key} < $4" if bounded else "")

    visible = {
        0: "j.created_ts <= $1 AND (j.deleted_ts IS NULL OR j.deleted_ts > $1)",
        # Unchanged since $1: the key now is the key then.
        1: "j.skey IS NOT NULL AND j.changed_ts <= $1",
        2: "j.ekey IS NOT NULL AND j.ended_ts <= $1"
        " AND (j.deleted_ts IS NULL OR j.deleted_ts > $1)",
    }[kind]
    rows = f"""(SELECT j.{column}, {JOB_COLUMNS}, j.pkey, j.ikey FROM convexpy_jobs j
        WHERE {in_range("j." + column)} AND {visible} ORDER BY j.{column} {order} LIMIT $3)"""
    if kind == 1:
        rows += f"""
    UNION ALL
    SELECT NULL, {JOB_COLUMNS}, j.pkey, j.ikey FROM convexpy_jobs j
        WHERE j.changed_ts > $1 AND j.created_ts <= $1
        AND (({in_range("j.pkey")}) OR ({in_range("j.ikey")}))"""
    return f"""SELECT c.ts, c.floor, s.* FROM convexpy_clock c
LEFT JOIN LATERAL (
    {rows}
) s ON true WHERE c.id"""


# The jobs commit $1 changed: a row is found by its latest change, at or
# after the commit's.
JOBS_CHANGED_SINCE = f"SELECT {JOB_COLUMNS} FROM convexpy_jobs j WHERE j.changed_ts >= $1"

# The jobs the commits after $1 up to $2 created (pending), or cancelled:
# ``(id, scheduled, name, created_ts, ended_ts, state)``.
JOB_CHANGES = """SELECT j.id, j.scheduled, j.name, j.created_ts, j.ended_ts, j.state
FROM convexpy_jobs j
WHERE j.changed_ts > $1
    AND ((j.created_ts > $1 AND j.created_ts <= $2 AND j.created_ts IS DISTINCT FROM j.ended_ts)
        OR (j.ended_ts > $1 AND j.ended_ts <= $2 AND j.state = 0))"""
