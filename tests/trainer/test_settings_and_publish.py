"""Bad settings fail early; a publish killed with -9 leaves the repository valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.errors import ConfigError
from deploy.settings import FlywheelSettings, load_settings
from trainer.errors import BaseModelMissingError, TrainerConfigError
from trainer.pipeline import run_window

START = datetime(2033, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rank", [0, -4])
def test_a_lora_rank_below_one_is_refused_when_settings_are_built(rank: int) -> None:
    with pytest.raises(ConfigError, match="FLYWHEEL_TRAINER__LORA_RANK"):
        load_settings(trainer={"lora_rank": rank})


def test_a_missing_base_model_is_reported_before_any_query(
    trainer_settings: FlywheelSettings, tmp_path: Path,
) -> None:
    missing = trainer_settings.model_copy(update={
        "model": trainer_settings.model.model_copy(update={"base_model_path": tmp_path / "no"})})
    # client=None: touching ClickHouse would fail differently.
    with pytest.raises(BaseModelMissingError, match="flywheel trainer bootstrap"):
        run_window(None, missing, START, END)


def test_an_empty_window_is_reported_before_any_query(
    trainer_settings: FlywheelSettings,
) -> None:
    with pytest.raises(TrainerConfigError, match="empty"):
        run_window(None, trainer_settings, START, START)


def test_the_cli_says_what_to_do_when_the_base_model_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "FLYWHEEL_MODEL__BASE_MODEL_PATH": str(tmp_path / "nothing"),
           "FLYWHEEL_STATE_DIR": str(tmp_path), "COLUMNS": "400"}
    cli = "import sys; from deploy.cli import main; sys.argv[0] = 'flywheel'; main()"
    done = subprocess.run([sys.executable, "-c", cli, "trainer", "run"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode != 0
    assert "flywheel trainer bootstrap" in done.stderr


_PUBLISHER = """
import sys
from pathlib import Path
from deploy.settings import FlywheelSettings
from trainer.publish import prepare_repository, write_adapter_version
settings = FlywheelSettings.model_validate_json(Path(sys.argv[1]).read_text())
prepare_repository(settings)
print("ready", flush=True)
while True:
    write_adapter_version(settings, Path(sys.argv[2]), metadata={"note": "kill test"})
"""


def _big_adapter(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    save_file({"w": torch.randn(4_000_000)}, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.mark.slow
def test_a_publish_killed_with_sigkill_leaves_only_complete_versions(
    trainer_settings: FlywheelSettings, tmp_path: Path,
) -> None:
    from inference.repository import (
        ADAPTER_DIR,
        next_version,
        read_metadata,
        sha256_file,
        versions,
    )
    from trainer.publish import write_adapter_version

    adapter = _big_adapter(tmp_path / "adapter")
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(trainer_settings.model_dump_json())
    process = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(settings_file),
                                str(adapter)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        repo, model = trainer_settings.triton_model_repository(), trainer_settings.model.name
        deadline = time.monotonic() + 60
        while len(versions(repo, model)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.13)  # land somewhere inside a write
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)

    published = versions(repo, model)
    assert published[0] == 1 and len(published) >= 3
    expected = sha256_file(adapter / "adapter_model.safetensors")
    for version in published[1:]:
        folder = repo / model / str(version) / ADAPTER_DIR
        assert read_metadata(repo, model, version)["adapter_sha256"] == expected
        assert sha256_file(folder / "adapter_model.safetensors") == expected
    numbered = sorted(int(p.name) for p in (repo / model).iterdir() if p.name.isdigit())
    assert numbered == published  # no half-written numbered folder
    # The next publish after the crash gets a fresh number and succeeds.
    version, _folder, _digest = write_adapter_version(trainer_settings, adapter, metadata={})
    assert version == next_version(repo, model) - 1 == published[-1] + 1
