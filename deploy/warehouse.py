"""Apply the warehouse migrations (`schemas/warehouse/*.sql`) in order, exactly once each.

Each file is a template with `${database}` and retention placeholders from settings. Every
statement is idempotent (`IF NOT EXISTS`), and each applied file is recorded with its
checksum in `<database>.schema_migrations`, so running `migrate` twice changes nothing.
Editing a file after it was applied is refused: add a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any

from deploy.errors import StackError

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MigrationError(StackError):
    """A migration could not be applied, or an applied one was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    """One migration file, rendered for the settings in effect."""

    version: int
    name: str
    checksum: str
    statements: tuple[str, ...]


@dataclass
class MigrationReport:
    """What `migrate` did."""

    applied: list[Migration] = field(default_factory=list)
    already_applied: list[Migration] = field(default_factory=list)


def load_migrations(settings: FlywheelSettings) -> list[Migration]:
    """Every migration shipped with Flywheel, in version order.

    Raises:
        MigrationError: a file is misnamed or two share a version number.
    """
    database = settings.clickhouse.database
    if not _IDENTIFIER.match(database):
        raise MigrationError(
            f"clickhouse.database {database!r} is not a plain identifier; "
            "use letters, digits and underscores (FLYWHEEL_CLICKHOUSE__DATABASE)"
        )
    values = {"database": database, **settings.warehouse.model_dump()}
    migrations: dict[int, Migration] = {}
    for entry in sorted(resources.files("schemas.warehouse").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name} must be named NNNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"two migration files have version {version}")
        template = entry.read_text()
        rendered = Template(template).substitute(values)
        migrations[version] = Migration(
            version=version,
            name=match.group(2),
            checksum=hashlib.sha256(template.encode()).hexdigest(),
            statements=tuple(split_statements(rendered)),
        )
    return [migrations[v] for v in sorted(migrations)]


def split_statements(sql: str) -> list[str]:
    """Split a script on `;` at line ends, dropping `--` comment lines."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [s.strip() for s in statements if s.strip()]


def migrate(
    client: Any,
    settings: FlywheelSettings,
    *,
    progress: Callable[[Migration], None] | None = None,
) -> MigrationReport:
    """Apply every migration not yet applied, in order; idempotent.

    Args:
        client: a clickhouse-connect client with write access.

    Raises:
        MigrationError: a statement failed (its migration is not recorded, so the next run
            retries it) or an applied migration's file changed since.
    """
    database = settings.clickhouse.database
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    applied = {
        int(row[0]): str(row[1])
        for row in client.query(
            f"SELECT version, checksum FROM {database}.schema_migrations FINAL"
        ).result_rows
    }
    report = MigrationReport()
    for migration in load_migrations(settings):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; never edit an applied migration, add a new one instead"
                )
            report.already_applied.append(migration)
            continue
        for statement in migration.statements:
            try:
                client.command(statement)
            except Exception as e:  # clickhouse-connect raises several error types
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {e}"
                ) from e
        client.insert(
            f"{database}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        logger.info("applied migration %04d_%s", migration.version, migration.name)
        report.applied.append(migration)
        if progress:
            progress(migration)
    return report
