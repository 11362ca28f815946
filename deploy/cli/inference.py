"""`flywheel inference controller`, `flywheel models ...`, `flywheel gateway serve`."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli import app, console, get_settings, serve_http

inference_app = typer.Typer(help="Serving: the hot-swap controller.", no_args_is_help=True)
models_app = typer.Typer(help="On-call: list, promote and roll back model versions.",
                         no_args_is_help=True)
gateway_app = typer.Typer(help="The OpenAI-compatible gateway.", no_args_is_help=True)
app.add_typer(inference_app, name="inference")
app.add_typer(models_app, name="models")
app.add_typer(gateway_app, name="gateway")


@inference_app.command("controller")
def controller(ctx: typer.Context) -> None:
    """Load the live version, then deploy every ModelPublished until interrupted."""
    from inference.controller import run_controller

    settings = get_settings(ctx)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"controller of {settings.model.name} on Triton {settings.triton.grpc_address}"
                  f" (Kafka {settings.kafka.bootstrap}); Ctrl-C stops it")
    run_controller(settings, stop=stop)


@models_app.command("list")
def list_versions(ctx: typer.Context) -> None:
    """Every version in the model repository, its role and its Triton state."""
    from inference.swap import SwapController

    rows = SwapController(get_settings(ctx)).status()
    table = Table("version", "adapter id", "role", "Triton", "created")
    for row in rows:
        table.add_row(*(str(row[k] or "") for k in
                        ("version", "adapter_id", "role", "triton_state", "created_at")))
    console.print(table)


@models_app.command("promote")
def promote(ctx: typer.Context,
            version: Annotated[int, typer.Argument(help="Version to make live.")]) -> None:
    """Load VERSION, warm it up, switch traffic to it and unload the old one."""
    from inference.swap import SwapController

    result = SwapController(get_settings(ctx)).deploy(version, reason="promote")
    console.print(f"version {result.live} is live (was {result.previous}); "
                  f"load {result.load_s:.1f} s, total {result.total_s:.1f} s")


@models_app.command("canary")
def canary(ctx: typer.Context,
           version: Annotated[int, typer.Argument(help="Version to try on live traffic.")],
           share: Annotated[float, typer.Option(
               help="Share of requests it gets, between 0 and 1.")] = 0.1) -> None:
    """Load VERSION beside the live one and send it SHARE of the requests.

    End it with `flywheel models promote VERSION` or `flywheel models rollback`; the
    controller does both on its own when inference.canary_share is set.
    """
    from inference.swap import SwapController

    routing = SwapController(get_settings(ctx)).start_canary(version, share=share)
    console.print(f"version {routing.canary} takes {routing.canary_share:.0%} of requests; "
                  f"version {routing.live} the rest")


@models_app.command("rollback")
def rollback(ctx: typer.Context) -> None:
    """Drop the running canary, or else swap back to the version live before."""
    from inference.swap import SwapController

    result = SwapController(get_settings(ctx)).rollback()
    console.print(f"rolled back: version {result.live} is live (was {result.previous})")


@gateway_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve the OpenAI-compatible API on inference.gateway_host:gateway_port."""
    from inference.gateway.app import create_app

    settings = get_settings(ctx)
    options = settings.inference
    serve_http(
        create_app(settings), host=options.gateway_host, port=options.gateway_port,
        settings=settings, keys_setting="inference.api_keys", has_keys=bool(options.api_keys),
        banner=f"gateway on http://{options.gateway_host}:{options.gateway_port}/v1 "
        f"-> Triton {settings.triton.grpc_address}",
    )
