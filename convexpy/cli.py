"""The command line: ``python -m convexpy dev | run | data``.

Exit status: 0 when all went well, 1 when the function (or the server)
reported an error or no server could be reached, 2 for a usage error (bad
flags, ARGS_JSON that is not a JSON object).

``run`` and ``data`` talk to a running dev server with its admin key. They
find both in ``.convexpy/`` (``server.json`` and ``admin_key``) in the current
directory or the nearest parent that has one, unless ``--url`` and
``--admin-key`` are given.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .convex_json import from_convex_json, to_convex_json, to_plain_json
from .errors import FunctionNotFoundError, InvalidValueError
from .functions import normalize_path

if TYPE_CHECKING:
    from .server.logs import LogPrinter

__all__ = ["CliError", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_STATE_DIR = ".convexpy"


class CliError(Exception):
    """Reported as one line on stderr, then exit with ``status``."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        self.status = status
        super().__init__(message)


# --------------------------------------------------------------------------
# Parser


def _digits(text: str) -> int | None:
    """``text`` as an integer if it is ASCII digits only (``int`` also takes ``"١٢"``,
    ``" 12"``, ``"1_2"``)."""
    return int(text) if text.isascii() and text.isdigit() else None


def _port(text: str) -> int:
    port = _digits(text)
    if port is None:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, got {port}")
    return port


