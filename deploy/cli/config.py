"""`flywheel config`: inspect the settings in effect."""

from __future__ import annotations

import json

import typer

from deploy.cli import app, console, get_settings
from deploy.settings import masked_dump

config_app = typer.Typer(help="Inspect the settings in effect.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of TOML-like text."),
) -> None:
    """Print every setting, with secrets masked."""
    data = masked_dump(get_settings(ctx))
    if as_json:
        console.print_json(json.dumps(data))
        return
    _print_section(data, prefix="")


def _print_section(data: dict[str, object], prefix: str) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix:
        console.print(f"\n[{prefix}]", style="bold", markup=False, highlight=False)
    for key, value in scalars.items():
        console.print(f"{key} = {json.dumps(value)}", markup=False, highlight=False)
    for key, value in sections.items():
        _print_section(value, f"{prefix}.{key}" if prefix else key)
