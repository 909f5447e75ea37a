"""Atomic writes and reads that name the file: a file is either absent or complete, even if
the process is killed, and a file that cannot be read says which one it is and why."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mona.errors import DataError

TMP_MARK = ".tmp-"


class UnreadableFileError(DataError):
    """An artefact that exists but cannot be read (truncated, corrupt, wrong format)."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(
            [f"{path}: cannot be read ({reason}); delete it and rerun the step that writes it"]
        )


def atomic_path(path: Path) -> Path:
    """A temporary sibling of `path`; write there, then `os.replace` it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(directory: Path) -> list[Path]:
    """Delete temporary files of killed writers (`.name.tmp-PID` whose PID is gone)."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.glob(f".*{TMP_MARK}*"):
        pid = path.name.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_json(data: Any, path: Path) -> None:
    path = Path(path)
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def save_torch(obj: Any, path: Path) -> None:
    import torch

    path = Path(path)
    tmp = atomic_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableFileError(path, f"not valid JSON: {error}") from error


def load_torch(path: Path, map_location: Any = "cpu") -> Any:
    """`torch.load` with `weights_only=True` (tensors and plain containers, never code)."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnreadableFileError(path, f"not a readable torch file: {reason}") from error


def load_array(path: Path, mmap_mode: str | None = None) -> Any:
    """`np.load` of one preprocessed array, naming the file when it is truncated or corrupt."""
    import numpy as np

    path = Path(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise UnreadableFileError(path, f"not a readable .npy array: {error}") from error


def file_digest(paths: list[Path]) -> str:
    """sha256 over the names and bytes of `paths`, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
