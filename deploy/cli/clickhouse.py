"""`flywheel clickhouse serve`, `flywheel clickhouse password` and `flywheel sql`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from deploy.cli import app, console, err_console, get_settings

clickhouse_app = typer.Typer(help="The embedded ClickHouse (chDB) server.", no_args_is_help=True)
app.add_typer(clickhouse_app, name="clickhouse")


@clickhouse_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Run the embedded ClickHouse HTTP server in the foreground (Ctrl-C stops it)."""
    import logging

    from deploy.clickhouse.server import serve as run_server

    settings = get_settings(ctx)
    logging.getLogger().setLevel(settings.log_level)
    console.print(f"ClickHouse HTTP interface on {settings.clickhouse.http_url}, data under "
                  f"{settings.state_path / 'clickhouse'}")
    run_server(settings)


@clickhouse_app.command("password")
def password(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The account, e.g. analyst.")] = "analyst",
) -> None:
    """Print the password of an embedded-server account (generated at first start)."""
    from deploy.clickhouse.passwords import account_password, password_file

    settings = get_settings(ctx)
    if settings.clickhouse.external:
        err_console.print("clickhouse.url is set: the accounts are your ClickHouse server's own.")
        raise typer.Exit(1)
    for account in settings.clickhouse.users:
        if account.name == user:
            print(account_password(settings, account))
            return
    names = ", ".join(u.name for u in settings.clickhouse.users)
    err_console.print(f"No account {escape(user)!r} in clickhouse.users (accounts: {names}); "
                      f"passwords are kept in {password_file(settings.state_path, user).parent}")
    raise typer.Exit(1)


@app.command("sql")
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="The SQL to run.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="A ClickHouse output format (e.g. CSV, JSONEachRow) "
                     "printed as the server sends it; default: a table."),
    ] = None,
    readonly: Annotated[bool, typer.Option("--readonly", help="Refuse writes.")] = False,
) -> None:
    """Run one SQL statement on Flywheel's ClickHouse and show the result."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from deploy.clickhouse.client import get_client

    try:
        with get_client(get_settings(ctx), readonly=readonly) as client:
            if fmt:
                console.print(client.raw_query(query, fmt=fmt).decode(errors="replace"), end="",
                              markup=False, highlight=False)
                return
            result = client.query(query)
    except ClickHouseError as e:
        err_console.print(f"[bold red]ClickHouse error:[/] {escape(str(e))}")
        raise typer.Exit(1) from e
    if not result.column_names:
        console.print(f"ok ({result.summary.get('written_rows', 0)} rows written)")
        return
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name)
    for row in result.result_rows:
        table.add_row(*(escape(str(value)) for value in row))
    console.print(table)
    console.print(f"{len(result.result_rows)} rows")
