"""The model-repository layout contract between the trainer and Triton.

::

    <repo>/<model>/config.pbtxt          Triton config; `version_policy` names the runtime folder
    <repo>/<model>/active_version.json   the version the model serves (written by the controller)
    <repo>/<model>/<version>/model.py    copy of inference/triton_model/model.py
    <repo>/<model>/<version>/*.py        and of its helper modules (RUNTIME_FILES)
    <repo>/<model>/<version>/metadata.json
    <repo>/<model>/<version>/adapter/    optional peft adapter (adapter_config.json +
                                         adapter_model.safetensors)

Version 1 is the base model with no adapter. Triton loads one version folder as the
runtime; the model inside switches to whichever version active_version.json names (and
to the version a control request activates), so a new adapter needs no Triton load.

Versions are immutable: a version folder is written complete under a temporary name in
the same parent and renamed into place, so a reader (Triton, the controller, `flywheel
models list`) never sees half a version (its model code is refreshed by `ensure_model`).
Temporary folders start with `.tmp-` and are ignored (Triton ignores non-numeric folders).

`metadata.json` always holds `version`, `base_model` (path), `adapter_id`,
`adapter_sha256` (sha256 of `adapter/adapter_model.safetensors`, None for the base) and
`created_at`; writers may add anything else (dataset, metrics...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.errors import RepositoryError, VersionExistsError, VersionNotFoundError

logger = logging.getLogger(__name__)

#: Where the Triton model source and config template live inside this package.
MODEL_SOURCE_DIR = Path(__file__).resolve().parent / "triton_model"
MODEL_FILE = "model.py"
#: Files of inference/triton_model copied into every version folder.
RUNTIME_FILES = (MODEL_FILE, "lora_merge.py", "request_inputs.py", "version_metrics.py")
ACTIVE_FILE = "active_version.json"
CONFIG_FILE = "config.pbtxt"
CONFIG_TEMPLATE = "config.pbtxt.template"
METADATA_FILE = "metadata.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BASE_VERSION = 1
BASE_ADAPTER_ID = "base"
TMP_PREFIX = ".tmp-"

_FILE_MODE = 0o644
_DIR_MODE = 0o755


def model_dir(repo: Path, model: str) -> Path:
    return repo / model


def version_dir(repo: Path, model: str, version: int) -> Path:
    return repo / model / str(version)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_sha256(adapter_dir: Path) -> str:
    """The hash published as `ModelPublished.adapter_sha256`: sha256 of the weights file.

    Raises:
        RepositoryError: the folder has no adapter_model.safetensors.
    """
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise RepositoryError(
            f"{adapter_dir} has no {ADAPTER_WEIGHTS}; save the adapter with "
            "peft's save_pretrained(safe_serialization=True)"
        )
    return sha256_file(weights)


def versions(repo: Path, model: str) -> list[int]:
    """Complete versions of a model, ascending; temp folders and stray names are ignored."""
    folder = model_dir(repo, model)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.name.isdigit() and entry.is_dir() and (entry / METADATA_FILE).is_file():
            found.append(int(entry.name))
    return sorted(found)


def next_version(repo: Path, model: str) -> int:
    """One more than the highest version, counting unfinished temp folders' targets too."""
    existing = versions(repo, model)
    folder = model_dir(repo, model)
    # A version folder without metadata (hand-made, or from another tool) still takes its number.
    if folder.is_dir():
        existing += [int(e.name) for e in folder.iterdir() if e.name.isdigit()]
    return max(existing, default=0) + 1


