"""Write benchmark figures into BENCHMARKS.md, one section per benchmark."""

from __future__ import annotations

import platform
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

# Hand-written analysis below this line in a section survives the benchmark rewriting
# the figures above it.
NOTES_MARK = "<!-- notes: kept when the benchmark rewrites this section -->"


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_section(title: str, body: str, *, path: Path = BENCHMARKS,
                  measured_on: str | None = None) -> None:
    """Replace (or append) the `## title` section of BENCHMARKS.md with `body`.

    `measured_on` names the machine when it is not this one (a GPU machine, say). Whatever
    the old section had from `NOTES_MARK` on is kept after the new figures.
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    section = (f"## {title}\n\n_Measured {stamp} on {measured_on or machine()}._\n\n"
               f"{body.strip()}\n")
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if (old := pattern.search(text)) is not None:
        _, mark, notes = old.group(0).partition(NOTES_MARK)
        if mark:
            section += f"\n{mark}{notes.rstrip()}\n"
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
