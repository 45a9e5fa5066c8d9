"""Writing files so that a reader never sees half of one: the one home of atomic writes.

Every file rnnlens writes (checkpoints, JSON, CSV, HTML, PNG) goes to a temporary name in the
target's folder, is fsynced, then renamed over the target: a crash or a full disk mid-write leaves
the previous version intact. A folder that cannot be written is a one-line RnnlensError.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from rnnlens.errors import RnnlensError


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise RnnlensError(f"cannot write {path}: {e.strerror or e}; choose a folder you can write to") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary files
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RnnlensError(f"cannot write {path}: {e.strerror or e}; free some space or choose another "
                               "folder") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def make_folder(path, what: str = "output") -> Path:
    """Create the folder `path` (and its parents) or raise a one-line RnnlensError naming the problem."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RnnlensError(f"{folder} is a file; give a folder for the {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlensError(f"cannot create the {what} folder {folder}: {e.strerror or e}; choose another --out") \
            from None
    return folder
