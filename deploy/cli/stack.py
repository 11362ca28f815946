"""`flywheel stack`: run the local stack of real services."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli import app, console, get_settings
from deploy.local.supervisor import ServiceStatus, Supervisor, tail

stack_app = typer.Typer(help="Run the local stack of real services.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

ServiceNames = Annotated[
    list[str] | None, typer.Argument(help="Services to act on (default: all).", show_default=False)
]


def _supervisor(ctx: typer.Context) -> Supervisor:
    from deploy.local.stack import build_stack

    return build_stack(get_settings(ctx))


@stack_app.command("up")
def up(ctx: typer.Context, services: ServiceNames = None) -> None:
    """Start what is not running and wait until every service is healthy."""
    supervisor = _supervisor(ctx)
    started = time.monotonic()
    with console.status("starting the stack") as status:

        def progress(name: str, message: str) -> None:
            status.update(f"[bold]{name}[/]: {message}")
            if message in {"healthy", "already running"}:
                console.log(f"{name}: {message}")

        rows = supervisor.up(services, progress=progress)
    render_status(rows)
    console.print(f"stack up in {time.monotonic() - started:.1f} s")


@stack_app.command("prepare")
def prepare(ctx: typer.Context, services: ServiceNames = None) -> None:
    """Install what the local services need (jars, environments, configs) without starting."""
    supervisor = _supervisor(ctx)
    with console.status("preparing the stack") as status:
        supervisor.prepare(
            services, progress=lambda name, msg: status.update(f"[bold]{name}[/]: {msg}")
        )
    console.print("stack prepared")


@stack_app.command("down")
def down(ctx: typer.Context, services: ServiceNames = None) -> None:
    """Stop what `up` started (Flywheel's own processes first); no process is left behind."""
    from deploy.local.stack import build_apps_supervisor

    if not services:
        build_apps_supervisor(get_settings(ctx)).down(
            progress=lambda name, msg: console.log(f"{name}: {msg}")
        )
    supervisor = _supervisor(ctx)
    supervisor.down(services, progress=lambda name, msg: console.log(f"{name}: {msg}"))


@stack_app.command("status")
def status(ctx: typer.Context) -> None:
    """Show each service: pid, address, health and detail. Exits 1 if any is unhealthy."""
    rows = _supervisor(ctx).status()
    render_status(rows)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@stack_app.command("logs")
def logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Service whose log to show.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the end of a service's log."""
    _print_log(_supervisor(ctx).get(service).log_path, lines, follow)


def _print_log(path: Path, lines: int, follow: bool) -> None:
    console.print(tail(path, lines), markup=False, highlight=False)
    if follow:
        with path.open() as f:
            f.seek(0, 2)
            try:
                while True:
                    line = f.readline()
                    if line:
                        console.print(line.rstrip("\n"), markup=False, highlight=False)
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                pass

def render_status(rows: list[ServiceStatus]) -> None:
    table = Table(title="Flywheel stack")
    for column in ("service", "pid", "address", "healthy", "detail"):
        table.add_column(column)
    for row in rows:
        pid = "external" if row.external else (str(row.pid) if row.pid else "-")
        healthy = "[green]yes[/]" if row.healthy else "[red]no[/]"
        table.add_row(row.name, pid, row.address, healthy, row.detail)
    console.print(table)


apps_app = typer.Typer(
    help="Run Flywheel's own processes (stream worker, ingest, gateway, controller, monitor, "
    "alert receiver, trainer watch) under the same supervisor.",
    no_args_is_help=True,
)
app.add_typer(apps_app, name="apps")


def _apps(ctx: typer.Context) -> Supervisor:
    from deploy.local.stack import build_apps_supervisor

    return build_apps_supervisor(get_settings(ctx))


@apps_app.command("up")
def apps_up(ctx: typer.Context, names: ServiceNames = None) -> None:
    """Start Flywheel's processes (the stack must be up) and wait until each answers."""
    with console.status("starting Flywheel's processes") as status:
        rows = _apps(ctx).up(
            names, progress=lambda name, msg: status.update(f"[bold]{name}[/]: {msg}")
        )
    render_status(rows)


@apps_app.command("down")
def apps_down(ctx: typer.Context, names: ServiceNames = None) -> None:
    """Stop Flywheel's processes."""
    _apps(ctx).down(names, progress=lambda name, msg: console.log(f"{name}: {msg}"))


@apps_app.command("status")
def apps_status(ctx: typer.Context) -> None:
    """Show each Flywheel process: pid, address, health."""
    render_status(_apps(ctx).status())


@apps_app.command("logs")
def apps_logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Process whose log to show, e.g. "
                                                 "streams-worker.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the end of a Flywheel process's log."""
    _print_log(_apps(ctx).get(service).log_path, lines, follow)
