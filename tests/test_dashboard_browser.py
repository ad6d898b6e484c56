"""The dashboard in a real browser: Debian's Chromium, driven by Playwright.

Each test starts the dev server (a subprocess) on the dashboard test app and
opens ``/dashboard`` in headless Chromium. Every test fails on a JavaScript
error or a console error. Without the browser these tests are skipped, saying
how to install it, except under ``CI=true``, where they fail.

``CONVEXPY_SCREENSHOTS=1`` also writes the pages to ``docs/dashboard-*.png``
(for the README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_app import DASHBOARD_APP, XSS_TEXT
from e2e_helpers import ROOT, DevServer, dev_server, write_app

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "the dashboard's browser tests need Debian's Chromium and Playwright's Python package: "
    "`apt-get install -y chromium` (as root) and `pip install -e '.[dev]'` "
    "(do not run `playwright install`: the tests use /usr/bin/chromium)"
)
WAIT_MS = 15_000
SCREENSHOTS = os.environ.get("CONVEXPY_SCREENSHOTS") == "1"

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Page,
        async_playwright,
        expect,
    )
except ImportError:  # pragma: no cover - reported by the fixture below
    async_playwright = None  # type: ignore[assignment]


def _missing() -> str | None:
    if async_playwright is None:
        return "the `playwright` package is not installed"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (skipped when missing, FAILED when missing under CI)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: {INSTALL_HINT}")
        pytest.skip(f"{missing}: {INSTALL_HINT}")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DevServer]:
    app_dir = write_app(tmp_path / "convex", DASHBOARD_APP)
    async with dev_server(app_dir, None, "--no-watch") as running:
        yield running


@dataclass
class Dash:
    """An open dashboard tab, the server behind it, and the errors the page reported."""

    page: Page
    server: DevServer
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    async def call(self, kind: str, path: str, args: dict[str, Any]) -> Any:
        """Call a function over HTTP with the admin key (as a client of the app would)."""
        async with httpx.AsyncClient(base_url=self.server.url, timeout=10) as http:
            response = await http.post(
                f"/api/{kind}",
                json={"path": path, "args": args, "format": "json"},
                headers={"Authorization": f"Convex {self.server.admin_key}"},
            )
        body = response.json()
        assert body["status"] == "success", body
        return body["value"]

    async def admin_get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=10) as http:
            response = await http.get(
                path, headers={"Authorization": f"Convex {self.server.admin_key}"}
            )
        assert response.status_code == 200, response.text
        return response.json()

    async def open(self, page_name: str) -> None:
        await self.page.get_by_role("link", name=page_name, exact=True).click()
        await expect(self.page.get_by_role("heading", name=page_name, level=1)).to_be_visible()

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    async def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            await self.page.screenshot(path=str(ROOT / "docs" / f"dashboard-{name}.png"))


async def _open_tab(browser: Browser, server: DevServer, width: int, height: int) -> Dash:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    dash = Dash(page, server)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            dash.errors.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: dash.errors.append(f"page error: {exc}"))
    return dash


@pytest.fixture
async def dash(browser: Browser, server: DevServer) -> AsyncIterator[Dash]:
    """The dashboard at 1280 px, opened with the link the dev server printed."""
    dash = await _open_tab(browser, server, 1280, 800)
    link = await server.wait_for_output("/dashboard#key=")
    url = link.split()[-1]
    assert url == f"{server.url}/dashboard#key={server.admin_key}"
    await dash.page.goto(url)
    await expect(dash.page.get_by_role("heading", name="Functions", level=1)).to_be_visible()
    yield dash
    assert dash.unexpected_errors() == []
    await dash.page.context.close()


async def test_the_key_from_the_link_is_kept_in_the_tab_only(dash: Dash) -> None:
    page = dash.page
    # The key left the address bar at once, and no cookie carries it.
    assert "key=" not in page.url
    assert await page.context.cookies() == []
    stored = await page.evaluate("sessionStorage.getItem('convexpy.adminKey')")
    assert stored == dash.server.admin_key
    # Forgetting it brings the key form back; a wrong key is refused, the right one works.
    dash.allowed.append(re.compile(r"401"))
    await page.get_by_role("button", name="Forget admin key").click()
    await expect(page.get_by_role("heading", name="Admin key")).to_be_visible()
    await page.get_by_label("Admin key").fill("not-the-key")
    await page.get_by_role("button", name="Use this key").click()
    await expect(page.get_by_role("alert")).to_contain_text("admin key was invalid")
    await expect(page.get_by_role("heading", name="Admin key")).to_be_visible()
    await page.get_by_label("Admin key").fill(dash.server.admin_key)
    await page.get_by_role("button", name="Use this key").click()
    await expect(page.get_by_role("button", name="Show notes:shout")).to_be_visible()


async def test_a_page_opened_without_the_key_asks_for_it(
    browser: Browser, server: DevServer
) -> None:
    dash = await _open_tab(browser, server, 1280, 800)
    await dash.page.goto(f"{server.url}/dashboard#schedules")
    await expect(dash.page.get_by_role("heading", name="Admin key")).to_be_visible()
    await expect(dash.page.get_by_role("heading", name="Schedules")).to_be_hidden()
    await dash.page.get_by_label("Admin key").fill(server.admin_key)
    await dash.page.get_by_role("button", name="Use this key").click()
    await expect(dash.page.get_by_role("heading", name="Schedules", level=1)).to_be_visible()
    assert dash.unexpected_errors() == []
    await dash.page.context.close()


async def test_run_a_function_and_see_its_result_and_logs(dash: Dash) -> None:
    page = dash.page
    await page.get_by_role("button", name="Show notes:shout").click()
    await expect(page.get_by_text("{ text: string }")).to_be_visible()
    await page.get_by_label("Arguments (JSON object)").fill('{"text": "hey"}')
    await page.get_by_role("button", name="Run").click()
    await expect(page.locator(".run-value")).to_have_text('"HEY!"')
    await expect(page.locator(".run-logs")).to_have_text("shouting hey")
    await dash.screenshot("functions")
    # A function error and bad JSON are shown, not thrown.
    await page.get_by_role("button", name="Show notes:boom").click()
    await page.get_by_role("button", name="Run").click()
    await expect(page.locator('[data-status="error"]')).to_contain_text('"why": "<b>not bold</b>"')
    await page.get_by_label("Arguments (JSON object)").fill("{oops")
    await page.get_by_role("button", name="Run").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid JSON")


async def test_schedule_a_job_find_it_and_cancel_it(dash: Dash) -> None:
    page = dash.page
    job = await dash.call("mutation", "notes:later", {"body": "never", "delay_ms": 3_600_000})
    await dash.open("Schedules")
    await page.locator("#page-schedules").get_by_label("Function").select_option("notes:add_later")
    await page.get_by_label("State").select_option("pending")
    row = page.locator(f'tr[data-job="{job}"]')
    await expect(row).to_contain_text('{"body":"never"}')
    await expect(row.locator(".badge")).to_have_text("pending")
    await dash.screenshot("schedules")
    await row.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#jobs-status")).to_contain_text(f"Job {job} is now canceled")
    await expect(row).to_have_count(0)  # the pending list no longer has it
    documents = await dash.admin_get("/api/admin/tables/_scheduled_functions/documents?limit=100")
    doc = next(d for d in documents["documents"] if d["_id"] == job)
    assert doc["state"] == {"kind": "canceled"}
    await page.get_by_label("State").select_option("canceled")
    await expect(row.locator(".badge")).to_have_text("canceled")


async def test_cancel_all_pending_jobs_of_a_function(dash: Dash) -> None:
    page = dash.page
    jobs = [
        await dash.call("mutation", "notes:later", {"body": str(i), "delay_ms": 3_600_000})
        for i in range(3)
    ]
    await dash.open("Schedules")
    cancel_all = page.get_by_role("button", name="Cancel all")
    await expect(cancel_all).to_be_disabled()  # no function chosen
    await page.locator("#page-schedules").get_by_label("Function").select_option("notes:add_later")
    await expect(page.locator("#jobs-table tbody tr")).to_have_count(3)
    page.once("dialog", lambda dialog: dialog.accept())
    await cancel_all.click()
    await expect(page.locator("#jobs-status")).to_contain_text(
        "Canceled 3 pending jobs of notes:add_later"
    )
    documents = await dash.admin_get("/api/admin/tables/_scheduled_functions/documents?limit=100")
    states = {d["_id"]: d["state"]["kind"] for d in documents["documents"]}
    assert [states[job] for job in jobs] == ["canceled"] * 3


async def test_cron_jobs_show_schedule_next_run_and_last_runs(dash: Dash) -> None:
    page = dash.page
    await dash.call("mutation", "notes:remind_every", {"minutes": 10, "name": "reminder"})
    await dash.open("Schedules")
    reminder = page.locator('tr[data-cron="reminder"]')
    await expect(reminder.locator(".badge")).to_have_text("runtime")  # registered at runtime
    await expect(reminder.locator(".cron-schedule")).to_have_text("every 10 minutes")
    tidy = page.locator('tr[data-cron="tidy up"]')
    await expect(tidy.locator(".cron-schedule")).to_have_text("every day at 03:30 (UTC)")
    await expect(tidy.locator(".cron-next")).to_contain_text(re.compile(r"in \d+ (h|min)"))
    crons = await dash.admin_get("/api/admin/crons")
    next_run = next(c["doc"]["nextRun"] for c in crons["crons"] if c["doc"]["name"] == "tidy up")
    shown = await page.evaluate(f"formatTime({json.dumps(next_run)})")
    await expect(tidy.locator(".cron-next")).to_contain_text(shown)
    heartbeat = page.locator('tr[data-cron="heartbeat"]')
    await expect(heartbeat.locator(".cron-schedule")).to_have_text("every 5 seconds")
    # The page refreshes itself: the first run (at start-up, then every 5 s) appears.
    await expect(heartbeat.locator(".runs .badge").first).to_have_text("success")


async def test_a_log_line_arrives_live_and_filters_apply(dash: Dash) -> None:
    page = dash.page
    await dash.open("Logs")
    await expect(page.locator("#log-status-line")).to_contain_text("Live")
    await dash.call("action", "notes:shout", {"text": "live"})
    entry = page.locator('#log-list li[data-path="notes:shout"]')
    await expect(entry).to_contain_text("shouting live")
    await expect(entry).to_contain_text("success")
    await dash.call("mutation", "notes:later", {"body": "job", "delay_ms": 0})
    job = page.locator('#log-list li[data-path="notes:add_later"]')
    await expect(job).to_contain_text("adding 'job' later")
    async with httpx.AsyncClient(base_url=dash.server.url) as http:
        await http.post("/api/query", json={"path": "notes:boom", "args": {}})
    boom = page.locator('#log-list li[data-path="notes:boom"]')
    await expect(boom.locator(".badge").last).to_have_text("error")
    await expect(boom.locator(".log-error")).to_contain_text("<b>not bold</b>")
    await dash.screenshot("logs")
    function = page.locator("#page-logs").get_by_label("Function")
    await function.fill("shout")
    await expect(job).to_have_count(0)
    await expect(entry).to_have_count(1)
    await page.get_by_label("Status").select_option("error")
    await expect(entry).to_have_count(0)
    await page.get_by_label("Status").select_option("")
    await function.fill("")
    await page.get_by_role("button", name="Pause").click()
    await dash.call("action", "notes:shout", {"text": "while paused"})
    paused = page.locator('#log-list li[data-path="notes:shout"]', has_text="while paused")
    # The entry reaches the tab, which keeps it without showing it until resumed.
    await page.wait_for_function(
        "state.logs.some((e) => e.logs.includes('shouting while paused'))", timeout=WAIT_MS
    )
    await expect(paused).to_have_count(0)
    await page.get_by_role("button", name="Resume").click()
    await expect(paused).to_have_count(1)


async def test_data_is_shown_as_text_never_as_html(dash: Dash) -> None:
    page = dash.page
    await dash.call("mutation", "notes:add", {"body": XSS_TEXT})
    await dash.call("action", "notes:shout", {"text": XSS_TEXT})
    await dash.open("Data")
    await page.get_by_role("button", name="Show table notes").click()
    row = page.locator("tr.doc").first
    await expect(row).to_contain_text(XSS_TEXT.replace('"', '\\"'))
    await row.click()
    await expect(page.locator(".doc-value")).to_contain_text(XSS_TEXT.replace('"', '\\"'))
    await dash.screenshot("data")
    await dash.open("Logs")
    await expect(page.locator("#log-list")).to_contain_text(f"shouting {XSS_TEXT}")
    await dash.open("Functions")
    await page.get_by_role("button", name="Show notes:shout").click()
    await page.get_by_label("Arguments (JSON object)").fill(json.dumps({"text": XSS_TEXT}))
    await page.get_by_role("button", name="Run").click()
    await expect(page.locator(".run-logs")).to_have_text(f"shouting {XSS_TEXT}")
    # Nothing ran, and no element was made from the data.
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("main img, main script, main b").count() == 0


async def test_health_shows_counts_and_charts(dash: Dash) -> None:
    page = dash.page
    await dash.call("mutation", "notes:later", {"body": "late", "delay_ms": 3_600_000})
    await dash.open("Health")
    for i in range(12):
        await dash.call("mutation", "notes:later", {"body": str(i), "delay_ms": 250 * i})
    # The page refreshes itself until all twelve have run (the heartbeat cron adds a few).
    jobs = page.locator(".card", has_text="Jobs (last min)")
    await expect(jobs.locator(".value")).to_have_text(re.compile(r"^(1[2-9]|[2-9]\d)$"))
    pending = page.locator(".card", has_text="Pending jobs")
    await expect(pending.locator(".value")).to_have_text(re.compile(r"^[1-9]\d*$"))
    late = page.locator(".card", has_text="Lateness p50")
    await expect(late.locator(".value")).to_have_text(re.compile(r"\d.* (ms|s)$"))
    await expect(page.locator("#chart-jobs svg polyline").first).to_be_attached()
    await expect(page.locator("#chart-lateness .legend")).to_contain_text("p99")
    await dash.screenshot("health")


PHONE = (390, 844)


async def test_every_page_fits_a_phone(browser: Browser, server: DevServer) -> None:
    dash = await _open_tab(browser, server, *PHONE)
    page = dash.page
    await dash.call("mutation", "notes:add", {"body": "a rather long note " * 8})
    await dash.call("mutation", "notes:later", {"body": "x", "delay_ms": 3_600_000})
    await page.goto(f"{server.url}/dashboard#key={server.admin_key}")
    for name in ("Functions", "Data", "Schedules", "Logs", "Health"):
        await dash.open(name)
        if name == "Data":
            await page.get_by_role("button", name="Show table notes").click()
            await page.locator("tr.doc").first.click()
            await expect(page.locator(".doc-value")).to_be_visible()
        if name == "Schedules":
            await expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
            await dash.screenshot("phone-schedules")
        # Nothing sticks out sideways: wide tables scroll inside their own box.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE[0], f"{name} is {width} px wide at {PHONE[0]} px"
    assert dash.unexpected_errors() == []
    await dash.page.context.close()
