"""The one settings object of Flywheel.

Built once at an entry point (the CLI, a service's `main`, a test fixture) from, in
order of precedence: explicit arguments, `FLYWHEEL_*` environment variables (nested
fields with `__`, e.g. `FLYWHEEL_KAFKA__PORT=19092`), a TOML file, and the defaults
below. It is then passed down; no other module reads the environment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from deploy.settings._base import Port
from deploy.settings.components import (
    DemoSettings,
    InferenceSettings,
    MonitoringSettings,
    StreamsSettings,
    TrainerSettings,
)
from deploy.settings.services import (
    AlertmanagerSettings,
    ClickHouseSettings,
    ClickHouseUser,
    IngestSettings,
    KafkaSettings,
    MetricsSettings,
    ModelSettings,
    ProducerSettings,
    PrometheusSettings,
    TritonSettings,
    WarehouseSettings,
)

ENV_PREFIX = "FLYWHEEL_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_CONFIG_FILE = Path("flywheel.toml")


class FlywheelSettings(BaseSettings):
    """Every address, path, port, credential and threshold Flywheel uses."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        toml_file=DEFAULT_CONFIG_FILE,
    )

    state_dir: Path = Field(
        default=Path(".flywheel"), description="Data, logs and pid files of the local stack."
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "flywheel",
        description="Downloads shared between checkouts (Kafka jars).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    startup_timeout_s: float = Field(default=120.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)

    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    ingest: IngestSettings = IngestSettings()
    triton: TritonSettings = TritonSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    metrics: MetricsSettings = MetricsSettings()
    model: ModelSettings = ModelSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    inference: InferenceSettings = InferenceSettings()
    streams: StreamsSettings = StreamsSettings()
    trainer: TrainerSettings = TrainerSettings()
    demo: DemoSettings = DemoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    def kafka_jars_dir(self) -> Path:
        return (self.kafka.jars_dir or self.cache_dir / f"kafka-{self.kafka.version}").expanduser()

    def base_model_path(self) -> Path:
        return (self.model.base_model_path or self.cache_dir / "base-model").expanduser()

    def triton_model_repository(self) -> Path:
        path = self.triton.model_repository or self.state_path / "triton" / "models"
        return path.expanduser().resolve()


def load_settings(config_file: Path | None = None, **overrides: Any) -> FlywheelSettings:
    """Build the settings from the environment, a TOML file and explicit overrides.

    Raises:
        ConfigError: a setting is malformed; the message names it and the variable that sets it.
    """
    from pydantic import ValidationError

    from deploy.errors import ConfigError

    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist; pass an existing TOML file")
    try:
        if config_file is not None:
            bound = type(
                "FlywheelSettingsFromFile",
                (FlywheelSettings,),
                {"model_config": {**FlywheelSettings.model_config, "toml_file": config_file}},
            )
            settings: FlywheelSettings = bound(**overrides)
            return settings
        return FlywheelSettings(**overrides)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from e


def env_var_for(location: tuple[str | int, ...]) -> str:
    """The variable that sets a field: ("kafka", "port") -> FLYWHEEL_KAFKA__PORT."""
    parts = [str(p).upper() for p in location if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def _explain(error: Any) -> str:
    lines = ["invalid settings:"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        lines.append(
            f"  {field}: {item['msg']} (set it with {env_var_for(item['loc'])} "
            f"or [{'.'.join(str(p) for p in item['loc'][:-1]) or 'top level'}] in flywheel.toml)"
        )
    return "\n".join(lines)


def masked_dump(settings: FlywheelSettings) -> dict[str, Any]:
    """Settings as plain data with every secret replaced by asterisks."""
    masked: dict[str, Any] = _plain(
        settings.model_dump(mode="python"),
        secret=lambda v: "********" if v.get_secret_value() else "",
    )
    return masked


#: The environment variable through which a parent hands its settings to a child process.
SETTINGS_ENV = "FLYWHEEL_SETTINGS_JSON"


def settings_to_json(settings: FlywheelSettings) -> str:
    """The settings as JSON for a child process: secrets revealed, state_dir absolute.

    The child's environment is readable only by the same user, like the state folder.
    """
    data = _plain(settings.model_dump(mode="python"), secret=lambda v: v.get_secret_value())
    data["state_dir"] = str(settings.state_path)
    return json.dumps(data)


def settings_from_json(raw: str) -> FlywheelSettings:
    """Rebuild the exact settings `settings_to_json` wrote.

    Raises:
        ConfigError: the JSON does not describe valid settings.
    """
    return load_settings(**json.loads(raw))


def _plain(value: Any, *, secret: Callable[[SecretStr], Any]) -> Any:
    if isinstance(value, SecretStr):
        return secret(value)
    if isinstance(value, dict):
        return {k: _plain(v, secret=secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, secret=secret) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "SETTINGS_ENV",
    "AlertmanagerSettings",
    "ClickHouseSettings",
    "ClickHouseUser",
    "DemoSettings",
    "FlywheelSettings",
    "InferenceSettings",
    "IngestSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ModelSettings",
    "MonitoringSettings",
    "Port",
    "ProducerSettings",
    "PrometheusSettings",
    "StreamsSettings",
    "TrainerSettings",
    "TritonSettings",
    "WarehouseSettings",
    "env_var_for",
    "load_settings",
    "masked_dump",
    "settings_from_json",
    "settings_to_json",
]
