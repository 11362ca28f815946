from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from deploy.errors import ConfigError
from deploy.settings import (
    ClickHouseSettings,
    ClickHouseUser,
    FlywheelSettings,
    env_var_for,
    load_settings,
    masked_dump,
)


def test_environment_variables_override_nested_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA__PORT", "19092")
    monkeypatch.setenv("FLYWHEEL_CLICKHOUSE__URL", "http://warehouse:8123")
    settings = load_settings()
    assert settings.kafka.port == 19092
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.clickhouse.external
    assert settings.clickhouse.http_url == "http://warehouse:8123"


def test_toml_file_sets_values_and_environment_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "flywheel.toml"
    config.write_text('state_dir = "/srv/flywheel"\n[kafka]\nport = 1111\nheap_mb = 1024\n')
    monkeypatch.setenv("FLYWHEEL_KAFKA__PORT", "2222")
    settings = load_settings(config)
    assert settings.state_dir == Path("/srv/flywheel")
    assert settings.kafka.heap_mb == 1024
    assert settings.kafka.port == 2222


def test_invalid_port_error_names_the_field_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_TRITON__HTTP_PORT", "70000")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "triton.http_port" in message
    assert "FLYWHEEL_TRITON__HTTP_PORT" in message


def test_unknown_setting_is_rejected_rather_than_ignored(tmp_path: Path) -> None:
    config = tmp_path / "flywheel.toml"
    config.write_text("[kafka]\nprot = 1\n")
    with pytest.raises(ConfigError, match="kafka.prot"):
        load_settings(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_masked_dump_hides_every_secret_but_keeps_empty_ones_visible() -> None:
    settings = FlywheelSettings(
        clickhouse=ClickHouseSettings(
            password=SecretStr("hunter2"),
            users=[ClickHouseUser(name="ops", password=SecretStr("s3cret"))],
        )
    )
    dumped = masked_dump(settings)
    text = repr(dumped)
    assert "hunter2" not in text and "s3cret" not in text
    assert dumped["clickhouse"]["password"] == "********"
    assert dumped["kafka"]["sasl_password"] is None


def test_duplicate_clickhouse_account_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="same name"):
        ClickHouseSettings(users=[ClickHouseUser(name="a"), ClickHouseUser(name="a")])


def test_env_var_for_skips_list_indices() -> None:
    assert env_var_for(("clickhouse", "users", 0, "name")) == "FLYWHEEL_CLICKHOUSE__USERS__NAME"


def test_sasl_settings_reach_the_kafka_client_config() -> None:
    settings = FlywheelSettings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": "b1:9092,b2:9092",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "fly",
                "sasl_password": "wheel",
            }
        }
    )
    config = settings.kafka.client_config()
    assert config["bootstrap.servers"] == "b1:9092,b2:9092"
    assert config["sasl.password"] == "wheel"
    assert settings.kafka.external
