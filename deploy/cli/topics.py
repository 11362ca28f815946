"""`flywheel topics`: create and inspect the Kafka topics of the registry (streams/topics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deploy.cli import app, console, get_settings

if TYPE_CHECKING:
    from streams.topics import TopicState

topics_app = typer.Typer(help="Create and inspect Flywheel's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

TimeoutOption = Annotated[
    float, typer.Option("--timeout-s", help="Seconds to wait for Kafka to answer.")
]


@topics_app.command("ensure")
def ensure(ctx: typer.Context, timeout_s: TimeoutOption = 30.0) -> None:
    """Create every registered topic that is missing; existing ones are left alone."""
    from streams.topics import ensure_topics

    settings = get_settings(ctx)
    with console.status(f"ensuring topics on {settings.kafka.bootstrap}"):
        states = ensure_topics(settings, timeout_s=timeout_s)
    _render(states, title=f"Kafka topics on {settings.kafka.bootstrap}", present="existed")
    created = sum(s.created for s in states)
    console.print(f"{created} created, {len(states) - created} existed")


@topics_app.command("list")
def list_topics(ctx: typer.Context, timeout_s: TimeoutOption = 10.0) -> None:
    """Show the registered topics and whether the broker has them. Exits 1 if any is missing."""
    from streams.topics import describe_topics

    settings = get_settings(ctx)
    states = describe_topics(settings, timeout_s=timeout_s)
    _render(states, title=f"Kafka topics on {settings.kafka.bootstrap}", present="exists")
    if not all(s.exists for s in states):
        console.print("some topics are missing: run `flywheel topics ensure`")
        raise typer.Exit(1)


def _render(states: list[TopicState], *, title: str, present: str) -> None:
    table = Table(title=title)
    table.add_column("topic", no_wrap=True)
    table.add_column("key", min_width=12)
    for column in ("partitions", "retention", "cleanup"):
        table.add_column(column)
    table.add_column("state", no_wrap=True)
    for state in states:
        spec = state.spec
        if state.created:
            status = "[green]created[/]"
        elif state.exists:
            status = present
        else:
            status = "[red]missing[/]"
        partitions = str(spec.partitions)
        if state.partitions is not None and state.partitions != spec.partitions:
            partitions = f"{state.partitions} (registry: {spec.partitions})"
        table.add_row(
            spec.name, spec.key, partitions, _retention(spec.retention_ms),
            spec.cleanup_policy, status,
        )
    console.print(table)


def _retention(retention_ms: int | None) -> str:
    if retention_ms is None:
        return "forever"
    hours = retention_ms / 3_600_000
    if hours >= 24 and hours % 24 == 0:
        return f"{hours / 24:g} d"
    if hours >= 1:
        return f"{hours:g} h"
    return f"{retention_ms / 1000:g} s"
