"""The README's examples are the shipped ones, and its test set-up works as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import pytest
from e2e_helpers import ROOT, subprocess_env

README = ROOT / "README.md"
MESSAGES = ROOT / "examples" / "messages" / "convex"


def blocks(section: str) -> list[tuple[str, str]]:
    """The fenced code blocks (language, text) of the README section titled ``section``
    (up to the next heading of its level or above)."""
    level = len(section.split(" ")[0])
    found: list[tuple[str, str]] = []
    inside = fenced = False
    language, lines = "", []
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if fenced:
            if line.rstrip() == "```":
                fenced = False
                if inside:
                    found.append((language, "".join(lines)))
            else:
                lines.append(line)
        elif line.startswith("```"):
            fenced, language, lines = True, line[3:].strip(), []
        elif line.rstrip() == section:
            inside = True
        elif inside and re.match(rf"#{{1,{level}}} ", line):
            break
    return found


def test_the_tour_shows_the_example_app() -> None:
    [(language, code)] = [b for b in blocks("### Functions") if "convex/messages.py" in b[1]]
    assert language == "python"
    header, _, source = code.partition("\n")
    assert header == "# convex/messages.py, as in examples/messages"
    assert source == (MESSAGES / "messages.py").read_text(encoding="utf-8")


def test_calls_to_messages_send_match_the_example() -> None:
    text = README.read_text(encoding="utf-8")
    shell = re.findall(r"messages:send '(\{[^}]*\})'", text)
    python = re.findall(r"(?:\"messages:send\"|api\.messages\.send), (\{[^}]*\})", text)
    assert len(shell) >= 1 and len(python) >= 3
    source = (MESSAGES / "messages.py").read_text(encoding="utf-8")
    assert '@mutation(args={"body": v.string(), "author": v.string()})' in source
    for args in shell + python:
        assert '"body"' in args and '"author"' in args, args


@pytest.mark.slow
async def test_the_testing_section_runs_as_written(tmp_path: Path) -> None:
    """Its pytest config and test, in a project of their own, run from another directory."""
    [(toml_lang, toml), (python_lang, test)] = blocks("### Testing your app")
    assert (toml_lang, python_lang) == ("toml", "python")
    project = tmp_path / "project"
    shutil.copytree(MESSAGES, project / "convex")
    (project / "pyproject.toml").write_text(toml)
    (project / "tests").mkdir()
    (project / "tests" / "test_messages.py").write_text(test)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=project / "tests",  # not the project's directory
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    result = await anyio.to_thread.run_sync(run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "warning" not in result.stdout.lower()


async def test_the_auth_example_works_as_written(tmp_path: Path) -> None:
    """The README's auth_config.py, token script and query accept the token it mints."""
    import httpx

    from convexpy import Runtime
    from convexpy.server import create_app

    python = [code for language, code in blocks("## Auth") if language == "python"]
    sources = {code.partition("\n")[0]: code for code in python}
    app_dir = tmp_path / "convex"
    app_dir.mkdir()
    (app_dir / "auth_config.py").write_text(sources["# convex/auth_config.py"])
    (app_dir / "users.py").write_text(sources["# convex/users.py"])
    [script] = [code for header, code in sources.items() if header.startswith("# make_token.py")]
    (tmp_path / "make_token.py").write_text(script)
    run = partial(
        subprocess.run,
        [sys.executable, "make_token.py", "ada"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = (await anyio.to_thread.run_sync(run)).stdout.strip()
    async with Runtime(app_dir) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post(
                "/api/query",
                json={"path": "users:me", "args": {}},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert response.json()["value"] == {"id": "https://auth.local.test|ada", "name": "Ada Lovelace"}
