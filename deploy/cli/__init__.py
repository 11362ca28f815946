"""The `flywheel` command line: parse, build settings, call the library, render."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from deploy.errors import ConfigError
from deploy.settings import SETTINGS_ENV, FlywheelSettings, load_settings, settings_from_json
from schemas.errors import FlywheelError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="flywheel",
    help="Continuous learning for chat models: Kafka -> streams -> ClickHouse -> LoRA -> Triton.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (default: ./flywheel.toml)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    ctx.obj = {"config": config}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # librdkafka warns about transient states it retries on its own (a coordinator
        # still loading right after a broker start); only its errors need a person.
        logging.getLogger("librdkafka").setLevel(logging.ERROR)


def get_settings(ctx: typer.Context) -> FlywheelSettings:
    """The settings for this invocation, built once from --config and the environment."""
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "settings" not in obj:
        # A parent Flywheel process hands its exact settings down; otherwise build them
        # from --config, flywheel.toml and FLYWHEEL_* variables. This entry point is the
        # one place that looks at the environment for it.
        handed_down = os.environ.get(SETTINGS_ENV)
        if handed_down and obj.get("config") is None:
            obj["settings"] = settings_from_json(handed_down)
        else:
            obj["settings"] = load_settings(obj.get("config"))
        root.obj = obj
    settings: FlywheelSettings = obj["settings"]
    return settings


def serve_http(
    app_: Any, *, host: str, port: int, settings: FlywheelSettings, keys_setting: str,
    has_keys: bool, banner: str,
) -> None:
    """Run one of Flywheel's FastAPI services in the foreground until interrupted."""
    import uvicorn

    if not has_keys:
        console.print(f"[yellow]{keys_setting} is empty: the API accepts unauthenticated "
                      "requests[/]")
    console.print(banner)
    uvicorn.run(app_, host=host, port=port, log_level=settings.log_level.lower(),
                access_log=False)


def _register() -> None:
    # Each command group lives in its own module and adds itself to `app`.
    from deploy.cli import (  # noqa: F401
        clickhouse,
        config,
        demo,
        inference,
        ingest,
        monitoring,
        schemas,
        stack,
        streams,
        topics,
        trainer,
        warehouse,
    )


_register()


def main() -> None:
    """Entry point of the `flywheel` console script."""
    try:
        app()
    except ConfigError as e:
        err_console.print(f"[bold red]configuration error:[/] {escape(str(e))}")
        sys.exit(2)
    except FlywheelError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(1)
