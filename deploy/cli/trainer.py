"""`flywheel trainer`: bootstrap the embedded base, train on windows, watch for new ones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy.cli import app, console, get_settings

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from trainer.pipeline import RunReport

trainer_app = typer.Typer(help="Fine-tune LoRA adapters on curated windows.",
                          no_args_is_help=True)
app.add_typer(trainer_app, name="trainer")


@contextmanager
def _progress(*, enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    bars = Progress(TextColumn("{task.description:<14}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


@trainer_app.command("bootstrap")
def bootstrap(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny model in seconds (tests).")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the tokenizer and pre-training.")] = 0,
    path: Annotated[Path | None, typer.Option(help="Where to save (default: the setting).")]
    = None,
) -> None:
    """Build the embedded GPT-2-style base model from chatterbot-corpus (cached)."""
    from trainer.bootstrap import BootstrapConfig
    from trainer.bootstrap import bootstrap as build

    settings = get_settings(ctx)
    target = path or settings.base_model_path()
    config = BootstrapConfig.quick(seed=seed) if quick else BootstrapConfig(seed=seed)
    with _progress() as progress:
        result = build(target, config=config, force=force, progress=progress)
    state = "reused" if result.reused else f"built in {result.seconds:.0f} s"
    console.print(f"base model at {result.path} ({state}): {result.parameters:,} parameters, "
                  f"held-out perplexity {result.heldout_perplexity:.1f}")


def _parse(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@trainer_app.command("run")
def run(
    ctx: typer.Context,
    # --window-start/--window-end: torchrun's parser would take --start for --start-method.
    start: Annotated[str | None, typer.Option(
        "--start", "--window-start", help="Window start (ISO 8601, UTC).")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", "--window-end", help="Window end, exclusive.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate, never publish.")]
    = False,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1,
        help="Training processes on this machine (one per GPU): spawns torchrun. For several "
             "machines run `torchrun ... -m deploy.cli trainer run` on each instead.")] = 1,
) -> None:
    """Train once on a window (default: the latest closed one), gate, and publish."""
    from deploy.clickhouse.client import get_client
    from trainer.distributed import launched_by_torchrun, process_group
    from trainer.pipeline import preflight, run_window
    from trainer.window import latest_closed_window

    settings = get_settings(ctx)
    if start and end:
        bounds = (_parse(start), _parse(end))
    elif start or end:
        raise typer.BadParameter("give both --start and --end, or neither")
    else:
        bounds = latest_closed_window(datetime.now(UTC), window_s=settings.trainer.window_s,
                                      grace_s=settings.trainer.window_grace_s)
    preflight(settings, *bounds)
    if nproc > 1 and not launched_by_torchrun():
        raise typer.Exit(_spawn_torchrun(settings, nproc, bounds, dry_run=dry_run))
    with process_group(settings.trainer) as distributed:
        # Rank 0 reads, evaluates and publishes; the other ranks only train.
        client = get_client(settings) if distributed.is_main else None
        try:
            with _progress(enabled=distributed.is_main) as progress:
                report = run_window(client, settings, *bounds, publish_if_passed=not dry_run,
                                    progress=progress, distributed=distributed)
        finally:
            if client is not None:
                client.close()
        if distributed.is_main:
            _render(report)


def _spawn_torchrun(settings: FlywheelSettings, nproc: int, bounds: tuple[datetime, datetime],
                    *, dry_run: bool) -> int:
    """Run `trainer run` in `nproc` processes under torchrun; its exit status."""
    import os
    import subprocess
    import sys

    from deploy.settings import SETTINGS_ENV, settings_to_json

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "deploy.cli", "trainer", "run",
               "--window-start", bounds[0].isoformat(), "--window-end", bounds[1].isoformat()]
    if dry_run:
        command.append("--dry-run")
    console.print(f"starting {nproc} training processes: {' '.join(command[2:])}")
    # The children get these exact settings (and window bounds), not a fresh read.
    env = {**os.environ, SETTINGS_ENV: settings_to_json(settings)}
    return subprocess.run(command, env=env, check=False).returncode


@trainer_app.command("watch")
def watch(ctx: typer.Context) -> None:
    """Train whenever a window closes with enough new examples or drift asks for it."""
    from deploy.clickhouse.client import get_client
    from trainer.watch import watch as watch_loop

    settings = get_settings(ctx)
    stop = threading.Event()
    client = get_client(settings)
    console.print(f"watching {settings.trainer.window_s} s windows of "
                  f"{settings.clickhouse.database} for {settings.model.name} (Ctrl-C stops)")
    try:
        with _progress() as progress:
            watch_loop(client, settings, stop=stop, on_run=_render,
                       on_skip=lambda why: console.log(f"skipped: {why}"), progress=progress)
    except KeyboardInterrupt:
        stop.set()
    finally:
        client.close()


def _render(report: RunReport) -> None:
    table = Table(title=f"window {report.window.start:%Y-%m-%d %H:%M} .. "
                        f"{report.window.end:%H:%M} UTC")
    for column in ("metric", "candidate", f"served (v{report.served_version or 'base'})"):
        table.add_column(column)
    served = report.served.as_dict()
    for name, value in report.candidate.as_dict().items():
        table.add_row(name, f"{value:.3f}", f"{served.get(name, float('nan')):.3f}")
    console.print(table)
    t = report.training
    console.print(f"{report.window.snapshot.train_rows} train / "
                  f"{report.window.snapshot.validation_rows} validation rows; {t.steps} steps "
                  f"(best {t.best_step}), {t.tokens_per_s:,.0f} tokens/s"
                  + (f" on {t.world_size} processes" if t.world_size > 1 else "")
                  + (f", resumed from step {t.resumed_from_step}" if t.resumed_from_step else ""))
    if report.published:
        console.print(f"[green]published version {report.published.version}[/]: "
                      f"{report.verdict.reason}")
    else:
        console.print(f"[yellow]not published[/]: {report.verdict.reason}")
