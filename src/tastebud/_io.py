"""Small shared helpers for writing outputs: strict JSON and output folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tastebud.errors import InvalidInputError


def _plain(value: Any) -> Any:
    """JSON-able Python values: numpy scalars unwrapped, NaN/inf as null, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (no NaN tokens, which most parsers reject): undefined numbers become null."""
    return json.dumps(_plain(value), indent=indent, allow_nan=False)


def output_folder(path: str | Path) -> Path:
    """Create ``path`` (and parents) as a folder; refuse a path that is an existing file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{folder} is a file; give a folder path to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"cannot create folder {folder}: {err.strerror}") from None
    return folder
