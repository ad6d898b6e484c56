"""The app the dashboard tests run: notes, a scheduled job, crons, and a document
whose text is HTML that must show as text."""

from __future__ import annotations

DASHBOARD_APP: dict[str, str] = {
    "notes.py": """
from convexpy import ConvexError, action, internal, internal_mutation, mutation, query, v
from convexpy.components import RuntimeCrons

runtime_crons = RuntimeCrons()


@mutation
async def add(ctx, body: str) -> str:
    return await ctx.db.insert("notes", {"body": body})


@query
async def count(ctx) -> int:
    return len(await ctx.db.query("notes").collect())


@mutation(args={"body": v.string(), "delay_ms": v.number()})
async def later(ctx, body, delay_ms):
    return await ctx.scheduler.run_after(delay_ms, internal.notes.add_later, {"body": body})


@internal_mutation
async def add_later(ctx, body: str) -> None:
    print(f"adding {body!r} later")
    await ctx.db.insert("notes", {"body": body})


@action
async def shout(ctx, text: str) -> str:
    print(f"shouting {text}")
    return text.upper() + "!"


@query
async def boom(ctx) -> None:
    raise ConvexError({"why": "<b>not bold</b>"})


@internal_mutation
async def tidy(ctx) -> None:
    print("tidying")


@internal_mutation
async def beat(ctx) -> None:
    print("beat")


@mutation
async def remind_every(ctx, minutes: float, name: str | None = None) -> str:
    schedule = {"kind": "interval", "minutes": minutes}
    return await runtime_crons.register(ctx, schedule, internal.notes.beat, name=name)
""",
    "crons.py": """
from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.daily("tidy up", {"hourUTC": 3, "minuteUTC": 30}, internal.notes.tidy)
crons.interval("heartbeat", {"seconds": 5}, internal.notes.beat)
""",
}

XSS_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
"""A note body that would run script if the page ever treated data as HTML."""
