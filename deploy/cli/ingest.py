"""`flywheel ingest`: the HTTP ingest service for backends that cannot speak Kafka."""

from __future__ import annotations

import typer

from deploy.cli import app, get_settings, serve_http

ingest_app = typer.Typer(help="HTTP ingest of chat and feedback events.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve the ingest API on ingest.host:ingest.port until interrupted (OpenAPI at /docs)."""
    from streams.ingest import create_app

    settings = get_settings(ctx)
    options = settings.ingest
    serve_http(
        create_app(settings), host=options.host, port=options.port, settings=settings,
        keys_setting="ingest.api_keys", has_keys=bool(options.api_keys),
        banner=f"ingest listening on http://{options.host}:{options.port} "
        f"(Kafka {settings.kafka.bootstrap})",
    )
