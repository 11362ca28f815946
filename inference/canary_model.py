"""The canary's Triton model: `<model>-canary`, a copy of the live model serving one version.

A canary is a second model name, not a second version of the live model: loading a
second version into the live model rewrites its version_policy, and Triton then reloads
every version of it (swap.py). A separate model costs exactly one load, and unloading it
never touches the live one.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from inference.errors import RepositoryError
from inference.repository import (
    CONFIG_FILE,
    TMP_PREFIX,
    _write_text_atomically,
    model_dir,
    read_metadata,
    set_loaded_versions,
    version_dir,
)

CANARY_SUFFIX = "-canary"


def canary_model_name(model: str) -> str:
    """The Triton model a canary of `model` is served as, beside the live one."""
    return f"{model}{CANARY_SUFFIX}"


def write_canary_model(repo: Path, model: str, version: int) -> str:
    """Make `<model>-canary` a copy of `model` that loads only `version`; returns its name.

    The config is the live model's with the canary's name; the version folder is copied
    (model.py, metadata, adapter: kilobytes), so the canary answers with the same version
    number and adapter id. Folders of earlier canaries are removed.

    Raises:
        VersionNotFoundError: `model` has no such version.
        RepositoryError: the live model has no config.pbtxt, or the copy failed.
    """
    read_metadata(repo, model, version)  # raises when the version is missing
    name = canary_model_name(model)
    source_config = model_dir(repo, model) / CONFIG_FILE
    if not source_config.is_file():
        raise RepositoryError(f"{source_config} is missing; run ensure_model first")
    folder = model_dir(repo, name)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name != str(version):
            shutil.rmtree(entry, ignore_errors=True)
    config = re.sub(r'^name: ".*"$', f'name: "{name}"', source_config.read_text(), flags=re.M)
    _write_text_atomically(folder / CONFIG_FILE, config)
    set_loaded_versions(repo, name, [version])
    target = version_dir(repo, name, version)
    if not target.is_dir():
        tmp = folder / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(version_dir(repo, model, version), tmp)
            os.rename(tmp, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RepositoryError(f"could not copy version {version} to {target}: {e}") from e
    return name
