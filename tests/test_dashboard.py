"""The dashboard's page and admin endpoints, in-process (the browser tests are
test_dashboard_browser.py), and its bounded log feed and job statistics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from dashboard_app import DASHBOARD_APP
from e2e_helpers import write_app

from convexpy.server import create_app
from convexpy.server.dashboard import Dashboard
from convexpy.server.dashboard.feed import MAX_TEXT, JobStats, LogFeed, percentile
from convexpy.server.http import ConvexApp
from convexpy.testing import ConvexTest

ADMIN_KEY = "dashboard-test-key"
ADMIN = {"Authorization": f"Convex {ADMIN_KEY}"}


class Client:
    def __init__(self, http: httpx.AsyncClient, t: ConvexTest, app: ConvexApp) -> None:
        self.http = http
        self.t = t
        assert app.dashboard is not None
        self.dashboard: Dashboard = app.dashboard

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.http.post(path, json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def refused(self, method: str, path: str, status: int, code: str, **options: Any) -> str:
        options.setdefault("headers", ADMIN)
        response = await self.http.request(method, path, **options)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["code"] == code, body
        assert isinstance(body["message"], str) and body["message"]
        return str(body["message"])


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    app_dir = write_app(tmp_path / "convex", DASHBOARD_APP)
    t = ConvexTest(app_dir)
    t.runtime.capture_logs = True  # as the dev server does: handlers' output goes to the logs
    async with t:
        app = create_app(t.runtime, admin_key=ADMIN_KEY)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Client(http, t, app)


ADMIN_ENDPOINTS = [
    ("GET", "/api/admin/function_specs"),
    ("GET", "/api/admin/tables/notes/documents"),
    ("GET", "/api/admin/scheduled"),
    ("POST", "/api/admin/scheduled/cancel"),
    ("POST", "/api/admin/scheduled/cancel_all"),
    ("GET", "/api/admin/crons"),
    ("GET", "/api/admin/logs"),
    ("GET", "/api/admin/health"),
]


async def test_the_page_and_its_files_are_served_with_a_strict_policy(client: Client) -> None:
    page = await client.http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    html = page.text
    # No CDN, no external font: every reference is to this server.
    assert "http://" not in html and "https://" not in html
    assert '<script src="/dashboard/dashboard.js"' in html
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = await client.http.get(f"/dashboard/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)
        assert "https://" not in response.text
    js = (await client.http.get("/dashboard/dashboard.js")).text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    await client.refused("GET", "/dashboard/index.py", 404, "NotFound")
    await client.refused("GET", "/dashboard/..%2F__init__.py", 404, "NotFound")


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
async def test_every_admin_endpoint_needs_the_key(client: Client, method: str, path: str) -> None:
    await client.refused(method, path, 401, "MissingAdminKey", headers={})
    await client.refused(method, path, 401, "BadAdminKey", headers={"Authorization": "Convex x"})


async def test_function_specs_list_kinds_and_validators(client: Client) -> None:
    functions = {f["path"]: f for f in (await client.get("/api/admin/function_specs"))["functions"]}
    later = functions["notes:later"]
    assert later["module"] == "notes" and later["name"] == "later"
    assert later["kind"] == "mutation" and later["visibility"] == "public"
    assert later["args"]["type"] == "object"
    assert set(later["args"]["value"]) == {"body", "delay_ms"}
    assert later["argsText"] == "{ body: string, delay_ms: float64 }"
    assert functions["notes:add_later"]["visibility"] == "internal"
    assert functions["notes:shout"]["kind"] == "action"
    assert functions["notes:count"]["returns"] is None


async def test_documents_page_through_a_table_with_a_cursor(client: Client) -> None:
    for i in range(5):
        await client.t.mutation("notes:add", {"body": f"note {i}"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = await client.get("/api/admin/tables/notes/documents", **params)
        pages += 1
        assert not page["system"]
        seen += [doc["body"] for doc in page["documents"]]
        if page["isDone"]:
            break
        cursor = page["cursor"]
    assert seen == [f"note {i}" for i in reversed(range(5))]  # newest first
    assert pages == 3
    oldest = await client.get("/api/admin/tables/notes/documents", order="asc", limit=1)
    assert oldest["documents"][0]["body"] == "note 0"


async def test_documents_refuse_bad_input_with_4xx(client: Client) -> None:
    await client.t.mutation("notes:add", {"body": "a note"})
    docs = "/api/admin/tables/notes/documents"
    message = await client.refused("GET", docs + "?limit=0", 400, "BadQueryArgs")
    assert "limit" in message
    await client.refused("GET", docs + "?limit=abc", 400, "BadQueryArgs")
    await client.refused("GET", docs + "?order=up", 400, "BadQueryArgs")
    message = await client.refused("GET", docs + "?cursor=nonsense", 400, "BadQueryArgs")
    assert "'nonsense' is not a cursor of this listing" in message
    message = await client.refused("GET", docs + "?cursor=" + "A" * 5000, 400, "BadQueryArgs")
    assert len(message) < 300
    # A cursor of another listing (pending jobs, by scheduled time) is not one of this table's.
    pending = await client.get("/api/admin/scheduled", state="pending", limit=1)
    await client.refused("GET", docs + "?cursor=" + pending["cursor"], 400, "BadQueryArgs")
    await client.refused("GET", "/api/admin/tables/nope/documents", 404, "TableNotFound")


async def test_system_tables_are_readable(client: Client) -> None:
    await client.t.mutation("notes:later", {"body": "x", "delay_ms": 60_000})
    page = await client.get("/api/admin/tables/_scheduled_functions/documents")
    assert page["system"]
    assert "notes:add_later" in [doc["name"] for doc in page["documents"]]
    crons = await client.get("/api/admin/tables/_cron_jobs/documents")
    assert {doc["name"] for doc in crons["documents"]} == {"tidy up", "heartbeat"}


async def test_scheduled_functions_filter_by_state_and_function(client: Client) -> None:
    t = client.t
    soon = await t.mutation("notes:later", {"body": "soon", "delay_ms": 1000})
    late = await t.mutation("notes:later", {"body": "late", "delay_ms": 60_000})
    await t.advance(1000)

    async def ids(**params: Any) -> list[str]:
        jobs = (await client.get("/api/admin/scheduled", **params))["jobs"]
        return [job["_id"] for job in jobs if job["name"] == "notes:add_later"]

    assert await ids(state="pending") == [late]
    assert await ids(state="success") == [soon]
    assert set(await ids()) == {soon, late}
    only = await client.get("/api/admin/scheduled", function="notes:add_later")
    assert {job["name"] for job in only["jobs"]} == {"notes:add_later"}
    assert only["jobs"][0]["args"] == [{"body": "late"}]  # newest first
    message = await client.refused("GET", "/api/admin/scheduled?state=done", 400, "BadQueryArgs")
    assert "pending" in message


async def test_scheduled_functions_page_with_a_cursor(client: Client) -> None:
    for i in range(3):
        await client.t.mutation("notes:later", {"body": str(i), "delay_ms": 60_000 + i})
    params = {"state": "pending", "function": "notes:add_later", "limit": 2}
    first = await client.get("/api/admin/scheduled", **params)
    assert [job["args"][0]["body"] for job in first["jobs"]] == ["0", "1"]  # by scheduled time
    assert not first["isDone"]
    rest = await client.get("/api/admin/scheduled", **params, cursor=first["cursor"])
    assert [job["args"][0]["body"] for job in rest["jobs"]] == ["2"]


async def test_cancel_one_job(client: Client) -> None:
    t = client.t
    job = await t.mutation("notes:later", {"body": "never", "delay_ms": 1000})
    answer = await client.post("/api/admin/scheduled/cancel", {"id": job})
    assert answer == {"id": job, "state": "canceled"}
    await t.advance(2000)
    assert await t.query("notes:count") == 0
    doc = await t.run(lambda ctx: ctx.db.system.get(job))
    assert doc["state"] == {"kind": "canceled"}
    # A finished job stays as it was.
    done = await t.mutation("notes:later", {"body": "done", "delay_ms": 0})
    await t.finish_all_scheduled_functions()
    answer = await client.post("/api/admin/scheduled/cancel", {"id": done})
    assert answer["state"] == "success"


async def test_cancel_refuses_bad_input(client: Client) -> None:
    cancel = "/api/admin/scheduled/cancel"
    message = await client.refused("POST", cancel, 400, "BadJsonBody", json={})
    assert "`id`" in message
    message = await client.refused("POST", cancel, 400, "BadJsonBody", json={"id": "nope"})
    assert "_scheduled_functions" in message
    note = await client.t.mutation("notes:add", {"body": "a note"})
    await client.refused("POST", cancel, 400, "BadJsonBody", json={"id": note})
    await client.refused("POST", cancel, 400, "BadJsonBody", content=b"[1]")
    await client.refused("POST", cancel, 400, "BadJsonBody", content=b"{")


async def test_cancel_all_pending_jobs_of_a_function(client: Client) -> None:
    t = client.t
    for i in range(3):
        await t.mutation("notes:later", {"body": str(i), "delay_ms": 5000})
    answer = await client.post("/api/admin/scheduled/cancel_all", {"function": "notes:add_later"})
    assert answer == {"function": "notes:add_later", "canceled": 3}
    left = await client.get("/api/admin/scheduled", state="pending")
    assert {job["name"] for job in left["jobs"]} == {"notes:beat"}  # the cron's next run
    canceled = await client.get("/api/admin/scheduled", state="canceled")
    assert len(canceled["jobs"]) == 3
    again = await client.post("/api/admin/scheduled/cancel_all", {"function": "notes:add_later"})
    assert again["canceled"] == 0
    await client.refused("POST", "/api/admin/scheduled/cancel_all", 400, "BadJsonBody", json={})


async def test_crons_have_their_schedule_in_words_and_next_run(client: Client) -> None:
    t = client.t
    await t.advance(5000)
    await t.finish_in_progress_scheduled_functions()
    answer = await client.get("/api/admin/crons")
    crons = {c["doc"]["name"]: c for c in answer["crons"]}
    assert crons["tidy up"]["schedule"] == "every day at 03:30 (UTC)"
    assert crons["heartbeat"]["schedule"] == "every 5 seconds"
    heartbeat = crons["heartbeat"]["doc"]
    assert heartbeat["nextRun"] > t.now - 5000
    assert heartbeat["function"] == "notes:beat"
    assert heartbeat["lastRuns"][-1]["status"] == "success"
    assert answer["now"] == t.now


async def test_runtime_crons_are_listed_with_the_static_ones(client: Client) -> None:
    t = client.t
    await t.mutation("notes:remind_every", {"minutes": 10, "name": "reminder"})
    unnamed = await t.mutation("notes:remind_every", {"minutes": 1})
    await t.advance(60_000)
    await t.finish_in_progress_scheduled_functions()
    answer = await client.get("/api/admin/crons")
    crons = {c["doc"]["name"]: c for c in answer["crons"]}
    assert {name: c["source"] for name, c in crons.items()} == {
        "tidy up": "crons.py",
        "heartbeat": "crons.py",
        "reminder": "runtime",
        unnamed: "runtime",  # shown by its id
    }
    assert crons["reminder"]["schedule"] == "every 10 minutes"
    assert crons["reminder"]["doc"]["function"] == "notes:beat"
    assert crons[unnamed]["doc"]["lastRuns"][-1]["status"] == "success"
    assert crons[unnamed]["doc"]["currentRun"] is None


async def test_logs_long_poll_gets_the_next_call_with_its_output(client: Client) -> None:
    first = await client.get("/api/admin/logs")
    after = first["last"]

    async def poll() -> Any:
        return await client.get("/api/admin/logs", after=after, wait=10)

    got: list[Any] = []

    async def waiter() -> None:
        got.append(await poll())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await asyncio.sleep(0)  # the poll starts (if it has not begun waiting, it need not)
            await client.post(
                "/api/action", {"path": "notes:shout", "args": {"text": "hey"}, "format": "json"}
            )
    entries = got[0]["entries"]
    shout = [e for e in entries if e["path"] == "notes:shout"]
    assert shout, entries
    assert shout[0]["source"] == "call" and shout[0]["kind"] == "action"
    assert shout[0]["outcome"] == "success"
    assert shout[0]["logs"] == ["shouting hey"]
    assert got[0]["last"] == entries[-1]["seq"] > after


async def test_logs_show_jobs_and_cron_runs_and_errors(client: Client) -> None:
    t = client.t
    await client.get("/api/admin/logs")  # starts watching
    await t.mutation("notes:later", {"body": "b", "delay_ms": 0})
    await t.finish_all_scheduled_functions()
    await t.advance(5000)
    await t.finish_in_progress_scheduled_functions()
    response = await client.http.post(
        "/api/query", json={"path": "notes:boom", "args": {}}, headers=ADMIN
    )
    assert response.json()["status"] == "error"
    entries = (await client.get("/api/admin/logs"))["entries"]
    job = next(e for e in entries if e["path"] == "notes:add_later")
    assert job["source"] == "job" and job["logs"] == ["adding 'b' later"]
    cron = next(e for e in entries if e["path"] == "notes:beat")
    assert cron["source"] == "cron" and cron["cron"] == "heartbeat"
    boom = next(e for e in entries if e["path"] == "notes:boom")
    assert boom["outcome"] == "error" and "not bold" in boom["error"]


async def test_logs_refuse_bad_numbers(client: Client) -> None:
    await client.refused("GET", "/api/admin/logs?after=-1", 400, "BadQueryArgs")
    await client.refused("GET", "/api/admin/logs?wait=999", 400, "BadQueryArgs")
    await client.refused("GET", "/api/admin/logs?limit=0", 400, "BadQueryArgs")


async def test_closing_the_dashboard_ends_waiting_polls(client: Client) -> None:
    last = (await client.get("/api/admin/logs"))["last"]
    with anyio.fail_after(5):  # far less than the poll's 25 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.get("/api/admin/logs", after=last, wait=25))
            await asyncio.sleep(0)
            client.dashboard.close()


async def test_health_counts_jobs_lateness_and_pending(client: Client) -> None:
    t = client.t
    await client.get("/api/admin/health")  # starts watching
    for i in range(3):
        await t.mutation("notes:later", {"body": str(i), "delay_ms": 1000})
    await t.mutation("notes:later", {"body": "later", "delay_ms": 600_000})
    health = await client.get("/api/admin/health")
    assert health["pending"] >= 4 and health["running"] == 0
    await t.advance(1000)
    health = await client.get("/api/admin/health")
    assert sum(point["jobs"] for point in health["jobs"]) >= 3
    assert health["lastMinute"]["jobs"] >= 3
    assert health["lastMinute"]["p50"] is not None and health["lastMinute"]["p50"] >= 0
    assert health["pending"] >= 1
    assert health["pendingSeries"][-1] == {"t": t.now, "pending": health["pending"]}
    assert health["jobs"][-1]["t"] == t.now // 1000 * 1000


# -- the feed and the statistics, alone ----------------------------------------------------


def test_the_feed_keeps_the_newest_entries_and_counts_what_a_slow_reader_missed() -> None:
    feed = LogFeed(lambda: 0.0, capacity=3)
    for i in range(5):
        feed.add({"type": "call", "kind": "query", "path": f"m:f{i}", "outcome": "success"})
    feed.add({"type": "cron", "name": "ignored"})  # recorded, not a log line
    assert feed.last == 5
    entries, dropped = feed.since(0, 10)
    assert [e["path"] for e in entries] == ["m:f2", "m:f3", "m:f4"]
    assert dropped == 2
    entries, dropped = feed.since(3, 10)
    assert [e["seq"] for e in entries] == [4, 5] and dropped == 0
    entries, _ = feed.since(2, 1)
    assert [e["seq"] for e in entries] == [3]
    assert feed.since(5, 10) == ([], 0)


async def test_a_waiting_reader_wakes_on_the_next_entry() -> None:
    feed = LogFeed(lambda: 0.0)
    with anyio.fail_after(5):  # far less than the wait's 60 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: feed.wait(0, seconds=60))
            await asyncio.sleep(0)
            feed.add({"type": "call", "kind": "query", "path": "m:f", "outcome": "success"})
    assert feed.since(0, 10)[0][0]["path"] == "m:f"


def test_feed_entries_are_cut_to_size() -> None:
    feed = LogFeed(lambda: 0.0)
    feed.add(
        {
            "type": "job",
            "path": "m:f",
            "outcome": "failed",
            "logs": ["x" * (MAX_TEXT + 10)] * 80,
            "error": "e" * (MAX_TEXT * 3),
        }
    )
    (entry,), _ = feed.since(0, 1)
    assert len(entry["logs"]) == 51 and entry["logs"][-1] == "... (30 more lines)"
    assert len(entry["logs"][0]) < MAX_TEXT + 40
    assert len(entry["error"]) < MAX_TEXT + 40


def test_percentiles_and_per_second_buckets() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    now = [6_000.0]
    stats = JobStats(lambda: now[0], seconds=5)
    assert [p["t"] for p in stats.series()] == [6000]  # nothing before counting began
    now[0] = 10_500.0
    for lateness in (1.0, 2.0, 30.0):
        stats.add({"type": "job", "lateness_ms": lateness})
    stats.add({"type": "call"})
    now[0] = 12_000.0
    stats.add({"type": "job", "lateness_ms": 5.0})
    series = stats.series()
    assert [p["t"] for p in series] == [8000, 9000, 10_000, 11_000, 12_000]
    assert [p["jobs"] for p in series] == [0, 0, 3, 0, 1]
    assert series[2]["p50"] == 2.0 and series[2]["p99"] == 30.0
    assert series[0]["p50"] is None
    assert stats.summary(60) == {"jobs": 4, "p50": 2.0, "p99": 30.0}
    now[0] = 20_000.0
    assert all(p["jobs"] == 0 for p in stats.series())  # old seconds are forgotten
