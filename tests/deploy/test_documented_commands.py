"""Every `flywheel ...` command the docs and messages tell people to run exists, options too.

A runbook step or an error message that names a command the CLI does not have sends an
on-call engineer to a dead end at the worst time.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from deploy.cli import app

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
    *sorted(p for package in ("schemas", "streams", "trainer", "inference", "monitoring",
                              "deploy", "bench")
            for p in (ROOT / package).rglob("*.py")),
]
_INLINE = re.compile(r"`(flywheel [^`\n]+)`|<code>(flywheel [^<\n]+)</code>"
                     r"|\((flywheel [a-z][^)\n]*)\)")
_LINE = re.compile(r"^\s*(?:\$ |\S*/bin/)?(flywheel [^\n#]+)", re.MULTILINE)  # shell blocks
_SEPARATORS = re.compile(r"\s(?:\|\||\||&&|;)\s|,\s+(?=flywheel )")


def documented_commands() -> list[tuple[str, str]]:
    """(file:line, command) for each `flywheel ...` written in the docs or the code."""
    found: dict[tuple[str, str], None] = {}
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for pattern in (_INLINE, _LINE) if path.suffix == ".md" else (_INLINE,):
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                written = next(group for group in match.groups() if group)
                for part in _SEPARATORS.split(written):
                    if part.strip().startswith("flywheel "):
                        found[(f"{path.relative_to(ROOT)}:{line}", part.strip())] = None
    return list(found)


COMMANDS = documented_commands()


def _is_placeholder(token: str) -> bool:
    return token == "..." or any(c in token for c in "<>{}") or token.isupper()


def resolve(command: str) -> list[str]:
    """The command path of a `flywheel ...` line; raises AssertionError naming what is wrong."""
    command = re.sub(r"<[^>]*>", "X", command)  # `<run id>` is one placeholder
    try:
        tokens = shlex.split(command)[1:]
    except ValueError:  # an unclosed quote in a shorthand such as `flywheel sql "SELECT ...`
        tokens = command.split()[1:]
    # typer vendors its own click: duck-type groups (`commands`) and options.
    current: Any = typer.main.get_command(app)
    path = ["flywheel"]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            option = next((p for p in current.params if p.param_type_name == "option"
                           and name in p.opts + p.secondary_opts), None)
            assert option is not None, f"`{' '.join(path)}` has no option {name}"
            if not option.is_flag and not option.count and "=" not in token:
                i += 1  # its value
            continue
        commands = getattr(current, "commands", None)
        if commands is not None:
            if _is_placeholder(token):
                break  # "flywheel models ...": any subcommand
            sub = commands.get(token)
            assert sub is not None, (
                f"`{' '.join(path)}` has no command {token!r}; it has {sorted(commands)}")
            current = sub
            path.append(token)
    return path


def test_the_scan_finds_the_commands_people_are_told_to_run() -> None:
    written = {command for _, command in COMMANDS}
    assert {"flywheel status", "flywheel stack up", "flywheel trainer watch"} <= written
    assert any(where.startswith("docs/runbooks/") for where, _ in COMMANDS)
    assert any(".py:" in where for where, _ in COMMANDS)
    assert ("deploy/demo/report.py" in {where.split(":")[0] for where, _ in COMMANDS})


def test_a_command_the_cli_lacks_is_caught() -> None:
    with pytest.raises(AssertionError, match="has no command 'sql'"):
        resolve("flywheel clickhouse sql")
    with pytest.raises(AssertionError, match="has no option --shares"):
        resolve("flywheel models canary 3 --shares 0.1")
    assert resolve("flywheel --config x.toml models canary 3 --share 0.1") == [
        "flywheel", "models", "canary"]
    assert resolve("flywheel --config .flywheel/demo/<run id>/flywheel.toml status") == [
        "flywheel", "status"]


def test_every_documented_command_exists() -> None:
    problems = []
    for where, command in COMMANDS:
        try:
            resolve(command)
        except AssertionError as e:
            problems.append(f"{where}: {command}: {e}")
    assert not problems, "\n".join(problems)
