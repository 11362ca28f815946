"""The install's disk preflight: a fresh `make` refuses clearly when the venv cannot fit."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "local" / "check_disk.py"


def _run(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), **settings}
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "new" / ".venv")],
                          env=env, capture_output=True, text=True, check=False)


def _free_gib(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize // 2**30


def test_enough_room_passes(tmp_path):
    result = _run(tmp_path, FLYWHEEL_INSTALL_MIN_FREE_GB="0", FLYWHEEL_INSTALL_MIN_TMP_GB="0")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not (tmp_path / "new").exists()  # it only looks


def test_too_little_room_names_the_folder_the_need_and_the_setting(tmp_path):
    need = _free_gib(tmp_path) + 100
    result = _run(tmp_path, FLYWHEEL_INSTALL_MIN_FREE_GB=str(need), FLYWHEEL_INSTALL_MIN_TMP_GB="0")
    assert result.returncode == 1
    assert f"{tmp_path} has " in result.stderr  # the nearest folder that exists
    assert f"needs about {need} GiB" in result.stderr
    assert "FLYWHEEL_INSTALL_MIN_FREE_GB" in result.stderr


def test_temporary_files_count_when_they_share_the_disk(tmp_path):
    # TMPDIR is on the same filesystem here, so pip's share is added to the venv's.
    half = _free_gib(tmp_path) // 2 + 1
    result = _run(tmp_path, FLYWHEEL_INSTALL_MIN_FREE_GB=str(half),
                  FLYWHEEL_INSTALL_MIN_TMP_GB=str(half))
    assert result.returncode == 1
    assert f"needs about {2 * half} GiB" in result.stderr


def test_a_malformed_setting_is_named(tmp_path):
    for value in ("lots", "-3", "99999999999999"):
        result = _run(tmp_path, FLYWHEEL_INSTALL_MIN_FREE_GB=value)
        assert result.returncode == 2, value
        assert "FLYWHEEL_INSTALL_MIN_FREE_GB must be a whole number" in result.stderr


def test_a_leading_zero_is_read_as_decimal(tmp_path):
    result = _run(tmp_path, FLYWHEEL_INSTALL_MIN_FREE_GB="010", FLYWHEEL_INSTALL_MIN_TMP_GB="0")
    expected = 0 if _free_gib(tmp_path) >= 10 else 1
    assert result.returncode == expected, result.stderr
