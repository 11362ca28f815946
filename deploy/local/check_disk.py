"""Refuse a fresh install that cannot fit, before pip half-fills the disk.

The virtual environment takes about 6.5 GiB (torch with its CUDA libraries is most of
it), and pip needs room in the temporary folder to unpack wheels. A full disk otherwise
surfaces as "OSError: [Errno 28]" deep in pip's output.

Runs on the system Python before the virtual environment exists, so it uses the standard
library only. Usage: `python3 deploy/local/check_disk.py DIR` (exit 1: too little room,
2: a malformed setting).

Settings (environment):
    FLYWHEEL_INSTALL_MIN_FREE_GB: free GiB the folder of DIR needs (default 7).
    FLYWHEEL_INSTALL_MIN_TMP_GB: free GiB the temporary folder needs (default 2); added
        to the first when both are on one filesystem.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

GIB = 2**30
SETTINGS = {"FLYWHEEL_INSTALL_MIN_FREE_GB": 7, "FLYWHEEL_INSTALL_MIN_TMP_GB": 2}


class DiskCheckError(Exception):
    """Too little room, or a setting that is not a number; the message says what to do."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def setting(name: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return SETTINGS[name]
    if not raw.isdigit() or int(raw) > 100_000:
        raise DiskCheckError(f"{name} must be a whole number of GiB (0 to 100000), not {raw!r}.",
                             code=2)
    return int(raw)


def _existing(path: Path) -> Path:
    """The nearest folder that exists at or above `path` (what `path` will be created on)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check(target: Path, temporary: Path) -> None:
    """Raises: DiskCheckError: the install would not fit, or a setting is malformed."""
    need_venv = setting("FLYWHEEL_INSTALL_MIN_FREE_GB")
    need_tmp = setting("FLYWHEEL_INSTALL_MIN_TMP_GB")
    need = need_venv
    target, temporary = _existing(target), _existing(temporary)
    if os.stat(target).st_dev == os.stat(temporary).st_dev:
        need += need_tmp
    else:
        free_tmp = shutil.disk_usage(temporary).free
        if free_tmp < need_tmp * GIB:
            raise DiskCheckError(
                f"flywheel setup: the temporary folder {temporary} has {free_tmp // GIB} GiB "
                f"free; pip needs about {need_tmp} GiB there to unpack wheels.\n"
                "  Free space there, or point TMPDIR at a folder with room.", code=1)
    free = shutil.disk_usage(target).free
    if free < need * GIB:
        raise DiskCheckError(
            f"flywheel setup: {target} has {free // GIB} GiB free; the install needs about "
            f"{need} GiB (torch and its CUDA libraries, plus pip's temporary files).\n"
            "  Free space (old clones, stale .venv folders, ~/.cache/pip), then run make again.\n"
            "  To install anyway, lower FLYWHEEL_INSTALL_MIN_FREE_GB "
            f"(now {need_venv}).", code=1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: check_disk.py DIR\n")
        return 2
    try:
        check(Path(argv[0]), Path(tempfile.gettempdir()))
    except DiskCheckError as e:
        sys.stderr.write(f"{e}\n")
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
