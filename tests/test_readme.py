"""The README's examples are the shipped ones, and its test set-up works as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
