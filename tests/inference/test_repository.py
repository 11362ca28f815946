"""The model-repository layout contract (no services)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from inference import repository as repo_mod
from inference.errors import RepositoryError, VersionExistsError, VersionNotFoundError
from inference.repository import (
    ensure_model,
    loaded_versions_in_config,
    next_version,
    read_metadata,
    set_loaded_versions,
    versions,
    write_version,
)


@pytest.fixture
def base_model(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter-src"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(b"weights")
    os.chmod(weights, 0o600)
    return folder


def test_ensure_model_writes_config_and_base_version(tmp_path: Path, base_model: Path) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    assert versions(repo, "chat") == [1]
    meta = read_metadata(repo, "chat", 1)
    assert meta["adapter_id"] == "base" and meta["adapter_sha256"] is None
    assert meta["base_model"] == str(base_model.resolve())
    assert (repo / "chat" / "1" / "model.py").is_file()
    assert loaded_versions_in_config(repo, "chat") == [1]
    ensure_model(repo, "chat", base_model=base_model)  # idempotent
    assert versions(repo, "chat") == [1]


def test_write_version_copies_adapter_readable_with_its_hash(
    tmp_path: Path, base_model: Path, adapter: Path
) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    path = write_version(repo, "chat", next_version(repo, "chat"), adapter_dir=adapter,
                         metadata={"base_model": str(base_model), "adapter_id": "a1"})
    assert path == repo / "chat" / "2"
    weights = path / "adapter" / "adapter_model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) & 0o044 == 0o044
    meta = read_metadata(repo, "chat", 2)
    assert meta["adapter_sha256"] == repo_mod.sha256_file(adapter / "adapter_model.safetensors")
    assert meta["version"] == 2 and meta["adapter_id"] == "a1"
    assert next_version(repo, "chat") == 3


def test_write_version_refuses_an_existing_version(
    tmp_path: Path, base_model: Path, adapter: Path
) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    with pytest.raises(VersionExistsError, match="use version 2"):
        write_version(repo, "chat", 1, adapter_dir=adapter, metadata={})


def test_a_crashed_write_leaves_no_version_and_temp_folders_are_ignored(
    tmp_path: Path, base_model: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    (repo / "chat" / ".tmp-2-dead").mkdir()  # left by a writer killed mid-way

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(repo_mod.os, "rename", crash)
    with pytest.raises(RepositoryError, match="disk full"):
        write_version(repo, "chat", 2, adapter_dir=adapter, metadata={})
    assert versions(repo, "chat") == [1]
    assert not (repo / "chat" / "2").exists()
    assert [p.name for p in (repo / "chat").iterdir() if p.name.startswith(".tmp-2-")] == [
        ".tmp-2-dead"
    ]


def test_an_adapter_folder_without_config_is_refused(tmp_path: Path, base_model: Path) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RepositoryError, match="adapter_config.json"):
        write_version(repo, "chat", 2, adapter_dir=empty, metadata={})


def test_read_metadata_of_a_missing_version_names_the_known_ones(
    tmp_path: Path, base_model: Path
) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    with pytest.raises(VersionNotFoundError, match=r"known versions: \[1\]"):
        read_metadata(repo, "chat", 7)


def test_set_loaded_versions_rewrites_only_the_policy(tmp_path: Path, base_model: Path) -> None:
    repo = tmp_path / "repo"
    ensure_model(repo, "chat", base_model=base_model)
    before = (repo / "chat" / "config.pbtxt").read_text()
    set_loaded_versions(repo, "chat", [3, 1])
    after = (repo / "chat" / "config.pbtxt").read_text()
    assert loaded_versions_in_config(repo, "chat") == [1, 3]
    assert len(before.splitlines()) == len(after.splitlines())
