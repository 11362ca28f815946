"""`flywheel ingest`: the HTTP ingest service for backends that cannot speak Kafka."""

from __future__ import annotations

import typer

from deploy.cli import app, console, get_settings

ingest_app = typer.Typer(help="HTTP ingest of chat and feedback events.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve the ingest API on ingest.host:ingest.port until interrupted (OpenAPI at /docs)."""
    import uvicorn

    from streams.ingest import create_app

    settings = get_settings(ctx)
    options = settings.ingest
    if not options.api_keys:
        console.print("[yellow]ingest.api_keys is empty: the API accepts unauthenticated "
                      "requests[/]")
    console.print(f"ingest listening on http://{options.host}:{options.port} "
                  f"(Kafka {settings.kafka.bootstrap})")
    uvicorn.run(create_app(settings), host=options.host, port=options.port,
                log_level=settings.log_level.lower(), access_log=False)
