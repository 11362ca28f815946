"""Two training processes on the gloo backend: same adapter on both ranks, written once;
`flywheel trainer run --nproc 2` end to end against the real ClickHouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.settings import FlywheelSettings
from trainer.distributed import SINGLE, launched_by_torchrun, process_group

ROOT = Path(__file__).resolve().parents[2]


def test_outside_torchrun_the_process_group_is_a_single_process() -> None:
    from tests.trainer.conftest import fast_trainer

    assert not launched_by_torchrun()
    with process_group(fast_trainer()) as distributed:
        assert distributed is SINGLE
        assert distributed.run_on_main(lambda: 41 + 1) == 42


def _torchrun(base: Path, out: Path, strategy: str) -> None:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tests.trainer.distributed_worker", str(base), str(out), strategy],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_train_one_adapter_and_rank_0_writes_it_once(
    tiny_base: Path, tmp_path: Path, strategy: str,
) -> None:
    from safetensors.torch import load_file

    _torchrun(tiny_base, tmp_path / "out", strategy)

    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] != ""
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    assert ranks[0]["best_validation_loss"] == ranks[1]["best_validation_loss"]
    assert ranks[0]["best_validation_loss"] < ranks[0]["initial_validation_loss"]
    logs = [(tmp_path / "out" / f"rank{r}.log").read_text() for r in (0, 1)]
    assert logs[0].count("adapter written to") == 1 and "adapter written" not in logs[1]
    assert "checkpoint at step" in logs[0] and "checkpoint at step" not in logs[1]
    adapter = Path(ranks[0]["adapter_dir"])
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert weights and all("lora_" in name for name in weights)
    assert (adapter / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_resume_from_rank_0s_checkpoint(
    tiny_base: Path, tmp_path: Path, strategy: str,
) -> None:
    out = tmp_path / "out"
    _torchrun(tiny_base, out, strategy)
    # The finished run left its checkpoints (steps 2 and 4 of 6); the same run again
    # resumes from step 4 on both ranks, optimizer state included (sharded under FSDP).
    _torchrun(tiny_base, out, strategy)

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["resumed_from_step"] for r in ranks] == [4, 4]
    assert [r["steps"] for r in ranks] == [6, 6]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


@pytest.mark.slow
@pytest.mark.integration
def test_trainer_run_with_nproc_2_trains_in_two_processes_and_rank_0_alone_records(
    warehouse: Any, trainer_settings: FlywheelSettings,
) -> None:
    from datetime import UTC, datetime, timedelta

    from deploy.settings import SETTINGS_ENV, settings_to_json
    from tests.trainer.synthetic import TURN_COLUMNS, billing_pairs, turn_rows

    start = datetime(2036, 2, 1, 9, tzinfo=UTC)
    db = trainer_settings.clickhouse.database
    rows, _ = turn_rows(billing_pairs(80, seed=11), start=start, topic="billing")
    warehouse.insert(f"{db}.chat_turns", rows, column_names=TURN_COLUMNS)
    settings = trainer_settings.model_copy(update={"trainer": trainer_settings.trainer.model_copy(
        update={"device": "cpu", "max_steps": 4, "eval_every_steps": 2, "batch_size": 4})})
    env = {**os.environ, SETTINGS_ENV: settings_to_json(settings), "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}

    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "trainer", "run", "--nproc", "2", "--dry-run",
         "--start", start.isoformat(), "--end", (start + timedelta(hours=1)).isoformat()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    assert "starting 2 training processes" in done.stdout
    assert "tokens/s on 2 processes" in done.stdout
    assert done.stdout.count("not published") == 1  # rank 0 renders, the dry run never publishes
    evaluations = warehouse.query(f"SELECT count() FROM {db}.evaluations").result_rows[0][0]
    assert evaluations == 1
