"""Helpers for end-to-end tests: a test app, and the real dev server in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent

# An app exercising every part of the HTTP API. Used in-process (test_http)
# and by the subprocess tests.
SERVER_APP: dict[str, str] = {
    "values.py": """
import logging

from convexpy import ConvexError, action, internal_query, mutation, query, v


@query(args={"value": v.any()})
async def echo(ctx, value):
    return value


@mutation(args={"value": v.any()})
async def echo_mutation(ctx, value):
    return value


@action(args={"value": v.any()})
async def echo_action(ctx, value):
    return value


@query
async def add(ctx, a: int, b: int) -> int:
    return a + b


@query(args={"a": v.int64(), "b": v.int64()})
async def add_int64(ctx, a, b):
    return a + b


@query
async def total(ctx, xs: list[int], extra: dict[str, int] | None = None) -> int:
    return sum(xs) + sum((extra or {}).values())


@query
async def nothing(ctx) -> None:
    return None


@query(args={"data": v.any()})
async def fail_with(ctx, data):
    raise ConvexError(data)


@query
async def boom(ctx) -> None:
    raise ValueError("boom")


@query
async def chatty(ctx) -> str:
    print("hello from chatty")
    logging.getLogger("app").warning("careful")
    return "done"


@query
async def whoami(ctx):
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    return {"subject": identity.subject, "issuer": identity.issuer, "name": identity.name}


@internal_query
async def secret(ctx) -> str:
    return "s3cret"
""",
    "tasks.py": """
import asyncio

from convexpy import action, internal, internal_mutation, mutation, query


@mutation
async def add(ctx, text: str) -> str:
    return await ctx.db.insert("tasks", {"text": text})


@query
async def texts(ctx) -> list:
    return [doc["text"] for doc in await ctx.db.query("tasks").collect()]


@mutation
async def add_later(ctx, text: str, delay_ms: float) -> str:
    return await ctx.scheduler.run_after(delay_ms, internal.tasks.add_now, {"text": text})


@internal_mutation
async def add_now(ctx, text: str) -> None:
    await ctx.db.insert("tasks", {"text": text})


@internal_mutation
async def mark(ctx, label: str) -> None:
    await ctx.db.insert("marks", {"label": label})


@action
async def slow(ctx, seconds: float) -> str:
    await ctx.run_mutation(internal.tasks.mark, {"label": "slow started"})
    await asyncio.sleep(seconds)
    return "slept"
""",
    "nested/deep.py": """
from convexpy import query


@query
async def hello(ctx, name: str = "world") -> str:
    return f"hello {name}"
""",
}


# Added to SERVER_APP for the sync protocol's tests (test_sync, test_sync_client).
SYNC_APP: dict[str, str] = {
    "live.py": """
from convexpy import ConvexError, action, mutation, query


@mutation
async def refuse(ctx, code: int) -> None:
    await ctx.db.insert("tasks", {"text": "never"})
    raise ConvexError({"code": code})


@action
async def shout(ctx, text: str) -> str:
    print("shouting", text)
    return text.upper()


@action
async def explode(ctx) -> None:
    raise RuntimeError("kaboom")


@mutation
async def note(ctx, text: str) -> None:
    await ctx.db.insert("notes", {"text": text})


@query
async def texts(ctx) -> list:
    rows = await ctx.db.query("tasks").collect()
    print(f"texts read {len(rows)}")
    return [row["text"] for row in rows]


@query
async def jobs(ctx) -> list:
    rows = await ctx.db.system.query("_scheduled_functions").collect()
    return [row["state"]["kind"] for row in rows]
