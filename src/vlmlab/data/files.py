"""Reading annotation files (JSON, JSONL) with errors that name the file and the place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmlab.data.errors import DataError, DataProblem

__all__ = ["read_json", "read_jsonl", "read_text"]


def read_text(path: Path) -> str:
    """The UTF-8 text of an annotation file; a DataError for a missing file or bytes that are not UTF-8
    (naming the byte offset)."""
    if not path.is_file():
        raise DataError.one(path, "-", "file", "annotation file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError.one(path, "-", "file", f"cannot read: {error.strerror or error}") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError.one(
            path, "-", "encoding", f"not UTF-8: byte {data[error.start]:#04x} at offset {error.start}"
        ) from error


def read_json(path: Path, what: str = "a JSON list of rows") -> Any:
    """The JSON value of a file, or a DataError naming the file and the line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError.one(path, f"line {error.lineno}", "json", f"{error.msg} (expected {what})") from error


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[DataProblem]]:
    """``(line, value)`` for every non-blank line that is JSON, and a problem for each that is not
    (1-based line numbers). A DataError when the file itself cannot be read."""
    rows, problems = [], []
    for line, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((line, json.loads(raw)))
        except json.JSONDecodeError as error:
            problems.append(DataProblem(str(path), line, "json", f"{error.msg} (column {error.colno})"))
    return rows, problems
