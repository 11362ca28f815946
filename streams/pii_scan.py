"""Scanning a warehouse for raw private data: every text column of every Flywheel table.

The stream redacts before it writes (`streams.pii`, `streams.pii_fields`); this is the
check afterwards, with the same detector, over what is actually stored: every base table
of the database (views read those tables), every column whose type holds strings
(`String`, `LowCardinality`, `Nullable`, `Array`, `Map`, `Tuple` of them), every row
version (no `FINAL`: a replaced row still sits on disk until a merge). A value counts when
the detector finds an email, a card, an IBAN, an SSN or a phone number in it. IP addresses
are not counted: the operational tables hold service addresses by design. The demo runs it
and reports the count (`deploy.demo.report`).

ClickHouse keeps only the rows that could hold any (a digit, an `@`, or a non-ASCII
character, which may be a digit of another script), so the detector reads few.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.pii import find_private, may_hold_private

logger = logging.getLogger(__name__)

#: Kinds that make a value raw private data (see the module's docstring for IPs).
PRIVATE_KINDS = frozenset({"email", "card", "iban", "ssn", "phone"})
#: A value that may hold private data: ClickHouse's prefilter (RE2, on UTF-8).
_MAY_HOLD = r"[0-9@]|[^\x00-\x7F]"


@dataclass(frozen=True)
class Leak:
    """One column of one table holding raw private data, and how many rows hold it."""

    table: str
    column: str
    kinds: tuple[str, ...]
    rows: int


@dataclass
class ScanReport:
    """What `scan_warehouse` read and found."""

    database: str
    tables: int = 0
    columns: int = 0
    rows_read: int = 0
    leaks: list[Leak] = field(default_factory=list)
    #: Per table, the rows holding raw private data in any column.
    rows_by_table: Counter[str] = field(default_factory=Counter)

    @property
    def raw_rows(self) -> int:
        """Rows, over all tables, that hold raw private data in at least one column."""
        return sum(self.rows_by_table.values())


def private_kinds(value: str) -> set[str]:
    """The kinds of raw private data the detector finds in `value` (empty: none)."""
    if not may_hold_private(value):
        return set()
    return {label for _, _, label in find_private(value)[1] if label in PRIVATE_KINDS}


def _is_text(column_type: str) -> bool:
    return "String" in column_type


def scan_warehouse(client: Any, *, database: str, block_rows: int = 5_000) -> ScanReport:
    """Read every text column of every table of `database` and report raw private data.

    Args:
        client: a clickhouse-connect client (read-only access is enough).
        block_rows: rows read per block of the result stream.

    Raises:
        Whatever the client raises when ClickHouse cannot answer.
    """
    report = ScanReport(database)
    tables = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND engine NOT LIKE '%View' AND NOT is_temporary ORDER BY name",
        parameters={"db": database}).result_rows]
    columns = client.query(
        "SELECT table, name, type FROM system.columns WHERE database = {db:String} "
        "ORDER BY table, position", parameters={"db": database}).result_rows
    by_table: dict[str, list[str]] = {}
    for table, name, column_type in columns:
        if table in tables and _is_text(column_type):
            by_table.setdefault(table, []).append(name)
    for table, names in by_table.items():
        report.tables += 1
        report.columns += len(names)
        _scan_table(client, report, table, names, block_rows=block_rows)
    return report


def _scan_table(client: Any, report: ScanReport, table: str, names: list[str], *,
                block_rows: int) -> None:
    # Arrays, maps and tuples are read as their text form: their strings appear in it.
    values = ", ".join(f"toString(`{name}`)" for name in names)
    where = " OR ".join(f"match(toString(`{name}`), {{p:String}})" for name in names)
    sql = f"SELECT {values} FROM `{report.database}`.`{table}` WHERE {where}"
    kinds_by_column: dict[str, Counter[str]] = {name: Counter() for name in names}
    rows_by_column: Counter[str] = Counter()
    with client.query_row_block_stream(sql, parameters={"p": _MAY_HOLD},
                                       settings={"max_block_size": block_rows}) as stream:
        for block in stream:
            for row in block:
                report.rows_read += 1
                leaked = False
                for name, value in zip(names, row, strict=True):
                    found = private_kinds(value) if isinstance(value, str) else set()
                    if found:
                        kinds_by_column[name].update(found)
                        rows_by_column[name] += 1
                        leaked = True
                if leaked:
                    report.rows_by_table[table] += 1
    for name in names:
        if rows_by_column[name]:
            report.leaks.append(Leak(table, name, tuple(sorted(kinds_by_column[name])),
                                     rows_by_column[name]))
            logger.warning("raw private data in %s.%s: %d rows (%s)", table, name,
                           rows_by_column[name], ", ".join(sorted(kinds_by_column[name])))
