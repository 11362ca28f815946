"""Handing the settings object to the server process (see `deploy.settings`)."""

from deploy.settings import SETTINGS_ENV, settings_from_json, settings_to_json

__all__ = ["SETTINGS_ENV", "settings_from_json", "settings_to_json"]