def _positive(text: str) -> int:
    value = _digits(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _a(kind: str) -> str:
    """``"a query"``, ``"a mutation"``, ``"an action"``."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _count(n: int, word: str) -> str:
    """``"1 document"``, ``"2 documents"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m convexpy",
        description="convexpy: Convex's function runtime and scheduler for Python.",
    )
    parser.add_argument("--version", action="version", version=f"convexpy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="serve an app: HTTP API, scheduler, crons, hot reload",
        description=(
            "Load the app, open its database, run scheduled jobs and crons, serve the "
            "Convex-compatible HTTP API and reload modules when they change."
        ),
        epilog=(
            "The admin key (for `Authorization: Convex <key>`, `run` and `data`) is "
            "generated once and kept in .convexpy/admin_key beside the database. "
            "Bearer tokens are accepted only when a provider of APP_DIR/auth_config.py "
            "vouches for them (signature, issuer, audience, expiry)."
        ),
    )
    dev.add_argument(
        "app_dir",
        nargs="?",
        default="convex",
        metavar="APP_DIR",
        help="the app directory (default: ./convex)",
    )
    dev.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    dev.add_argument(
        "--port",
        type=_port,
        default=3210,
        help="port to listen on, 0 for any (default: %(default)s)",
    )
    store = dev.add_mutually_exclusive_group()
    store.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="SQLite database file (default: .convexpy/data.sqlite3 beside APP_DIR)",
    )
    store.add_argument(
        "--memory", action="store_true", help="keep data in memory only (lost on exit)"
    )
    store.add_argument(
        "--store",
        metavar="URL",
        help=(
            "a store URL: postgresql://user@host:port/database, sqlite:///path.db or memory "
            "(default: $CONVEXPY_STORE if set, else the SQLite file)"
        ),
    )
    dev.add_argument("--no-crons", action="store_true", help="load crons.py but do not run it")
    dev.add_argument("--no-watch", action="store_true", help="do not reload modules on change")
    dev.add_argument(
        "--body-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="answer 408 to a request whose body takes longer to arrive (default: 30)",
    )
    dev.add_argument(
        "--write-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="restart the SQLite writer process if a write takes longer (default: 30)",
    )
    dev.add_argument(
        "--import-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up on a (re)load whose modules take longer to import (default: 30)",
    )
    dev.add_argument(
        "--insecure-unverified-jwt",
        action="store_true",
        help=(
            "DEVELOPMENT ONLY: read bearer tokens' claims WITHOUT verifying their signature, "
            "issuer, audience or expiry (auth_config.py is ignored)"
        ),
    )
    loudness = dev.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="more detail: job ids, full tracebacks"
    )
    loudness.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    dev.set_defaults(handler=_dev)

    serve = commands.add_parser(
        "serve",
        help="serve an app in production: no reload, quiet, admin key from the environment",
        description=(
            "Load the app once and serve it: HTTP API, live queries, scheduler and crons. "
            "Run it several times against one PostgreSQL database to share the work."
        ),
        epilog=(
            "The admin key is read from $CONVEXPY_ADMIN_KEY (at least 16 characters); "
            "without one, admin calls are refused and the server only listens on loopback. "
            "Bearer tokens are verified against auth_config.py. SIGTERM drains: in-flight "
            "requests finish and running jobs get --grace seconds."
        ),
    )
    serve.add_argument(
        "app_dir",
        nargs="?",
        default="convex",
        metavar="APP_DIR",
        help="the app directory (default: ./convex)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///path.db, sqlite:////abs/path.db or postgresql://user@host/db "
        "(default: $CONVEXPY_STORE)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=_port, default=3210, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may take to finish (default: %(default)g)",
    )
    serve.add_argument("--no-crons", action="store_true", help="do not run crons.py here")
    serve.add_argument(
        "--log", action="store_true", help="print every call, job and cron run, as dev does"
    )
    serve.set_defaults(handler=_serve)

    run = commands.add_parser(
        "run",
        help="call a function on the running dev server",
        description=(
            "Call any function (internal ones too) on a running dev server with its admin "
            "key, and print the result as JSON (int64 as numbers, bytes as base64)."
        ),
        epilog=(
            'Example: python -m convexpy run messages:send \'{"body": "hi"}\'. In ARGS_JSON, '
            "integers are sent as int64 and other numbers as float64; Convex JSON forms such "
            'as {"$bytes": "..."} are accepted.'
        ),
    )
    run.add_argument(
        "path", metavar="PATH", help="the function, e.g. messages:send or nested/deep:hello"
    )
    run.add_argument(
        "args_json", nargs="?", default="{}", metavar="ARGS_JSON", help="arguments as a JSON object"
    )
    run.add_argument(
        "--kind",
        choices=("query", "mutation", "action"),
        help="the function's kind (default: ask the server)",
    )
    _connection_options(run)
    run.set_defaults(handler=_run)

    data = commands.add_parser(
        "data",
        help="list tables, or print a table's documents",
        description=(
            "Without TABLE, list the tables. With TABLE, print its documents, one JSON "
            "object per line (system tables such as _scheduled_functions too)."
        ),
    )
    data.add_argument("table", nargs="?", metavar="TABLE", help="the table to print")
    data.add_argument(
        "--limit", type=_positive, default=100, help="documents to print (default: %(default)s)"
    )
    data.add_argument(
        "--order",
        choices=("asc", "desc"),
        default="desc",
        help="by creation time (default: %(default)s, newest first)",
    )
    _connection_options(data)
    data.set_defaults(handler=_data)
    return parser


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the dev server (default: from .convexpy/server.json)")
    parser.add_argument("--admin-key", help="the admin key (default: from .convexpy/admin_key)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return status


# --------------------------------------------------------------------------
# dev


def _dev(args: argparse.Namespace) -> int:
    from .server.dev import DevOptions, run
    from .server.http import DEFAULT_BODY_TIMEOUT
    from .server.logs import LogPrinter

    verbosity = 1 if args.verbose else -1 if args.quiet else 0
    printer = LogPrinter(sys.stdout, verbosity=verbosity)
    _configure_logging(printer)
    store_url = args.store
    if store_url is None and args.db is None and not args.memory:
        store_url = os.environ.get("CONVEXPY_STORE") or None
    if store_url is not None:
        from .store import store_from_url

        try:
            store_from_url(store_url)  # refuse a bad URL before anything starts
        except ValueError as exc:
            where = "--store" if args.store else "CONVEXPY_STORE"
            printer.error(f"Invalid {where}: {exc}")
            return 2
    options = DevOptions(
        app_dir=Path(args.app_dir),
        host=args.host,
        port=args.port,
        db=args.db,
        memory=args.memory,
        store=store_url,
        crons=not args.no_crons,
        watch=not args.no_watch,
        body_timeout=args.body_timeout or DEFAULT_BODY_TIMEOUT,
        write_timeout=args.write_timeout or 30.0,
        import_timeout=args.import_timeout or 30.0,
        insecure_unverified_jwt=args.insecure_unverified_jwt,
    )
    return run(options, printer)


def _serve(args: argparse.Namespace) -> int:
    from .server.logs import LogPrinter
    from .server.serve import ADMIN_KEY_VARIABLE, STORE_VARIABLE, ServeOptions, run
    from .store import store_from_url

    printer = LogPrinter(sys.stdout, verbosity=0 if args.log else -1)
    _configure_logging(printer)
    store_url = args.store or os.environ.get(STORE_VARIABLE) or None
    where = "--store" if args.store else STORE_VARIABLE
    if store_url is None:
        printer.error(
            f"serve needs a store: --store URL or {STORE_VARIABLE} (sqlite:///path.db or "
            "postgresql://user@host/db)"
        )
        return EXIT_USAGE
    try:
        store_from_url(store_url)  # refuse a bad URL before anything starts
    except ValueError as exc:
        printer.error(f"Invalid {where}: {exc}")
        return EXIT_USAGE
    options = ServeOptions(
        app_dir=Path(args.app_dir),
        store=store_url,
        host=args.host,
        port=args.port,
        admin_key=os.environ.get(ADMIN_KEY_VARIABLE) or None,
        log=args.log,
        grace=args.grace,
        crons=not args.no_crons,
    )
    return run(options, printer)


def _configure_logging(printer: LogPrinter) -> None:
    handler = printer.logging_handler()
    for name in ("convexpy", "uvicorn", "watchfiles"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.propagate = False
    # watchfiles reports every change at INFO; we print our own reload lines.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # Let handlers' logging.info(...) reach the runtime's per-call capture.
    logging.getLogger().setLevel(logging.INFO)


# --------------------------------------------------------------------------
# Talking to a running server


def _find_state_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / _STATE_DIR
        if (candidate / "server.json").is_file() or (candidate / "admin_key").is_file():
            return candidate
    return None


def _server(args: argparse.Namespace) -> tuple[str, str]:
    """The URL and admin key to use."""
    url: str | None = args.url
    key: str | None = args.admin_key
    state_dir = _find_state_dir(Path.cwd())
    info: dict[str, Any] = {}
    if state_dir is not None:
        try:
            loaded = json.loads((state_dir / "server.json").read_text(encoding="utf-8"))
            info = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            info = {}
    if url is None and isinstance(info.get("url"), str):
        url = info["url"]
    if url is None:
        raise CliError(
            "no dev server is running here (no .convexpy/server.json in this directory or "
            "its parents). Start one with `python -m convexpy dev`, or pass --url and "
            "--admin-key."
        )
    # The key lives beside the database; server.json says where that is.
    key_dirs = [Path(info["state"])] if isinstance(info.get("state"), str) else []
    key_dirs += [] if state_dir is None else [state_dir]
    for directory in key_dirs:
        if key is not None:
            break
        try:
            key = (directory / "admin_key").read_text(encoding="utf-8").strip() or None
        except OSError:
            key = None
    if key is None:
        raise CliError("no admin key: pass --admin-key, or run where .convexpy/admin_key is")
    return url.rstrip("/"), key


def _request(
    method: str,
    url: str,
    key: str,
    body: object = None,
    *,
    timeout: float | None = 30.0,
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body, allow_nan=False).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Convex {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        base = url.split("/api/", 1)[0]
        raise CliError(
            f"no dev server is answering at {base} ({reason}). Start one with "
            "`python -m convexpy dev` (or check --url)."
        ) from None
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise CliError(f"unexpected response from {url} (HTTP {status}): {raw[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise CliError(f"unexpected response from {url} (HTTP {status})")
    return status, parsed


def _refused(status: int, body: dict[str, Any]) -> CliError:
    code = body.get("code", f"HTTP {status}")
    return CliError(f"{code}: {body.get('message', 'the server refused the request')}")


def _print_json(value: object, stream: TextIO) -> None:
    print(json.dumps(to_plain_json(value), indent=2, ensure_ascii=False), file=stream)


# --------------------------------------------------------------------------
# run


def _cli_value(obj: object) -> object:
    """ARGS_JSON as Convex values: JSON integers become int64, Convex JSON forms decode."""
    if isinstance(obj, list):
        return [_cli_value(item) for item in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and next(iter(obj)) in ("$integer", "$float", "$bytes"):
            return from_convex_json(obj)
        return {key: _cli_value(item) for key, item in obj.items()}
    return obj


def _parse_cli_args(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CliError(f"ARGS_JSON is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError(
            'ARGS_JSON must be a JSON object of arguments, e.g. \'{"body": "hi"}\'', EXIT_USAGE
        )
    try:
        value = _cli_value(parsed)
        to_convex_json(value)
    except (InvalidValueError, RecursionError) as exc:
        raise CliError(f"ARGS_JSON: {exc}", EXIT_USAGE) from None
    assert isinstance(value, dict)
    return value


def _function_kind(url: str, key: str, path: str) -> str:
    """The kind of the function at ``path``; a CliError saying so if there is none."""
    status, body = _request("GET", f"{url}/api/admin/functions", key)
    if status != 200:
        raise _refused(status, body)
    functions = body.get("functions")
    kinds = {
        f["path"]: f["kind"]
        for f in functions or []
        if isinstance(f, dict) and isinstance(f.get("path"), str)
    }
    if path in kinds:
        return str(kinds[path])
    close = difflib.get_close_matches(path, list(kinds), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    if not kinds:
        hint = " The app has no functions."
    reload_error = body.get("reloadError")
    if isinstance(reload_error, str):
        hint += (
            f" The last reload failed ({reload_error}), so functions from the new code "
            "are not loaded."
        )
    raise CliError(f"there is no function {path!r}.{hint}")


def _run(args: argparse.Namespace) -> int:
    try:
        path = normalize_path(args.path)
    except FunctionNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    fn_args = _parse_cli_args(args.args_json)
    url, key = _server(args)
    kind = args.kind or _function_kind(url, key, path)
    payload = {"path": path, "args": to_convex_json(fn_args), "format": "convex_encoded_json"}
    status, body = _request("POST", f"{url}/api/{kind}", key, payload, timeout=None)
    if status == 404 and body.get("code") == "FunctionNotFound" and args.kind:
        actual = _function_kind(url, key, path)  # says so if there is no such function
        if actual != kind:
            raise CliError(f"{path} is {_a(actual)}, not {_a(kind)}: run it with --kind {actual}")
    if status != 200:
        raise _refused(status, body)
    for line in body.get("logLines") or []:
        print(f"[log] {line}", file=sys.stderr)
    try:
        if body.get("status") == "success":
            _print_json(from_convex_json(body.get("value")), sys.stdout)
            return EXIT_OK
        print(f"error: {body.get('errorMessage', 'the function failed')}", file=sys.stderr)
        if "errorData" in body:
            print("error data:", file=sys.stderr)
            _print_json(from_convex_json(body["errorData"]), sys.stderr)
    except InvalidValueError as exc:
        raise CliError(f"the server sent a value that is not Convex JSON: {exc}") from None
    return EXIT_ERROR


# --------------------------------------------------------------------------
# data


def _data(args: argparse.Namespace) -> int:
    url, key = _server(args)
    if args.table is None:
        status, body = _request("GET", f"{url}/api/admin/tables", key)
        if status != 200:
            raise _refused(status, body)
        names = [t.get("name") for t in body.get("tables") or [] if isinstance(t, dict)]
        user = [n for n in names if isinstance(n, str) and not n.startswith("_")]
        system = [n for n in names if isinstance(n, str) and n.startswith("_")]
        if not user:
            print("(no tables yet)", file=sys.stderr)
        for name in user:
            print(name)
        for name in system:
            print(f"{name}  (system)")
        return EXIT_OK
    query = urllib.parse.urlencode({"limit": args.limit, "order": args.order})
    table = urllib.parse.quote(args.table, safe="")
    status, body = _request("GET", f"{url}/api/admin/tables/{table}?{query}", key)
    if status != 200:
        raise _refused(status, body)
    documents = body.get("documents") or []
    try:
        for doc in documents:
            print(json.dumps(to_plain_json(from_convex_json(doc)), ensure_ascii=False))
    except InvalidValueError as exc:
        raise CliError(f"the server sent a value that is not Convex JSON: {exc}") from None
    if not documents:
        print(f"(table {args.table} is empty)", file=sys.stderr)
    elif body.get("hasMore"):
        shown = _count(len(documents), "document")
        print(f"(showing {shown}; use --limit to see more)", file=sys.stderr)
    return EXIT_OK