def read_metadata(repo: Path, model: str, version: int) -> dict[str, Any]:
    """The metadata.json of a complete version.

    Raises:
        VersionNotFoundError: no complete version with that number.
        RepositoryError: the metadata is not valid JSON.
    """
    path = version_dir(repo, model, version) / METADATA_FILE
    if not path.is_file():
        raise VersionNotFoundError(
            f"model {model!r} has no version {version} in {repo}; "
            f"known versions: {versions(repo, model) or 'none'}"
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RepositoryError(f"{path} is not valid JSON ({e}); rewrite that version") from e
    return data


def write_version(
    repo: Path,
    model: str,
    version: int,
    *,
    adapter_dir: Path | None,
    metadata: dict[str, Any],
) -> Path:
    """Write a complete version folder atomically and return its path.

    The folder is assembled as `<repo>/<model>/.tmp-<version>-<random>`, every file is
    fsynced and made world-readable, then it is renamed to `<repo>/<model>/<version>`.

    Raises:
        VersionExistsError: the version already exists; publish `next_version()` instead.
        RepositoryError: the adapter folder lacks its files, or the write failed.
    """
    if version < 1:
        raise RepositoryError(f"versions start at 1, got {version}")
    parent = model_dir(repo, model)
    target = version_dir(repo, model, version)
    if target.exists():
        raise VersionExistsError(
            f"{target} already exists; versions are immutable, use version "
            f"{next_version(repo, model)}"
        )
    meta = dict(metadata)
    meta.setdefault("base_model", None)
    if adapter_dir is not None:
        if not (adapter_dir / ADAPTER_CONFIG).is_file():
            raise RepositoryError(
                f"{adapter_dir} has no {ADAPTER_CONFIG}; pass the folder written by "
                "peft's save_pretrained"
            )
        meta.setdefault("adapter_sha256", adapter_sha256(adapter_dir))
        meta.setdefault("adapter_id", f"{model}-v{version}")
    else:
        meta.setdefault("adapter_sha256", None)
        meta.setdefault("adapter_id", BASE_ADAPTER_ID)
    meta["version"] = version
    meta.setdefault("created_at", datetime.now(UTC).isoformat())

    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(mode=_DIR_MODE)
        for name in RUNTIME_FILES:
            shutil.copyfile(MODEL_SOURCE_DIR / name, tmp / name)
        if adapter_dir is not None:
            shutil.copytree(adapter_dir, tmp / ADAPTER_DIR)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _make_readable_and_sync(tmp)
        if target.exists():
            raise VersionExistsError(f"{target} appeared while writing it; use another version")
        os.rename(tmp, target)
        _fsync_dir(parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RepositoryError(f"could not write {target}: {e}; check free disk and rights") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote model version", extra={"model": model, "version": version})
    return target


def ensure_model(
    repo: Path,
    model: str,
    *,
    base_model: Path,
    max_batch_size: int = 8,
    max_queue_delay_us: int = 2000,
    instance_count: int = 1,
    device: str = "auto",
    torch_threads: int = 1,
    warmup_requests: int = 2,
) -> Path:
    """Create the model folder with config.pbtxt and version 1 (the base model) if missing.

    Raises:
        RepositoryError: the base model folder does not exist.
    """
    folder = model_dir(repo, model)
    needs_base = BASE_VERSION not in versions(repo, model)
    if needs_base and not (base_model / "config.json").is_file():
        raise RepositoryError(
            f"base model {base_model} has no config.json; build one with "
            "`flywheel trainer bootstrap` or set model.base_model_path"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / CONFIG_FILE).is_file():
        write_config(
            repo, model, loaded_versions=[BASE_VERSION], max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us, instance_count=instance_count,
            device=device, torch_threads=torch_threads, warmup_requests=warmup_requests,
        )
    if needs_base:
        write_version(
            repo, model, BASE_VERSION, adapter_dir=None,
            metadata={"base_model": str(base_model.resolve()), "adapter_id": BASE_ADAPTER_ID},
        )
    refresh_runtime_files(repo, model)
    return folder


def refresh_runtime_files(repo: Path, model: str) -> int:
    """Bring every version folder's model code up to this package's; returns files replaced.

    A version's data (metadata, adapter) is immutable; its model.py is code, and the
    folder Triton loads as the runtime must run the code this controller speaks to.
    """
    replaced = 0
    for version in versions(repo, model):
        folder = version_dir(repo, model, version)
        for name in RUNTIME_FILES:
            source = (MODEL_SOURCE_DIR / name).read_text()
            target = folder / name
            if not target.is_file() or target.read_text() != source:
                _write_text_atomically(target, source)
                replaced += 1
    return replaced


def write_config(
    repo: Path,
    model: str,
    *,
    loaded_versions: list[int],
    max_batch_size: int = 8,
    max_queue_delay_us: int = 2000,
    instance_count: int = 1,
    device: str = "auto",
    torch_threads: int = 1,
    warmup_requests: int = 2,
) -> Path:
    """Render config.pbtxt from the package template and replace it atomically.

    Raises:
        RepositoryError: no versions given.
    """
    if not loaded_versions:
        raise RepositoryError("config.pbtxt needs at least one version to load")
    template = (MODEL_SOURCE_DIR / CONFIG_TEMPLATE).read_text()
    kind = "KIND_CPU" if device == "cpu" else ("KIND_GPU" if device == "cuda" else "KIND_MODEL")
    text = template.format(
        name=model,
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        versions=", ".join(str(v) for v in sorted(set(loaded_versions))),
        instance_count=instance_count,
        instance_kind=kind,
        device=device,
        torch_threads=torch_threads,
        warmup_requests=warmup_requests,
    )
    path = model_dir(repo, model) / CONFIG_FILE
    _write_text_atomically(path, text)
    return path


def set_loaded_versions(repo: Path, model: str, loaded_versions: list[int]) -> Path:
    """Rewrite only the `version_policy` line of config.pbtxt, atomically.

    Raises:
        RepositoryError: config.pbtxt is missing or has no version_policy line.
    """
    if not loaded_versions:
        raise RepositoryError("config.pbtxt needs at least one version to load")
    path = model_dir(repo, model) / CONFIG_FILE
    if not path.is_file():
        raise RepositoryError(f"{path} is missing; run ensure_model first")
    lines = path.read_text().splitlines(keepends=True)
    wanted = ", ".join(str(v) for v in sorted(set(loaded_versions)))
    for i, line in enumerate(lines):
        if line.startswith("version_policy:"):
            lines[i] = f"version_policy: {{ specific: {{ versions: [ {wanted} ] }} }}\n"
            break
    else:
        raise RepositoryError(
            f"{path} has no version_policy line; delete it and rerun ensure_model"
        )
    _write_text_atomically(path, "".join(lines))
    return path


def loaded_versions_in_config(repo: Path, model: str) -> list[int]:
    """The versions config.pbtxt's version_policy names."""
    for line in (model_dir(repo, model) / CONFIG_FILE).read_text().splitlines():
        if line.startswith("version_policy:"):
            inner = line[line.index("[") + 1 : line.index("]")]
            return sorted(int(v) for v in inner.replace(" ", "").split(",") if v)
    return []


def read_active_version(repo: Path, model: str) -> int | None:
    """The version active_version.json names, or None when the controller never wrote it."""
    path = model_dir(repo, model) / ACTIVE_FILE
    try:
        return int(json.loads(path.read_text())["version"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise RepositoryError(f"{path} is unreadable ({e}); delete it and restart the "
                              "controller, which rewrites it from routing.json") from e


def write_active_version(repo: Path, model: str, version: int) -> Path:
    """Name the version every instance of the model serves (they reread it per batch)."""
    path = model_dir(repo, model) / ACTIVE_FILE
    _write_text_atomically(path, json.dumps({"version": version}) + "\n")
    return path


def clean_temp_folders(repo: Path, model: str, *, older_than_s: float = 3600.0) -> int:
    """Remove temp folders left by a crashed writer; returns how many were removed."""
    folder = model_dir(repo, model)
    if not folder.is_dir():
        return 0
    removed = 0
    now = time.time()
    for entry in folder.iterdir():
        if entry.name.startswith(TMP_PREFIX) and now - entry.stat().st_mtime > older_than_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _make_readable_and_sync(root: Path) -> None:
    # save_pretrained writes 0600 files; Triton may run as another user.
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, _DIR_MODE)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.stat(path).st_mode
            os.chmod(path, stat.S_IMODE(mode) | _FILE_MODE)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
