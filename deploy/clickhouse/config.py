"""Handing the settings object to the server process through one environment variable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deploy.settings import FlywheelSettings

#: Holds the whole settings object as JSON, secrets included (the child's environment
#: is readable only by the same user, like the pid and log files).
SETTINGS_ENV = "FLYWHEEL_SETTINGS_JSON"


def settings_to_json(settings: FlywheelSettings) -> str:
    """The settings as JSON with secrets revealed and state_dir made absolute."""
    data = _reveal(settings.model_dump(mode="python"))
    data["state_dir"] = str(settings.state_path)
    return json.dumps(data)


def settings_from_json(raw: str) -> FlywheelSettings:
    """Rebuild the exact settings `settings_to_json` wrote.

    Raises:
        ConfigError: the JSON does not describe valid settings.
    """
    from deploy.settings import load_settings

    return load_settings(**json.loads(raw))


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
