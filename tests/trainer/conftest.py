"""Fixtures of the trainer's tests: a tiny base model, an isolated warehouse, test settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings, TrainerSettings
from tests.conftest import migrated_database


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    # The test machine has 2 cores shared with other suites.
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick embedded base model, built once per session (seconds)."""
    from trainer.bootstrap import BootstrapConfig, bootstrap

    path = tmp_path_factory.mktemp("base") / "base-model"
    bootstrap(path, config=BootstrapConfig.quick(seed=0))
    return path


def fast_trainer(**overrides: Any) -> TrainerSettings:
    """Trainer settings sized for the tiny base on 2 cores."""
    values: dict[str, Any] = {
        "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 2e-2,
        "target_modules": ["c_attn", "c_proj", "c_fc"],
        "batch_size": 16, "sequence_length_tokens": 64, "max_steps": 60, "max_epochs": 20,
        "eval_every_steps": 10, "early_stopping_patience": 3, "checkpoint_every_steps": 20,
        "warmup_steps": 2, "eval_generations": 4, "max_new_tokens": 12,
        "validation_fraction": 0.25, "seed": 0,
    }
    values.update(overrides)
    return TrainerSettings(**values)


@pytest.fixture
def trainer_settings(
    settings: FlywheelSettings, tiny_base: Path, tmp_path: Path, unique_name: str
) -> FlywheelSettings:
    """Settings with the tiny base, a private model name, database, repository and runs."""
    return settings.model_copy(update={
        "model": settings.model.model_copy(
            update={"name": unique_name.replace("_", "-")[:60], "base_model_path": tiny_base}),
        "trainer": fast_trainer(runs_dir=tmp_path / "runs"),
        "triton": settings.triton.model_copy(update={"model_repository": tmp_path / "models"}),
        "clickhouse": settings.clickhouse.model_copy(update={"database": unique_name}),
    })


@pytest.fixture
def warehouse(
    running: Callable[..., Supervisor], trainer_settings: FlywheelSettings
) -> Iterator[Any]:
    """A migrated database of its own on the test stack's ClickHouse; dropped afterwards."""
    running("clickhouse")
    with migrated_database(trainer_settings) as client:
        yield client
