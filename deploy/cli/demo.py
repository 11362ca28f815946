"""`flywheel demo`: the main job on the embedded default."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from deploy.cli import app, console, get_settings
from deploy.cli.stack import render_status


@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """Bring the local stack up and show each real service answering."""
    from deploy.clickhouse.client import get_client
    from deploy.local.stack import build_stack
    from deploy.smoke import run_smoke
    from deploy.warehouse import migrate
    from streams.topics import ensure_topics

    settings = get_settings(ctx)
    started = time.monotonic()
    supervisor = build_stack(settings)
    with console.status("bringing the stack up") as status:
        rows = supervisor.up(
            progress=lambda name, msg: status.update(f"[bold]{name}[/]: {msg}")
        )
        status.update("applying warehouse migrations")
        client = get_client(settings, database="default")
        try:
            migrate(client, settings)
        finally:
            client.close()
        status.update("creating topics")
        ensure_topics(settings)
        status.update("asking each service a question")
        checks = run_smoke(settings)
    render_status(rows)
    table = Table(title="Smoke run: each service answers")
    for column in ("service", "check", "ok", "answer", "ms"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.service, check.what, "[green]yes[/]" if check.ok else "[red]no[/]",
                      check.answer, f"{check.elapsed_ms:.0f}")
    console.print(table)
    console.print(
        f"done in {time.monotonic() - started:.1f} s. The stack keeps running: "
        "`flywheel stack status`, `flywheel stack down`."
    )
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
