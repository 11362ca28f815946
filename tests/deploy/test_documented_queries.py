"""The SQL the docs give runs on the real warehouse, as a read-only analyst runs it.

Checked: ```sql blocks, inline `SELECT ...` and `flywheel sql "..."` lines that read
`flywheel.<table>`, in the README, the analysts' guide and the runbooks. The guide's
client examples (Python, curl) name tables without the database and are not extracted.

The docs name tables and columns that migrations own; a renamed column or a dropped view
would leave an analyst or an on-call engineer with a query that fails when it is needed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.conftest import migrated_database, with_database

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "analysts.md",
        *sorted((ROOT / "docs" / "runbooks").glob("*.md"))]
_BLOCK = re.compile(r"^[ \t]*```sql\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)`(SELECT [^`]+)`(?!`)")
_CLI = re.compile(r'flywheel sql "(SELECT [^"]+)"')  # in shell blocks


def documented_queries() -> list[tuple[str, str]]:
    """(file:line, query) of each ```sql block, inline `SELECT ...` and `flywheel sql "..."`."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for pattern in (_BLOCK, _INLINE, _CLI):
            for match in pattern.finditer(text):
                query = match.group(1).strip()
                if "..." in query:  # a shorthand such as `flywheel sql "SELECT ..."`
                    continue
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", query))
    return found


QUERIES = documented_queries()


def test_the_docs_have_the_queries_this_module_checks() -> None:
    # The analysts' guide answers ten questions; the drift and feedback runbooks add theirs.
    files = {where.split(":")[0] for where, _ in QUERIES}
    assert "docs/runbooks/FlywheelStreamErrors.md" in files  # `flywheel sql "..."` lines
    assert sum(where.startswith("docs/analysts.md") for where, _ in QUERIES) >= 10
    assert {"docs/runbooks/FlywheelEmbeddingDrift.md",
            "docs/runbooks/FlywheelFeatureDrift.md"} <= files


@pytest.fixture(scope="module")
def warehouse(running: Callable[..., Supervisor],
              settings: FlywheelSettings) -> Iterator[tuple[Any, str]]:
    running("clickhouse")
    database = f"t_docs_{uuid.uuid4().hex[:8]}"
    with migrated_database(with_database(settings, database), database="default",
                           readonly=True) as reader:
        yield reader, database


@pytest.mark.integration
@pytest.mark.parametrize("where, query", QUERIES, ids=[where for where, _ in QUERIES])
def test_documented_query_runs(warehouse: tuple[Any, str], where: str, query: str) -> None:
    client, database = warehouse
    # The docs use the default database name; the test's own stands in for it.
    runnable = re.sub(r"\bflywheel\.", f"{database}.", query)
    assert runnable != query, f"{where} names no flywheel.<table>; which table does it read?"
    # On the (empty) tables: an unknown table or column, a type error or an illegal
    # aggregation raises here, as it would for the analyst.
    client.query(runnable)
