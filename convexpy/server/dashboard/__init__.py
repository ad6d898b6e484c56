"""The dashboard: ``GET /dashboard`` and the admin endpoints its pages call.

The page (``static/``: one HTML file, one script, one style sheet, no build
step and nothing from elsewhere) holds the admin key in ``sessionStorage`` and
sends it as ``Authorization: Convex <key>`` on every call; nothing is
authorised by a cookie, so another site cannot act through the browser. The
dev server prints a link that carries the key in the URL's fragment, which
browsers never send to a server.

Admin endpoints (``Convex <admin key>`` only; bad input is a 4xx with
``{code, message}``, as everywhere in :mod:`~convexpy.server.http`):

* ``GET /api/admin/function_specs``: every function with its kind,
  visibility and argument and return validators (Convex validator JSON).
* ``GET /api/admin/tables/{table}/documents?limit=&cursor=&order=``: one page
  of a table (``{documents, cursor, isDone}``); ``cursor`` continues.
* ``GET /api/admin/scheduled?state=&function=&limit=&cursor=``: scheduled
  functions, pending ones by scheduled time, others newest first.
* ``POST /api/admin/scheduled/cancel`` ``{"id"}`` and
  ``POST /api/admin/scheduled/cancel_all`` ``{"function"}`` (every pending job
  of that function).
* ``GET /api/admin/crons``: the ``_cron_jobs`` documents and the runtime
  crons (``_runtime_crons``; ``source`` tells which), with each schedule
  in words.
* ``GET /api/admin/logs?after=N&wait=S``: the log entries after number ``N``
  (see :class:`~.feed.LogFeed`), waiting up to ``S`` seconds for one.
* ``GET /api/admin/health``: jobs per second and lateness per second, pending
  and running counts.

Calls run from the Functions page go to the ordinary ``POST /api/query``,
``/api/mutation`` and ``/api/action`` with the admin key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...components.crons import CRONS as RUNTIME_CRONS
from ...convex_json import to_convex_json
from ...cron.compile import compile_schedule
from ...cron.runner import CRON_JOBS
from ...db import DatabaseReader, SystemReader, Transaction
from ...errors import CronSpecError, InvalidValueError
from ...ids import is_id_of
from ...runtime import Runtime
from ...scheduler.api import cancel_in
from ...store.jobs import BY_STATE, SCHEDULED_FUNCTIONS, JobState
from ..auth import require_admin
from ..wire import BodyReader, RequestError, ascii_int, json_response
from .feed import JobStats, LogFeed, PendingSeries

__all__ = ["Dashboard"]

Endpoint = Callable[[Request], Awaitable[Response]]

_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = {
    # Only this server's own script and style; no inline script, no framing.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DEFAULT_PAGE = 25
MAX_PAGE = 1000
MAX_WAIT_S = 25
COUNT_CAP = 10_000
"""Pending and running jobs are counted up to this many (the page shows "10000+")."""
CANCEL_BATCH = 500
_STATES = {state.value: state for state in JobState}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _int_param(request: Request, name: str, default: int, high: int, low: int = 1) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    value = ascii_int(text)
    if value is None or not low <= value <= high:
        raise RequestError(
            400,
            "BadQueryArgs",
            f"{name} must be an integer from {low} to {high} in ASCII digits, got {text!r}",
        )
    return value


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value or None


def _body_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError(400, "BadJsonBody", f"the body needs a non-empty string `{name}`")
    return value


class Dashboard:
    """The dashboard of one runtime: its page, its admin endpoints and what they remember.

    It listens to the runtime's events (for the Logs and Health pages) from
    :meth:`watch` on, which the dev server calls at start; otherwise from the
    first call to the logs or health endpoint.
    """

    def __init__(self, runtime: Runtime, admin_key: str | None, bodies: BodyReader) -> None:
        self.runtime = runtime
        self.admin_key = admin_key
        self.bodies = bodies
        now = runtime.clock.now
        self.feed = LogFeed(now)
        self.stats = JobStats(now)
        self.pending = PendingSeries()
        self._watching = False

    def watch(self) -> None:
        """Start keeping the runtime's events (once)."""
        if not self._watching:
            self._watching = True
            self.runtime.listeners.append(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.feed.add(event)
        self.stats.add(event)

    def close(self) -> None:
        """The server stops: answer the waiting log polls now."""
        self.feed.close()

    def routes(self, guard: Callable[[Endpoint], Endpoint]) -> list[Route]:
        admin = self._admin
        return [
            Route("/dashboard", guard(self.page), methods=["GET"]),
            Route("/dashboard/{name}", guard(self.asset), methods=["GET"]),
            Route("/api/admin/function_specs", guard(admin(self.function_specs)), methods=["GET"]),
            Route(
                "/api/admin/tables/{table}/documents",
                guard(admin(self.documents)),
                methods=["GET"],
            ),
            Route("/api/admin/scheduled", guard(admin(self.scheduled)), methods=["GET"]),
            Route("/api/admin/scheduled/cancel", guard(admin(self.cancel)), methods=["POST"]),
            Route(
                "/api/admin/scheduled/cancel_all", guard(admin(self.cancel_all)), methods=["POST"]
            ),
            Route("/api/admin/crons", guard(admin(self.crons)), methods=["GET"]),
            Route("/api/admin/logs", guard(admin(self.logs)), methods=["GET"]),
            Route("/api/admin/health", guard(admin(self.health)), methods=["GET"]),
        ]

    def _admin(self, endpoint: Endpoint) -> Endpoint:
        async def checked(request: Request) -> Response:
            require_admin(request, self.admin_key)
            return await endpoint(request)

        return checked

    # -- the page --------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return Response(
            _static("index.html"), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    async def asset(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        media_type = _STATIC.get(name)
        if media_type is None:
            raise RequestError(404, "NotFound", f"No such dashboard file: {name}")
        return Response(_static(name), media_type=media_type, headers=_PAGE_HEADERS)

    # -- reads ---------------------------------------------------------------------

    async def _read(self, body: Callable[[Transaction], Awaitable[Any]]) -> Any:
        txn = self.runtime.transaction(writable=False)
        try:
            return await body(txn)
        finally:
            txn.release()

    async def function_specs(self, request: Request) -> Response:
        app = self.runtime.app
        listed = []
        for path, fn in [] if app is None else sorted(app.registry, key=lambda item: item[0]):
            module, _, name = path.rpartition(":")
            returns = fn.returns
            listed.append(
                {
                    "path": path,
                    "module": module,
                    "name": name,
                    "kind": fn.kind.value,
                    "visibility": fn.visibility.value,
                    "args": fn.args.json(),
                    "argsText": fn.args.describe(),
                    "returns": None if returns is None else returns.validator.json(),
                    "returnsText": None if returns is None else returns.validator.describe(),
                }
            )
        return json_response(200, {"functions": listed})

    async def documents(self, request: Request) -> Response:
        table = str(request.path_params["table"])
        limit = _int_param(request, "limit", DEFAULT_PAGE, MAX_PAGE)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise RequestError(400, "BadQueryArgs", f"order must be 'asc' or 'desc', got {order!r}")
        cursor = _text_param(request, "cursor")
        runtime = self.runtime
        known = {SCHEDULED_FUNCTIONS, CRON_JOBS, *await runtime.store.tables()}
        schema = None if runtime.app is None else runtime.app.schema
        if table not in known and (schema is None or table not in schema.tables):
            raise RequestError(404, "TableNotFound", f"There is no table named {table!r}")

        async def body(txn: Transaction) -> dict[str, Any]:
            reader = SystemReader(txn) if table.startswith("_") else DatabaseReader(txn)
            query = reader.query(table)
            page: dict[str, Any] = await query.order("asc" if order == "asc" else "desc").paginate(
                {"numItems": limit, "cursor": cursor}
            )
            return page

        page = await self._paged(body, cursor)
        return json_response(
            200,
            {
                "table": table,
                "system": table.startswith("_"),
                "documents": [to_convex_json(doc) for doc in page["page"]],
                "cursor": page["continueCursor"],
                "isDone": page["isDone"],
            },
        )

    async def _paged(
        self, body: Callable[[Transaction], Awaitable[Any]], cursor: str | None
    ) -> Any:
        """A paginated read; a cursor that is not one of this query's is a 400."""
        try:
            return await self._read(body)
        except InvalidValueError:  # paginate()'s word on a foreign cursor
            shown = cursor if cursor is None or len(cursor) <= 60 else cursor[:60] + "..."
            raise RequestError(
                400,
                "BadQueryArgs",
                f"cursor {shown!r} is not a cursor of this listing: pass the `cursor` of the "
                "previous page with the same filters, or none for the first page",
            ) from None

    async def scheduled(self, request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_PAGE, MAX_PAGE)
        state_text = _text_param(request, "state")
        function = _text_param(request, "function")
        cursor = _text_param(request, "cursor")
        state = None
        if state_text is not None:
            state = _STATES.get(state_text)
            if state is None:
                raise RequestError(
                    400,
                    "BadQueryArgs",
                    f"state must be one of {', '.join(_STATES)}, got {state_text!r}",
                )

        async def body(txn: Transaction) -> dict[str, Any]:
            query = SystemReader(txn).query(SCHEDULED_FUNCTIONS)
            if state in (JobState.PENDING, JobState.IN_PROGRESS):
                kind = state.value
                query = query.with_index(BY_STATE.name, lambda q: q.eq("state.kind", kind))
            else:
                query = query.order("desc")
                if state is not None:
                    kind = state.value
                    query = query.filter(lambda doc: doc["state"]["kind"] == kind)
            if function is not None:
                query = query.filter(lambda doc: doc["name"] == function)
            page: dict[str, Any] = await query.paginate({"numItems": limit, "cursor": cursor})
            return page

        page = await self._paged(body, cursor)
        return json_response(
            200,
            {
                "jobs": [to_convex_json(doc) for doc in page["page"]],
                "cursor": page["continueCursor"],
                "isDone": page["isDone"],
            },
        )

    async def crons(self, request: Request) -> Response:
        async def body(txn: Transaction) -> list[dict[str, Any]]:
            reader = SystemReader(txn)
            static: list[dict[str, Any]] = await reader.query(CRON_JOBS).collect()
            runtime: list[dict[str, Any]] = await reader.query(RUNTIME_CRONS).collect()
            # One shape for both: a runtime cron may be unnamed (shown by id),
            # and is running while its action attempt is in flight.
            return [{**doc, "source": "crons.py"} for doc in static] + [
                {**doc, "name": doc["name"] or doc["_id"], "currentRun": doc["job"],
                 "source": "runtime"}
                for doc in runtime
            ]  # fmt: skip

        listed = []
        for doc in sorted(await self._read(body), key=lambda d: str(d.get("name"))):
            source = doc.pop("source")
            try:
                words = compile_schedule(doc["spec"], job=doc["name"]).describe()
            except CronSpecError as exc:
                words = f"invalid schedule: {exc}"
            listed.append({"doc": to_convex_json(doc), "schedule": words, "source": source})
        return json_response(200, {"crons": listed, "now": self.runtime.clock.now()})

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        job_id = _body_text(await self.bodies.read(request), "id")
        if not is_id_of(job_id, SCHEDULED_FUNCTIONS):
            raise RequestError(
                400, "BadJsonBody", f"{job_id!r} is not an id of the {SCHEDULED_FUNCTIONS} table"
            )
        runtime = self.runtime

        async def body(txn: Transaction) -> str | None:
            await cancel_in(txn, job_id, now=runtime.clock.now())
            job = await txn.get(job_id)
            return None if job is None else str(job["state"]["kind"])

        state = await runtime.system_mutation(body)
        if state is None:
            raise RequestError(404, "JobNotFound", f"There is no scheduled function {job_id!r}")
        return json_response(200, {"id": job_id, "state": state})

    async def cancel_all(self, request: Request) -> Response:
        function = _body_text(await self.bodies.read(request), "function")
        runtime = self.runtime
        pending = JobState.PENDING.value

        async def body(txn: Transaction) -> int:
            query = (
                SystemReader(txn)
                .query(SCHEDULED_FUNCTIONS)
                .with_index(BY_STATE.name, lambda q: q.eq("state.kind", pending))
            )
            jobs = await query.filter(lambda doc: doc["name"] == function).take(CANCEL_BATCH)
            now = runtime.clock.now()
            for job in jobs:
                await cancel_in(txn, job["_id"], now=now)
            return len(jobs)

        total = 0
        while True:  # in batches, so that one transaction stays small
            count: int = await runtime.system_mutation(body)
            total += count
            if count < CANCEL_BATCH:
                break
        return json_response(200, {"function": function, "canceled": total})

    # -- live ------------------------------------------------------------------------

    async def logs(self, request: Request) -> Response:
        self.watch()
        after = _int_param(request, "after", 0, 2**62, low=0)
        wait = _int_param(request, "wait", 0, MAX_WAIT_S, low=0)
        limit = _int_param(request, "limit", 500, 1000)
        feed = self.feed
        if after > feed.last:
            after = 0  # numbers from before a restart of the server: start over
        await feed.wait(after, seconds=wait)
        entries, dropped = feed.since(after, limit)
        last = entries[-1]["seq"] if entries else feed.last
        return json_response(200, {"entries": entries, "last": last, "dropped": dropped})

    async def health(self, request: Request) -> Response:
        self.watch()
        now = self.runtime.clock.now()

        async def count(txn: Transaction, state: JobState) -> int:
            kind = state.value
            query = (
                SystemReader(txn)
                .query(SCHEDULED_FUNCTIONS)
                .with_index(BY_STATE.name, lambda q: q.eq("state.kind", kind))
            )
            return len(await query.take(COUNT_CAP + 1))

        async def body(txn: Transaction) -> tuple[int, int]:
            return await count(txn, JobState.PENDING), await count(txn, JobState.IN_PROGRESS)

        pending, running = await self._read(body)
        return json_response(
            200,
            {
                "now": now,
                "pending": min(pending, COUNT_CAP),
                "running": min(running, COUNT_CAP),
                "countCap": COUNT_CAP,
                "capped": pending > COUNT_CAP or running > COUNT_CAP,
                "jobs": self.stats.series(),
                "lastMinute": self.stats.summary(60),
                "pendingSeries": self.pending.add(now, min(pending, COUNT_CAP)),
            },
        )
