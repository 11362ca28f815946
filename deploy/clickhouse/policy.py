"""What an account may run: ClickHouse's own parser and analyzer decide what a statement is.

chDB is ClickHouse's local mode, which trusts its one user: it writes `INTO OUTFILE`
anywhere, reads any file through the `file()` function, runs several statements
from one text, and lets anyone `KILL` or `SYSTEM`. A real server refuses `INTO
OUTFILE` over HTTP and checks grants. The front does the same checks itself,
before a statement runs, and asks the engine to parse rather than guessing with
patterns of our own:

- `formatQuery()` parses exactly one statement (a second one is code 62) and prints
  it in canonical form: comments gone, literals quoted and escaped, clauses on their
  own lines. `INTO OUTFILE` is then a line of its own, never inside a literal.
- For read-only accounts, `EXPLAIN QUERY TREE` lists every table, table function
  and function the analyzer resolved, subqueries and `IN` included, so the system
  tables that show other users' queries or the data path, `file()`, and table
  functions that reach outside (`url`, `remote`, `merge`, `view` hiding what it
  reads) are refused by name.

Verdicts are cached by statement text: clients repeat the same statements, and the
sink's inserts have a constant head.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

from deploy.clickhouse.engine import Handle, quote_value
from deploy.clickhouse.errors import ACCESS_DENIED, READONLY, ServerError
from deploy.settings import ClickHouseUser

# What a read-only account may run, by the first keyword of the canonical text.
_READ_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS"})
_TREE_KINDS = frozenset({"SELECT", "WITH"})
# System tables that describe the schema or are constants; the rest (processes,
# disks, server_settings, *_log, ...) show other users' work or the server's files.
SYSTEM_TABLES_FOR_READERS = frozenset({
    "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "tables", "columns", "databases",
    "functions", "table_functions", "formats", "data_type_families", "settings", "parts",
    "time_zones", "collations", "aggregate_function_combinators", "keywords", "build_options",
    "table_engines", "contributors", "licenses", "errors",
})
# Table functions that generate data and read nothing.
TABLE_FUNCTIONS_FOR_READERS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generateRandom", "values", "null",
    "generate_series", "generateSeries",
})
# Functions that read the server's files or configuration.
FUNCTIONS_REFUSED_TO_READERS = frozenset({
    "file", "getServerSetting", "getMergeTreeSetting", "filesystemAvailable",
    "filesystemCapacity", "filesystemUnreserved", "getMacro", "getClientHTTPHeader",
})
_INTO_OUTFILE = re.compile(r"^INTO OUTFILE '((?:[^'\\]|\\.)*)'", re.MULTILINE)
_TABLE = re.compile(r"\bTABLE id: \d+(?:, alias: [^,]+)?, table_name: ([^\s,]+)")
_TABLE_FUNCTION = re.compile(r"\btable_function_name: ([A-Za-z0-9_]+)")
_FUNCTION = re.compile(r"\bfunction_name: ([A-Za-z0-9_]+)")
_CACHE_SIZE = 4096


class StatementPolicy:
    """Checks one statement for one account before it runs."""

    def __init__(self, *, into_outfile_dir: Path | None) -> None:
        self.into_outfile_dir = into_outfile_dir.resolve() if into_outfile_dir else None
        self._allowed: OrderedDict[tuple[bytes, bool, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, handle: Handle, sql: bytes, account: ClickHouseUser, *, database: str,
              params: dict[str, str] | None = None) -> None:
        """Raise unless `account` may run `sql` (one statement, no data) on `handle`.

        Raises:
            ServerError: 62 for a second statement or bad syntax, 164 READONLY for a
                statement a read-only account may not run, 497 ACCESS_DENIED for
                INTO OUTFILE, a refused table or function.
        """
        key = (sql, account.readonly, database)
        with self._lock:
            if key in self._allowed:
                self._allowed.move_to_end(key)
                return
        canonical = _canonical(handle, sql)
        self._check_outfile(canonical, account)
        if account.readonly:
            self._check_reader(handle, canonical, account, params or {})
        with self._lock:
            self._allowed[key] = None
            if len(self._allowed) > _CACHE_SIZE:
                self._allowed.popitem(last=False)

    def _check_outfile(self, canonical: str, account: ClickHouseUser) -> None:
        match = _INTO_OUTFILE.search(canonical)
        if match is None:
            return
        if self.into_outfile_dir is None or account.readonly:
            raise ServerError(ACCESS_DENIED, "INTO OUTFILE is not allowed on this server: it "
                              "would write a file as the server's user. Fetch the result over "
                              "HTTP and write it on your side (an admin can allow a folder with "
                              "clickhouse.into_outfile_dir).")
        target = Path(_unescape(match.group(1)))
        resolved = (self.into_outfile_dir / target).resolve()
        if not resolved.is_relative_to(self.into_outfile_dir):
            raise ServerError(ACCESS_DENIED, f"INTO OUTFILE may only write under "
                              f"clickhouse.into_outfile_dir={self.into_outfile_dir}; "
                              f"{str(target)!r} is outside it")

    def _check_reader(self, handle: Handle, canonical: str,
                      account: ClickHouseUser, params: dict[str, str]) -> None:
        kind = canonical.split(None, 1)[0].upper() if canonical.strip() else ""
        if kind not in _READ_KINDS:
            raise ServerError(READONLY, f"{account.name}: Cannot execute {kind or 'this'} "
                              "query: the account is read-only (it may run SELECT, WITH, SHOW, "
                              "DESCRIBE and EXISTS).")
        if kind == "SHOW" and canonical.split()[1:2] == ["PROCESSLIST"]:
            raise _refused(account, "system.processes")
        if kind in ("DESCRIBE", "DESC") and "(" in _outside_literals(canonical):
            raise ServerError(READONLY, f"{account.name}: a read-only account may DESCRIBE "
                              "tables, not table functions or subqueries")
        if kind not in _TREE_KINDS:
            return
        # Without its FORMAT clause, which would apply to the EXPLAIN's own output.
        body = "\n".join(line for line in canonical.splitlines() if not line.startswith("FORMAT "))
        tree = handle.query("EXPLAIN QUERY TREE " + body, "TSVRaw", params).data.decode(
            "utf-8", "replace")
        for name in _TABLE.findall(tree):
            database, _, table = name.strip().strip("`").partition(".")
            if database.strip("`") == "system" and table.strip("`") not in \
                    SYSTEM_TABLES_FOR_READERS:
                raise _refused(account, f"system.{table}")
        for name in _TABLE_FUNCTION.findall(tree):
            if name not in TABLE_FUNCTIONS_FOR_READERS:
                raise _refused(account, f"the table function {name}()")
        for name in _FUNCTION.findall(tree):
            if name in FUNCTIONS_REFUSED_TO_READERS:
                raise _refused(account, f"the function {name}()")


def _canonical(handle: Handle, sql: bytes) -> str:
    try:
        text = sql.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServerError(62, f"The statement is not valid UTF-8 (byte {e.start}); write "
                          "binary values as escapes ('\\xFF') or send them as data with "
                          "INSERT ... FORMAT", name="SYNTAX_ERROR") from e
    literal = quote_value(text)
    out = handle.query(f"SELECT formatQuery({literal})", "TSVRaw").data
    return out.decode("utf-8", "replace")


def _refused(account: ClickHouseUser, what: str) -> ServerError:
    return ServerError(ACCESS_DENIED, f"{account.name}: Not enough privileges to read {what}: "
                       "read-only accounts read Flywheel's tables and the schema tables of "
                       "`system`. Ask an admin if you need more.")


def _outside_literals(canonical: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'", "''", canonical)


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)
