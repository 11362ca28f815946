"""`flywheel demo`: the main job on the embedded default; `flywheel stack smoke`."""

from __future__ import annotations

import signal
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from deploy.cli import app, console, get_settings
from deploy.cli.stack import render_status, stack_app


class RichDemoUI:
    """A DemoUI drawn with rich: phases as rows, long work as bars, one live status line."""

    def __init__(self) -> None:
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                             console=console)
        self._line = Text("")
        self._phase: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}

    def renderable(self) -> Any:
        from rich.console import Group

        return Group(self.bars, self._line)

    def phase(self, name: str) -> None:
        self._finish_phase()
        self._phase = self.bars.add_task(name, total=1)

    def progress(self, what: str, done: int, total: int) -> None:
        task = self._tasks.get(what)
        if task is None:
            task = self._tasks[what] = self.bars.add_task(f"  {what}", total=total)
        self.bars.update(task, completed=done, total=total)

    def status(self, line: str) -> None:
        self._line.plain = line

    def note(self, line: str) -> None:
        self.bars.console.print(f"[green]•[/] {line}")

    def done(self) -> None:
        self._finish_phase()
        self._line.plain = ""

    def _finish_phase(self) -> None:
        if self._phase is not None:
            self.bars.update(self._phase, completed=1)


@app.command("demo")
def demo(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(
        "--quick", help="The short variant (smaller model, shorter windows), as CI runs it.")
    ] = False,
    budget_s: Annotated[float | None, typer.Option(
        "--budget-s", help="Time budget in seconds (default: demo.time_budget_s).")] = None,
    keep_running: Annotated[bool | None, typer.Option(
        "--keep-running/--down",
        help="Leave the stack and services up afterwards (default: demo.keep_running).")
    ] = None,
) -> None:
    """Run the whole loop: traffic, curation, training, hot swaps, drift, and a report."""
    from deploy.clickhouse.client import get_client
    from deploy.demo.plan import make_plan
    from deploy.demo.report import summary_rows, write_report
    from deploy.demo.run import DemoRunner

    settings = get_settings(ctx)
    plan = make_plan(settings, quick=quick, time_budget_s=budget_s)
    ui = RichDemoUI()
    runner = DemoRunner(settings, plan, ui=ui)
    keep = settings.demo.keep_running if keep_running is None else keep_running
    console.print(f"[bold]Flywheel demo[/] {plan.model}: {'quick' if quick else 'full'} run, "
                  f"budget {plan.time_budget_s:.0f} s. Ctrl-C stops it and every process.")

    def on_interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_interrupt)
    started = time.monotonic()
    try:
        with Live(ui.renderable(), console=console, refresh_per_second=4, transient=False):
            outcome = runner.run()
            ui.done()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: stopping the traffic, services and stack")
        runner.stop_everything()
        raise typer.Exit(130) from None
    except Exception:
        if not keep:
            runner.stop_everything()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    folder = settings.state_path / "demo" / plan.run_id
    client = get_client(runner.settings, readonly=True)
    try:
        outcome.report_path = write_report(
            client, outcome, folder=folder, database=runner.settings.clickhouse.database,
            config_path=runner.config_path())
    finally:
        client.close()
    table = Table(title=f"Flywheel demo: {time.monotonic() - started:.0f} s", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary_rows(outcome):
        table.add_row(key, value)
    console.print(table)
    console.print(f"report: {outcome.report_path}")
    if keep:
        console.print(f"The stack and services keep running. On-call's view of this run: "
                      f"`flywheel --config {runner.config_path()} status`; "
                      "`flywheel apps down && flywheel stack down` stops everything.")
    else:
        runner.stop_everything()
    if not outcome.passed:
        raise typer.Exit(1)


@stack_app.command("smoke")
def smoke(ctx: typer.Context) -> None:
    """Bring the stack up and ask each real service one question."""
    from deploy.clickhouse.client import get_client
    from deploy.local.stack import build_stack
    from deploy.smoke import run_smoke
    from deploy.warehouse import migrate
    from streams.topics import ensure_topics

    settings = get_settings(ctx)
    supervisor = build_stack(settings)
    with console.status("bringing the stack up") as status:
        rows = supervisor.up(
            progress=lambda name, msg: status.update(f"[bold]{name}[/]: {msg}"))
        client = get_client(settings, database="default")
        try:
            migrate(client, settings)
        finally:
            client.close()
        ensure_topics(settings)
        checks = run_smoke(settings)
    render_status(rows)
    table = Table(title="Smoke run: each service answers")
    for column in ("service", "check", "ok", "answer", "ms"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.service, check.what, "[green]yes[/]" if check.ok else "[red]no[/]",
                      check.answer, f"{check.elapsed_ms:.0f}")
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
