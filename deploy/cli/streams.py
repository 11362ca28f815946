"""`flywheel streams worker`: run one stream worker; start several to share the partitions."""

from __future__ import annotations

from typing import Annotated

import typer

from deploy.cli import app, console, get_settings

streams_app = typer.Typer(help="Stream processing: clean, filter, join, land.",
                          no_args_is_help=True)
app.add_typer(streams_app, name="streams")


@streams_app.command("worker")
def worker(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: "
                                              "streams.consumer_group).")] = None,
    metrics: Annotated[bool, typer.Option(help="Serve /metrics on metrics.port.")] = True,
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Serve /metrics on this port instead of metrics.port (0 = off); "
        "give each worker on one host its own.")] = None,
) -> None:
    """Consume chat and feedback events until interrupted; Ctrl-C flushes and commits."""
    import logging

    from streams.worker import run_worker

    settings = get_settings(ctx)
    logging.getLogger().setLevel(settings.log_level)
    port = (settings.metrics.port if metrics_port is None else metrics_port) if metrics else 0
    console.print(f"stream worker: Kafka {settings.kafka.bootstrap} -> ClickHouse "
                  f"{settings.clickhouse.http_url}, group "
                  f"{group or settings.streams.consumer_group}"
                  + (f", metrics on :{port}" if port else ", no metrics"))
    run_worker(settings, group_id=group, serve_metrics=metrics, metrics_port=port)
