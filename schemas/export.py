"""JSON Schema of every event contract, for teams producing from other languages."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.envelope import KINDS, Envelope


def json_schemas() -> dict[str, dict[str, object]]:
    """kind -> JSON Schema of the enveloped event at its current version."""
    schemas: dict[str, dict[str, object]] = {}
    for kind, (model, version) in KINDS.items():
        schema = Envelope[model].model_json_schema(mode="validation")  # type: ignore[valid-type]
        schema["title"] = f"{model.__name__} v{version}"
        properties = schema.get("properties")
        if isinstance(properties, dict):
            properties["kind"] = {"const": kind, "type": "string"}
            properties["schema_version"] = {"const": version, "type": "integer"}
        schemas[kind] = schema
    return schemas


def export_json_schemas(directory: Path) -> list[Path]:
    """Write `<kind>.v<version>.schema.json` for every contract; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, schema in json_schemas().items():
        version = KINDS[kind][1]
        path = directory / f"{kind}.v{version}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
