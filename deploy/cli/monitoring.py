"""`flywheel monitor run`, `flywheel alerts list | silence | receiver`, `flywheel status`."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from deploy.cli import app, console, get_settings

monitor_app = typer.Typer(help="Drift and latency monitoring.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts: list, silence, and the Alertmanager webhook receiver.",
                         no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
app.add_typer(alerts_app, name="alerts")


@monitor_app.command("run")
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Evaluate once, print, and exit.")] = False,
) -> None:
    """Evaluate every drift detector on a schedule; export gauges; store each evaluation."""
    from monitoring.runner import MonitorRunner

    settings = get_settings(ctx)
    runner = MonitorRunner(settings)
    try:
        if once:
            with console.status("evaluating drift"):
                evaluation = runner.evaluate_once()
            table = Table("detector", "tenant", "version", "status", "statistic", "threshold",
                          "detail")
            for r in evaluation.results:
                table.add_row(r.detector, r.labels.get("tenant", ""),
                              r.labels.get("model_version", ""), r.status, f"{r.statistic:.4g}",
                              f"{r.threshold:.4g}", r.detail)
            console.print(f"reference {evaluation.reference.source}: "
                          f"{evaluation.reference.start:%Y-%m-%d %H:%M} - "
                          f"{evaluation.reference.end:%Y-%m-%d %H:%M}")
            console.print(table)
            return
        runner.serve_metrics()
        monitoring = settings.monitoring
        console.print(f"monitoring every {monitoring.evaluation_interval_s:g} s; metrics on "
                      f"http://{monitoring.metrics_host}:{monitoring.metrics_port}/metrics")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            runner.run(stop=stop)
        except KeyboardInterrupt:
            stop.set()
    finally:
        runner.close()


@alerts_app.command("list")
def list_alerts(
    ctx: typer.Context,
    silenced: Annotated[bool, typer.Option(help="Include silenced and inhibited alerts.")] = False,
) -> None:
    """Alerts Alertmanager holds now, most severe first."""
    from monitoring.alertmanager import AlertmanagerClient

    alerts = AlertmanagerClient(get_settings(ctx).alertmanager.http_url).alerts(
        include_silenced=silenced)
    if not alerts:
        console.print("no active alerts")
        return
    table = Table("severity", "alert", "state", "since", "summary", "labels")
    for a in alerts:
        extra = {k: v for k, v in a.labels.items() if k not in {"alertname", "severity"}}
        table.add_row(a.severity, a.name, a.state, a.starts_at[:19], a.summary,
                      " ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    console.print(table)


@alerts_app.command("silence")
def silence(
    ctx: typer.Context,
    matchers: Annotated[list[str], typer.Argument(help="label=value, e.g. alertname=X.")],
    duration_h: Annotated[float, typer.Option("--duration-h", min=0.01)] = 2.0,
    comment: Annotated[str, typer.Option(help="Why; shown to the next on-call.")] = "",
    author: Annotated[str, typer.Option(help="Who silences.")] = "flywheel-cli",
) -> None:
    """Silence matching alerts in Alertmanager for a while."""
    from monitoring.alertmanager import AlertmanagerClient, parse_matchers

    client = AlertmanagerClient(get_settings(ctx).alertmanager.http_url)
    silence_id = client.silence(parse_matchers(matchers), duration_s=duration_h * 3600,
                                created_by=author, comment=comment or "silenced from the CLI")
    console.print(f"silence {silence_id} for {duration_h:g} h")


@alerts_app.command("receiver")
def receiver(ctx: typer.Context) -> None:
    """Serve the Alertmanager webhook: store alerts, announce them, run automatic actions."""
    from monitoring.receiver import build_receiver_app, serve_receiver
    from monitoring.wiring import alert_sink, dispatcher

    settings = get_settings(ctx)
    sink = alert_sink(settings)
    actions = dispatcher(settings, sink=sink)
    monitoring = settings.monitoring
    console.print(f"receiving on http://{monitoring.receiver_host}:{monitoring.receiver_port}"
                  "/alerts (point alertmanager.webhook_url there)")
    try:
        serve_receiver(build_receiver_app(sink, on_alerts=actions.handle),
                       host=monitoring.receiver_host, port=monitoring.receiver_port)
    finally:
        sink.close()


@app.command("status")
def status(ctx: typer.Context) -> None:
    """On-call view: services, consumer lag, served version, last training, firing alerts."""
    from monitoring.status import gather_status

    with console.status("gathering status"):
        s = gather_status(get_settings(ctx))
    services = Table("service", "healthy", "address", "detail", title="services")
    for row in s.services:
        services.add_row(row.name, "yes" if row.healthy else "[red]no[/]", row.address,
                         row.detail)
    console.print(services)
    if s.consumer_lag:
        console.print("consumer lag: " + ", ".join(f"{t}={n}" for t, n in s.consumer_lag.items()))
    console.print(f"serving: {_serving_line(s.serving)}")
    console.print(f"last training: {s.last_training or 'none'}")
    console.print(f"last evaluation: {s.last_evaluation or 'none'}")
    if s.alerts:
        alerts = Table("severity", "alert", "since", "summary", title="firing alerts")
        for a in s.alerts:
            alerts.add_row(a.severity, a.name, a.starts_at[:19], a.summary)
        console.print(alerts)
    else:
        console.print("no firing alerts")
    for problem in s.problems:
        console.print(f"[yellow]{problem}[/]")


def _serving_line(serving: dict[str, Any] | None) -> str:
    """`serving v3 (adapter_id a1, updated_at ...)`, or `not serving (v3): <why>` in red."""
    if not serving:
        return "no version marked serving"
    version = serving.get("version")
    what = f"v{version}" if version else "no version"
    if serving.get("state") == "not serving":
        return f"[bold red]not serving[/] ({what}): {escape(str(serving.get('reason', '')))}"
    details = ", ".join(f"{k} {serving[k]}" for k in ("adapter_id", "updated_at")
                        if serving.get(k))
    return f"serving {what}" + (f" ({details})" if details else "")
