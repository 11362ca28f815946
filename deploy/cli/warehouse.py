"""`flywheel warehouse`: the ClickHouse tables and views analysts query."""

from __future__ import annotations

import typer
from rich.table import Table

from deploy.cli import app, console, get_settings

warehouse_app = typer.Typer(help="Manage the ClickHouse warehouse.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")


@warehouse_app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Apply the migrations not applied yet, in order (safe to run any number of times)."""
    from deploy.clickhouse.client import get_client
    from deploy.warehouse import migrate as apply_migrations

    settings = get_settings(ctx)
    client = get_client(settings, database="default")
    try:
        report = apply_migrations(
            client, settings,
            progress=lambda m: console.log(f"applied {m.version:04d}_{m.name}"),
        )
    finally:
        client.close()
    table = Table(title=f"warehouse {settings.clickhouse.database}")
    for column in ("migration", "state"):
        table.add_column(column)
    for m in report.already_applied:
        table.add_row(f"{m.version:04d}_{m.name}", "already applied")
    for m in report.applied:
        table.add_row(f"{m.version:04d}_{m.name}", "[green]applied now[/]")
    console.print(table)
