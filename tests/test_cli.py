"""``python -m convexpy run`` and ``data``, and the command line's usage errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from e2e_helpers import dev_server, free_port, run_cli, write_app

from convexpy.cli import main


async def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(run_cli, args, cwd)


async def ok(args: list[str], cwd: Path) -> Any:
    """The JSON printed by a command that must succeed."""
    result = await cli(args, cwd)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


# --------------------------------------------------------------------------
# In-process: no server needed


def test_help_everywhere(capsys: Any) -> None:
    assert main(["--help"]) == 0
    assert "dev" in capsys.readouterr().out
    for command in ("dev", "run", "data"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "usage: python -m convexpy " + command in out
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version(capsys: Any) -> None:
    from convexpy import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"convexpy {__version__}\n"


async def test_version_from_the_shell(tmp_path: Path) -> None:
    from convexpy import __version__

    result = await cli(["--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, f"convexpy {__version__}\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "the following arguments are required: PATH"),
        (["run", "messages:send", "{not json"], "ARGS_JSON is not valid JSON"),
        (["run", "messages:send", "[1, 2]"], "ARGS_JSON must be a JSON object"),
        (["run", "messages:send", '{"n": 99999999999999999999}'], "int64"),
        (["run", "nocolon"], "invalid function path"),
        (["run", "reminders.create"], "did you mean reminders:create?"),
        (["run", "billing.invoices.send"], "did you mean billing/invoices:send?"),
        (["run", "a:b", "--kind", "job"], "invalid choice"),
        (["data", "--limit", "0"], "must be at least 1"),
        (["dev", "--port", "99999"], "port must be from 0 to 65535"),
        (["dev", "--port", "\u0663\u0662\u0661\u0660"], "not a port number: '\u0663\u0662"),
        (["dev", "--port", "3_210"], "not a port number: '3_210'"),
        (["data", "--limit", "\u00b2"], "not a positive integer: '\u00b2'"),
        (["data", "--limit", " 5"], "not a positive integer: ' 5'"),
        (["dev", "--body-timeout", "0"], "not a positive number of seconds: '0'"),
        (["dev", "--body-timeout", "nan"], "not a positive number of seconds: 'nan'"),
        (["dev", "--body-timeout", "\u0665"], "not a positive number of seconds"),
        (["dev", "--db", "x.db", "--memory"], "not allowed with argument"),
        (["bogus"], "invalid choice"),
    ],
)
def test_usage_errors(
    capsys: Any, tmp_path: Path, monkeypatch: Any, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_no_server(capsys: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "messages:list"]) == 1
    err = capsys.readouterr().err
    assert "no dev server is running here" in err and "python -m convexpy dev" in err
    assert main(["data"]) == 1
    assert "no dev server is running here" in capsys.readouterr().err

    # A stale server.json (the server died): said plainly too.
    state = tmp_path / ".convexpy"
    state.mkdir()
    (state / "server.json").write_text(json.dumps({"url": f"http://127.0.0.1:{free_port()}"}))
    (state / "admin_key").write_text("key\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # found from a subdirectory as well
    assert main(["run", "messages:list"]) == 1
    err = capsys.readouterr().err
    assert "no dev server is answering at http://127.0.0.1:" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------
# Against a running server


@pytest.mark.slow
async def test_run_and_data(tmp_path: Path) -> None:
    project = tmp_path / "project"
    app_dir = write_app(project / "convex")
    async with dev_server(app_dir, project / ".convexpy" / "data.sqlite3"):
        first_id = await ok(["run", "tasks:add", '{"text": "first"}'], project)
        await ok(["run", "tasks:add", '{"text": "second"}', "--kind", "mutation"], project)
        assert await ok(["run", "tasks:texts"], project) == ["first", "second"]
        # Internal functions, ints as int64, bytes as base64, log lines on stderr.
        assert await ok(["run", "values:secret"], project) == "s3cret"
        result = await cli(["run", "values:add", '{"a": 2, "b": 40}'], project)
        assert result.stdout.strip() == "42"
        args = '{"value": {"$bytes": "AAE="}}'
        assert await ok(["run", "values:echo", args], project) == "AAE="
        result = await cli(["run", "values:chatty"], project)
        assert result.returncode == 0 and "hello from chatty" in result.stderr
        args = '{"value": [1.5, null]}'
        assert await ok(["run", "values:echo_action", args], project) == [1.5, None]

        # Function errors: status 1, the message (and ConvexError data) on stderr.
        result = await cli(["run", "values:boom"], project)
        assert result.returncode == 1
        assert "ValueError: boom" in result.stderr and "Traceback" not in result.stderr
        result = await cli(["run", "values:fail_with", '{"data": {"code": 3}}'], project)
        assert result.returncode == 1 and '"code": 3' in result.stderr
        result = await cli(["run", "values:add", '{"a": "x"}'], project)
        assert result.returncode == 1 and "ArgumentValidationError" in result.stderr

        # Unknown functions, with a suggestion; a wrong --kind; a wrong key.
        result = await cli(["run", "tasks:txets"], project)
        assert result.returncode == 1
        assert "there is no function 'tasks:txets'" in result.stderr
        assert "tasks:texts" in result.stderr
        result = await cli(["run", "tasks:texts", "--kind", "mutation"], project)
        assert result.returncode == 1
        assert result.stderr == (
            "error: tasks:texts is a query, not a mutation: run it with --kind query\n"
        )
        result = await cli(["run", "tasks:add", "--kind", "action"], project)
        assert "tasks:add is a mutation, not an action: run it with --kind mutation" in (
            result.stderr
        )
        result = await cli(["run", "tasks:slow", "--kind", "query"], project)
        assert "tasks:slow is an action, not a query: run it with --kind action" in result.stderr
        result = await cli(["run", "tasks:nope", "--kind", "query"], project)
        assert result.returncode == 1 and "there is no function 'tasks:nope'" in result.stderr
        result = await cli(["run", "tasks:texts", "--admin-key", "wrong"], project)
        assert result.returncode == 1 and "BadAdminKey" in result.stderr

        # data: the tables, then documents.
        result = await cli(["data"], project)
        assert result.returncode == 0
        assert result.stdout.splitlines() == ["tasks", "_scheduled_functions  (system)"]
        result = await cli(["data", "tasks"], project)
        docs = [json.loads(line) for line in result.stdout.splitlines()]
        assert [d["text"] for d in docs] == ["second", "first"]
        assert docs[1]["_id"] == first_id
        result = await cli(["data", "tasks", "--order", "asc", "--limit", "1"], project)
        assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["first"]
        assert result.stderr == "(showing 1 document; use --limit to see more)\n"
        result = await cli(["data", "tasks", "--limit", "2"], project)
        assert result.stderr == ""
        await ok(["run", "tasks:add", '{"text": "third"}'], project)
        result = await cli(["data", "tasks", "--limit", "2"], project)
        assert result.stderr == "(showing 2 documents; use --limit to see more)\n"
        result = await cli(["data", "nope"], project)
        assert result.returncode == 1 and "There is no table named 'nope'" in result.stderr

        # Explicit --url and --admin-key work from anywhere.
        info = json.loads((project / ".convexpy" / "server.json").read_text())
        key = (project / ".convexpy" / "admin_key").read_text().strip()
        explicit = ["--url", info["url"], "--admin-key", key]
        assert await ok(["run", "nested/deep:hello", *explicit], tmp_path) == "hello world"

    result = await cli(["run", "tasks:texts"], project)
    assert result.returncode == 1 and "no dev server is running here" in result.stderr


@pytest.mark.slow
async def test_found_from_where_the_server_started(tmp_path: Path) -> None:
    # As with `scripts/dev examples/messages/convex`: the data lives beside the app,
    # and `run` is typed where `dev` was.
    app_dir = write_app(tmp_path / "examples" / "app" / "convex")
    db = tmp_path / "examples" / "app" / ".convexpy" / "data.sqlite3"
    async with dev_server(app_dir, db, cwd=tmp_path):
        assert (tmp_path / ".convexpy" / "server.json").is_file()
        assert not (tmp_path / ".convexpy" / "admin_key").exists()
        assert await ok(["run", "values:secret"], tmp_path) == "s3cret"
        result = await cli(["data"], tmp_path / ".convexpy")  # from a subdirectory
        assert result.returncode == 0 and "_scheduled_functions" in result.stdout
    assert not (tmp_path / ".convexpy" / "server.json").exists()
    assert not (db.parent / "server.json").exists()
