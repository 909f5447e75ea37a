"""Atomic writes: a file is either absent or complete, even if the process is killed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_path(path: Path) -> Path:
    """A temporary sibling of `path`; write there, then `os.replace` it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


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
    return json.loads(Path(path).read_text())
