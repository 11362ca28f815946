"""`flywheel schemas`: the data contracts as JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deploy.cli import app, console

schemas_app = typer.Typer(help="Work with the event data contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the schemas into.")] = Path(
        "schemas/json"
    ),
) -> None:
    """Write a JSON Schema file per event kind (enveloped, current version)."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")
