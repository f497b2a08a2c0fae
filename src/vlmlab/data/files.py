"""Reading annotation files (JSON, JSONL) with errors that name the file and the place."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from vlmlab.data.errors import DataError, DataProblem

__all__ = ["read_json", "read_jsonl", "read_text"]

# JSON is UTF-8 (RFC 8259): a UTF-16 file is refused rather than guessed at, but named as such.
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError.one(path, "-", "file", "annotation file not found")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError.one(path, "-", "file", f"cannot read: {error.strerror or error}") from error


def _not_utf8(data: bytes, offset: int) -> str:
    """The problem of a file whose byte at ``offset`` is where UTF-8 decoding failed."""
    hint = " (a UTF-16 byte-order mark: save the file as UTF-8)" if data.startswith(_UTF16_BOMS) else ""
    return f"not UTF-8: byte {data[offset]:#04x} at offset {offset}{hint}"


def read_text(path: Path) -> str:
    """The UTF-8 text of an annotation file; a DataError for a missing file or bytes that are not UTF-8
    (naming the byte offset)."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError.one(path, "-", "encoding", _not_utf8(data, error.start)) from error


def read_json(path: Path, what: str = "a JSON list of rows") -> Any:
    """The JSON value of a file, or a DataError naming the file and the line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError.one(path, f"line {error.lineno}", "json", f"{error.msg} (expected {what})") from error


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[DataProblem]]:
    """``(line, value)`` for every non-blank line that is JSON, and a problem for each that is not
    (1-based line numbers), a line that is not UTF-8 included. A DataError when the file itself cannot
    be read (missing, or UTF-16)."""
    data = _read_bytes(path)
    if data.startswith(_UTF16_BOMS):  # its lines are not lines of bytes: one problem for the file
        raise DataError.one(path, "-", "encoding", _not_utf8(data, 0))
    # Split the bytes, not the text: a line that is not UTF-8 is one bad row, and a U+2028 inside a
    # JSON string (which str.splitlines would break at) stays in its line.
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    rows, problems = [], []
    for line, raw in enumerate(data[offset:].split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(DataProblem(str(path), line, "encoding", _not_utf8(data, start + error.start)))
            continue
        if not text.strip():
            continue
        try:
            rows.append((line, json.loads(text)))
        except json.JSONDecodeError as error:
            problems.append(DataProblem(str(path), line, "json", f"{error.msg} (column {error.colno})"))
    return rows, problems