""",
}


def write_app(root: Path, files: dict[str, str] | None = None) -> Path:
    for relative, source in (SERVER_APP if files is None else files).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    root.mkdir(parents=True, exist_ok=True)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FORCE_COLOR", None)
    return env


def run_cli(
    args: Sequence[str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m convexpy ARGS`` in ``cwd`` (blocking: call it through a thread)."""
    return subprocess.run(
        [sys.executable, "-m", "convexpy", *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class DevServer:
    """A ``python -m convexpy dev`` subprocess whose output is collected line by line."""

    def __init__(self, proc: subprocess.Popen[str], url: str, state_dir: Path) -> None:
        self.proc = proc
        self.url = url
        self.state_dir = state_dir
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def admin_key(self) -> str:
        return (self.state_dir / "admin_key").read_text().strip()

    async def wait_for_output(self, text: str, within: float = 15) -> str:
        """The first output line containing ``text`` (fails after ``within`` seconds)."""
        with anyio.fail_after(within):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self.proc.poll() is not None:
                    self._reader.join(5)
                    raise AssertionError(f"server exited before printing {text!r}:\n{self.output}")
                await anyio.sleep(0.05)

    async def wait_ready(self, within: float = 30) -> None:
        """Poll ``GET /`` until the server answers."""
        async with httpx.AsyncClient(timeout=2) as client:
            with anyio.fail_after(within):
                while True:
                    if self.proc.poll() is not None:
                        self._reader.join(5)
                        raise AssertionError(f"server exited early:\n{self.output}")
                    try:
                        response = await client.get(self.url + "/")
                        if response.status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)

    async def stop(
        self, sig: int = signal.SIGTERM, within: float = 20, *, group: bool = False
    ) -> int:
        """Send ``sig`` (to the server's whole process group with ``group``, as
        Ctrl-C in a terminal does) and wait for the exit status
        (``subprocess.TimeoutExpired`` after ``within`` seconds)."""
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        await anyio.to_thread.run_sync(partial(self.proc.wait, within))
        self._reader.join(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        # (A child process that outlived the server may still hold the pipe: closing
        # it under the reading thread would block.)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


@asynccontextmanager
async def dev_server(
    app_dir: Path,
    db: Path | str | None,
    *args: str,
    cwd: Path | None = None,
    port: int | None = None,
) -> AsyncIterator[DevServer]:
    """Start the dev server on ``port`` (default: a free one) with ``--db db``
    (``--store db`` for a URL, ``--memory`` for None) and wait for it."""
    port = port or free_port()
    command = [sys.executable, "-m", "convexpy", "dev", str(app_dir), "--port", str(port)]
    if isinstance(db, str):
        command += ["--store", db]
    else:
        command += ["--memory"] if db is None else ["--db", str(db)]
    command += list(args)
    state_dir = app_dir.parent / ".convexpy" if not isinstance(db, Path) else db.parent
    async with server_process(command, cwd or app_dir.parent, port, state_dir) as server:
        yield server


@asynccontextmanager
async def server_process(
    command: list[str],
    cwd: Path,
    port: int,
    state_dir: Path,
    env: dict[str, str] | None = None,
) -> AsyncIterator[DevServer]:
    """Run ``command`` (a server listening on ``port``) in a process group of
    its own, wait until it answers, and stop it (SIGTERM, then SIGKILL) after."""
    start = partial(
        subprocess.Popen,
        command,
        cwd=cwd,
        env=subprocess_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    proc: subprocess.Popen[str] = await anyio.to_thread.run_sync(start)
    server = DevServer(proc, f"http://127.0.0.1:{port}", state_dir)
    try:
        await server.wait_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            with suppress(subprocess.TimeoutExpired):
                await server.stop()
        server.kill()


def server_info(state_dir: Path) -> dict[str, object] | None:
    try:
        info = json.loads((state_dir / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def writer_pids(db: Path) -> list[int]:
    """The SQLite writer processes working on ``db``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdecimal():
            continue
        try:
            args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        writer = any(a.endswith(b"_sqlite_writer.py") for a in args)
        if writer and state != "Z" and str(db).encode() in args:
            found.append(int(entry.name))
    return found


async def run_readme_client(tmp_path: Path, script: str) -> list[str]:
    """The README's Live queries app (``convex/counter.py``) served by the dev
    server, and ``script`` (a client of it, for ``http://127.0.0.1:3210``) run
    against it in a process of its own; what it printed, line by line."""
    from test_readme import blocks

    (_, app), *_ = blocks("## Live queries")
    header, _, source = app.partition("\n")
    assert header == "# convex/counter.py"
    app_dir = tmp_path / "convex"
    app_dir.mkdir()
    (app_dir / "counter.py").write_text(source)
    assert "http://127.0.0.1:3210" in script
    async with dev_server(app_dir, None) as server:
        run = partial(
            subprocess.run,
            [sys.executable, "-c", script.replace("http://127.0.0.1:3210", server.url)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            check=False,
        )
        done = await anyio.to_thread.run_sync(run)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
